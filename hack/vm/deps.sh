#!/usr/bin/env bash
# Install what hack/vm needs on a Debian 12 host: qemu (TCG, and qboot.rom),
# busybox-static for the initramfs, cpio/xz/zstd/kmod to build it, binutils
# (readelf) to check a vmlinux for its PVH entry, iproute2 to copy `ip` and
# `tc` into the VM. Idempotent: installs only what is missing, and runs
# `apt-get update` only when a package is unknown.
set -euo pipefail

pkgs=(qemu-system-x86 busybox-static cpio xz-utils zstd gzip kmod binutils iproute2)

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]} == 0)); then
	exit 0
fi

if [[ $(id -u) != 0 ]]; then
	echo "deps.sh: need root to install: ${missing[*]}" >&2
	exit 1
fi

# A fresh machine may have empty package lists; refresh once if any package
# we need is not known to apt-cache.
for p in "${missing[@]}"; do
	if ! apt-cache show "$p" >/dev/null 2>&1; then
		apt-get "${apt_opts[@]}" update -qq
		break
	fi
done
echo "deps.sh: installing ${missing[*]}" >&2
apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

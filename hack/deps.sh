#!/usr/bin/env bash
# Installs the Debian packages podtap's build, demo and tests need.
# Idempotent: it does nothing when everything is already there.
set -euo pipefail

pkgs=(clang llvm libbpf-dev bpftool tshark tcpdump iperf3 iproute2 curl kmod)
pkgs+=("$@")

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing packages ${missing[*]}; run as root to install them" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer no up front.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt_opts=(-o DPkg::Lock::Timeout=300 -q)
apt-get "${apt_opts[@]}" update >/dev/null
apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Run podtap's Go test binaries inside other kernels under qemu (TCG).
#
#   hack/vm/run.sh [options] PKG... [-- TESTFLAG...]
#
# For each kernel in hack/vm/kernels.txt (or --kernels), this resolves the
# newest matching Debian kernel package, downloads and extracts it once into
# the cache, builds an initramfs from busybox-static, the kernel's tc/veth
# modules, static test binaries of the given Go packages and a static podtap
# (PODTAP_BIN in the guest), boots it and runs every binary with -test.v.
# Test output comes back over a second serial port; a summary table follows,
# one row per kernel, with a column for each PODTAP_FACT key a test printed,
# checked against what kernels.txt expects of that kernel. Exits 1 naming the
# kernels that failed, 2 on a usage error.
#
# Options:
#   --kernels A,B    kernel names from kernels.txt (default: all of them)
#   --run REGEXP     passed on as -test.run=REGEXP
#   --timeout SECS   kill a VM that runs longer (default 900); the test
#                    binaries get -test.timeout 30 s shorter
#   --jobs N         VMs booted at once (default: number of CPUs)
#   --out DIR        where logs go (default: a new /tmp/podtap-vm.XXXXXX)
#   --prepare-only   fetch and unpack the kernels, build nothing, boot nothing
#   --strict         fail a kernel whose tests do not report every fact
#                    kernels.txt expects of it (make test-kernels does: a
#                    test that skipped where it must run shows up so);
#                    without it only a reported fact with another value fails
#   -v               show each VM's console and test output as it runs
#
# Environment: PODTAP_CACHE (default /var/cache/podtap; the kernels live in
# $PODTAP_CACHE/vm), PODTAP_VM_BOOT=bzimage to boot the compressed kernel
# instead of the ELF vmlinux, PODTAP_VM_MEM (default 2G), PODTAP_VM_SMP
# (default 2).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${PODTAP_CACHE:-/var/cache/podtap}/vm
# Bump when what is cached changes shape, to invalidate old entries.
layout=1

kernels_opt=
run_re=
timeout=900
jobs=$(nproc)
out=
prepare_only=0
strict=0
verbose=0
pkgs=()
testflags=()

log() { echo "vm: $*" >&2; }
now() { date +%s.%N; }
since() { awk "BEGIN{printf \"%.1f\", $(now) - $1}"; }
die() {
	echo "vm: $*" >&2
	exit 1
}
usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
	exit 2
}

while (($#)); do
	case $1 in
	--kernels) kernels_opt=${2:?}; shift 2 ;;
	--kernels=*) kernels_opt=${1#*=}; shift ;;
	--run) run_re=${2:?}; shift 2 ;;
	--run=*) run_re=${1#*=}; shift ;;
	--timeout) timeout=${2:?}; shift 2 ;;
	--timeout=*) timeout=${1#*=}; shift ;;
	--jobs) jobs=${2:?}; shift 2 ;;
	--jobs=*) jobs=${1#*=}; shift ;;
	--out) out=${2:?}; shift 2 ;;
	--out=*) out=${1#*=}; shift ;;
	--prepare-only) prepare_only=1; shift ;;
	--strict) strict=1; shift ;;
	-v) verbose=1; shift ;;
	-h | --help) usage ;;
	--) shift; testflags=("$@"); break ;;
	-*) echo "vm: unknown option $1" >&2; usage ;;
	*) pkgs+=("$1"); shift ;;
	esac
done
[[ $timeout =~ ^[0-9]+$ && $timeout -ge 60 ]] || die "--timeout must be a number of seconds, at least 60"
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive number"
if ((!prepare_only && ${#pkgs[@]} == 0)); then
	echo "vm: no packages given" >&2
	usage
fi

# ---------------------------------------------------------------- kernels list

declare -A kregex=() kexpect=()
korder=()
while read -r name re expect; do
	[[ -z $name || $name == \#* ]] && continue
	[[ -n $re ]] || die "kernels.txt: $name has no package regex"
	read -ra expect <<<"${expect%%#*}"
	for kv in "${expect[@]}"; do
		[[ $kv =~ ^[a-z][a-z0-9_]*=[^=,]+(,[^=,]+)*$ ]] || die "kernels.txt: $name: expectation $kv is not KEY=VALUE[,VALUE...]"
	done
	kregex[$name]=$re
	kexpect[$name]=${expect[*]}
	korder+=("$name")
done <"$here/kernels.txt"

selected=()
if [[ -n $kernels_opt ]]; then
	IFS=, read -ra want <<<"$kernels_opt"
	for k in "${want[@]}"; do
		if [[ -z ${kregex[$k]:-} ]]; then
			echo "vm: unknown kernel $k (kernels.txt has: ${korder[*]})" >&2
			exit 2
		fi
		selected+=("$k")
	done
else
	selected=("${korder[@]}")
fi
((${#selected[@]})) || die "no kernels selected"

"$here/deps.sh"

mkdir -p "$cache"/{debs,kernels,base}
# A log directory of our own goes when the run ends, unless a kernel failed.
auto_out=0 keep_out=0
if [[ -z $out ]]; then
	out=$(mktemp -d /tmp/podtap-vm.XXXXXX)
	auto_out=1
	trap '((!auto_out || keep_out)) || rm -rf "$out"' EXIT
else
	mkdir -p "$out"
	out=$(cd "$out" && pwd)
fi

# -------------------------------------------------------------- kernel pieces

apt_updated=0
apt_update_once() {
	((apt_updated)) && return 0
	apt_updated=1
	log "refreshing apt package lists"
	apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 update -qq >&2
}

# resolve_kernels: set kpkg[NAME] and kver[NAME] for each selected kernel to
# the newest package apt knows whose name matches its regex, and that
# package's candidate version. Returns 1 if some kernel has none. (Two
# apt-cache calls for all kernels: each one costs about half a second.)
declare -A kpkg=() kver=()
resolve_kernels() {
	local names k pkg ver list=() ok=0
	declare -A cand=()
	names=$(apt-cache pkgnames linux-image-)
	for k in "${selected[@]}"; do
		kpkg[$k]=$(grep -E "^(${kregex[$k]})\$" <<<"$names" | sort -V | tail -n1 || true)
		[[ -z ${kpkg[$k]} ]] || list+=("${kpkg[$k]}")
	done
	if ((${#list[@]})); then
		while read -r pkg ver; do
			cand[$pkg]=$ver
		done < <(apt-cache policy "${list[@]}" | awk '/^[^ ].*:$/ {p = substr($1, 1, length($1) - 1)} /^  Candidate:/ {print p, $2}')
	fi
	for k in "${selected[@]}"; do
		pkg=${kpkg[$k]}
		kver[$k]=
		[[ -z $pkg ]] || kver[$k]=${cand[$pkg]:-}
		if [[ -z $pkg || -z ${kver[$k]} || ${kver[$k]} == "(none)" ]]; then
			log "$k: no installable package matches ${kregex[$k]}"
			ok=1
		fi
	done
	return $ok
}

# modname FILE: the kernel's name for a module file (dashes become underscores).
modname() {
	local b=${1##*/}
	b=${b%%.ko*}
	echo "${b//-/_}"
}

# decompress_ko SRC DST: write SRC (.ko, .ko.xz, .ko.zst or .ko.gz) to DST
# uncompressed; busybox insmod loads plain ELF only.
decompress_ko() {
	case $1 in
	*.ko) cp "$1" "$2" ;;
	*.ko.xz) xz -dc "$1" >"$2" ;;
	*.ko.zst) zstd -dcq "$1" >"$2" ;;
	*.ko.gz) gzip -dc "$1" >"$2" ;;
	*) return 1 ;;
	esac
}

# bytes FILE OFFSET COUNT: COUNT bytes of FILE from OFFSET.
bytes() { dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none; }
# le FILE OFFSET SIZE: the unsigned little-endian integer of SIZE bytes there.
le() { bytes "$1" "$2" "$3" | od -An -tu"$3" | tr -d ' \n'; }

# extract_vmlinux BZIMAGE OUT: write the ELF vmlinux compressed inside a
# bzImage to OUT, locating it by the setup header's payload_offset and
# payload_length (boot protocol 2.08+). Returns non-zero if it cannot.
extract_vmlinux() {
	local bz=$1 dst=$2 setup_sects poff plen start size dec
	[[ $(bytes "$bz" 514 4) == HdrS ]] || return 1 # 0x202: setup header magic
	(($(le "$bz" 518 2) >= 0x208)) || return 1     # 0x206: boot protocol version
	setup_sects=$(le "$bz" 497 1)                  # 0x1f1
	((setup_sects)) || setup_sects=4
	poff=$(le "$bz" 584 4) # 0x248, from the start of the protected-mode code
	plen=$(le "$bz" 588 4) # 0x24c
	start=$(((setup_sects + 1) * 512 + poff))
	# The payload ends with the uncompressed size as a little-endian u32.
	size=$(le "$bz" $((start + plen - 4)) 4)
	case $(bytes "$bz" "$start" 6 | od -An -tx1 | tr -d ' \n') in
	1f8b*) dec="gzip -dc" ;;
	fd377a585a00) dec="xz -dc --single-stream" ;;
	28b52ffd*) dec="zstd -dcq" ;;
	5d0000*) dec="xz -dc --format=lzma" ;;
	*) return 1 ;;
	esac
	bytes "$bz" "$start" $((plen - 4)) | $dec >"$dst.tmp" || return 1
	[[ $(stat -c %s "$dst.tmp") == "$size" ]] || return 1
	[[ $(bytes "$dst.tmp" 0 4 | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] || return 1
	# qemu boots an ELF kernel only through its PVH entry point (a Xen ELF
	# note of type 0x12, XEN_ELFNOTE_PHYS32_ENTRY).
	readelf -n "$dst.tmp" 2>/dev/null | grep -E 'Xen[[:space:]]+0x[0-9a-f]+[[:space:]]+.*0x00000012' >/dev/null || return 1
	mv "$dst.tmp" "$dst"
}

# modules_key: what the module set depends on besides the kernel itself.
modules_key() {
	{
		echo "layout=$layout"
		sed 's/#.*//;/^[[:space:]]*$/d' "$here/modules.txt"
	} | sha256sum | cut -c1-12
}

# build_modules ROOT RELEASE DST: resolve the modules in modules.txt and their
# dependencies in the extracted package tree ROOT, decompress them into DST,
# write DST/order (load order, "NAME PARAMS...") and DST/modules.cpio
# (lib/modules/podtap/).
build_modules() {
	local root=$1 rel=$2 dst=$3
	local moddir=$root/lib/modules/$rel
	local -A file=() builtin=() state=() params=()
	local f m p order=()
	while IFS= read -r f; do file[$(modname "$f")]=$f; done < <(find "$moddir/kernel" -name '*.ko*')
	if [[ -f $moddir/modules.builtin ]]; then
		while IFS= read -r f; do builtin[$(modname "$f")]=1; done <"$moddir/modules.builtin"
	fi
	local stage=$dst/stage
	rm -rf "$stage"
	mkdir -p "$stage/lib/modules/podtap"

	# Depth-first: a module goes into the order after all its dependencies.
	visit() {
		local m=$1 d deps
		case ${state[$m]:-} in
		visited) return 0 ;;
		active) die "module dependency loop at $m ($rel)" ;;
		esac
		if [[ -n ${builtin[$m]:-} ]]; then
			state[$m]=visited
			return 0
		fi
		[[ -n ${file[$m]:-} ]] || die "kernel $rel has no module $m"
		state[$m]=active
		decompress_ko "${file[$m]}" "$stage/lib/modules/podtap/$m.ko"
		deps=$(modinfo -F depends "$stage/lib/modules/podtap/$m.ko" | tr ',' ' ')
		# A "pre:" soft dependency is loaded first too, when the kernel has it.
		for d in $(modinfo -F softdep "$stage/lib/modules/podtap/$m.ko" | sed -n 's/.*pre:\([^:]*\)\(post:.*\)\{0,1\}$/\1/p'); do
			d=${d//-/_}
			[[ -n ${file[$d]:-} || -n ${builtin[$d]:-} ]] && deps+=" $d"
		done
		for d in $deps; do visit "${d//-/_}"; done
		state[$m]=visited
		order+=("$m${params[$m]:+ ${params[$m]}}")
	}
	while read -r m p; do
		[[ -n $m ]] && params[${m//-/_}]=$p
	done < <(sed 's/#.*//' "$here/modules.txt")
	while read -r m _; do
		[[ -n $m ]] && visit "${m//-/_}"
	done < <(sed 's/#.*//' "$here/modules.txt")

	printf '%s\n' "${order[@]}" >"$stage/lib/modules/podtap/order"
	cp "$stage/lib/modules/podtap/order" "$dst/order"
	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$dst/modules.cpio.tmp"
	mv "$dst/modules.cpio.tmp" "$dst/modules.cpio"
	rm -rf "$stage"
}

# prepare_kernel NAME: make sure the kernel NAME is downloaded and unpacked;
# set kdir to its cache directory, and kfresh to 1 if it had to fill it.
kdir='' kfresh=0
prepare_kernel() {
	local name=$1 re=${kregex[$1]} pkg=${kpkg[$1]} ver=${kver[$1]} dir deb tmp rel mkey
	dir=$cache/kernels/$name/${pkg}_${ver}_l$layout
	mkey=$(modules_key)
	if [[ -f $dir/ok && -f $dir/modules-$mkey/modules.cpio ]]; then
		kdir=$dir kfresh=0
		return 0
	fi

	deb=$cache/debs/${pkg}_${ver//:/%3a}_amd64.deb
	if [[ ! -f $deb ]]; then
		log "$name: downloading $pkg $ver"
		tmp=$(mktemp -d "$cache/debs/.dl.XXXXXX")
		if ! (cd "$tmp" && apt-get -o Acquire::Retries=3 -o APT::Sandbox::User=root -qq download "$pkg=$ver" >&2); then
			# The lists may name a version the archive no longer serves.
			rm -rf "$tmp"
			apt_update_once
			resolve_kernels || die "$name: no package to download"
			pkg=${kpkg[$name]} ver=${kver[$name]}
			dir=$cache/kernels/$name/${pkg}_${ver}_l$layout
			deb=$cache/debs/${pkg}_${ver//:/%3a}_amd64.deb
			tmp=$(mktemp -d "$cache/debs/.dl.XXXXXX")
			(cd "$tmp" && apt-get -o Acquire::Retries=3 -o APT::Sandbox::User=root -qq download "$pkg=$ver" >&2) ||
				die "$name: download of $pkg $ver failed"
		fi
		mv "$tmp"/*.deb "$deb"
		rm -rf "$tmp"
	fi

	log "$name: unpacking $(basename "$deb")"
	tmp=$(mktemp -d "$cache/kernels/.x.XXXXXX")
	dpkg-deb -x "$deb" "$tmp/root"
	rel=$(find "$tmp/root/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -n1)
	[[ -n $rel && -f $tmp/root/boot/vmlinuz-$rel ]] || die "$name: $deb has no boot/vmlinuz-<release>"
	mkdir -p "$dir"
	rm -f "$dir/ok"
	echo "$rel" >"$dir/release"
	echo "$pkg $ver" >"$dir/package"
	cp "$tmp/root/boot/vmlinuz-$rel" "$dir/vmlinuz"
	cp "$tmp/root/boot/config-$rel" "$dir/config"
	if ! extract_vmlinux "$dir/vmlinuz" "$dir/vmlinux"; then
		rm -f "$dir/vmlinux" "$dir/vmlinux.tmp"
		log "$name: no bootable ELF vmlinux in the bzImage, booting vmlinuz"
	fi
	rm -rf "$dir"/modules-*
	mkdir -p "$dir/modules-$mkey"
	build_modules "$tmp/root" "$rel" "$dir/modules-$mkey"
	rm -rf "$tmp"
	touch "$dir/ok"

	# Keep one version per kernel name: drop what an older resolve left.
	local old b
	for old in "$cache/kernels/$name"/*; do
		[[ $old == "$dir" ]] && continue
		rm -rf "$old"
	done
	for old in "$cache/debs"/*.deb; do
		[[ -e $old && $old != "$deb" ]] || continue
		b=$(basename "$old")
		grep -Eq "^(${re})\$" <<<"${b%%_*}" && rm -f "$old"
	done
	kdir=$dir kfresh=1
}

# tool_paths: print "GUEST-PATH HOST-FILE" for each program in tools.txt and
# each shared library it needs, resolving symlinks for the contents.
tool_paths() {
	local t p line lib
	while read -r t _; do
		t=${t%%#*}
		[[ -n $t ]] || continue
		p=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v "$t" || true)
		if [[ $p != /* ]]; then
			log "tools.txt: $t not found on this host; the VM will not have it"
			continue
		fi
		echo "$p $(readlink -f "$p")"
		# "libx.so.1 => /lib/.../libx.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)";
		# a static program makes ldd fail, and needs nothing more.
		while read -r line; do
			lib=$(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$line")
			[[ -n $lib ]] && echo "$lib $(readlink -f "$lib")"
		done < <(ldd "$(readlink -f "$p")" 2>/dev/null || true)
	done < <(sed 's/#.*//' "$here/tools.txt") | sort -u
}

# base_cpio: print the path of the cached initramfs base (busybox, host
# tools, /init, /etc), building it if any of its inputs changed.
base_cpio() {
	local key f stage tools guest hostf t
	tools=$(tool_paths)
	key=$( {
		echo "layout=$layout"
		sha256sum /bin/busybox "$here/init.sh" | cut -d' ' -f1
		[[ -z $tools ]] || cut -d' ' -f2 <<<"$tools" | xargs -d '\n' sha256sum | cut -d' ' -f1
		echo "$tools"
	} | sha256sum | cut -c1-12)
	f=$cache/base/base-$key.cpio
	if [[ ! -f $f ]]; then
		stage=$(mktemp -d "$cache/base/.stage.XXXXXX")
		mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,root,var/tmp,lib/modules,podtap}
		ln -s ../run "$stage/var/run"
		cp /bin/busybox "$stage/bin/busybox"
		local a
		for a in $(/bin/busybox --list); do
			[[ $a == busybox || -e $stage/bin/$a ]] || ln -s busybox "$stage/bin/$a"
		done
		ln -s ../bin/busybox "$stage/sbin/modprobe"
		while read -r guest hostf; do
			[[ -n $guest ]] || continue
			mkdir -p "$stage$(dirname "$guest")"
			cp "$hostf" "$stage$guest"
		done <<<"$tools"
		# The programs themselves also replace busybox's applets in /bin, for
		# tests and scripts that name /bin/ip or #!/bin/bash.
		while read -r t _; do
			t=${t%%#*}
			[[ -n $t ]] || continue
			guest=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin command -v "$t" || true)
			[[ $guest == /* && -e $stage$guest && $guest != /bin/* ]] || continue
			ln -sfn "$guest" "$stage/bin/$(basename "$guest")"
		done < <(sed 's/#.*//' "$here/tools.txt")
		install -m 0755 "$here/init.sh" "$stage/init"
		printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$stage/etc/passwd"
		printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
		printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$stage/etc/hosts"
		(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$f.tmp"
		mv "$f.tmp" "$f"
		rm -rf "$stage"
		find "$cache/base" -name 'base-*.cpio' ! -name "base-$key.cpio" -delete
	fi
	echo "$f"
}

# ------------------------------------------------------------ test binaries

# build_tests DIR: build a static test binary of each package into DIR/stage
# and pack them as DIR/tests.cpio; DIR/names maps "FILE<TAB>PACKAGE".
build_tests() {
	local dir=$1 mod list ip pdir rel file
	local stage=$dir/stage
	mkdir -p "$stage/podtap/bin" "$stage/podtap/src"
	cd "$repo"
	mod=$(go list -m)
	list=$(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{"\t"}}{{.Dir}}{{end}}' "${pkgs[@]}")
	[[ -n $list ]] || die "no test files in: ${pkgs[*]}"
	: >"$dir/names"
	# The podtap command, for tests that run it (e2e's PODTAP_BIN).
	CGO_ENABLED=0 go build -o "$stage/podtap/bin/podtap" ./cmd/podtap
	echo "PODTAP_BIN=/podtap/bin/podtap" >"$stage/podtap/env"
	while IFS=$'\t' read -r ip pdir; do
		rel=${ip#"$mod"}
		rel=${rel#/}
		[[ -n $rel ]] || rel=$(basename "$mod")
		file=${rel//\//_}.test
		CGO_ENABLED=0 go test -c -o "$stage/podtap/bin/$file" "$ip"
		mkdir -p "$stage/podtap/src/$file"
		if [[ -d $pdir/testdata ]]; then
			cp -a "$pdir/testdata" "$stage/podtap/src/$file/"
		fi
		echo "$file" >>"$stage/podtap/run.list"
		printf '%s\t%s\n' "$file" "$rel" >>"$dir/names"
	done <<<"$list"

	local args=(-test.v -test.timeout=$((timeout - 30))s)
	[[ -n $run_re ]] && args+=("-test.run=$run_re")
	args+=("${testflags[@]}")
	printf '%s\n' "${args[@]}" >"$stage/podtap/args"
	(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$dir/tests.cpio"
	rm -rf "$stage"
}

# ---------------------------------------------------------------- booting

# boot NAME KDIR: boot kernel NAME with the run's initramfs; leave console.log,
# results.log and a status file (rc=... wall=...) in $out/NAME.
boot() {
	local name=$1 kdir=$2 dir=$out/$1 kernel mkey t0 t1 rc
	mkdir -p "$dir/env/podtap"
	mkey=$(modules_key)
	# This kernel's expectations, as PODTAP_EXPECT_<KEY>=VALUE.
	local kv key
	for kv in ${kexpect[$name]}; do
		key=${kv%%=*}
		echo "PODTAP_EXPECT_${key^^}=${kv#*=}"
	done >"$dir/env/podtap/kernel.env"
	echo "PODTAP_KERNEL=$name" >>"$dir/env/podtap/kernel.env"
	(cd "$dir/env" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$dir/env.cpio"
	rm -rf "$dir/env"
	cat "$base" "$kdir/modules-$mkey/modules.cpio" "$out/tests.cpio" "$dir/env.cpio" >"$dir/initrd.cpio"
	kernel=$kdir/vmlinux
	if [[ ${PODTAP_VM_BOOT:-} == bzimage || ! -f $kernel ]]; then
		kernel=$kdir/vmlinuz
	fi
	: >"$dir/console.log"
	: >"$dir/results.log"
	t0=$(date +%s.%N)
	timeout -k 5 "$timeout" qemu-system-x86_64 \
		-accel tcg,thread=single -smp "${PODTAP_VM_SMP:-2}" -m "${PODTAP_VM_MEM:-2G}" \
		-bios /usr/share/qemu/qboot.rom -nodefaults -no-reboot -nic none \
		-display none -monitor none \
		-serial "file:$dir/console.log" -serial "file:$dir/results.log" \
		-kernel "$kernel" -initrd "$dir/initrd.cpio" \
		-append "console=ttyS0 panic=-1 oops=panic quiet loglevel=4 rdinit=/init ${PODTAP_VM_APPEND:-}" \
		</dev/null >"$dir/qemu.log" 2>&1 &
	local qpid=$! tailpid=
	echo "$qpid" >"$dir/qemu.pid"
	if ((verbose)); then
		tail -q -n +1 -s 0.2 --pid="$qpid" -f "$dir/console.log" "$dir/results.log" 2>/dev/null |
			sed -u "s/\r//; s/^/[$name] /" >&2 &
		tailpid=$!
	fi
	rc=0
	wait "$qpid" || rc=$?
	t1=$(date +%s.%N)
	[[ -z $tailpid ]] || wait "$tailpid" || true
	rm -f "$dir/qemu.pid"
	rm -f "$dir/initrd.cpio" "$dir/env.cpio"
	echo "rc=$rc wall=$(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") kernel=$(basename "$kernel")" >"$dir/status"
}

# ---------------------------------------------------------------- main

declare -A kdirs=()
# One run at a time fills the cache; boots read it without the lock.
exec {lockfd}>"$cache/.lock"
flock "$lockfd"
# Whatever an interrupted run left half-made.
rm -rf "$cache"/debs/.dl.* "$cache"/kernels/.x.* "$cache"/base/.stage.*
build_pid=
if ((!prepare_only)); then
	# Build the test binaries while the kernels are prepared.
	(
		t=$(now)
		build_tests "$out" >"$out/build.log" 2>&1
		log "built $(wc -l <"$out/names") test binaries in $(since "$t") s"
	) &
	build_pid=$!
fi
if ! resolve_kernels; then
	apt_update_once
	resolve_kernels || die "no kernel package for some of: ${selected[*]}"
fi

# Kernels are prepared in parallel (download, unpack, modules); each writes
# its cache directory to a file.
mkdir -p "$out/.prep"
prep_pids=()
for k in "${selected[@]}"; do
	(
		t=$(now)
		prepare_kernel "$k"
		echo "$kdir" >"$out/.prep/$k"
		if ((kfresh)); then
			log "$k: $(cat "$kdir/package") ready in $(since "$t") s"
		else
			log "$k: $(cat "$kdir/package") (cached)"
		fi
	) &
	prep_pids+=($!)
done
for p in "${prep_pids[@]}"; do
	wait "$p" || die "preparing the kernels failed"
done
for k in "${selected[@]}"; do
	kdirs[$k]=$(cat "$out/.prep/$k")
done
rm -rf "$out/.prep"
base=$(base_cpio)
flock -u "$lockfd"
if ((prepare_only)); then
	exit 0
fi
if ! wait "$build_pid"; then
	cat "$out/build.log" >&2
	die "building test binaries failed"
fi

# If this script is interrupted, stop the VMs it started (timeout passes the
# signal on to qemu) instead of leaving them to their timeout.
stop_vms() {
	local f
	for f in "$out"/*/qemu.pid; do
		[[ -e $f ]] && kill "$(cat "$f")" 2>/dev/null
	done
	wait
	log "interrupted: stopped the VMs"
	exit 130
}
trap stop_vms INT TERM

log "booting ${selected[*]} (logs in $out)"
running=0
for k in "${selected[@]}"; do
	if ((running >= jobs)); then
		wait -n || true
		running=$((running - 1))
	fi
	boot "$k" "${kdirs[$k]}" &
	running=$((running + 1))
done
wait
rm -f "$out/tests.cpio"

# ---------------------------------------------------------------- summary

# Split each kernel's results.log into one log per binary and summarize it as
# tab-separated rows: kernel release boot wall binary result pass fail skip
# secs facts (facts as key=value pairs joined by \037).
rows=$out/rows.tsv
: >"$rows"
for k in "${selected[@]}"; do
	dir=$out/$k
	st=$(cat "$dir/status")
	qrc=$(sed -E 's/.*rc=([0-9]+).*/\1/' <<<"$st")
	wall=$(sed -E 's/.*wall=([0-9.]+).*/\1/' <<<"$st")
	tr -d '\r' <"$dir/results.log" | awk -v kernel="$k" -v qrc="$qrc" -v wall="$wall" \
		-v names="$out/names" -v dir="$dir" '
	BEGIN {
		OFS = "\t"
		while ((getline line < names) > 0) { split(line, f, "\t"); pkg[f[1]] = f[2]; want[++n] = f[1] }
		release = "?"; boot = "?"
	}
	/^@@PODTAP kernel / {
		for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "release") release = kv[2]; if (kv[1] == "uptime") boot = sprintf("%.1f", kv[2]) }
		next
	}
	/^@@PODTAP begin / { cur = $3; seen[cur] = 1; log_[cur] = dir "/" cur ".log"; printf "" > log_[cur]; next }
	/^@@PODTAP end / {
		for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "rc") rc[$3] = kv[2]; if (kv[1] == "secs") secs[$3] = kv[2] }
		close(log_[$3]); cur = ""; next
	}
	/^@@PODTAP done/ { done = 1; next }
	cur != "" {
		print > log_[cur]
		if ($0 ~ /^ *--- PASS/) pass[cur]++
		else if ($0 ~ /^ *--- FAIL/) fail[cur]++
		else if ($0 ~ /^ *--- SKIP/) skip[cur]++
		if (match($0, /PODTAP_FACT [A-Za-z0-9_.-]+=[^ \t]*/)) {
			pair = substr($0, RSTART + 12, RLENGTH - 12)
			key = substr(pair, 1, index(pair, "=") - 1); val = substr(pair, index(pair, "=") + 1)
			if (!((cur, key) in fact)) { fact[cur, key] = val; keys[cur] = keys[cur] key "\n" }
			else if (index("," fact[cur, key] ",", "," val ",") == 0) fact[cur, key] = fact[cur, key] "," val
		}
	}
	END {
		vm = "ok"
		if (qrc == 124 || qrc == 137) vm = "timeout"
		else if (!done) vm = "crashed"
		for (i = 1; i <= n; i++) {
			b = want[i]
			if (b in rc) result = (rc[b] == 0 ? "ok" : "FAIL(rc=" rc[b] ")")
			else if (b in seen) result = (vm == "timeout" ? "TIMEOUT" : "CRASH")
			else result = (vm == "timeout" ? "TIMEOUT" : (vm == "crashed" ? "CRASH" : "NOT-RUN"))
			facts = ""
			nk = split(keys[b], ks, "\n")
			for (j = 1; j < nk; j++) facts = facts (facts == "" ? "" : "\037") ks[j] "=" fact[b, ks[j]]
			print kernel, release, boot, wall, pkg[b], result, pass[b] + 0, fail[b] + 0, skip[b] + 0, (b in secs ? secs[b] : "-"), facts
		}
	}' >>"$rows"
done

# Per test binary: how each did and how long it took.
awk -F'\t' '
BEGIN { ncol = split("KERNEL PACKAGE RESULT PASS FAIL SKIP TIME(s)", hdr, " "); split("1 5 6 7 8 9 10", src, " ") }
{ for (c = 1; c <= ncol; c++) cell[NR, c] = $(src[c]) }
END {
	for (c = 1; c <= ncol; c++) { cell[0, c] = hdr[c]; w[c] = length(hdr[c]) }
	for (r = 0; r <= NR; r++) for (c = 1; c <= ncol; c++) if (length(cell[r, c]) > w[c]) w[c] = length(cell[r, c])
	for (r = 0; r <= NR; r++) {
		line = ""
		for (c = 1; c <= ncol; c++) line = line sprintf(c < ncol ? "%-" w[c] "s  " : "%s", cell[r, c])
		print line
	}
}' "$rows"
echo

# One row per kernel: its binaries' results and counts added up, and each
# fact key's values from all of them (a set, in the order first seen).
# Tab-separated: kernel release boot wall result pass fail skip secs facts.
krows=$out/kernels.tsv
awk -F'\t' '
BEGIN { OFS = "\t" }
{
	k = $1
	if (!(k in release)) { order[++n] = k; release[k] = $2; boot[k] = $3; wall[k] = $4; result[k] = "" }
	if ($6 != "ok") result[k] = result[k] (result[k] == "" ? "" : ",") $5 ":" $6
	pass[k] += $7; fail[k] += $8; skip[k] += $9
	if ($10 != "-") secs[k] += $10
	# A binary that failed without a "--- FAIL" line (panic, timeout,
	# crash) counts as one failed test, so no row reads "0 failed" then.
	if ($6 != "ok" && $8 == 0) fail[k]++
	nf = split($11, fs, "\037")
	for (i = 1; i <= nf; i++) {
		if (fs[i] == "") continue
		key = substr(fs[i], 1, index(fs[i], "=") - 1)
		nv = split(substr(fs[i], index(fs[i], "=") + 1), vs, ",")
		for (j = 1; j <= nv; j++) {
			if ((k, key, vs[j]) in have) continue
			have[k, key, vs[j]] = 1
			if ((k, key) in val) val[k, key] = val[k, key] "," vs[j]
			else val[k, key] = vs[j]
			if (!((k, key) in hasKey)) { hasKey[k, key] = 1; keys[k] = keys[k] (keys[k] == "" ? "" : "\036") key }
		}
	}
}
END {
	for (i = 1; i <= n; i++) {
		k = order[i]
		facts = ""
		nk = split(keys[k], ks, "\036")
		for (j = 1; j <= nk; j++) facts = facts (facts == "" ? "" : "\037") ks[j] "=" val[k, ks[j]]
		print k, release[k], boot[k], wall[k], (result[k] == "" ? "ok" : "FAIL(" result[k] ")"), pass[k] + 0, fail[k] + 0, skip[k] + 0, sprintf("%.1f", secs[k]), facts
	}
}' "$rows" >"$krows"

# fact KERNEL KEY: the values the tests of KERNEL reported for KEY.
fact() {
	awk -F'\t' -v k="$1" -v key="$2" '$1 == k {
		n = split($10, fs, "\037")
		for (i = 1; i <= n; i++) if (substr(fs[i], 1, length(key) + 1) == key "=") print substr(fs[i], length(key) + 2)
	}' "$krows"
}
# sameset A B: two comma lists hold the same values.
sameset() { [[ $(tr ',' '\n' <<<"$1" | sort -u) == $(tr ',' '\n' <<<"$2" | sort -u) ]]; }

# Check each kernel's facts against kernels.txt. Without --strict, the tests
# that report a fact may not have run (--run, fewer packages): only a wrong
# value fails then.
declare -A misses=()
failed=()
for k in "${selected[@]}"; do
	for kv in ${kexpect[$k]}; do
		key=${kv%%=*} wantv=${kv#*=}
		got=$(fact "$k" "$key")
		[[ -z $got ]] && ((!strict)) && continue
		if ! sameset "$got" "$wantv"; then
			misses[$k]+="${misses[$k]:+; }$key=${got:-(none)}, want $wantv"
		fi
	done
	if [[ -n ${misses[$k]:-} ]] || ! awk -F'\t' -v k="$k" '$1 == k && $5 != "ok" {exit 1}' "$krows"; then
		failed+=("$k")
	fi
done

# The summary: one row per kernel, a column per fact key (those kernels.txt
# expects first, in its order, then the others sorted). A value that is not
# what kernels.txt expects is followed by "!=" and the expected one.
{
	printf 'keys'
	for k in "${selected[@]}"; do for kv in ${kexpect[$k]}; do printf '\t%s' "${kv%%=*}"; done; done
	echo
	for k in "${selected[@]}"; do
		printf 'want\t%s' "$k"
		for kv in ${kexpect[$k]}; do printf '\t%s' "$kv"; done
		echo
	done
	cat "$krows"
} | awk -F'\t' -v partial="$((!strict))" '
$1 == "keys" { for (i = 2; i <= NF; i++) if (!($i in isKey)) { isKey[$i] = 1; keys[++nkeys] = $i }; next }
$1 == "want" { for (i = 3; i <= NF; i++) want[$2, substr($i, 1, index($i, "=") - 1)] = substr($i, index($i, "=") + 1); next }
{
	row[++nr] = $0
	n = split($10, fs, "\037")
	for (i = 1; i <= n; i++) if (fs[i] != "") { k = substr(fs[i], 1, index(fs[i], "=") - 1); if (!(k in isKey)) { isKey[k] = 1; extra[++nextra] = k } }
}
END {
	for (i = 2; i <= nextra; i++) { v = extra[i]; j = i - 1; while (j > 0 && extra[j] > v) { extra[j + 1] = extra[j]; j-- } extra[j + 1] = v }
	for (i = 1; i <= nextra; i++) keys[++nkeys] = extra[i]
	ncol = split("KERNEL RELEASE RESULT PASS FAIL SKIP BOOT(s) VM(s)", hdr, " ")
	src[1] = 1; src[2] = 2; src[3] = 5; src[4] = 6; src[5] = 7; src[6] = 8; src[7] = 3; src[8] = 4
	for (i = 1; i <= nkeys; i++) hdr[ncol + i] = keys[i]
	total = ncol + nkeys
	for (c = 1; c <= total; c++) { cell[0, c] = hdr[c]; w[c] = length(hdr[c]) }
	for (r = 1; r <= nr; r++) {
		split(row[r], f, "\t")
		for (c = 1; c <= ncol; c++) cell[r, c] = f[src[c]]
		delete fv
		n = split(f[10], fs, "\037")
		for (i = 1; i <= n; i++) if (fs[i] != "") fv[substr(fs[i], 1, index(fs[i], "=") - 1)] = substr(fs[i], index(fs[i], "=") + 1)
		for (i = 1; i <= nkeys; i++) {
			v = (keys[i] in fv ? fv[keys[i]] : "-")
			if ((f[1], keys[i]) in want && !(partial == 1 && v == "-") && !same(v, want[f[1], keys[i]])) v = v "!=" want[f[1], keys[i]]
			cell[r, ncol + i] = v
		}
		for (c = 1; c <= total; c++) if (length(cell[r, c]) > w[c]) w[c] = length(cell[r, c])
	}
	for (r = 0; r <= nr; r++) {
		line = ""
		for (c = 1; c <= total; c++) line = line sprintf(c < total ? "%-" w[c] "s  " : "%s", cell[r, c])
		print line
	}
}
function same(a, b,    x, y, i, n, m, sa) {
	n = split(a, x, ","); m = split(b, y, ",")
	delete sa
	for (i = 1; i <= n; i++) sa[x[i]] = 1
	for (i = 1; i <= m; i++) { if (!(y[i] in sa)) return 0; sa[y[i]] = 2 }
	for (i in sa) if (sa[i] != 2) return 0
	return 1
}' | tee "$out/summary.txt"

read -r npass nfail nskip < <(awk -F'\t' '{p += $6; f += $7; s += $8} END {print p + 0, f + 0, s + 0}' "$krows")
echo "test-kernels: $npass passed, $nfail failed, $nskip skipped"

if ((${#failed[@]})); then
	# shellcheck disable=SC2034 # read by the EXIT trap
	keep_out=1
	for k in "${failed[@]}"; do
		echo >&2
		st=$(cat "$out/$k/status")
		case $st in
		rc=124\ * | rc=137\ *) why="VM killed after the ${timeout} s timeout" ;;
		rc=0\ *) if ! grep -q '^@@PODTAP done' "$out/$k/results.log"; then
			why="VM stopped before the tests finished (kernel panic? see the console)"
		elif awk -F'\t' -v k="$k" '$1 == k && $5 != "ok" {exit 1}' "$krows"; then
			why="the tests passed, but did not report what kernels.txt expects"
		else
			why="tests failed"
		fi ;;
		*) why="qemu failed: $(head -n 3 "$out/$k/qemu.log" | tr '\n' ' ')" ;;
		esac
		echo "---- kernel $k: $why ($st)" >&2
		if [[ -n ${misses[$k]:-} ]]; then
			echo "-- kernels.txt expects of $k: ${kexpect[$k]}; the tests reported: ${misses[$k]}" >&2
		fi
		for f in "$out/$k"/*.test.log; do
			[[ -e $f ]] || continue
			if grep -q -- '^ *--- FAIL\|^FAIL\|^panic:' "$f" || [[ $(tail -n1 "$f") != PASS ]]; then
				echo "-- $(basename "$f") (last 40 lines):" >&2
				tail -n 40 "$f" >&2
			fi
		done
		echo "-- console (last 30 lines):" >&2
		tr -d '\r' <"$out/$k/console.log" | tail -n 30 >&2
	done
	echo >&2
	die "failed on kernel(s): ${failed[*]} (logs in $out)"
fi
if ((auto_out)); then
	log "all kernels passed"
else
	log "all kernels passed (logs in $out)"
fi

#!/bin/sh
# /init of podtap's test VM (busybox sh, PID 1). Packed into the initramfs by
# hack/vm/run.sh; not meant to run on a host.
#
# It prepares what podtap's privileged tests expect of a node (bpffs, a
# cgroup v2 hierarchy with the memory controller, lo up, the tc/veth modules,
# a disk filesystem on /var/tmp), exports the settings in /podtap/env and
# /podtap/kernel.env, runs every test binary listed in /podtap/run.list with
# the arguments in /podtap/args (one per line), and powers off.
#
# Channels: kernel messages and this script's progress go to the console
# (ttyS0); test output goes to ttyS1 only, framed by lines the host parses:
#   @@PODTAP kernel release=R uptime=S   the guest is up (S: seconds since boot)
#   @@PODTAP begin NAME                  a test binary starts
#   @@PODTAP end NAME rc=N secs=S        it exited with code N after S seconds
#   @@PODTAP done                        every binary ran; powering off
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp PODTAP_VM=1

log() { echo "podtap-init: $*"; }

# Never return: if anything below goes badly wrong, power off anyway. (PID 1
# exiting would panic the kernel, which with panic=-1 and -no-reboot also ends
# the VM, but with a noisy trace.)
finish() {
	exec 3>&- # closing the tty waits until the UART has sent everything
	sync
	poweroff -f
	echo o >/proc/sysrq-trigger
	sleep 5
}

uptime_s() { cut -d' ' -f1 /proc/uptime; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null # may be mounted by the kernel already
mkdir -p /dev/pts /dev/shm /run /tmp /root
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t bpf -o mode=0700 bpffs /sys/fs/bpf || log "mount bpffs failed"
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup || log "mount cgroup2 failed"
for c in cpu io memory pids; do
	if grep -qw "$c" /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
		echo "+$c" >/sys/fs/cgroup/cgroup.subtree_control || log "enable cgroup controller $c failed"
	elif [ "$c" = memory ]; then
		log "cgroup2 has no memory controller"
	fi
done

# BPF maps on kernels before 5.11 count against RLIMIT_MEMLOCK; harmless after.
# shellcheck disable=SC3045 # busybox ash has ulimit -l
ulimit -l unlimited
ip link set lo up || log "bring up lo failed"

# Each line: a module, then its parameters.
if [ -f /lib/modules/podtap/order ]; then
	while read -r m params; do
		# shellcheck disable=SC2086 # the parameters are separate words
		insmod "/lib/modules/podtap/$m.ko" $params || log "insmod $m failed"
	done </lib/modules/podtap/order
fi

# A disk filesystem for files that must be page cache, not shmem: the
# RAM disk of modules.txt as ext2, on /var/tmp (where tests look for one).
if [ -b /dev/ram0 ]; then
	if mke2fs -b 4096 -m 0 /dev/ram0 >/dev/null && mount -t ext2 /dev/ram0 /var/tmp; then
		chmod 1777 /var/tmp
	else
		log "ext2 on /dev/ram0 for /var/tmp failed"
	fi
fi

log "$(awk '/^(MemTotal|MemAvailable):/ {printf "%s %d MiB ", $1, $2 / 1024}' /proc/meminfo)"

# Settings for the tests: /podtap/env (this run's, e.g. PODTAP_BIN) and
# /podtap/kernel.env (this kernel's, e.g. PODTAP_EXPECT_ATTACH).
for f in /podtap/env /podtap/kernel.env; do
	[ -f "$f" ] || continue
	while IFS= read -r kv; do
		# shellcheck disable=SC2163 # export the NAME=VALUE in kv
		case $kv in [A-Z]*=*) export "$kv" ;; esac
	done <"$f"
done

# Results channel. raw: no \n -> \r\n translation, no echo.
if ! exec 3>/dev/ttyS1; then
	log "cannot open /dev/ttyS1 for results"
	finish
fi
stty -F /dev/ttyS1 raw -echo 2>/dev/null

set --
if [ -f /podtap/args ]; then
	while IFS= read -r a; do set -- "$@" "$a"; done </podtap/args
fi

echo "@@PODTAP kernel release=$(uname -r) uptime=$(uptime_s)" >&3
if [ -f /podtap/run.list ]; then
	while read -r name; do
		[ -n "$name" ] || continue
		dir=/podtap/src/$name
		[ -d "$dir" ] || dir=/tmp
		start=$(uptime_s)
		echo "@@PODTAP begin $name" >&3
		# A subshell so a test's cd cannot leak; stdin from /dev/null so a
		# test cannot eat the rest of run.list.
		(cd "$dir" && exec "/podtap/bin/$name" "$@") </dev/null >&3 2>&3
		rc=$?
		end=$(uptime_s)
		echo "@@PODTAP end $name rc=$rc secs=$(awk "BEGIN{printf \"%.1f\", $end - $start}")" >&3
	done </podtap/run.list
fi
echo "@@PODTAP done" >&3
finish

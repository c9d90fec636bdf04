package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// MemoryRoot is where the cgroup v1 memory hierarchy is mounted.
const MemoryRoot = "/sys/fs/cgroup/memory"

// AddCgroup creates the v1 memory cgroup MemoryRoot/rel and whichever of
// its parents are missing, as a runtime lays out a pod's cgroups (for
// instance <prefix>/kubepods/burstable/pod<uid>/<container id>). Close
// removes them, after the processes started in the pod, deepest first.
func (p *Pod) AddCgroup(rel string) (string, error) {
	dir := filepath.Join(MemoryRoot, rel)
	if !strings.HasPrefix(dir, MemoryRoot+"/") {
		return "", fmt.Errorf("cgroup %q is outside %s", rel, MemoryRoot)
	}
	var created []string
	for d := dir; d != MemoryRoot; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		created = append([]string{d}, created...)
	}
	for _, d := range created {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", fmt.Errorf("create memory cgroup: %w", err)
		}
		p.cleanups = append(p.cleanups, func() error { return removeCgroup(d) })
	}
	return dir, nil
}

// removeCgroup removes a cgroup directory, moving out any process left in
// it and waiting a little for exiting ones to leave.
func removeCgroup(dir string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, pid := range strings.Fields(string(procs)) {
				os.WriteFile(filepath.Join(MemoryRoot, "cgroup.procs"), []byte(pid), 0)
			}
		}
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartIn runs a command inside the pod's network namespace, in the
// memory cgroup directory cgroup (made with AddCgroup). The process is
// killed and reaped on Close, before the cgroup is removed.
func (p *Pod) StartIn(ctx context.Context, cgroup, name string, args ...string) (*exec.Cmd, error) {
	// Join the cgroup first: `ip netns exec` remounts /sys.
	script := `echo $$ > "$CG/cgroup.procs" || exit 97; exec ip netns exec "$NS" "$@"`
	cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", script, "sh", name}, args...)...)
	cmd.Env = append(os.Environ(), "NS="+p.Name, "CG="+cgroup)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, p.Name, err)
	}
	p.cleanups = append(p.cleanups, func() error {
		cmd.Process.Kill()
		cmd.Wait()
		return nil
	})
	// Return once the process is in the namespace (and so, before that,
	// in the cgroup), as a runtime reports a container started only then.
	if err := p.waitInNetns(cmd.Process.Pid); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, p.Name, err)
	}
	return cmd, nil
}

// waitInNetns waits until process pid runs in the pod's network namespace.
func (p *Pod) waitInNetns(pid int) error {
	var want syscall.Stat_t
	if err := syscall.Stat(p.NetnsPath(), &want); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			return fmt.Errorf("process %d: %w", pid, err)
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d did not enter network namespace %s", pid, p.Name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// NewMacvlan creates a pod whose only interface, eth0, is a macvlan, as a
// macvlan CNI makes it: there is no veth to the host. Its parent is one end
// of a veth pair that lies wholly in the host (not every kernel has the
// dummy driver); HostIf and HostIdx name that parent. The pod has no
// addresses and carries no traffic.
func NewMacvlan(prefix string) (_ *Pod, err error) {
	n := seq.Add(1)
	p := &Pod{
		Name:   fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), n),
		HostIf: fmt.Sprintf("ptd%d.%d", os.Getpid()%100000, n),
		PodIf:  "eth0",
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if err := run("ip", "netns", "add", p.Name); err != nil {
		return nil, err
	}
	p.cleanups = append(p.cleanups, func() error { return run("ip", "netns", "del", p.Name) })
	if err := run("ip", "link", "add", p.HostIf, "type", "veth", "peer", "name", p.HostIf+"p"); err != nil {
		return nil, err
	}
	p.cleanups = append(p.cleanups, func() error { return run("ip", "link", "del", p.HostIf) })
	mv := fmt.Sprintf("ptm%d.%d", os.Getpid()%100000, n)
	for _, c := range [][]string{
		{"ip", "link", "add", "link", p.HostIf, "name", mv, "type", "macvlan", "mode", "bridge"},
		{"ip", "link", "set", mv, "netns", p.Name},
		{"ip", "-n", p.Name, "link", "set", mv, "name", p.PodIf},
		{"ip", "-n", p.Name, "link", "set", p.PodIf, "up"},
	} {
		if err := run(c[0], c[1:]...); err != nil {
			return nil, err
		}
	}
	l, err := netlink.LinkByName(p.HostIf)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", p.HostIf, err)
	}
	p.HostIdx = l.Attrs().Index
	return p, nil
}

// Bridge is a Linux bridge in the host namespace that pods' host ends can
// be enslaved to, as bridge CNIs (flannel's cni0, bridge) do.
type Bridge struct {
	Name  string
	Index int
}

// NewBridge creates a bridge, up.
func NewBridge() (*Bridge, error) {
	b := &Bridge{Name: fmt.Sprintf("ptb%d.%d", os.Getpid()%100000, seq.Add(1))}
	if err := run("ip", "link", "add", b.Name, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := run("ip", "link", "set", b.Name, "up"); err != nil {
		b.Close()
		return nil, err
	}
	l, err := netlink.LinkByName(b.Name)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("find %s: %w", b.Name, err)
	}
	b.Index = l.Attrs().Index
	return b, nil
}

// Close removes the bridge; its ports stay, released.
func (b *Bridge) Close() error {
	if _, err := netlink.LinkByName(b.Name); err != nil {
		return nil
	}
	return run("ip", "link", "del", b.Name)
}

// JoinBridge enslaves the pod's host end to the bridge and moves the
// host-side addresses from the veth onto the bridge, so that the pod is
// reached through the bridge and its host end is a bridge port.
func (p *Pod) JoinBridge(b *Bridge) error {
	for _, c := range [][]string{
		{"ip", "addr", "del", p.HostIP4.String() + "/30", "dev", p.HostIf},
		{"ip", "-6", "addr", "del", p.HostIP6.String() + "/64", "dev", p.HostIf},
		{"ip", "link", "set", p.HostIf, "master", b.Name},
		{"ip", "addr", "add", p.HostIP4.String() + "/30", "dev", b.Name},
		{"ip", "-6", "addr", "add", p.HostIP6.String() + "/64", "dev", b.Name, "nodad"},
	} {
		if err := run(c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

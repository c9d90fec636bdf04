// Package sandbox makes test "pods" on one machine: a network namespace
// joined to the host by a veth pair, with IPv4 and IPv6 addresses on both
// ends, a memory cgroup, and servers listening inside.
//
// Addresses come from 198.18.0.0/15 (set aside for benchmarking) and the
// unique-local fd00:7064::/32, derived from the host end's interface index,
// which is unique on the host, so concurrent test binaries never collide.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Pod is a network namespace with a veth pair to the host.
type Pod struct {
	Name     string // network namespace name (ip netns)
	HostIf   string // host end of the veth
	HostIdx  int
	PodIf    string // pod end, always eth0
	HostIP4  netip.Addr
	PodIP4   netip.Addr
	HostIP6  netip.Addr
	PodIP6   netip.Addr
	Cgroup   string // memory cgroup directory, if one was made
	cleanups []func() error
}

var seq atomic.Int32

// New creates a pod named after prefix. Close removes everything.
func New(prefix string) (_ *Pod, err error) {
	n := seq.Add(1)
	p := &Pod{
		Name:   fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), n),
		HostIf: fmt.Sprintf("ptv%d.%d", os.Getpid()%100000, n),
		PodIf:  "eth0",
	}
	defer func() {
		if err != nil {
			p.Close() // the results are nil by then; p is not
		}
	}()
	if err := run("ip", "netns", "add", p.Name); err != nil {
		return nil, err
	}
	p.cleanups = append(p.cleanups, func() error { return run("ip", "netns", "del", p.Name) })
	if err := run("ip", "link", "add", p.HostIf, "type", "veth", "peer", "name", p.PodIf, "netns", p.Name); err != nil {
		return nil, err
	}
	p.cleanups = append(p.cleanups, func() error {
		if _, err := netlink.LinkByName(p.HostIf); err != nil {
			return nil // went with the namespace
		}
		return run("ip", "link", "del", p.HostIf)
	})
	l, err := netlink.LinkByName(p.HostIf)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", p.HostIf, err)
	}
	p.HostIdx = l.Attrs().Index
	// One /30 and one /64 per pod, numbered by the host ifindex.
	k := uint32(p.HostIdx % (1 << 15))
	base := uint32(198)<<24 | uint32(18)<<16 | k<<2
	p.HostIP4 = addr4(base + 1)
	p.PodIP4 = addr4(base + 2)
	p.HostIP6 = netip.MustParseAddr(fmt.Sprintf("fd00:7064:%x::1", k))
	p.PodIP6 = netip.MustParseAddr(fmt.Sprintf("fd00:7064:%x::2", k))
	for _, c := range [][]string{
		{"ip", "addr", "add", p.HostIP4.String() + "/30", "dev", p.HostIf},
		{"ip", "-6", "addr", "add", p.HostIP6.String() + "/64", "dev", p.HostIf, "nodad"},
		{"ip", "link", "set", p.HostIf, "up"},
		{"ip", "-n", p.Name, "addr", "add", p.PodIP4.String() + "/30", "dev", p.PodIf},
		{"ip", "-n", p.Name, "-6", "addr", "add", p.PodIP6.String() + "/64", "dev", p.PodIf, "nodad"},
		{"ip", "-n", p.Name, "link", "set", p.PodIf, "up"},
		{"ip", "-n", p.Name, "link", "set", "lo", "up"},
		{"ip", "-n", p.Name, "route", "add", "default", "via", p.HostIP4.String()},
	} {
		if err := run(c[0], c[1:]...); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %w: %s", name, args, err, out)
	}
	return nil
}

// NetnsPath is the path of the pod's network namespace.
func (p *Pod) NetnsPath() string { return filepath.Join("/var/run/netns", p.Name) }

// Close removes the pod: processes first, then cgroup, veth and namespace.
func (p *Pod) Close() error {
	var errs []error
	for i := len(p.cleanups) - 1; i >= 0; i-- {
		if err := p.cleanups[i](); err != nil {
			errs = append(errs, err)
		}
	}
	p.cleanups = nil
	return errors.Join(errs...)
}

// Listen opens a listening socket inside the pod's namespace. The socket
// stays in that namespace whatever thread later uses it.
func (p *Pod) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := p.Do(func() error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", address, p.Name, err)
	}
	return l, nil
}

// ListenPacket opens a datagram socket inside the pod's namespace.
func (p *Pod) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := p.Do(func() error {
		var err error
		c, err = net.ListenPacket(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", address, p.Name, err)
	}
	return c, nil
}

// Do runs f on an OS thread inside the pod's network namespace.
func (p *Pod) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// If switching back fails the thread stays locked and dies with
		// this goroutine rather than serve others in the wrong namespace.
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := netns.GetFromName(p.Name)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// MakeCgroup creates a v1 memory cgroup for the pod.
func (p *Pod) MakeCgroup() error {
	dir := filepath.Join("/sys/fs/cgroup/memory", p.Name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("create memory cgroup: %w", err)
	}
	p.Cgroup = dir
	p.cleanups = append(p.cleanups, func() error { return removeCgroup(dir) })
	return nil
}

// Start runs a command inside the pod: in its memory cgroup (if made)
// and its network namespace. The process is killed and reaped on Close.
func (p *Pod) Start(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	// Join the cgroup first: `ip netns exec` remounts /sys.
	script := `[ -z "$CG" ] || echo $$ > "$CG/cgroup.procs" || exit 97; exec ip netns exec "$NS" "$@"`
	cmd := exec.CommandContext(ctx, "sh", append([]string{"-c", script, "sh", name}, args...)...)
	cmd.Env = append(os.Environ(), "NS="+p.Name, "CG="+p.Cgroup)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, p.Name, err)
	}
	p.cleanups = append(p.cleanups, func() error {
		cmd.Process.Kill()
		cmd.Wait()
		return nil
	})
	return cmd, nil
}

// PodURL is http://<pod address>:<port><path> for v4 or v6.
func (p *Pod) PodURL(v6 bool, port int, path string) string {
	if v6 {
		return "http://[" + p.PodIP6.String() + "]:" + strconv.Itoa(port) + path
	}
	return "http://" + p.PodIP4.String() + ":" + strconv.Itoa(port) + path
}

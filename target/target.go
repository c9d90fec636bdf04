// Package target finds the host-side interface to capture on: given
// directly, or the host end of the veth pair that leads into a pod's
// network namespace.
package target

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Target is one capture point.
type Target struct {
	Name    string // how the user named it: "eth0", "netns web", "pid 4242"
	Ifindex int    // host-side interface index
	Ifname  string // host-side interface name
	// PodView: the interface is the host end of a pod's veth, so the
	// ingress hook sees what the pod sends and the egress hook what it
	// receives; directions are reported from the pod's point of view.
	PodView bool
	PodIf   string // the pod-side interface name, with PodView
	// Key names a pod as namespace/name, for pcapng interface names.
	Key string
	// MemCgroup is the memory cgroup to sample during a capture, if any.
	MemCgroup string
}

// Present reports whether the target's interface is still there, under
// the same index and name.
func (t *Target) Present() bool {
	l, err := netlink.LinkByIndex(t.Ifindex)
	return err == nil && l.Attrs().Name == t.Ifname
}

// Interface targets a host interface by name.
func Interface(name string) (*Target, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", name, err)
	}
	return &Target{Name: name, Ifindex: l.Attrs().Index, Ifname: name}, nil
}

// NetnsPath returns the path of a network namespace given by name (as
// `ip netns` names them) or by path.
func NetnsPath(nameOrPath string) string {
	if strings.Contains(nameOrPath, "/") {
		return nameOrPath
	}
	return filepath.Join("/var/run/netns", nameOrPath)
}

// Netns targets the host end of the veth leading into a network namespace.
func Netns(nameOrPath string) (*Target, error) {
	path := NetnsPath(nameOrPath)
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	if typ, err := unix.IoctlRetInt(int(ns), unix.NS_GET_NSTYPE); err != nil || typ != unix.CLONE_NEWNET {
		return nil, fmt.Errorf("%s is not a network namespace (give a name from ip netns list, or a path such as /proc/PID/ns/net)", path)
	}
	t, err := podPeer(ns)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", nameOrPath, err)
	}
	t.Name = "netns " + nameOrPath
	return t, nil
}

// PID targets the host end of the veth leading into a process's network
// namespace.
func PID(pid int) (*Target, error) {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("process %d: no such process", pid)
		}
		return nil, fmt.Errorf("open network namespace of process %d: %w", pid, err)
	}
	defer ns.Close()
	self, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open own network namespace: %w", err)
	}
	defer self.Close()
	if ns.Equal(self) {
		return nil, fmt.Errorf("process %d shares podtap's network namespace (a host-network process has no pod veth; use -i IFACE)", pid)
	}
	t, err := podPeer(ns)
	if err != nil {
		return nil, fmt.Errorf("process %d: %w", pid, err)
	}
	t.Name = "pid " + strconv.Itoa(pid)
	return t, nil
}

// podPeer finds, in namespace ns, the veth whose peer lives in podtap's
// own namespace, and returns that peer. eth0 is preferred when a pod has
// several.
func podPeer(ns netns.NsHandle) (*Target, error) {
	// Only rtnetlink: asking for every family fails where the kernel
	// cannot load, say, the xfrm module.
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink in namespace: %w", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var found []*Target
	var others []Link
	for _, l := range links {
		a := l.Attrs()
		if a.Name == "lo" {
			continue
		}
		others = append(others, Link{Name: a.Name, Kind: l.Type()})
		if l.Type() != "veth" || a.ParentIndex == 0 {
			continue
		}
		host, err := netlink.LinkByIndex(a.ParentIndex)
		if err != nil || host.Type() != "veth" || host.Attrs().ParentIndex != a.Index {
			continue // the peer is not in our namespace
		}
		found = append(found, &Target{
			Ifindex: host.Attrs().Index,
			Ifname:  host.Attrs().Name,
			PodView: true,
			PodIf:   a.Name,
		})
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		for _, t := range found {
			if t.PodIf == "eth0" {
				return t, nil
			}
		}
		var names []string
		for _, t := range found {
			names = append(names, t.PodIf+"->"+t.Ifname)
		}
		return nil, fmt.Errorf("several veth pairs lead out (%s) and none is eth0; pick one with -i", strings.Join(names, ", "))
	}
	return nil, &NoVethError{Links: others}
}

// Veth finds the host end of the veth leading into the network namespace
// ns, as Netns and PID do once they have opened it: a veth whose peer lives
// in podtap's own namespace, eth0 preferred when there are several. The
// peer may be routed or enslaved to a bridge; either way it is the
// interface to capture on. Name is left for the caller to set.
func Veth(ns netns.NsHandle) (*Target, error) { return podPeer(ns) }

// Link is an interface of a network namespace and its kind ("veth",
// "macvlan", "ipvlan", ...).
type Link struct{ Name, Kind string }

// NoVethError says that no veth leads from a network namespace into
// podtap's own.
type NoVethError struct {
	Links []Link // the namespace's interfaces but loopback
}

func (e *NoVethError) Error() string {
	if len(e.Links) == 0 {
		return "no interface but loopback"
	}
	var kinds []string
	for _, l := range e.Links {
		kinds = append(kinds, l.Name+" ("+l.Kind+")")
	}
	return fmt.Sprintf("no veth whose peer is in this host namespace among %s (macvlan/ipvlan CNIs have none; capture on the parent interface with -i)", strings.Join(kinds, ", "))
}

// HasVeth reports whether the namespace has a veth after all, one whose
// peer lies in a network namespace other than podtap's: podtap then does
// not run in the node's network namespace.
func (e *NoVethError) HasVeth() bool {
	for _, l := range e.Links {
		if l.Kind == "veth" {
			return true
		}
	}
	return false
}

// InterfaceWithAddr targets the host interface that holds addr, as a pod
// with hostNetwork shares the node's: its traffic is the whole node's.
func InterfaceWithAddr(addr netip.Addr) (*Target, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Unmap() != addr.Unmap() {
			continue
		}
		l, err := netlink.LinkByIndex(a.LinkIndex)
		if err != nil {
			return nil, fmt.Errorf("interface %d holding %s: %w", a.LinkIndex, addr, err)
		}
		return &Target{Name: l.Attrs().Name, Ifindex: l.Attrs().Index, Ifname: l.Attrs().Name}, nil
	}
	return nil, fmt.Errorf("no interface of this host holds %s", addr)
}

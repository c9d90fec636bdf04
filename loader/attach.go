package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Mode says how programs are attached.
type Mode string

const (
	ModeAuto   Mode = "auto"   // TCX where the kernel has it, else legacy
	ModeTCX    Mode = "tcx"    // TCX links (kernel 6.6+)
	ModeLegacy Mode = "legacy" // clsact qdisc + cls_bpf filters
)

// ParseMode checks a --attach value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeTCX, ModeLegacy:
		return m, nil
	}
	return "", fmt.Errorf("attach mode %q: want auto, tcx or legacy", s)
}

// Attachment is the pair of programs attached to one interface.
type Attachment struct {
	Ifindex int
	Mode    Mode // ModeTCX or ModeLegacy: what was used
	closers []func() error
}

// Close detaches both programs. It is safe to call more than once.
func (a *Attachment) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	a.closers = nil
	return errors.Join(errs...)
}

// Attach attaches the ingress and egress programs to interface ifindex.
// In ModeAuto it uses TCX at the head of the chain and falls back to
// legacy tc only when the kernel reports TCX as not supported.
func (o *Objects) Attach(ifindex int, mode Mode) (*Attachment, error) {
	a := &Attachment{Ifindex: ifindex}
	if mode == ModeAuto || mode == ModeTCX {
		err := a.attachTCX(o, ifindex)
		if err == nil {
			a.Mode = ModeTCX
			return a, nil
		}
		a.Close()
		if mode == ModeTCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return nil, err
		}
	}
	if err := a.attachLegacy(o, ifindex); err != nil {
		a.Close()
		return nil, err
	}
	a.Mode = ModeLegacy
	return a, nil
}

func (a *Attachment) attachTCX(o *Objects, ifindex int) error {
	for _, h := range []struct {
		prog   *ebpf.Program
		attach ebpf.AttachType
		name   string
	}{
		{o.Ingress(), ebpf.AttachTCXIngress, "ingress"},
		{o.Egress(), ebpf.AttachTCXEgress, "egress"},
	} {
		l, err := link.AttachTCX(link.TCXOptions{
			Interface: ifindex,
			Program:   h.prog,
			Attach:    h.attach,
			Anchor:    link.Head(),
		})
		if err != nil {
			return fmt.Errorf("attach tcx %s on ifindex %d: %w", h.name, ifindex, err)
		}
		a.closers = append(a.closers, l.Close)
	}
	return nil
}

// Legacy filters carry a name that says which process owns them, so that
// a later run can recognise and remove those a killed run left behind:
// "podtap:<pid>:<process start time in clock ticks>".
const legacyPrefix = "podtap:"

// legacyPriority puts podtap's filters first in the chain.
const legacyPriority = 1

func ownerTag(pid int) (string, error) {
	start, err := processStart(pid)
	if err != nil {
		return "", err
	}
	return legacyPrefix + strconv.Itoa(pid) + ":" + start, nil
}

// processStart reads a process's start time (field 22 of /proc/PID/stat).
func processStart(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	s := string(b)
	// The command name may hold spaces and parentheses: skip past its end.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return f[19], nil // field 22; f[0] is field 3
}

func (a *Attachment) attachLegacy(o *Objects, ifindex int) error {
	tag, err := ownerTag(os.Getpid())
	if err != nil {
		return fmt.Errorf("name legacy filter: %w", err)
	}
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("find ifindex %d: %w", ifindex, err)
	}
	if err := ensureClsact(l); err != nil {
		return err
	}
	marker := clsactMarker(l)
	a.closers = append(a.closers, func() error { return removeOurClsact(ifindex, marker) })
	for _, h := range []struct {
		prog   *ebpf.Program
		parent uint32
		name   string
	}{
		{o.Ingress(), netlink.HANDLE_MIN_INGRESS, "ingress"},
		{o.Egress(), netlink.HANDLE_MIN_EGRESS, "egress"},
	} {
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{
				LinkIndex: ifindex,
				Parent:    h.parent,
				Handle:    uint32(os.Getpid()),
				Protocol:  unix.ETH_P_ALL,
				Priority:  legacyPriority,
			},
			Fd:           h.prog.FD(),
			Name:         tag,
			DirectAction: true,
		}
		if err := netlink.FilterAdd(f); err != nil {
			return fmt.Errorf("attach legacy tc %s filter on ifindex %d: %w", h.name, ifindex, err)
		}
		a.closers = append(a.closers, func() error {
			if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("detach legacy tc %s filter on ifindex %d: %w", h.name, ifindex, err)
			}
			return nil
		})
	}
	return nil
}

func isClsact(q netlink.Qdisc) bool {
	return q.Type() == "clsact"
}

// markerDir holds a file for each clsact qdisc a podtap added, so that the
// last podtap to leave an interface (or the next start, after a SIGKILL)
// removes it, while a clsact that someone else added is never removed.
var markerDir = "/run/podtap"

func clsactMarker(l netlink.Link) string {
	return filepath.Join(markerDir, fmt.Sprintf("clsact-%d-%s", l.Attrs().Index, l.Attrs().Name))
}

// ensureClsact adds a clsact qdisc unless one exists.
func ensureClsact(l netlink.Link) error {
	ifindex := l.Attrs().Index
	qs, err := netlink.QdiscList(l)
	if err != nil {
		return fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
	}
	for _, q := range qs {
		if isClsact(q) {
			return nil
		}
	}
	// Mark first: a podtap killed right after adding the qdisc must
	// still leave a trace that the next start can follow.
	if err := os.MkdirAll(markerDir, 0o700); err != nil {
		return fmt.Errorf("record clsact qdisc: %w", err)
	}
	if err := os.WriteFile(clsactMarker(l), nil, 0o600); err != nil {
		return fmt.Errorf("record clsact qdisc: %w", err)
	}
	err = netlink.QdiscAdd(clsactQdisc(ifindex))
	if err != nil && !errors.Is(err, unix.EEXIST) {
		os.Remove(clsactMarker(l))
		return fmt.Errorf("add clsact qdisc to %s: %w", l.Attrs().Name, err)
	}
	return nil
}

func clsactQdisc(ifindex int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
}

// removeOurClsact removes the clsact qdisc of ifindex if a podtap added it
// (marker, the interface's clsactMarker, exists) and no filter hangs off it
// any more. When the interface is gone, its qdisc went with it: only the
// marker is left to remove, before another interface takes its index and
// name and a clsact of its own.
func removeOurClsact(ifindex int, marker string) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || clsactMarker(l) != marker {
		os.Remove(marker)
		return nil
	}
	if _, err := os.Stat(marker); err != nil {
		return nil
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := netlink.FilterList(l, parent)
		if err == nil && len(fs) > 0 {
			return nil // in use: the last one out removes it
		}
	}
	err = netlink.QdiscDel(clsactQdisc(ifindex))
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("remove clsact qdisc from %s: %w", l.Attrs().Name, err)
	}
	os.Remove(marker)
	return nil
}

// Stale is a legacy filter left behind by a podtap process that is gone.
type Stale struct {
	Ifname string
	Hook   string
	Name   string
}

// RemoveStale finds podtap's legacy tc filters whose owning process no
// longer runs (killed with SIGKILL, say) on every interface of this
// network namespace, and removes them.
func RemoveStale() ([]Stale, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var removed []Stale
	var errs []error
	for _, l := range links {
		for _, h := range []struct {
			parent uint32
			name   string
		}{{netlink.HANDLE_MIN_INGRESS, "ingress"}, {netlink.HANDLE_MIN_EGRESS, "egress"}} {
			fs, err := netlink.FilterList(l, h.parent)
			if err != nil {
				continue // no clsact here
			}
			for _, f := range fs {
				bf, ok := f.(*netlink.BpfFilter)
				if !ok || !strings.HasPrefix(bf.Name, legacyPrefix) || ownerAlive(bf.Name) {
					continue
				}
				if err := netlink.FilterDel(bf); err != nil {
					errs = append(errs, fmt.Errorf("remove stale filter %s on %s %s: %w", bf.Name, l.Attrs().Name, h.name, err))
					continue
				}
				removed = append(removed, Stale{Ifname: l.Attrs().Name, Hook: h.name, Name: bf.Name})
			}
		}
		// A killed run may have added the clsact qdisc too.
		if err := removeOurClsact(l.Attrs().Index, clsactMarker(l)); err != nil {
			errs = append(errs, err)
		}
	}
	// And left markers of interfaces that are gone since.
	present := map[string]bool{}
	for _, l := range links {
		present[clsactMarker(l)] = true
	}
	entries, _ := os.ReadDir(markerDir)
	for _, e := range entries {
		if m := filepath.Join(markerDir, e.Name()); strings.HasPrefix(e.Name(), "clsact-") && !present[m] {
			os.Remove(m)
		}
	}
	return removed, errors.Join(errs...)
}

// ownerAlive reports whether the process named in a filter's tag still
// runs (same PID and start time).
func ownerAlive(name string) bool {
	parts := strings.Split(strings.TrimPrefix(name, legacyPrefix), ":")
	if len(parts) != 2 {
		return false
	}
	pid, err := strconv.Atoi(parts[0])
	if err != nil || pid <= 0 {
		return false
	}
	start, err := processStart(pid)
	return err == nil && start == parts[1]
}

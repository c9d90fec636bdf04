package selftest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testEtherType is an IEEE "local experimental" EtherType: frames of this type
// are only ever the ones this test sends itself.
const testEtherType = 0x88b5

// inVM reports whether the harness's /init started this binary; there every
// capability is expected and a missing one is a failure, not a skip.
func inVM() bool { return os.Getenv("PODTAP_VM") == "1" }

// fact prints a line the harness collects into its summary table. It goes to
// stdout directly so it appears with or without -test.v.
func fact(key, value string) { fmt.Printf("PODTAP_FACT %s=%s\n", key, value) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// kernelVersion returns the running kernel's major and minor version.
func kernelVersion(t *testing.T) (int, int) {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		t.Fatalf("parse kernel release %q", rel)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		t.Fatalf("parse kernel release %q", rel)
	}
	return major, minor
}

func atLeast(t *testing.T, major, minor int) bool {
	kmaj, kmin := kernelVersion(t)
	return kmaj > major || (kmaj == major && kmin >= minor)
}

// requireRoot skips outside the VM when the test cannot load BPF programs.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 && !inVM() {
		t.Skip("needs root (CAP_BPF, CAP_NET_ADMIN)")
	}
}

// countingProgram loads a SchedCLS program that counts frames of
// testEtherType in a one-slot array and never decides a packet's fate.
func countingProgram(t *testing.T) (*ebpf.Program, *ebpf.Map) {
	t.Helper()
	counter, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "selftest_count",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: 1,
	})
	if err != nil {
		t.Fatalf("create counter map: %v", err)
	}
	t.Cleanup(func() { counter.Close() })

	// skb->protocol holds the EtherType in network byte order.
	proto := uint16(testEtherType)
	protoBE := int32(proto>>8 | proto<<8)
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // __sk_buff.protocol
		asm.JNE.Imm(asm.R2, protoBE, "out"),
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, counter.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Imm(asm.R1, 1),
		asm.AddAtomic.Mem(asm.R0, asm.R1, asm.DWord, 0),
		asm.Mov.Imm(asm.R0, -1).WithSymbol("out"), // TC_ACT_UNSPEC / TCX_NEXT
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "podtap_selftest",
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		t.Fatalf("load SchedCLS program: %+v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog, counter
}

func TestLoadSchedCLS(t *testing.T) {
	requireRoot(t)
	prog, _ := countingProgram(t)
	ret, err := prog.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		t.Fatalf("test-run program: %v", err)
	}
	if int32(ret) != -1 {
		t.Errorf("program returned %d, want -1", int32(ret))
	}
}

// withNewNetns runs fn on a locked OS thread inside a fresh network namespace
// and returns to the original one afterwards. The namespace, and every link in
// it, disappears when fn returns.
func withNewNetns(t *testing.T, fn func(h *netlink.Handle)) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			t.Errorf("get current netns: %v", err)
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			runtime.UnlockOSThread()
			t.Errorf("create netns: %v", err)
			return
		}
		defer ns.Close()
		defer func() {
			if err := netns.Set(orig); err != nil {
				// Leave the thread locked: the runtime kills it when this
				// goroutine ends, instead of reusing a thread in the wrong netns.
				t.Errorf("restore netns: %v", err)
				return
			}
			runtime.UnlockOSThread()
		}()
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			t.Errorf("netlink handle: %v", err)
			return
		}
		defer h.Close()
		fn(h)
	}()
	<-done
}

func TestAttachVeth(t *testing.T) {
	requireRoot(t)
	prog, counter := countingProgram(t)

	withNewNetns(t, func(h *netlink.Handle) {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pt-self0"}, PeerName: "pt-self1"}
		if err := h.LinkAdd(veth); err != nil {
			t.Errorf("create veth pair: %v", err)
			return
		}
		a, err := h.LinkByName("pt-self0")
		if err != nil {
			t.Errorf("find veth pt-self0: %v", err)
			return
		}
		b, err := h.LinkByName("pt-self1")
		if err != nil {
			t.Errorf("find veth pt-self1: %v", err)
			return
		}
		for _, l := range []netlink.Link{a, b} {
			if err := h.LinkSetUp(l); err != nil {
				t.Errorf("set %s up: %v", l.Attrs().Name, err)
				return
			}
		}

		// Until linkwatch has seen the carrier, a device transmits through the
		// noop qdisc, which drops every frame: wait for both ends to be up.
		for _, name := range []string{"pt-self0", "pt-self1"} {
			if err := waitOperUp(h, name, 5*time.Second); err != nil {
				t.Errorf("%v", err)
				return
			}
		}

		mode, detach, err := attachIngress(h, prog, b.Attrs().Index)
		if err != nil {
			t.Errorf("attach ingress on pt-self1: %v", err)
			return
		}
		defer detach()
		fact("attach", mode)
		if want := "legacy-tc"; !atLeast(t, 6, 6) && mode != want {
			t.Errorf("attach mode %s on a pre-6.6 kernel, want %s", mode, want)
		}
		if want := "tcx"; atLeast(t, 6, 6) && mode != want {
			t.Errorf("attach mode %s on a 6.6+ kernel, want %s", mode, want)
		}

		const frames = 3
		for i := 0; i < frames; i++ {
			if err := sendFrame(a.Attrs().Index, b.Attrs().HardwareAddr, a.Attrs().HardwareAddr); err != nil {
				t.Errorf("send frame on pt-self0: %v", err)
				return
			}
		}
		// The receive side runs in softirq context, possibly after sendto has
		// returned (ksoftirqd under load, or a slow emulated CPU): poll.
		var got uint64
		deadline := time.Now().Add(5 * time.Second)
		for {
			if err := counter.Lookup(uint32(0), &got); err != nil {
				t.Errorf("read counter: %v", err)
				return
			}
			if got >= frames || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got != frames {
			t.Errorf("program counted %d frames on pt-self1 ingress, want %d", got, frames)
		}
	})
}

// waitOperUp waits until the link name reports operational state up.
func waitOperUp(h *netlink.Handle, name string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find link %s: %w", name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %s still %s after %v", name, l.Attrs().OperState, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// attachIngress attaches prog to ifindex's ingress with TCX, or with a clsact
// qdisc and a direct-action bpf filter when the kernel has no TCX.
func attachIngress(h *netlink.Handle, prog *ebpf.Program, ifindex int) (string, func(), error) {
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    ebpf.AttachTCXIngress,
		Anchor:    link.Head(),
	})
	if err == nil {
		return "tcx", func() { l.Close() }, nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return "", nil, fmt.Errorf("attach tcx: %w", err)
	}

	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := h.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", nil, fmt.Errorf("add clsact qdisc: %w", err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    netlink.MakeHandle(0, 1),
			Protocol:  unix.ETH_P_ALL,
			Priority:  1,
		},
		Fd:           prog.FD(),
		Name:         "podtap_selftest",
		DirectAction: true,
	}
	if err := h.FilterAdd(filter); err != nil {
		return "", nil, fmt.Errorf("add bpf filter: %w", err)
	}
	filters, err := h.FilterList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return "", nil, fmt.Errorf("list ingress filters: %w", err)
	}
	found := false
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, "podtap_selftest") {
			found = true
		}
	}
	if !found {
		return "", nil, fmt.Errorf("bpf filter podtap_selftest not listed after adding it")
	}
	return "legacy-tc", func() { h.FilterDel(filter) }, nil
}

// sendFrame writes one Ethernet frame of testEtherType out of ifindex with a
// packet socket: no IP traffic, nothing leaves the test's own netns.
func sendFrame(ifindex int, dst, src []byte) error {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return fmt.Errorf("open packet socket: %w", err)
	}
	defer unix.Close(fd)
	frame := make([]byte, 0, 60)
	frame = append(frame, dst...)
	frame = append(frame, src...)
	frame = append(frame, byte(testEtherType>>8), byte(testEtherType&0xff))
	frame = append(frame, bytes.Repeat([]byte{0xab}, 60-len(frame))...)
	sa := &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], dst)
	return unix.Sendto(fd, frame, 0, sa)
}

func TestFeatureProbes(t *testing.T) {
	requireRoot(t)

	err := features.HaveProgramHelper(ebpf.SchedCLS, asm.FnLoop)
	if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("probe bpf_loop for SchedCLS: %v", err)
	}
	haveLoop := err == nil
	fact("bpf_loop", yesNo(haveLoop))
	if want := atLeast(t, 5, 17); haveLoop != want {
		t.Errorf("bpf_loop present=%v, want %v for this kernel", haveLoop, want)
	}

	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatalf("load kernel BTF: %v", err)
	}
	var fn *btf.Func
	err = spec.TypeByName("bpf_iter_num_new", &fn)
	if err != nil && !errors.Is(err, btf.ErrNotFound) {
		t.Fatalf("look up bpf_iter_num_new in kernel BTF: %v", err)
	}
	haveIterNum := err == nil
	fact("iter_num", yesNo(haveIterNum))
	if want := atLeast(t, 6, 4); haveIterNum != want {
		t.Errorf("bpf_iter_num kfuncs present=%v, want %v for this kernel", haveIterNum, want)
	}
}

func TestCgroupV2Memory(t *testing.T) {
	requireRoot(t)
	const root = "/sys/fs/cgroup"

	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatalf("statfs %s: %v", root, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		fact("cgroup", "v1")
		if inVM() {
			t.Fatalf("%s is not cgroup2 (magic %#x)", root, st.Type)
		}
		t.Skipf("%s is not cgroup2 on this machine", root)
	}
	controllers, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control"))
	if err != nil {
		t.Fatalf("read subtree_control: %v", err)
	}
	if !strings.Contains(" "+strings.TrimSpace(string(controllers))+" ", " memory ") {
		fact("cgroup", "v2-nomem")
		if inVM() {
			t.Fatalf("memory controller not enabled in %s/cgroup.subtree_control (%q)", root, controllers)
		}
		t.Skipf("memory controller not enabled for children of %s", root)
	}

	dir := filepath.Join(root, fmt.Sprintf("podtap-selftest-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create child cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(dir); err != nil {
			t.Errorf("remove child cgroup: %v", err)
		}
	})

	before := readCounter(t, filepath.Join(dir, "memory.current"))
	// Charge some memory to the child: move this process in, touch pages, move
	// it back. Charges stay with the child cgroup after the move.
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatalf("move test process into child cgroup: %v", err)
	}
	buf := make([]byte, 16<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	after := readCounter(t, filepath.Join(dir, "memory.current"))
	if err := os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		t.Fatalf("move test process back to the root cgroup: %v", err)
	}
	runtime.KeepAlive(buf)

	if _, err := os.ReadFile(filepath.Join(dir, "memory.stat")); err != nil {
		t.Errorf("read memory.stat: %v", err)
	}
	t.Logf("memory.current %d -> %d bytes", before, after)
	if after < before+8<<20 {
		t.Errorf("memory.current grew by %d bytes after touching 16 MiB, want at least 8 MiB", int64(after)-int64(before))
	}
	fact("cgroup", "v2-memory")
}

func readCounter(t *testing.T, path string) uint64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return v
}

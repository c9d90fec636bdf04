package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/podtap/podtap/internal/sandbox"
)

// What depends on the kernel podtap runs on. hack/vm runs these tests in
// older kernels too, and sets PODTAP_EXPECT_ATTACH and PODTAP_EXPECT_SCAN
// to what hack/vm/kernels.txt says that kernel must give; the tests print
// what they saw as PODTAP_FACT lines for its summary table.

func kernelRelease(t *testing.T) string {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatalf("uname: %v", err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// haveTCX attaches a do-nothing program to the pod's host veth with TCX
// and detaches it again, to learn whether the kernel has TCX (6.6+)
// without asking podtap. The error says why not.
func haveTCX(t *testing.T, pod *sandbox.Pod) (bool, error) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, -1), // TCX_NEXT
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load a do-nothing TC program: %v", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: pod.HostIdx, Program: prog, Attach: ebpf.AttachTCXIngress})
	if errors.Is(err, ebpf.ErrNotSupported) {
		return false, err
	}
	if err != nil {
		t.Fatalf("probe TCX on %s: %v", pod.HostIf, err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("detach TCX probe from %s: %v", pod.HostIf, err)
	}
	return true, nil
}

// skipWithoutTCX skips a TCX test on a kernel without TCX, once it has
// checked that podtap --attach tcx refuses there, says why, and leaves
// nothing attached.
func skipWithoutTCX(t *testing.T, pod *sandbox.Pod) {
	t.Helper()
	ok, why := haveTCX(t, pod)
	if ok {
		return
	}
	out, err := exec.Command(podtapBin, "capture", "--attach", "tcx", "--netns", pod.Name,
		"--duration", "1s", "-w", filepath.Join(t.TempDir(), "x.pcap")).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), "not supported") {
		t.Fatalf("podtap --attach tcx on a kernel without TCX: %v; want it to fail saying TCX is not supported; output:\n%s", err, out)
	}
	requireClean(t, pod, "after --attach tcx was refused")
	var said string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "not supported") {
			said = l
		}
	}
	t.Skipf("kernel %s has no TCX (probe: %v); podtap --attach tcx exits %d: %s",
		kernelRelease(t), why, exit.ExitCode(), said)
}

// startLine is podtap's "capturing on ... [MODE, VARIANT scan]" line.
var startLine = regexp.MustCompile(`capturing on .* \[([a-z, ]+), ([a-z]+) scan\]`)

// TestAttachAuto: --attach auto takes TCX where the kernel has it and
// legacy tc elsewhere, says which on its start line, and attaches exactly
// that.
func TestAttachAuto(t *testing.T) {
	pod := newPod(t)
	tcx, why := haveTCX(t, pod)
	want := "legacy"
	if tcx {
		want = "tcx"
	}
	p := start(t, podtapBin, "capture", "--netns", pod.Name, "--contains", "lbtest", "-w", filepath.Join(t.TempDir(), "x.pcap"))
	p.waitFor(t, "capturing on")
	m := startLine.FindStringSubmatch(p.output())
	if m == nil {
		t.Fatalf("no [MODE, VARIANT scan] on podtap's start line:\n%s", p.output())
	}
	mode, scan := m[1], m[2]
	t.Logf("PODTAP_FACT attach=%s", mode)
	t.Logf("PODTAP_FACT scan=%s", scan)
	if mode != want {
		t.Errorf("--attach auto took %s on kernel %s, want %s (TCX probe: %v)", mode, kernelRelease(t), want, why)
	}
	if e := os.Getenv("PODTAP_EXPECT_ATTACH"); e != "" && mode != e {
		t.Errorf("--attach auto took %s; hack/vm/kernels.txt expects %s of kernel %s", mode, e, kernelRelease(t))
	}
	if e := os.Getenv("PODTAP_EXPECT_SCAN"); e != "" && scan != e {
		t.Errorf("podtap chose the %s scan; hack/vm/kernels.txt expects %s of kernel %s", scan, e, kernelRelease(t))
	}
	f, n, q := attached(t, pod)
	if want == "tcx" && (n != 2 || len(f) != 0 || q) || want == "legacy" && (len(f) != 2 || n != 0 || !q) {
		t.Errorf("while capturing with %s: legacy filters %v, %d TCX programs, clsact %v", mode, f, n, q)
	}
	p.stop(t)
	requireClean(t, pod, "after the --attach auto capture ended")
}

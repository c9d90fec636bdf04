package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/podtap/podtap/internal/sandbox"
)

// attached lists what hangs off a host interface: podtap's legacy tc
// filters (by name), any TCX programs, and whether a clsact qdisc exists.
func attached(t *testing.T, pod *sandbox.Pod) (filters []string, tcx int, clsact bool) {
	t.Helper()
	l, err := netlink.LinkByIndex(pod.HostIdx)
	if err != nil {
		t.Fatal(err)
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, _ := netlink.FilterList(l, parent)
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok {
				filters = append(filters, bf.Name)
			}
		}
	}
	for _, a := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: pod.HostIdx, Attach: a})
		if err == nil {
			tcx += len(res.Programs)
		}
	}
	qs, _ := netlink.QdiscList(l)
	for _, q := range qs {
		if q.Type() == "clsact" {
			clsact = true
		}
	}
	return filters, tcx, clsact
}

func requireClean(t *testing.T, pod *sandbox.Pod, when string) {
	t.Helper()
	if f, n, q := attached(t, pod); len(f) > 0 || n > 0 || q {
		t.Fatalf("%s: still attached to %s: filters %v, %d TCX programs, clsact %v", when, pod.HostIf, f, n, q)
	}
}

// TestNothingLeftAttached: after a normal exit, SIGTERM, SIGHUP, SIGQUIT and SIGKILL
// (legacy filters outlive the process: the next start removes them),
// nothing of podtap stays on the interface, in either attach mode.
func TestNothingLeftAttached(t *testing.T) {
	for _, mode := range []string{"tcx", "legacy"} {
		t.Run(mode, func(t *testing.T) {
			pod := newPod(t)
			if mode == "tcx" {
				skipWithoutTCX(t, pod)
			}
			capture := func(extra ...string) *proc {
				args := append([]string{"capture", "--attach", mode, "--netns", pod.Name, "-w", t.TempDir() + "/x.pcap"}, extra...)
				p := start(t, podtapBin, args...)
				p.waitFor(t, "capturing on")
				f, n, _ := attached(t, pod)
				if mode == "tcx" && n != 2 || mode == "legacy" && len(f) != 2 {
					t.Fatalf("while capturing: filters %v, %d TCX programs; want both hooks attached with %s", f, n, mode)
				}
				return p
			}

			p := capture("--duration", "200ms")
			if err := p.cmd.Wait(); err != nil {
				t.Fatalf("--duration run: %v\n%s", err, p.output())
			}
			requireClean(t, pod, "after --duration ended")

			// SIGTERM, and SIGHUP (an ssh session that drops) and SIGQUIT,
			// whose defaults would leave legacy filters behind.
			for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT} {
				p = capture()
				p.cmd.Process.Signal(sig)
				if err := p.cmd.Wait(); err != nil {
					t.Fatalf("%v run exited with %v\n%s", sig, err, p.output())
				}
				requireClean(t, pod, "after "+sig.String())
			}

			p = capture()
			p.cmd.Process.Kill()
			p.cmd.Wait()
			f, n, _ := attached(t, pod)
			if mode == "tcx" {
				if n != 0 {
					t.Fatalf("after SIGKILL %d TCX programs stay attached", n)
				}
			} else if len(f) != 2 {
				t.Fatalf("after SIGKILL: legacy filters %v; a killed process cannot remove them, so 2 must remain for the next start to find", f)
			}
			// The next start, on any target, finds and removes them.
			p = capture("--duration", "100ms")
			p.cmd.Wait()
			if mode == "legacy" && strings.Count(p.output(), "left on "+pod.HostIf+" by a podtap that is gone") != 2 {
				t.Errorf("the next start did not report removing both stale filters:\n%s", p.output())
			}
			requireClean(t, pod, "after the next start and exit")
			if !t.Failed() {
				t.Logf("PODTAP_FACT sigkill_clean=%s", mode)
			}
		})
	}
}

// TestLegacyCoexist: a second podtap on the same interface keeps the
// first one's live legacy filters, and each removes only its own.
func TestLegacyCoexist(t *testing.T) {
	pod := newPod(t)
	run := func() *proc {
		p := start(t, podtapBin, "capture", "--attach", "legacy", "--netns", pod.Name, "-w", t.TempDir()+"/x.pcap")
		p.waitFor(t, "capturing on")
		return p
	}
	p1 := run()
	p2 := run()
	if f, _, _ := attached(t, pod); len(f) != 4 {
		t.Fatalf("two live captures: filters %v, want 4", f)
	}
	if strings.Contains(p2.output(), "removed") {
		t.Fatalf("the second podtap removed a live one's filter:\n%s", p2.output())
	}
	p1.stop(t)
	if f, _, q := attached(t, pod); len(f) != 2 || !q {
		t.Fatalf("after the first exits: filters %v, clsact %v; want the second's 2 filters and the qdisc", f, q)
	}
	p2.stop(t)
	requireClean(t, pod, "after both exit")
}

// TestForeignClsactKept: a clsact qdisc that podtap did not add stays,
// with its own filters, after podtap's legacy capture ends or is killed.
func TestForeignClsactKept(t *testing.T) {
	pod := newPod(t)
	if out, err := exec.Command("tc", "qdisc", "add", "dev", pod.HostIf, "clsact").CombinedOutput(); err != nil {
		t.Fatalf("tc qdisc add: %v %s", err, out)
	}
	for _, kill := range []bool{false, true} {
		p := start(t, podtapBin, "capture", "--attach", "legacy", "--netns", pod.Name, "-w", t.TempDir()+"/x.pcap")
		p.waitFor(t, "capturing on")
		if kill {
			p.cmd.Process.Kill()
			p.cmd.Wait()
			p = start(t, podtapBin, "capture", "--attach", "auto", "--netns", pod.Name, "-w", t.TempDir()+"/x.pcap")
			p.waitFor(t, "capturing on")
		}
		p.stop(t)
		if f, _, q := attached(t, pod); len(f) > 0 || !q {
			t.Fatalf("kill=%v: filters %v, clsact %v; want no podtap filter and the foreign clsact kept", kill, f, q)
		}
	}
}

// TestTargetVanishes: when the pod's veth is deleted under a capture (as
// its network namespace going takes it), podtap says so and exits 1 with a valid file
// of what it captured; a legacy attach leaves no clsact marker behind, and
// a marker of an interface that is gone is removed at the next start.
func TestTargetVanishes(t *testing.T) {
	for _, mode := range []string{"tcx", "legacy"} {
		t.Run(mode, func(t *testing.T) {
			pod := newPod(t)
			if mode == "tcx" {
				skipWithoutTCX(t, pod)
			}
			serveHTTP(t, pod, 8080)
			out := filepath.Join(t.TempDir(), "x.pcap")
			p := start(t, podtapBin, "capture", "--attach", mode, "--netns", pod.Name, "--port", "8080", "-w", out, "--mem-interval", "0")
			p.waitFor(t, "capturing on")
			marker := fmt.Sprintf("/run/podtap/clsact-%d-%s", pod.HostIdx, pod.HostIf)
			if _, err := os.Stat(marker); mode == "legacy" && err != nil {
				t.Fatalf("legacy attach made no clsact marker: %v", err)
			}
			request(t, "GET", pod.PodURL(false, 8080, "/before"), "")
			if err := exec.Command("ip", "link", "del", pod.HostIf).Run(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- p.cmd.Wait() }()
			select {
			case err := <-done:
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 1 {
					t.Errorf("podtap: %v, want exit status 1\n%s", err, p.output())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("podtap still runs 5 s after its interface was deleted\n%s", p.output())
			}
			if o := p.output(); !strings.Contains(o, "interface "+pod.HostIf+" is gone") || !strings.Contains(o, "packets seen") {
				t.Errorf("stderr:\n%s\nwant the summary and a line saying the interface is gone", o)
			}
			// Read in Go: the kernels of hack/vm have no tshark.
			if n := len(readCapture(t, out)); n == 0 {
				t.Errorf("%s holds none of the packets before the interface went", out)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Errorf("%s stays after the interface went", marker)
			}
			// A marker whose interface is gone is pruned by the next start.
			stale := "/run/podtap/clsact-2147483000-ptgone0"
			if err := os.MkdirAll("/run/podtap", 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(stale, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			other := newPod(t)
			q := start(t, podtapBin, "capture", "--netns", other.Name, "--duration", "100ms", "-w", "/dev/null", "--mem-interval", "0")
			q.cmd.Wait()
			if _, err := os.Stat(stale); err == nil {
				os.Remove(stale)
				t.Errorf("the next start left %s, whose interface does not exist", stale)
			}
		})
	}
}

package loader_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/podtap/podtap/decode"
	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/loader"
)

// harness runs frames through a loaded program with BPF_PROG_TEST_RUN
// and collects what it sends to the ring buffer.
type harness struct {
	t     testing.TB
	objs  *loader.Objects
	rd    *ringbuf.Reader
	clock *decode.Clock
}

func newHarness(t testing.TB, e filter.Expr, opts loader.Options) *harness {
	t.Helper()
	prog, err := filter.Compile(e, "test")
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	opts.Filter = prog
	objs, err := loader.Load(opts)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	rd, err := ringbuf.NewReader(objs.Events())
	if err != nil {
		objs.Close()
		t.Fatalf("ring reader: %v", err)
	}
	clock, err := decode.NewClock()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, objs: objs, rd: rd, clock: clock}
	t.Cleanup(h.close)
	return h
}

// close releases the program and its maps; it may be called again.
func (h *harness) close() {
	h.rd.Close()
	h.objs.Close()
}

// run passes frame through the ingress program and returns the packet it
// sent, or nil. Failures are reported on t (a subtest's, say).
func (h *harness) run(t testing.TB, frame []byte) *decode.Packet {
	t.Helper()
	ps := h.runAll(t, frame)
	switch len(ps) {
	case 0:
		return nil
	case 1:
		return &ps[0]
	}
	t.Fatalf("one frame gave %d records", len(ps))
	return nil
}

func (h *harness) runAll(t testing.TB, frame []byte) []decode.Packet {
	t.Helper()
	ret, err := h.objs.Ingress().Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		t.Fatalf("run program on %d-byte frame: %v", len(frame), err)
	}
	if int32(ret) != -1 {
		t.Fatalf("program returned %d, want -1 (TC_ACT_UNSPEC): a tap must not decide a packet's fate", int32(ret))
	}
	return h.drain(t)
}

// drain returns every record waiting in the ring.
func (h *harness) drain(t testing.TB) []decode.Packet {
	t.Helper()
	var out []decode.Packet
	h.rd.SetDeadline(time.Now())
	for {
		rec, err := h.rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("read ring: %v", err)
		}
		p, err := decode.ParseRecord(rec.RawSample, h.clock)
		if err != nil {
			t.Fatalf("parse record: %v", err)
		}
		out = append(out, p)
	}
}

func (h *harness) counters(t testing.TB) loader.Counters {
	t.Helper()
	c, err := h.objs.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// variants are the scan variants this kernel can run; the others are
// reported as skipped by forEachVariant.
func variants(t testing.TB) []loader.Variant {
	all := []loader.Variant{loader.VariantIter, loader.VariantLoop, loader.VariantBounded}
	best := loader.BestVariant()
	for i, v := range all {
		if v == best {
			return all[i:]
		}
	}
	t.Fatalf("best variant %q unknown", best)
	return nil
}

// forEachVariant runs f once per scan variant as a subtest; variants the
// kernel lacks are skipped, saying why.
func forEachVariant(t *testing.T, f func(t *testing.T, v loader.Variant)) {
	have := map[loader.Variant]bool{}
	for _, v := range variants(t) {
		have[v] = true
	}
	for _, v := range []loader.Variant{loader.VariantIter, loader.VariantLoop, loader.VariantBounded} {
		t.Run(string(v), func(t *testing.T) {
			if !have[v] {
				t.Skipf("this kernel lacks what the %s scan variant needs", v)
			}
			f(t, v)
		})
	}
}

// requireBPF skips when the kernel cannot load a TC program at all (not
// root, or no BPF): the only reason these tests may skip.
func requireBPF(t testing.TB) {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "MIT",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrPermission) {
			t.Skipf("kernel cannot load a TC program here: %v", err)
		}
		t.Fatalf("probe TC program: %v", err)
	}
	p.Close()
}

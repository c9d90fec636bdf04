package loader_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/internal/frames"
	"github.com/podtap/podtap/loader"
)

// The vocabulary random frames and random filters share, so that filters
// often hold and often almost hold.
var (
	diffPorts = []uint16{80, 8080, 53, 443, 40000}
	diffAddrs = []netip.Addr{
		netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("10.9.8.7"),
		netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), netip.MustParseAddr("2001:db8::77"),
	}
	diffWords = []string{"lbtest", "lbtes", "/mytest", "/api/", "mytest", "GET", "POST", "HTTP/1.1", "\r\n", " ", "a", "\x00\x00", "Host: x"}
	diffURIs  = []string{"/mytest", "/mytest?id=1", "/api/v1", "/api/", "/", "/other", "http://h/x", ""}
	diffVLANs = []uint16{0, 1, 42, 4095}
)

func diffPayload(r *rand.Rand) []byte {
	var b []byte
	if r.IntN(3) == 0 {
		m := []string{"GET", "POST", "PUT", "get", "FOO", "DELETE", "HEAD"}[r.IntN(7)]
		b = append(b, m+" "+diffURIs[r.IntN(len(diffURIs))]...)
		switch r.IntN(4) {
		case 0:
			b = append(b, " HTTP/1.1\r\nHost: x\r\n\r\n"...)
		case 1:
			b = append(b, "\r\n"...)
		case 2:
			b = append(b, "\n"...)
		}
	}
	for n := r.IntN(12); n > 0; n-- {
		if r.IntN(3) == 0 {
			for k := r.IntN(40); k > 0; k-- {
				b = append(b, byte(r.IntN(256)))
			}
		} else {
			b = append(b, diffWords[r.IntN(len(diffWords))]...)
		}
	}
	if r.IntN(8) == 0 {
		b = append(b, bytes.Repeat([]byte("lbtesx"), 50+r.IntN(300))...)
		if r.IntN(2) == 0 {
			b = append(b, "lbtest"...)
		}
	}
	return b
}

func diffFrame(r *rand.Rand) []byte {
	s := frames.Spec{
		V6:      r.IntN(2) == 0,
		SrcPort: diffPorts[r.IntN(len(diffPorts))],
		DstPort: diffPorts[r.IntN(len(diffPorts))],
		Payload: diffPayload(r),
	}
	for n := r.IntN(5) - 1; n > 0; n-- {
		tpid := []uint16{0x8100, 0x88a8, 0x9100}[r.IntN(3)]
		s.VLANs = append(s.VLANs, frames.VLAN{TPID: tpid, TCI: uint16(r.IntN(8))<<13 | diffVLANs[r.IntN(len(diffVLANs))]})
	}
	pick := func(v6 bool) netip.Addr {
		for {
			a := diffAddrs[r.IntN(len(diffAddrs))]
			if a.Is6() == v6 {
				return a
			}
		}
	}
	s.Src, s.Dst = pick(s.V6), pick(s.V6)
	switch r.IntN(10) {
	case 0:
		s.Proto = 17
	case 1:
		s.Proto = 1
	}
	if !s.V6 && r.IntN(4) == 0 {
		s.IPOptions = make([]byte, 4*r.IntN(11))
	}
	if s.V6 && r.IntN(3) == 0 {
		for n := r.IntN(4); n > 0; n-- {
			s.Ext = append(s.Ext, []uint8{frames.HopByHop, frames.Routing, frames.DestOpts, frames.Fragment, frames.AH}[r.IntN(5)])
		}
	}
	if r.IntN(6) == 0 {
		s.TCPOptions = make([]byte, 4*r.IntN(11))
	}
	if r.IntN(8) == 0 {
		s.FragOffset = uint16(r.IntN(3))
		s.MoreFrags = r.IntN(2) == 0
	}
	s.ZeroLength = r.IntN(12) == 0
	if r.IntN(5) == 0 {
		s.Trailer = []byte(diffWords[r.IntN(len(diffWords))])
	}
	f := frames.Build(s)
	// Mutate: flip bytes, cut short, or grow garbage.
	switch r.IntN(4) {
	case 0:
		for n := 1 + r.IntN(4); n > 0; n-- {
			f[r.IntN(len(f))] ^= byte(1 << r.IntN(8))
		}
	case 1:
		f = f[:14+r.IntN(len(f)-14)+1]
	}
	return f
}

func diffPred(r *rand.Rand) filter.Pred {
	switch r.IntN(12) {
	case 0:
		p := []filter.Proto{filter.ProtoVLAN, filter.ProtoIP4, filter.ProtoIP6, filter.ProtoTCP, filter.ProtoUDP}[r.IntN(5)]
		return filter.Pred{Kind: filter.KindProto, Proto: p, Text: "proto"}
	case 1:
		side := []filter.Side{filter.SideSrc, filter.SideDst, filter.SideSrc | filter.SideDst}[r.IntN(3)]
		l4 := []filter.Side{filter.SideTCP, filter.SideUDP, filter.SideTCP | filter.SideUDP}[r.IntN(3)]
		return filter.Pred{Kind: filter.KindPort, Side: side | l4, Op: filter.Op(r.IntN(5)), Value: uint32(diffPorts[r.IntN(len(diffPorts))]), Text: "port"}
	case 2:
		return filter.Pred{Kind: filter.KindVLAN, Op: filter.Op(r.IntN(5)), Value: uint32(diffVLANs[r.IntN(len(diffVLANs))]), STag: r.IntN(3) == 0, Text: "vlan"}
	case 3:
		a := diffAddrs[r.IntN(len(diffAddrs))]
		bits := a.BitLen() - []int{0, 0, 8, 1}[r.IntN(4)]
		kind := filter.KindAddr4
		if a.Is6() {
			kind = filter.KindAddr6
		}
		side := []filter.Side{filter.SideSrc, filter.SideDst, filter.SideSrc | filter.SideDst}[r.IntN(3)]
		return filter.Pred{Kind: kind, Side: side, Prefix: netip.PrefixFrom(a, bits).Masked(), Text: "addr"}
	case 4, 5, 6:
		return filter.Pred{Kind: filter.KindPattern, Bytes: []byte(diffWords[r.IntN(len(diffWords))]), Region: filter.Region(r.IntN(7)), Text: "pattern"}
	case 7:
		return filter.Pred{Kind: filter.KindHTTPRequest, Text: "req"}
	case 8:
		return filter.Pred{Kind: filter.KindMethod, Bytes: []byte([]string{"GET", "POST", "PUT", "get"}[r.IntN(4)]), Text: "method"}
	case 10:
		return filter.Pred{Kind: filter.KindURIContains, Bytes: []byte([]string{"my", "test", "api", "=", "/", "?id"}[r.IntN(6)]), Text: "uri contains"}
	case 9:
		return filter.Pred{Kind: filter.KindURIEq, Bytes: []byte(diffURIs[r.IntN(len(diffURIs))]), Text: "uri"}
	default:
		return filter.Pred{Kind: filter.KindURIPrefix, Bytes: []byte(diffURIs[r.IntN(len(diffURIs))]), Text: "prefix"}
	}
}

func diffExpr(r *rand.Rand, depth int) filter.Expr {
	if depth == 0 || r.IntN(3) == 0 {
		return filter.PredExpr{Pred: diffPred(r)}
	}
	switch r.IntN(3) {
	case 0:
		return filter.And{L: diffExpr(r, depth-1), R: diffExpr(r, depth-1)}
	case 1:
		return filter.Or{L: diffExpr(r, depth-1), R: diffExpr(r, depth-1)}
	}
	return filter.Not{X: diffExpr(r, depth-1)}
}

// Display filter atoms over the same vocabulary, for expressions that go
// through the parser as a user's would.
var displayAtoms = []string{
	`tcp contains "lbtest"`, `udp contains "GET"`, `frame contains 00:00`, `tcp contains "\r\n"`,
	`tcp.payload contains "/mytest"`, `udp.payload contains "a"`,
	`http.request`, `http.request.uri == "/mytest"`, `http.request.uri != "/"`, `http.request.uri contains "api"`,
	`http.request.uri[0:5] == "/api/"`, `http.request.method == "GET"`, `http.request.method != "POST"`,
	`tcp.port == 80`, `tcp.port != 8080`, `udp.port == 53`, `tcp.srcport > 1000`, `tcp.dstport <= 443`,
	`tcp.port in {80, 443, 40000..40010}`, `ip.addr == 198.18.0.0/16`, `ip.src == 10.9.8.7`, `ip.dst != 198.18.0.2`,
	`ipv6.addr == fd00::/8`, `ipv6.src == 2001:db8::77`, `vlan.id == 42`, `vlan.id != 0`, `ieee8021ad.id == 1`,
	`tcp`, `udp`, `ip`, `ipv6`, `vlan`,
}

func displayText(r *rand.Rand, depth int) string {
	if depth == 0 || r.IntN(3) == 0 {
		return displayAtoms[r.IntN(len(displayAtoms))]
	}
	a, b := displayText(r, depth-1), displayText(r, depth-1)
	switch r.IntN(5) {
	case 0:
		return a + " and " + b
	case 1:
		return "(" + a + ") || (" + b + ")"
	case 2:
		return "not (" + a + ")"
	case 3:
		return a + " && !" + "(" + b + ")"
	}
	return "(" + a + " or " + b + ") and " + displayAtoms[r.IntN(len(displayAtoms))]
}

func diffSeed(t *testing.T) uint64 {
	if s := os.Getenv("PODTAP_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("PODTAP_SEED: %v", err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// TestDifferential feeds the same random and mutated frames to the kernel
// program and to the plain-Go reference (filter.Program.Match) under random
// filters, and demands the same verdict and the same predicate values.
func TestDifferential(t *testing.T) {
	requireBPF(t)
	seed := diffSeed(t)
	t.Logf("seed %d (set PODTAP_SEED to repeat)", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	exprs, perExpr, want := 260, 420, 100000
	if testing.Short() {
		// -short (the kernel matrix under emulation): a tenth of it.
		exprs, want = 26, 10000
	}
	methods := filter.MethodSet(filter.Methods)
	var frames, matched, refused int
	for e := 0; e < exprs; e++ {
		expr := diffExpr(r, 4)
		if e%4 == 3 {
			// A quarter of the filters come through the display filter
			// parser, as a user's -Y would.
			text := displayText(r, 3)
			var err error
			if expr, err = filter.ParseDisplayFilter(text); err != nil {
				t.Fatalf("generated filter %q: %v", text, err)
			}
		}
		prog, err := filter.Compile(expr, "random")
		if err != nil {
			e-- // over a limit: draw another
			continue
		}
		vs := variants(t)
		h := newHarness(t, expr, loader.Options{Variant: vs[e%len(vs)]})
		var patterns uint64
		for i, p := range prog.Preds {
			if p.Kind == filter.KindPattern || p.Kind == filter.KindURIContains {
				patterns |= 1 << i
			}
		}
		for i := 0; i < perExpr; i++ {
			f := diffFrame(r)
			ret, err := h.objs.Ingress().Run(&ebpf.RunOptions{Data: f})
			if errors.Is(err, syscall.EINVAL) {
				refused++ // BPF_PROG_TEST_RUN takes no IP frame shorter than its header
				continue
			}
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if int32(ret) != -1 {
				t.Fatalf("program returned %d", int32(ret))
			}
			frames++
			recs := h.drain(t)
			want, wantPreds := prog.Match(filter.Frame{Data: f}, methods)
			if got := len(recs) == 1; got != want || len(recs) > 1 {
				t.Fatalf("seed %d: filter %s\nframe % x\nkernel %d records, reference matched %v (preds %b)", seed, describe(prog), f, len(recs), want, wantPreds)
			}
			if !want {
				continue
			}
			matched++
			got := recs[0].Preds
			// A decision reached before the payload scan leaves pattern bits
			// unset; every other predicate is always decided.
			if got&^patterns != wantPreds&^patterns || got&patterns&^wantPreds != 0 {
				t.Fatalf("seed %d: filter %s\nframe % x\nkernel preds %b, reference %b", seed, describe(prog), f, got, wantPreds)
			}
			if !bytes.Equal(recs[0].Data, f) {
				t.Fatalf("record data differs from the frame")
			}
		}
		h.close() // 260 rings of 8 MiB would not fit a small VM
	}
	t.Logf("%d frames under %d filters, scan variants %v in turn: %d matched, 0 disagreements (%d refused by BPF_PROG_TEST_RUN)", frames, exprs, variants(t), matched, refused)
	if frames < want {
		t.Fatalf("only %d frames compared, want at least %d", frames, want)
	}
}

func describe(p *filter.Program) string {
	s := fmt.Sprintf("code % x;", p.Code)
	for i, pr := range p.Preds {
		s += fmt.Sprintf(" [%d] %s kind=%d proto=%d side=%b op=%d val=%d stag=%v prefix=%v bytes=%q region=%d;", i, pr.Text, pr.Kind, pr.Proto, pr.Side, pr.Op, pr.Value, pr.STag, pr.Prefix, pr.Bytes, pr.Region)
	}
	return s
}

package loader_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/internal/frames"
	"github.com/podtap/podtap/loader"
)

func tcpPort(n uint16) filter.Expr {
	return filter.PredExpr{Pred: filter.Pred{Kind: filter.KindPort, Side: filter.SideSrc | filter.SideDst | filter.SideTCP, Value: uint32(n), Text: fmt.Sprint("tcp.port == ", n)}}
}

func udpPort(n uint16) filter.Expr {
	return filter.PredExpr{Pred: filter.Pred{Kind: filter.KindPort, Side: filter.SideSrc | filter.SideDst | filter.SideUDP, Value: uint32(n), Text: fmt.Sprint("udp.port == ", n)}}
}

func proto(p filter.Proto) filter.Expr {
	return filter.PredExpr{Pred: filter.Pred{Kind: filter.KindProto, Proto: p, Text: fmt.Sprint("proto ", p)}}
}

func pattern(s string, r filter.Region) filter.Expr {
	return filter.PredExpr{Pred: filter.Pred{Kind: filter.KindPattern, Bytes: []byte(s), Region: r, Text: fmt.Sprintf("%d contains %q", r, s)}}
}

func uriContains(s string) filter.Expr {
	return filter.PredExpr{Pred: filter.Pred{Kind: filter.KindURIContains, Bytes: []byte(s), Text: fmt.Sprintf("http.request.uri contains %q", s)}}
}

func vlanID(id uint32, stag bool) filter.Expr {
	return filter.PredExpr{Pred: filter.Pred{Kind: filter.KindVLAN, Value: id, STag: stag, Text: fmt.Sprint("vlan ", id)}}
}

var http1 = []byte("GET /mytest HTTP/1.1\r\nHost: x\r\n\r\n")

// TestParsePaths runs one frame of every header shape the parser knows
// through filters that need the L4 header and the payload, and checks the
// exact record (or its absence).
func TestParsePaths(t *testing.T) {
	requireBPF(t)
	ports := newHarness(t, tcpPort(8080), loader.Options{})
	payload := newHarness(t, filter.Contains("mytest"), loader.Options{})
	udp := newHarness(t, filter.AllOf(udpPort(53), filter.Contains("mytest")), loader.Options{})

	base := frames.Spec{SrcPort: 40000, DstPort: 8080, Payload: http1}
	with := func(f func(*frames.Spec)) frames.Spec { s := base; f(&s); return s }
	for _, tc := range []struct {
		name        string
		spec        frames.Spec
		port, match bool // tcp.port == 8080 holds; payload contains mytest
		udp         bool
	}{
		{"ipv4", base, true, true, false},
		{"ipv4 options", with(func(s *frames.Spec) { s.IPOptions = []byte{0x94, 4, 0, 0, 1, 1, 1, 1} }), true, true, false},
		{"ipv4 max options", with(func(s *frames.Spec) { s.IPOptions = bytes.Repeat([]byte{1}, 40) }), true, true, false},
		{"tcp options", with(func(s *frames.Spec) {
			s.TCPOptions = []byte{2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8}
		}), true, true, false},
		{"ipv4 first fragment", with(func(s *frames.Spec) { s.MoreFrags = true }), true, true, false},
		{"ipv4 later fragment", with(func(s *frames.Spec) { s.FragOffset = 185; s.MoreFrags = true }), false, false, false},
		{"ipv4 last fragment", with(func(s *frames.Spec) { s.FragOffset = 1 }), false, false, false},
		{"ipv4 total length 0", with(func(s *frames.Spec) { s.ZeroLength = true }), true, true, false},
		{"ipv4 trailer", with(func(s *frames.Spec) { s.Payload = []byte("GET / HTTP/1.1\r\n"); s.Trailer = []byte("mytest") }), true, false, false},
		{"ipv6", with(func(s *frames.Spec) { s.V6 = true }), true, true, false},
		{"ipv6 hop-by-hop", with(func(s *frames.Spec) { s.V6 = true; s.Ext = []uint8{frames.HopByHop} }), true, true, false},
		{"ipv6 routing", with(func(s *frames.Spec) { s.V6 = true; s.Ext = []uint8{frames.Routing} }), true, true, false},
		{"ipv6 destination options", with(func(s *frames.Spec) { s.V6 = true; s.Ext = []uint8{frames.DestOpts} }), true, true, false},
		{"ipv6 atomic fragment", with(func(s *frames.Spec) { s.V6 = true; s.Ext = []uint8{frames.Fragment} }), true, true, false},
		{"ipv6 first fragment", with(func(s *frames.Spec) { s.V6 = true; s.Ext = []uint8{frames.Fragment}; s.MoreFrags = true }), true, true, false},
		{"ipv6 later fragment", with(func(s *frames.Spec) { s.V6 = true; s.Ext = []uint8{frames.Fragment}; s.FragOffset = 3 }), false, false, false},
		{"ipv6 AH", with(func(s *frames.Spec) { s.V6 = true; s.Ext = []uint8{frames.AH} }), true, true, false},
		{"ipv6 chain", with(func(s *frames.Spec) {
			s.V6 = true
			s.Ext = []uint8{frames.HopByHop, frames.DestOpts, frames.Routing, frames.Fragment, frames.DestOpts}
		}), true, true, false},
		{"ipv6 payload length 0", with(func(s *frames.Spec) { s.V6 = true; s.ZeroLength = true }), true, true, false},
		{"ipv6 trailer", with(func(s *frames.Spec) {
			s.V6 = true
			s.Payload = []byte("GET / HTTP/1.1\r\n")
			s.Trailer = []byte("mytest")
		}), true, false, false},
		{"vlan", with(func(s *frames.Spec) { s.VLANs = []frames.VLAN{{TPID: 0x8100, TCI: 42}} }), true, true, false},
		{"vlan id 0", with(func(s *frames.Spec) { s.VLANs = []frames.VLAN{{TPID: 0x8100, TCI: 5 << 13}} }), true, true, false},
		{"qinq 88a8+8100", with(func(s *frames.Spec) {
			s.VLANs = []frames.VLAN{{TPID: 0x88a8, TCI: 100}, {TPID: 0x8100, TCI: 200}}
		}), true, true, false},
		{"qinq 9100+8100 v6", with(func(s *frames.Spec) {
			s.V6 = true
			s.VLANs = []frames.VLAN{{TPID: 0x9100, TCI: 100}, {TPID: 0x8100, TCI: 200}}
		}), true, true, false},
		{"three tags", with(func(s *frames.Spec) {
			s.VLANs = []frames.VLAN{{TPID: 0x88a8, TCI: 1}, {TPID: 0x8100, TCI: 2}, {TPID: 0x8100, TCI: 3}}
		}), true, true, false},
		{"four tags: beyond what is parsed", with(func(s *frames.Spec) {
			s.VLANs = []frames.VLAN{{TPID: 0x88a8, TCI: 1}, {TPID: 0x8100, TCI: 2}, {TPID: 0x8100, TCI: 3}, {TPID: 0x8100, TCI: 4}}
		}), false, false, false},
		{"udp", with(func(s *frames.Spec) { s.Proto = 17; s.DstPort = 53 }), false, true, true},
		{"udp v6 ext", with(func(s *frames.Spec) { s.V6 = true; s.Ext = []uint8{frames.DestOpts}; s.Proto = 17; s.DstPort = 53 }), false, true, true},
		{"icmp", with(func(s *frames.Spec) { s.Proto = 1 }), false, false, false},
		{"arp", with(func(s *frames.Spec) { s.EtherType = 0x0806 }), false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := frames.Build(tc.spec)
			check := func(h *harness, want bool) {
				t.Helper()
				p := h.run(t, frame)
				if (p != nil) != want {
					t.Fatalf("matched %v, want %v (frame % x)", p != nil, want, frame)
				}
				if p == nil {
					return
				}
				if !bytes.Equal(p.Data, frame) || p.OrigLen != len(frame) || p.Hook != 0 || p.Preds == 0 {
					t.Errorf("record: hook %d origlen %d preds %b data % x, want the whole %d-byte frame", p.Hook, p.OrigLen, p.Preds, p.Data, len(frame))
				}
			}
			check(ports, tc.port)
			check(payload, tc.match)
			check(udp, tc.udp)
		})
	}
}

// TestMalformed: truncated and garbage headers never match a filter that
// needs them, never crash, and are counted.
func TestMalformed(t *testing.T) {
	requireBPF(t)
	h := newHarness(t, filter.Contains("x"), loader.Options{})
	good := frames.Build(frames.Spec{SrcPort: 1, DstPort: 2, Payload: []byte("xxxx")})
	v6 := frames.Build(frames.Spec{V6: true, Ext: []uint8{frames.HopByHop}, SrcPort: 1, DstPort: 2, Payload: []byte("xxxx")})
	for _, tc := range []struct {
		name  string
		frame []byte
		bad   bool
	}{
		// BPF_PROG_TEST_RUN itself refuses IPv4 frames shorter than an IPv4
		// header; the Go reference model covers those.
		{"ipv4 header only", good[:34], true},
		{"ipv4 header, half tcp", good[:44], true},
		{"ipv4 ihl 3", func() []byte { f := bytes.Clone(good); f[14] = 0x43; return f }(), true},
		{"ipv4 version 5", func() []byte { f := bytes.Clone(good); f[14] = 0x55; return f }(), true},
		{"ipv4 total length < header", func() []byte { f := bytes.Clone(good); f[16], f[17] = 0, 10; return f }(), true},
		{"tcp data offset 2", func() []byte { f := bytes.Clone(good); f[46] = 0x20; return f }(), true},
		{"tcp data offset beyond packet", func() []byte { f := bytes.Clone(good); f[46] = 0xf0; return f }(), true},
		{"ipv6 cut in ext header", v6[:14+40+4], true},
		{"ipv6 ext length beyond packet", func() []byte { f := bytes.Clone(v6); f[14+41] = 200; return f }(), true},
		{"garbage ethertype", bytes.Repeat([]byte{0x5a}, 60), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.counters(t)
			if p := h.run(t, tc.frame); p != nil {
				t.Fatalf("malformed frame matched: % x", tc.frame)
			}
			after := h.counters(t)
			if got := after.BadHeader - before.BadHeader; (got == 1) != tc.bad {
				t.Errorf("bad_header grew by %d, want bad=%v", got, tc.bad)
			}
			if after.Seen-before.Seen != 1 {
				t.Errorf("seen grew by %d, want 1", after.Seen-before.Seen)
			}
		})
	}
}

// TestPatternPositions puts the pattern at every interesting offset of
// payloads around the scan's chunk and word sizes, and near misses of it.
func TestPatternPositions(t *testing.T) {
	requireBPF(t)
	forEachVariant(t, testPatternPositions)
}

func testPatternPositions(t *testing.T, v loader.Variant) {
	// One pattern of each scan kind (SWAR for one or two bytes, q-grams of
	// one to four bytes), periodic ones whose q-grams recur at several
	// offsets, and one as long as a pattern can be.
	for _, pat := range []string{"l", "lb", "lbt", "lbte", "lbtest", "lbtestne", "0123456789abcdef",
		"abcabcabcabc", strings.Repeat("Zq", 32)} {
		h := newHarness(t, filter.Contains(pat), loader.Options{Variant: v})
		for _, n := range []int{len(pat), 7, 8, 9, 63, 64, 65, 255, 256, 257, 319, 320, 321, 511, 512, 513, 575, 576, 1000, 1460, 2047, 2048, 2049, 2111, 2112, 3000, 3500} {
			if n < len(pat) {
				continue
			}
			offsets := map[int]bool{0: true, 1: true, n - len(pat): true, n - len(pat) - 1: true}
			for _, o := range []int{7, 8, 9, 63, 64, 250, 255, 256, 257, 449, 500, 511, 512, 513, 1023, 1024} {
				offsets[o] = true
			}
			// Around the end of the first 2 KiB chunk the scan loads,
			// where blocks of starts end early.
			for o := 1980; o <= 2060; o++ {
				offsets[o] = true
			}
			for off := range offsets {
				if off < 0 || off+len(pat) > n {
					continue
				}
				pl := bytes.Repeat([]byte{'.'}, n)
				copy(pl[off:], pat)
				frame := frames.Build(frames.Spec{SrcPort: 1, DstPort: 2, Payload: pl})
				if h.run(t, frame) == nil {
					t.Errorf("pattern %q at offset %d of a %d-byte payload: not matched", pat, off, n)
				}
				if len(pat) > 1 {
					// Every one-byte change of the pattern must not match.
					for i := 0; i < len(pat); i++ {
						miss := bytes.Clone(pl)
						miss[off+i] ^= 0x20
						frame := frames.Build(frames.Spec{SrcPort: 1, DstPort: 2, Payload: miss})
						if h.run(t, frame) != nil {
							t.Errorf("pattern %q with byte %d changed at offset %d of %d: matched", pat, i, off, n)
						}
					}
				}
			}
		}
		// Cut one byte short at the end of the payload.
		pl := append(bytes.Repeat([]byte{'.'}, 100), pat[:len(pat)-1]...)
		if h.run(t, frames.Build(frames.Spec{SrcPort: 1, DstPort: 2, Payload: pl, Trailer: []byte(pat[len(pat)-1:])})) != nil {
			t.Errorf("pattern %q completed only by the Ethernet trailer: matched", pat)
		}
	}
}

// TestAlmostMatching feeds text that keeps almost matching: many
// candidate positions, each rejected late.
func TestAlmostMatching(t *testing.T) {
	requireBPF(t)
	forEachVariant(t, testAlmostMatching)
}

func testAlmostMatching(t *testing.T, v loader.Variant) {
	for _, tc := range []struct {
		pats   []string
		almost string // repeated: no pattern in it
	}{
		{[]string{"lbtest-needle"}, "lbtest-needlX"},
		{[]string{"lbtest-needle"}, "Xbtest-needle"},
		{[]string{"lbtest-needle"}, "lbtestXneedle"},
		{[]string{"lbt"}, "lbX"},
		{[]string{"lbte"}, "lbtX"},
		// Periodic: every q-gram of the pattern recurs at other offsets.
		{[]string{"abcabcabcabc"}, "abcabcabcabX"},
		{[]string{strings.Repeat("lbtest-needle-16", 2)}, "lbtest-needle-16lbtest-needle-1X"},
		// Patterns that share most of their q-grams.
		{[]string{"needle-one", "needle-two", "eedle-onZ"}, "needle-onXneedle-twXeedle-onX"},
	} {
		var e filter.Expr = filter.Contains(tc.pats[0])
		for _, p := range tc.pats[1:] {
			e = filter.Or{L: e, R: filter.Contains(p)}
		}
		h := newHarness(t, e, loader.Options{Variant: v})
		almost := bytes.Repeat([]byte(tc.almost), 1400/len(tc.almost)+1)
		if h.run(t, frames.Build(frames.Spec{SrcPort: 1, DstPort: 2, Payload: almost})) != nil {
			t.Errorf("%q: near misses %q matched", tc.pats, tc.almost)
		}
		for _, p := range tc.pats {
			for _, at := range []int{0, 1, len(almost) / 2, len(almost)} {
				withHit := slices.Concat(almost[:at], []byte(p), almost[at:])
				if h.run(t, frames.Build(frames.Spec{SrcPort: 1, DstPort: 2, Payload: withHit})) == nil {
					t.Errorf("%q: %q at %d among near misses %q: not matched", tc.pats, p, at, tc.almost)
				}
			}
		}
	}
}

// TestRegions: tcp/udp/frame/payload regions differ in where they start.
func TestRegions(t *testing.T) {
	requireBPF(t)
	// Ports 0x6c62 0x7465 put "lbte" in the TCP header; the header ends with
	// a zero urgent pointer, so "\x00\x00st" spans header and payload.
	frame := frames.Build(frames.Spec{SrcPort: 0x6c62, DstPort: 0x7465, Payload: []byte("st and more")})
	for _, tc := range []struct {
		region          filter.Region
		header, spanned bool
	}{
		{filter.RegionFrame, true, true},
		{filter.RegionL4, true, true},
		{filter.RegionTCPL4, true, true},
		{filter.RegionUDPL4, false, false},
		{filter.RegionPayload, false, false},
		{filter.RegionTCPPayload, false, false},
		{filter.RegionUDPPayload, false, false},
	} {
		h := newHarness(t, pattern("lbte", tc.region), loader.Options{})
		if got := h.run(t, frame) != nil; got != tc.header {
			t.Errorf("region %d, pattern in the TCP header: matched %v, want %v", tc.region, got, tc.header)
		}
		h = newHarness(t, pattern("\x00\x00st", tc.region), loader.Options{})
		if got := h.run(t, frame) != nil; got != tc.spanned {
			t.Errorf("region %d, pattern across header and payload: matched %v, want %v", tc.region, got, tc.spanned)
		}
	}
	// The frame region reaches into the Ethernet header and trailer.
	h := newHarness(t, pattern("\x02\x00\x00\x00\x00\x02", filter.RegionFrame), loader.Options{})
	if h.run(t, frame) == nil {
		t.Error("frame region: destination MAC not found")
	}
	h = newHarness(t, pattern("TRAILER", filter.RegionFrame), loader.Options{})
	if h.run(t, frames.Build(frames.Spec{Payload: []byte("x"), Trailer: []byte("TRAILER")})) == nil {
		t.Error("frame region: trailer not searched")
	}
}

func TestHTTPRequestLine(t *testing.T) {
	requireBPF(t)
	forEachVariant(t, testHTTPRequestLine)
}

func testHTTPRequestLine(t *testing.T, v loader.Variant) {
	for _, tc := range []struct {
		name    string
		e       filter.Expr
		payload string
		want    bool
	}{
		{"uri equal", filter.URI("/mytest"), "GET /mytest HTTP/1.1\r\n", true},
		{"uri longer", filter.URI("/mytest"), "GET /mytest2 HTTP/1.1\r\n", false},
		{"uri with query", filter.URI("/mytest"), "GET /mytest?a=1 HTTP/1.1\r\n", false},
		{"uri query exact", filter.URI("/mytest?a=1"), "GET /mytest?a=1 HTTP/1.1\r\n", true},
		{"uri raw percent", filter.URI("/my%20test"), "GET /my%20test HTTP/1.1\r\n", true},
		{"uri percent not decoded", filter.URI("/my%20test"), "GET /my+test HTTP/1.1\r\n", false},
		{"uri ends at payload end", filter.URI("/mytest"), "GET /mytest", true},
		{"uri ends at CR (HTTP/0.9)", filter.URI("/mytest"), "GET /mytest\r\n", true},
		{"uri ends at LF", filter.URI("/mytest"), "GET /mytest\n", true},
		{"uri shorter payload", filter.URI("/mytest"), "GET /myte", false},
		{"absolute form", filter.URI("http://h/x"), "GET http://h/x HTTP/1.1\r\n", true},
		{"post", filter.URI("/up"), "POST /up HTTP/1.1\r\n", true},
		{"lowercase method is no request", filter.URI("/mytest"), "get /mytest HTTP/1.1\r\n", false},
		{"unknown method", filter.URI("/mytest"), "FOO /mytest HTTP/1.1\r\n", false},
		{"response", filter.URI("/mytest"), "HTTP/1.1 200 OK\r\n", false},
		{"uri not at start", filter.URI("/mytest"), "xGET /mytest HTTP/1.1\r\n", false},
		{"prefix", filter.URIPrefix("/api/"), "GET /api/v1 HTTP/1.1\r\n", true},
		{"prefix whole", filter.URIPrefix("/api/"), "GET /api/ HTTP/1.1\r\n", true},
		{"prefix too short", filter.URIPrefix("/api/"), "GET /api HTTP/1.1\r\n", false},
		{"prefix cut by payload end", filter.URIPrefix("/api/"), "GET /ap", false},
		{"method", filter.Method("GET"), "GET / HTTP/1.1\r\n", true},
		{"method prefix is not equal", filter.Method("GE"), "GET / HTTP/1.1\r\n", false},
		{"method longer", filter.Method("GETX"), "GET / HTTP/1.1\r\n", false},
		{"method delete", filter.Method("DELETE"), "DELETE /x HTTP/1.1\r\n", true},
		{"method and uri", filter.AllOf(filter.Method("PUT"), filter.URI("/x")), "PUT /x HTTP/1.1\r\n", true},
		{"method or uri fails", filter.AllOf(filter.Method("PUT"), filter.URI("/y")), "PUT /x HTTP/1.1\r\n", false},
		{"empty uri", filter.URI(""), "GET  HTTP/1.1\r\n", true},
		// A method followed by NUL bytes is not that method (the kernel's
		// method table once keyed on zero-padded bytes alone).
		{"method with NULs", filter.URI("/x"), "POST\x00\x00 /x HTTP/1.1\r\n", false},
		{"method with NULs is not the method", filter.Method("POST"), "POST\x00 /x HTTP/1.1\r\n", false},
		{"long uri", filter.URI("/" + strings.Repeat("a", 127)), "GET /" + strings.Repeat("a", 127) + " HTTP/1.1\r\n", true},
		{"uri contains", uriContains("test"), "GET /mytest?a=1 HTTP/1.1\r\n", true},
		{"uri contains query", uriContains("a=1"), "GET /mytest?a=1 HTTP/1.1\r\n", true},
		{"uri contains at target end", uriContains("a=1"), "GET /mytest?a=1", true},
		{"uri contains: only in the version", uriContains("HTTP"), "GET /mytest HTTP/1.1\r\n", false},
		{"uri contains: only in a header", uriContains("Host"), "GET /x HTTP/1.1\r\nHost: y\r\n", false},
		{"uri contains: only in the method", uriContains("GE"), "GET /x HTTP/1.1\r\n", false},
		{"uri contains: after CR (HTTP/0.9)", uriContains("zz"), "GET /x\r\nzz", false},
		{"uri contains: no request", uriContains("mytest"), "get /mytest HTTP/1.1\r\n", false},
		{"uri contains: long target", uriContains("needle"), "GET /" + strings.Repeat("a", 900) + "needle HTTP/1.1\r\n", true},
		{"uri contains: after a long target", uriContains("needle"), "GET /" + strings.Repeat("a", 900) + " HTTP/1.1\r\nX: needle\r\n", false},
		{"uri contains and payload contains", filter.AllOf(uriContains("my"), filter.Contains("Host")), "GET /my HTTP/1.1\r\nHost: y\r\n", true},
		{"long uri one more", filter.URI("/" + strings.Repeat("a", 127)), "GET /" + strings.Repeat("a", 128) + " HTTP/1.1\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.e, loader.Options{Variant: v})
			for _, v6 := range []bool{false, true} {
				frame := frames.Build(frames.Spec{V6: v6, SrcPort: 1, DstPort: 80, Payload: []byte(tc.payload)})
				if got := h.run(t, frame) != nil; got != tc.want {
					t.Errorf("v6=%v: matched %v, want %v", v6, got, tc.want)
				}
				// UDP never carries an HTTP/1 request line.
				frame = frames.Build(frames.Spec{V6: v6, Proto: 17, SrcPort: 1, DstPort: 80, Payload: []byte(tc.payload)})
				if h.run(t, frame) != nil {
					t.Errorf("v6=%v: UDP payload matched an HTTP test", v6)
				}
			}
		})
	}
}

func TestAddressesAndVLAN(t *testing.T) {
	requireBPF(t)
	v4 := frames.Build(frames.Spec{Src: netip.MustParseAddr("10.1.2.3"), Dst: netip.MustParseAddr("192.0.2.9"), SrcPort: 1, DstPort: 2,
		VLANs: []frames.VLAN{{TPID: 0x88a8, TCI: 7}, {TPID: 0x8100, TCI: 0x2000 | 42}}})
	v6 := frames.Build(frames.Spec{V6: true, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("fd00::9"), SrcPort: 1, DstPort: 2})
	host := func(s string) filter.Expr {
		e, err := filter.Host(s)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	for _, tc := range []struct {
		name   string
		e      filter.Expr
		v4, v6 bool
	}{
		{"v4 src", host("10.1.2.3"), true, false},
		{"v4 dst", host("192.0.2.9"), true, false},
		{"v4 cidr", host("10.0.0.0/8"), true, false},
		{"v4 other", host("10.1.2.4"), false, false},
		{"v4 /0", host("0.0.0.0/0"), true, false},
		{"v6 src", host("2001:db8::1"), false, true},
		{"v6 cidr", host("fd00::/8"), false, true},
		{"v6 other", host("2001:db8::2"), false, false},
		{"v4-mapped", host("::ffff:10.1.2.3"), true, false},
		{"c-tag 42", vlanID(42, false), true, false},
		{"c-tag 7 is an s-tag", vlanID(7, false), false, false},
		{"s-tag 7", vlanID(7, true), true, false},
		{"vlan present", proto(filter.ProtoVLAN), true, false},
		{"ip", proto(filter.ProtoIP4), true, false},
		{"ipv6", proto(filter.ProtoIP6), false, true},
		{"not ipv6", filter.Not{X: proto(filter.ProtoIP6)}, true, false},
		{"tcp or udp", filter.Or{L: proto(filter.ProtoTCP), R: proto(filter.ProtoUDP)}, true, true},
	} {
		h := newHarness(t, tc.e, loader.Options{})
		if got := h.run(t, v4) != nil; got != tc.v4 {
			t.Errorf("%s: v4 frame matched %v, want %v", tc.name, got, tc.v4)
		}
		if got := h.run(t, v6) != nil; got != tc.v6 {
			t.Errorf("%s: v6 frame matched %v, want %v", tc.name, got, tc.v6)
		}
	}
}

func TestPortOps(t *testing.T) {
	requireBPF(t)
	frame := frames.Build(frames.Spec{SrcPort: 40000, DstPort: 8080})
	for _, tc := range []struct {
		side filter.Side
		op   filter.Op
		val  uint32
		want bool
	}{
		{filter.SideDst, filter.OpEq, 8080, true},
		{filter.SideSrc, filter.OpEq, 8080, false},
		{filter.SideSrc | filter.SideDst, filter.OpLt, 8081, true},
		{filter.SideSrc | filter.SideDst, filter.OpLt, 8080, false},
		{filter.SideSrc | filter.SideDst, filter.OpLe, 8080, true},
		{filter.SideDst, filter.OpGt, 8079, true},
		{filter.SideDst, filter.OpGt, 8080, false},
		{filter.SideSrc, filter.OpGe, 40000, true},
		{filter.SideSrc, filter.OpGe, 40001, false},
	} {
		e := filter.PredExpr{Pred: filter.Pred{Kind: filter.KindPort, Side: tc.side | filter.SideTCP, Op: tc.op, Value: tc.val, Text: "p"}}
		h := newHarness(t, e, loader.Options{})
		if got := h.run(t, frame) != nil; got != tc.want {
			t.Errorf("side %b op %d %d: matched %v, want %v", tc.side, tc.op, tc.val, got, tc.want)
		}
	}
}

// TestLargestFilterLoads loads a filter at every limit at once (predicates,
// patterns of the longest length, strings, code length), so no filter that
// compiles can fail verification.
func TestLargestFilterLoads(t *testing.T) {
	requireBPF(t)
	forEachVariant(t, testLargestFilterLoads)
}

func testLargestFilterLoads(t *testing.T, v loader.Variant) {
	var preds []filter.Expr
	for i := 0; i < filter.MaxPatterns; i++ {
		b := bytes.Repeat([]byte{byte('a' + i)}, filter.MaxPatLen)
		b[i] = '!'
		preds = append(preds, pattern(string(b), filter.Region(i%7)))
	}
	for i := 0; i < filter.MaxStrings; i++ {
		s := "/" + strings.Repeat(string(rune('a'+i)), filter.MaxStrLen-1)
		if i%2 == 0 {
			preds = append(preds, filter.URI(s))
		} else {
			preds = append(preds, filter.URIPrefix(s))
		}
	}
	for i := 0; len(preds) < filter.MaxPreds; i++ {
		switch i % 4 {
		case 0:
			preds = append(preds, tcpPort(uint16(i)))
		case 1:
			preds = append(preds, vlanID(uint32(i), i%8 == 1))
		case 2:
			e, _ := filter.Host(fmt.Sprintf("fd00::%x/%d", i, 64+i))
			preds = append(preds, e)
		default:
			e, _ := filter.Host(fmt.Sprintf("10.0.0.%d/%d", i, i))
			preds = append(preds, e)
		}
	}
	e := preds[0]
	for i, p := range preds[1:] {
		switch i % 3 {
		case 0:
			e = filter.And{L: e, R: p}
		case 1:
			if i == 1 {
				p = filter.Not{X: p}
			}
			e = filter.Or{L: e, R: p}
		default:
			e = filter.Or{L: p, R: e}
		}
	}
	prog, err := filter.Compile(e, "largest")
	if err != nil {
		t.Fatal(err)
	}
	if len(prog.Preds) != filter.MaxPreds || len(prog.Patterns()) != filter.MaxPatterns || len(prog.Strings()) != filter.MaxStrings {
		t.Fatalf("filter is not at the limits: %d preds, %d patterns, %d strings", len(prog.Preds), len(prog.Patterns()), len(prog.Strings()))
	}
	h := newHarness(t, e, loader.Options{Variant: v})
	info, err := h.objs.Ingress().Info()
	if err != nil {
		t.Fatal(err)
	}
	n, _ := info.VerifiedInstructions()
	t.Logf("largest filter, scan variant %s: %d operations, verified %d instructions", v, len(prog.Code), n)
	// And it still decides: a frame holding the first pattern in the frame
	// region matches (pattern 0 is ANDed with pattern 1 only via Or/Not).
	h.run(t, frames.Build(frames.Spec{SrcPort: 1, DstPort: 2, Payload: []byte("x")}))
}

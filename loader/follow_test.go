package loader_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/podtap/podtap/decode"
	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/internal/frames"
	"github.com/podtap/podtap/loader"
)

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// tcpFrame is a TCP segment from client (c) to server (s) or back.
func tcpFrame(v6, fromClient bool, cport uint16, flags byte, payload string) []byte {
	c4, s4 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	c6, s6 := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	sp := frames.Spec{V6: v6, Src: c4, Dst: s4, SrcPort: cport, DstPort: 8080, Payload: []byte(payload)}
	if v6 {
		sp.Src, sp.Dst = c6, s6
	}
	if !fromClient {
		sp.Src, sp.Dst, sp.SrcPort, sp.DstPort = sp.Dst, sp.Src, sp.DstPort, sp.SrcPort
	}
	f := frames.Build(sp)
	// Set the TCP flags byte (13 bytes into the TCP header).
	off := 14 + 20
	if v6 {
		off = 14 + 40
	}
	f[off+13] = flags
	return f
}

func udpFrame(fromClient bool, payload string) []byte {
	sp := frames.Spec{Proto: 17, SrcPort: 5353, DstPort: 53, Payload: []byte(payload)}
	if !fromClient {
		sp.Src, sp.Dst = netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.1")
		sp.SrcPort, sp.DstPort = 53, 5353
	}
	return frames.Build(sp)
}

// kind says how a record got out: m(atched), f(ollowed) or h(andshake).
func kind(p decode.Packet) string {
	switch {
	case p.Handshake:
		return "h"
	case p.Followed:
		return "f"
	}
	return "m"
}

func followHarness(t *testing.T, f loader.Follow) *harness {
	t.Helper()
	f.On = true
	return newHarness(t, filter.URI("/mytest"), loader.Options{Follow: f})
}

// expect runs a frame and checks what came out ("" for nothing).
func (h *harness) expect(t *testing.T, what string, frame []byte, want string) {
	t.Helper()
	got := ""
	for _, p := range h.runAll(t, frame) {
		got += kind(p)
	}
	if got != want {
		t.Fatalf("%s: records %q, want %q", what, got, want)
	}
}

func TestFollowFlow(t *testing.T) {
	requireBPF(t)
	for _, v6 := range []bool{false, true} {
		h := followHarness(t, loader.Follow{Grace: 50 * time.Millisecond})
		h.expect(t, "the handshake, before any match", tcpFrame(v6, true, 40000, tcpSYN, ""), "")
		h.expect(t, "the request", tcpFrame(v6, true, 40000, tcpACK, "GET /mytest HTTP/1.1\r\n"), "m")
		h.expect(t, "the response", tcpFrame(v6, false, 40000, tcpACK, "HTTP/1.1 200 OK\r\n"), "f")
		h.expect(t, "another flow", tcpFrame(v6, true, 40001, tcpACK, "GET /other HTTP/1.1\r\n"), "")
		h.expect(t, "the other flow's reply", tcpFrame(v6, false, 40001, tcpACK, "HTTP/1.1 200 OK\r\n"), "")
		h.expect(t, "the client's ACK", tcpFrame(v6, true, 40000, tcpACK, ""), "f")
		h.expect(t, "a second matching request", tcpFrame(v6, true, 40000, tcpACK, "GET /mytest HTTP/1.1\r\n"), "m")
		h.expect(t, "the client's FIN", tcpFrame(v6, true, 40000, tcpFIN|tcpACK, ""), "f")
		h.expect(t, "the server's FIN", tcpFrame(v6, false, 40000, tcpFIN|tcpACK, ""), "f")
		h.expect(t, "the last ACK, in the grace period", tcpFrame(v6, true, 40000, tcpACK, ""), "f")
		time.Sleep(80 * time.Millisecond)
		h.expect(t, "a packet after the grace period", tcpFrame(v6, true, 40000, tcpACK, ""), "")
		h.expect(t, "and after that", tcpFrame(v6, false, 40000, tcpACK, ""), "")
		c := h.counters(t)
		if c.Matched != 2 || c.Followed != 5 || c.FlowsStarted != 1 || c.FlowsClosed != 1 || c.FlowsLimited != 0 {
			t.Errorf("v6=%v: counters matched %d followed %d started %d closed %d limited %d", v6, c.Matched, c.Followed, c.FlowsStarted, c.FlowsClosed, c.FlowsLimited)
		}
		if open, closed, err := h.objs.FollowedFlows(); err != nil || open+closed != 0 {
			t.Errorf("v6=%v: %d open and %d closed flows left in the table (%v)", v6, open, closed, err)
		}
	}
}

func TestFollowRST(t *testing.T) {
	requireBPF(t)
	h := followHarness(t, loader.Follow{Grace: 30 * time.Millisecond})
	h.expect(t, "the request", tcpFrame(false, true, 40000, tcpACK, "GET /mytest HTTP/1.1\r\n"), "m")
	h.expect(t, "the RST", tcpFrame(false, false, 40000, tcpRST, ""), "f")
	time.Sleep(50 * time.Millisecond)
	h.expect(t, "after the RST's grace", tcpFrame(false, true, 40000, tcpACK, ""), "")
	if c := h.counters(t); c.FlowsClosed != 1 {
		t.Errorf("closed %d, want 1", c.FlowsClosed)
	}
}

func TestFollowLimits(t *testing.T) {
	requireBPF(t)
	req := tcpFrame(false, true, 40000, tcpACK, "GET /mytest HTTP/1.1\r\n")
	resp := tcpFrame(false, false, 40000, tcpACK, "HTTP/1.1 200 OK\r\n")

	h := followHarness(t, loader.Follow{Packets: 2})
	h.expect(t, "request", req, "m")
	h.expect(t, "followed 1", resp, "f")
	h.expect(t, "followed 2", resp, "f")
	h.expect(t, "over --follow-packets", resp, "")
	h.expect(t, "and later", resp, "")
	if c := h.counters(t); c.FlowsLimited != 1 || c.Followed != 2 {
		t.Errorf("packets: limited %d followed %d", c.FlowsLimited, c.Followed)
	}

	h = followHarness(t, loader.Follow{Bytes: uint64(len(resp)) + 1})
	h.expect(t, "request", req, "m")
	h.expect(t, "followed, under the byte limit", resp, "f")
	h.expect(t, "followed, reaching it", resp, "f")
	h.expect(t, "over --follow-bytes", resp, "")

	h = followHarness(t, loader.Follow{Timeout: 40 * time.Millisecond})
	h.expect(t, "request", req, "m")
	h.expect(t, "within the timeout", resp, "f")
	time.Sleep(60 * time.Millisecond)
	h.expect(t, "after the timeout", resp, "")
	h.expect(t, "a new match starts again", req, "m")
	h.expect(t, "followed again", resp, "f")
	if c := h.counters(t); c.FlowsLimited != 1 || c.FlowsStarted != 2 {
		t.Errorf("timeout: limited %d started %d", c.FlowsLimited, c.FlowsStarted)
	}
}

func TestFollowUDP(t *testing.T) {
	requireBPF(t)
	h := newHarness(t, filter.Contains("lbtest"), loader.Options{Follow: loader.Follow{On: true}})
	h.expect(t, "query", udpFrame(true, "lbtest query"), "m")
	h.expect(t, "answer", udpFrame(false, "answer"), "f")
	h.expect(t, "next query", udpFrame(true, "plain"), "f")
}

// TestFollowTableFull: more flows than the table holds evict the least
// recently used ones; the count of evictions is what the summary reports.
func TestFollowTableFull(t *testing.T) {
	requireBPF(t)
	h := followHarness(t, loader.Follow{Flows: 4})
	for i := 0; i < 20; i++ {
		h.expect(t, "request", tcpFrame(false, true, uint16(41000+i), tcpACK, "GET /mytest HTTP/1.1\r\n"), "m")
	}
	c := h.counters(t)
	open, closed, err := h.objs.FollowedFlows()
	if err != nil {
		t.Fatal(err)
	}
	present := open + closed
	evicted := int(c.FlowsStarted) - int(c.FlowsClosed+c.FlowsLimited) - present
	if c.FlowsStarted != 20 || present > 4 || evicted < 16 {
		t.Errorf("started %d, present %d, evicted %d", c.FlowsStarted, present, evicted)
	}
	// The latest flow is still followed; the first was evicted.
	h.expect(t, "reply on the latest flow", tcpFrame(false, false, 41019, tcpACK, "ok"), "f")
	h.expect(t, "reply on the first flow", tcpFrame(false, false, 41000, tcpACK, "ok"), "")
}

// TestFollowHandshake: the SYN, SYN-ACK and ACK kept before the match come
// out just before it, in order, with their own times and directions.
func TestFollowHandshake(t *testing.T) {
	requireBPF(t)
	h := followHarness(t, loader.Follow{Handshake: true})
	syn := tcpFrame(false, true, 40000, tcpSYN, "")
	synack := tcpFrame(false, false, 40000, tcpSYN|tcpACK, "")
	ack := tcpFrame(false, true, 40000, tcpACK, "")
	h.expect(t, "SYN", syn, "")
	h.expect(t, "SYN-ACK", synack, "")
	h.expect(t, "ACK", ack, "")
	h.expect(t, "a second bare ACK is not kept", ack, "")
	h.expect(t, "another connection's SYN", tcpFrame(false, true, 40001, tcpSYN, ""), "")
	recs := h.runAll(t, tcpFrame(false, true, 40000, tcpACK|0x08, "GET /mytest HTTP/1.1\r\n"))
	got := ""
	for _, p := range recs {
		got += kind(p)
	}
	if got != "hhhm" {
		t.Fatalf("records %q, want the three handshake packets then the match", got)
	}
	for i, want := range [][]byte{syn, synack, ack} {
		if string(recs[i].Data) != string(want) || recs[i].OrigLen != len(want) {
			t.Errorf("handshake packet %d: % x", i, recs[i].Data)
		}
		if i > 0 && recs[i].Time.Before(recs[i-1].Time) {
			t.Errorf("handshake packet %d is older than the one before", i)
		}
	}
	if !recs[0].Time.Before(recs[3].Time) {
		t.Error("the SYN does not keep its own, earlier time")
	}
	c := h.counters(t)
	if c.HsKept != 4 || c.HsSent != 3 {
		t.Errorf("kept %d sent %d, want 4 (two SYNs, a SYN-ACK, an ACK) and 3", c.HsKept, c.HsSent)
	}
	// A second match on the same flow sends no handshake again.
	h.expect(t, "second match", tcpFrame(false, true, 40000, tcpACK, "GET /mytest HTTP/1.1\r\n"), "m")
}

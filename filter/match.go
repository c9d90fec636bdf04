package filter

import (
	"bytes"
	"encoding/binary"
	"net/netip"
)

// Frame is one packet as the TC hook sees it: the bytes, and a VLAN tag
// the driver may have moved out of them into skb metadata.
type Frame struct {
	Data      []byte
	VLANTag   bool   // a tag was offloaded
	VLANProto uint16 // its TPID (host order)
	VLANTCI   uint16
}

// Packet is what the parser learns about a frame. It mirrors struct pkt in
// bpf/podtap.c; ParseError tells why parsing stopped early, if it did.
type Packet struct {
	Len            int
	L4Off, PayOff  int
	IPEnd          int
	SrcPort, DPort uint16
	Protos         Proto
	VLANs          []uint16 // ID | 0x8000 for 802.1ad S-tags
	Src, Dst       netip.Addr
	ParseError     ParseError
}

// ParseError says why a frame was not fully parsed.
type ParseError int

const (
	ParseOK    ParseError = iota
	ParseNotIP            // no IPv4/IPv6 header
	ParseBad              // a header was truncated or invalid
)

const vlanSTag = 0x8000

const (
	maxVLANs   = 3
	maxExtHdrs = 8
)

func isVLANTPID(t uint16) bool { return t == 0x8100 || t == 0x88a8 || t == 0x9100 }

func (p *Packet) addVLAN(tpid, tci uint16) {
	if len(p.VLANs) >= maxVLANs {
		return
	}
	v := tci & 0x0fff
	if tpid == 0x88a8 {
		v |= vlanSTag
	}
	p.VLANs = append(p.VLANs, v)
	p.Protos |= ProtoVLAN
}

// Parse parses a frame the way the kernel program does.
func Parse(f Frame) Packet {
	d := f.Data
	p := Packet{Len: len(d)}
	if len(d) < 14 {
		p.ParseError = ParseNotIP
		return p
	}
	proto := binary.BigEndian.Uint16(d[12:])
	off := 14
	if f.VLANTag {
		p.addVLAN(f.VLANProto, f.VLANTCI)
	}
	for i := 0; i < maxVLANs && isVLANTPID(proto); i++ {
		if off+4 > len(d) {
			p.ParseError = ParseBad
			return p
		}
		p.addVLAN(proto, binary.BigEndian.Uint16(d[off:]))
		proto = binary.BigEndian.Uint16(d[off+2:])
		off += 4
	}
	switch proto {
	case 0x0800:
		p.ParseError = p.parseIPv4(d, off)
	case 0x86dd:
		p.ParseError = p.parseIPv6(d, off)
	default:
		p.ParseError = ParseNotIP
	}
	return p
}

func ipEnd(off, tot, n int) int {
	if tot == 0 || off+tot > n {
		return n
	}
	return off + tot
}

func (p *Packet) parseIPv4(d []byte, off int) ParseError {
	if off+20 > len(d) {
		return ParseBad
	}
	h := d[off:]
	hl := int(h[0]&0x0f) * 4
	if h[0]>>4 != 4 || hl < 20 {
		return ParseBad
	}
	tot := int(binary.BigEndian.Uint16(h[2:]))
	p.IPEnd = ipEnd(off, tot, len(d))
	if off+hl > p.IPEnd || (tot != 0 && tot < hl) {
		return ParseBad
	}
	p.Protos |= ProtoIP4
	p.Src = netip.AddrFrom4([4]byte(h[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(h[16:20]))
	if binary.BigEndian.Uint16(h[6:])&0x1fff != 0 {
		return ParseOK
	}
	return p.parseL4(d, h[9], off+hl)
}

func (p *Packet) parseIPv6(d []byte, off int) ParseError {
	if off+40 > len(d) {
		return ParseBad
	}
	h := d[off:]
	if h[0]>>4 != 6 {
		return ParseBad
	}
	tot := 0
	if pl := int(binary.BigEndian.Uint16(h[4:])); pl != 0 {
		tot = pl + 40
	}
	p.IPEnd = ipEnd(off, tot, len(d))
	p.Protos |= ProtoIP6
	p.Src = netip.AddrFrom16([16]byte(h[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(h[24:40]))
	next := h[6]
	off += 40
	for i := 0; i < maxExtHdrs; i++ {
		switch next {
		case 0, 43, 44, 51, 60: // hop-by-hop, routing, fragment, AH, destination
		default:
			return p.parseL4(d, next, off)
		}
		if off+8 > p.IPEnd {
			return ParseBad
		}
		e := d[off:]
		switch next {
		case 44:
			if binary.BigEndian.Uint16(e[2:])&0xfff8 != 0 {
				return ParseOK
			}
			off += 8
		case 51:
			off += (int(e[1]) + 2) * 4
		default:
			off += (int(e[1]) + 1) * 8
		}
		next = e[0]
	}
	return p.parseL4(d, next, off)
}

func (p *Packet) parseL4(d []byte, proto byte, off int) ParseError {
	switch proto {
	case 6:
		if off+20 > p.IPEnd {
			return ParseBad
		}
		hl := int(d[off+12]>>4) * 4
		if hl < 20 || off+hl > p.IPEnd {
			return ParseBad
		}
		p.Protos |= ProtoTCP
		p.PayOff = off + hl
	case 17:
		if off+8 > p.IPEnd {
			return ParseBad
		}
		p.Protos |= ProtoUDP
		p.PayOff = off + 8
	default:
		return ParseOK
	}
	p.SrcPort = binary.BigEndian.Uint16(d[off:])
	p.DPort = binary.BigEndian.Uint16(d[off+2:])
	p.L4Off = off
	return ParseOK
}

func cmpOp(op Op, a, b uint32) bool {
	switch op {
	case OpLt:
		return a < b
	case OpLe:
		return a <= b
	case OpGt:
		return a > b
	case OpGe:
		return a >= b
	}
	return a == b
}

// region returns the bytes of d a pattern in region r is searched in.
func (p *Packet) region(d []byte, r Region) []byte {
	l4 := p.Protos & (ProtoTCP | ProtoUDP)
	switch r {
	case RegionFrame:
		return d
	case RegionTCPL4, RegionTCPPayload:
		l4 &= ProtoTCP
	case RegionUDPL4, RegionUDPPayload:
		l4 &= ProtoUDP
	}
	if l4 == 0 {
		return nil
	}
	switch r {
	case RegionL4, RegionTCPL4, RegionUDPL4:
		return d[p.L4Off:p.IPEnd]
	}
	return d[p.PayOff:p.IPEnd]
}

// Request is the HTTP request line that starts a TCP payload, if any.
type Request struct {
	Method []byte
	URI    []byte
	Class  MethodClass
}

// ParseRequest finds the request line at the start of the TCP payload: a
// method from methods followed by one space, then the request target up
// to the next space, CR or LF, or the end of the payload.
func (p *Packet) ParseRequest(d []byte, methods map[string]MethodClass) (Request, bool) {
	if p.Protos&ProtoTCP == 0 || p.PayOff >= p.IPEnd {
		return Request{}, false
	}
	pl := d[p.PayOff:p.IPEnd]
	sp := bytes.IndexByte(pl[:min(len(pl), MaxMethod+1)], ' ')
	if sp < 1 || methods[string(pl[:sp])] == 0 {
		return Request{}, false
	}
	uri := pl[sp+1:]
	if end := bytes.IndexAny(uri, " \r\n"); end >= 0 {
		uri = uri[:end]
	}
	return Request{Method: pl[:sp], URI: uri, Class: methods[string(pl[:sp])]}, true
}

// MethodSet returns the method table Match takes (kept for callers that
// build one; Methods is the default).
func MethodSet(m map[string]MethodClass) map[string]MethodClass { return m }

// Match evaluates the program on a frame in plain Go, with the kernel
// program's semantics. It returns whether the frame matches and which
// predicates hold.
func (prog *Program) Match(f Frame, methods map[string]MethodClass) (bool, uint64) {
	p := Parse(f)
	d := f.Data
	req, isReq := p.ParseRequest(d, methods)
	var val uint64
	for i, pr := range prog.Preds {
		var v bool
		switch pr.Kind {
		case KindProto:
			v = p.Protos&pr.Proto != 0
		case KindPort:
			var l4 Proto
			if pr.Side&SideTCP != 0 {
				l4 |= ProtoTCP
			}
			if pr.Side&SideUDP != 0 {
				l4 |= ProtoUDP
			}
			v = p.Protos&l4 != 0 &&
				(pr.Side&SideSrc != 0 && cmpOp(pr.Op, uint32(p.SrcPort), pr.Value) ||
					pr.Side&SideDst != 0 && cmpOp(pr.Op, uint32(p.DPort), pr.Value))
		case KindVLAN:
			for _, id := range p.VLANs {
				if (id&vlanSTag != 0) == pr.STag && cmpOp(pr.Op, uint32(id&0x0fff), pr.Value) {
					v = true
				}
			}
		case KindAddr4, KindAddr6:
			want := ProtoIP4
			if pr.Kind == KindAddr6 {
				want = ProtoIP6
			}
			v = p.Protos&want != 0 &&
				(pr.Side&SideSrc != 0 && pr.Prefix.Contains(p.Src) ||
					pr.Side&SideDst != 0 && pr.Prefix.Contains(p.Dst))
		case KindPattern:
			v = bytes.Contains(p.region(d, pr.Region), pr.Bytes)
		case KindHTTPRequest:
			v = isReq && req.Class == MethodRequest
		case KindMethod:
			v = isReq && bytes.Equal(req.Method, pr.Bytes)
		case KindURIEq:
			v = isReq && bytes.Equal(req.URI, pr.Bytes)
		case KindURIPrefix:
			v = isReq && bytes.HasPrefix(req.URI, pr.Bytes)
		case KindURIContains:
			v = isReq && bytes.Contains(req.URI, pr.Bytes)
		}
		if v {
			val |= 1 << i
		}
	}
	return prog.Eval(val), val
}

// Package frames builds Ethernet frames for tests: VLAN tags, IPv4 with
// options and fragments, IPv6 with extension headers, TCP with options,
// UDP, payload and trailer bytes, byte by byte as the spec asks, including
// shapes a real stack would not send.
package frames

import (
	"encoding/binary"
	"net/netip"
)

// VLAN is one 802.1Q/802.1ad tag.
type VLAN struct {
	TPID uint16 // 0x8100, 0x88a8, 0x9100
	TCI  uint16
}

// Extension header types for IPv6.
const (
	HopByHop = 0
	Routing  = 43
	Fragment = 44
	AH       = 51
	DestOpts = 60
)

// Spec describes a frame.
type Spec struct {
	VLANs      []VLAN
	EtherType  uint16 // 0: IPv4 or IPv6 as V6 says
	V6         bool
	Src, Dst   netip.Addr // defaults 198.18.0.1 -> 198.18.0.2 (fd00::1 -> fd00::2)
	IPOptions  []byte     // IPv4 options, padded to 4 bytes
	Ext        []uint8    // IPv6 extension headers, in order
	FragOffset uint16     // in 8-byte units
	MoreFrags  bool
	Proto      uint8 // 0: TCP
	SrcPort    uint16
	DstPort    uint16
	TCPOptions []byte // padded to 4 bytes
	Payload    []byte
	Trailer    []byte // bytes after the IP datagram
	ZeroLength bool   // IPv4 total length / IPv6 payload length 0
}

// Build lays the frame out.
func Build(s Spec) []byte {
	if s.Proto == 0 {
		s.Proto = 6
	}
	if !s.Src.IsValid() {
		if s.V6 {
			s.Src, s.Dst = netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
		} else {
			s.Src, s.Dst = netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
		}
	}
	var l4 []byte
	switch s.Proto {
	case 6:
		opts := pad4(s.TCPOptions)
		h := make([]byte, 20+len(opts))
		binary.BigEndian.PutUint16(h[0:], s.SrcPort)
		binary.BigEndian.PutUint16(h[2:], s.DstPort)
		binary.BigEndian.PutUint32(h[4:], 1000)
		h[12] = byte((20+len(opts))/4) << 4
		h[13] = 0x18 // PSH, ACK
		binary.BigEndian.PutUint16(h[14:], 65535)
		copy(h[20:], opts)
		l4 = append(h, s.Payload...)
	case 17:
		h := make([]byte, 8)
		binary.BigEndian.PutUint16(h[0:], s.SrcPort)
		binary.BigEndian.PutUint16(h[2:], s.DstPort)
		binary.BigEndian.PutUint16(h[4:], uint16(8+len(s.Payload)))
		l4 = append(h, s.Payload...)
	default:
		l4 = append([]byte(nil), s.Payload...)
	}

	var ip []byte
	etype := uint16(0x0800)
	if s.V6 {
		etype = 0x86dd
		ip = ipv6(s, l4)
	} else {
		ip = ipv4(s, l4)
	}
	if s.EtherType != 0 {
		etype = s.EtherType
	}
	// MACs, then each tag as TPID and TCI, then the inner EtherType.
	f := []byte{0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1}
	for _, v := range s.VLANs {
		f = binary.BigEndian.AppendUint16(f, v.TPID)
		f = binary.BigEndian.AppendUint16(f, v.TCI)
	}
	f = binary.BigEndian.AppendUint16(f, etype)
	f = append(f, ip...)
	return append(f, s.Trailer...)
}

func pad4(b []byte) []byte {
	out := append([]byte(nil), b...)
	for len(out)%4 != 0 {
		out = append(out, 1) // TCP/IP option NOP
	}
	return out
}

func ipv4(s Spec, l4 []byte) []byte {
	opts := pad4(s.IPOptions)
	hl := 20 + len(opts)
	h := make([]byte, hl)
	h[0] = 0x40 | byte(hl/4)
	if !s.ZeroLength {
		binary.BigEndian.PutUint16(h[2:], uint16(hl+len(l4)))
	}
	frag := s.FragOffset & 0x1fff
	if s.MoreFrags {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(h[6:], frag)
	h[8] = 64
	h[9] = s.Proto
	copy(h[12:], s.Src.AsSlice())
	copy(h[16:], s.Dst.AsSlice())
	copy(h[20:], opts)
	var sum uint32
	for i := 0; i < hl; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	return append(h, l4...)
}

func ipv6(s Spec, l4 []byte) []byte {
	var ext []byte
	types := append(append([]uint8(nil), s.Ext...), s.Proto)
	for i, t := range s.Ext {
		next := types[i+1]
		switch t {
		case Fragment:
			e := make([]byte, 8)
			e[0] = next
			off := s.FragOffset << 3
			if s.MoreFrags {
				off |= 1
			}
			binary.BigEndian.PutUint16(e[2:], off)
			binary.BigEndian.PutUint32(e[4:], 0x1234)
			ext = append(ext, e...)
		case AH:
			e := make([]byte, 16) // payload len 2: (2+2)*4 = 16 bytes
			e[0] = next
			e[1] = 2
			ext = append(ext, e...)
		default:
			e := make([]byte, 8) // Hdr Ext Len 0: 8 bytes, PadN
			e[0] = next
			e[2] = 1
			e[3] = 4
			ext = append(ext, e...)
		}
	}
	h := make([]byte, 40)
	h[0] = 0x60
	if !s.ZeroLength {
		binary.BigEndian.PutUint16(h[4:], uint16(len(ext)+len(l4)))
	}
	h[6] = types[0]
	h[7] = 64
	copy(h[8:], s.Src.AsSlice())
	copy(h[24:], s.Dst.AsSlice())
	return append(append(h, ext...), l4...)
}

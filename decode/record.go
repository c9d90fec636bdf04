// Package decode turns ring-buffer records into packets and writes them as
// pcap or pcapng.
package decode

import (
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podtap/podtap/loader"
)

// Direction of a packet as the file reports it.
type Direction uint8

const (
	DirUnknown Direction = iota
	DirIn
	DirOut
)

func (d Direction) String() string {
	switch d {
	case DirIn:
		return "in"
	case DirOut:
		return "out"
	}
	return "unknown"
}

// Packet is one captured packet, ready to be written.
type Packet struct {
	Time      time.Time
	Ifindex   uint32
	Hook      uint8  // loader hook: 0 ingress, 1 egress
	OrigLen   int    // length on the wire (with a re-inserted VLAN tag)
	Data      []byte // captured bytes
	Preds     uint64 // predicates that held
	CutBuffer bool   // longer than loader.MaxCapture: cut
	Followed  bool   // captured because its flow is followed (--follow)
	Handshake bool   // a TCP handshake packet kept from before the match
}

// Flags of struct pt_record (enum pt_rec_flags).
const (
	recVLANOffload = 1 << 0
	recCutBuffer   = 1 << 1
	recFollow      = 1 << 2
	recHandshake   = 1 << 3
)

// Clock converts the kernel's monotonic timestamps to wall-clock time.
type Clock struct{ offset time.Duration }

// NewClock measures the offset between CLOCK_MONOTONIC and the wall clock.
func NewClock() (*Clock, error) {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return nil, fmt.Errorf("read monotonic clock: %w", err)
	}
	return &Clock{offset: time.Duration(now.UnixNano() - ts.Nano())}, nil
}

// Wall returns the wall-clock time of a bpf_ktime_get_ns() value.
func (c *Clock) Wall(ktime uint64) time.Time {
	return time.Unix(0, int64(ktime)+int64(c.offset))
}

// ParseRecord decodes one ring-buffer record. The packet's bytes alias raw
// (no copy on the hot path): use them before raw is reused. A VLAN tag
// that the kernel kept in skb metadata is put back into the frame, as
// libpcap does (into a new buffer).
func ParseRecord(raw []byte, clock *Clock) (Packet, error) {
	if len(raw) < loader.RecordHeaderSize {
		return Packet{}, fmt.Errorf("record of %d bytes is shorter than its %d-byte header", len(raw), loader.RecordHeaderSize)
	}
	var h loader.Record
	if _, err := binary.Decode(raw, binary.NativeEndian, &h); err != nil {
		return Packet{}, fmt.Errorf("decode record header: %w", err)
	}
	body := raw[loader.RecordHeaderSize:]
	if int(h.CapLen) > len(body) {
		return Packet{}, fmt.Errorf("record says %d packet bytes but carries %d", h.CapLen, len(body))
	}
	body = body[:h.CapLen]
	p := Packet{
		Time:      clock.Wall(h.TsNs),
		Ifindex:   h.Ifindex,
		Hook:      h.Dir,
		OrigLen:   int(h.OrigLen),
		Preds:     h.Preds,
		CutBuffer: h.Flags&recCutBuffer != 0,
		Followed:  h.Flags&recFollow != 0,
		Handshake: h.Flags&recHandshake != 0,
	}
	if h.Flags&recVLANOffload != 0 && len(body) >= 12 {
		data := make([]byte, 0, len(body)+4)
		data = append(data, body[:12]...)
		// The TPID is kept in network order, so its native bytes are the wire's.
		data = binary.NativeEndian.AppendUint16(data, h.VlanProto)
		data = binary.BigEndian.AppendUint16(data, h.VlanTci)
		data = append(data, body[12:]...)
		if len(data) > loader.MaxCapture {
			data = data[:loader.MaxCapture]
		}
		p.Data = data
		p.OrigLen += 4
	} else {
		p.Data = body
	}
	return p, nil
}

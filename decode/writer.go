package decode

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"time"
	"unicode/utf8"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Interface describes one capture point, a pcapng interface.
type Interface struct {
	Name        string // e.g. "shop/web-7d9c" or "veth1a2b"
	Description string
	Filter      string
	LinkType    layers.LinkType // 0: Ethernet
}

func (i Interface) linkType() layers.LinkType {
	if i.LinkType == 0 {
		return layers.LinkTypeEthernet
	}
	return i.LinkType
}

// Stats close an interface's capture in pcapng (an Interface Statistics
// Block): packets the filter looked at and packets lost in the kernel.
type Stats struct {
	Start, End time.Time
	Received   uint64
	Dropped    uint64
}

// Writer writes packets to a capture file.
type Writer interface {
	// AddInterface declares another capture point and returns its id.
	AddInterface(Interface) (int, error)
	// WritePacket writes p as seen on interface id.
	WritePacket(id int, p Packet, dir Direction, comment string) error
	// WriteStats records an interface's totals (pcapng only).
	WriteStats(id int, s Stats) error
	// WriteNote records a timestamped comment about interface id, such as
	// a memory sample, between the packets (pcapng only).
	WriteNote(id int, t time.Time, comment string) error
	// Flush pushes buffered packets to the underlying writer.
	Flush() error
}

// pcapWriter writes classic pcap with nanosecond timestamps. It has no
// room for interfaces, directions or comments.
type pcapWriter struct {
	w *pcapgo.Writer
	f *bufio.Writer
}

// NewPcap starts a pcap file on w for packets of link type lt (0:
// Ethernet). snaplen is the largest packet length that will be written;
// it goes into the file header.
func NewPcap(w io.Writer, snaplen uint32, lt layers.LinkType) (Writer, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	pw := pcapgo.NewWriterNanos(bw)
	if err := pw.WriteFileHeader(snaplen, Interface{LinkType: lt}.linkType()); err != nil {
		return nil, fmt.Errorf("write pcap header: %w", err)
	}
	return &pcapWriter{w: pw, f: bw}, nil
}

func (p *pcapWriter) AddInterface(Interface) (int, error) { return 0, nil }

func (p *pcapWriter) WritePacket(_ int, pk Packet, _ Direction, _ string) error {
	return p.w.WritePacket(captureInfo(pk, 0), pk.Data)
}

func (p *pcapWriter) WriteStats(int, Stats) error { return nil }

func (p *pcapWriter) WriteNote(int, time.Time, string) error { return nil }

func (p *pcapWriter) Flush() error { return p.f.Flush() }

func captureInfo(p Packet, iface int) gopacket.CaptureInfo {
	return gopacket.CaptureInfo{
		Timestamp:      p.Time,
		CaptureLength:  len(p.Data),
		Length:         max(p.OrigLen, len(p.Data)),
		InterfaceIndex: iface,
	}
}

// pcapngWriter writes pcapng with one interface per capture point, the
// direction of each packet, and a comment saying why it was captured.
type pcapngWriter struct {
	w       *pcapgo.NgWriter
	raw     io.Writer // under w, for blocks pcapgo does not write
	snaplen uint32
}

// NewPcapng starts a pcapng file on w whose first interface is first.
func NewPcapng(w io.Writer, snaplen uint32, first Interface, application string) (Writer, error) {
	nw, err := pcapgo.NewNgWriterInterface(w, ngInterface(first, snaplen), pcapgo.NgWriterOptions{
		SectionInfo: pcapgo.NgSectionInfo{
			Hardware:    runtime.GOARCH,
			OS:          runtime.GOOS,
			Application: application,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("write pcapng header: %w", err)
	}
	return &pcapngWriter{w: nw, raw: w, snaplen: snaplen}, nil
}

// maxOption is the most bytes of text a pcapng option holds: its length is
// 16 bits, and if_filter spends one of them on the filter's type.
const maxOption = 0xffff - 1

// fitOption cuts s to fit a pcapng option, on a UTF-8 boundary, and marks
// the cut with an ellipsis. A longer option would corrupt the file.
func fitOption(s string) string {
	if len(s) <= maxOption {
		return s
	}
	const mark = "…"
	n := maxOption - len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

func ngInterface(i Interface, snaplen uint32) pcapgo.NgInterface {
	return pcapgo.NgInterface{
		Name:                fitOption(i.Name),
		Description:         fitOption(i.Description),
		Filter:              fitOption(i.Filter),
		OS:                  runtime.GOOS,
		LinkType:            i.linkType(),
		SnapLength:          snaplen,
		TimestampResolution: 9,
	}
}

func (p *pcapngWriter) AddInterface(i Interface) (int, error) {
	return p.w.AddInterface(ngInterface(i, p.snaplen))
}

func (p *pcapngWriter) WritePacket(id int, pk Packet, dir Direction, comment string) error {
	opts := pcapgo.NgPacketOptions{}
	switch dir {
	case DirIn:
		opts.Flags = &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionInbound}
	case DirOut:
		opts.Flags = &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionOutbound}
	}
	if comment != "" {
		opts.Comments = []string{fitOption(comment)}
	}
	return p.w.WritePacketWithOptions(captureInfo(pk, id), pk.Data, opts)
}

func (p *pcapngWriter) WriteStats(id int, s Stats) error {
	return p.w.WriteInterfaceStats(id, pcapgo.NgInterfaceStatistics{
		LastUpdate:      s.End,
		StartTime:       s.Start,
		EndTime:         s.End,
		PacketsReceived: s.Received,
		PacketsDropped:  s.Dropped,
	})
}

func (p *pcapngWriter) Flush() error { return p.w.Flush() }

// WriteNote writes an Interface Statistics Block that carries only its
// timestamp and a comment (pcapgo writes no ISB comments). Readers that do
// not look at comments skip it like any statistics block.
func (p *pcapngWriter) WriteNote(id int, t time.Time, comment string) error {
	if err := p.w.Flush(); err != nil {
		return err
	}
	text := []byte(fitOption(comment))
	pad := (4 - len(text)%4) % 4
	total := 12 + 8 + 4 + len(text) + pad + 4 + 4 // header, timestamp, option, end, trailer
	b := make([]byte, 0, total)
	le := binary.LittleEndian
	b = le.AppendUint32(b, 0x00000005) // Interface Statistics Block
	b = le.AppendUint32(b, uint32(total))
	b = le.AppendUint32(b, uint32(id))
	ns := uint64(t.UnixNano()) // the interface's resolution is nanoseconds
	b = le.AppendUint32(b, uint32(ns>>32))
	b = le.AppendUint32(b, uint32(ns))
	b = le.AppendUint16(b, 1) // opt_comment
	b = le.AppendUint16(b, uint16(len(text)))
	b = append(b, text...)
	b = append(b, make([]byte, pad)...)
	b = le.AppendUint32(b, 0) // opt_endofopt
	b = le.AppendUint32(b, uint32(total))
	_, err := p.raw.Write(b)
	return err
}

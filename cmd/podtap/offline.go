package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/podtap/podtap/decode"
	"github.com/podtap/podtap/loader"
)

// packetSource is a pcap or pcapng reader.
type packetSource interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

// openCaptureFile opens a pcap or pcapng file, told apart by its magic.
func openCaptureFile(path string) (packetSource, io.Closer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open capture file: %w", err)
	}
	br := bufio.NewReaderSize(f, 1<<16)
	magic, err := br.Peek(4)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read %s: not a pcap or pcapng file (%v)", path, err)
	}
	var src packetSource
	if bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		src, err = pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{SkipUnknownVersion: true})
	} else {
		src, err = pcapgo.NewReader(br)
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read %s: %w", path, err)
	}
	return src, f, nil
}

// asEthernet gives the frame the kernel program runs on: Ethernet as is;
// raw IP and Linux cooked captures behind a made-up Ethernet header.
func asEthernet(lt layers.LinkType, data []byte) ([]byte, bool) {
	hdr := make([]byte, 14, 14+len(data))
	switch lt {
	case layers.LinkTypeEthernet:
		return data, true
	case layers.LinkTypeLinuxSLL:
		if len(data) < 16 {
			return nil, false
		}
		copy(hdr[12:], data[14:16]) // its protocol field is an EtherType
		return append(hdr, data[16:]...), true
	case layers.LinkTypeLinuxSLL2: // tcpdump -i any writes it since 4.99
		if len(data) < 20 {
			return nil, false
		}
		copy(hdr[12:], data[0:2]) // its protocol type is an EtherType
		return append(hdr, data[20:]...), true
	}
	if len(data) < 1 {
		return nil, false
	}
	switch data[0] >> 4 {
	case 4:
		hdr[12], hdr[13] = 0x08, 0x00
	case 6:
		hdr[12], hdr[13] = 0x86, 0xdd
	}
	return append(hdr, data...), true
}

// frameOffset is how many bytes of a made-up Ethernet header the packets
// of a file of link type lt run behind.
func frameOffset(path string, lt layers.LinkType) (uint32, error) {
	switch lt {
	case layers.LinkTypeEthernet:
		return 0, nil
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6, layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2:
		return 14, nil
	}
	return 0, fmt.Errorf("%s: link type %s; podtap reads Ethernet, raw IP and Linux cooked (v1 and v2) captures", path, lt)
}

// offlineStats count what happened to the packets of a file.
type offlineStats struct {
	read     uint64
	run      uint64
	tooBig   uint64 // larger than BPF_PROG_TEST_RUN takes
	tooSmall uint64 // shorter than the headers it requires
	cutInput uint64 // stored cut short in the input file
	largest  int
}

// runOffline runs the same kernel program over every packet of a capture
// file with BPF_PROG_TEST_RUN, and writes those it sends to the ring with
// their original timestamps and lengths.
func (c *capture) runOffline(path string, src packetSource, frameOff uint32) (err error) {
	lt := src.LinkType()
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lift memlock limit: %w", err)
	}
	c.objs, err = loader.Load(loader.Options{Filter: c.prog, Snaplen: c.flags.snaplen, ScanLimit: c.flags.scanLimit,
		RingSize: c.flags.ringSize, FrameOffset: frameOff, Variant: c.variant})
	if err != nil {
		return err
	}
	defer c.objs.Close()
	rd, err := ringbuf.NewReader(c.objs.Events())
	if err != nil {
		return fmt.Errorf("open ring buffer: %w", err)
	}
	defer rd.Close()
	clock, err := decode.NewClock()
	if err != nil {
		return err
	}
	if err := c.openWriterFor([]decode.Interface{{Name: path, Description: "offline: " + path, Filter: c.prog.Text, LinkType: lt}}); err != nil {
		return err
	}
	defer func() {
		if c.out.file != nil {
			if cerr := c.out.file.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close capture file: %w", cerr)
			}
		}
	}()
	fmt.Fprintf(c.stderr, "podtap: reading %s, filter: %s\n", path, c.filterText())

	var st offlineStats
	var rec ringbuf.Record
	var readErr error
	for !c.done() && !c.gone {
		data, ci, err := src.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// Like tcpdump: what came before is filtered and written, and
			// the damage is an error.
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = errors.New("a packet or block is cut short: the file ends there, or a length in it is wrong")
			}
			readErr = fmt.Errorf("read %s after packet %d: %w; the packets before it are filtered and written", path, st.read, err)
			break
		}
		st.read++
		if ci.CaptureLength < ci.Length {
			st.cutInput++
		}
		frame, ok := asEthernet(lt, data)
		if !ok {
			st.tooSmall++
			continue
		}
		if err := c.objs.Test(frame); err != nil {
			if errors.Is(err, syscall.EINVAL) {
				// The test run takes frames up to about a page, and IP
				// frames at least as long as their IP header.
				if len(data) > 1000 {
					st.tooBig++
					st.largest = max(st.largest, len(data))
				} else {
					st.tooSmall++
				}
				continue
			}
			return fmt.Errorf("run filter on packet %d: %w", st.read, err)
		}
		st.run++
		rd.SetDeadline(time.Now())
		for {
			err := rd.ReadInto(&rec)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return fmt.Errorf("read ring buffer: %w", err)
			}
			p, err := decode.ParseRecord(rec.RawSample, clock)
			if err != nil {
				c.invalid++
				continue
			}
			// Written as read: the file's own bytes, time and length.
			p.Data = data
			if s := c.flags.snaplen; s != 0 && len(p.Data) > int(s) {
				p.Data = p.Data[:s]
			}
			p.Time = ci.Timestamp
			p.OrigLen = max(ci.Length, len(p.Data))
			comment := ""
			if c.isPcapng() {
				comment = fmt.Sprintf("podtap offline %s packet %d", path, st.read)
				if d := c.prog.Describe(p.Preds); d != "" {
					comment += "; matched: " + d
				}
			}
			if err := c.outputErr(c.writer.WritePacket(0, p, decode.DirUnknown, comment)); err != nil {
				return fmt.Errorf("write packets: %w", err)
			}
			if c.gone {
				c.orphans++
				break
			}
			c.written++
		}
	}
	if err := c.outputErr(c.writer.Flush()); err != nil {
		return fmt.Errorf("write packets: %w", err)
	}
	if c.gone {
		fmt.Fprintf(c.stderr, "podtap: the reader of standard output went away; stopped\n")
	}
	k, err := c.objs.Counters()
	if err != nil {
		return err
	}
	gone := ""
	if c.gone {
		gone = ", the rest not written (the reader went away)"
	}
	fmt.Fprintf(c.stderr, "podtap: %d packets read, %d filtered in the kernel, %d matched, %d written, %d dropped%s\n",
		st.read, st.run, k.Matched, c.written, k.Lost()+c.invalid, gone)
	var notes []string
	if st.tooBig > 0 {
		notes = append(notes, fmt.Sprintf("%d not filtered: larger than BPF_PROG_TEST_RUN takes (largest %d bytes)", st.tooBig, st.largest))
	}
	if st.tooSmall > 0 {
		notes = append(notes, fmt.Sprintf("%d not filtered: shorter than the IP header they announce", st.tooSmall))
	}
	if st.cutInput > 0 {
		notes = append(notes, fmt.Sprintf("%d stored cut short in the input: filtered on the bytes present", st.cutInput))
	}
	if len(notes) > 0 {
		fmt.Fprintf(c.stderr, "podtap: %s\n", strings.Join(notes, "; "))
	}
	return readErr
}

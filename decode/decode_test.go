package decode

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/podtap/podtap/loader"
)

// record lays out a ring record as the kernel writes it.
func record(h loader.Record, data []byte) []byte {
	h.CapLen = uint32(len(data))
	var b bytes.Buffer
	binary.Write(&b, binary.NativeEndian, h)
	b.Write(data)
	return b.Bytes()
}

func frame(n int) []byte {
	f := make([]byte, n)
	for i := range f {
		f[i] = byte(i)
	}
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	return f
}

func TestParseRecord(t *testing.T) {
	clock := &Clock{offset: time.Hour}
	f := frame(100)
	p, err := ParseRecord(record(loader.Record{TsNs: 5, Preds: 3, Ifindex: 7, OrigLen: 1500, Dir: 1}, f), clock)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Data, f) || p.OrigLen != 1500 || p.Ifindex != 7 || p.Hook != 1 || p.Preds != 3 ||
		!p.Time.Equal(time.Unix(0, 5+int64(time.Hour))) || p.CutBuffer {
		t.Errorf("parsed %+v", p)
	}
}

// TestParseRecordVLAN: a tag the driver kept in skb metadata goes back
// into the frame after the MAC addresses, TPID in network order.
func TestParseRecordVLAN(t *testing.T) {
	f := frame(60)
	var tpid [2]byte
	binary.BigEndian.PutUint16(tpid[:], 0x88a8)
	h := loader.Record{OrigLen: 60, Flags: recVLANOffload, VlanTci: 0x2000 | 42, VlanProto: binary.NativeEndian.Uint16(tpid[:])}
	p, err := ParseRecord(record(h, f), &Clock{})
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte(nil), f[:12]...), 0x88, 0xa8, 0x20, 42), f[12:]...)
	if !bytes.Equal(p.Data, want) || p.OrigLen != 64 {
		t.Errorf("got % x (orig %d), want % x (orig 64)", p.Data, p.OrigLen, want)
	}
}

func TestParseRecordErrors(t *testing.T) {
	good := record(loader.Record{OrigLen: 10}, frame(14))
	for name, raw := range map[string][]byte{
		"short header":          good[:loader.RecordHeaderSize-1],
		"fewer bytes than said": good[:len(good)-1],
	} {
		if _, err := ParseRecord(raw, &Clock{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestPcapngRoundTrip: interfaces, directions, comments and notes come
// back from a pcapng reader, and tshark reads the file.
func TestPcapngRoundTrip(t *testing.T) {
	var b bytes.Buffer
	w, err := NewPcapng(&b, 262144, Interface{Name: "shop/web", Description: "pod", Filter: "f"}, "podtap test")
	if err != nil {
		t.Fatal(err)
	}
	id2, err := w.AddInterface(Interface{Name: "shop/web-2"})
	if err != nil || id2 != 1 {
		t.Fatalf("second interface: %d, %v", id2, err)
	}
	now := time.Unix(1700000000, 123456789)
	if err := w.WriteNote(0, now, "memory of pod shop/web: working set 1.0Mi"); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(1, Packet{Time: now, OrigLen: 200, Data: frame(60)}, DirOut, "matched: x"); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(0, Packet{Time: now.Add(time.Second), OrigLen: 60, Data: frame(60)}, DirIn, ""); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteStats(0, Stats{Start: now, End: now.Add(2 * time.Second), Received: 10, Dropped: 2}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(b.Bytes()), pcapgo.NgReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, ci, opts, err := r.ReadPacketDataWithOptions()
	if err != nil {
		t.Fatal(err)
	}
	if ci.InterfaceIndex != 1 || ci.Length != 200 || len(data) != 60 || !ci.Timestamp.Equal(now) ||
		len(opts.Comments) != 1 || opts.Comments[0] != "matched: x" || opts.Flags == nil || opts.Flags.Direction != pcapgo.NgEpbFlagDirectionOutbound {
		t.Errorf("first packet: %+v %+v", ci, opts)
	}
	if _, ci, opts, err = r.ReadPacketDataWithOptions(); err != nil || ci.InterfaceIndex != 0 || opts.Flags.Direction != pcapgo.NgEpbFlagDirectionInbound {
		t.Errorf("second packet: %+v %+v %v", ci, opts, err)
	}
	if n := r.NInterfaces(); n != 2 {
		t.Errorf("%d interfaces", n)
	}
	if intf, _ := r.Interface(0); intf.Name != "shop/web" || intf.LinkType != layers.LinkTypeEthernet {
		t.Errorf("interface 0: %+v", intf)
	}

	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatal("tshark is not installed (make test installs it)")
	}
	path := filepath.Join(t.TempDir(), "x.pcapng")
	os.WriteFile(path, b.Bytes(), 0o600)
	out, err := exec.Command("tshark", "-r", path, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.comment", "-e", "pkt_comment").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "shop/web-2") {
		t.Errorf("tshark: %v\n%s", err, out)
	}
}

func TestPcapSnaplen(t *testing.T) {
	var b bytes.Buffer
	w, err := NewPcap(&b, 96, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(0, Packet{Time: time.Unix(1, 0), OrigLen: 1500, Data: frame(96)}, DirIn, "ignored"); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	r, err := pcapgo.NewReader(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if r.Snaplen() != 96 || r.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("snaplen %d linktype %v", r.Snaplen(), r.LinkType())
	}
	data, ci, err := r.ReadPacketData()
	if err != nil || len(data) != 96 || ci.Length != 1500 || ci.Timestamp.UnixNano() != 1e9 {
		t.Errorf("%v %+v", err, ci)
	}
}

// TestPcapngLongOptions: a pcapng option holds at most 65535 bytes; longer
// texts (a filter of 70,000 characters, a note, a comment) are cut to fit,
// on a UTF-8 boundary, and the file stays readable.
func TestPcapngLongOptions(t *testing.T) {
	long := strings.Repeat("é", 35000) // 70,000 bytes
	var b bytes.Buffer
	w, err := NewPcapng(&b, 262144, Interface{Name: long, Description: long, Filter: long}, "podtap test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddInterface(Interface{Name: "two", Filter: long}); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	if err := w.WriteNote(1, now, long); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(1, Packet{Time: now, OrigLen: 60, Data: frame(60)}, DirOut, long); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewNgReader(bytes.NewReader(b.Bytes()), pcapgo.NgReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, ci, opts, err := r.ReadPacketDataWithOptions()
	if err != nil {
		t.Fatalf("read the packet after long options: %v", err)
	}
	if ci.InterfaceIndex != 1 || len(opts.Comments) != 1 {
		t.Fatalf("packet: %+v %+v", ci, opts)
	}
	c := opts.Comments[0]
	if len(c) > 65535 || len(c) < 65000 || !utf8.ValidString(c) || !strings.HasPrefix(long, strings.TrimSuffix(c, "…")) {
		t.Errorf("comment of %d bytes (valid UTF-8 %v), want the start of the text cut to at most 65535", len(c), utf8.ValidString(c))
	}
	if _, _, err := r.ReadPacketData(); err != io.EOF {
		t.Errorf("after the packet: %v, want EOF", err)
	}
	if _, err := exec.LookPath("tshark"); err == nil {
		f := filepath.Join(t.TempDir(), "long.pcapng")
		if err := os.WriteFile(f, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("tshark", "-r", f).CombinedOutput(); err != nil {
			t.Errorf("tshark -r: %v\n%s", err, out)
		}
	}
}

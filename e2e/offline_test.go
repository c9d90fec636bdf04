package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

const testdata = "../../shared/testdata/pcaps"

// TestOffline filters capture files with the kernel program: the packets
// written keep their original time, bytes and link type, and packets the
// test run cannot take are reported.
func TestOffline(t *testing.T) {
	requireTool(t, "tshark")
	dir := t.TempDir()
	for _, tc := range []struct {
		file, args, display, note string
	}{
		{"zeek__http_get.pcap", "--uri /download/CHANGES.bro-aux.txt", `http.request.uri == "/download/CHANGES.bro-aux.txt"`, ""},
		{"zeek__http-vlan-0.pcap", "--contains CHANGES.bro-aux.txt", `tcp contains "CHANGES.bro-aux.txt"`, ""},
		{"zeek__http_pipelined-requests.pcap", "--uri-prefix /images/", `http.request.uri matches "^/images/"`, ""},
		{"zeek__http_261_variant-03-cl_negative.pcap", "--contains smuggled", `tcp contains "smuggled"`, ""},
		{"zeek__ipv6-http-atomic-frag.pcap", "--contains bad.html", `tcp contains "bad.html"`, ""},
		{"tcpdump__gso-ipv4.pcap", "--port 80", `tcp.port == 80 and frame.len < 3000`, "1 not filtered: larger than BPF_PROG_TEST_RUN takes (largest 7306 bytes)"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			in := filepath.Join(testdata, tc.file)
			for _, ext := range []string{".pcap", ".pcapng"} {
				out := filepath.Join(dir, tc.file+ext)
				args := append([]string{"capture", "-r", in, "-w", out}, strings.Fields(tc.args)...)
				res, err := exec.Command(podtapBin, args...).CombinedOutput()
				if err != nil {
					t.Fatalf("podtap %v: %v\n%s", args, err, res)
				}
				if tc.note != "" && !strings.Contains(string(res), tc.note) {
					t.Errorf("summary does not say %q:\n%s", tc.note, res)
				}
				fields := []string{"-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len", "-e", "frame.cap_len", "-e", "_ws.col.Protocol"}
				got := tshark(t, append([]string{"-r", out, "-o", "tcp.desegment_tcp_streams:FALSE"}, fields...)...)
				want := tshark(t, append([]string{"-r", in, "-o", "tcp.desegment_tcp_streams:FALSE", "-Y", tc.display}, fields...)...)
				if got != want {
					t.Errorf("%s: podtap wrote\n%s\ntshark -Y '%s' selects\n%s", ext, got, tc.display, want)
				}
				if tc.note == "" && got == "" {
					t.Errorf("%s: nothing written", ext)
				}
			}
		})
	}
}

func tshark(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		t.Fatalf("tshark %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// TestOfflineCooked: captures of Linux's "any" device (cooked headers, v1
// and v2; tcpdump -i any writes v2 since 4.99) are filtered as their
// Ethernet originals are.
func TestOfflineCooked(t *testing.T) {
	requireTool(t, "tshark")
	dir := t.TempDir()
	src := filepath.Join(testdata, "zeek__http_get.pcap")
	for _, lt := range []layers.LinkType{layers.LinkTypeLinuxSLL, layers.LinkTypeLinuxSLL2} {
		in := filepath.Join(dir, fmt.Sprintf("cooked-%d.pcap", lt))
		cook(t, src, in, lt)
		for _, tc := range []struct{ args, display string }{
			{"--uri /download/CHANGES.bro-aux.txt", `http.request.uri == "/download/CHANGES.bro-aux.txt"`},
			{"--contains Apache", `tcp.payload contains "Apache"`},
			{"-Y tcp.srcport==80", `tcp.srcport == 80`},
		} {
			out := filepath.Join(dir, "out.pcap")
			args := append([]string{"capture", "-r", in, "-w", out}, strings.Fields(tc.args)...)
			if res, err := exec.Command(podtapBin, args...).CombinedOutput(); err != nil {
				t.Fatalf("podtap %v: %v\n%s", args, err, res)
			}
			fields := []string{"-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len", "-e", "sll.pkttype"}
			got := tshark(t, append([]string{"-r", out}, fields...)...)
			want := tshark(t, append([]string{"-r", in, "-o", "tcp.desegment_tcp_streams:FALSE", "-Y", tc.display}, fields...)...)
			if got != want || got == "" {
				t.Errorf("%s, %s: podtap wrote\n%s\ntshark -Y '%s' selects\n%s", lt, tc.args, got, tc.display, want)
			}
		}
	}
}

// cook rewrites an Ethernet capture with Linux cooked headers of link type
// lt in place of the Ethernet ones.
func cook(t *testing.T, src, dst string, lt layers.LinkType) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	o, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	w := pcapgo.NewWriter(o)
	if err := w.WriteFileHeader(65535, lt); err != nil {
		t.Fatal(err)
	}
	for {
		data, ci, err := r.ReadPacketData()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var h []byte
		if lt == layers.LinkTypeLinuxSLL {
			h = make([]byte, 16)
			binary.BigEndian.PutUint16(h[2:], 1) // ARPHRD_ETHER
			binary.BigEndian.PutUint16(h[4:], 6)
			copy(h[6:], data[6:12])
			copy(h[14:], data[12:14])
		} else {
			h = make([]byte, 20)
			copy(h[0:], data[12:14])
			binary.BigEndian.PutUint32(h[4:], 2) // ifindex
			binary.BigEndian.PutUint16(h[8:], 1) // ARPHRD_ETHER
			h[11] = 6
			copy(h[12:], data[6:12])
		}
		pkt := append(h, data[14:]...)
		ci.CaptureLength, ci.Length = len(pkt), ci.Length-14+len(h)
		if err := w.WritePacket(ci, pkt); err != nil {
			t.Fatal(err)
		}
	}
}

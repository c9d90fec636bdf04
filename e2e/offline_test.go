package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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

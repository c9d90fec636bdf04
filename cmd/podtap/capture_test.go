package main

import (
	"errors"
	"strings"
	"testing"
)

// Misuse of capture's flags is refused before anything is loaded or
// attached: exit 2, one line that names the flag or the offending part.
func TestCaptureCLIUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"capture", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"capture", "-i"}, "flag needs an argument"},
		{[]string{"capture", "--contains", "x"}, "give exactly one target"},
		{[]string{"capture", "-i", "lo", "--netns", "x"}, "give exactly one target"},
		{[]string{"capture", "-i", "lo", "-c", "-1"}, "--count -1: want 0 or more"},
		{[]string{"capture", "-i", "lo", "--duration", "-1s"}, "--duration -1s: want 0 or more"},
		{[]string{"capture", "-i", "lo", "--port", "65536"}, `invalid argument "65536" for "--port"`},
		{[]string{"capture", "-i", "lo", "--snaplen", "262145"}, "--snaplen 262145: at most 262144"},
		{[]string{"capture", "-i", "lo", "--buffer-size", "4095"}, "--buffer-size 4095: want a power of two from 4096"},
		{[]string{"capture", "-i", "lo", "--buffer-size", "12288"}, "--buffer-size 12288: want a power of two"},
		// A 2 GiB ring is 2 GiB of locked kernel memory, mapped twice.
		{[]string{"capture", "-i", "lo", "--buffer-size", "2147483648"}, "--buffer-size 2147483648: want a power of two from 4096 to 1073741824"},
		{[]string{"capture", "-i", "lo", "--attach", "ebpf"}, "ebpf"},
		{[]string{"capture", "-i", "lo", "--follow-packets", "3"}, "need --follow"},
		{[]string{"capture", "-i", "lo", "-Y", "tcp contains"}, "-Y: column 13: unexpected end of the filter"},
		{[]string{"capture", "-i", "lo", "-Y", "tcp.flags.syn == 1"}, "tcp.flags.syn"},
		{[]string{"capture", "-i", "lo", "-Y", "tcp", "udp"}, "give the display filter once"},
		{[]string{"capture", "-i", "lo", "--host", "300.1.1.1"}, "300.1.1.1"},
		{[]string{"capture", "-i", "lo", "-n", "shop"}, "--namespace needs a POD or -l SELECTOR"},
		{[]string{"capture", "-A", "-i", "lo"}, "-A needs -l SELECTOR"},
		// Flags of live captures that offline mode would otherwise ignore.
		{[]string{"capture", "-r", "x.pcap", "--follow"}, "--follow is for live captures"},
		{[]string{"capture", "-r", "x.pcap", "--duration", "5s"}, "--duration is for live captures"},
		{[]string{"capture", "-r", "x.pcap", "--attach", "tcx"}, "--attach is for live captures"},
		{[]string{"capture", "-r", "x.pcap", "--mem-interval", "2s"}, "--mem-interval is for live captures"},
		{[]string{"capture", "-r", "x.pcap", "--mem-cgroup", "/x"}, "--mem-cgroup is for live captures"},
		{[]string{"capture", "-r", "x.pcap", "--mem-file", "m.jsonl"}, "--mem-file is for live captures"},
	} {
		code, stdout, stderr := memRun(tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "podtap: ") || stdout != "" {
			t.Errorf("%q: exit %d, stderr %q, stdout %q; want exit 2 and one line containing %q", tc.args, code, stderr, stdout, tc.want)
		}
	}
}

// TestErrorLine: joined errors, such as a write error and the flush after
// it, print as one line.
func TestErrorLine(t *testing.T) {
	err := errors.Join(errors.New("write packets: broken pipe"), errors.New("close capture file: x"))
	if got, want := errorLine(err), "podtap: write packets: broken pipe; close capture file: x"; got != want {
		t.Errorf("errorLine = %q, want %q", got, want)
	}
}

package main

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/podtap/podtap/internal/frames"
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

// writePcap writes a pcap of n small Ethernet/IPv4/UDP frames.
func writePcap(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriterNanos(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		frame := frames.Build(frames.Spec{Proto: 17, SrcPort: 1000, DstPort: 53, Payload: []byte("hello")})
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(1700000000+int64(i), 0), CaptureLength: len(frame), Length: len(frame)}
		if err := w.WritePacket(ci, frame); err != nil {
			t.Fatal(err)
		}
	}
}

// countPcap counts the packets of a pcap file, failing on damage.
func countPcap(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	n := 0
	for {
		_, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			t.Fatalf("%s after packet %d: %v", path, n, err)
		}
		n++
	}
}

// TestOutputFileSafety: podtap never destroys a file it was not asked to
// write, nor changes the mode of anything but a capture file it writes.
func TestOutputFileSafety(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.pcap")
	writePcap(t, in, 3)
	keep := filepath.Join(dir, "keep.pcap")
	writePcap(t, keep, 2)

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		// A typo in -r: the output is not touched.
		{[]string{"capture", "-r", filepath.Join(dir, "typo.pcap"), "-w", keep}, 1, "no such file"},
		// -w names the input.
		{[]string{"capture", "-r", in, "-w", in}, 2, "is the file -r reads"},
		{[]string{"capture", "-r", keep, "-w", filepath.Join(dir, ".", "keep.pcap")}, 2, "is the file -r reads"},
		// The memory file names the capture file, or stdout twice.
		{[]string{"capture", "-i", "lo", "-w", keep, "--mem-file", keep}, 2, "is where -w writes the packets"},
		{[]string{"capture", "-i", "lo", "-w", "-", "--mem-file", "-"}, 2, "standard output carries the packets"},
	} {
		code, _, stderr := memRun(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
	if n := countPcap(t, keep); n != 2 {
		t.Errorf("keep.pcap has %d packets after the refusals, want its 2", n)
	}
	if n := countPcap(t, in); n != 3 {
		t.Errorf("in.pcap has %d packets after the refusals, want its 3", n)
	}
}

// TestOutputDeviceMode: -w to a device (as /dev/null) writes to it and
// leaves its mode alone; a regular file that existed is made 0600.
func TestOutputDeviceMode(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.pcap")
	writePcap(t, in, 3)
	null := filepath.Join(dir, "null")
	if err := unix.Mknod(null, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatalf("mknod: %v", err)
	}
	if err := os.Chmod(null, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	if code, _, stderr := memRun("capture", "-r", in, "-w", null); code != 0 {
		t.Fatalf("-w %s: exit %d: %s", null, code, stderr)
	}
	if fi, err := os.Stat(null); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("the device's mode after -w: %v %v, want 0666", fi.Mode(), err)
	}
	old := filepath.Join(dir, "old.pcap")
	if err := os.WriteFile(old, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := memRun("capture", "-r", in, "-w", old); code != 0 {
		t.Fatalf("-w %s: exit %d: %s", old, code, stderr)
	}
	if fi, err := os.Stat(old); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("an existing capture file's mode after -w: %v %v, want 0600", fi.Mode(), err)
	}
}

// TestOfflineDamagedInput: a file cut short, or with a broken record,
// gives the packets before the damage, a valid output file and exit 1.
func TestOfflineDamagedInput(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.pcap")
	writePcap(t, in, 3)
	b, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.pcap")
	if err := os.WriteFile(cut, b[:len(b)-5], 0o600); err != nil {
		t.Fatal(err)
	}
	// The third record says it holds 2 GiB.
	huge := filepath.Join(dir, "huge.pcap")
	rec := (len(b) - 24) / 3
	bad := append([]byte(nil), b...)
	binary.LittleEndian.PutUint32(bad[24+2*rec+8:], 0x7fffffff)
	if err := os.WriteFile(huge, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{cut, huge} {
		out := filepath.Join(dir, "out.pcap")
		code, _, stderr := memRun("capture", "-r", src, "-w", out)
		if code != 1 || !strings.Contains(stderr, "after packet 2") || !strings.Contains(stderr, "2 written") {
			t.Errorf("-r %s: exit %d, %q; want exit 1, 2 written, and the damage after packet 2", filepath.Base(src), code, stderr)
		}
		if n := countPcap(t, out); n != 2 {
			t.Errorf("-r %s: %d packets written, want the 2 before the damage", filepath.Base(src), n)
		}
	}
}

func requireRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (BPF, mknod)")
	}
}

// TestNotANetns: --netns with a path that is no network namespace says so.
func TestNotANetns(t *testing.T) {
	file := filepath.Join(t.TempDir(), "plain")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, "/proc/self/ns/mnt"} {
		code, _, stderr := memRun("capture", "--netns", p, "-w", filepath.Join(t.TempDir(), "x.pcap"))
		if code != 1 || stderr != "podtap: "+p+" is not a network namespace (give a name from ip netns list, or a path such as /proc/PID/ns/net)\n" {
			t.Errorf("--netns %s: exit %d, %q", p, code, stderr)
		}
	}
}

// TestFilterTakenAsPod: "podtap capture tcp" takes tcp as a POD (pods may
// have any name); when that fails, the error says how to filter instead.
func TestFilterTakenAsPod(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	code, _, stderr := memRun("capture", "tcp", "-w", filepath.Join(t.TempDir(), "x.pcap"))
	if code != 1 || !strings.Contains(stderr, `"tcp" was taken as a POD; to filter with it, give a target first`) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, %q", code, stderr)
	}
	code, _, stderr = memRun("capture", "web-7d9c", "-w", filepath.Join(t.TempDir(), "x.pcap"))
	if code != 1 || strings.Contains(stderr, "taken as a POD") {
		t.Errorf("a pod name: exit %d, %q; want the Kubernetes error alone", code, stderr)
	}
}

// TestMemFileSafety: the memory file is checked before the capture file is
// touched, may not be the capture file by another name, and needs memory
// sampling to be on.
func TestMemFileSafety(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	keep := filepath.Join(dir, "keep.pcap")
	writePcap(t, keep, 2)
	link := filepath.Join(dir, "link")
	if err := os.Symlink("fresh.pcap", link); err != nil {
		t.Fatal(err)
	}
	hard := filepath.Join(dir, "hard")
	if err := os.Link(keep, hard); err != nil {
		t.Fatal(err)
	}
	live := []string{"capture", "-i", "lo", "--duration", "100ms", "--mem-cgroup", "/sys/fs/cgroup/memory"}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-w", keep, "--mem-file", filepath.Join(dir, "nodir", "m.jsonl")}, 1, "create memory file"},
		{[]string{"-w", keep, "--mem-file", dir}, 1, "create memory file"},
		{[]string{"-w", filepath.Join(dir, "fresh.pcap"), "--mem-file", link}, 2, "is where -w writes the packets"},
		{[]string{"-w", keep, "--mem-file", hard}, 2, "is where -w writes the packets"},
		{[]string{"-w", keep, "--mem-interval", "0", "--mem-file", "m.jsonl"}, 2, "--mem-file records memory, which --mem-interval 0 turns off"},
		{[]string{"-w", keep, "--mem-interval", "0", "--mem-cgroup", "/x"}, 2, "--mem-cgroup records memory"},
	} {
		code, _, stderr := memRun(append(append([]string(nil), live...), tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
		if tc.code == 1 {
			if n := countPcap(t, keep); n != 2 {
				t.Errorf("%q: keep.pcap has %d packets, want its 2", tc.args, n)
			}
		}
	}
	// A --mem-cgroup that is no cgroup is refused before -w is touched.
	code, _, stderr := memRun("capture", "-i", "lo", "--duration", "100ms", "-w", keep, "--mem-cgroup", filepath.Join(dir, "nocgroup"))
	if code != 1 || !strings.Contains(stderr, "--mem-cgroup") {
		t.Errorf("--mem-cgroup that does not exist: exit %d, %q", code, stderr)
	}
	if n := countPcap(t, keep); n != 2 {
		t.Errorf("keep.pcap has %d packets after a bad --mem-cgroup, want its 2", n)
	}
	// --mem-file - writes the samples to standard output.
	code, stdout, stderr := memRun("capture", "-i", "lo", "--duration", "1200ms", "--mem-interval", "500ms", "--mem-cgroup", "/sys/fs/cgroup/memory", "-w", filepath.Join(dir, "s.pcap"), "--mem-file", "-")
	if code != 0 || !strings.Contains(stdout, `"working_set_bytes"`) || !strings.Contains(stderr, "in standard output") {
		t.Errorf("--mem-file -: exit %d, stdout %.200q, stderr %q", code, stdout, stderr)
	}
}

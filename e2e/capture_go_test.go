package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/podtap/podtap/filter"
)

// TestCaptureMatchesReference is TestCaptureAgreesWithTshark without
// tshark and tcpdump, so that it runs in hack/vm's kernels too: a packet
// socket on the pod's host veth takes the full capture, and each of
// podtap's files must hold exactly the frames of it that the filter's
// plain-Go reference (filter.Program.Match) selects. podtap's files are
// read with gopacket's pcapgo and every packet is decoded.
func TestCaptureMatchesReference(t *testing.T) {
	pod := newPod(t)
	serveHTTP(t, pod, 8080)
	dir := t.TempDir()
	uri := filepath.Join(dir, "uri.pcap")
	contains := filepath.Join(dir, "contains.pcapng")

	full := sniff(t, pod.HostIdx)
	p1 := start(t, podtapBin, "capture", "--netns", pod.Name, "--uri", "/mytest", "-w", uri)
	p1.waitFor(t, "capturing on")
	p2 := start(t, podtapBin, "capture", "--netns", pod.Name, "--contains", "lbtest", "-w", contains)
	p2.waitFor(t, "capturing on")
	m := startLine.FindStringSubmatch(p2.output())
	if m == nil {
		t.Fatalf("no [MODE, VARIANT scan] on podtap's start line:\n%s", p2.output())
	}
	auto := m[2]

	// One more podtap per scan variant, forced: those worse than the one
	// podtap chose must work, and better ones must not load (else podtap
	// did not choose the best this kernel has).
	rank := map[string]int{"iter": 0, "loop": 1, "bounded": 2}
	forced := map[string]*proc{}
	for _, v := range []string{"iter", "loop", "bounded"} {
		f := filepath.Join(dir, "contains-"+v+".pcapng")
		p := start(t, podtapBin, "capture", "--netns", pod.Name, "--scan-loop", v, "--contains", "lbtest", "-w", f)
		err := p.waitForEither(t, "capturing on", "load program")
		switch {
		case err == nil && rank[v] < rank[auto]:
			t.Errorf("--scan-loop %s loads, yet podtap chose %s by itself", v, auto)
		case err != nil && rank[v] >= rank[auto]:
			t.Errorf("--scan-loop %s does not load where podtap chose %s: %v", v, auto, err)
		case err != nil:
			t.Logf("--scan-loop %s: not on this kernel: %v", v, err)
		}
		if err == nil {
			forced[f] = p
			t.Logf("PODTAP_FACT scan_forced=%s", v)
		}
	}

	big := strings.Repeat("0123456789abcdef", 6000) // ~96 KB: GSO super-packets
	for _, v6 := range []bool{false, true} {
		u := func(path string) string { return pod.PodURL(v6, 8080, path) }
		request(t, "GET", u("/mytest"), "")
		request(t, "GET", u("/other"), "")
		request(t, "GET", u("/mytest?id=42"), "")
		request(t, "GET", u("/mytest/deeper"), "")
		request(t, "POST", u("/mytest"), "lbtest in a small body")
		request(t, "POST", u("/upload"), "no marker")
		request(t, "GET", u("/other?q=lbtest"), "")
		request(t, "POST", u("/big"), big+"lbtest at the very end")
		request(t, "POST", u("/big2"), big[:3000]+"lbtest"+big)
		request(t, "PUT", u("/mytest"), "")
	}
	p1.stop(t)
	p2.stop(t)
	for _, p := range forced {
		p.stop(t)
	}
	time.Sleep(300 * time.Millisecond)
	ref := full.stop(t)

	methods := filter.MethodSet(filter.Methods)
	for _, tc := range []struct {
		file  string
		expr  filter.Expr
		check func(payload []byte) bool // what a decoded packet's TCP payload shows
		want  int
	}{
		{uri, filter.URI("/mytest"), func(p []byte) bool {
			line, _, _ := bytes.Cut(p, []byte("\r\n"))
			f := bytes.Fields(line)
			return len(f) == 3 && string(f[1]) == "/mytest"
		}, 6},
		{contains, filter.Contains("lbtest"), func(p []byte) bool { return bytes.Contains(p, []byte("lbtest")) }, 0},
	} {
		name := filepath.Base(tc.file)
		prog, err := filter.Compile(tc.expr, "")
		if err != nil {
			t.Fatal(err)
		}
		var want [][]byte
		for _, f := range ref {
			if ok, _ := prog.Match(filter.Frame{Data: f}, methods); ok {
				want = append(want, f)
			}
		}
		got := readCapture(t, tc.file)
		for i, f := range got {
			pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
			if el := pkt.ErrorLayer(); el != nil {
				t.Errorf("%s: packet %d does not decode: %v", name, i+1, el.Error())
				continue
			}
			tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if tcp == nil || !tc.check(tcp.Payload) {
				t.Errorf("%s: packet %d is not what the filter asks for: %s", name, i+1, describeFrame(f))
			}
			if ok, _ := prog.Match(filter.Frame{Data: f}, methods); !ok {
				t.Errorf("%s: packet %d does not match the reference filter: %s", name, i+1, describeFrame(f))
			}
		}
		if !sameFrames(got, want) {
			t.Errorf("%s: podtap wrote %d packets:\n%s\nthe reference filter selects %d of the %d in the full capture:\n%s",
				name, len(got), describeFrames(got), len(want), len(ref), describeFrames(want))
		}
		if tc.want > 0 && len(got) != tc.want {
			t.Errorf("%s: %d packets, want %d", name, len(got), tc.want)
		}
		if len(got) == 0 {
			t.Errorf("%s: no packets", name)
		}
		t.Logf("%s: %d packets, the reference filter's selection of the %d in the full capture", name, len(got), len(ref))
		if st, err := os.Stat(tc.file); err != nil {
			t.Error(err)
		} else if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, st.Mode().Perm())
		}
	}
	wantContains := readCapture(t, contains)
	for f := range forced {
		if got := readCapture(t, f); !sameFrames(got, wantContains) {
			t.Errorf("%s differs from the default scan's file:\n%s\nwant\n%s", filepath.Base(f), describeFrames(got), describeFrames(wantContains))
		}
	}
	// The large bodies travel as GSO super-packets bigger than any MTU;
	// the pattern at their end must have been found.
	if !slices.ContainsFunc(wantContains, func(f []byte) bool { return len(f) > 1514 }) {
		t.Errorf("no super-packet (more than 1514 bytes) among the --contains matches")
	}
	if !strings.Contains(p1.output(), "6 matched, 6 written, 0 dropped") {
		t.Errorf("podtap --uri summary: %s", p1.output())
	}
}

// readCapture reads every packet of a pcap or pcapng file with pcapgo,
// and demands Ethernet frames kept whole.
func readCapture(t *testing.T, name string) [][]byte {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type reader interface {
		ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
		LinkType() layers.LinkType
	}
	var r reader
	snaplen := uint32(1<<32 - 1)
	if strings.HasSuffix(name, ".pcapng") {
		r, err = pcapgo.NewNgReader(f, pcapgo.DefaultNgReaderOptions)
	} else {
		var pr *pcapgo.Reader
		pr, err = pcapgo.NewReader(f)
		if err == nil {
			r, snaplen = pr, pr.Snaplen()
		}
	}
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	if lt := r.LinkType(); lt != layers.LinkTypeEthernet {
		t.Fatalf("%s: link type %v, want Ethernet", name, lt)
	}
	var frames [][]byte
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return frames
		}
		if err != nil {
			t.Fatalf("read %s after %d packets: %v", name, len(frames), err)
		}
		if ci.CaptureLength != len(data) || ci.Length != len(data) || uint32(len(data)) > snaplen {
			t.Errorf("%s: packet %d: %d bytes kept of %d (%d read; file snaplen %d), want the whole packet",
				name, len(frames)+1, ci.CaptureLength, ci.Length, len(data), snaplen)
		}
		frames = append(frames, slices.Clone(data))
	}
}

// sameFrames: the same frames, each as often, in any order (podtap's
// CPUs and the packet socket may order simultaneous frames differently).
func sameFrames(a, b [][]byte) bool {
	key := func(fs [][]byte) []string {
		s := make([]string, len(fs))
		for i, f := range fs {
			s[i] = string(f)
		}
		slices.Sort(s)
		return s
	}
	return slices.Equal(key(a), key(b))
}

func describeFrames(fs [][]byte) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  " + describeFrame(f) + "\n")
	}
	return b.String()
}

// describeFrame names a frame the way tsharkFields does.
func describeFrame(f []byte) string {
	pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	s := fmt.Sprintf("%d bytes", len(f))
	if nl := pkt.NetworkLayer(); nl != nil {
		s += " " + nl.NetworkFlow().String()
	}
	if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		s += fmt.Sprintf(" tcp %d->%d seq %d len %d", tcp.SrcPort, tcp.DstPort, tcp.Seq, len(tcp.Payload))
	}
	return s
}

// packetSocket is a full capture of one interface, both directions, with
// an AF_PACKET socket: what tcpdump does, in Go.
type packetSocket struct {
	fd       int
	stopping atomic.Bool
	done     chan struct{}
	mu       sync.Mutex
	frames   [][]byte
	err      error
}

func htons(v uint16) uint16 { return binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, v)) }

func sniff(t *testing.T, ifindex int) *packetSocket {
	t.Helper()
	// Protocol 0 receives nothing until bind names the interface, so no
	// other interface's frames slip in first.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	s := &packetSocket{fd: fd, done: make(chan struct{})}
	for _, o := range []struct {
		name string
		err  error
	}{
		{"SO_RCVBUFFORCE", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)},
		{"SO_RCVTIMEO", unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})},
		{"bind", unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex})},
	} {
		if o.err != nil {
			unix.Close(fd)
			t.Fatalf("packet socket %s: %v", o.name, o.err)
		}
	}
	go s.read()
	t.Cleanup(func() {
		if !s.stopping.Load() {
			s.stopping.Store(true)
			<-s.done
			unix.Close(fd)
		}
	})
	return s
}

func (s *packetSocket) read() {
	defer close(s.done)
	buf := make([]byte, 1<<18) // more than a 64 KiB GSO packet and its headers
	for {
		n, _, err := unix.Recvfrom(s.fd, buf, unix.MSG_TRUNC)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			if s.stopping.Load() {
				return
			}
			continue
		case err != nil:
			s.err = err
			return
		case n > len(buf):
			s.err = fmt.Errorf("a %d-byte frame does not fit the %d-byte buffer", n, len(buf))
			return
		}
		s.mu.Lock()
		s.frames = append(s.frames, slices.Clone(buf[:n]))
		s.mu.Unlock()
	}
}

// stop ends the capture and returns its frames; the kernel must not have
// dropped any.
func (s *packetSocket) stop(t *testing.T) [][]byte {
	t.Helper()
	s.stopping.Store(true)
	<-s.done
	stats, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	unix.Close(s.fd)
	if s.err != nil {
		t.Fatalf("full capture: %v", s.err)
	}
	if err != nil {
		t.Fatalf("full capture statistics: %v", err)
	}
	if stats.Drops != 0 {
		t.Fatalf("the full capture is incomplete: the kernel dropped %d of %d frames", stats.Drops, stats.Packets)
	}
	return s.frames
}

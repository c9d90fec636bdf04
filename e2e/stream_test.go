package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStreamToTshark: -w - streams pcap that tshark reads live from a pipe
// (as wireshark -k -i - does): a request shows up in tshark's output while
// podtap still runs, and podtap exits 0 at SIGINT.
func TestStreamToTshark(t *testing.T) {
	requireTool(t, "tshark")
	pod := newPod(t)
	serveHTTP(t, pod, 8080)
	podtap := exec.Command(podtapBin, "capture", "--netns", pod.Name, "--uri", "/mytest", "-w", "-", "--mem-interval", "0")
	ts := exec.Command("tshark", "-r", "-", "-l", "-T", "fields", "-e", "http.request.uri")
	pipe, err := podtap.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ts.Stdin = pipe
	out, err := ts.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &proc{lines: make(chan string, 100)}
	podtap.Stderr = stderr
	for _, c := range []*exec.Cmd{podtap, ts} {
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	stderr.cmd = podtap
	stderr.waitFor(t, "capturing on")
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	request(t, "GET", pod.PodURL(false, 8080, "/mytest"), "")
	select {
	case l := <-lines:
		if l != "/mytest" {
			t.Errorf("tshark printed %q, want /mytest", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tshark printed nothing while podtap ran: the stream is not flushed")
	}
	podtap.Process.Signal(syscall.SIGINT)
	if err := podtap.Wait(); err != nil {
		t.Fatalf("podtap at SIGINT: %v\n%s", err, stderr.output())
	}
	if err := ts.Wait(); err != nil {
		t.Errorf("tshark: %v (the stream did not end cleanly)", err)
	}
}

// TestMemorySeries: while capturing a pod that allocates memory, podtap
// records its memory on the packets' clock: JSON lines beside the file,
// notes in the pcapng, and the comment of the next packet.
func TestMemorySeries(t *testing.T) {
	requireTool(t, "tshark")
	pod := newPod(t)
	if err := pod.MakeCgroup(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A process in the pod's cgroup and namespace that grows its memory.
	if _, err := pod.Start(ctx, "sh", "-c", "x=; for i in $(seq 40); do x=$x$(head -c 200000 /dev/zero | tr '\\0' a); sleep 0.05; done; sleep 60"); err != nil {
		t.Fatal(err)
	}
	serveHTTP(t, pod, 8080)
	dir := t.TempDir()
	out := filepath.Join(dir, "mem.pcapng")
	p := start(t, podtapBin, "capture", "--netns", pod.Name, "--uri", "/mytest", "--mem-interval", "200ms", "-w", out)
	p.waitFor(t, "capturing on")
	start := time.Now()
	for i := 0; i < 6; i++ {
		request(t, "GET", pod.PodURL(false, 8080, "/mytest"), "")
		time.Sleep(250 * time.Millisecond)
	}
	end := time.Now()
	p.stop(t)
	if !strings.Contains(p.output(), "memory of netns "+pod.Name+" ("+pod.Cgroup+"): working set min") {
		t.Errorf("no memory summary for the pod's cgroup:\n%s", p.output())
	}

	f, err := os.Open(filepath.Join(dir, "mem.mem.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type sample struct {
		Kind       string `json:"kind"`
		UnixNano   int64  `json:"unix_nano"`
		Cgroup     string `json:"cgroup"`
		Usage      uint64 `json:"usage_bytes"`
		WorkingSet uint64 `json:"working_set_bytes"`
	}
	var samples []sample
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var one sample
		if err := json.Unmarshal(sc.Bytes(), &one); err != nil {
			t.Fatalf("side file line %q: %v", sc.Text(), err)
		}
		samples = append(samples, one)
	}
	if len(samples) < 5 {
		t.Fatalf("%d memory samples in 1.5 s at 200 ms", len(samples))
	}
	var grew bool
	for i, s := range samples {
		if s.Kind != "memory" || s.Cgroup != pod.Cgroup || s.Usage == 0 || s.WorkingSet > s.Usage {
			t.Errorf("sample %d: %+v", i, s)
		}
		if i > 0 && s.UnixNano <= samples[i-1].UnixNano {
			t.Errorf("sample %d is not later than the one before", i)
		}
		if i > 0 && s.WorkingSet > samples[0].WorkingSet {
			grew = true
		}
	}
	if first, last := time.Unix(0, samples[0].UnixNano), time.Unix(0, samples[len(samples)-1].UnixNano); first.Before(start.Add(-2*time.Second)) || last.After(end.Add(2*time.Second)) {
		t.Errorf("samples from %v to %v, capture from %v to %v: not on the same clock", first, last, start, end)
	}
	if !grew {
		t.Error("the working set of a process growing its memory never grew")
	}
	// The packets carry the latest sample in their comments, and the
	// notes sit between them in the pcapng, in time order.
	comments := tsharkFields(t, out, `frame.comment contains "memory of"`)
	if len(comments) == 0 {
		t.Error("no packet comment carries a memory sample")
	}
}

// TestStreamReaderGone: when the reader of -w - goes away (Wireshark
// closed), podtap stops by itself, whether packets still come or not, and
// exits 0 with its summary on one line each, not with a write error.
func TestStreamReaderGone(t *testing.T) {
	for _, traffic := range []bool{false, true} {
		name := "idle"
		if traffic {
			name = "traffic"
		}
		t.Run(name, func(t *testing.T) {
			pod := newPod(t)
			serveHTTP(t, pod, 8080)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			podtap := exec.Command(podtapBin, "capture", "--netns", pod.Name, "--port", "8080", "-w", "-", "--mem-interval", "0")
			podtap.Stdout = w
			stderr := &proc{lines: make(chan string, 100)}
			podtap.Stderr = stderr
			podtap.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := podtap.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { podtap.Process.Kill(); podtap.Wait() })
			w.Close()
			stderr.cmd = podtap
			stderr.waitFor(t, "capturing on")
			// Read the file header, as Wireshark does, then go away.
			if _, err := io.ReadFull(r, make([]byte, 24)); err != nil {
				t.Fatalf("read the pcap header: %v", err)
			}
			r.Close()
			if traffic {
				request(t, "GET", pod.PodURL(false, 8080, "/mytest"), "")
			}
			done := make(chan error, 1)
			go func() { done <- podtap.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("podtap: %v, want exit 0\n%s", err, stderr.output())
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("podtap still runs 5 s after its reader went away\n%s", stderr.output())
			}
			out := stderr.output()
			if !strings.Contains(out, "the reader of standard output went away") || strings.Contains(out, "broken pipe") ||
				strings.Count(out, "packets seen") != 1 {
				t.Errorf("stderr:\n%s\nwant a note that the reader went away, one summary, no write error", out)
			}
		})
	}
}

// Package e2e runs the podtap binary against sandbox pods with real
// traffic, and checks its files with tshark.
package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podtap/podtap/internal/demoserver"
	"github.com/podtap/podtap/internal/kubetest"
	"github.com/podtap/podtap/internal/sandbox"
)

var podtapBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		// PODTAP_BIN: a podtap built beforehand (hack/vm's kernels have
		// no Go toolchain); otherwise build one.
		podtapBin = os.Getenv("PODTAP_BIN")
		if podtapBin == "" {
			dir, err := os.MkdirTemp("", "podtap-e2e-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			podtapBin = filepath.Join(dir, "podtap")
			out, err := exec.Command("go", "build", "-o", podtapBin, "../cmd/podtap").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "build podtap: %v\n%s", err, out)
				return 1
			}
		}
		// The Kubernetes tests' API server; without PODTAP_KUBE_ASSETS
		// they skip and the others run.
		return kubetest.Main(m)
	}())
}

// proc is a background process whose stderr is watched.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	buf   bytes.Buffer // all of stderr
	part  []byte       // an unfinished line
	lines chan string
}

// Write collects stderr; exec.Cmd.Wait returns only after the last write.
func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	p.part = append(p.part, b...)
	for {
		i := bytes.IndexByte(p.part, '\n')
		if i < 0 {
			break
		}
		select {
		case p.lines <- string(p.part[:i]):
		default:
		}
		p.part = p.part[i+1:]
	}
	return len(b), nil
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), lines: make(chan string, 1000)}
	p.cmd.Stderr = p
	p.cmd.Stdout = io.Discard
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	})
	return p
}

func (p *proc) waitFor(t *testing.T, substr string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, substr) {
				return
			}
		case <-timeout:
			t.Fatalf("%s: no %q on stderr within 20s; stderr:\n%s", p.cmd.Path, substr, p.output())
		}
	}
}

// waitForEither waits for ok on stderr, or returns an error when the
// process prints fail or exits first.
func (p *proc) waitForEither(t *testing.T, ok, fail string) error {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, ok) {
				return nil
			}
			if strings.Contains(l, fail) {
				p.cmd.Wait()
				return fmt.Errorf("%s", l)
			}
		case <-timeout:
			t.Fatalf("%s: neither %q nor %q on stderr within 20s; stderr:\n%s", p.cmd.Path, ok, fail, p.output())
		}
	}
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

// stop sends SIGINT and waits; the process must exit 0.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("%s %v: %v; stderr:\n%s", p.cmd.Path, p.cmd.Args[1:], err, p.output())
	}
}

func newPod(t *testing.T) *sandbox.Pod {
	t.Helper()
	pod, err := sandbox.New("e2e")
	if err != nil {
		t.Fatalf("sandbox pod: %v", err)
	}
	t.Cleanup(func() {
		if err := pod.Close(); err != nil {
			t.Errorf("remove sandbox pod: %v", err)
		}
	})
	return pod
}

func serveHTTP(t *testing.T, pod *sandbox.Pod, port int) {
	t.Helper()
	l, err := pod.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	go demoserver.Serve(l)
	t.Cleanup(func() { l.Close() })
}

// request sends one HTTP request on a fresh connection.
func request(t *testing.T, method, url, body string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body = nil
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: (&net.Dialer{}).DialContext}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// tsharkFields lists, one line per frame, fields that identify a packet.
func tsharkFields(t *testing.T, file, displayFilter string) []string {
	t.Helper()
	args := []string{"-r", file, "-o", "tcp.desegment_tcp_streams:FALSE",
		"-T", "fields", "-e", "frame.len", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "tcp.seq_raw", "-e", "tcp.len"}
	if displayFilter != "" {
		args = append(args, "-Y", displayFilter)
	}
	out, err := exec.Command("tshark", args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("tshark %v: %v %s", args, err, stderr)
	}
	s := strings.TrimSpace(string(out))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("PODTAP_VM") != "" {
			t.Skipf("%s is not in hack/vm's kernels; TestCaptureMatchesReference checks capture there without it", name)
		}
		t.Fatalf("%s is not installed (make test installs it with hack/deps.sh)", name)
	}
}

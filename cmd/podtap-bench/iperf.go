package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/podtap/podtap/internal/sandbox"
)

// A capture running beside iperf3: nothing, podtap, or tcpdump.
type captureConfig struct {
	name string
	args func(pod *sandbox.Pod, out string) []string // nil: no capture
	tool string                                      // "podtap" or "tcpdump"
}

func captureConfigs(o options) []captureConfig {
	podtap := func(extra ...string) func(*sandbox.Pod, string) []string {
		return func(pod *sandbox.Pod, out string) []string {
			return append([]string{o.podtap, "capture", "--netns", pod.Name, "-w", out, "-q"}, extra...)
		}
	}
	return []captureConfig{
		{name: "no capture"},
		{name: "podtap --port 9 (no match)", args: podtap("--port", "9"), tool: "podtap"},
		{name: "podtap --contains 16 B (no match)", args: podtap("--contains", needle), tool: "podtap"},
		{name: "podtap, every packet, to tmpfs", args: podtap(), tool: "podtap"},
		{name: "podtap, every packet, to tmpfs, 32 MiB ring", args: podtap("--buffer-size", "33554432"), tool: "podtap"},
		{name: "tcpdump -w, every packet, to tmpfs", args: func(pod *sandbox.Pod, out string) []string {
			return []string{"tcpdump", "-i", pod.HostIf, "-w", out, "-Z", "root"}
		}, tool: "tcpdump"},
	}
}

type runResult struct {
	gbps    float64
	dropped uint64
	rssKB   uint64
}

func iperfTable(o options) error {
	if _, err := os.Stat(o.podtap); err != nil {
		return fmt.Errorf("podtap binary: %w (make build)", err)
	}
	tmp, err := os.MkdirTemp("/dev/shm", "podtap-bench-")
	if err != nil {
		return fmt.Errorf("tmpfs for capture files: %w", err)
	}
	defer os.RemoveAll(tmp)
	pod, err := sandbox.New("bench")
	if err != nil {
		return err
	}
	defer pod.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := pod.Start(ctx, "iperf3", "-s", "-B", pod.PodIP4.String()); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond)

	configs := captureConfigs(o)
	results := make([][]runResult, len(configs))
	for r := 0; r < o.rounds; r++ {
		// Interleave, and rotate the order so no config always runs first.
		for k := range configs {
			i := (k + r) % len(configs)
			res, err := runOnce(o, pod, configs[i], filepath.Join(tmp, "out.pcap"))
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", configs[i].name, r+1, err)
			}
			results[i] = append(results[i], res)
			fmt.Fprintf(os.Stderr, "round %d/%d %-40s %6.2f Gbit/s dropped %d\n", r+1, o.rounds, configs[i].name, res.gbps, res.dropped)
		}
	}
	base := median(results[0], func(r runResult) float64 { return r.gbps })
	var rows [][]string
	for i, c := range configs {
		med := median(results[i], func(r runResult) float64 { return r.gbps })
		// Each run against the no-capture run of its own round, which
		// cancels the slow drifts of a shared machine.
		var paired []float64
		for r := range results[i] {
			paired = append(paired, results[i][r].gbps/results[0][r].gbps)
		}
		pairedMed := median(paired, func(x float64) float64 { return x })
		var runs, drops []string
		var rss uint64
		for _, r := range results[i] {
			runs = append(runs, fmt.Sprintf("%.1f", r.gbps))
			drops = append(drops, strconv.FormatUint(r.dropped, 10))
			rss = max(rss, r.rssKB)
		}
		d, m := "-", "-"
		if c.tool != "" {
			d = strings.Join(drops, " ")
			m = fmt.Sprintf("%.1f MB", float64(rss)/1024)
		}
		rows = append(rows, []string{c.name, fmt.Sprintf("%.2f", med), fmt.Sprintf("%.1f %%", 100*med/base), fmt.Sprintf("%.1f %%", 100*pairedMed), strings.Join(runs, " "), d, m})
	}
	table(fmt.Sprintf("iperf3 over a veth, %d interleaved rounds of %d s", o.rounds, o.seconds),
		[]string{"capture", "median Gbit/s", "of no capture (medians)", "of no capture (same round, median)", "runs", "dropped per run", "peak RSS"}, rows)
	return nil
}

func runOnce(o options, pod *sandbox.Pod, c captureConfig, out string) (runResult, error) {
	var res runResult
	var cap *exec.Cmd
	var stderr syncBuffer
	if c.args != nil {
		args := c.args(pod, out)
		cap = exec.Command(args[0], args[1:]...)
		cap.Stderr = &stderr
		if err := cap.Start(); err != nil {
			return res, err
		}
		ready := map[string]string{"podtap": "capturing on", "tcpdump": "listening on"}[c.tool]
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(stderr.String(), ready) {
			if time.Now().After(deadline) {
				cap.Process.Kill()
				cap.Wait()
				return res, fmt.Errorf("%s did not start: %s", c.tool, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	iperf := exec.Command("iperf3", "-c", pod.PodIP4.String(), "-t", strconv.Itoa(o.seconds), "-J")
	outJSON, err := iperf.Output()
	if cap != nil {
		res.rssKB = peakRSS(cap.Process.Pid)
		cap.Process.Signal(syscall.SIGINT)
		if werr := cap.Wait(); werr != nil && err == nil {
			err = fmt.Errorf("%s: %v: %s", c.tool, werr, stderr.String())
		}
		os.Remove(out)
	}
	if err != nil {
		return res, err
	}
	var j struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(outJSON, &j); err != nil {
		return res, fmt.Errorf("iperf3 output: %w", err)
	}
	res.gbps = j.End.SumReceived.BitsPerSecond / 1e9
	switch c.tool {
	case "podtap":
		res.dropped = firstNumber(stderr.String(), `(\d+) dropped`)
	case "tcpdump":
		res.dropped = firstNumber(stderr.String(), `(\d+) packets dropped by kernel`)
	}
	return res, nil
}

// syncBuffer is a bytes.Buffer that exec's copying goroutine may write
// while another goroutine reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func firstNumber(s, re string) uint64 {
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// peakRSS reads VmHWM of a process, in kB.
func peakRSS(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return firstNumber(string(b), `VmHWM:\s+(\d+) kB`)
}

func median[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	sort.Float64s(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

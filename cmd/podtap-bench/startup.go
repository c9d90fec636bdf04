package main

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/podtap/podtap/internal/sandbox"
)

// startupTable: the time from starting podtap to its programs being
// attached (the "capturing on" line), without a Kubernetes lookup.
func startupTable(o options) error {
	pod, err := sandbox.New("bench")
	if err != nil {
		return err
	}
	defer pod.Close()
	var rows [][]string
	for _, c := range []struct {
		name string
		args []string
	}{
		{"--port 9", []string{"--port", "9"}},
		{"--uri /mytest", []string{"--uri", "/mytest"}},
		{"--contains 16 B", []string{"--contains", needle}},
		{`-Y with 8 patterns, 8 URI tests, 16 more tests`, []string{"-Y", largestDisplayFilter()}},
		{"--contains 16 B --scan-loop bounded", []string{"--contains", needle, "--scan-loop", "bounded"}},
	} {
		var times []time.Duration
		for i := 0; i < 5; i++ {
			args := append([]string{"capture", "--netns", pod.Name, "-w", "/dev/null", "-q", "--mem-interval", "0"}, c.args...)
			cmd := exec.Command(o.podtap, args...)
			var stderr syncBuffer
			cmd.Stderr = &stderr
			start := time.Now()
			if err := cmd.Start(); err != nil {
				return err
			}
			for !strings.Contains(stderr.String(), "capturing on") {
				if time.Since(start) > 20*time.Second {
					cmd.Process.Kill()
					cmd.Wait()
					return fmt.Errorf("%s: podtap did not start: %s", c.name, stderr.String())
				}
				time.Sleep(time.Millisecond)
			}
			times = append(times, time.Since(start))
			cmd.Process.Signal(syscall.SIGINT)
			cmd.Wait()
		}
		med := median(times, func(d time.Duration) float64 { return float64(d) })
		rows = append(rows, []string{c.name, fmt.Sprintf("%.0f ms", med/1e6)})
	}
	table("Start-up: podtap started to programs attached (median of 5, no Kubernetes lookup)",
		[]string{"filter", "time"}, rows)
	return nil
}

// largestDisplayFilter is a display filter at the kernel program's limits.
func largestDisplayFilter() string {
	var parts []string
	for i := 0; i < 8; i++ {
		parts = append(parts, fmt.Sprintf(`tcp contains "needle-number-%02d-%s"`, i, strings.Repeat("x", 40)))
	}
	for i := 0; i < 8; i++ {
		parts = append(parts, fmt.Sprintf(`http.request.uri == "/path/%d/%s"`, i, strings.Repeat("y", 100)))
	}
	for i := 0; i < 16; i++ {
		parts = append(parts, fmt.Sprintf("tcp.port == %d", 1000+i))
	}
	return strings.Join(parts, " or ")
}

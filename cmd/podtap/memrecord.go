package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/podtap/podtap/decode"
	"github.com/podtap/podtap/mem"
	"github.com/podtap/podtap/target"
)

// memRecorder samples a capture point's memory cgroup while podtap
// captures, on the packets' clock: into the capture (a pcapng note, and
// the comment of the next packet written for that point) and into the
// JSON-lines side file.
type memRecorder struct {
	dir      string // cgroup directory
	target   string
	id       int // pcapng interface
	interval time.Duration
	next     time.Time
	pending  string // for the next packet's comment
	samples  int
	min, max uint64
	last     mem.Stats
	failed   error // the first failed read; sampling stops there
}

// memLog is the JSON-lines side file; nil writes nothing.
type memLog struct {
	name string   // for the summary
	f    *os.File // nil for standard output
	w    *bufio.Writer
	out  io.Writer // under w
}

// memSampleJSON is one line of the side file.
type memSampleJSON struct {
	Kind     string `json:"kind"` // "memory"
	Time     string `json:"time"`
	UnixNano int64  `json:"unix_nano"`
	Target   string `json:"target"`
	memStatsJSON
	KubectlTop string `json:"kubectl_top"`
}

// memCgroupFor finds the memory cgroup to record for a capture: the one
// given, the process's, or the deepest cgroup holding every process of the
// network namespace (a pod's cgroup when it has several containers).
func memCgroupFor(f *captureFlags) (string, error) {
	switch {
	case f.memCgroup != "":
		if _, err := mem.Read(f.memCgroup); err != nil {
			return "", err
		}
		return f.memCgroup, nil
	case f.pid > 0:
		return mem.CgroupOfPID(f.pid)
	case f.netns != "":
		pids, err := target.ProcessesInNetns(target.NetnsPath(f.netns))
		if err != nil {
			return "", err
		}
		if len(pids) == 0 {
			return "", errors.New("no process runs in the network namespace")
		}
		var dirs []string
		for _, pid := range pids {
			d, err := mem.CgroupOfPID(pid)
			if err == nil {
				dirs = append(dirs, d)
			}
		}
		if len(dirs) == 0 {
			return "", fmt.Errorf("no memory cgroup found for processes %v", pids)
		}
		return commonDir(dirs), nil
	}
	return "", nil
}

func commonDir(dirs []string) string {
	common := strings.Split(filepath.Clean(dirs[0]), "/")
	for _, d := range dirs[1:] {
		parts := strings.Split(filepath.Clean(d), "/")
		n := 0
		for n < len(common) && n < len(parts) && common[n] == parts[n] {
			n++
		}
		common = common[:n]
	}
	return strings.Join(common, "/")
}

// openMemLog creates the side file; path "" means none, "-" standard
// output.
func openMemLog(path string, stdout io.Writer) (*memLog, error) {
	switch path {
	case "":
		return nil, nil
	case "-":
		return &memLog{name: "standard output", w: bufio.NewWriter(stdout), out: stdout}, nil
	}
	f, err := createPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("create memory file: %w", err)
	}
	return &memLog{name: path, f: f, w: bufio.NewWriter(f), out: f}, nil
}

func (l *memLog) write(v any) {
	if l == nil {
		return
	}
	b, _ := json.Marshal(v)
	l.w.Write(append(b, '\n'))
}

func (l *memLog) close() error {
	if l == nil {
		return nil
	}
	err := l.w.Flush()
	if l.f != nil {
		if cerr := l.f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("write memory file: %w", err)
	}
	return nil
}

// sideFileFor names the side file of a capture file: out.pcap -> out.mem.jsonl.
func sideFileFor(out string) string {
	return strings.TrimSuffix(out, filepath.Ext(out)) + ".mem.jsonl"
}

// maybeSample takes a sample when one is due.
func (m *memRecorder) maybeSample(now time.Time, w decode.Writer, log *memLog) {
	if m == nil || m.failed != nil || now.Before(m.next) {
		return
	}
	m.next = now.Add(m.interval)
	s, err := mem.Read(m.dir)
	if err != nil {
		m.failed = err
		return
	}
	m.samples++
	if m.samples == 1 || s.WorkingSet < m.min {
		m.min = s.WorkingSet
	}
	m.max = max(m.max, s.WorkingSet)
	m.last = s
	line := fmt.Sprintf("memory of %s at %s: working set %s (kubectl top %s), usage %s, inactive file %s",
		m.target, now.Format("15:04:05.000"), mem.Human(s.WorkingSet), mem.KubectlTop(s.WorkingSet), mem.Human(s.Usage), mem.Human(s.InactiveFile))
	if !s.Unlimited {
		line += ", limit " + mem.Human(s.Limit)
	}
	m.pending = line
	w.WriteNote(m.id, now, line)
	log.write(memSampleJSON{
		Kind: "memory", Time: now.Format(time.RFC3339Nano), UnixNano: now.UnixNano(), Target: m.target,
		memStatsJSON: statsJSON(s), KubectlTop: mem.KubectlTop(s.WorkingSet),
	})
}

// sampleNow takes a sample whether or not one is due.
func (m *memRecorder) sampleNow(now time.Time, w decode.Writer, log *memLog) {
	if m != nil {
		m.next = time.Time{}
		m.maybeSample(now, w, log)
	}
}

// takePending returns the sample not yet attached to a packet.
func (m *memRecorder) takePending() string {
	if m == nil {
		return ""
	}
	p := m.pending
	m.pending = ""
	return p
}

func (m *memRecorder) summary(w io.Writer, log *memLog) {
	if m == nil {
		return
	}
	if m.samples > 0 {
		fmt.Fprintf(w, "podtap: memory of %s (%s): working set min %s, max %s, last %s (kubectl top %s), %d samples",
			m.target, m.dir, mem.Human(m.min), mem.Human(m.max), mem.Human(m.last.WorkingSet), mem.KubectlTop(m.last.WorkingSet), m.samples)
		if log != nil {
			fmt.Fprintf(w, " in %s", log.name)
		}
		fmt.Fprintln(w)
	}
	if m.failed != nil {
		fmt.Fprintf(w, "podtap: memory sampling of %s stopped: %v\n", m.target, m.failed)
	}
}

// memFileFor is where memory samples go: --mem-file, else beside a -w
// file that is (or will be) a regular file, else nowhere.
func memFileFor(f *captureFlags) string {
	if f.memFile != "" || f.write == "" || f.write == "-" {
		return f.memFile
	}
	if fi, err := os.Stat(f.write); err == nil && !fi.Mode().IsRegular() {
		return "" // not beside -w /dev/null
	}
	return sideFileFor(f.write)
}

// sameAs reports whether the memory log writes where the packets go: the
// same file by another name (a link, /dev/stdout).
func (l *memLog) sameAs(o *output) bool {
	if l == nil {
		return false
	}
	a, erra := statOf(l.out)
	b, errb := statOf(o.w)
	return erra == nil && errb == nil && os.SameFile(a, b)
}

func statOf(w io.Writer) (os.FileInfo, error) {
	f, ok := w.(*os.File)
	if !ok {
		return nil, errors.New("not a file")
	}
	return f.Stat()
}

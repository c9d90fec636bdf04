package mem

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// ErrNotPod is returned by ReadPod for a directory with no container
// cgroups under it.
var ErrNotPod = errors.New("no container cgroups under it")

// Definition says what a pod total is made of.
type Definition string

const (
	// PodCgroup: the pod-level cgroup's own files. They already include
	// every container and the sandbox, so nothing is added to them.
	PodCgroup Definition = "pod cgroup"
	// SumOfContainers: the app containers' figures added up (the sandbox
	// left out, as metrics-server does), used when the pod-level cgroup
	// cannot be read.
	SumOfContainers Definition = "sum of containers"
)

// Container is one container cgroup of a pod.
type Container struct {
	ID      string // container ID taken from the cgroup directory name
	Runtime string // "containerd", "cri-o" or "docker" when the name tells; "" for a bare ID
	Sandbox bool   // the pod's sandbox (pause) container
	Stats   Stats  // Stats.Dir is the container's cgroup directory
}

// Pod is one reading of a pod's memory.
type Pod struct {
	Dir        string     // the pod-level cgroup directory
	UID        string     // the pod UID from Dir's name, "" if the name does not carry one
	Definition Definition // what Total is
	// Total is the pod cgroup's own reading (PodCgroup) or the field-wise
	// sum of the app containers (SumOfContainers). In a sum, a field is
	// present only if every container has it, WorkingSet is the sum of the
	// containers' working sets, and the limit is the sum of their limits
	// if all have one, else unlimited.
	Total Stats
	// PodCgroupErr says why the pod-level cgroup was not used when
	// Definition is SumOfContainers.
	PodCgroupErr error
	Containers   []Container // app containers, in cgroup name order
	Sandboxes    []Container // sandbox containers, shown apart and never summed
}

// TopBytes is the sum of the app containers' working sets: what
// metrics-server reports for the pod and `kubectl top pod` shows, whatever
// the pod total's definition. The sandbox is not part of it.
func (p *Pod) TopBytes() uint64 {
	var sum uint64
	for _, c := range p.Containers {
		sum += c.Stats.WorkingSet
	}
	return sum
}

// ReadPod reads a pod-level cgroup directory and the container cgroups
// directly under it. appContainerIDs, if any (bare or as containerStatus
// IDs like "containerd://<id>"), are the pod's app containers: every other
// container cgroup is then the sandbox. Without them, a container cgroup is
// the sandbox when one of its processes has a command line whose first
// word's base name is "pause". A container that exits while being read is
// left out. ReadPod returns ErrNotPod when dir has no container cgroups.
func ReadPod(dir string, appContainerIDs []string) (Pod, error) {
	v, err := detect(dir)
	if err != nil {
		return Pod{}, fmt.Errorf("read memory of cgroup %s: %w", dir, err)
	}
	return readPod(dir, appContainerIDs, v, os.ReadFile, "/proc")
}

func readPod(dir string, appIDs []string, v Version, rf readFileFunc, procRoot string) (Pod, error) {
	// Until container cgroups are found, dir is not known to be a pod.
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = ErrGone
		}
		return Pod{}, fmt.Errorf("read memory of cgroup %s: %w", dir, err)
	}
	p, err := readPodEntries(dir, entries, appIDs, v, rf, procRoot)
	if errors.Is(err, ErrNotPod) {
		return Pod{}, fmt.Errorf("read memory of cgroup %s as a pod: %w", dir, err)
	}
	if err != nil {
		return Pod{}, fmt.Errorf("read memory of pod cgroup %s: %w", dir, err)
	}
	return p, nil
}

func readPodEntries(dir string, entries []os.DirEntry, appIDs []string, v Version, rf readFileFunc, procRoot string) (Pod, error) {
	p := Pod{Dir: dir}
	p.UID, _, _ = ParseCgroupPath(dir)

	apps := make(map[string]bool, len(appIDs))
	for _, s := range appIDs {
		if _, id, ok := ParseContainerID(s); ok {
			s = id
		}
		apps[s] = true
	}

	found := false
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		runtime, id, ok := parseContainerCgroupName(e.Name())
		if !ok {
			continue
		}
		found = true
		cdir := filepath.Join(dir, e.Name())
		s, err := read(cdir, v, rf)
		if errors.Is(err, ErrGone) {
			continue // the container exited while we looked
		}
		if err != nil {
			return Pod{}, err
		}
		c := Container{ID: id, Runtime: runtime, Stats: s}
		if len(apps) > 0 {
			c.Sandbox = !apps[id]
		} else {
			c.Sandbox = runsPause(cdir, rf, procRoot)
		}
		if c.Sandbox {
			p.Sandboxes = append(p.Sandboxes, c)
		} else {
			p.Containers = append(p.Containers, c)
		}
	}
	if !found {
		return Pod{}, ErrNotPod
	}

	total, err := read(dir, v, rf)
	switch {
	case err == nil:
		p.Definition, p.Total = PodCgroup, total
	case errors.Is(err, ErrGone):
		return Pod{}, ErrGone
	default:
		p.Definition, p.Total, p.PodCgroupErr = SumOfContainers, sumContainers(dir, v, p.Containers), err
	}
	return p, nil
}

// sumContainers adds up the app containers' figures (see Pod.Total).
func sumContainers(dir string, v Version, cs []Container) Stats {
	t := Stats{Dir: dir, Version: v, Present: 1<<NumFields - 1}
	limited := len(cs) > 0
	for _, c := range cs {
		s := c.Stats
		t.Usage += s.Usage
		t.WorkingSet += s.WorkingSet
		if s.Unlimited {
			limited = false
		}
		t.Limit += s.Limit
		t.Present &= s.Present
		for f := Field(0); f < NumFields; f++ {
			*t.field(f) += *s.field(f)
		}
	}
	if len(cs) == 0 {
		t.Present = 0
	}
	for f := Field(0); f < NumFields; f++ {
		if !t.Present.Has(f) {
			*t.field(f) = 0
		}
	}
	if !limited {
		t.Limit, t.Unlimited = 0, true
	}
	return t
}

// runsPause reports whether a process in the cgroup has a command whose
// base name is "pause", as the Kubernetes sandbox container's does.
func runsPause(cdir string, rf readFileFunc, procRoot string) bool {
	procs, err := rf(cdir + "/cgroup.procs")
	if err != nil {
		return false
	}
	for line := range bytes.SplitSeq(procs, []byte{'\n'}) {
		pid, err := strconv.Atoi(string(bytes.TrimSpace(line)))
		if err != nil || pid <= 0 {
			continue
		}
		cmdline, err := rf(procRoot + "/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil || len(cmdline) == 0 {
			continue
		}
		argv0, _, _ := bytes.Cut(cmdline, []byte{0})
		if filepath.Base(string(argv0)) == "pause" {
			return true
		}
	}
	return false
}

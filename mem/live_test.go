package mem

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests use this machine's real cgroup v1 memory hierarchy. They
// compare what Read reports with the kernel's files, read independently.

// kernelView is a cgroup v1 memory reading made the plain way, as a
// reference for Read.
type kernelView struct {
	usage uint64
	limit uint64
	kmem  string // "" if the file is absent
	stat  map[string]uint64
}

func readKernelV1(t *testing.T, dir string) kernelView {
	t.Helper()
	num := func(name string) uint64 {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	k := kernelView{usage: num("memory.usage_in_bytes"), limit: num("memory.limit_in_bytes"), stat: map[string]uint64{}}
	if b, err := os.ReadFile(filepath.Join(dir, "memory.kmem.usage_in_bytes")); err == nil {
		k.kmem = strings.TrimSpace(string(b))
	}
	b, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("memory.stat line %q: %v", line, err)
		}
		k.stat[f[0]] = n
	}
	return k
}

func sameKernelView(a, b kernelView) bool {
	if a.usage != b.usage || a.limit != b.limit || a.kmem != b.kmem || len(a.stat) != len(b.stat) {
		return false
	}
	for k, v := range a.stat {
		if b.stat[k] != v {
			return false
		}
	}
	return true
}

// readStable calls Read between two identical kernel readings, so that the
// comparison is with the kernel's files "at the same moment".
func readStable(t *testing.T, dir string) (Stats, kernelView) {
	t.Helper()
	for try := 0; try < 50; try++ {
		before := readKernelV1(t, dir)
		s, err := Read(dir)
		if err != nil {
			t.Fatal(err)
		}
		after := readKernelV1(t, dir)
		if sameKernelView(before, after) {
			return s, before
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("memory figures of %s never held still across a Read", dir)
	return Stats{}, kernelView{}
}

// checkAgainstKernel demands that every figure Read gave equals the
// kernel's file or hierarchical memory.stat key, that absent keys are
// reported absent, and that the working set is usage - total_inactive_file.
func checkAgainstKernel(t *testing.T, s Stats, k kernelView) {
	t.Helper()
	if s.Version != V1 {
		t.Errorf("Version = %v, want v1", s.Version)
	}
	if s.Usage != k.usage {
		t.Errorf("Usage = %d, memory.usage_in_bytes = %d", s.Usage, k.usage)
	}
	v1keys := map[Field]string{
		Anon: "total_rss", File: "total_cache", ActiveAnon: "total_active_anon", InactiveAnon: "total_inactive_anon",
		ActiveFile: "total_active_file", InactiveFile: "total_inactive_file", MappedFile: "total_mapped_file", Shmem: "total_shmem",
	}
	for f, key := range v1keys {
		want, inKernel := k.stat[key]
		got, ok := s.Value(f)
		if ok != inKernel || got != want {
			t.Errorf("%v = %d (present %v), memory.stat %s = %d (present %v)", f, got, ok, key, want, inKernel)
		}
	}
	for _, f := range []Field{Sock, Slab, SlabReclaimable, SlabUnreclaimable} {
		if s.Has(f) {
			t.Errorf("%v reported on cgroup v1, whose memory.stat has no such key", f)
		}
	}
	if got, ok := s.Value(Kernel); ok != (k.kmem != "") || (ok && strconv.FormatUint(got, 10) != k.kmem) {
		t.Errorf("Kernel = %d (present %v), memory.kmem.usage_in_bytes = %q", got, ok, k.kmem)
	}
	var want uint64
	if in := k.stat["total_inactive_file"]; in < k.usage {
		want = k.usage - in
	}
	if s.WorkingSet != want {
		t.Errorf("WorkingSet = %d, want memory.usage_in_bytes %d - total_inactive_file %d = %d",
			s.WorkingSet, k.usage, k.stat["total_inactive_file"], want)
	}
	pageRoundedMax := uint64(math.MaxInt64) &^ uint64(os.Getpagesize()-1)
	if unlimited := k.limit >= pageRoundedMax; s.Unlimited != unlimited || (!unlimited && s.Limit != k.limit) {
		t.Errorf("Limit = %d, Unlimited = %v; memory.limit_in_bytes = %d", s.Limit, s.Unlimited, k.limit)
	}
}

func inRange(t *testing.T, what string, got, lo, hi uint64) {
	t.Helper()
	if got < lo || got > hi {
		t.Errorf("%s = %d (%s), want between %s and %s", what, got, Human(got), Human(lo), Human(hi))
	}
}

func TestMemLiveV1MatchesKernel(t *testing.T) {
	root := liveV1Root(t)
	dir := makeCgroup(t, root, uniqueName("podtap-test"))
	const anon, file = 64 << 20, 32 << 20
	startHelper(t, dir, "podtap-mem-helper", anon, file)

	s, k := readStable(t, dir)
	checkAgainstKernel(t, s, k)
	if !s.Unlimited {
		t.Errorf("a new cgroup should be unlimited, got Limit = %d", s.Limit)
	}
	inRange(t, "Anon (total_rss)", s.Anon, anon, anon+24<<20)
	inRange(t, "File (total_cache)", s.File, file, file+16<<20)
	inRange(t, "ActiveFile+InactiveFile", s.ActiveFile+s.InactiveFile, file, s.File)
	inRange(t, "WorkingSet", s.WorkingSet, anon, s.Usage)
	if s.Usage+1<<20 < s.Anon+s.File {
		t.Errorf("Usage %d is below anon %d + file %d", s.Usage, s.Anon, s.File)
	}
	t.Logf("usage %s, working set %s, anon %s, file %s (active %s, inactive %s), kernel %s",
		Human(s.Usage), Human(s.WorkingSet), Human(s.Anon), Human(s.File), Human(s.ActiveFile), Human(s.InactiveFile), Human(s.Kernel))

	// A real limit is reported as is, with the working set as a share of it.
	const limit = 1 << 30
	if err := os.WriteFile(filepath.Join(dir, "memory.limit_in_bytes"), []byte(strconv.Itoa(limit)), 0); err != nil {
		t.Fatal(err)
	}
	s, k = readStable(t, dir)
	checkAgainstKernel(t, s, k)
	pct, ok := s.LimitPercent()
	if s.Unlimited || s.Limit != limit || !ok || pct != float64(s.WorkingSet)/limit*100 {
		t.Errorf("after setting a 1Gi limit: Limit = %d, Unlimited = %v, LimitPercent = %v, %v", s.Limit, s.Unlimited, pct, ok)
	}
}

func TestMemLiveCgroupOfPID(t *testing.T) {
	root := liveV1Root(t)
	dir := makeCgroup(t, root, uniqueName("podtap-test"), "nested dir")
	h := startHelper(t, dir, "podtap-mem-helper", 0, 0)

	got, err := CgroupOfPID(h.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if got != dir {
		t.Errorf("CgroupOfPID(helper) = %q, want %q", got, dir)
	}

	// Our own memory cgroup, wherever it is: it must list our PID.
	self, err := CgroupOfPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	procs, err := os.ReadFile(filepath.Join(self, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(os.Getpid())) {
		t.Errorf("CgroupOfPID(self) = %s, whose cgroup.procs does not list pid %d", self, os.Getpid())
	}
	if v, err := DetectVersion(self); err != nil || v != V1 {
		t.Errorf("DetectVersion(%s) = %v, %v; want v1 (memory is a v1 controller here)", self, v, err)
	}

	// A process that does not exist.
	_, err = CgroupOfPID(1 << 30)
	if err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Errorf("CgroupOfPID(no such pid) error = %v, want one saying no such process", err)
	}
}

func TestMemLiveGone(t *testing.T) {
	root := liveV1Root(t)

	// Removed before the read.
	dir := makeCgroup(t, root, uniqueName("podtap-test"))
	if err := syscall.Rmdir(dir); err != nil {
		t.Fatal(err)
	}
	_, err := Read(dir)
	if !errors.Is(err, ErrGone) {
		t.Fatalf("Read of a removed cgroup: %v, want ErrGone", err)
	}
	if want := "read memory of cgroup " + dir + ": cgroup no longer exists"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}

	// Removed between two of its files: the kernel then answers ENOENT.
	dir = makeCgroup(t, root, uniqueName("podtap-test"))
	reads := 0
	removeAfterFirst := func(name string) ([]byte, error) {
		reads++
		if reads == 2 {
			if err := syscall.Rmdir(dir); err != nil {
				t.Fatal(err)
			}
		}
		return os.ReadFile(name)
	}
	if _, err := read(dir, V1, removeAfterFirst); !errors.Is(err, ErrGone) || strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("cgroup removed between reads: %v, want a one-line ErrGone", err)
	}

	// Removed after a file was opened and before it was read: ENODEV.
	dir = makeCgroup(t, root, uniqueName("podtap-test"))
	removeWhileOpen := func(name string) ([]byte, error) {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, err := f.Read(buf)
		return buf[:n], err
	}
	if _, err := read(dir, V1, removeWhileOpen); !errors.Is(err, ErrGone) {
		t.Errorf("cgroup removed while a file was open: %v, want ErrGone", err)
	}
}

func TestMemDetectVersion(t *testing.T) {
	root := liveV1Root(t)
	if v, err := DetectVersion(root); err != nil || v != V1 {
		t.Errorf("DetectVersion(%s) = %v, %v; want v1", root, v, err)
	}

	// The cgroup2 mount, found in mountinfo; on this hybrid machine it has
	// no memory controller, but it is still v2.
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var v2mount string
	for _, line := range strings.Split(string(info), "\n") {
		pre, post, _ := strings.Cut(line, " - ")
		if f := strings.Fields(pre); len(f) >= 5 && strings.HasPrefix(post, "cgroup2 ") {
			v2mount = f[4]
			break
		}
	}
	if v2mount == "" {
		t.Fatal("no cgroup2 mount on this machine")
	}
	if v, err := DetectVersion(v2mount); err != nil || v != V2 {
		t.Errorf("DetectVersion(%s) = %v, %v; want v2", v2mount, v, err)
	}

	// A plain directory is neither, whatever its name says.
	tmp := filepath.Join(t.TempDir(), "sys", "fs", "cgroup", "memory")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = DetectVersion(tmp)
	if !errors.Is(err, ErrNotCgroup) || !strings.HasPrefix(err.Error(), "detect cgroup version of "+tmp+": not on a cgroup filesystem (filesystem magic 0x") {
		t.Errorf("DetectVersion(temp dir) error = %v", err)
	}
	if _, err := Read(tmp); !errors.Is(err, ErrNotCgroup) {
		t.Errorf("Read(temp dir) error = %v, want ErrNotCgroup", err)
	}
	if _, err := DetectVersion(filepath.Join(tmp, "missing")); !errors.Is(err, ErrGone) {
		t.Errorf("DetectVersion(missing dir) error = %v, want ErrGone", err)
	}

	// A v1 directory of another controller is not a memory cgroup.
	for _, other := range []string{"cpu", "pids"} {
		d := filepath.Join(filepath.Dir(root), other)
		if v, err := DetectVersion(d); err != nil || v != V1 {
			continue
		}
		if _, err := Read(d); !errors.Is(err, ErrNoMemory) {
			t.Errorf("Read(%s) error = %v, want ErrNoMemory", d, err)
		}
		break
	}
}

func TestMemLivePod(t *testing.T) {
	root := liveV1Root(t)
	uid := "1a2b3c4d-0000-4000-8000-" + randomHex(12)
	appID, pauseID := randomHex(64), randomHex(64)
	pod := makeCgroup(t, root, uniqueName("podtap-test"), "kubepods", "burstable", "pod"+uid)
	appDir := makeCgroup(t, pod, appID)
	pauseDir := makeCgroup(t, pod, pauseID)
	makeCgroup(t, pod, "crio-conmon-"+randomHex(64)) // not a container
	startHelper(t, appDir, "/usr/local/bin/app", 16<<20, 8<<20)
	startHelper(t, pauseDir, "/pause", 4<<20, 0)

	check := func(name string, p Pod, wantApp, wantSandbox string) {
		t.Helper()
		if p.UID != uid {
			t.Errorf("%s: UID = %q, want %q", name, p.UID, uid)
		}
		if p.Definition != PodCgroup {
			t.Errorf("%s: Definition = %q, want %q", name, p.Definition, PodCgroup)
		}
		if len(p.Containers) != 1 || p.Containers[0].ID != wantApp || len(p.Sandboxes) != 1 || p.Sandboxes[0].ID != wantSandbox {
			t.Fatalf("%s: containers %v, sandboxes %v; want app %s, sandbox %s", name, p.Containers, p.Sandboxes, wantApp, wantSandbox)
		}
		if p.TopBytes() != p.Containers[0].Stats.WorkingSet {
			t.Errorf("%s: TopBytes = %d, want the app container's working set %d", name, p.TopBytes(), p.Containers[0].Stats.WorkingSet)
		}
	}

	// Sandbox found by its command line.
	var p Pod
	var k kernelView
	for try := 0; ; try++ {
		before := readKernelV1(t, pod)
		var err error
		p, err = ReadPod(pod, nil)
		if err != nil {
			t.Fatal(err)
		}
		k = readKernelV1(t, pod)
		if sameKernelView(before, k) {
			break
		}
		if try == 50 {
			t.Fatal("pod memory never held still")
		}
	}
	check("by cmdline", p, appID, pauseID)
	// The pod total is the pod cgroup's own reading, not the pod plus its
	// children: it equals the kernel's pod-level files exactly.
	checkAgainstKernel(t, p.Total, k)
	children := p.Containers[0].Stats.Usage + p.Sandboxes[0].Stats.Usage
	if p.Total.Usage < children || p.Total.Usage >= children+p.Total.Usage/2 {
		t.Errorf("pod usage %d vs containers' %d: want the pod to include its children once", p.Total.Usage, children)
	}
	inRange(t, "app Anon", p.Containers[0].Stats.Anon, 16<<20, 32<<20)
	inRange(t, "sandbox Anon", p.Sandboxes[0].Stats.Anon, 4<<20, 16<<20)

	// Sandbox found from the app container IDs, which win over the command
	// line: naming the pause cgroup as the app makes the other the sandbox.
	p, err := ReadPod(pod, []string{"containerd://" + appID})
	if err != nil {
		t.Fatal(err)
	}
	check("by IDs", p, appID, pauseID)
	p, err = ReadPod(pod, []string{pauseID})
	if err != nil {
		t.Fatal(err)
	}
	check("by swapped IDs", p, pauseID, appID)

	// A container cgroup is not a pod.
	if _, err := ReadPod(appDir, nil); !errors.Is(err, ErrNotPod) {
		t.Errorf("ReadPod(container dir) error = %v, want ErrNotPod", err)
	}
}

func TestMemReadAllocations(t *testing.T) {
	root := liveV1Root(t)
	dir := makeCgroup(t, root, uniqueName("podtap-test"))
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Read(dir); err != nil {
			t.Fatal(err)
		}
	})
	// Four os.ReadFile calls cost about seven allocations each (path, file,
	// stat, buffer growth), 29 in all with Go 1.26; parsing must add none
	// per memory.stat line (v1 has about 40 lines).
	if allocs > 32 {
		t.Errorf("Read allocates %.0f times per call, want at most 32", allocs)
	}
	t.Logf("Read: %.0f allocations per call", allocs)
}

func BenchmarkRead(b *testing.B) {
	dir, err := CgroupOfPID(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Read(dir); err != nil {
			b.Fatal(err)
		}
	}
}

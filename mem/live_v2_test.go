package mem

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests use a real cgroup v2 hierarchy with the memory controller,
// where the machine has one (hack/vm's kernels do; a host whose memory
// controller is on cgroup v1 skips them). Like the v1 tests, they compare
// what Read reports with the kernel's files, read independently.

// kernelViewV2 is a cgroup v2 memory reading made the plain way.
type kernelViewV2 struct {
	current uint64
	max     string // "max" or a number
	stat    map[string]uint64
}

func readKernelV2(t *testing.T, dir string) kernelViewV2 {
	t.Helper()
	file := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	cur, err := strconv.ParseUint(file("memory.current"), 10, 64)
	if err != nil {
		t.Fatalf("memory.current: %v", err)
	}
	k := kernelViewV2{current: cur, max: file("memory.max"), stat: map[string]uint64{}}
	for _, line := range strings.Split(file("memory.stat"), "\n") {
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

func (a kernelViewV2) equal(b kernelViewV2) bool {
	if a.current != b.current || a.max != b.max || len(a.stat) != len(b.stat) {
		return false
	}
	for k, v := range a.stat {
		if w, ok := b.stat[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// readStableV2 calls read between two identical kernel readings.
func readStableV2(t *testing.T, dir string, read func() error) kernelViewV2 {
	t.Helper()
	for try := 0; try < 50; try++ {
		before := readKernelV2(t, dir)
		if err := read(); err != nil {
			t.Fatal(err)
		}
		if after := readKernelV2(t, dir); before.equal(after) {
			return before
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("memory figures of %s never held still across a read", dir)
	return kernelViewV2{}
}

// checkAgainstKernelV2 demands that every figure equals the kernel's file
// or memory.stat key, that keys the kernel lacks are reported absent, and
// that the working set is memory.current - inactive_file, floored at 0.
func checkAgainstKernelV2(t *testing.T, s Stats, k kernelViewV2) {
	t.Helper()
	if s.Version != V2 {
		t.Errorf("Version = %v, want v2", s.Version)
	}
	if s.Usage != k.current {
		t.Errorf("Usage = %d, memory.current = %d", s.Usage, k.current)
	}
	v2keys := map[Field]string{
		Anon: "anon", File: "file", ActiveAnon: "active_anon", InactiveAnon: "inactive_anon",
		ActiveFile: "active_file", InactiveFile: "inactive_file", MappedFile: "file_mapped", Shmem: "shmem",
		Kernel: "kernel", Sock: "sock", Slab: "slab", SlabReclaimable: "slab_reclaimable", SlabUnreclaimable: "slab_unreclaimable",
	}
	for f, key := range v2keys {
		want, inKernel := k.stat[key]
		got, ok := s.Value(f)
		if ok != inKernel || got != want {
			t.Errorf("%v = %d (present %v), memory.stat %s = %d (present %v)", f, got, ok, key, want, inKernel)
		}
	}
	var want uint64
	if in := k.stat["inactive_file"]; in < k.current {
		want = k.current - in
	}
	if s.WorkingSet != want {
		t.Errorf("WorkingSet = %d, want memory.current %d - inactive_file %d = %d (floored at 0)",
			s.WorkingSet, k.current, k.stat["inactive_file"], want)
	}
	if k.max == "max" {
		if !s.Unlimited || s.Limit != 0 {
			t.Errorf("memory.max is max, but Limit = %d, Unlimited = %v", s.Limit, s.Unlimited)
		}
	} else if s.Unlimited || strconv.FormatUint(s.Limit, 10) != k.max {
		t.Errorf("Limit = %d, Unlimited = %v; memory.max = %s", s.Limit, s.Unlimited, k.max)
	}
}

func TestMemLiveV2MatchesKernel(t *testing.T) {
	root := liveV2Root(t)
	dir := makeV2Cgroup(t, root, uniqueName("podtap-test"))
	const anon, file = 64 << 20, 32 << 20
	startHelper(t, dir, "podtap-mem-helper", anon, file)

	var s Stats
	read := func() (err error) { s, err = Read(dir); return err }
	k := readStableV2(t, dir, read)
	checkAgainstKernelV2(t, s, k)
	if !s.Unlimited {
		t.Errorf("a new cgroup should be unlimited, got Limit = %d", s.Limit)
	}
	inRange(t, "Anon (anon)", s.Anon, anon, anon+24<<20)
	inRange(t, "File (file)", s.File, file, file+16<<20)
	// Pages just read may still sit in a per-CPU batch on their way to
	// the LRU lists (up to 31 a CPU): counted in file, not yet in
	// active_file or inactive_file. One in 32 MiB was seen missing.
	inRange(t, "ActiveFile+InactiveFile", s.ActiveFile+s.InactiveFile, file-1<<20, s.File)
	inRange(t, "WorkingSet", s.WorkingSet, anon, s.Usage)
	if s.Usage+1<<20 < s.Anon+s.File {
		t.Errorf("Usage %d is below anon %d + file %d", s.Usage, s.Anon, s.File)
	}
	t.Logf("usage %s, working set %s, anon %s, file %s (active %s, inactive %s), kernel %s, slab %s, sock %s",
		Human(s.Usage), Human(s.WorkingSet), Human(s.Anon), Human(s.File), Human(s.ActiveFile), Human(s.InactiveFile),
		Human(s.Kernel), Human(s.Slab), Human(s.Sock))

	// A real limit is reported as is, with the working set as a share of it.
	const limit = 1 << 30
	if err := os.WriteFile(filepath.Join(dir, "memory.max"), []byte(strconv.Itoa(limit)), 0); err != nil {
		t.Fatal(err)
	}
	k = readStableV2(t, dir, read)
	checkAgainstKernelV2(t, s, k)
	pct, ok := s.LimitPercent()
	if s.Unlimited || s.Limit != limit || !ok || pct != float64(s.WorkingSet)/limit*100 {
		t.Errorf("after setting a 1Gi limit: Limit = %d, Unlimited = %v, LimitPercent = %v, %v", s.Limit, s.Unlimited, pct, ok)
	}
	if !t.Failed() {
		t.Logf("PODTAP_FACT memcg=v2")
	}
}

func TestMemLiveV2CgroupOfPID(t *testing.T) {
	root := liveV2Root(t)
	dir := makeV2Cgroup(t, root, uniqueName("podtap-test"), "nested dir")
	h := startHelper(t, dir, "podtap-mem-helper", 0, 0)

	got, err := CgroupOfPID(h.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if got != dir {
		t.Errorf("CgroupOfPID(helper) = %q, want %q", got, dir)
	}
	if v, err := DetectVersion(dir); err != nil || v != V2 {
		t.Errorf("DetectVersion(%s) = %v, %v; want v2", dir, v, err)
	}
	if v, err := DetectVersion(root); err != nil || v != V2 {
		t.Errorf("DetectVersion(%s) = %v, %v; want v2", root, v, err)
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
}

func TestMemLiveV2Gone(t *testing.T) {
	root := liveV2Root(t)
	dir := makeV2Cgroup(t, root, uniqueName("podtap-test"))
	if err := syscall.Rmdir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir); !errors.Is(err, ErrGone) {
		t.Fatalf("Read of a removed cgroup: %v, want ErrGone", err)
	}

	// Removed between two of its files.
	dir = makeV2Cgroup(t, root, uniqueName("podtap-test"))
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
	if _, err := read(dir, V2, removeAfterFirst); !errors.Is(err, ErrGone) {
		t.Errorf("cgroup removed between reads: %v, want ErrGone", err)
	}
}

// TestMemLiveV2Pod: a pod laid out as kubelet's cgroupfs driver does on
// cgroup v2, read as a pod.
func TestMemLiveV2Pod(t *testing.T) {
	root := liveV2Root(t)
	uid := "1a2b3c4d-0000-4000-8000-" + randomHex(12)
	appID, pauseID := randomHex(64), randomHex(64)
	pod := makeV2Cgroup(t, root, uniqueName("podtap-test"), "kubepods", "burstable", "pod"+uid)
	enableMemory(t, pod)
	appDir := makeV2Cgroup(t, pod, appID)
	pauseDir := makeV2Cgroup(t, pod, pauseID)
	startHelper(t, appDir, "/usr/local/bin/app", 16<<20, 8<<20)
	startHelper(t, pauseDir, "/pause", 4<<20, 0)

	var p Pod
	k := readStableV2(t, pod, func() (err error) { p, err = ReadPod(pod, nil); return err })
	if p.UID != uid || p.Definition != PodCgroup {
		t.Errorf("UID = %q, Definition = %q; want %q, %q", p.UID, p.Definition, uid, PodCgroup)
	}
	if len(p.Containers) != 1 || p.Containers[0].ID != appID || len(p.Sandboxes) != 1 || p.Sandboxes[0].ID != pauseID {
		t.Fatalf("containers %v, sandboxes %v; want app %s, sandbox %s", p.Containers, p.Sandboxes, appID, pauseID)
	}
	// The pod total is the pod cgroup's own reading, which includes its
	// children once.
	checkAgainstKernelV2(t, p.Total, k)
	children := p.Containers[0].Stats.Usage + p.Sandboxes[0].Stats.Usage
	if p.Total.Usage < children || p.Total.Usage >= children+p.Total.Usage/2 {
		t.Errorf("pod usage %d vs containers' %d: want the pod to include its children once", p.Total.Usage, children)
	}
	if p.TopBytes() != p.Containers[0].Stats.WorkingSet {
		t.Errorf("TopBytes = %d, want the app container's working set %d", p.TopBytes(), p.Containers[0].Stats.WorkingSet)
	}
	inRange(t, "app Anon", p.Containers[0].Stats.Anon, 16<<20, 32<<20)
	inRange(t, "sandbox Anon", p.Sandboxes[0].Stats.Anon, 4<<20, 16<<20)
}

// liveV2Root is the mount point of a cgroup v2 hierarchy whose root offers
// the memory controller to its children, found in mountinfo independently
// of the code under test. It enables the controller there if need be.
func liveV2Root(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create memory cgroups")
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, line := range strings.Split(string(info), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 || !strings.HasPrefix(post, "cgroup2 ") || f[3] != "/" {
			continue
		}
		root := f[4]
		ctl, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
		if err != nil || !slices.Contains(strings.Fields(string(ctl)), "memory") {
			seen = append(seen, root+" (controllers: "+strings.TrimSpace(string(ctl))+")")
			continue
		}
		enableMemory(t, root)
		return root
	}
	if len(seen) == 0 {
		t.Skip("no cgroup v2 hierarchy mounted on this machine")
	}
	t.Skipf("no cgroup v2 hierarchy here has the memory controller: %s", strings.Join(seen, ", "))
	return ""
}

// enableMemory lets dir's children have the memory controller.
func enableMemory(t *testing.T, dir string) {
	t.Helper()
	sub, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(strings.Fields(string(sub)), "memory") {
		return
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
		t.Fatalf("enable the memory controller for the children of %s: %v", dir, err)
	}
}

// makeV2Cgroup is makeCgroup for cgroup v2, where each parent must pass
// the memory controller on to its children.
func makeV2Cgroup(t *testing.T, root string, rel ...string) string {
	t.Helper()
	dir := makeCgroup(t, root, rel...)
	var parents []string
	for d := filepath.Dir(dir); strings.HasPrefix(d, root+"/"); d = filepath.Dir(d) {
		parents = append(parents, d)
	}
	for _, d := range slices.Backward(parents) { // top down
		enableMemory(t, d)
	}
	return dir
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podtap/podtap/kube"
	"github.com/podtap/podtap/mem"
)

// memRun runs podtap with args and returns its exit code and output.
func memRun(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestMemCLIUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mem"}, "no target"},
		{[]string{"mem", "--pid", "1", "--cgroup", "/sys/fs/cgroup/memory"}, "exactly one of"},
		{[]string{"mem", "--pid", "1", "mypod"}, "exactly one of"},
		{[]string{"mem", "--pid", "1", "-n", "shop"}, "--namespace needs a POD"},
		{[]string{"mem", "--cgroup", "/sys/fs/cgroup/memory", "--kubeconfig", "k"}, "--kubeconfig needs a POD"},
		{[]string{"mem", "ns/a", "ns/b"}, "one POD at most"},
		{[]string{"mem", "--pid", "0"}, "--pid must be a positive process ID"},
		{[]string{"mem", "--pid", "x"}, `invalid argument "x" for "--pid"`},
		{[]string{"mem", "--cgroup", "/sys/fs/cgroup/memory", "-o", "yaml"}, `-o must be table or json, got "yaml"`},
		{[]string{"mem", "--cgroup", "/sys/fs/cgroup/memory", "--watch=0s"}, "--watch interval must be positive"},
		{[]string{"mem", "--cgroup", "/sys/fs/cgroup/memory", "--watch=-1s"}, "--watch interval must be positive"},
		{[]string{"mem", "--cgroup", "/sys/fs/cgroup/memory", "--watch=soon"}, `invalid argument "soon"`},
		{[]string{"mem", "--cgroup", "/sys/fs/cgroup/memory", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"mem", "--cgroup="}, "--cgroup needs a directory"},
	} {
		code, stdout, stderr := memRun(tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "podtap: ") || stdout != "" {
			t.Errorf("%q: exit %d, stderr %q, stdout %q; want exit 2 and one line containing %q", tc.args, code, stderr, stdout, tc.want)
		}
	}
}

func TestMemCLIHelp(t *testing.T) {
	code, stdout, stderr := memRun("mem", "--help")
	if code != 0 || stderr != "" {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	for _, w := range []string{"Usage: podtap mem [flags] [POD]", "--pid PID", "--cgroup PATH", "-o, --output", "--watch INTERVAL[=2s]", "--explain", "--app-container-ids"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("help lacks %q:\n%s", w, stdout)
		}
	}
	if err := runMem([]string{"-h"}, io.Discard, io.Discard); !errors.Is(err, errHelp) {
		t.Errorf("-h: %v, want errHelp", err)
	}
}

func TestMemCLIWatchFlag(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		watch time.Duration
		pod   string
		set   bool
	}{
		{[]string{"--cgroup", "/x"}, 0, "", false},
		{[]string{"--cgroup", "/x", "--watch"}, 2 * time.Second, "", true},
		{[]string{"--watch", "--cgroup", "/x"}, 2 * time.Second, "", true},
		{[]string{"--watch", "500ms", "--cgroup", "/x"}, 500 * time.Millisecond, "", true},
		{[]string{"--watch=1m", "--cgroup", "/x"}, time.Minute, "", true},
		{[]string{"--watch", "mypod"}, 2 * time.Second, "mypod", true},
		{[]string{"--", "--watch"}, 0, "--watch", false},
	} {
		o, err := parseMemFlags(tc.args, io.Discard)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if o.watch != tc.watch || o.pod != tc.pod || o.hasWatch != tc.set {
			t.Errorf("%q: watch %v (set %v), pod %q; want %v (set %v), %q", tc.args, o.watch, o.hasWatch, o.pod, tc.watch, tc.set, tc.pod)
		}
	}
}

func TestMemCLINoSuchCgroup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	code, _, stderr := memRun("mem", "--cgroup", dir)
	if want := "podtap: cgroup " + dir + ": no such directory\n"; code != 1 || stderr != want {
		t.Errorf("exit %d, stderr %q; want 1, %q", code, stderr, want)
	}
	code, _, stderr = memRun("mem", "--cgroup", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "not on a cgroup filesystem") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("plain directory: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = memRun("mem", "--pid", strconv.Itoa(1<<30))
	if code != 1 || !strings.Contains(stderr, "no such process") {
		t.Errorf("no such pid: exit %d, stderr %q", code, stderr)
	}
}

// memV1Root finds this machine's cgroup v1 memory mount in mountinfo.
func memV1Root(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create memory cgroups")
	}
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 3 && g[0] == "cgroup" && strings.Contains(","+g[2]+",", ",memory,") {
			return f[4]
		}
	}
	t.Skip("no cgroup v1 memory controller mounted on this machine")
	return ""
}

func memRandHex(n int) string {
	b := make([]byte, n/2)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// memTestCgroup creates dir (and missing parents) and removes them in
// t.Cleanup, moving out any process left inside first.
func memTestCgroup(t *testing.T, root string, rel ...string) string {
	t.Helper()
	dir := filepath.Join(append([]string{root}, rel...)...)
	var created []string
	for d := dir; d != root; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		created = append([]string{d}, created...)
	}
	for _, d := range created {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for i := len(created) - 1; i >= 0; i-- {
			d := created[i]
			for try := 0; ; try++ {
				if procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil {
					for _, pid := range strings.Fields(string(procs)) {
						os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(pid), 0)
					}
				}
				err := syscall.Rmdir(d)
				if err == nil || errors.Is(err, syscall.ENOENT) {
					break
				}
				if try == 100 {
					t.Errorf("remove %s: %v", d, err)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	})
	return dir
}

// memStartProc starts a shell in cgroup dir that writes and reads back
// fileMiB MiB of page cache, then sleeps as argv0 until the test ends.
func memStartProc(t *testing.T, dir, argv0 string, fileMiB int) int {
	t.Helper()
	file := filepath.Join(t.TempDir(), "cache")
	script := fmt.Sprintf(`read go; head -c %d /dev/zero > %q; cat %q > /dev/null; echo ready; exec -a %q sleep 3600`, fileMiB<<20, file, file, argv0)
	cmd := exec.Command("bash", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // no sleeper outlives a killed test
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "go\n")
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper shell: %q, %v", line, err)
	}
	// "ready" comes before the exec: wait until the process shows argv0,
	// which tells a sandbox (/pause) apart.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		if first, _, _ := strings.Cut(string(b), "\x00"); first == argv0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("helper process %d never ran as %s: cmdline %q", cmd.Process.Pid, argv0, b)
		}
	}
	return cmd.Process.Pid
}

// memKernel reads a v1 cgroup's usage and hierarchical inactive file
// straight from the kernel's files.
func memKernel(t *testing.T, dir string) (usage, inactive uint64, stat string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "memory.usage_in_bytes"))
	if err != nil {
		t.Fatal(err)
	}
	usage, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	b, err = os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "total_inactive_file "); ok {
			inactive, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	return usage, inactive, string(b)
}

// memStableRun runs podtap between two identical kernel readings of dir.
func memStableRun(t *testing.T, dir string, args ...string) (stdout string, usage, inactive uint64) {
	t.Helper()
	for try := 0; try < 50; try++ {
		u1, i1, s1 := memKernel(t, dir)
		code, out, stderr := memRun(args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, stderr)
		}
		u2, i2, s2 := memKernel(t, dir)
		if u1 == u2 && i1 == i2 && s1 == s2 {
			return out, u1, i1
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("memory of %s never held still", dir)
	return "", 0, 0
}

func TestMemCLILiveCgroup(t *testing.T) {
	root := memV1Root(t)
	dir := memTestCgroup(t, root, "podtap-test-cli-"+memRandHex(12))
	pid := memStartProc(t, dir, "podtap-mem-test", 16)

	out, usage, inactive := memStableRun(t, dir, "mem", "--cgroup", dir, "-o", "json")
	var j memCgroupJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	want := usage - min(usage, inactive)
	if j.Kind != "cgroup" || j.Cgroup != dir || j.CgroupVersion != 1 || j.UsageBytes != usage || j.WorkingSetBytes != want ||
		j.InactiveFileBytes == nil || *j.InactiveFileBytes != inactive || j.KubectlTop != fmt.Sprintf("%dMi", want>>20) ||
		!j.Unlimited || j.LimitBytes != nil || j.SockBytes != nil {
		t.Errorf("json %s\nwant usage %d, total_inactive_file %d, working set %d", out, usage, inactive, want)
	}
	if j.FileBytes == nil || *j.FileBytes < 16<<20 {
		t.Errorf("file_bytes = %v, want at least the 16Mi the shell wrote", j.FileBytes)
	}

	// --pid finds the same cgroup.
	out, _, _ = memStableRun(t, dir, "mem", "--pid", strconv.Itoa(pid), "-o", "json")
	if err := json.Unmarshal([]byte(out), &j); err != nil || j.Cgroup != dir {
		t.Errorf("--pid %d: cgroup %q, %v; want %q", pid, j.Cgroup, err, dir)
	}

	// --explain names the files and keys, with the kernel's numbers.
	out, usage, inactive = memStableRun(t, dir, "mem", "--cgroup", dir, "--explain")
	want = usage - min(usage, inactive)
	for _, w := range []string{
		fmt.Sprintf("working_set = memory.usage_in_bytes (%d) - memory.stat total_inactive_file (%d) = %d", usage, inactive, want),
		fmt.Sprintf("kubectl top = %d / 1048576, rounded down = %dMi", want, want>>20),
	} {
		if !strings.Contains(out, w) {
			t.Errorf("--explain output lacks %q:\n%s", w, out)
		}
	}
	for _, row := range [][]string{
		{"usage", strconv.FormatUint(usage, 10), "memory.usage_in_bytes"},
		{"working", "set", strconv.FormatUint(want, 10), "usage", "-", "memory.stat", "total_inactive_file"},
		{"inactive_file", strconv.FormatUint(inactive, 10), "memory.stat", "total_inactive_file"},
		{"kubectl", "top", fmt.Sprintf("%dMi", want>>20)},
	} {
		if !memHasRow(out, row...) {
			t.Errorf("table lacks a row with %q:\n%s", row, out)
		}
	}
	t.Logf("podtap mem --cgroup %s --explain:\n%s", dir, out)
}

func TestMemCLILivePod(t *testing.T) {
	root := memV1Root(t)
	uid := "0a1b2c3d-4e5f-4a6b-8c7d-" + memRandHex(12)
	appID, pauseID := memRandHex(64), memRandHex(64)
	pod := memTestCgroup(t, root, "podtap-test-cli-"+memRandHex(12), "kubepods", "pod"+uid)
	memStartProc(t, memTestCgroup(t, pod, appID), "app", 8)
	memStartProc(t, memTestCgroup(t, pod, pauseID), "/pause", 0)

	// A POD argument, resolved by the hook the Kubernetes support sets.
	old := resolvePodForMem
	t.Cleanup(func() { resolvePodForMem = old })
	resolvePodForMem = func(ctx context.Context, name string, cfg kube.Config) (string, []string, error) {
		want := kube.Config{Kubeconfig: "/k", Context: "c", Namespace: "shop", Node: "n1"}
		if name != "web" {
			return "", nil, fmt.Errorf("no pod %s", name)
		}
		if cfg != want {
			return "", nil, fmt.Errorf("pod %s with %+v, want %+v", name, cfg, want)
		}
		return pod, []string{"containerd://" + appID}, nil
	}

	out, usage, inactive := memStableRun(t, pod, "mem", "web", "-n", "shop", "--kubeconfig", "/k", "--context", "c", "--node", "n1", "-o", "json")
	var j memPodJSON
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if j.Kind != "pod" || j.PodCgroup != pod || j.PodUID != uid || j.TotalDefinition != "pod cgroup" ||
		len(j.Containers) != 1 || j.Containers[0].ID != appID || len(j.Sandboxes) != 1 || j.Sandboxes[0].ID != pauseID {
		t.Fatalf("pod json: %s", out)
	}
	if j.Total.UsageBytes != usage || j.Total.WorkingSetBytes != usage-min(usage, inactive) {
		t.Errorf("pod total usage %d, working set %d; kernel's pod cgroup: usage %d, total_inactive_file %d",
			j.Total.UsageBytes, j.Total.WorkingSetBytes, usage, inactive)
	}
	if ws := j.Containers[0].WorkingSetBytes; j.KubectlTopBytes != ws || j.KubectlTop != fmt.Sprintf("%dMi", ws>>20) {
		t.Errorf("kubectl top %s (%d), want the app container's working set %d", j.KubectlTop, j.KubectlTopBytes, ws)
	}

	// The same pod by --cgroup, without app IDs: the sandbox is found by
	// its command line, and the table shows it apart.
	code, table, stderr := memRun("mem", "--cgroup", pod)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(table, "pod UID "+uid) || !strings.Contains(table, "kubectl top pod: ") {
		t.Errorf("table lacks the pod UID or the kubectl top pod line:\n%s", table)
	}
	for _, row := range [][]string{{"app", appID[:12]}, {"sandbox", pauseID[:12]}, {"pod", "total", "(pod", "cgroup)"}} {
		if !memHasRow(table, row...) {
			t.Errorf("table lacks a row with %q:\n%s", row, table)
		}
	}
	t.Logf("podtap mem --cgroup %s:\n%s", pod, table)

	// Errors from the hook carry context.
	code, _, stderr = memRun("mem", "other/pod")
	if code != 1 || stderr != "podtap: find cgroup of pod other/pod: no pod other/pod\n" {
		t.Errorf("hook error: exit %d, %q", code, stderr)
	}
}

// memHasRow reports whether a line of text has all of words as fields, in
// order (other fields may come between them).
func memHasRow(text string, words ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		i := 0
		for _, f := range strings.Fields(line) {
			if i < len(words) && f == words[i] {
				i++
			}
		}
		if i == len(words) {
			return true
		}
	}
	return false
}

// memSyncBuffer is a bytes.Buffer safe for one writer and one reader.
type memSyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *memSyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *memSyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func memWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMemCLIWatchUntilSignal(t *testing.T) {
	root := memV1Root(t)
	dir := memTestCgroup(t, root, "podtap-test-cli-"+memRandHex(12))
	var out memSyncBuffer
	done := make(chan error, 1)
	go func() { done <- runMem([]string{"--cgroup", dir, "--watch=50ms", "-o", "json"}, &out, io.Discard) }()
	memWaitFor(t, "three samples", func() bool { return strings.Count(out.String(), "\n") >= 3 })
	syscall.Kill(os.Getpid(), syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after SIGINT: %v, want nil (exit 0)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("--watch did not stop on SIGINT")
	}
	for i, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var j memCgroupJSON
		if err := json.Unmarshal([]byte(line), &j); err != nil || j.Cgroup != dir {
			t.Errorf("sample %d: %q, %v", i, line, err)
		}
	}
}

func TestMemCLIWatchCgroupGone(t *testing.T) {
	root := memV1Root(t)
	dir := memTestCgroup(t, root, "podtap-test-cli-"+memRandHex(12))
	var out memSyncBuffer
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- memMain(ctx, []string{"--cgroup", dir, "--watch", "20ms"}, &out, io.Discard) }()
	memWaitFor(t, "a sample", func() bool { return strings.Contains(out.String(), "kubectl top") })
	if err := syscall.Rmdir(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if want := "read memory of cgroup " + dir + ": cgroup no longer exists"; err == nil || err.Error() != want || !errors.Is(err, mem.ErrGone) {
			t.Errorf("error %v, want %q", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("--watch went on after its cgroup was removed")
	}
}

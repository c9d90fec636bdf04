package mem

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as a helper process that fills memory: with
// helperEnv set it waits for a line on stdin (sent once the test has moved
// it into its cgroup, so everything it allocates is charged there), maps and
// touches helperAnonEnv bytes of anonymous memory, writes and reads back
// helperFileEnv (helperFileSizeEnv bytes, so they are page cache), prints
// "ready" and waits until stdin is closed.
const (
	helperEnv         = "PODTAP_MEM_TEST_HELPER"
	helperAnonEnv     = "PODTAP_MEM_TEST_ANON"
	helperFileEnv     = "PODTAP_MEM_TEST_FILE"
	helperFileSizeEnv = "PODTAP_MEM_TEST_FILE_SIZE"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		if err := helperMain(); err != nil {
			fmt.Fprintf(os.Stderr, "helper: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helperMain() error {
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return fmt.Errorf("wait for go: %w", err)
	}
	anon, _ := strconv.Atoi(os.Getenv(helperAnonEnv))
	var mem []byte
	if anon > 0 {
		var err error
		mem, err = syscall.Mmap(-1, 0, anon, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
		if err != nil {
			return fmt.Errorf("mmap: %w", err)
		}
		for i := 0; i < len(mem); i += 4096 {
			mem[i] = byte(i>>12) | 1
		}
	}
	if name := os.Getenv(helperFileEnv); name != "" {
		size, _ := strconv.Atoi(os.Getenv(helperFileSizeEnv))
		if err := writeAndReadBack(name, size); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, in) // until the test closes stdin
	if len(mem) > 0 && mem[0] == 0 {
		return errors.New("anonymous memory lost its contents")
	}
	return nil
}

func writeAndReadBack(name string, size int) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for done := 0; done < size; done += len(chunk) {
		if _, err := f.Write(chunk[:min(len(chunk), size-done)]); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, f)
	return err
}

// helperProc is a running helper process.
type helperProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startHelper starts a helper process with argv0 as its argv[0], puts it in
// cgroup dir, lets it allocate and waits until it has. It is stopped in
// t.Cleanup.
func startHelper(t *testing.T, dir, argv0 string, anon, fileSize int) *helperProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := &exec.Cmd{Path: self, Args: []string{argv0}}
	cmd.Env = append(os.Environ(), helperEnv+"=1", helperAnonEnv+"="+strconv.Itoa(anon))
	if fileSize > 0 {
		cmd.Env = append(cmd.Env,
			helperFileEnv+"="+filepath.Join(diskTempDir(t), "pagecache"),
			helperFileSizeEnv+"="+strconv.Itoa(fileSize))
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	h := &helperProc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil && !t.Failed() {
				t.Errorf("helper %d: %v", cmd.Process.Pid, err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatalf("move helper into %s: %v", dir, err)
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() { line, _ := h.out.ReadString('\n'); ready <- line }()
	select {
	case line := <-ready:
		if strings.TrimSpace(line) != "ready" {
			t.Fatalf("helper said %q, want ready", line)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("helper did not get ready in 60s")
	}
	return h
}

// diskTempDir is a temporary directory on a disk filesystem, not tmpfs, so
// that files written there become page cache rather than shmem.
func diskTempDir(t *testing.T) string {
	t.Helper()
	const tmpfsMagic = 0x01021994
	for _, parent := range []string{os.TempDir(), "/var/tmp", "."} {
		var st syscall.Statfs_t
		if syscall.Statfs(parent, &st) != nil || st.Type == tmpfsMagic {
			continue
		}
		dir, err := os.MkdirTemp(parent, "podtap-mem-test-")
		if err != nil {
			continue
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	t.Fatal("no temporary directory on a disk filesystem (all candidates are tmpfs)")
	return ""
}

// liveV1Root is the mount point of this machine's cgroup v1 memory
// hierarchy, found in mountinfo independently of the code under test.
func liveV1Root(t *testing.T) string {
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

// makeCgroup creates a uniquely named cgroup (and its parents) under root
// and removes it, and them, in t.Cleanup, after moving out any process
// still inside.
func makeCgroup(t *testing.T, root string, rel ...string) string {
	t.Helper()
	dir := filepath.Join(append([]string{root}, rel...)...)
	var created []string
	for d := dir; d != root && d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		created = append([]string{d}, created...)
	}
	for _, d := range created {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("create cgroup: %v", err)
		}
	}
	t.Cleanup(func() {
		for i := len(created) - 1; i >= 0; i-- {
			removeCgroup(t, created[i], root)
		}
	})
	return dir
}

func removeCgroup(t *testing.T, dir, root string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, pid := range strings.Fields(string(procs)) {
				os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(pid), 0)
			}
		}
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("remove test cgroup %s: %v", dir, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func uniqueName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", prefix, os.Getpid(), hex.EncodeToString(b))
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	rand.Read(b)
	return hex.EncodeToString(b)
}

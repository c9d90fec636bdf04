package kubetest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// orphanHelperEnv makes the test binary act as the parent in
// TestChildDiesWithTestBinary instead of running tests.
const orphanHelperEnv = "KUBETEST_ORPHAN_HELPER"

func init() {
	if os.Getenv(orphanHelperEnv) != "" {
		runOrphanHelper()
	}
}

// runOrphanHelper starts a child with startProcess from a goroutine whose
// thread then exits, prints the child's PID and waits to be killed.
func runOrphanHelper() {
	started := make(chan *process)
	go func() {
		// Never unlocked: the thread exits with this goroutine. A child that
		// this thread forked itself would get its Pdeathsig right then.
		runtime.LockOSThread()
		p, err := startProcess("sleep", "sleep", []string{"60"}, os.DevNull)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		started <- p
	}()
	p := <-started
	time.Sleep(200 * time.Millisecond)
	fmt.Println(p.cmd.Process.Pid)
	time.Sleep(time.Minute)
	os.Exit(3)
}

func TestChildDiesWithTestBinary(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep binary")
	}
	// Orphans are re-parented to this process instead of PID 1, so the test
	// can reap the child and read how it ended.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become child subreaper: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })

	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), orphanHelperEnv+"=1")
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = helper.Process.Kill()
		_ = helper.Wait()
		t.Fatalf("read child pid from helper: %v", err)
	}
	pid, err := strconv.Atoi(line[:len(line)-1])
	if err != nil {
		t.Fatalf("child pid %q: %v", line, err)
	}
	time.Sleep(100 * time.Millisecond)
	if state := procState(pid); state == "" || state == "Z" {
		_ = helper.Process.Kill()
		_ = helper.Wait()
		t.Fatalf("child %d died when the thread that called startProcess exited (state %q)", pid, state)
	}

	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()

	reaped := make(chan unix.WaitStatus, 1)
	go func() {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
			t.Errorf("wait for child %d: %v", pid, err)
		}
		reaped <- ws
	}()
	select {
	case ws := <-reaped:
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("child ended with %#x, want killed by SIGKILL", uint32(ws))
		}
	case <-time.After(10 * time.Second):
		_ = unix.Kill(pid, unix.SIGKILL)
		<-reaped
		t.Fatalf("child %d still running 10 s after its parent was killed", pid)
	}
}

func TestStopKillsAndReaps(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep binary")
	}
	p, err := startProcess("sleep", "sleep", []string{"60"}, os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if p.exited() {
		t.Fatal("child exited at once")
	}
	pid := p.cmd.Process.Pid
	p.kill()
	if state := procState(pid); state != "" {
		t.Errorf("child %d still present after kill (state %q)", pid, state)
	}
}

package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

// process is a child (etcd or kube-apiserver) that dies with the test
// binary and whose output goes to a log file.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the child has been waited for
	err     error         // Wait's result; read only after done is closed
}

// startProcess starts path with args, stdout and stderr appended to logPath.
//
// The child gets SIGKILL when its parent dies (Pdeathsig), so a test binary
// that is killed or panics takes its servers with it. The kernel ties
// Pdeathsig to the thread that forked the child, not to the process: if that
// thread exited (as a thread does when its goroutine ends while locked to
// it), the child would be killed at once. So the child is forked from a
// goroutine that locks its thread and stays in Wait for the child's whole
// life; the runtime never retires a thread whose locked goroutine is still
// running.
func startProcess(name, path string, args []string, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}

	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// exited reports whether the child has exited, without blocking.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes how the child ended, with the tail of its log.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited: %v%s", p.name, p.err, p.logTail())
}

// kill sends SIGKILL and waits for the child to be reaped.
func (p *process) kill() {
	if !p.exited() {
		// An error here means the child has already exited; done closes anyway.
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// logTail returns the last lines of the child's log, formatted to follow an
// error message.
func (p *process) logTail() string {
	const maxBytes, maxLines = 16 << 10, 30
	f, err := os.Open(p.logPath)
	if err != nil {
		return fmt.Sprintf("\n(no %s log: %v)", p.name, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		_, _ = f.Seek(st.Size()-maxBytes, io.SeekStart)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("\n(read %s log: %v)", p.name, err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return fmt.Sprintf("\n--- last lines of %s ---\n%s", p.logPath, bytes.Join(lines, []byte("\n")))
}

// logContains reports whether the child's log contains s.
func (p *process) logContains(s string) bool {
	b, err := os.ReadFile(p.logPath)
	return err == nil && bytes.Contains(b, []byte(s))
}

var errPortInUse = errors.New("port already in use")

// procState returns the state letter of pid from /proc ("R", "S", "Z", ...),
// or "" if there is no such process.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// "pid (comm) S ...": comm may hold spaces and parentheses, so the state
	// follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2])
}

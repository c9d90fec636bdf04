// Command podtap captures a pod's packets, filtered in the kernel, and
// reports its cgroup memory the way kubelet computes it.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

const usageText = `podtap: in-kernel filtered packet capture and memory accounting for pods

Usage:
  podtap capture [flags] [POD] [EXPR...]   capture matching packets to pcap/pcapng
  podtap mem [flags] [POD]                 show a pod's cgroup memory as kubelet computes it
  podtap version                           print the version

Run 'podtap COMMAND --help' for the flags of a command.
`

// version is set at link time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one podtap command and returns the process exit code:
// 0 on success, 2 on a usage error, 1 on any other error.
func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	if err == nil {
		return 0
	}
	if errors.Is(err, errHelp) {
		return 0
	}
	fmt.Fprintln(stderr, errorLine(err))
	var uerr usageError
	if errors.As(err, &uerr) {
		return 2
	}
	return 1
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return usageError{errors.New("no command given")}
	}
	switch args[0] {
	case "capture":
		return runCapture(args[1:], stdout, stderr)
	case "mem":
		return runMem(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "podtap %s\n", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return nil
	default:
		return usageErrorf("unknown command %q (want capture, mem or version)", args[0])
	}
}

// errHelp is returned when --help was asked for and printed; it exits 0.
var errHelp = errors.New("help requested")

// usageError marks an error caused by how podtap was called; it exits 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usageErrorf(format string, a ...any) error {
	return usageError{fmt.Errorf(format, a...)}
}

// errorLine is err as podtap prints it: one line, whatever the error
// (errors.Join puts each of its errors on a line of its own).
func errorLine(err error) string {
	return "podtap: " + strings.ReplaceAll(err.Error(), "\n", "; ")
}

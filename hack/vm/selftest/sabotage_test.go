package selftest

import (
	"bytes"
	"flag"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sabotage makes TestSabotage misbehave on purpose, to check how the harness
// reports it; run as `hack/vm/run.sh --run Sabotage ./hack/vm/selftest --
// -selftest.sabotage=MODE`. Modes: fail, hang (until -test.timeout, or the
// VM's timeout with -test.timeout=0), crash-kernel (sysrq "c"), output=BYTES
// (write that much test output, to measure the serial link).
var sabotage = flag.String("selftest.sabotage", "", "make TestSabotage fail, hang, crash-kernel or output=BYTES")

func TestSabotage(t *testing.T) {
	mode := *sabotage
	switch {
	case mode == "":
		t.Skip("no -selftest.sabotage mode given")
	case mode == "fail":
		t.Fatal("failing on purpose")
	case mode == "hang":
		// Sleep rather than block: a program with no timer pending dies at
		// once of "all goroutines are asleep".
		for {
			time.Sleep(time.Hour)
		}
	case mode == "crash-kernel":
		if !inVM() {
			t.Skip("crashes the kernel only inside the VM")
		}
		if err := os.WriteFile("/proc/sysrq-trigger", []byte("c"), 0o200); err != nil {
			t.Fatalf("trigger crash: %v", err)
		}
		time.Sleep(time.Minute)
	case strings.HasPrefix(mode, "output="):
		n, err := strconv.Atoi(strings.TrimPrefix(mode, "output="))
		if err != nil {
			t.Fatalf("parse %q: %v", mode, err)
		}
		line := append(bytes.Repeat([]byte{'x'}, 99), '\n')
		for written := 0; written < n; written += len(line) {
			os.Stdout.Write(line)
		}
	default:
		t.Fatalf("unknown -selftest.sabotage mode %q", mode)
	}
}

package selftest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestGuestTools checks that programs tests shell out to (hack/vm/tools.txt)
// work: iproute2's ip with netns support, and bash.
func TestGuestTools(t *testing.T) {
	requireRoot(t)
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	ns := fmt.Sprintf("podtap-selftest-%d", os.Getpid())
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { run("ip", "netns", "del", ns) })
	if out := run("ip", "-n", ns, "link", "show", "lo"); !strings.Contains(out, "lo:") {
		t.Errorf("ip -n %s link show lo: %q", ns, out)
	}
	if out := run("bash", "-c", `echo "bash ${BASH_VERSINFO[0]}"`); !strings.HasPrefix(out, "bash ") {
		t.Errorf("bash -c: %q", out)
	}
	if out := run("tc", "qdisc", "show", "dev", "lo"); out == "" {
		t.Errorf("tc qdisc show dev lo printed nothing")
	}
}

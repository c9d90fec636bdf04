package mem

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kubectl prints memory as quantity.Value()/(1024*1024) followed by "Mi":
// integer division, so always rounded down.
func TestMemKubectlTop(t *testing.T) {
	for _, tc := range []struct {
		bytes uint64
		want  string
	}{
		{0, "0Mi"},
		{1<<20 - 1, "0Mi"},
		{1 << 20, "1Mi"},
		{129<<20 - 1, "128Mi"}, // 128.999Mi: truncated, not rounded
		{123<<20 + 1<<19, "123Mi"},
		{5 << 30, "5120Mi"},
	} {
		if got := KubectlTop(tc.bytes); got != tc.want {
			t.Errorf("KubectlTop(%d) = %q, want %q", tc.bytes, got, tc.want)
		}
	}
}

func TestMemExplain(t *testing.T) {
	mustRead := func(dir string, v Version) Stats {
		s, err := read(dir, v, os.ReadFile)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	expectLines := func(name, text string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: explanation lacks %q:\n%s", name, w, text)
			}
		}
	}

	s := mustRead(v1Fixture(t, "", 100<<20+12345, v1Stat, "9223372036854771712"), V1)
	expectLines("v1", Explain(s),
		"cgroup "+s.Dir+" (cgroup v1, told by its filesystem's statfs magic 0x27e0eb)",
		fmt.Sprintf("working_set = memory.usage_in_bytes (%d) - memory.stat total_inactive_file (%d) = %d", s.Usage, s.InactiveFile, s.WorkingSet),
		"not this cgroup's local inactive_file",
		fmt.Sprintf("kubectl top = %d / 1048576, rounded down = %dMi", s.WorkingSet, s.WorkingSet>>20),
		"memory.limit_in_bytes is at least 9223372036854771712",
	)

	s = mustRead(v2Fixture(t, "", 64<<20, v2Stat.with("inactive_file", 16<<20), "268435456"), V2)
	expectLines("v2 limited", Explain(s),
		"(cgroup v2, told by its filesystem's statfs magic 0x63677270)",
		fmt.Sprintf("working_set = memory.current (%d) - memory.stat inactive_file (%d) = %d", 64<<20, 16<<20, 48<<20),
		"kubectl top = 50331648 / 1048576, rounded down = 48Mi",
		"memory.max = 268435456 (256.0Mi); working_set / limit = 18.8%",
	)
	if strings.Contains(Explain(s), "total_inactive_file") {
		t.Error("v2 explanation names a v1 key")
	}

	s = mustRead(v2Fixture(t, "", 4<<20, v2Stat.with("inactive_file", 5<<20), "max"), V2)
	expectLines("floored", Explain(s),
		fmt.Sprintf("memory.current (%d) - memory.stat inactive_file (%d) = 0 (floored at zero", 4<<20, 5<<20),
		`memory.max is "max": unlimited`,
	)

	s = mustRead(v2Fixture(t, "", 4<<20, v2Stat.without("inactive_file"), "max"), V2)
	expectLines("missing key", Explain(s),
		fmt.Sprintf("working_set = memory.current (%d) - nothing (memory.stat has no inactive_file key, so nothing is subtracted) = %d", 4<<20, 4<<20),
	)
}

func TestMemExplainPod(t *testing.T) {
	f := newPodFixture(t, V2)
	f.cgroup(f.name(app1ID), 30<<20, 10<<20, "")
	f.cgroup(f.name(app2ID), 20<<20, 5<<20, "")
	f.procs(f.cgroup(f.name(pauseID), 1<<20, 0, ""), map[string]string{"1": "/pause\x00"})
	p, err := f.read(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	text := ExplainPod(p)
	for _, w := range []string{
		"pod cgroup " + f.dir + " (pod UID " + podUID + ")",
		"app container " + app1ID,
		"sandbox container " + pauseID,
		`pod total, definition "pod cgroup"`,
		fmt.Sprintf("kubectl top pod = sum of the app containers' working sets = %d + %d = %d; / 1048576, rounded down = 35Mi", 20<<20, 15<<20, 35<<20),
	} {
		if !strings.Contains(text, w) {
			t.Errorf("pod explanation lacks %q:\n%s", w, text)
		}
	}

	os.Remove(filepath.Join(f.dir, "memory.stat"))
	if p, err = f.read(nil, nil); err != nil {
		t.Fatal(err)
	}
	text = ExplainPod(p)
	if want := `pod total, definition "sum of containers" (the pod-level cgroup could not be read: `; !strings.Contains(text, want) ||
		!strings.Contains(text, fmt.Sprintf("working_set = %d + %d = %d", 20<<20, 15<<20, 35<<20)) {
		t.Errorf("sum-of-containers explanation:\n%s", text)
	}
}

func TestMemHuman(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{{0, "0B"}, {1023, "1023B"}, {1024, "1.0Ki"}, {1536, "1.5Ki"}, {64 << 20, "64.0Mi"}, {3 << 30, "3.0Gi"}} {
		if got := Human(tc.n); got != tc.want {
			t.Errorf("Human(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

package mem

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// statLines is a memory.stat layout as a kernel prints it: keys in order.
type statLines []struct {
	key string
	val uint64
}

func (l statLines) String() string {
	var b strings.Builder
	for _, kv := range l {
		fmt.Fprintf(&b, "%s %d\n", kv.key, kv.val)
	}
	return b.String()
}

func (l statLines) get(key string) (uint64, bool) {
	for _, kv := range l {
		if kv.key == key {
			return kv.val, true
		}
	}
	return 0, false
}

func (l statLines) without(keys ...string) statLines {
	var out statLines
	for _, kv := range l {
		skip := false
		for _, k := range keys {
			skip = skip || kv.key == k
		}
		if !skip {
			out = append(out, kv)
		}
	}
	return out
}

func (l statLines) with(key string, val uint64) statLines {
	out := append(statLines(nil), l...)
	for i := range out {
		if out[i].key == key {
			out[i].val = val
			return out
		}
	}
	return append(out, struct {
		key string
		val uint64
	}{key, val})
}

// v1Stat is a cgroup v1 memory.stat as kernel 6.18 prints it for a cgroup
// with children: its local keys differ from the hierarchical total_* ones,
// so reading the wrong one shows.
var v1Stat = statLines{
	{"cache", 7045120}, {"rss", 1662976}, {"rss_huge", 0}, {"shmem", 0}, {"mapped_file", 151552},
	{"dirty", 126976}, {"writeback", 0}, {"workingset_refault_anon", 0}, {"workingset_refault_file", 1723},
	{"swap", 0}, {"swapcached", 0}, {"pgpgin", 14621}, {"pgpgout", 12495}, {"pgfault", 31064}, {"pgmajfault", 23},
	{"inactive_anon", 1499136}, {"active_anon", 12288}, {"inactive_file", 2768896}, {"active_file", 4276224},
	{"unevictable", 0}, {"hierarchical_memory_limit", 9223372036854771712}, {"hierarchical_memsw_limit", 9223372036854771712},
	{"total_cache", 59965440}, {"total_rss", 8863744}, {"total_rss_huge", 0}, {"total_shmem", 9797632},
	{"total_mapped_file", 11558912}, {"total_dirty", 167936}, {"total_writeback", 0},
	{"total_workingset_refault_anon", 0}, {"total_workingset_refault_file", 12678}, {"total_swap", 0},
	{"total_swapcached", 0}, {"total_pgpgin", 745090}, {"total_pgpgout", 729853}, {"total_pgfault", 1095992},
	{"total_pgmajfault", 687}, {"total_inactive_anon", 4706304}, {"total_active_anon", 1568768},
	{"total_inactive_file", 26238976}, {"total_active_file", 23928832}, {"total_unevictable", 12259328},
}

// v2Stat is a cgroup v2 memory.stat in the layout of kernels 6.1 to 6.18:
// no total_ keys; anon, file, kernel, sock and the slab keys are there.
var v2Stat = statLines{
	{"anon", 70385664}, {"file", 35389440}, {"kernel", 2363392}, {"kernel_stack", 147456}, {"pagetables", 307200},
	{"sec_pagetables", 0}, {"percpu", 1440}, {"sock", 8192}, {"vmalloc", 0}, {"shmem", 4096}, {"zswap", 0},
	{"zswapped", 0}, {"file_mapped", 6746112}, {"file_dirty", 0}, {"file_writeback", 0}, {"swapcached", 0},
	{"anon_thp", 0}, {"file_thp", 0}, {"shmem_thp", 0}, {"inactive_anon", 70254592}, {"active_anon", 135168},
	{"inactive_file", 33980416}, {"active_file", 1404928}, {"unevictable", 0}, {"slab_reclaimable", 1473024},
	{"slab_unreclaimable", 405528}, {"slab", 1878552}, {"workingset_refault_anon", 0}, {"workingset_refault_file", 0},
	{"workingset_activate_anon", 0}, {"workingset_activate_file", 0}, {"workingset_restore_anon", 0},
	{"workingset_restore_file", 0}, {"workingset_nodereclaim", 0}, {"pgscan", 0}, {"pgsteal", 0},
	{"pgscan_kswapd", 0}, {"pgscan_direct", 0}, {"pgscan_khugepaged", 0}, {"pgsteal_kswapd", 0},
	{"pgsteal_direct", 0}, {"pgsteal_khugepaged", 0}, {"pgfault", 26421}, {"pgmajfault", 0}, {"pgrefill", 0},
	{"pgactivate", 343}, {"pgdeactivate", 0}, {"pglazyfree", 0}, {"pglazyfreed", 0}, {"zswpin", 0},
	{"zswpout", 0}, {"zswpwb", 0}, {"thp_fault_alloc", 0}, {"thp_collapse_alloc", 0}, {"thp_swpout", 0},
	{"thp_swpout_fallback", 0},
}

// The hierarchical v1 keys and the v2 keys each field must come from,
// written out here independently of fieldInfo.
var (
	wantV1Keys = map[Field]string{
		Anon: "total_rss", File: "total_cache", ActiveAnon: "total_active_anon", InactiveAnon: "total_inactive_anon",
		ActiveFile: "total_active_file", InactiveFile: "total_inactive_file", MappedFile: "total_mapped_file", Shmem: "total_shmem",
	}
	wantV2Keys = map[Field]string{
		Anon: "anon", File: "file", ActiveAnon: "active_anon", InactiveAnon: "inactive_anon", ActiveFile: "active_file",
		InactiveFile: "inactive_file", MappedFile: "file_mapped", Shmem: "shmem", Kernel: "kernel", Sock: "sock",
		Slab: "slab", SlabReclaimable: "slab_reclaimable", SlabUnreclaimable: "slab_unreclaimable",
	}
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// v1Fixture makes a cgroup v1 memory directory with the given figures.
func v1Fixture(t *testing.T, dir string, usage uint64, stat statLines, limit string) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	writeFiles(t, dir, map[string]string{
		"memory.usage_in_bytes":      strconv.FormatUint(usage, 10) + "\n",
		"memory.stat":                stat.String(),
		"memory.limit_in_bytes":      limit + "\n",
		"memory.kmem.usage_in_bytes": "1998848\n",
	})
	return dir
}

func v2Fixture(t *testing.T, dir string, current uint64, stat statLines, max string) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	writeFiles(t, dir, map[string]string{
		"memory.current": strconv.FormatUint(current, 10) + "\n",
		"memory.stat":    stat.String(),
		"memory.max":     max + "\n",
	})
	return dir
}

func TestMemReadV1Fixture(t *testing.T) {
	const usage = 75 << 20
	dir := v1Fixture(t, "", usage, v1Stat, "9223372036854771712")
	s, err := read(dir, V1, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	if s.Dir != dir || s.Version != V1 || s.Usage != usage {
		t.Errorf("Dir, Version, Usage = %q, %v, %d", s.Dir, s.Version, s.Usage)
	}
	for f := Field(0); f < NumFields; f++ {
		got, ok := s.Value(f)
		key, hasKey := wantV1Keys[f]
		want, _ := v1Stat.get(key)
		switch {
		case f == Kernel:
			if !ok || got != 1998848 {
				t.Errorf("Kernel = %d, %v; want memory.kmem.usage_in_bytes 1998848", got, ok)
			}
		case !hasKey:
			if ok {
				t.Errorf("%v = %d reported, but v1 memory.stat has no such key", f, got)
			}
		case !ok || got != want:
			t.Errorf("%v = %d (present %v), want %s = %d", f, got, ok, key, want)
		}
	}
	inactive, _ := v1Stat.get("total_inactive_file")
	if s.WorkingSet != usage-inactive {
		t.Errorf("WorkingSet = %d, want usage %d - total_inactive_file %d", s.WorkingSet, usage, inactive)
	}
	if !s.Unlimited || s.Limit != 0 {
		t.Errorf("Limit = %d, Unlimited = %v; want unlimited", s.Limit, s.Unlimited)
	}
	if _, ok := s.LimitPercent(); ok {
		t.Error("LimitPercent of an unlimited cgroup should not be ok")
	}
}

func TestMemReadV2Fixture(t *testing.T) {
	const current = 110 << 20
	dir := v2Fixture(t, "", current, v2Stat, "max")
	s, err := read(dir, V2, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != V2 || s.Usage != current {
		t.Errorf("Version, Usage = %v, %d", s.Version, s.Usage)
	}
	for f := Field(0); f < NumFields; f++ {
		key := wantV2Keys[f]
		want, _ := v2Stat.get(key)
		if got, ok := s.Value(f); !ok || got != want {
			t.Errorf("%v = %d (present %v), want %s = %d", f, got, ok, key, want)
		}
	}
	inactive, _ := v2Stat.get("inactive_file")
	if s.WorkingSet != current-inactive {
		t.Errorf("WorkingSet = %d, want memory.current %d - inactive_file %d", s.WorkingSet, current, inactive)
	}
	if !s.Unlimited {
		t.Error(`memory.max "max" should be unlimited`)
	}

	// v2 keys in a v1 cgroup, or total_ keys in a v2 one, are not used.
	s, err = read(v2Fixture(t, "", current, v1Stat, "max"), V2, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	local, _ := v1Stat.get("inactive_file")
	if s.InactiveFile != local || s.WorkingSet != current-local {
		t.Errorf("v2 read of a total_-style stat: InactiveFile %d, WorkingSet %d; want the plain inactive_file %d", s.InactiveFile, s.WorkingSet, local)
	}
}

// v1 must subtract the hierarchical total_inactive_file, never the local
// inactive_file, and subtract nothing when the total key is missing.
func TestMemV1HierarchicalInactive(t *testing.T) {
	const usage = 64 << 20
	for _, tc := range []struct {
		name string
		stat statLines
		want uint64
	}{
		{"total and local differ", v1Stat.with("inactive_file", 1<<20).with("total_inactive_file", 5<<20), usage - 5<<20},
		{"only local key", v1Stat.without("total_inactive_file").with("inactive_file", 5<<20), usage},
		{"no inactive key at all", v1Stat.without("total_inactive_file", "inactive_file"), usage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := read(v1Fixture(t, "", usage, tc.stat, "9223372036854771712"), V1, os.ReadFile)
			if err != nil {
				t.Fatal(err)
			}
			if s.WorkingSet != tc.want {
				t.Errorf("WorkingSet = %d, want %d", s.WorkingSet, tc.want)
			}
			_, hasTotal := tc.stat.get("total_inactive_file")
			if s.Has(InactiveFile) != hasTotal {
				t.Errorf("Has(InactiveFile) = %v, want %v", s.Has(InactiveFile), hasTotal)
			}
		})
	}
}

func TestMemWorkingSetFloor(t *testing.T) {
	for _, v := range []Version{V1, V2} {
		key := wantV1Keys[InactiveFile]
		if v == V2 {
			key = wantV2Keys[InactiveFile]
		}
		for _, tc := range []struct {
			name            string
			usage, inactive uint64
			want            uint64
		}{
			{"inactive above usage", 10 << 20, 10<<20 + 4096, 0},
			{"inactive equals usage", 10 << 20, 10 << 20, 0},
			{"inactive near the top of uint64", 4096, math.MaxUint64, 0},
			{"ordinary", 10 << 20, 4 << 20, 6 << 20},
			{"nothing inactive", 10 << 20, 0, 10 << 20},
		} {
			t.Run(v.String()+"/"+tc.name, func(t *testing.T) {
				dir := t.TempDir()
				if v == V1 {
					v1Fixture(t, dir, tc.usage, v1Stat.with(key, tc.inactive), "9223372036854771712")
				} else {
					v2Fixture(t, dir, tc.usage, v2Stat.with(key, tc.inactive), "max")
				}
				s, err := read(dir, v, os.ReadFile)
				if err != nil {
					t.Fatal(err)
				}
				if s.WorkingSet != tc.want {
					t.Errorf("WorkingSet = %d, want %d (usage %d, %s %d)", s.WorkingSet, tc.want, tc.usage, key, tc.inactive)
				}
			})
		}
	}
}

func TestMemLimit(t *testing.T) {
	page := uint64(os.Getpagesize())
	sentinel := uint64(math.MaxInt64) / page * page
	for _, tc := range []struct {
		v         Version
		file      string
		unlimited bool
		limit     uint64
	}{
		{V1, strconv.FormatUint(sentinel, 10), true, 0},
		{V1, strconv.FormatUint(uint64(math.MaxInt64), 10), true, 0},
		{V1, strconv.FormatUint(sentinel-page, 10), false, sentinel - page},
		{V1, "536870912", false, 536870912},
		{V2, "max", true, 0},
		{V2, "536870912", false, 536870912},
		{V2, "0", false, 0},
	} {
		t.Run(tc.v.String()+"/"+tc.file, func(t *testing.T) {
			dir := t.TempDir()
			if tc.v == V1 {
				v1Fixture(t, dir, 100<<20, v1Stat, tc.file)
			} else {
				v2Fixture(t, dir, 100<<20, v2Stat, tc.file)
			}
			s, err := read(dir, tc.v, os.ReadFile)
			if err != nil {
				t.Fatal(err)
			}
			if s.Unlimited != tc.unlimited || s.Limit != tc.limit {
				t.Errorf("Limit, Unlimited = %d, %v; want %d, %v", s.Limit, s.Unlimited, tc.limit, tc.unlimited)
			}
			pct, ok := s.LimitPercent()
			if wantOK := !tc.unlimited && tc.limit > 0; ok != wantOK || (ok && pct != float64(s.WorkingSet)/float64(tc.limit)*100) {
				t.Errorf("LimitPercent = %v, %v", pct, ok)
			}
		})
	}
	if V1UnlimitedLimit != sentinel {
		t.Errorf("V1UnlimitedLimit = %d, want %d", V1UnlimitedLimit, sentinel)
	}
}

func TestMemMissingFiles(t *testing.T) {
	// memory.kmem.usage_in_bytes is optional.
	dir := v1Fixture(t, "", 1<<20, v1Stat, "9223372036854771712")
	os.Remove(filepath.Join(dir, "memory.kmem.usage_in_bytes"))
	s, err := read(dir, V1, os.ReadFile)
	if err != nil {
		t.Fatalf("without memory.kmem.usage_in_bytes: %v", err)
	}
	if s.Has(Kernel) {
		t.Error("Kernel present without memory.kmem.usage_in_bytes")
	}

	// The others are not: their absence means no memory controller.
	for _, tc := range []struct {
		v    Version
		file string
	}{
		{V1, "memory.usage_in_bytes"}, {V1, "memory.stat"}, {V1, "memory.limit_in_bytes"},
		{V2, "memory.current"}, {V2, "memory.stat"}, {V2, "memory.max"},
	} {
		dir := t.TempDir()
		if tc.v == V1 {
			v1Fixture(t, dir, 1<<20, v1Stat, "1")
		} else {
			v2Fixture(t, dir, 1<<20, v2Stat, "max")
		}
		os.Remove(filepath.Join(dir, tc.file))
		_, err := read(dir, tc.v, os.ReadFile)
		if !errors.Is(err, ErrNoMemory) || !strings.Contains(err.Error(), tc.file) || !strings.HasPrefix(err.Error(), "read memory of cgroup "+dir+": ") {
			t.Errorf("%v without %s: %v", tc.v, tc.file, err)
		}
	}
}

func TestMemGoneFixture(t *testing.T) {
	// The directory is gone before the read...
	dir := filepath.Join(t.TempDir(), "gone")
	_, err := read(dir, V2, os.ReadFile)
	if want := "read memory of cgroup " + dir + ": cgroup no longer exists"; !errors.Is(err, ErrGone) || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
	// ...or disappears after any one of the files a read needs.
	for _, v := range []Version{V1, V2} {
		files := 3
		if v == V1 {
			files = 4
		}
		for after := 1; after < files; after++ {
			dir := filepath.Join(t.TempDir(), "cg")
			os.Mkdir(dir, 0o755)
			if v == V1 {
				v1Fixture(t, dir, 1<<20, v1Stat, "1")
			} else {
				v2Fixture(t, dir, 1<<20, v2Stat, "max")
			}
			n := 0
			rf := func(name string) ([]byte, error) {
				if n++; n == after+1 {
					if err := os.RemoveAll(dir); err != nil {
						t.Fatal(err)
					}
				}
				return os.ReadFile(name)
			}
			_, err := read(dir, v, rf)
			if !errors.Is(err, ErrGone) || strings.Contains(err.Error(), "\n") {
				t.Errorf("%v, removed after %d reads: %v, want one-line ErrGone", v, after, err)
			}
		}
	}
}

func TestMemBadValues(t *testing.T) {
	dir := v1Fixture(t, "", 1<<20, v1Stat, "1")
	// A known key with a value that is not a number is an error naming it.
	stat := strings.Replace(v1Stat.String(), "total_rss 8863744", "total_rss -5", 1)
	writeFiles(t, dir, map[string]string{"memory.stat": stat})
	if _, err := read(dir, V1, os.ReadFile); err == nil || !strings.Contains(err.Error(), "total_rss") {
		t.Errorf("bad total_rss: %v", err)
	}
	// An unknown key's value is never parsed.
	writeFiles(t, dir, map[string]string{"memory.stat": v1Stat.String() + "some_new_key 1 2 3\nnot a number at all\n"})
	if _, err := read(dir, V1, os.ReadFile); err != nil {
		t.Errorf("unknown lines: %v", err)
	}
	// Usage must be a number.
	writeFiles(t, dir, map[string]string{"memory.usage_in_bytes": "lots\n"})
	if _, err := read(dir, V1, os.ReadFile); err == nil || !strings.Contains(err.Error(), "memory.usage_in_bytes") {
		t.Errorf("bad usage: %v", err)
	}
	// So must a limit, other than v2's "max".
	dir = v1Fixture(t, "", 1<<20, v1Stat, "max")
	if _, err := read(dir, V1, os.ReadFile); err == nil || !strings.Contains(err.Error(), "memory.limit_in_bytes") {
		t.Errorf(`v1 limit "max": %v`, err)
	}
	for _, in := range []string{"18446744073709551616", "", "12a"} {
		if n, err := parseUint([]byte(in)); err == nil {
			t.Errorf("parseUint(%q) = %d, want an error", in, n)
		}
	}
	if n, err := parseUint([]byte(" 18446744073709551615\n")); err != nil || n != math.MaxUint64 {
		t.Errorf("parseUint(max uint64) = %d, %v", n, err)
	}
}

func TestMemParseStatAllocatesNothing(t *testing.T) {
	for _, tc := range []struct {
		v    Version
		stat []byte
	}{{V1, []byte(v1Stat.String())}, {V2, []byte(v2Stat.String())}} {
		var s Stats
		allocs := testing.AllocsPerRun(100, func() {
			s = Stats{Version: tc.v}
			if err := s.parseStat(tc.stat); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%v: parsing memory.stat allocates %.0f times", tc.v, allocs)
		}
		if s.Present == 0 {
			t.Errorf("%v: nothing parsed", tc.v)
		}
	}
}

func TestMemFieldSource(t *testing.T) {
	for f := Field(0); f < NumFields; f++ {
		want1 := ""
		if k, ok := wantV1Keys[f]; ok {
			want1 = "memory.stat " + k
		}
		if f == Kernel {
			want1 = "memory.kmem.usage_in_bytes"
		}
		if got := f.Source(V1); got != want1 {
			t.Errorf("%v.Source(v1) = %q, want %q", f, got, want1)
		}
		if got, want := f.Source(V2), "memory.stat "+wantV2Keys[f]; got != want {
			t.Errorf("%v.Source(v2) = %q, want %q", f, got, want)
		}
	}
}

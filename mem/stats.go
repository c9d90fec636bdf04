package mem

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"syscall"
)

// ErrNoMemory is returned for a cgroup directory that has no memory
// controller files (another v1 controller's hierarchy, or a v2 cgroup whose
// parent does not enable memory).
var ErrNoMemory = errors.New("no memory controller in this cgroup")

// Field names one of the optional figures of Stats, those taken from
// memory.stat (and, on v1, memory.kmem.usage_in_bytes). A kernel may lack
// any of them; Stats.Present says which were there.
type Field uint8

// The optional figures. Their sources per version are given by Field.Source.
const (
	Anon              Field = iota // anonymous memory: v1 total_rss, v2 anon
	File                           // page cache: v1 total_cache, v2 file
	ActiveAnon                     // v1 total_active_anon, v2 active_anon
	InactiveAnon                   // v1 total_inactive_anon, v2 inactive_anon
	ActiveFile                     // v1 total_active_file, v2 active_file
	InactiveFile                   // v1 total_inactive_file, v2 inactive_file
	MappedFile                     // v1 total_mapped_file, v2 file_mapped
	Shmem                          // v1 total_shmem, v2 shmem
	Kernel                         // v1 memory.kmem.usage_in_bytes, v2 kernel
	Sock                           // v2 sock (v1 has no equivalent in memory.stat)
	Slab                           // v2 slab
	SlabReclaimable                // v2 slab_reclaimable
	SlabUnreclaimable              // v2 slab_unreclaimable
	NumFields                      // number of fields, not a field
)

// fieldInfo maps each field to its name and to its memory.stat key in each
// version ("" where that version's memory.stat has none). v1 keys are the
// hierarchical total_* ones: that is what cAdvisor uses.
var fieldInfo = [NumFields]struct{ name, v1, v2 string }{
	Anon:              {"anon", "total_rss", "anon"},
	File:              {"file", "total_cache", "file"},
	ActiveAnon:        {"active_anon", "total_active_anon", "active_anon"},
	InactiveAnon:      {"inactive_anon", "total_inactive_anon", "inactive_anon"},
	ActiveFile:        {"active_file", "total_active_file", "active_file"},
	InactiveFile:      {"inactive_file", "total_inactive_file", "inactive_file"},
	MappedFile:        {"mapped_file", "total_mapped_file", "file_mapped"},
	Shmem:             {"shmem", "total_shmem", "shmem"},
	Kernel:            {"kernel", "", "kernel"},
	Sock:              {"sock", "", "sock"},
	Slab:              {"slab", "", "slab"},
	SlabReclaimable:   {"slab_reclaimable", "", "slab_reclaimable"},
	SlabUnreclaimable: {"slab_unreclaimable", "", "slab_unreclaimable"},
}

// String returns the field's version-neutral name, such as "inactive_file".
func (f Field) String() string {
	if f < NumFields {
		return fieldInfo[f].name
	}
	return fmt.Sprintf("Field(%d)", int(f))
}

// Source says where the field comes from in a cgroup of version v, such as
// "memory.stat total_inactive_file", or "" if that version has no source.
func (f Field) Source(v Version) string {
	if f >= NumFields {
		return ""
	}
	if f == Kernel && v == V1 {
		return v1KmemFile
	}
	if key := statKey(f, v); key != "" {
		return "memory.stat " + key
	}
	return ""
}

func statKey(f Field, v Version) string {
	switch v {
	case V1:
		return fieldInfo[f].v1
	case V2:
		return fieldInfo[f].v2
	}
	return ""
}

// FieldSet is a set of fields.
type FieldSet uint32

// Has reports whether f is in the set.
func (s FieldSet) Has(f Field) bool { return f < NumFields && s&(1<<f) != 0 }

// Stats holds one reading of a cgroup's memory. All figures are bytes.
type Stats struct {
	Dir     string  // the cgroup directory read
	Version Version // its hierarchy version

	// Usage is memory.usage_in_bytes (v1) or memory.current (v2).
	Usage uint64
	// WorkingSet is what kubelet reports as container_memory_working_set_bytes
	// and what `kubectl top` shows: Usage minus InactiveFile, floored at
	// zero; Usage itself when memory.stat has no inactive file key.
	WorkingSet uint64
	// Limit is memory.limit_in_bytes (v1) or memory.max (v2) when Unlimited
	// is false; it is 0 when Unlimited is true.
	Limit     uint64
	Unlimited bool

	// Optional figures; Present says which the kernel reported.
	Anon, File               uint64
	ActiveAnon, InactiveAnon uint64
	ActiveFile, InactiveFile uint64
	MappedFile, Shmem        uint64
	Kernel, Sock             uint64
	Slab, SlabReclaimable    uint64
	SlabUnreclaimable        uint64
	Present                  FieldSet
}

// Has reports whether the kernel reported field f.
func (s Stats) Has(f Field) bool { return s.Present.Has(f) }

// Value returns field f and whether the kernel reported it.
func (s Stats) Value(f Field) (uint64, bool) {
	p := s.field(f)
	if p == nil || !s.Present.Has(f) {
		return 0, false
	}
	return *p, true
}

func (s *Stats) field(f Field) *uint64 {
	switch f {
	case Anon:
		return &s.Anon
	case File:
		return &s.File
	case ActiveAnon:
		return &s.ActiveAnon
	case InactiveAnon:
		return &s.InactiveAnon
	case ActiveFile:
		return &s.ActiveFile
	case InactiveFile:
		return &s.InactiveFile
	case MappedFile:
		return &s.MappedFile
	case Shmem:
		return &s.Shmem
	case Kernel:
		return &s.Kernel
	case Sock:
		return &s.Sock
	case Slab:
		return &s.Slab
	case SlabReclaimable:
		return &s.SlabReclaimable
	case SlabUnreclaimable:
		return &s.SlabUnreclaimable
	}
	return nil
}

func (s *Stats) set(f Field, v uint64) {
	*s.field(f) = v
	s.Present |= 1 << f
}

// LimitPercent returns the working set as a percentage of the limit, and
// false when there is no limit to compare with.
func (s Stats) LimitPercent() (float64, bool) {
	if s.Unlimited || s.Limit == 0 {
		return 0, false
	}
	return float64(s.WorkingSet) / float64(s.Limit) * 100, true
}

// workingSet is cAdvisor's formula: usage minus inactive file cache, never
// below zero (the two files are read at slightly different moments).
func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile >= usage {
		return 0
	}
	return usage - inactiveFile
}

// The files read for each version.
const (
	v1UsageFile = "memory.usage_in_bytes"
	v1LimitFile = "memory.limit_in_bytes"
	v1KmemFile  = "memory.kmem.usage_in_bytes"
	v2UsageFile = "memory.current"
	v2LimitFile = "memory.max"
	statFile    = "memory.stat"
)

// UsageFile names the file Stats.Usage comes from in this version.
func (v Version) UsageFile() string {
	if v == V2 {
		return v2UsageFile
	}
	return v1UsageFile
}

// LimitFile names the file Stats.Limit comes from in this version.
func (v Version) LimitFile() string {
	if v == V2 {
		return v2LimitFile
	}
	return v1LimitFile
}

// V1UnlimitedLimit is the smallest memory.limit_in_bytes that cgroup v1
// uses to mean "no limit": the largest int64 rounded down to a whole page
// (9223372036854771712 with 4 KiB pages). Anything at or above it is
// unlimited.
var V1UnlimitedLimit = uint64(math.MaxInt64) / uint64(os.Getpagesize()) * uint64(os.Getpagesize())

// Read reads the memory figures of the cgroup directory dir, v1 or v2 as
// told by its filesystem's magic number.
func Read(dir string) (Stats, error) {
	v, err := detect(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("read memory of cgroup %s: %w", dir, err)
	}
	return read(dir, v, os.ReadFile)
}

// readFileFunc is os.ReadFile; tests substitute it to remove a cgroup
// between two reads.
type readFileFunc func(name string) ([]byte, error)

func read(dir string, v Version, rf readFileFunc) (Stats, error) {
	s := Stats{Dir: dir, Version: v}
	if err := s.load(rf); err != nil {
		return Stats{}, fmt.Errorf("read memory of cgroup %s: %w", dir, err)
	}
	return s, nil
}

func (s *Stats) load(rf readFileFunc) error {
	v := s.Version
	if v != V1 && v != V2 {
		return fmt.Errorf("unknown cgroup version %d", int(v))
	}
	data, err := readCgroupFile(rf, s.Dir, v.UsageFile(), false)
	if err != nil {
		return err
	}
	if s.Usage, err = parseUint(data); err != nil {
		return fmt.Errorf("parse %s: %w", v.UsageFile(), err)
	}

	data, err = readCgroupFile(rf, s.Dir, statFile, false)
	if err != nil {
		return err
	}
	if err := s.parseStat(data); err != nil {
		return fmt.Errorf("parse %s: %w", statFile, err)
	}
	// A missing inactive file key subtracts nothing, as in cAdvisor.
	s.WorkingSet = s.Usage
	if s.Has(InactiveFile) {
		s.WorkingSet = workingSet(s.Usage, s.InactiveFile)
	}

	data, err = readCgroupFile(rf, s.Dir, v.LimitFile(), false)
	if err != nil {
		return err
	}
	if err := s.parseLimit(data); err != nil {
		return fmt.Errorf("parse %s: %w", v.LimitFile(), err)
	}

	if v == V1 {
		data, err = readCgroupFile(rf, s.Dir, v1KmemFile, true)
		if err != nil {
			return err
		}
		if data != nil {
			n, err := parseUint(data)
			if err != nil {
				return fmt.Errorf("parse %s: %w", v1KmemFile, err)
			}
			s.set(Kernel, n)
		}
	}
	return nil
}

// readCgroupFile reads dir/name. A missing file in a directory that is gone
// (or a kernfs file whose cgroup was removed after it was opened) is
// ErrGone; a missing optional file is (nil, nil).
func readCgroupFile(rf readFileFunc, dir, name string, optional bool) ([]byte, error) {
	data, err := rf(dir + "/" + name)
	if err == nil {
		if data == nil {
			data = []byte{}
		}
		return data, nil
	}
	if errors.Is(err, syscall.ENODEV) {
		return nil, ErrGone
	}
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(dir); errors.Is(serr, fs.ErrNotExist) {
			return nil, ErrGone
		}
		if optional {
			return nil, nil
		}
		return nil, fmt.Errorf("%w (no %s)", ErrNoMemory, name)
	}
	return nil, err
}

func (s *Stats) parseLimit(data []byte) error {
	data = trimSpace(data)
	if s.Version == V2 && string(data) == "max" {
		s.Unlimited = true
		return nil
	}
	n, err := parseUint(data)
	if err != nil {
		return err
	}
	if s.Version == V1 && n >= V1UnlimitedLimit {
		s.Unlimited = true
		return nil
	}
	s.Limit = n
	return nil
}

// parseStat reads the "key value" lines of memory.stat, keeping the keys
// of s.Version that Stats has a field for and ignoring every other line.
func (s *Stats) parseStat(data []byte) error {
	for len(data) > 0 {
		line := data
		if i := indexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		sp := indexByte(line, ' ')
		if sp <= 0 {
			continue
		}
		key := line[:sp]
		for f := Field(0); f < NumFields; f++ {
			want := statKey(f, s.Version)
			if want == "" || string(key) != want {
				continue
			}
			n, err := parseUint(line[sp+1:])
			if err != nil {
				return fmt.Errorf("key %s: %w", want, err)
			}
			s.set(f, n)
			break
		}
	}
	return nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

var errBadNumber = errors.New("not an unsigned decimal number")

// parseUint parses a decimal uint64 without converting to a string, so a
// Read allocates nothing per memory.stat line.
func parseUint(b []byte) (uint64, error) {
	b = trimSpace(b)
	if len(b) == 0 {
		return 0, errBadNumber
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %q", errBadNumber, b)
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, fmt.Errorf("%w: %q overflows", errBadNumber, b)
		}
		n = n*10 + d
	}
	return n, nil
}

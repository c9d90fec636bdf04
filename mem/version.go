// Package mem reads a cgroup's memory figures and computes the working set
// exactly as kubelet (through cAdvisor) does, so podtap's numbers match what
// `kubectl top` and container_memory_working_set_bytes report.
//
// Read is cheap: a statfs and three or four small os.ReadFile calls, no maps
// and no per-line allocation, so it can be called every second.
package mem

import (
	"errors"
	"fmt"
	"syscall"
)

// Version is the cgroup hierarchy version a directory belongs to.
type Version int

// The two cgroup hierarchy versions.
const (
	V1 Version = 1
	V2 Version = 2
)

func (v Version) String() string {
	switch v {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return fmt.Sprintf("Version(%d)", int(v))
}

// Filesystem magic numbers from <linux/magic.h>.
const (
	cgroupSuperMagic  = 0x27e0eb
	cgroup2SuperMagic = 0x63677270
)

// ErrNotCgroup is returned for a directory that is on neither a cgroup v1
// nor a cgroup v2 filesystem.
var ErrNotCgroup = errors.New("not on a cgroup filesystem")

// ErrGone is returned when a cgroup directory disappears before or while it
// is read (its containers exited, or the pod was deleted).
var ErrGone = errors.New("cgroup no longer exists")

// DetectVersion tells a cgroup v1 directory from a cgroup v2 one by the
// magic number of the filesystem it is on, never by its path.
func DetectVersion(dir string) (Version, error) {
	v, err := detect(dir)
	if err != nil {
		return 0, fmt.Errorf("detect cgroup version of %s: %w", dir, err)
	}
	return v, nil
}

func detect(dir string) (Version, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return 0, ErrGone
		}
		return 0, fmt.Errorf("statfs: %w", err)
	}
	switch uint64(st.Type) {
	case cgroupSuperMagic:
		return V1, nil
	case cgroup2SuperMagic:
		return V2, nil
	}
	return 0, fmt.Errorf("%w (filesystem magic %#x)", ErrNotCgroup, uint64(st.Type))
}

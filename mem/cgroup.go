package mem

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
)

// CgroupOfPID returns the directory of the memory cgroup that process pid
// is in. It reads /proc/PID/cgroup for the process's cgroup path and
// /proc/self/mountinfo for where that hierarchy is mounted. A cgroup v1
// memory controller is preferred when one is mounted (a hybrid layout keeps
// memory there); otherwise the cgroup v2 unified mount is used, provided
// its cgroup.controllers lists memory.
func CgroupOfPID(pid int) (string, error) {
	procCgroup, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("find memory cgroup of pid %d: no such process", pid)
		}
		return "", fmt.Errorf("find memory cgroup of pid %d: %w", pid, err)
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find memory cgroup of pid %d: %w", pid, err)
	}
	dir, err := memoryCgroupDir(procCgroup, mountinfo, os.ReadFile)
	if err != nil {
		return "", fmt.Errorf("find memory cgroup of pid %d: %w", pid, err)
	}
	return dir, nil
}

// cgroupMount is one cgroup filesystem mount from mountinfo.
type cgroupMount struct {
	root, point string // the hierarchy path mounted, and where
	v2          bool
	controllers []string // v1 only: the super options, which name the controllers
}

// memoryCgroupDir maps a /proc/PID/cgroup file onto the mounts in a
// mountinfo file. readFile reads a v2 mount's cgroup.controllers.
func memoryCgroupDir(procCgroup, mountinfo []byte, readFile readFileFunc) (string, error) {
	var v1Path, v2Path string
	var hasV1, hasV2 bool
	for _, line := range strings.Split(string(procCgroup), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		id, rest, ok1 := strings.Cut(line, ":")
		ctrls, path, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			continue
		}
		if id == "0" && ctrls == "" {
			v2Path, hasV2 = path, true
			continue
		}
		for _, c := range strings.Split(ctrls, ",") {
			if c == "memory" {
				v1Path, hasV1 = path, true
			}
		}
	}
	mounts := parseCgroupMounts(mountinfo)

	if hasV1 {
		for _, m := range mounts {
			if !m.v2 && slices.Contains(m.controllers, "memory") {
				return mapOnto(m, v1Path)
			}
		}
	}
	if hasV2 {
		for _, m := range mounts {
			if !m.v2 {
				continue
			}
			ctl, err := readFile(m.point + "/cgroup.controllers")
			if err != nil || !slices.Contains(strings.Fields(string(ctl)), "memory") {
				continue
			}
			return mapOnto(m, v2Path)
		}
	}
	switch {
	case hasV1:
		return "", errors.New("its cgroup v1 memory hierarchy is not mounted here")
	case hasV2:
		return "", errors.New("no cgroup v1 memory controller is mounted, and no cgroup v2 mount has the memory controller")
	}
	return "", errors.New("no memory controller in its /proc/PID/cgroup")
}

// mapOnto turns a cgroup path from /proc/PID/cgroup into a directory under
// the mount, which may show only a subtree of the hierarchy (inside a
// container, root is the container's own cgroup).
func mapOnto(m cgroupMount, path string) (string, error) {
	if strings.HasSuffix(path, " (deleted)") {
		return "", ErrGone
	}
	rel := path
	if m.root != "/" {
		if path != m.root && !strings.HasPrefix(path, m.root+"/") {
			return "", fmt.Errorf("cgroup %s is outside %s, the part of the hierarchy mounted on %s", path, m.root, m.point)
		}
		rel = path[len(m.root):]
	}
	if strings.HasPrefix(rel, "/..") {
		return "", fmt.Errorf("cgroup %s is outside this process's cgroup namespace", path)
	}
	rel = strings.TrimSuffix(rel, "/")
	return m.point + rel, nil
}

// parseCgroupMounts returns the cgroup and cgroup2 mounts of a mountinfo
// file, in order. Each line is
//
//	ID parent major:minor root mount-point options [optional...] - fstype source super-options
func parseCgroupMounts(mountinfo []byte) []cgroupMount {
	var mounts []cgroupMount
	for line := range bytes.SplitSeq(mountinfo, []byte{'\n'}) {
		fields := strings.Fields(string(line))
		sep := -1
		for i, f := range fields {
			if f == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(fields) < sep+3 {
			continue
		}
		fstype := fields[sep+1]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		m := cgroupMount{
			root:  unescapeMountinfo(fields[3]),
			point: unescapeMountinfo(fields[4]),
			v2:    fstype == "cgroup2",
		}
		if !m.v2 && len(fields) > sep+3 {
			m.controllers = strings.Split(fields[sep+3], ",")
		}
		mounts = append(mounts, m)
	}
	return mounts
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

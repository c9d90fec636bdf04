package kube

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netns"

	"github.com/podtap/podtap/mem"
	"github.com/podtap/podtap/target"
)

// NodeFS says where the node's process and cgroup file systems are.
type NodeFS struct {
	// Proc is the node's /proc. Its processes must be the node's: podtap
	// runs in the host PID namespace (hostPID in a pod).
	Proc string
	// CgroupRoots are directories where the node's cgroup hierarchies are
	// mounted (v1: a directory per controller under each, such as
	// memory/; v2: the unified hierarchy itself, or unified/), searched
	// in order for a pod's cgroup when /proc/PID/cgroup's path does not
	// map onto podtap's own mounts (as inside a cgroup namespace).
	CgroupRoots []string
}

// DefaultNodeFS is /proc, and the cgroup file systems under /sys/fs/cgroup;
// in a podtap pod (see deploy/), which mounts the host's /proc and /sys
// under /host, those come first: a container's own /sys/fs/cgroup may show
// only its own cgroup, and the host's /proc shows the node's processes
// even without hostPID.
func DefaultNodeFS() NodeFS {
	fs := NodeFS{Proc: "/proc"}
	if _, err := os.Stat("/host/proc/1/cgroup"); err == nil {
		fs.Proc = "/host/proc"
	}
	if st, err := os.Stat("/host/sys/fs/cgroup"); err == nil && st.IsDir() {
		fs.CgroupRoots = append(fs.CgroupRoots, "/host/sys/fs/cgroup")
	}
	fs.CgroupRoots = append(fs.CgroupRoots, "/sys/fs/cgroup")
	return fs
}

// podRef is what the node-side lookup needs to know of a pod.
type podRef struct {
	key          string   // namespace/name, for messages
	uid          string   // metadata.uid
	containerIDs []string // bare IDs of its started containers
}

// cgroupLine is one line of /proc/PID/cgroup.
type cgroupLine struct {
	v2          bool
	controllers []string
	path        string
}

func parseProcCgroup(b []byte) []cgroupLine {
	var lines []cgroupLine
	for _, l := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		id, rest, ok1 := strings.Cut(l, ":")
		ctrls, p, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || p == "" {
			continue
		}
		cl := cgroupLine{path: p, v2: id == "0" && ctrls == ""}
		if !cl.v2 {
			cl.controllers = strings.Split(ctrls, ",")
		}
		lines = append(lines, cl)
	}
	return lines
}

// containerIDOfCgroupName returns the container ID a cgroup directory name
// carries: a bare 64-hex-digit ID (cgroupfs driver), or one behind a
// runtime's prefix, with systemd's .scope (cri-containerd-, crio-, docker-).
// CRI-O's crio-conmon-<id> holds the container monitor, which runs in the
// host's network namespace: it is not the container.
func containerIDOfCgroupName(name string) (string, bool) {
	base := strings.TrimSuffix(name, ".scope")
	if strings.HasPrefix(base, "crio-conmon-") {
		return "", false
	}
	for _, prefix := range []string{"cri-containerd-", "crio-", "docker-"} {
		if rest, ok := strings.CutPrefix(base, prefix); ok {
			base = rest
			break
		}
	}
	if len(base) != 64 || strings.Trim(base, "0123456789abcdef") != "" {
		return "", false
	}
	return base, true
}

// belongsTo reports whether a cgroup path is the pod's: kubelet's pod
// cgroup for its UID or one below it (but not CRI-O's conmon), or, where
// kubelet makes no pod cgroups, a container cgroup named by one of its
// container IDs.
func belongsTo(cgroupPath string, p podRef) bool {
	if uid, _, ok := mem.ParseCgroupPath(cgroupPath); ok {
		return uid == p.uid
	}
	if hasPodComponent(cgroupPath) {
		return false // inside some pod cgroup, but not in a container (conmon)
	}
	for _, c := range strings.Split(cgroupPath, "/") {
		if id, ok := containerIDOfCgroupName(c); ok && slices.Contains(p.containerIDs, id) {
			return true
		}
	}
	return false
}

// hasPodComponent reports whether some prefix of a cgroup path is a pod
// cgroup.
func hasPodComponent(cgroupPath string) bool {
	_, ok := podCgroupPrefix(cgroupPath)
	return ok
}

// podCgroupPrefix cuts a cgroup path after its innermost pod cgroup
// component: /kubepods/burstable/pod<uid>/<id> -> /kubepods/burstable/pod<uid>.
func podCgroupPrefix(cgroupPath string) (string, bool) {
	parts := strings.Split(cgroupPath, "/")
	for i := len(parts); i > 0; i-- {
		prefix := strings.Join(parts[:i], "/")
		if _, id, ok := mem.ParseCgroupPath(prefix); ok && id == "" {
			return prefix, true
		}
	}
	return "", false
}

// proc is a process found to belong to a pod.
type proc struct {
	pid    int
	cgroup []cgroupLine
}

// podProcesses lists the pod's processes on this node, in PID order.
func (nfs NodeFS) podProcesses(p podRef) ([]proc, error) {
	entries, err := os.ReadDir(nfs.Proc)
	if err != nil {
		return nil, fmt.Errorf("list processes in %s: %w", nfs.Proc, err)
	}
	self := os.Getpid()
	var found []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join(nfs.Proc, e.Name(), "cgroup"))
		if err != nil {
			continue // gone meanwhile, or a kernel thread being torn down
		}
		lines := parseProcCgroup(b)
		for _, l := range lines {
			if belongsTo(l.path, p) {
				found = append(found, proc{pid: pid, cgroup: lines})
				break
			}
		}
	}
	slices.SortFunc(found, func(a, b proc) int { return a.pid - b.pid })
	return found, nil
}

// errHostNetns: every process of the pod runs in podtap's network namespace.
var errHostNetns = errors.New("its processes run in the node's network namespace")

// vethOf finds the host end of the pod's veth through the network
// namespace of one of its processes. The pod's containers share one
// namespace, so the first process whose namespace can be opened and is
// not podtap's own decides.
func (nfs NodeFS) vethOf(procs []proc) (*target.Target, error) {
	self, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("open own network namespace: %w", err)
	}
	defer self.Close()
	var lastErr error
	for _, pr := range procs {
		ns, err := netns.GetFromPath(filepath.Join(nfs.Proc, strconv.Itoa(pr.pid), "ns", "net"))
		if err != nil {
			lastErr = fmt.Errorf("open network namespace of process %d: %w", pr.pid, err)
			continue // exited meanwhile
		}
		if ns.Equal(self) {
			ns.Close()
			lastErr = errHostNetns
			continue
		}
		t, err := target.Veth(ns)
		ns.Close()
		if err != nil {
			return nil, fmt.Errorf("network namespace of its process %d: %w", pr.pid, err)
		}
		return t, nil
	}
	return nil, lastErr
}

// podCgroupDir finds the directory of the pod-level memory cgroup of a
// pod's process: through podtap's own cgroup mounts when the process's
// cgroup maps onto them, else by looking for the path's kubepods part
// under NodeFS.CgroupRoots. "" when the process is in no pod cgroup
// (a runtime without kubelet's pod cgroups).
func (nfs NodeFS) podCgroupDir(pr proc) (string, error) {
	// The memory controller's path: v1 if mounted, else the unified one.
	var p string
	v2 := false
	for _, l := range pr.cgroup {
		if !l.v2 && slices.Contains(l.controllers, "memory") {
			p = l.path
		}
	}
	if p == "" {
		for _, l := range pr.cgroup {
			if l.v2 {
				p, v2 = l.path, true
			}
		}
	}
	podPath, ok := podCgroupPrefix(p)
	if !ok {
		return "", fmt.Errorf("process %d is in no pod cgroup (memory cgroup %q)", pr.pid, p)
	}
	if nfs.Proc == "/proc" {
		if dir, err := mem.CgroupOfPID(pr.pid); err == nil {
			if podDir, ok := podCgroupPrefix(dir); ok && isDir(podDir) {
				return podDir, nil
			}
		}
	}
	if dir := searchCgroup(nfs.CgroupRoots, podPath, v2); dir != "" {
		return dir, nil
	}
	return "", fmt.Errorf("pod cgroup %s of process %d not found under %s", podPath, pr.pid, strings.Join(nfs.CgroupRoots, ", "))
}

// podCgroupDirOf is podCgroupDir of the first of procs that has one.
func (nfs NodeFS) podCgroupDirOf(procs []proc) (string, error) {
	err := errors.New("no process")
	for _, pr := range procs {
		var dir string
		if dir, err = nfs.podCgroupDir(pr); err == nil {
			return dir, nil
		}
	}
	return "", err
}

// searchCgroup finds the directory of a cgroup path (as /proc/PID/cgroup
// shows it, perhaps relative to a cgroup namespace: /../../kubepods...)
// under the hierarchies mounted in roots. Where the path is not found as
// it is, its part from the first kubepods component on is looked for a few
// levels down, as kubelet may run under a parent cgroup (kind's /kubelet/).
func searchCgroup(roots []string, cgroupPath string, v2 bool) string {
	var parts []string
	kube := -1
	for _, c := range strings.Split(cgroupPath, "/") {
		if c == "" || c == "." || c == ".." {
			continue
		}
		if kube < 0 && strings.Contains(c, "kubepods") {
			kube = len(parts)
		}
		parts = append(parts, c)
	}
	var bases []string
	for _, r := range roots {
		if v2 {
			bases = append(bases, r, filepath.Join(r, "unified"))
		} else {
			bases = append(bases, filepath.Join(r, "memory"))
		}
	}
	for _, b := range bases {
		if d := filepath.Join(b, path.Join(parts...)); len(parts) > 0 && isDir(d) {
			return d
		}
	}
	if kube < 0 {
		return ""
	}
	suffix := path.Join(parts[kube:]...)
	for _, b := range bases {
		if d := findBelow(b, suffix, 3); d != "" {
			return d
		}
	}
	return ""
}

// findBelow looks for dir/<suffix> in dir and its subdirectories down to
// depth levels.
func findBelow(dir, suffix string, depth int) string {
	if d := filepath.Join(dir, suffix); isDir(d) {
		return d
	}
	if depth == 0 {
		return ""
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range entries {
		if e.IsDir() {
			if d := findBelow(filepath.Join(dir, e.Name()), suffix, depth-1); d != "" {
				return d
			}
		}
	}
	return ""
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

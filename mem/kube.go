package mem

import "strings"

// ParseCgroupPath finds the pod UID and container ID in a cgroup path laid
// out by kubelet with either cgroup driver:
//
//	cgroupfs: .../kubepods/burstable/pod<uid>/<id>   (also besteffort, and
//	          .../kubepods/pod<uid>/<id> for guaranteed pods)
//	systemd:  .../kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
//	          (also crio-<id>.scope and docker-<id>.scope)
//
// ok is true when the path is a pod cgroup (containerID is then "") or a
// container cgroup inside one (or a cgroup nested in a container's). It is
// false for anything else, such as CRI-O's crio-conmon-<id>.scope, which
// holds the container monitor and not a container; all results are then
// empty. When pods are nested (a kubelet inside a pod), the innermost wins.
func ParseCgroupPath(path string) (podUID, containerID string, ok bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(parts) - 1; i >= 0; i-- {
		uid, isPod := podComponent(parts, i)
		if !isPod {
			continue
		}
		if i == len(parts)-1 {
			return uid, "", true
		}
		_, id, isContainer := parseContainerCgroupName(parts[i+1])
		if !isContainer {
			return "", "", false
		}
		return uid, id, true
	}
	return "", "", false
}

// podComponent reports whether parts[i] is a pod-level cgroup name, and the
// pod UID it carries.
func podComponent(parts []string, i int) (string, bool) {
	c := parts[i]
	if name, isSlice := strings.CutSuffix(c, ".slice"); isSlice {
		// systemd: [<root>-]kubepods[-burstable|-besteffort]-pod<uid>.slice,
		// the UID's dashes turned into underscores.
		at := strings.LastIndex(name, "-pod")
		if at < 0 {
			return "", false
		}
		prefix := name[:at]
		if !strings.HasSuffix(prefix, "kubepods") &&
			!strings.HasSuffix(prefix, "kubepods-burstable") &&
			!strings.HasSuffix(prefix, "kubepods-besteffort") {
			return "", false
		}
		uid := strings.ReplaceAll(name[at+len("-pod"):], "_", "-")
		return uid, validPodUID(uid)
	}
	// cgroupfs: kubepods/pod<uid> or kubepods/{burstable,besteffort}/pod<uid>.
	uid, isPod := strings.CutPrefix(c, "pod")
	if !isPod || !validPodUID(uid) || i == 0 {
		return "", false
	}
	switch parent := parts[i-1]; parent {
	case "kubepods":
		return uid, true
	case "burstable", "besteffort":
		return uid, i >= 2 && parts[i-2] == "kubepods"
	}
	return "", false
}

// validPodUID accepts a UUID (36 characters) or the 32 hex digits kubelet
// derives for static pods.
func validPodUID(uid string) bool {
	if len(uid) != 36 && len(uid) != 32 {
		return false
	}
	for _, c := range uid {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == '-') {
			return false
		}
	}
	return true
}

// cgroupNamePrefixes maps the prefix a runtime gives a container's cgroup
// to the runtime's name as it appears in a containerStatus ID.
var cgroupNamePrefixes = []struct{ prefix, runtime string }{
	{"cri-containerd-", "containerd"},
	{"crio-", "cri-o"},
	{"docker-", "docker"},
}

// parseContainerCgroupName recognises a container's cgroup directory name:
// a bare 64-hex-digit ID (cgroupfs driver) or <prefix><id>[.scope] for the
// runtimes above. crio-conmon-<id> is not a container. runtime is "" for a
// bare ID, which does not tell.
func parseContainerCgroupName(name string) (runtime, id string, ok bool) {
	base, scope := strings.CutSuffix(name, ".scope")
	if strings.HasPrefix(base, "crio-conmon-") {
		return "", "", false
	}
	for _, p := range cgroupNamePrefixes {
		if rest, found := strings.CutPrefix(base, p.prefix); found {
			if !validContainerID(rest) {
				return "", "", false
			}
			return p.runtime, rest, true
		}
	}
	if scope || !validContainerID(base) {
		return "", "", false
	}
	return "", base, true
}

// validContainerID accepts the 64 lowercase hex digits that containerd,
// CRI-O and Docker use as container IDs.
func validContainerID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ParseContainerID splits a containerStatus containerID such as
// "containerd://<id>", "cri-o://<id>" or "docker://<id>" into the runtime
// and the bare ID. ok is false unless the string has exactly that form.
func ParseContainerID(s string) (runtime, id string, ok bool) {
	runtime, id, found := strings.Cut(s, "://")
	if !found || runtime == "" || id == "" || strings.Contains(id, "/") {
		return "", "", false
	}
	return runtime, id, true
}

package kube

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

const (
	testUID   = "5f0b7c1e-2d3a-4b5c-8d9e-0a1b2c3d4e5f"
	otherUID  = "0a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3d"
	staticUID = "0123456789abcdef0123456789abcdef" // kubelet's hash for static pods
)

var (
	appID     = strings.Repeat("a1", 32)
	sidecarID = strings.Repeat("b2", 32)
	pauseID   = strings.Repeat("c3", 32) // the sandbox: not in containerStatuses
	strangeID = strings.Repeat("d4", 32)
)

// under turns a UID into its systemd slice form.
func under(uid string) string { return strings.ReplaceAll(uid, "-", "_") }

// TestBelongsTo covers every cgroup path form a pod's process may show in
// /proc/PID/cgroup: cgroupfs and systemd drivers, cgroup v1 and v2,
// containerd, CRI-O and Docker, QoS classes, nesting under a parent
// cgroup, a cgroup namespace, and runtimes without pod cgroups.
func TestBelongsTo(t *testing.T) {
	pod := podRef{key: "shop/web", uid: testUID, containerIDs: []string{appID, sidecarID}}
	u := under(testUID)
	for _, tc := range []struct {
		name string
		path string
		want bool
	}{
		{"cgroupfs v1 burstable, containerd or docker", "/kubepods/burstable/pod" + testUID + "/" + appID, true},
		{"cgroupfs besteffort", "/kubepods/besteffort/pod" + testUID + "/" + sidecarID, true},
		{"cgroupfs guaranteed", "/kubepods/pod" + testUID + "/" + appID, true},
		{"cgroupfs sandbox (pause) not in the status", "/kubepods/burstable/pod" + testUID + "/" + pauseID, true},
		{"cgroupfs cri-o", "/kubepods/burstable/pod" + testUID + "/crio-" + appID, true},
		{"cgroupfs nested under a parent (kind)", "/kubelet/kubepods/burstable/pod" + testUID + "/" + appID, true},
		{"systemd containerd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/cri-containerd-" + appID + ".scope", true},
		{"systemd cri-o", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u + ".slice/crio-" + appID + ".scope", true},
		{"systemd docker", "/kubepods.slice/kubepods-pod" + u + ".slice/docker-" + appID + ".scope", true},
		{"systemd cri-o with crun's nested container cgroup", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/crio-" + appID + ".scope/container", true},
		{"systemd nested (kind)", "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + u + ".slice/cri-containerd-" + appID + ".scope", true},
		{"v2 in a cgroup namespace", "/../../kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/cri-containerd-" + appID + ".scope", true},
		{"static pod UID", "/kubepods/burstable/pod" + staticUID + "/" + strangeID, false},
		{"pod cgroup itself", "/kubepods/burstable/pod" + testUID, true},
		{"cri-o conmon: host network, not the pod", "/kubepods/burstable/pod" + testUID + "/crio-conmon-" + appID, false},
		{"cri-o conmon systemd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/crio-conmon-" + appID + ".scope", false},
		{"another pod, even with our container ID", "/kubepods/burstable/pod" + otherUID + "/" + appID, false},
		{"no pod cgroups: docker cgroupfs", "/docker/" + appID, true},
		{"no pod cgroups: docker systemd", "/system.slice/docker-" + sidecarID + ".scope", true},
		{"no pod cgroups: cri-o systemd", "/machine.slice/crio-" + appID + ".scope", true},
		{"no pod cgroups: containerd", "/k8s.io/" + appID, true},
		{"no pod cgroups: a stranger", "/docker/" + strangeID, false},
		{"host process", "/system.slice/ssh.service", false},
		{"root", "/", false},
		{"an ID too short", "/docker/" + appID[:63], false},
		{"upper-case hex is no ID", "/docker/" + strings.ToUpper(appID), false},
	} {
		if got := belongsTo(tc.path, pod); got != tc.want {
			t.Errorf("%s: belongsTo(%q) = %v, want %v", tc.name, tc.path, got, tc.want)
		}
	}
}

func TestContainerIDOfCgroupName(t *testing.T) {
	for name, want := range map[string]string{
		appID:                                appID,
		"cri-containerd-" + appID + ".scope": appID,
		"crio-" + appID + ".scope":           appID,
		"crio-" + appID:                      appID,
		"docker-" + appID + ".scope":         appID,
		"crio-conmon-" + appID + ".scope":    "",
		"crio-conmon-" + appID:               "",
		"libpod-" + appID + ".scope":         "",
		appID + "0":                          "",
		"pod" + testUID:                      "",
		"":                                   "",
	} {
		got, ok := containerIDOfCgroupName(name)
		if got != want || ok != (want != "") {
			t.Errorf("containerIDOfCgroupName(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}

// TestContainerIDs takes the IDs of every runtime's containerStatus form,
// of init and ephemeral containers and of a container's last run, and
// ignores what is not an ID.
func TestContainerIDs(t *testing.T) {
	pod := &corev1.Pod{Status: corev1.PodStatus{
		ContainerStatuses: []corev1.ContainerStatus{
			{Name: "app", ContainerID: "containerd://" + appID},
			{Name: "sidecar", ContainerID: "cri-o://" + sidecarID, LastTerminationState: corev1.ContainerState{
				Terminated: &corev1.ContainerStateTerminated{ContainerID: "cri-o://" + pauseID}}},
			{Name: "waiting"},
			{Name: "bad", ContainerID: "containerd://"},
		},
		InitContainerStatuses:      []corev1.ContainerStatus{{Name: "init", ContainerID: "docker://" + strangeID}},
		EphemeralContainerStatuses: []corev1.ContainerStatus{{Name: "debug", ContainerID: "no-scheme"}},
	}}
	got := strings.Join(containerIDs(pod), ",")
	want := strings.Join([]string{appID, sidecarID, pauseID, strangeID}, ",")
	if got != want {
		t.Errorf("containerIDs = %s, want %s", got, want)
	}
}

func TestPodCgroupPrefix(t *testing.T) {
	u := under(testUID)
	for path, want := range map[string]string{
		"/kubepods/burstable/pod" + testUID + "/" + appID:                                                "/kubepods/burstable/pod" + testUID,
		"/kubepods/burstable/pod" + testUID:                                                              "/kubepods/burstable/pod" + testUID,
		"/sys/fs/cgroup/memory/kubepods/pod" + testUID + "/" + appID:                                     "/sys/fs/cgroup/memory/kubepods/pod" + testUID,
		"/kubepods.slice/kubepods-pod" + u + ".slice/crio-" + appID + ".scope/container":                 "/kubepods.slice/kubepods-pod" + u + ".slice",
		"/../../kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u + ".slice/x.scope": "/../../kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u + ".slice",
		"/docker/" + appID: "",
		"/":                "",
	} {
		got, ok := podCgroupPrefix(path)
		if got != want || ok != (want != "") {
			t.Errorf("podCgroupPrefix(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
}

// fakeNode is a /proc with cgroup files and cgroup hierarchies made of
// plain directories.
type fakeNode struct {
	t     *testing.T
	proc  string
	roots []string
}

func newFakeNode(t *testing.T, nroots int) *fakeNode {
	n := &fakeNode{t: t, proc: t.TempDir()}
	for range nroots {
		n.roots = append(n.roots, t.TempDir())
	}
	return n
}

func (n *fakeNode) process(pid int, cgroupFile string) {
	dir := filepath.Join(n.proc, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte(cgroupFile), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *fakeNode) cgroup(root int, rel string) string {
	dir := filepath.Join(n.roots[root], rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		n.t.Fatal(err)
	}
	return dir
}

func (n *fakeNode) fs() NodeFS { return NodeFS{Proc: n.proc, CgroupRoots: n.roots} }

func v1File(memoryPath string) string {
	return "12:pids:/system.slice\n9:name=systemd:/whatever\n4:memory:" + memoryPath + "\n1:cpu,cpuacct:/\n0::/\n"
}

func v2File(path string) string { return "0::" + path + "\n" }

// TestPodProcessesAndCgroup finds a pod's processes in a fake /proc and
// its pod-level memory cgroup in fake hierarchies, for each layout.
func TestPodProcessesAndCgroup(t *testing.T) {
	u := under(testUID)
	pod := podRef{key: "shop/web", uid: testUID, containerIDs: []string{appID, sidecarID}}
	for _, tc := range []struct {
		name    string
		procs   map[int]string // pid -> /proc/PID/cgroup
		dirs    map[int]string // root index -> directory to create
		wantPID []int
		wantDir string // relative to roots[wantRoot]; "" for an error
		root    int
	}{
		{
			name: "cgroupfs v1",
			procs: map[int]string{
				10: v1File("/kubepods/burstable/pod" + testUID + "/" + pauseID),
				11: v1File("/kubepods/burstable/pod" + testUID + "/" + appID),
				12: v1File("/kubepods/burstable/pod" + otherUID + "/" + strangeID),
				13: v1File("/system.slice/kubelet.service"),
			},
			dirs:    map[int]string{0: "memory/kubepods/burstable/pod" + testUID + "/" + appID},
			wantPID: []int{10, 11},
			wantDir: "memory/kubepods/burstable/pod" + testUID,
		},
		{
			name: "systemd v1, cri-o with conmon beside",
			procs: map[int]string{
				20: v1File("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/crio-conmon-" + appID + ".scope"),
				21: v1File("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/crio-" + appID + ".scope"),
			},
			dirs:    map[int]string{0: "memory/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/crio-" + appID + ".scope"},
			wantPID: []int{21},
			wantDir: "memory/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice",
		},
		{
			name:    "systemd v2",
			procs:   map[int]string{30: v2File("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u + ".slice/cri-containerd-" + sidecarID + ".scope")},
			dirs:    map[int]string{0: "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u + ".slice"},
			wantPID: []int{30},
			wantDir: "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u + ".slice",
		},
		{
			name:    "cgroupfs v2 under a hybrid layout's unified/",
			procs:   map[int]string{31: v2File("/kubepods/pod" + testUID + "/" + appID)},
			dirs:    map[int]string{0: "unified/kubepods/pod" + testUID},
			wantPID: []int{31},
			wantDir: "unified/kubepods/pod" + testUID,
		},
		{
			name:    "v2 seen from a cgroup namespace, host hierarchy in the second root",
			procs:   map[int]string{40: v2File("/../../kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/cri-containerd-" + appID + ".scope")},
			dirs:    map[int]string{1: "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice"},
			wantPID: []int{40},
			wantDir: "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice",
			root:    1,
		},
		{
			name:    "kubelet under a parent cgroup, seen from a namespace below it",
			procs:   map[int]string{50: v2File("/../kubepods.slice/kubepods-pod" + u + ".slice/cri-containerd-" + appID + ".scope")},
			dirs:    map[int]string{0: "kubelet.slice/kubepods.slice/kubepods-pod" + u + ".slice"},
			wantPID: []int{50},
			wantDir: "kubelet.slice/kubepods.slice/kubepods-pod" + u + ".slice",
		},
		{
			name:    "no pod cgroups: found by container ID, no pod cgroup",
			procs:   map[int]string{60: v1File("/docker/" + appID)},
			dirs:    map[int]string{0: "memory/docker/" + appID},
			wantPID: []int{60},
		},
		{
			name:  "not on this node",
			procs: map[int]string{70: v1File("/kubepods/burstable/pod" + otherUID + "/" + strangeID)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newFakeNode(t, 2)
			for pid, f := range tc.procs {
				n.process(pid, f)
			}
			for root, d := range tc.dirs {
				n.cgroup(root, d)
			}
			procs, err := n.fs().podProcesses(pod)
			if err != nil {
				t.Fatal(err)
			}
			var pids []int
			for _, p := range procs {
				pids = append(pids, p.pid)
			}
			if !slices.Equal(pids, tc.wantPID) {
				t.Fatalf("processes %v, want %v", pids, tc.wantPID)
			}
			if len(procs) == 0 {
				return
			}
			dir, err := n.fs().podCgroupDirOf(procs)
			if tc.wantDir == "" {
				if err == nil {
					t.Errorf("pod cgroup %s, want none", dir)
				}
				return
			}
			if want := filepath.Join(n.roots[tc.root], tc.wantDir); dir != want || err != nil {
				t.Errorf("pod cgroup %q, %v; want %q", dir, err, want)
			}
		})
	}
}

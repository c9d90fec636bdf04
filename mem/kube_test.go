package mem

import (
	"strings"
	"testing"
)

func TestMemParseCgroupPath(t *testing.T) {
	const (
		uid = "8d3e2f41-5b6c-4a7d-9e0f-1a2b3c4d5e6f"
		id  = "4f1b0c6a2e9d8b7c5a3f1e0d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4a3f2e1d0c9"
	)
	under := strings.ReplaceAll(uid, "-", "_")
	static := strings.ReplaceAll(uid, "-", "")[:32]
	for _, tc := range []struct {
		path    string
		uid, id string
		ok      bool
	}{
		// cgroupfs driver: burstable, besteffort, guaranteed.
		{"/kubepods/burstable/pod" + uid + "/" + id, uid, id, true},
		{"/kubepods/besteffort/pod" + uid + "/" + id, uid, id, true},
		{"/kubepods/pod" + uid + "/" + id, uid, id, true},
		{"/sys/fs/cgroup/memory/kubepods/burstable/pod" + uid + "/" + id, uid, id, true},
		{"/kubepods/burstable/pod" + uid, uid, "", true},
		{"/kubepods/burstable/pod" + uid + "/", uid, "", true},
		{"/kubepods/burstable/pod" + uid + "/crio-" + id, uid, id, true},
		{"/kubepods/burstable/pod" + static + "/" + id, static, id, true}, // static pod
		{"/kubepods/burstable/pod" + uid + "/" + id + "/init.scope", uid, id, true},
		// systemd driver, each runtime.
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice/cri-containerd-" + id + ".scope", uid, id, true},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + under + ".slice/crio-" + id + ".scope", uid, id, true},
		{"/kubepods.slice/kubepods-pod" + under + ".slice/docker-" + id + ".scope", uid, id, true},
		{"/sys/fs/cgroup/kubepods.slice/kubepods-pod" + under + ".slice", uid, "", true},
		{"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + under + ".slice/cri-containerd-" + id + ".scope", uid, id, true},
		// Nested pods: the innermost one.
		{"/kubepods/pod" + uid + "/" + id + "/kubepods/besteffort/pod" + static + "/" + id[:63] + "a", static, id[:63] + "a", true},
		// Not containers, not pods.
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice/crio-conmon-" + id + ".scope", "", "", false},
		{"/kubepods/burstable/pod" + uid + "/crio-conmon-" + id, "", "", false},
		{"/kubepods/burstable/pod" + uid + "/" + id[:12], "", "", false},
		{"/kubepods/burstable/pod" + uid + "/" + strings.ToUpper(id), "", "", false},
		{"/kubepods/burstable/pod" + uid + "/cri-containerd-" + id + ".mount", "", "", false},
		{"/kubepods/burstable", "", "", false},
		{"/kubepods.slice/kubepods-burstable.slice", "", "", false},
		{"/system.slice/containerd.service", "", "", false},
		{"/user.slice/pod" + uid + "/" + id, "", "", false},          // pod-like name outside kubepods
		{"/kubepods/burstable/podnot-a-uid/" + id, "", "", false},    // bad UID
		{"/kubepods/guaranteed/pod" + uid + "/" + id, "", "", false}, // no such QoS directory
		{"/system.slice/docker-" + id + ".scope", "", "", false},     // a container, but not in a pod
		{"", "", "", false},
		{"/", "", "", false},
	} {
		uidGot, idGot, ok := ParseCgroupPath(tc.path)
		if uidGot != tc.uid || idGot != tc.id || ok != tc.ok {
			t.Errorf("ParseCgroupPath(%q) = %q, %q, %v; want %q, %q, %v", tc.path, uidGot, idGot, ok, tc.uid, tc.id, tc.ok)
		}
	}
}

func TestMemParseContainerID(t *testing.T) {
	const id = "4f1b0c6a2e9d8b7c5a3f1e0d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4a3f2e1d0c9"
	for _, tc := range []struct {
		in          string
		runtime, id string
		ok          bool
	}{
		{"containerd://" + id, "containerd", id, true},
		{"cri-o://" + id, "cri-o", id, true},
		{"docker://" + id, "docker", id, true},
		{id, "", "", false},
		{"containerd://", "", "", false},
		{"://" + id, "", "", false},
		{"containerd:/" + id, "", "", false},
		{"containerd://a/b", "", "", false},
		{"", "", "", false},
	} {
		rt, got, ok := ParseContainerID(tc.in)
		if rt != tc.runtime || got != tc.id || ok != tc.ok {
			t.Errorf("ParseContainerID(%q) = %q, %q, %v; want %q, %q, %v", tc.in, rt, got, ok, tc.runtime, tc.id, tc.ok)
		}
	}
}

func TestMemContainerCgroupRuntime(t *testing.T) {
	const id = "4f1b0c6a2e9d8b7c5a3f1e0d9c8b7a6f5e4d3c2b1a09f8e7d6c5b4a3f2e1d0c9"
	for name, want := range map[string]string{
		"cri-containerd-" + id + ".scope": "containerd",
		"crio-" + id + ".scope":           "cri-o",
		"docker-" + id + ".scope":         "docker",
		"crio-" + id:                      "cri-o",
		id:                                "",
	} {
		rt, got, ok := parseContainerCgroupName(name)
		if !ok || got != id || rt != want {
			t.Errorf("parseContainerCgroupName(%q) = %q, %q, %v; want %q, %q, true", name, rt, got, ok, want, id)
		}
	}
	for _, name := range []string{id + ".scope", "crio-conmon-" + id + ".scope", "crio-conmon-" + id, "pause", ""} {
		if rt, got, ok := parseContainerCgroupName(name); ok {
			t.Errorf("parseContainerCgroupName(%q) = %q, %q, true; want not a container", name, rt, got)
		}
	}
}

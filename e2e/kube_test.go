package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtap/podtap/internal/sandbox"
	"github.com/podtap/podtap/kube"
)

// TestKubeCaptureByName: `podtap capture NAME -n NS` finds the pod through
// the API server and captures its traffic and nothing else's, on one
// pcapng interface named namespace/name even though two containers share
// the pod's network namespace, and records the pod cgroup's memory.
func TestKubeCaptureByName(t *testing.T) {
	e := newKubeEnv(t)
	web := e.addPod(t, kubePodSpec{name: "web-7d9c", labels: map[string]string{"app": "web"}, apps: 2})
	other := e.addPod(t, kubePodSpec{name: "web-other", labels: map[string]string{"app": "web"}, systemd: true, runtime: "cri-o"})
	out := filepath.Join(t.TempDir(), "out.pcapng")

	p := e.capture(t, "web-7d9c", "--uri", "/mytest", "--mem-interval", "100ms", "-w", out)
	p.waitFor(t, "capturing on pod "+web.key())
	request(t, "GET", web.sb.PodURL(false, 8080, "/mytest"), "")
	request(t, "GET", web.sb.PodURL(false, 8080, "/other"), "")
	request(t, "GET", other.sb.PodURL(false, 8080, "/mytest"), "")
	request(t, "GET", web.sb.PodURL(false, 8080, "/mytest"), "")
	time.Sleep(300 * time.Millisecond)
	p.stop(t)

	uris := byInterface(t, readPackets(t, out), map[string]*kubePod{web.key(): web})
	if got := uris[web.key()]; !slices.Equal(got, []string{"/mytest", "/mytest"}) {
		t.Errorf("captured requests %q on %s, want two /mytest; stderr:\n%s", got, web.key(), p.output())
	}
	if n := strings.Count(p.output(), "capturing on"); n != 1 {
		t.Errorf("%d capture points, want one for the pod's two containers:\n%s", n, p.output())
	}
	if want := fmt.Sprintf("memory of pod %s (%s)", web.key(), web.podDir); !strings.Contains(p.output(), want) {
		t.Errorf("no %q in the summary:\n%s", want, p.output())
	}
}

// TestKubeCaptureSelector: `-l` captures every matching pod on this node
// at once, each on its own pcapng interface; a pod that starts running
// during the capture is attached, a deleted pod and a pod whose veth
// vanishes, a pod that finishes and one relabelled out of the selector are
// let go, pods that do not match are never captured, and the file stays
// valid throughout. One pod's host end is a bridge port, one
// pod's cgroups follow the systemd driver with CRI-O's names.
func TestKubeCaptureSelector(t *testing.T) {
	e := newKubeEnv(t)
	br, err := sandbox.NewBridge()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := br.Close(); err != nil {
			t.Errorf("remove bridge: %v", err)
		}
	})
	web := map[string]string{"app": "web"}
	a := e.addPod(t, kubePodSpec{name: "web-a", labels: web})
	b := e.addPod(t, kubePodSpec{name: "web-b", labels: web, systemd: true, runtime: "cri-o", bridge: br})
	db := e.addPod(t, kubePodSpec{name: "db", labels: map[string]string{"app": "db"}})
	c := e.addPod(t, kubePodSpec{name: "web-c", labels: web, runtime: "docker", pending: true})
	d := e.addPod(t, kubePodSpec{name: "web-d", labels: web, systemd: true})
	out := filepath.Join(t.TempDir(), "out.pcapng")

	p := e.capture(t, "-l", "app=web", "--port", "8080", "-w", out)
	p.waitFor(t, "capturing on")
	for _, k := range []*kubePod{a, b, d} {
		if !strings.Contains(p.output(), "pod "+k.key()+" (") {
			t.Fatalf("not capturing on %s:\n%s", k.key(), p.output())
		}
	}
	if strings.Contains(p.output(), db.key()) {
		t.Fatalf("capturing on %s, which does not match:\n%s", db.key(), p.output())
	}
	if !strings.Contains(p.output(), "pod "+c.key()+" is Pending") {
		t.Errorf("no word on the pending pod %s:\n%s", c.key(), p.output())
	}
	request(t, "GET", a.sb.PodURL(false, 8080, "/a1"), "")
	request(t, "GET", b.sb.PodURL(false, 8080, "/b1"), "")
	request(t, "GET", db.sb.PodURL(false, 8080, "/db1"), "")

	// The pending pod starts: attached live.
	e.run(t, c)
	p.waitFor(t, "capturing on pod "+c.key())
	request(t, "GET", c.sb.PodURL(false, 8080, "/c1"), "")

	// a is deleted: let go; its later traffic is not captured.
	e.deletePod(t, a)
	p.waitFor(t, "pod "+a.key()+" ("+a.sb.HostIf+") is gone")
	request(t, "GET", a.sb.PodURL(false, 8080, "/a2"), "")

	// b's sandbox goes away while the API still says Running.
	if err := b.sb.Close(); err != nil {
		t.Fatal(err)
	}
	p.waitFor(t, "pod "+b.key()+" ("+b.sb.HostIf+") is gone")

	request(t, "GET", c.sb.PodURL(false, 8080, "/c2"), "")

	// d finishes: let go.
	request(t, "GET", d.sb.PodURL(false, 8080, "/d1"), "")
	st := d.obj.Status
	st.Phase = corev1.PodSucceeded
	e.setStatus(t, d, st)
	p.waitFor(t, "pod "+d.key()+" ("+d.sb.HostIf+") is gone")
	request(t, "GET", d.sb.PodURL(false, 8080, "/d2"), "")

	// c is relabelled out of the selector: let go.
	cur, err := e.client.CoreV1().Pods(e.ns).Get(t.Context(), c.obj.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Labels = map[string]string{"app": "web-canary"}
	if _, err := e.client.CoreV1().Pods(e.ns).Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p.waitFor(t, "pod "+c.key()+" ("+c.sb.HostIf+") is gone")
	request(t, "GET", c.sb.PodURL(false, 8080, "/c3"), "")
	time.Sleep(300 * time.Millisecond)
	p.stop(t)

	uris := byInterface(t, readPackets(t, out), map[string]*kubePod{a.key(): a, b.key(): b, c.key(): c, d.key(): d})
	for k, want := range map[string][]string{a.key(): {"/a1"}, b.key(): {"/b1"}, c.key(): {"/c1", "/c2"}, d.key(): {"/d1"}} {
		if got := nonEmpty(uris[k]); !slices.Equal(got, want) {
			t.Errorf("%s: requests %q, want %q", k, got, want)
		}
	}
	for _, w := range []string{
		"the interface " + b.sb.HostIf + " of pod " + b.key() + " is gone",
		"pod " + a.key() + " was deleted",
		"pod " + d.key() + " has finished (phase Succeeded)",
		"pod " + c.key() + ` no longer matches "app=web"`,
	} {
		if !strings.Contains(p.output(), w) {
			t.Errorf("no %q in podtap's stderr:\n%s", w, p.output())
		}
	}
	// Each pod's memory is recorded, from its pod-level cgroup.
	side, err := os.ReadFile(strings.TrimSuffix(out, ".pcapng") + ".mem.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	cgroups := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(side)), "\n") {
		var s struct{ Target, Cgroup string }
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			t.Fatalf("memory side file: %v: %s", err, l)
		}
		cgroups[s.Target] = s.Cgroup
	}
	for _, k := range []*kubePod{a, b, c, d} {
		if got := cgroups["pod "+k.key()]; got != k.podDir {
			t.Errorf("memory of pod %s recorded from %q, want %q", k.key(), got, k.podDir)
		}
	}
	t.Logf("podtap's stderr:\n%s", p.output())
}

// TestKubeRefusals: every state in which a pod cannot be captured has its
// own one-line message and exit status 1; misuse of the flags exits 2.
func TestKubeRefusals(t *testing.T) {
	e := newKubeEnv(t)
	running := func(ip string) *corev1.PodStatus {
		return &corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "app", Image: "example.invalid/app:1", ImageID: "example.invalid/app:1", ContainerID: "containerd://" + randomID(t),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		}}}
	}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	pod := func(name, node string, hostNet bool) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: node, HostNetwork: hostNet}}
	}
	e.createPodObject(t, pod("elsewhere", "node-far-away", false), running("10.0.0.1"))
	e.createPodObject(t, pod("unscheduled", "", false), nil)
	e.createPodObject(t, pod("pending", e.node, false), &corev1.PodStatus{Phase: corev1.PodPending,
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: "example.invalid/app:1", State: waiting}}})
	e.createPodObject(t, pod("notstarted", e.node, false), &corev1.PodStatus{Phase: corev1.PodRunning,
		ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: "example.invalid/app:1", State: waiting}}})
	done := running("10.0.0.2")
	done.Phase = corev1.PodSucceeded
	e.createPodObject(t, pod("finished", e.node, false), done)
	e.createPodObject(t, pod("noprocess", e.node, false), running("10.0.0.3"))

	// A host-network pod, whose IP is held by an interface of this node:
	// the host end of a sandbox veth, so that only the test's traffic is seen.
	hostSB := newPod(t)
	e.createPodObject(t, pod("hostnet", e.node, true), running(hostSB.HostIP4.String()))

	// A pod of a macvlan CNI: a process in its namespace, no veth.
	mv, err := sandbox.NewMacvlan("k8smv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mv.Close(); err != nil {
			t.Errorf("remove macvlan pod: %v", err)
		}
	})
	mvPod := e.createPodObject(t, pod("macvlan", e.node, false), nil)
	id := randomID(t)
	dir, err := mv.AddCgroup(filepath.Join(mv.Name, "kubepods", "besteffort", "pod"+string(mvPod.UID), id))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mv.StartIn(t.Context(), dir, "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	st := running("")
	st.ContainerStatuses[0].ContainerID = "containerd://" + id
	mvPod.Status = *st
	if _, err := e.client.CoreV1().Pods(e.ns).UpdateStatus(t.Context(), mvPod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	base := []string{"capture", "--kubeconfig", e.kubeconfig, "--node", e.node, "-n", e.ns, "-w", filepath.Join(t.TempDir(), "x.pcapng")}
	home := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		code int
		want string
	}{
		{"not found", []string{"nope"}, nil, 1, fmt.Sprintf(`pod "nope" not found in namespace %q`, e.ns)},
		{"on another node", []string{"elsewhere"}, nil, 1, fmt.Sprintf(`pod %s/elsewhere runs on node "node-far-away", not on this node %q: run podtap on node-far-away`, e.ns, e.node)},
		{"not scheduled", []string{"unscheduled"}, nil, 1, "pod " + e.ns + "/unscheduled is not scheduled to a node yet (phase Pending)"},
		{"pending", []string{"pending"}, nil, 1, "pod " + e.ns + "/pending is Pending (app: ContainerCreating): its containers have not started, so it has no network to capture yet"},
		{"no container started", []string{"notstarted"}, nil, 1, "pod " + e.ns + "/notstarted has no container started yet (app: ContainerCreating)"},
		{"finished", []string{"finished"}, nil, 1, "pod " + e.ns + "/finished has finished (phase Succeeded)"},
		{"no process on the node", []string{"noprocess"}, nil, 1, "no process of pod " + e.ns + "/noprocess (UID "},
		{"host network", []string{"hostnet"}, nil, 1, "pod " + e.ns + "/hostnet uses the host network (hostNetwork: true) and has no veth of its own; --host-network captures on the node's interface instead, which carries the whole node's traffic"},
		{"macvlan", []string{"macvlan"}, nil, 1, "pod " + e.ns + "/macvlan has no veth to the node: its network namespace has eth0 (macvlan), as with a macvlan or ipvlan CNI; capture on the parent interface with -i"},
		{"bad selector", []string{"-l", "app in ("}, nil, 1, `selector "app in ("`},
		{"POD and -l", []string{"web", "-l", "app=web"}, nil, 2, "give a POD or -l SELECTOR, not both"},
		{"-A with a POD", []string{"web", "-A"}, nil, 2, "-A goes with -l SELECTOR, not with a POD name"},
		{"two PODs", []string{"web", "db"}, nil, 2, "one POD at most"},
		{"POD and --netns", []string{"web", "--netns", "x"}, nil, 2, "give exactly one target"},
	} {
		code, _, stderr := e.podtap(t, tc.env, append(slices.Clone(base), tc.args...)...)
		if code != tc.code || !strings.HasPrefix(stderr, "podtap: ") || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and one line with %q", tc.name, code, stderr, tc.code, tc.want)
		}
	}

	// Without any configuration: a clear message. KUBERNETES_SERVICE_HOST
	// unset rules out in-cluster.
	env := []string{"HOME=" + home, "KUBECONFIG=", "KUBERNETES_SERVICE_HOST="}
	code, _, stderr := e.podtap(t, env, "capture", "web", "--node", e.node, "-w", filepath.Join(t.TempDir(), "y.pcap"))
	if code != 1 || !strings.Contains(stderr, "no Kubernetes configuration: give --kubeconfig, set KUBECONFIG, create ~/.kube/config") {
		t.Errorf("no configuration: exit %d, %q", code, stderr)
	}
	if code, _, stderr = e.podtap(t, nil, "capture", "--namespace", "x", "-i", "lo"); code != 2 || !strings.Contains(stderr, "--namespace needs a POD or -l SELECTOR") {
		t.Errorf("-n without a pod: exit %d, %q", code, stderr)
	}

	// The host-network pod with the opt-in: a warning, and the capture
	// runs on the interface holding its IP. The kubeconfig comes from
	// ~/.kube/config this time.
	if err := os.MkdirAll(filepath.Join(home, ".kube"), 0o700); err != nil {
		t.Fatal(err)
	}
	kc, _ := os.ReadFile(e.kubeconfig)
	if err := os.WriteFile(filepath.Join(home, ".kube", "config"), kc, 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = e.podtap(t, env, "capture", "hostnet", "--host-network", "-n", e.ns, "--node", e.node, "--duration", "300ms", "-w", filepath.Join(t.TempDir(), "h.pcapng"))
	want := fmt.Sprintf("podtap: warning: pod %s/hostnet uses the host network: capturing on the node's interface %s, which carries the whole node's traffic, not only the pod's", e.ns, hostSB.HostIf)
	if code != 0 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "capturing on pod "+e.ns+"/hostnet ("+hostSB.HostIf+")") {
		t.Errorf("--host-network: exit %d, stderr:\n%s\nwant %q", code, stderr, want)
	}

	// With -l, pods that cannot be captured are named, and the capture
	// goes on waiting.
	p := start(t, podtapBin, append(slices.Clone(base), "-l", "")...)
	p.waitFor(t, "capturing, waiting for pods")
	p.stop(t)
	for _, w := range []string{"/pending is Pending", "/notstarted has no container started", "/hostnet uses the host network", "/macvlan has no veth", "/noprocess (UID"} {
		if !strings.Contains(p.output(), w) {
			t.Errorf("-l: no %q in:\n%s", w, p.output())
		}
	}
	if strings.Contains(p.output(), "elsewhere") || strings.Contains(p.output(), "unscheduled") || strings.Contains(p.output(), "finished") {
		t.Errorf("-l names pods that are not on this node or long gone:\n%s", p.output())
	}
}

// TestKubeMem: `podtap mem NAMESPACE/NAME` finds the pod's cgroup through
// the API (KUBECONFIG, NODE_NAME) and tells app containers from the sandbox.
func TestKubeMem(t *testing.T) {
	e := newKubeEnv(t)
	web := e.addPod(t, kubePodSpec{name: "web", systemd: true})
	env := []string{"KUBECONFIG=" + e.kubeconfig, "NODE_NAME=" + e.node}
	code, stdout, stderr := e.podtap(t, env, "mem", web.key(), "-o", "json")
	if code != 0 {
		t.Fatalf("podtap mem: exit %d: %s", code, stderr)
	}
	var j struct {
		PodCgroup  string `json:"pod_cgroup"`
		PodUID     string `json:"pod_uid"`
		Containers []struct {
			ID string `json:"id"`
		} `json:"containers"`
		Sandboxes []struct {
			ID string `json:"id"`
		} `json:"sandboxes"`
	}
	if err := json.Unmarshal([]byte(stdout), &j); err != nil {
		t.Fatalf("json: %v: %s", err, stdout)
	}
	if j.PodCgroup != web.podDir || j.PodUID != string(web.obj.UID) || len(j.Containers) != 1 || j.Containers[0].ID != web.appIDs[0] || len(j.Sandboxes) != 1 {
		t.Errorf("podtap mem %s: %s\nwant pod cgroup %s, app container %s and a sandbox", web.key(), stdout, web.podDir, web.appIDs[0])
	}
	e.createPodObject(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "far"}, Spec: corev1.PodSpec{NodeName: "node-far-away"}}, nil)
	code, _, stderr = e.podtap(t, env, "mem", e.ns+"/far")
	if code != 1 || !strings.Contains(stderr, `runs on node "node-far-away"`) {
		t.Errorf("mem of a pod elsewhere: exit %d, %q", code, stderr)
	}
}

// TestKubeDeployRBAC applies deploy/podtap.yaml to the API server, checks
// that the ClusterRole grants exactly what podtap uses and that the
// DaemonSet has what podtap needs and listens nowhere, then runs podtap
// with ServiceAccount tokens under RBAC as that server enforces it: the
// shipped role suffices for every mode, bound to a ServiceAccount, to a
// system:serviceaccount: user or to a system:serviceaccounts: group; a
// token without it gets a clear "forbidden"; and each verb of the role is
// needed by some mode.
func TestKubeDeployRBAC(t *testing.T) {
	e := newKubeEnv(t)
	objs := e.apply(t, loadManifest(t, "../deploy/podtap.yaml"))
	t.Cleanup(func() {
		ctx := context.Background()
		e.client.RbacV1().ClusterRoleBindings().Delete(ctx, "podtap", metav1.DeleteOptions{})
		e.client.RbacV1().ClusterRoles().Delete(ctx, "podtap", metav1.DeleteOptions{})
		e.client.AppsV1().DaemonSets("podtap").Delete(ctx, "podtap", metav1.DeleteOptions{})
		// The namespace stays Terminating without controller-manager; the
		// server goes with the test binary.
	})
	var role *rbacv1.ClusterRole
	var binding *rbacv1.ClusterRoleBinding
	var ds *appsv1.DaemonSet
	for _, o := range objs {
		switch o := o.(type) {
		case *rbacv1.ClusterRole:
			role = o
		case *rbacv1.ClusterRoleBinding:
			binding = o
		case *appsv1.DaemonSet:
			ds = o
		}
	}
	if role == nil || binding == nil || ds == nil {
		t.Fatalf("deploy/podtap.yaml lacks a ClusterRole, ClusterRoleBinding or DaemonSet: %T", objs)
	}
	wantRules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: kube.Permissions}}
	if !reflect.DeepEqual(role.Rules, wantRules) {
		t.Errorf("ClusterRole rules %+v, want exactly %+v", role.Rules, wantRules)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostPID || !spec.HostNetwork || spec.ServiceAccountName != "podtap" || len(spec.Containers) != 1 {
		t.Errorf("DaemonSet: hostPID %v, hostNetwork %v, serviceAccountName %q, %d containers", spec.HostPID, spec.HostNetwork, spec.ServiceAccountName, len(spec.Containers))
	}
	if s := binding.Subjects; len(s) != 1 || s[0].Kind != "ServiceAccount" || s[0].Name != spec.ServiceAccountName || s[0].Namespace != ds.Namespace {
		t.Errorf("ClusterRoleBinding subjects %+v: want the DaemonSet's ServiceAccount", s)
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		if len(c.Ports) > 0 || c.ReadinessProbe != nil || c.LivenessProbe != nil {
			t.Errorf("container %s has ports or probes: %+v", c.Name, c.Ports)
		}
		if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
			t.Errorf("container %s is not privileged", c.Name)
		}
		mounts := map[string]string{}
		for _, m := range c.VolumeMounts {
			mounts[hostPaths[m.Name]] = m.MountPath
		}
		if mounts["/proc"] != "/host/proc" || mounts["/sys"] != "/host/sys" {
			t.Errorf("container %s mounts host paths %v; want /proc at /host/proc and /sys at /host/sys (where podtap looks)", c.Name, mounts)
		}
		var nodeEnv bool
		for _, env := range c.Env {
			nodeEnv = nodeEnv || env.Name == "NODE_NAME" && env.ValueFrom != nil && env.ValueFrom.FieldRef != nil && env.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
		}
		if !nodeEnv {
			t.Errorf("container %s does not get NODE_NAME from spec.nodeName", c.Name)
		}
	}

	web := e.addPod(t, kubePodSpec{name: "web", labels: map[string]string{"app": "web"}})
	out := filepath.Join(t.TempDir(), "out.pcapng")
	run := func(kubeconfig string, args ...string) (int, string) {
		t.Helper()
		var code int
		var stderr string
		if args[0] == "mem" {
			code, _, stderr = e.podtap(t, []string{"KUBECONFIG=" + kubeconfig, "NODE_NAME=" + e.node}, args...)
		} else {
			code, _, stderr = e.podtap(t, nil, append([]string{"capture", "--kubeconfig", kubeconfig, "--node", e.node, "--duration", "200ms", "-w", out}, args...)...)
		}
		return code, stderr
	}
	everything := [][]string{
		{"web", "-n", e.ns},
		{"-l", "app=web", "-n", e.ns},
		{"-A", "-l", "app=web"},
		{"mem", web.key()},
	}
	mustWork := func(who, kubeconfig string) {
		t.Helper()
		for _, args := range everything {
			if code, stderr := run(kubeconfig, args...); code != 0 || (args[0] != "mem" && !strings.Contains(stderr, "capturing on pod "+web.key())) {
				t.Errorf("%s: podtap %q: exit %d:\n%s", who, args, code, stderr)
			}
		}
	}
	mustWork("the DaemonSet's ServiceAccount", e.saKubeconfig(t, ds.Namespace, spec.ServiceAccountName))

	// The shipped role bound to a user and to a group, as RBAC names
	// ServiceAccounts' tokens.
	e.bind(t, "podtap-e2e-user-"+e.ns, nil, rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccount:" + e.ns + ":byuser"})
	mustWork("user system:serviceaccount:"+e.ns+":byuser", e.saKubeconfig(t, e.ns, "byuser"))
	groupNS := e.srv.Namespace(t)
	e.bind(t, "podtap-e2e-group-"+groupNS, nil, rbacv1.Subject{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccounts:" + groupNS})
	mustWork("group system:serviceaccounts:"+groupNS, e.saKubeconfig(t, groupNS, "anyone"))

	// Without the role: forbidden, said clearly, and what to grant.
	code, stderr := run(e.saKubeconfig(t, e.ns, "nobody"), "web", "-n", e.ns)
	want := fmt.Sprintf(`podtap: pods "web" is forbidden: User "system:serviceaccount:%s:nobody" cannot get resource "pods" in API group "" in the namespace %q (podtap needs get, list and watch on pods; the ClusterRole in deploy/podtap.yaml grants them)`, e.ns, e.ns)
	if code != 1 || strings.TrimSpace(stderr) != want {
		t.Errorf("no role: exit %d, stderr %q\nwant %q", code, stderr, want)
	}

	// Least privilege: without any one verb, some mode fails on it.
	for _, tc := range []struct {
		verb string
		args []string
	}{
		{"get", []string{"web", "-n", e.ns}},
		{"list", []string{"-l", "app=web", "-n", e.ns}},
		{"watch", []string{"-l", "app=web", "-n", e.ns}},
	} {
		ns := e.srv.Namespace(t)
		verbs := slices.DeleteFunc(slices.Clone(kube.Permissions), func(v string) bool { return v == tc.verb })
		e.bind(t, "podtap-e2e-no-"+tc.verb+"-"+ns, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: verbs}},
			rbacv1.Subject{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "system:serviceaccounts:" + ns})
		code, stderr := run(e.saKubeconfig(t, ns, "probe"), tc.args...)
		if want := "cannot " + tc.verb + ` resource "pods"`; code != 1 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "is forbidden") {
			t.Errorf("role without %q: podtap %q: exit %d, %q; want it refused with %q", tc.verb, tc.args, code, stderr, want)
		}
	}
}

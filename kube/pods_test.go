package kube

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func testPod(mod func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-7d9c", UID: testUID},
		Spec:       corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{
			Phase:             corev1.PodRunning,
			PodIP:             "10.244.1.7",
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", ContainerID: "containerd://" + appID}},
		},
	}
	if mod != nil {
		mod(p)
	}
	return p
}

// TestCheck gives each state that cannot be captured its own reason and
// message.
func TestCheck(t *testing.T) {
	c := &Client{node: "node-a"}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	for _, tc := range []struct {
		name    string
		mod     func(*corev1.Pod)
		hostOK  bool
		network bool
		reason  Reason
		msg     string
	}{
		{name: "running", network: true},
		{name: "unscheduled", network: true, mod: func(p *corev1.Pod) { p.Spec.NodeName = ""; p.Status = corev1.PodStatus{Phase: corev1.PodPending} },
			reason: NotScheduled, msg: "pod shop/web-7d9c is not scheduled to a node yet (phase Pending)"},
		{name: "other node", network: true, mod: func(p *corev1.Pod) { p.Spec.NodeName = "node-b" },
			reason: OtherNode, msg: `pod shop/web-7d9c runs on node "node-b", not on this node "node-a": run podtap on node-b`},
		{name: "pending", network: true, mod: func(p *corev1.Pod) {
			p.Status = corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "app", State: waiting}}}
		}, reason: Pending, msg: "pod shop/web-7d9c is Pending (app: ContainerCreating): its containers have not started"},
		{name: "no phase yet", network: true, mod: func(p *corev1.Pod) { p.Status = corev1.PodStatus{} },
			reason: Pending, msg: "is Pending"},
		{name: "succeeded", network: true, mod: func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded },
			reason: Finished, msg: "pod shop/web-7d9c has finished (phase Succeeded)"},
		{name: "failed", network: true, mod: func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed },
			reason: Finished, msg: "has finished (phase Failed)"},
		{name: "no container started", network: true, mod: func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: waiting}}
		}, reason: NotStarted, msg: "pod shop/web-7d9c has no container started yet (app: ContainerCreating)"},
		{name: "host network", network: true, mod: func(p *corev1.Pod) { p.Spec.HostNetwork = true },
			reason: HostNetwork, msg: "uses the host network (hostNetwork: true) and has no veth of its own; --host-network captures on the node's interface instead, which carries the whole node's traffic"},
		{name: "host network allowed", network: true, hostOK: true, mod: func(p *corev1.Pod) { p.Spec.HostNetwork = true }},
		{name: "host network, for mem", network: false, mod: func(p *corev1.Pod) { p.Spec.HostNetwork = true }},
	} {
		perr := c.check(testPod(tc.mod), tc.network, tc.hostOK)
		switch {
		case tc.reason == "" && perr != nil:
			t.Errorf("%s: refused: %v", tc.name, perr)
		case tc.reason == "":
		case perr == nil:
			t.Errorf("%s: accepted, want %s", tc.name, tc.reason)
		case perr.Reason != tc.reason || !strings.Contains(perr.Error(), tc.msg) || strings.Contains(perr.Error(), "\n"):
			t.Errorf("%s: %s: %q; want %s: %q", tc.name, perr.Reason, perr, tc.reason, tc.msg)
		}
	}
}

func TestTemporary(t *testing.T) {
	for r, want := range map[Reason]bool{
		NotScheduled: true, Pending: true, NotStarted: true, NoProcess: true,
		NotFound: false, OtherNode: false, Finished: false, HostNetwork: false, NoVeth: false,
	} {
		if got := (&PodError{Reason: r}).Temporary(); got != want {
			t.Errorf("%s: Temporary() = %v", r, got)
		}
	}
}

// writeKubeconfig writes a kubeconfig with contexts a (namespace "team-a")
// and b (no namespace), at servers that differ by port.
func writeKubeconfig(t *testing.T, path, current string) {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	for name, port := range map[string]string{"a": "6443", "b": "7443"} {
		kc.Clusters[name] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:" + port}
		kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: "t-" + name}
		kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	}
	kc.Contexts["a"].Namespace = "team-a"
	kc.CurrentContext = current
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
}

// TestConfigLoading follows kubectl: --kubeconfig over KUBECONFIG;
// --context; the namespace from -n, else the context's, else "default";
// the node from --node, NODE_NAME, else the host name. (~/.kube/config is
// found through HOME, which client-go reads once at start: the e2e tests
// run podtap with a HOME of their own for it.)
func TestConfigLoading(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // never in-cluster here
	dir := t.TempDir()
	explicit := filepath.Join(dir, "explicit")
	fromEnv := filepath.Join(dir, "env")
	writeKubeconfig(t, explicit, "b")
	writeKubeconfig(t, fromEnv, "a")
	t.Setenv("KUBECONFIG", fromEnv)
	if _, err := NewClient(Config{Kubeconfig: filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("--kubeconfig of a missing file: %v", err)
	}
	hostname, _ := os.Hostname()
	for _, tc := range []struct {
		name     string
		env      string // KUBECONFIG
		nodeEnv  string // NODE_NAME
		cfg      Config
		wantHost string
		wantNS   string
		wantNode string
	}{
		{name: "KUBECONFIG", env: fromEnv, wantHost: ":6443", wantNS: "team-a", wantNode: strings.ToLower(hostname)},
		{name: "KUBECONFIG, --context", env: fromEnv, cfg: Config{Context: "b"}, wantHost: ":7443", wantNS: "default", wantNode: strings.ToLower(hostname)},
		{name: "--kubeconfig over KUBECONFIG", env: fromEnv, cfg: Config{Kubeconfig: explicit}, wantHost: ":7443", wantNS: "default"},
		{name: "--context", cfg: Config{Kubeconfig: explicit, Context: "a"}, wantHost: ":6443", wantNS: "team-a"},
		{name: "-n", cfg: Config{Kubeconfig: explicit, Context: "a", Namespace: "shop"}, wantHost: ":6443", wantNS: "shop"},
		{name: "NODE_NAME", env: fromEnv, nodeEnv: "node-x", wantHost: ":6443", wantNS: "team-a", wantNode: "node-x"},
		{name: "--node over NODE_NAME", env: fromEnv, nodeEnv: "node-x", cfg: Config{Node: "node-y"}, wantHost: ":6443", wantNS: "team-a", wantNode: "node-y"},
	} {
		t.Setenv("KUBECONFIG", tc.env)
		t.Setenv("NODE_NAME", tc.nodeEnv)
		c, err := NewClient(tc.cfg)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !strings.HasSuffix(c.host, tc.wantHost) || c.Namespace() != tc.wantNS || (tc.wantNode != "" && c.Node() != tc.wantNode) {
			t.Errorf("%s: server %s, namespace %s, node %s; want *%s, %s, %s", tc.name, c.host, c.Namespace(), c.Node(), tc.wantHost, tc.wantNS, tc.wantNode)
		}
	}
	if _, err := NewClient(Config{Kubeconfig: explicit, Context: "nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown context: %v", err)
	}
}

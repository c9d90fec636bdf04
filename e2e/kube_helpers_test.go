package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/podtap/podtap/internal/kubetest"
	"github.com/podtap/podtap/internal/sandbox"
)

// kubeEnv is one test's corner of the shared API server: a fresh
// namespace, this node's name, and an admin kubeconfig for podtap.
type kubeEnv struct {
	srv        *kubetest.Server
	client     kubernetes.Interface
	ns         string
	node       string
	kubeconfig string
}

func newKubeEnv(t *testing.T) *kubeEnv {
	t.Helper()
	srv := kubetest.Shared(t)
	requireTool(t, "tshark")
	e := &kubeEnv{
		srv:        srv,
		client:     srv.Client(),
		ns:         srv.Namespace(t),
		node:       fmt.Sprintf("podtap-e2e-node-%d", os.Getpid()),
		kubeconfig: filepath.Join(t.TempDir(), "kubeconfig"),
	}
	if err := kubetest.WriteKubeconfig(e.kubeconfig, srv.Config()); err != nil {
		t.Fatal(err)
	}
	return e
}

// capture starts podtap capture on pods with the admin kubeconfig and
// this node's name; args name the pods and filters.
func (e *kubeEnv) capture(t *testing.T, args ...string) *proc {
	t.Helper()
	return start(t, podtapBin, append([]string{"capture", "--kubeconfig", e.kubeconfig, "--node", e.node, "-n", e.ns}, args...)...)
}

// podtap runs podtap to its end with extra environment and returns its
// exit code and output.
func (e *kubeEnv) podtap(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, podtapBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run podtap %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// kubePodSpec describes a sandbox pod and the Pod object that points at it.
type kubePodSpec struct {
	name   string
	labels map[string]string
	// systemd lays out cgroups as kubelet's systemd driver does, else
	// as its cgroupfs driver.
	systemd bool
	runtime string // containerd (default), cri-o or docker
	apps    int    // app containers, each a process; default 1
	bridge  *sandbox.Bridge
	pending bool // leave the pod Pending, with no sandbox yet (see run)
}

// kubePod is a Pod object and, once it runs, its sandbox: a network
// namespace with a veth, an HTTP server on port 8080, and a pause and an
// app process in container cgroups named as the runtime would.
type kubePod struct {
	spec   kubePodSpec
	obj    *corev1.Pod
	sb     *sandbox.Pod
	appIDs []string // bare container IDs in containerStatuses
	podDir string   // the pod-level memory cgroup directory
}

func (p *kubePod) key() string { return p.obj.Namespace + "/" + p.obj.Name }

// addPod creates a Pod bound to this node and, unless spec.pending, its
// sandbox and a Running status.
func (e *kubeEnv) addPod(t *testing.T, spec kubePodSpec) *kubePod {
	t.Helper()
	if spec.runtime == "" {
		spec.runtime = "containerd"
	}
	if spec.apps == 0 {
		spec.apps = 1
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: spec.name, Labels: spec.labels},
		Spec: corev1.PodSpec{
			NodeName:   e.node,
			Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
		},
	}
	for i := 1; i < spec.apps; i++ {
		obj.Spec.Containers = append(obj.Spec.Containers, corev1.Container{Name: fmt.Sprintf("sidecar%d", i), Image: "example.invalid/sidecar:1"})
	}
	obj, err := e.client.CoreV1().Pods(e.ns).Create(t.Context(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", spec.name, err)
	}
	p := &kubePod{spec: spec, obj: obj}
	t.Cleanup(func() { e.deletePod(t, p) })
	if !spec.pending {
		e.run(t, p)
	}
	return p
}

// run gives a pod its sandbox and marks it Running with its containers'
// IDs and IP, as kubelet would once the runtime started it.
func (e *kubeEnv) run(t *testing.T, p *kubePod) {
	t.Helper()
	sb, err := sandbox.New("k8s")
	if err != nil {
		t.Fatalf("sandbox for pod %s: %v", p.spec.name, err)
	}
	p.sb = sb
	t.Cleanup(func() {
		if err := sb.Close(); err != nil {
			t.Errorf("remove sandbox of pod %s: %v", p.spec.name, err)
		}
	})
	if p.spec.bridge != nil {
		if err := sb.JoinBridge(p.spec.bridge); err != nil {
			t.Fatal(err)
		}
	}
	uid := string(p.obj.UID)
	// Under a prefix of its own, as a kubelet nested in another cgroup
	// (kind's /kubelet/) lays it out; removed with the sandbox.
	if p.spec.systemd {
		u := strings.ReplaceAll(uid, "-", "_")
		p.podDir = filepath.Join(sb.Name, "kubepods.slice", "kubepods-burstable.slice", "kubepods-burstable-pod"+u+".slice")
	} else {
		p.podDir = filepath.Join(sb.Name, "kubepods", "burstable", "pod"+uid)
	}
	containerDir := func(id string) string {
		if !p.spec.systemd {
			if p.spec.runtime == "cri-o" {
				return "crio-" + id
			}
			return id
		}
		prefix := map[string]string{"containerd": "cri-containerd-", "cri-o": "crio-", "docker": "docker-"}[p.spec.runtime]
		return prefix + id + ".scope"
	}
	startIn := func(id string) {
		dir, err := sb.AddCgroup(filepath.Join(p.podDir, containerDir(id)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sb.StartIn(context.Background(), dir, "sleep", "600"); err != nil {
			t.Fatal(err)
		}
	}
	startIn(randomID(t)) // the sandbox's pause container: not in the status
	status := corev1.PodStatus{
		Phase:  corev1.PodRunning,
		HostIP: "127.0.0.1",
		PodIP:  sb.PodIP4.String(),
		PodIPs: []corev1.PodIP{{IP: sb.PodIP4.String()}, {IP: sb.PodIP6.String()}},
	}
	p.appIDs = nil
	for _, c := range p.obj.Spec.Containers {
		id := randomID(t)
		startIn(id)
		p.appIDs = append(p.appIDs, id)
		status.ContainerStatuses = append(status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: p.spec.runtime + "://" + id, Ready: true, Started: ptr(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		})
	}
	p.podDir = filepath.Join(sandbox.MemoryRoot, p.podDir)
	serveHTTP(t, sb, 8080)
	e.setStatus(t, p, status)
}

func ptr[T any](v T) *T { return &v }

// setStatus writes a pod's status through the status subresource.
func (e *kubeEnv) setStatus(t *testing.T, p *kubePod, status corev1.PodStatus) {
	t.Helper()
	cur, err := e.client.CoreV1().Pods(e.ns).Get(t.Context(), p.obj.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod %s: %v", p.obj.Name, err)
	}
	cur.Status = status
	if p.obj, err = e.client.CoreV1().Pods(e.ns).UpdateStatus(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update status of pod %s: %v", p.obj.Name, err)
	}
}

// deletePod deletes a pod's object at once, as kubelet confirms it; the
// sandbox stays until the test removes it or ends.
func (e *kubeEnv) deletePod(t *testing.T, p *kubePod) {
	err := e.client.CoreV1().Pods(e.ns).Delete(context.Background(), p.obj.Name, kubetest.DeleteNow())
	if err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete pod %s: %v", p.obj.Name, err)
	}
}

// createPodObject creates a Pod from obj and sets its status, with no
// sandbox: for pods podtap must refuse before looking at the node.
func (e *kubeEnv) createPodObject(t *testing.T, obj *corev1.Pod, status *corev1.PodStatus) *corev1.Pod {
	t.Helper()
	if len(obj.Spec.Containers) == 0 {
		obj.Spec.Containers = []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}
	}
	created, err := e.client.CoreV1().Pods(e.ns).Create(t.Context(), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", obj.Name, err)
	}
	t.Cleanup(func() {
		e.client.CoreV1().Pods(e.ns).Delete(context.Background(), created.Name, kubetest.DeleteNow())
	})
	if status != nil {
		created.Status = *status
		if created, err = e.client.CoreV1().Pods(e.ns).UpdateStatus(t.Context(), created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("update status of pod %s: %v", obj.Name, err)
		}
	}
	return created
}

func randomID(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// packet is one frame of a pcapng file as tshark reads it.
type packet struct {
	iface, src, dst, uri string
}

// readPackets lists a capture file's frames with their pcapng interface
// name; tshark failing to read the file fails the test.
func readPackets(t *testing.T, file string) []packet {
	t.Helper()
	out, err := exec.Command("tshark", "-r", file, "-T", "fields", "-E", "separator=|",
		"-e", "frame.interface_name", "-e", "ip.src", "-e", "ip.dst", "-e", "http.request.uri").Output()
	if err != nil {
		var stderr string
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("tshark -r %s: %v %s", file, err, stderr)
	}
	var pkts []packet
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		f := strings.Split(l, "|")
		for len(f) < 4 {
			f = append(f, "")
		}
		pkts = append(pkts, packet{iface: f[0], src: f[1], dst: f[2], uri: f[3]})
	}
	return pkts
}

// byInterface groups the request URIs of packets by interface name, and
// checks that each packet of an interface is to or from pods[iface].
func byInterface(t *testing.T, pkts []packet, pods map[string]*kubePod) map[string][]string {
	t.Helper()
	uris := map[string][]string{}
	for _, pk := range pkts {
		p := pods[pk.iface]
		if p == nil {
			t.Errorf("packet on interface %q, which names none of the pods %v: %+v", pk.iface, keys(pods), pk)
			continue
		}
		if ip := p.sb.PodIP4.String(); pk.src != ip && pk.dst != ip {
			t.Errorf("packet on %s is not the pod's (%s): %+v", pk.iface, ip, pk)
		}
		uris[pk.iface] = append(uris[pk.iface], pk.uri)
	}
	return uris
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// nonEmpty drops empty strings (packets without a request line).
func nonEmpty(ss []string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// loadManifest decodes every object of a multi-document YAML file.
func loadManifest(t *testing.T, path string) []runtime.Object {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := yaml.NewYAMLReader(bufio.NewReader(f))
	var objs []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		if strings.TrimSpace(string(doc)) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode %s: %v\n%s", path, err, doc)
		}
		objs = append(objs, obj)
	}
}

// apply creates the objects of a manifest with strict field validation,
// as `kubectl apply` would, and returns them as the server stored them.
func (e *kubeEnv) apply(t *testing.T, objs []runtime.Object) []runtime.Object {
	t.Helper()
	ctx := t.Context()
	opts := metav1.CreateOptions{FieldValidation: "Strict"}
	var out []runtime.Object
	for _, obj := range objs {
		var got runtime.Object
		var err error
		switch o := obj.(type) {
		case *corev1.Namespace:
			got, err = e.client.CoreV1().Namespaces().Create(ctx, o, opts)
		case *corev1.ServiceAccount:
			got, err = e.client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
		case *rbacv1.ClusterRole:
			got, err = e.client.RbacV1().ClusterRoles().Create(ctx, o, opts)
		case *rbacv1.ClusterRoleBinding:
			got, err = e.client.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
		case *appsv1.DaemonSet:
			got, err = e.client.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, opts)
		default:
			t.Fatalf("manifest object %T: the test does not know how to create it", obj)
		}
		if apierrors.IsAlreadyExists(err) {
			// Left by an earlier run on this server (-count): namespaces
			// are never removed without controller-manager.
			got, err = obj, nil
		}
		if err != nil {
			t.Fatalf("create %T from the manifest: %v", obj, err)
		}
		out = append(out, got)
	}
	return out
}

// saKubeconfig writes a kubeconfig that authenticates as a ServiceAccount
// (created if missing) with a token from the TokenRequest API.
func (e *kubeEnv) saKubeconfig(t *testing.T, namespace, name string) string {
	t.Helper()
	_, err := e.client.CoreV1().ServiceAccounts(namespace).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create service account %s/%s: %v", namespace, name, err)
	}
	cfg, err := e.srv.ServiceAccountConfig(t.Context(), namespace, name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig-"+name)
	if err := kubetest.WriteKubeconfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	return path
}

// bind binds a ClusterRole to subjects: a new one with rules, or with nil
// rules the shipped "podtap". What it creates is removed when the test ends.
func (e *kubeEnv) bind(t *testing.T, name string, rules []rbacv1.PolicyRule, subjects ...rbacv1.Subject) {
	t.Helper()
	ctx := t.Context()
	roleName := name
	if rules != nil {
		if _, err := e.client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.client.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	} else {
		roleName = "podtap" // the shipped one
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: roleName},
		Subjects:   subjects,
	}
	if _, err := e.client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.client.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

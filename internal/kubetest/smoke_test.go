package kubetest_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podtap/podtap/internal/kubetest"
)

func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }

func TestPodStatusRoundTrip(t *testing.T) {
	srv := kubetest.Shared(t)
	t.Logf("server start to /readyz 200: %v", srv.StartupTime())
	ctx := t.Context()
	ns := srv.Namespace(t)
	pods := srv.Client().CoreV1().Pods(ns)

	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.PodSpec{
			NodeName:   "node-a",
			Containers: []corev1.Container{{Name: "app", Image: "example.invalid/web:1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	if pod.Spec.ServiceAccountName != "default" {
		t.Errorf("serviceAccountName %q: want the admission plugin to set \"default\"", pod.Spec.ServiceAccountName)
	}

	containerID := "containerd://" + randomHex(t, 32)
	pod.Status = corev1.PodStatus{
		Phase:  corev1.PodRunning,
		HostIP: "172.18.0.2",
		PodIP:  "10.244.1.7",
		PodIPs: []corev1.PodIP{{IP: "10.244.1.7"}},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name:        "app",
			Image:       "example.invalid/web:1",
			ImageID:     "example.invalid/web@sha256:" + randomHex(t, 32),
			ContainerID: containerID,
			Ready:       true,
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}},
		}},
	}
	if _, err := pods.UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update pod status: %v", err)
	}

	// The query a node agent makes: the pods bound to its node.
	list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-a"})
	if err != nil {
		t.Fatalf("list pods on node-a: %v", err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("pods on node-a: got %d, want 1", len(list.Items))
	}
	got := list.Items[0]
	if got.Status.Phase != corev1.PodRunning || got.Status.PodIP != "10.244.1.7" ||
		len(got.Status.ContainerStatuses) != 1 || got.Status.ContainerStatuses[0].ContainerID != containerID {
		t.Errorf("status read back: phase %q podIP %q containers %+v", got.Status.Phase, got.Status.PodIP, got.Status.ContainerStatuses)
	}

	if err := pods.Delete(ctx, "web", kubetest.DeleteNow()); err != nil {
		t.Fatalf("delete pod: %v", err)
	}
	if _, err := pods.Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get deleted pod: got %v, want NotFound", err)
	}
}

func TestServiceAccountRBAC(t *testing.T) {
	srv := kubetest.Shared(t)
	ctx := t.Context()
	ns := srv.Namespace(t)
	admin := srv.Client()

	for _, name := range []string{"reader", "outsider"} {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create service account %s: %v", name, err)
		}
	}
	roleName := ns + "-pod-reader" // cluster-scoped: unique per test
	_, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: roleName},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""},
			Resources: []string{"pods"},
			Verbs:     []string{"get", "list", "watch"},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create cluster role: %v", err)
	}
	_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: roleName},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roleName},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "reader", Namespace: ns}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create cluster role binding: %v", err)
	}

	reader := saClient(t, srv, ns, "reader")
	review, err := reader.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("self subject review: %v", err)
	}
	if want := "system:serviceaccount:" + ns + ":reader"; review.Status.UserInfo.Username != want {
		t.Errorf("token authenticates as %q, want %q", review.Status.UserInfo.Username, want)
	}

	// The RBAC authorizer learns of new bindings through a watch: allow it a moment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := reader.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("list pods as reader: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := reader.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list secrets as reader: got %v, want Forbidden", err)
	}

	outsider := saClient(t, srv, ns, "outsider")
	if _, err := outsider.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("list pods as outsider: got %v, want Forbidden", err)
	}
}

// TestKubeconfigForSubprocess checks the file a test hands to a program it
// runs with --kubeconfig.
func TestKubeconfigForSubprocess(t *testing.T) {
	srv := kubetest.Shared(t)
	ctx := t.Context()
	ns := srv.Namespace(t)

	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := kubetest.WriteKubeconfig(path, srv.Config()); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	version, err := client.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version through kubeconfig: %v", err)
	}
	if !strings.HasPrefix(version.GitVersion, "v1.") {
		t.Errorf("server version %q: the build did not stamp the release", version.GitVersion)
	}
	if _, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Errorf("get namespace through kubeconfig: %v", err)
	}

	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Log("no kubectl: not checking the kubeconfig from a subprocess")
		return
	}
	saCfg, err := srv.ServiceAccountConfig(ctx, ns, "default")
	if err != nil {
		t.Fatal(err)
	}
	saPath := filepath.Join(t.TempDir(), "kubeconfig-sa")
	if err := kubetest.WriteKubeconfig(saPath, saCfg); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", saPath,
		"auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").Output()
	if err != nil {
		t.Fatalf("kubectl auth whoami: %v", err)
	}
	if want := "system:serviceaccount:" + ns + ":default"; string(out) != want {
		t.Errorf("kubectl auth whoami: %q, want %q", out, want)
	}
}

func saClient(t *testing.T, srv *kubetest.Server, ns, name string) kubernetes.Interface {
	t.Helper()
	cfg, err := srv.ServiceAccountConfig(t.Context(), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

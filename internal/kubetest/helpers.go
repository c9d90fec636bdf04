package kubetest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// shared is the server of this test binary, set up by Main.
var shared struct {
	mainRan bool
	srv     *Server
}

// Main starts the test binary's server, runs the tests and stops the server.
// Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }
//
// If EnvAssets is unset, the tests run and Shared skips them. If the server
// does not start, no test runs and Main returns 1: in CI, where EnvAssets is
// set, a broken server must fail the build rather than skip.
func Main(m *testing.M) int {
	flag.Parse() // for testing.Verbose
	shared.mainRan = true
	if os.Getenv(EnvAssets) == "" {
		return m.Run()
	}
	srv, err := Start(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
		return 1
	}
	if testing.Verbose() {
		fmt.Fprintf(os.Stderr, "kubetest: kube-apiserver at %s ready in %v\n",
			srv.cfg.Host, srv.StartupTime().Round(10*time.Millisecond))
	}
	shared.srv = srv
	code := m.Run()
	if err := srv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Shared returns the server that Main started. It skips the test if
// EnvAssets is unset, and fails it if TestMain does not call Main.
func Shared(t testing.TB) *Server {
	t.Helper()
	if !shared.mainRan {
		t.Fatal("kubetest: TestMain must call kubetest.Main")
	}
	if shared.srv == nil {
		t.Skip(ErrNoAssets.Error())
	}
	return shared.srv
}

// Namespace creates a namespace with a fresh name and its "default"
// ServiceAccount, and returns the name. The namespace is not deleted
// afterwards: without controller-manager it would only stay Terminating.
func (s *Server) Namespace(t testing.TB) string {
	t.Helper()
	ctx := t.Context()
	ns, err := s.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "podtap-test-",
			Annotations:  map[string]string{"podtap.test/name": t.Name()},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	_, err = s.client.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create default service account in %s: %v", ns.Name, err)
	}
	return ns.Name
}

// ServiceAccountToken mints a one-hour token for an existing ServiceAccount
// through the TokenRequest API. Requests made with it authenticate as
// system:serviceaccount:<namespace>:<name>, subject to RBAC.
func (s *Server) ServiceAccountToken(ctx context.Context, namespace, name string) (string, error) {
	expiry := int64(3600)
	tr, err := s.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}},
		metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request token for service account %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// ServiceAccountConfig returns a configuration that authenticates with a
// fresh token for the ServiceAccount and carries no admin credentials.
func (s *Server) ServiceAccountConfig(ctx context.Context, namespace, name string) (*rest.Config, error) {
	token, err := s.ServiceAccountToken(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	cfg := rest.AnonymousClientConfig(s.cfg)
	cfg.BearerToken = token
	return cfg, nil
}

// WriteKubeconfig writes a kubeconfig file for cfg (server, CA, and a bearer
// token or client certificate) to path, for running a program such as podtap
// with --kubeconfig. The file is written with mode 0600.
func WriteKubeconfig(path string, cfg *rest.Config) error {
	const name = "kubetest"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthority:     cfg.CAFile,
		CertificateAuthorityData: cfg.CAData,
		TLSServerName:            cfg.ServerName,
	}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{
		Token:                 cfg.BearerToken,
		TokenFile:             cfg.BearerTokenFile,
		ClientCertificate:     cfg.CertFile,
		ClientCertificateData: cfg.CertData,
		ClientKey:             cfg.KeyFile,
		ClientKeyData:         cfg.KeyData,
	}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	kc.CurrentContext = name
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// DeleteNow returns delete options with grace period 0. Without a kubelet to
// confirm that containers stopped, a pod bound to a node is otherwise only
// marked for deletion and never goes away.
func DeleteNow() metav1.DeleteOptions {
	var zero int64
	return metav1.DeleteOptions{GracePeriodSeconds: &zero}
}

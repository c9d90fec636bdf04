// Package kubetest runs a real etcd and kube-apiserver on loopback for
// podtap's tests.
//
// The binaries come from hack/kube/install.sh (`make kube-assets`), and
// PODTAP_KUBE_ASSETS names the directory holding them; `make test` sets it.
// One server serves a whole test binary:
//
//	func TestMain(m *testing.M) { os.Exit(kubetest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		srv := kubetest.Shared(t) // skips if PODTAP_KUBE_ASSETS is unset
//		ns := srv.Namespace(t)
//		...
//	}
//
// Only etcd and kube-apiserver run: no controller-manager, scheduler or
// kubelet. So:
//   - a deleted namespace stays Terminating for good; take a fresh one per
//     test from [Server.Namespace];
//   - no controller creates the "default" ServiceAccount. The ServiceAccount
//     admission plugin stays enabled, so pods get a serviceAccountName and a
//     token volume as in a real cluster, and [Server.Namespace] creates the
//     "default" ServiceAccount itself;
//   - a pod bound to a node (spec.nodeName) is only marked for deletion unless
//     deleted with grace period 0 ([DeleteNow]);
//   - pod status is whatever the test writes through the status subresource
//     (UpdateStatus).
package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// EnvAssets names the environment variable that holds the directory with
// the kube-apiserver and etcd binaries.
const EnvAssets = "PODTAP_KUBE_ASSETS"

// ErrNoAssets is returned by Start when EnvAssets is unset.
var ErrNoAssets = errors.New(EnvAssets + " is not set: run `make kube-assets` and set " +
	EnvAssets + " to the directory it prints (`make test` does both)")

// defaultStartTimeout bounds Start when its context has no deadline.
const defaultStartTimeout = 2 * time.Minute

// Server is a running etcd and kube-apiserver pair.
type Server struct {
	cfg     *rest.Config
	client  kubernetes.Interface
	startup time.Duration

	dir       string
	etcd      *process
	apiserver *process

	stopOnce sync.Once
	stopErr  error
}

// Start starts etcd and kube-apiserver from the binaries in the directory
// named by EnvAssets, on free loopback ports with a fresh temporary
// directory, and returns once /readyz answers 200. ctx bounds only the
// start; call Stop to end the server.
func Start(ctx context.Context) (*Server, error) {
	assets := os.Getenv(EnvAssets)
	if assets == "" {
		return nil, ErrNoAssets
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("kube assets from %s: %w (run `make kube-assets`)", EnvAssets, err)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}
	removeStaleDirs()

	// Ports are picked by binding :0 and closing again, so another process
	// can take one before etcd or kube-apiserver binds it; try again then.
	var err error
	for range 3 {
		var s *Server
		s, err = start(ctx, assets)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, errPortInUse) {
			return nil, err
		}
	}
	return nil, err
}

// start makes one attempt at starting the pair.
func start(ctx context.Context, assets string) (_ *Server, err error) {
	began := time.Now()
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort := ports[0], ports[1], ports[2]

	dir, err := os.MkdirTemp("", tempPrefix+strconv.Itoa(os.Getpid())+"-")
	if err != nil {
		return nil, fmt.Errorf("create server directory: %w", err)
	}
	s := &Server{dir: dir}
	defer func() {
		if err != nil {
			_ = s.Stop()
		}
	}()

	pkiDir := filepath.Join(dir, "pki")
	if err := os.Mkdir(pkiDir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki directory: %w", err)
	}
	certs, err := writePKI(pkiDir)
	if err != nil {
		return nil, err
	}
	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	tokenFile := filepath.Join(pkiDir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write token file: %w", err)
	}

	etcdURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(etcdPort))
	peerURL := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))
	s.etcd, err = startProcess("etcd", filepath.Join(assets, "etcd"), []string{
		"--name=kubetest",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + etcdURL,
		"--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=kubetest=" + peerURL,
		"--unsafe-no-fsync", // throwaway data: durability buys nothing
	}, filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	if err := waitHealthy(ctx, s.etcd, http.DefaultClient, etcdURL+"/health", ""); err != nil {
		return nil, err
	}

	s.apiserver, err = startProcess("kube-apiserver", filepath.Join(assets, "kube-apiserver"), []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		// No Endpoints for the kubernetes Service: nothing here could reach them.
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + pkiDir,
		"--tls-cert-file=" + certs.certFile,
		"--tls-private-key-file=" + certs.keyFile,
		"--client-ca-file=" + certs.caFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + certs.saPubFile,
		"--service-account-signing-key-file=" + certs.saKeyFile,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--token-auth-file=" + tokenFile,
		"--allow-privileged=true", // podtap's own pods are privileged
		"--profiling=false",
	}, filepath.Join(dir, "kube-apiserver.log"))
	if err != nil {
		return nil, err
	}

	host := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certs.caPEM)
	httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer httpClient.CloseIdleConnections()
	if err := waitHealthy(ctx, s.apiserver, httpClient, host+"/readyz", token); err != nil {
		return nil, err
	}
	s.startup = time.Since(began)

	s.cfg = &rest.Config{
		Host:            host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: certs.caPEM},
		// Tests issue bursts of requests; client-side throttling only slows them.
		QPS:       100,
		Burst:     200,
		UserAgent: "podtap-kubetest",
	}
	s.client, err = kubernetes.NewForConfig(s.cfg)
	if err != nil {
		return nil, fmt.Errorf("create admin client: %w", err)
	}
	return s, nil
}

// waitHealthy polls url until it answers 200, p exits or ctx ends.
func waitHealthy(ctx context.Context, p *process, client *http.Client, url, token string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		if p.exited() {
			if p.logContains("address already in use") {
				return fmt.Errorf("%s: %w", p.name, errPortInUse)
			}
			return p.exitError()
		}
		reqCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, url, nil)
		if err != nil {
			cancel()
			return fmt.Errorf("probe %s: %w", p.name, err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		cancel()
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s at %s: %w (last answer: %s)%s", p.name, url, ctx.Err(), last, p.logTail())
		case <-tick.C:
		}
	}
}

// Config returns a copy of the admin configuration: a bearer token in group
// system:masters, trusting the server's CA.
func (s *Server) Config() *rest.Config { return rest.CopyConfig(s.cfg) }

// Client returns an admin clientset.
func (s *Server) Client() kubernetes.Interface { return s.client }

// StartupTime is how long Start took from choosing ports to /readyz 200.
func (s *Server) StartupTime() time.Duration { return s.startup }

// Stop kills kube-apiserver and etcd, waits for both and removes the
// server's temporary directory. It is safe to call more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		// The data is thrown away, so there is nothing to shut down gently.
		if s.apiserver != nil {
			s.apiserver.kill()
		}
		if s.etcd != nil {
			s.etcd.kill()
		}
		if err := os.RemoveAll(s.dir); err != nil {
			s.stopErr = fmt.Errorf("remove server directory: %w", err)
		}
	})
	return s.stopErr
}

// tempPrefix starts the name of every server directory; the creator's PID
// follows, so a later Start can remove what a killed test binary left.
const tempPrefix = "podtap-kube-"

// removeStaleDirs removes server directories whose creating process is gone.
func removeStaleDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*-*"))
	for _, m := range matches {
		pidStr, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(m), tempPrefix), "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		// A zombie counts as gone: PID 1 may never reap it.
		if state := procState(pid); state == "" || state == "Z" {
			_ = os.RemoveAll(m)
		}
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		// Held open until all are chosen, so the n ports differ.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate admin token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

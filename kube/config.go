// Package kube finds the pods to capture through the Kubernetes API and
// their network namespaces and host-side veths on this node.
//
// Resolution through the API: a kubeconfig (--kubeconfig, KUBECONFIG,
// ~/.kube/config, --context) or the in-cluster configuration; one pod by
// name or the pods matching a label selector, always limited to the pods
// bound to this node (a field selector spec.nodeName=<node>).
//
// Lookup on the node, runtime-agnostic: a pod's processes are found by
// scanning /proc/*/cgroup for the pod UID (kubelet's pod cgroup, cgroupfs or
// systemd driver, cgroup v1 or v2) or one of its container IDs; the network
// namespace of such a process leads to the pod end of its veth, whose peer
// is the host end to attach to, routed or enslaved to a bridge. No
// container runtime socket is needed.
//
// Watch keeps a capture's set of pods current: pods that start, stop, move
// to another sandbox or lose their veth are attached or let go as events.
package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Config says how to reach the API server and which node this is.
type Config struct {
	// Kubeconfig is the kubeconfig file; "" follows kubectl: the files
	// in KUBECONFIG, else ~/.kube/config, else the in-cluster
	// configuration of a pod's ServiceAccount.
	Kubeconfig string
	Context    string // the kubeconfig context; "" for its current one
	// Namespace of pods given by name or selector; "" follows kubectl:
	// the context's namespace, in a pod its own, else "default".
	Namespace string
	// Node is this node's name; "" is NODE_NAME, else the host name.
	Node string
}

// apiTimeout bounds each get and list request.
const apiTimeout = 30 * time.Second

// Permissions are the API requests podtap makes, as RBAC verbs on the
// core group's pods: get (a pod by name, and podtap mem), list (pods by
// selector, and on relisting), watch (while capturing). The ClusterRole in
// deploy/ grants exactly these.
var Permissions = []string{"get", "list", "watch"}

// Client talks to the API server for one node.
type Client struct {
	cs        kubernetes.Interface
	host      string
	namespace string
	node      string
	fs        NodeFS
	resync    time.Duration // how often Watch re-checks its pods on the node
}

// NewClient loads the configuration and makes a client. It makes no
// request yet.
func NewClient(cfg Config) (*Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = cfg.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: cfg.Context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	rc, err := cc.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, errors.New("no Kubernetes configuration: give --kubeconfig, set KUBECONFIG, create ~/.kube/config, or run podtap in a pod with a ServiceAccount")
		}
		return nil, fmt.Errorf("load Kubernetes configuration: %w", err)
	}
	ns := cfg.Namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, fmt.Errorf("load Kubernetes configuration: %w", err)
		}
	}
	return NewClientFor(rc, ns, cfg.Node)
}

// NewClientFor makes a client from a REST configuration. namespace ""
// is "default"; node "" is NODE_NAME, else the host name.
func NewClientFor(rc *rest.Config, namespace, node string) (*Client, error) {
	rc = rest.CopyConfig(rc)
	if rc.UserAgent == "" {
		rc.UserAgent = "podtap"
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("create Kubernetes client for %s: %w", rc.Host, err)
	}
	if namespace == "" {
		namespace = "default"
	}
	if node == "" {
		if node, err = DefaultNode(); err != nil {
			return nil, err
		}
	}
	return &Client{cs: cs, host: rc.Host, namespace: namespace, node: node, fs: DefaultNodeFS(), resync: 2 * time.Second}, nil
}

// DefaultNode is this node's name when --node is not given: NODE_NAME (a
// DaemonSet sets it from spec.nodeName), else the host name in lower case,
// as kubelet names its node by default.
func DefaultNode() (string, error) {
	if n := strings.TrimSpace(os.Getenv("NODE_NAME")); n != "" {
		return n, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("find this node's name (give --node or set NODE_NAME): %w", err)
	}
	return strings.ToLower(strings.TrimSpace(h)), nil
}

// Namespace is the namespace pods are looked up in without --all-namespaces.
func (c *Client) Namespace() string { return c.namespace }

// Node is the name of the node whose pods podtap captures.
func (c *Client) Node() string { return c.node }

// SetNodeFS changes where the node's /proc and cgroup file systems are
// read (tests, or a container with the host's mounted elsewhere).
func (c *Client) SetNodeFS(fs NodeFS) { c.fs = fs }

// apiError words an API error for the user, with what podtap was doing.
// Forbidden keeps the server's message, which names the user, verb,
// resource and namespace, and says what grants it.
func (c *Client) apiError(what string, err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w (podtap needs get, list and watch on pods; the ClusterRole in deploy/podtap.yaml grants them)", err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s: the API server at %s did not accept podtap's credentials (Unauthorized): check the token or certificate of the kubeconfig user", what, c.host)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: no answer from the API server at %s within %s", what, c.host, apiTimeout)
	}
	return fmt.Errorf("%s: %w", what, err)
}

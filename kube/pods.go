package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podtap/podtap/mem"
	"github.com/podtap/podtap/target"
)

// Reason is why a pod cannot be captured.
type Reason string

// The reasons a pod cannot be captured, each with its own message.
const (
	NotFound     Reason = "not found"
	NotScheduled Reason = "not scheduled"
	OtherNode    Reason = "on another node"
	Finished     Reason = "finished"
	Pending      Reason = "pending"
	NotStarted   Reason = "no container started"
	HostNetwork  Reason = "host network"
	NoVeth       Reason = "no veth"
	NoProcess    Reason = "no process"
)

// PodError says why a pod cannot be captured, in one line for the user.
type PodError struct {
	Pod    string // namespace/name
	Reason Reason
	Msg    string
	Err    error // the underlying error, if any
}

func (e *PodError) Error() string { return e.Msg }
func (e *PodError) Unwrap() error { return e.Err }

// Temporary reports whether the pod may become capturable by itself: it
// is not scheduled or started yet, or its processes are not seen yet.
func (e *PodError) Temporary() bool {
	switch e.Reason {
	case NotScheduled, Pending, NotStarted, NoProcess:
		return true
	}
	return false
}

func podErr(pod *corev1.Pod, r Reason, err error, format string, a ...any) *PodError {
	return &PodError{Pod: keyOf(pod), Reason: r, Err: err, Msg: fmt.Sprintf(format, a...)}
}

func keyOf(pod *corev1.Pod) string { return pod.Namespace + "/" + pod.Name }

// check refuses, from the API's view of a pod, what cannot be captured
// on this node. network is false for podtap mem, which needs no veth.
func (c *Client) check(pod *corev1.Pod, network, hostNetworkOK bool) *PodError {
	key := keyOf(pod)
	switch {
	case pod.Spec.NodeName == "":
		return podErr(pod, NotScheduled, nil, "pod %s is not scheduled to a node yet (phase %s): nothing runs it", key, phaseOf(pod))
	case pod.Spec.NodeName != c.node:
		return podErr(pod, OtherNode, nil, "pod %s runs on node %q, not on this node %q: run podtap on %s (or give --node if %q is not this node's name)",
			key, pod.Spec.NodeName, c.node, pod.Spec.NodeName, c.node)
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return podErr(pod, Finished, nil, "pod %s has finished (phase %s): its containers and network namespace are gone", key, pod.Status.Phase)
	case corev1.PodPending, "":
		return podErr(pod, Pending, nil, "pod %s is Pending%s: its containers have not started, so it has no network to capture yet", key, waitingReasons(pod))
	}
	if network && pod.Spec.HostNetwork && !hostNetworkOK {
		return podErr(pod, HostNetwork, nil, "pod %s uses the host network (hostNetwork: true) and has no veth of its own; --host-network captures on the node's interface instead, which carries the whole node's traffic", key)
	}
	if len(containerIDs(pod)) == 0 {
		return podErr(pod, NotStarted, nil, "pod %s has no container started yet%s: no process to find its network namespace by", key, waitingReasons(pod))
	}
	return nil
}

func phaseOf(pod *corev1.Pod) corev1.PodPhase {
	if pod.Status.Phase == "" {
		return corev1.PodPending
	}
	return pod.Status.Phase
}

// waitingReasons is " (app: ContainerCreating, ...)" for containers that
// wait with a reason, else "".
func waitingReasons(pod *corev1.Pod) string {
	var rs []string
	for _, s := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if w := s.State.Waiting; w != nil && w.Reason != "" {
			rs = append(rs, s.Name+": "+w.Reason)
		}
	}
	if len(rs) == 0 {
		return ""
	}
	return " (" + strings.Join(rs, ", ") + ")"
}

// containerIDs are the bare IDs of the pod's containers that have started
// (app, init and ephemeral), now or before their last restart.
func containerIDs(pod *corev1.Pod) []string {
	var ids []string
	add := func(s string) {
		if _, id, ok := mem.ParseContainerID(s); ok {
			ids = append(ids, id)
		}
	}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, s := range list {
			add(s.ContainerID)
			if t := s.LastTerminationState.Terminated; t != nil {
				add(t.ContainerID)
			}
		}
	}
	return ids
}

func refOf(pod *corev1.Pod) podRef {
	return podRef{key: keyOf(pod), uid: string(pod.UID), containerIDs: containerIDs(pod)}
}

// resolved is a pod found on this node.
type resolved struct {
	target *target.Target
	memErr error // why Target.MemCgroup is "", if it is
}

// resolve finds a pod's capture point on this node.
func (c *Client) resolve(pod *corev1.Pod, hostNetworkOK bool) (resolved, error) {
	if perr := c.check(pod, true, hostNetworkOK); perr != nil {
		return resolved{}, perr
	}
	key := keyOf(pod)
	procs, err := c.fs.podProcesses(refOf(pod))
	if err != nil {
		return resolved{}, fmt.Errorf("pod %s: %w", key, err)
	}
	var t *target.Target
	if pod.Spec.HostNetwork {
		ip := pod.Status.PodIP
		if ip == "" {
			ip = pod.Status.HostIP
		}
		addr, perr := netip.ParseAddr(ip)
		if perr != nil {
			return resolved{}, podErr(pod, HostNetwork, perr, "pod %s uses the host network, and its status has no IP address to find the node's interface by", key)
		}
		if t, err = target.InterfaceWithAddr(addr); err != nil {
			return resolved{}, podErr(pod, HostNetwork, err, "pod %s uses the host network, and no interface of this node holds its IP %s", key, addr)
		}
	} else {
		if len(procs) == 0 {
			return resolved{}, podErr(pod, NoProcess, nil, "no process of pod %s (UID %s) found in %s/*/cgroup: podtap must see the node's processes (hostPID: true in a pod)", key, pod.UID, c.fs.Proc)
		}
		if t, err = c.fs.vethOf(procs); err != nil {
			return resolved{}, c.vethError(pod, err)
		}
	}
	t.Name = "pod " + key
	t.Key = key
	r := resolved{target: t}
	t.MemCgroup, r.memErr = c.fs.podCgroupDirOf(procs)
	return r, nil
}

// vethError words why no veth was found in a pod's network namespace.
func (c *Client) vethError(pod *corev1.Pod, err error) error {
	key := keyOf(pod)
	var nv *target.NoVethError
	switch {
	case errors.Is(err, errHostNetns):
		return podErr(pod, NoVeth, err, "pod %s has hostNetwork: false, but its processes run in podtap's network namespace: is podtap in a container of its own network namespace rather than the node's?", key)
	case errors.As(err, &nv) && nv.HasVeth():
		return podErr(pod, NoVeth, err, "pod %s: the peer of its veth is not in podtap's network namespace: podtap must run in the node's network namespace (hostNetwork: true in a pod) (%v)", key, err)
	case errors.As(err, &nv):
		var links []string
		for _, l := range nv.Links {
			links = append(links, l.Name+" ("+l.Kind+")")
		}
		if len(links) == 0 {
			links = []string{"loopback only"}
		}
		return podErr(pod, NoVeth, err, "pod %s has no veth to the node: its network namespace has %s, as with a macvlan or ipvlan CNI; capture on the parent interface with -i", key, strings.Join(links, ", "))
	}
	return fmt.Errorf("pod %s: %w", key, err)
}

// getPod reads one pod, and words NotFound and RBAC errors.
func (c *Client) getPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	pod, err := c.cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, &PodError{Pod: namespace + "/" + name, Reason: NotFound, Err: err,
			Msg: fmt.Sprintf("pod %q not found in namespace %q", name, namespace)}
	}
	if err != nil {
		return nil, c.apiError(fmt.Sprintf("get pod %s/%s", namespace, name), err)
	}
	return pod, nil
}

// PodCgroup finds, for podtap mem, the pod-level memory cgroup directory
// of a pod on this node and its app containers' IDs as containerStatuses
// give them. pod is NAME (in the client's namespace) or NAMESPACE/NAME. A
// pod with hostNetwork or without a veth is fine here.
func (c *Client) PodCgroup(ctx context.Context, pod string) (dir string, appContainerIDs []string, err error) {
	ns, name := c.namespace, pod
	if a, b, ok := strings.Cut(pod, "/"); ok {
		ns, name = a, b
	}
	p, err := c.getPod(ctx, ns, name)
	if err != nil {
		return "", nil, err
	}
	if perr := c.check(p, false, true); perr != nil {
		return "", nil, perr
	}
	procs, err := c.fs.podProcesses(refOf(p))
	if err != nil {
		return "", nil, err
	}
	if len(procs) == 0 {
		return "", nil, podErr(p, NoProcess, nil, "no process of pod %s (UID %s) found in %s/*/cgroup: podtap must see the node's processes (hostPID: true in a pod)", keyOf(p), p.UID, c.fs.Proc)
	}
	if dir, err = c.fs.podCgroupDirOf(procs); err != nil {
		return "", nil, err
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.ContainerID != "" {
			appContainerIDs = append(appContainerIDs, s.ContainerID)
		}
	}
	return dir, appContainerIDs, nil
}

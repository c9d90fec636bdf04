package kube

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/podtap/podtap/target"
)

// Selection says which pods a capture takes: one by name, or those
// matching a label selector; only ever those bound to the client's node.
type Selection struct {
	Name          string // a pod's name; exclusive with Selector
	Selector      string // a label selector, as kubectl -l takes it
	AllNamespaces bool   // with Selector: in every namespace
	// HostNetwork allows pods with hostNetwork: true, captured on the
	// node's interface that holds their IP, with all its traffic.
	HostNetwork bool
}

// Event adds a capture point or removes one.
type Event struct {
	Add    *target.Target // a point to attach to
	Remove *target.Target // a point to let go, by its Ifindex; with Add nil
}

// watchTimeout is how long one watch request lasts before it is renewed.
const watchTimeout = 5 * 60

// Watch resolves the selection and returns the capture points of the
// selected pods that can be captured now; then, until ctx ends, it sends
// on events the points to add and remove as pods start, restart into a
// new sandbox, lose their veth, stop or go away. Pods sharing an interface
// (hostNetwork) share one point. note receives one-line messages for the
// user: pods that cannot be captured yet and why, warnings, lost watches.
//
// A pod given by name must be capturable now, else Watch returns why
// (a *PodError for the pod's state). Errors of the API server, such as
// RBAC's Forbidden, are returned with a message that says what to grant.
func (c *Client) Watch(ctx context.Context, sel Selection, events chan<- Event, note func(string)) ([]*target.Target, error) {
	if note == nil {
		note = func(string) {}
	}
	w := &watcher{c: c, sel: sel, events: events, note: note, pods: map[types.UID]*tracked{}, byIf: map[int]map[types.UID]bool{}, initial: true}
	fs := fields.Set{"spec.nodeName": c.node}
	switch {
	case sel.Name != "" && (sel.Selector != "" || sel.AllNamespaces):
		return nil, errors.New("a pod name goes with neither a selector nor all namespaces")
	case sel.Name != "":
		w.ns = c.namespace
		fs["metadata.name"] = sel.Name
	default:
		if _, err := labels.Parse(sel.Selector); err != nil {
			return nil, fmt.Errorf("selector %q: %w", sel.Selector, err)
		}
		if !sel.AllNamespaces {
			w.ns = c.namespace
		}
	}
	w.fieldSel = fields.SelectorFromSet(fs).String()

	if sel.Name != "" {
		pod, err := c.getPod(ctx, w.ns, sel.Name)
		if err != nil {
			return nil, err
		}
		r, err := c.resolve(pod, sel.HostNetwork)
		if err != nil {
			return nil, err
		}
		w.rv = pod.ResourceVersion
		tr := &tracked{pod: pod}
		w.pods[pod.UID] = tr
		w.take(ctx, tr, r)
	} else {
		if err := w.list(ctx); err != nil {
			return nil, err
		}
		if len(w.pods) == 0 {
			w.noneHere(ctx)
		}
	}
	wi, err := w.watch(ctx)
	if err != nil {
		return nil, err
	}
	var first []*target.Target
	for _, ev := range w.pending {
		first = append(first, ev.Add)
	}
	w.pending, w.initial = nil, false
	go w.run(ctx, wi)
	return first, nil
}

// watcher keeps the pods of a selection attached. It runs on one goroutine.
type watcher struct {
	c        *Client
	sel      Selection
	ns       string // "" for all namespaces
	fieldSel string
	events   chan<- Event
	note     func(string)

	pods     map[types.UID]*tracked
	byIf     map[int]map[types.UID]bool // who holds each attached interface
	rv       string                     // resource version to watch from
	initial  bool                       // adds go to pending, not events
	pending  []Event
	watchErr string // the last watch failure reported
}

// tracked is a selected pod on this node.
type tracked struct {
	pod    *corev1.Pod
	target *target.Target // the point it holds; nil when not attached
	err    error          // why it is not attached
	said   string         // the last note about it, said once
	held   bool           // it has been attached before
}

func (w *watcher) listOptions() metav1.ListOptions {
	return metav1.ListOptions{LabelSelector: w.sel.Selector, FieldSelector: w.fieldSel}
}

// list reads the selected pods and brings the tracked set in line.
func (w *watcher) list(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	list, err := w.c.cs.CoreV1().Pods(w.ns).List(lctx, w.listOptions())
	if err != nil {
		return w.c.apiError("list pods "+w.describe(), err)
	}
	w.rv = list.ResourceVersion
	seen := map[types.UID]bool{}
	for i := range list.Items {
		seen[list.Items[i].UID] = true
		w.update(ctx, &list.Items[i])
	}
	for uid, tr := range w.pods {
		if !seen[uid] {
			w.gone(ctx, tr)
		}
	}
	return nil
}

// describe says which pods are selected, for messages.
func (w *watcher) describe() string {
	var s string
	switch {
	case w.sel.Name != "":
		s = fmt.Sprintf("named %s in namespace %s", w.sel.Name, w.ns)
	case w.ns == "":
		s = fmt.Sprintf("matching %q in all namespaces", w.sel.Selector)
	default:
		s = fmt.Sprintf("matching %q in namespace %s", w.sel.Selector, w.ns)
	}
	return s + " on node " + w.c.node
}

// noneHere says that no pod is selected on this node, and where selected
// pods run if anywhere else.
func (w *watcher) noneHere(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	var elsewhere []string
	list, err := w.c.cs.CoreV1().Pods(w.ns).List(lctx, metav1.ListOptions{LabelSelector: w.sel.Selector, Limit: 20})
	if err == nil {
		for _, p := range list.Items {
			node := p.Spec.NodeName
			if node == "" {
				node = "none yet"
			}
			elsewhere = append(elsewhere, fmt.Sprintf("%s (node %s)", keyOf(&p), node))
		}
	}
	msg := "no pod " + w.describe() + " yet; waiting for one"
	if len(elsewhere) > 0 {
		sort.Strings(elsewhere)
		msg += "; elsewhere: " + strings.Join(elsewhere, ", ")
	}
	w.note(msg)
}

// watch starts a watch from the last resource version seen.
func (w *watcher) watch(ctx context.Context) (watch.Interface, error) {
	timeout := int64(watchTimeout)
	opts := w.listOptions()
	opts.ResourceVersion = w.rv
	opts.AllowWatchBookmarks = true
	opts.TimeoutSeconds = &timeout
	wi, err := w.c.cs.CoreV1().Pods(w.ns).Watch(ctx, opts)
	if err != nil {
		return nil, w.c.apiError("watch pods "+w.describe(), err)
	}
	return wi, nil
}

// run follows the watch, renews it, relists when the resource version is
// too old, and re-checks the pods on the node every resync period.
func (w *watcher) run(ctx context.Context, wi watch.Interface) {
	tick := time.NewTicker(w.c.resync)
	defer tick.Stop()
	defer func() {
		if wi != nil {
			wi.Stop()
		}
	}()
	for {
		var ch <-chan watch.Event
		if wi != nil {
			ch = wi.ResultChan()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			w.recheck(ctx)
			if wi == nil {
				wi = w.rewatch(ctx)
			}
		case ev, ok := <-ch:
			if !ok {
				wi.Stop()
				wi = w.rewatch(ctx)
				continue
			}
			if !w.handle(ctx, ev) {
				wi.Stop()
				wi = nil
				if err := w.list(ctx); err != nil {
					w.watchFailed(err)
					continue
				}
				wi = w.rewatch(ctx)
			}
		}
	}
}

// rewatch renews the watch; on failure it reports once and returns nil,
// to be tried again at the next resync.
func (w *watcher) rewatch(ctx context.Context) watch.Interface {
	if ctx.Err() != nil {
		return nil
	}
	wi, err := w.watch(ctx)
	if err != nil && (apierrors.IsResourceExpired(err) || apierrors.IsGone(err)) {
		if err = w.list(ctx); err == nil {
			wi, err = w.watch(ctx)
		}
	}
	if err != nil {
		w.watchFailed(err)
		return nil
	}
	if w.watchErr != "" {
		w.note("watching pods again")
		w.watchErr = ""
	}
	return wi
}

func (w *watcher) watchFailed(err error) {
	if msg := err.Error(); msg != w.watchErr && !errors.Is(err, context.Canceled) {
		w.watchErr = msg
		w.note(fmt.Sprintf("lost the watch on pods, retrying: %v", err))
	}
}

// handle applies one watch event; false means relist.
func (w *watcher) handle(ctx context.Context, ev watch.Event) bool {
	switch ev.Type {
	case watch.Added, watch.Modified:
		if pod, ok := ev.Object.(*corev1.Pod); ok {
			w.rv = pod.ResourceVersion
			w.update(ctx, pod)
		}
	case watch.Deleted:
		if pod, ok := ev.Object.(*corev1.Pod); ok {
			w.rv = pod.ResourceVersion
			if tr := w.pods[pod.UID]; tr != nil {
				tr.pod = pod
				w.gone(ctx, tr)
			}
		}
	case watch.Bookmark:
		if m, err := meta.Accessor(ev.Object); err == nil {
			w.rv = m.GetResourceVersion()
		}
	case watch.Error:
		err := apierrors.FromObject(ev.Object)
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			return false
		}
		w.watchFailed(err)
	}
	return true
}

// update brings a pod's capture point in line with what the API says of
// it and what is on the node.
func (w *watcher) update(ctx context.Context, pod *corev1.Pod) {
	tr := w.pods[pod.UID]
	if tr == nil {
		tr = &tracked{}
		w.pods[pod.UID] = tr
	}
	tr.pod = pod
	if tr.target != nil && w.c.check(pod, true, w.sel.HostNetwork) == nil && tr.target.Present() {
		return // attached, and still right
	}
	r, err := w.c.resolve(pod, w.sel.HostNetwork)
	if err != nil {
		wasAttached := tr.target != nil
		if wasAttached {
			w.detach(ctx, tr)
		}
		tr.err = err
		msg := err.Error()
		var perr *PodError
		switch {
		case errors.As(err, &perr) && perr.Reason == NoProcess && tr.held:
			msg = fmt.Sprintf("pod %s has no process on this node any more; it is captured again if it runs here", keyOf(pod))
		case errors.As(err, &perr) && perr.Temporary():
			msg += "; it is captured once it can be"
		}
		if errors.As(err, &perr) && perr.Reason == Finished && !wasAttached {
			return // a completed pod the selector matches: nothing to say
		}
		w.say(tr, msg)
		return
	}
	if tr.target != nil {
		if tr.target.Ifindex == r.target.Ifindex {
			return
		}
		w.detach(ctx, tr)
	}
	w.take(ctx, tr, r)
}

// take attaches a pod to the point it was resolved to.
func (w *watcher) take(ctx context.Context, tr *tracked, r resolved) {
	tr.err = nil
	tr.said = ""
	if tr.pod.Spec.HostNetwork {
		w.say(tr, fmt.Sprintf("warning: pod %s uses the host network: capturing on the node's interface %s, which carries the whole node's traffic, not only the pod's", keyOf(tr.pod), r.target.Ifname))
	}
	if r.memErr != nil {
		w.note(fmt.Sprintf("not recording memory of pod %s: %v", keyOf(tr.pod), r.memErr))
	}
	w.attach(ctx, tr, r.target)
}

// gone lets go of a pod deleted, or no longer selected.
func (w *watcher) gone(ctx context.Context, tr *tracked) {
	pod := tr.pod
	delete(w.pods, pod.UID)
	if tr.target == nil {
		return
	}
	if w.stillThere(ctx, pod) {
		w.note(fmt.Sprintf("pod %s no longer matches %q", keyOf(pod), w.sel.Selector))
	} else {
		w.note(fmt.Sprintf("pod %s was deleted", keyOf(pod)))
	}
	w.detach(ctx, tr)
}

// stillThere reports whether a pod that left the watch still exists: it
// was relabelled out of the selector rather than deleted. The watch does
// not tell: it shows the pod as it last matched.
func (w *watcher) stillThere(ctx context.Context, pod *corev1.Pod) bool {
	if w.sel.Name != "" || pod.DeletionTimestamp != nil {
		return false
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cur, err := w.c.cs.CoreV1().Pods(pod.Namespace).Get(gctx, pod.Name, metav1.GetOptions{})
	return err == nil && cur.UID == pod.UID
}

// recheck looks at the node again: a veth that vanished is let go (and
// its pod resolved anew, in case it runs in a new sandbox); a pod that
// may have become capturable is tried again.
func (w *watcher) recheck(ctx context.Context) {
	for _, tr := range w.pods {
		switch {
		case tr.target != nil && !tr.target.Present():
			w.say(tr, fmt.Sprintf("the interface %s of pod %s is gone", tr.target.Ifname, keyOf(tr.pod)))
			w.detach(ctx, tr)
			w.update(ctx, tr.pod)
		case tr.target == nil:
			var perr *PodError
			if !errors.As(tr.err, &perr) || perr.Temporary() {
				w.update(ctx, tr.pod)
			}
		}
	}
}

// attach makes tr hold t, adding the point if it is the first holder.
func (w *watcher) attach(ctx context.Context, tr *tracked, t *target.Target) {
	tr.target, tr.held = t, true
	holders := w.byIf[t.Ifindex]
	if holders == nil {
		holders = map[types.UID]bool{}
		w.byIf[t.Ifindex] = holders
	}
	holders[tr.pod.UID] = true
	if len(holders) == 1 {
		w.emit(ctx, Event{Add: t})
	}
}

// detach lets tr's point go, removing it when no other pod holds it.
func (w *watcher) detach(ctx context.Context, tr *tracked) {
	t := tr.target
	tr.target = nil
	holders := w.byIf[t.Ifindex]
	delete(holders, tr.pod.UID)
	if len(holders) > 0 {
		return
	}
	delete(w.byIf, t.Ifindex)
	w.emit(ctx, Event{Remove: t})
}

func (w *watcher) emit(ctx context.Context, ev Event) {
	if w.initial {
		if ev.Add != nil {
			w.pending = append(w.pending, ev)
			return
		}
		for i, p := range w.pending {
			if p.Add.Ifindex == ev.Remove.Ifindex {
				w.pending = append(w.pending[:i], w.pending[i+1:]...)
				return
			}
		}
		return
	}
	select {
	case w.events <- ev:
	case <-ctx.Done():
	}
}

// say notes a message about a pod once, until it changes.
func (w *watcher) say(tr *tracked, msg string) {
	if msg != tr.said {
		tr.said = msg
		w.note(msg)
	}
}

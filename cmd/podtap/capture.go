package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/kube"
	"github.com/podtap/podtap/loader"
	"github.com/podtap/podtap/target"
)

const captureUsage = `Usage: podtap capture [flags] [POD] [EXPRESSION]

Capture the packets of a pod, a network namespace, a process or an
interface that match a filter decided in the kernel, into pcap or pcapng.
The filter is a Wireshark display filter (-Y, or the words after the
target, as tcpdump takes its expression), and/or the shortcut flags
--contains, --uri, --uri-prefix, --method, --port, --host. All given
filters must hold; with none, every packet is captured. docs/FILTERS.md
lists what the kernel can decide and where it differs from Wireshark.

Give exactly one target: POD, -l SELECTOR, --netns, --pid, -i or -r.
POD and -l find pods through the Kubernetes API (kubeconfig as kubectl
finds it, or in-cluster) among the pods bound to this node, and capture on
the host end of each pod's veth. With -l every matching pod is captured at
once, each on its own pcapng interface named namespace/pod, and pods that
start or go away during the capture are attached or let go.

Examples:
  podtap capture web-7d9c -n shop --uri /mytest -w out.pcap
  podtap capture web-7d9c -n shop 'http.request.uri == "/mytest"' -w out.pcap
  podtap capture --netns web -Y 'tcp contains "lbtest" && tcp.port == 8080' -w out.pcap
  podtap capture -l app=web -n shop -w - | wireshark -k -i -
  podtap capture --netns web --uri /mytest -w out.pcap
  podtap capture --pid 4242 --contains lbtest -w - | wireshark -k -i -
  podtap capture -i veth1a2b --port 8080 -c 100 -w out.pcapng
  podtap capture -r full.pcapng -Y 'http.request.uri contains "/api/"' -w api.pcapng

Capture files are created (or truncated) with mode 0600. SIGINT, SIGTERM,
SIGHUP, SIGQUIT, the end of -c or --duration, and the reader of -w - going
away end a capture with a valid file, a summary on stderr and exit status
0; an interface that disappears ends it with status 1. Usage errors exit
with status 2, other errors with 1.

Flags:
`

type captureFlags struct {
	iface     string
	netns     string
	pid       int
	read      string
	display   string
	contains  []string
	uri       []string
	uriPrefix []string
	method    []string
	port      []uint16
	host      []string
	write     string
	pcapng    bool
	count     int
	duration  time.Duration
	snaplen   uint32
	ringSize  uint32
	scanLimit uint32
	attach    string
	scanLoop  string
	follow    loader.Follow
	memEvery  time.Duration
	memCgroup string
	memFile   string
	quiet     bool
	verbose   bool

	// Pods through the Kubernetes API.
	selector    string
	namespace   string
	allNS       bool
	kubeconfig  string
	kubeContext string
	node        string
	hostNetwork bool
}

func newCaptureFlags(stdout io.Writer) (*pflag.FlagSet, *captureFlags) {
	f := &captureFlags{}
	fs := pflag.NewFlagSet("capture", pflag.ContinueOnError)
	fs.SetOutput(stdout) // only --help prints through it
	fs.SortFlags = false
	fs.StringVarP(&f.iface, "interface", "i", "", "capture on this host interface")
	fs.StringVar(&f.netns, "netns", "", "capture on the host end of the veth into this network namespace (name or path)")
	fs.IntVar(&f.pid, "pid", 0, "capture on the host end of the veth into this process's network namespace")
	fs.StringVarP(&f.selector, "selector", "l", "", "capture every pod on this node matching this label selector (e.g. app=web)")
	fs.StringVarP(&f.namespace, "namespace", "n", "", "namespace of POD or -l (default: the kubeconfig context's, else \"default\")")
	fs.BoolVarP(&f.allNS, "all-namespaces", "A", false, "with -l: match pods in every namespace")
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else in-cluster)")
	fs.StringVar(&f.kubeContext, "context", "", "kubeconfig context (default: its current context)")
	fs.StringVar(&f.node, "node", "", "this node's name, whose pods are captured (default: $NODE_NAME, else the host name)")
	fs.BoolVar(&f.hostNetwork, "host-network", false, "allow pods with hostNetwork: captured on the node's interface, with the whole node's traffic")
	fs.StringVarP(&f.read, "read", "r", "", "filter the packets of this pcap/pcapng file with the same kernel program, offline")
	fs.StringVarP(&f.display, "display-filter", "Y", "", "a Wireshark display filter, decided in the kernel (see docs/FILTERS.md)")
	fs.StringArrayVar(&f.contains, "contains", nil, "TCP/UDP payload contains this string (repeatable: all must occur)")
	fs.StringArrayVar(&f.uri, "uri", nil, "HTTP/1.x request target equals this, query included, compared raw")
	fs.StringArrayVar(&f.uriPrefix, "uri-prefix", nil, "HTTP/1.x request target starts with this")
	fs.StringArrayVar(&f.method, "method", nil, "HTTP request method equals this (case-sensitive, e.g. GET)")
	fs.Var(newPortList(&f.port), "port", "TCP or UDP source or destination port")
	fs.StringArrayVar(&f.host, "host", nil, "IPv4 or IPv6 source or destination address, or CIDR prefix")
	fs.StringVarP(&f.write, "write", "w", "", "write packets to this file, or - for standard output")
	fs.BoolVar(&f.pcapng, "pcapng", false, "write pcapng (also chosen by a .pcapng file name)")
	fs.IntVarP(&f.count, "count", "c", 0, "stop after writing this many packets")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this long (e.g. 30s, 5m)")
	fs.Uint32VarP(&f.snaplen, "snaplen", "s", 0, fmt.Sprintf("bytes kept of each packet; 0: the whole packet (up to %d)", loader.MaxCapture))
	fs.Uint32Var(&f.ringSize, "buffer-size", loader.DefaultRingSize, "kernel ring buffer size in bytes (a power of two, at most 1 GiB)")
	fs.Uint32Var(&f.scanLimit, "scan-limit", 0, "bytes of each packet searched for --contains; 0: all (cut scans are counted)")
	fs.StringVar(&f.attach, "attach", string(loader.ModeAuto), "how to attach: auto (TCX if the kernel has it, else legacy tc), tcx or legacy")
	fs.BoolVar(&f.follow.On, "follow", false, "once a packet matches, capture the rest of its TCP/UDP flow in both directions")
	fs.Uint64Var(&f.follow.Packets, "follow-packets", 0, "with --follow: stop following a flow after this many packets; 0: no limit")
	fs.Uint64Var(&f.follow.Bytes, "follow-bytes", 0, "with --follow: stop following a flow after this many bytes; 0: no limit")
	fs.DurationVar(&f.follow.Timeout, "follow-timeout", 0, "with --follow: stop following a flow this long after its last match; 0: no limit")
	fs.BoolVar(&f.follow.Handshake, "follow-handshake", false, "with --follow: keep each TCP connection's handshake and write it before a match")
	fs.Uint32Var(&f.follow.Flows, "follow-flows", loader.DefaultFollowFlows, "with --follow: flows remembered at once, about 100 bytes of kernel memory each; least recently used ones are evicted, and counted (--follow-handshake keeps handshakes for a quarter as many, 512 bytes each)")
	fs.StringVar(&f.scanLoop, "scan-loop", string(loader.VariantAuto), "how the kernel drives the payload scan: auto (the best the kernel has), iter (bpf_iter_num, 6.4+), loop (bpf_loop, 5.17+) or bounded (any kernel)")
	fs.DurationVar(&f.memEvery, "mem-interval", time.Second, "sample the target's cgroup memory this often and record it with the packets; 0: off")
	fs.StringVar(&f.memCgroup, "mem-cgroup", "", "the memory cgroup directory to sample (default: the target process's or pod's)")
	fs.StringVar(&f.memFile, "mem-file", "", "write memory samples as JSON lines here (default with -w FILE: FILE's name with .mem.jsonl)")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "no live counter line on a terminal")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "log what podtap does")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), captureUsage)
		fs.PrintDefaults()
	}
	return fs, f
}

func runCapture(args []string, stdout, stderr io.Writer) error {
	fs, f := newCaptureFlags(stdout)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return errHelp
		}
		return usageError{err}
	}
	mode, err := loader.ParseMode(f.attach)
	if err != nil {
		return usageError{err}
	}
	variant, err := loader.ParseVariant(f.scanLoop)
	if err != nil {
		return usageError{err}
	}
	if f.count < 0 {
		return usageErrorf("--count %d: want 0 or more", f.count)
	}
	if f.duration < 0 {
		return usageErrorf("--duration %s: want 0 or more", f.duration)
	}
	if !f.follow.On && (fs.Changed("follow-packets") || fs.Changed("follow-bytes") || fs.Changed("follow-timeout") || f.follow.Handshake || fs.Changed("follow-flows")) {
		return usageErrorf("--follow-packets, --follow-bytes, --follow-timeout, --follow-handshake and --follow-flows need --follow")
	}
	if f.follow.Timeout < 0 {
		return usageErrorf("--follow-timeout %s: want 0 or more", f.follow.Timeout)
	}
	if fs.Changed("follow-flows") && f.follow.Flows == 0 {
		return usageErrorf("--follow-flows 0: want at least 1")
	}
	if f.memEvery < 0 {
		return usageErrorf("--mem-interval %s: want 0 or more", f.memEvery)
	}
	if f.memEvery == 0 {
		for _, name := range []string{"mem-file", "mem-cgroup"} {
			if fs.Changed(name) {
				return usageErrorf("--%s records memory, which --mem-interval 0 turns off", name)
			}
		}
	}
	if f.snaplen > loader.MaxCapture {
		return usageErrorf("--snaplen %d: at most %d (libpcap's limit)", f.snaplen, loader.MaxCapture)
	}
	if f.ringSize < 4096 || f.ringSize > loader.MaxRingSize || f.ringSize&(f.ringSize-1) != 0 {
		return usageErrorf("--buffer-size %d: want a power of two from 4096 to %d (1 GiB)", f.ringSize, loader.MaxRingSize)
	}
	// The first word names the pod unless another target is given; the
	// words after it are the filter expression.
	words := fs.Args()
	pod := ""
	if len(words) > 0 && f.iface == "" && f.netns == "" && !fs.Changed("pid") && f.read == "" && !fs.Changed("selector") {
		pod, words = words[0], words[1:]
	}
	expr := strings.Join(words, " ")
	if expr != "" && f.display != "" {
		return usageErrorf("give the display filter once: -Y %q or the words %q", f.display, expr)
	}
	if f.display != "" {
		expr = f.display
	}
	prog, err := f.filterProgram(expr)
	if err != nil {
		var serr *filter.SyntaxError
		if errors.As(err, &serr) && serr.Pos == 0 && f.display == "" {
			// The words were meant as targets, not as a filter.
			switch {
			case pod != "":
				return usageErrorf("one POD at most: %q after POD %q is not a filter expression either (%s)", words[0], pod, serr.Msg)
			case fs.Changed("selector"):
				return usageErrorf("give a POD or -l SELECTOR, not both: %q is not a filter expression (%s)", words[0], serr.Msg)
			}
			return usageErrorf("give exactly one target: %q is not a filter expression (%s)", words[0], serr.Msg)
		}
		return usageError{err}
	}
	isKube := pod != "" || fs.Changed("selector")
	switch {
	case pod != "" && fs.Changed("selector"):
		return usageErrorf("give a POD or -l SELECTOR, not both")
	case f.allNS && pod != "":
		return usageErrorf("-A goes with -l SELECTOR, not with a POD name; give its namespace with -n")
	case f.allNS && !isKube:
		return usageErrorf("-A needs -l SELECTOR")
	case isKube && f.memCgroup != "":
		return usageErrorf("--mem-cgroup is for --netns, --pid and -i; a pod's memory cgroup is found with the pod")
	}
	if !isKube {
		for _, name := range []string{"namespace", "kubeconfig", "context", "node", "host-network"} {
			if fs.Changed(name) {
				return usageErrorf("--%s needs a POD or -l SELECTOR", name)
			}
		}
	}
	nTargets := 0
	for _, set := range []bool{f.iface != "", f.netns != "", fs.Changed("pid"), f.read != "", isKube} {
		if set {
			nTargets++
		}
	}
	if nTargets != 1 {
		return usageErrorf("give exactly one target: POD, -l SELECTOR, -i IFACE, --netns NAME, --pid PID, or -r FILE")
	}
	if f.read != "" && f.write != "" && f.write != "-" && sameFile(f.read, f.write) {
		return usageErrorf("-w %s is the file -r reads: give another output file", f.write)
	}
	if f.memFile != "" && f.memFile != "-" && f.write != "" && f.write != "-" && sameFile(f.memFile, f.write) {
		return memFileIsOutput(f.memFile) // before -w empties it
	}
	if f.memFile == "-" && (f.write == "" || f.write == "-") {
		return usageErrorf("--mem-file -: standard output carries the packets; give a file name, or -w FILE")
	}
	if f.read != "" {
		// Offline, the program sees the file's packets one after another,
		// with no interface, no clock of their own and no cgroup: these
		// would be ignored, so they are refused.
		for _, name := range []string{"follow", "duration", "attach", "mem-interval", "mem-cgroup", "mem-file"} {
			if fs.Changed(name) {
				return usageErrorf("--%s is for live captures, not for -r FILE", name)
			}
		}
	}
	if f.verbose {
		slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	if f.read != "" {
		// The input first: a typo in -r must not cost the -w file.
		src, closer, err := openCaptureFile(f.read)
		if err != nil {
			return err
		}
		defer closer.Close()
		frameOff, err := frameOffset(f.read, src.LinkType())
		if err != nil {
			return err
		}
		out, err := openOutput(f.write, stdout)
		if err != nil {
			return err
		}
		c := &capture{flags: f, prog: prog, variant: variant, out: out, stderr: stderr}
		return c.runOffline(f.read, src, frameOff)
	}

	// SIGHUP (a dropped ssh session) and SIGQUIT end it cleanly too: their
	// defaults would leave legacy tc filters attached until the next start.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer stop()
	ctx, cancel := context.WithCancel(ctx) // ends the pod watch when the capture ends
	defer cancel()
	var targets []*target.Target
	var events chan targetEvent
	if isKube {
		// Pod notes come from the watch's goroutine.
		stderr = &lockedWriter{w: stderr}
		targets, events, err = f.watchPods(ctx, pod, stderr)
		if err != nil {
			if _, perr := filter.ParseDisplayFilter(pod); perr == nil && pod != "" {
				// "podtap capture tcp": a filter without a target.
				return fmt.Errorf("%w (%q was taken as a POD; to filter with it, give a target first: -i, --netns, --pid or -r)", err, pod)
			}
			return err
		}
	} else {
		var t *target.Target
		switch {
		case f.iface != "":
			t, err = target.Interface(f.iface)
		case f.netns != "":
			t, err = target.Netns(f.netns)
		default:
			if f.pid <= 0 {
				return usageErrorf("--pid %d: want a process ID", f.pid)
			}
			t, err = target.PID(f.pid)
		}
		if err != nil {
			return err
		}
		if f.memEvery > 0 {
			t.MemCgroup, err = memCgroupFor(f)
			if err != nil {
				if f.memCgroup != "" {
					return fmt.Errorf("--mem-cgroup: %w", err)
				}
				fmt.Fprintf(stderr, "podtap: not recording memory: %v\n", err)
			}
		}
		targets = []*target.Target{t}
	}
	// The memory file first: a mistake in it must not cost the -w file.
	var memLog *memLog
	if f.memEvery > 0 {
		if memLog, err = openMemLog(memFileFor(f), stdout); err != nil {
			return err
		}
	}
	out, err := openOutput(f.write, stdout)
	if err != nil {
		memLog.close()
		return err
	}
	if memLog.sameAs(out) {
		memLog.close()
		if out.file != nil {
			out.file.Close()
		}
		return memFileIsOutput(f.memFile) // by another name: a link, /dev/stdout
	}

	// A reader that goes away (wireshark closed) must not kill podtap
	// before it detaches: take SIGPIPE as an error from write instead.
	signal.Ignore(syscall.SIGPIPE)

	c := &capture{flags: f, prog: prog, mode: mode, variant: variant, out: out, memLog: memLog, stderr: stderr}
	return c.run(ctx, targets, events)
}

// watchPods finds the pods of a POD argument or -l through the Kubernetes
// API and keeps following them: it returns the capture points they have
// now and, until ctx ends, events for the points to add and remove.
func (f *captureFlags) watchPods(ctx context.Context, pod string, stderr io.Writer) ([]*target.Target, chan targetEvent, error) {
	kc, err := kube.NewClient(kube.Config{Kubeconfig: f.kubeconfig, Context: f.kubeContext, Namespace: f.namespace, Node: f.node})
	if err != nil {
		return nil, nil, err
	}
	kev := make(chan kube.Event)
	sel := kube.Selection{Name: pod, Selector: f.selector, AllNamespaces: f.allNS, HostNetwork: f.hostNetwork}
	targets, err := kc.Watch(ctx, sel, kev, func(msg string) { fmt.Fprintf(stderr, "podtap: %s\n", msg) })
	if err != nil {
		return nil, nil, err
	}
	events := make(chan targetEvent)
	go func() {
		for {
			var ev kube.Event
			select {
			case ev = <-kev:
			case <-ctx.Done():
				return
			}
			te := targetEvent{add: ev.Add}
			if ev.Remove != nil {
				te.remove = ev.Remove.Ifindex
			}
			select {
			case events <- te:
			case <-ctx.Done():
				return
			}
		}
	}()
	return targets, events, nil
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// filterProgram builds the filter from the shortcut flags and a display
// filter expression.
func (f *captureFlags) filterProgram(display string) (*filter.Program, error) {
	var exprs []filter.Expr
	var text []string
	for _, s := range f.contains {
		exprs = append(exprs, filter.Contains(s))
	}
	for _, s := range f.uri {
		exprs = append(exprs, filter.URI(s))
	}
	for _, s := range f.uriPrefix {
		exprs = append(exprs, filter.URIPrefix(s))
	}
	for _, s := range f.method {
		exprs = append(exprs, filter.Method(s))
	}
	for _, p := range f.port {
		exprs = append(exprs, filter.Port(p))
	}
	for _, s := range f.host {
		e, err := filter.Host(s)
		if err != nil {
			return nil, fmt.Errorf("--host: %w", err)
		}
		exprs = append(exprs, e)
	}
	for _, e := range exprs {
		text = append(text, e.(filter.PredExpr).Pred.Text)
	}
	if strings.TrimSpace(display) != "" {
		e, err := filter.ParseDisplayFilter(display)
		if err != nil {
			return nil, err
		}
		exprs = append(exprs, e)
		if len(text) > 0 {
			display = "(" + display + ")"
		}
		text = append(text, display)
	}
	return filter.Compile(filter.AllOf(exprs...), strings.Join(text, " and "))
}

// output is where packets go.
type output struct {
	w      io.Writer
	name   string // "-" for standard output
	file   *os.File
	pcapng bool
}

func openOutput(path string, stdout io.Writer) (*output, error) {
	if path == "" {
		if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return nil, usageErrorf("no output given: use -w FILE, or -w - to stream pcap to a pipe")
		}
		path = "-"
	}
	o := &output{name: path}
	if path == "-" {
		if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return nil, usageErrorf("refusing to write binary pcap to a terminal: redirect it or pipe it to wireshark -k -i -")
		}
		o.w = stdout
		return o, nil
	}
	o.pcapng = strings.EqualFold(filepath.Ext(path), ".pcapng")
	f, err := createPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("create capture file: %w", err)
	}
	o.w, o.file = f, f
	return o, nil
}

// createPrivate creates or truncates path for writing. A regular file is
// left with mode 0600, also one that existed (O_TRUNC keeps a mode, and
// captures can hold secrets); a device or FIFO (-w /dev/null) is written
// as it is, its mode untouched.
func createPrivate(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && fi.Mode().IsRegular() {
		err = f.Chmod(0o600)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("restrict %s to its owner: %w", path, err)
	}
	return f, nil
}

func memFileIsOutput(name string) error {
	return usageErrorf("--mem-file %s is where -w writes the packets: give another file", name)
}

// sameFile reports whether two paths name one file: the same inode when
// both exist, else the same absolute path.
func sameFile(a, b string) bool {
	fa, erra := os.Stat(a)
	fb, errb := os.Stat(b)
	if erra == nil && errb == nil {
		return os.SameFile(fa, fb)
	}
	absA, erra := filepath.Abs(a)
	absB, errb := filepath.Abs(b)
	return erra == nil && errb == nil && absA == absB
}

// readerGone reports whether output to a pipe or socket has lost its
// reader, without writing to it: the kernel flags the write end with
// POLLERR (a pipe) or POLLHUP (a socket). Files never lose theirs.
func (o *output) readerGone() bool {
	f, ok := o.w.(*os.File)
	if !ok || o.file != nil {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(f.Fd())}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// portList is a repeatable --port flag of TCP/UDP port numbers.
type portList struct{ ports *[]uint16 }

func newPortList(p *[]uint16) *portList { return &portList{p} }

func (p *portList) String() string {
	if p.ports == nil {
		return ""
	}
	var s []string
	for _, n := range *p.ports {
		s = append(s, fmt.Sprint(n))
	}
	return strings.Join(s, ",")
}

func (p *portList) Set(v string) error {
	var n uint64
	if _, err := fmt.Sscan(v, &n); err != nil || fmt.Sprint(n) != v || n > math.MaxUint16 {
		return fmt.Errorf("%q is not a port number (0-65535)", v)
	}
	*p.ports = append(*p.ports, uint16(n))
	return nil
}

func (p *portList) Type() string { return "port" }

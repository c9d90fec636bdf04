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
	"syscall"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/podtap/podtap/decode"
	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/loader"
	"github.com/podtap/podtap/target"
)

const captureUsage = `Usage: podtap capture [flags] [POD]

Capture the packets of a pod, a network namespace, a process or an
interface that match a filter decided in the kernel, into pcap or pcapng.
All given filters must hold; with none, every packet is captured.

Examples:
  podtap capture --netns web --uri /mytest -w out.pcap
  podtap capture --pid 4242 --contains lbtest -w - | wireshark -k -i -
  podtap capture -i veth1a2b --port 8080 -c 100 -w out.pcapng

Flags:
`

type captureFlags struct {
	iface     string
	netns     string
	pid       int
	read      string
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
	memEvery  time.Duration
	memCgroup string
	memFile   string
	quiet     bool
	verbose   bool
}

func newCaptureFlags(stdout io.Writer) (*pflag.FlagSet, *captureFlags) {
	f := &captureFlags{}
	fs := pflag.NewFlagSet("capture", pflag.ContinueOnError)
	fs.SetOutput(stdout) // only --help prints through it
	fs.SortFlags = false
	fs.StringVarP(&f.iface, "interface", "i", "", "capture on this host interface")
	fs.StringVar(&f.netns, "netns", "", "capture on the host end of the veth into this network namespace (name or path)")
	fs.IntVar(&f.pid, "pid", 0, "capture on the host end of the veth into this process's network namespace")
	fs.StringVarP(&f.read, "read", "r", "", "filter the packets of this pcap/pcapng file with the same kernel program, offline")
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
	fs.Uint32Var(&f.ringSize, "buffer-size", loader.DefaultRingSize, "kernel ring buffer size in bytes (a power of two)")
	fs.Uint32Var(&f.scanLimit, "scan-limit", 0, "bytes of each packet searched for --contains; 0: all (cut scans are counted)")
	fs.StringVar(&f.attach, "attach", string(loader.ModeAuto), "how to attach: auto (TCX if the kernel has it, else legacy tc), tcx or legacy")
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
	prog, err := f.filterProgram()
	if err != nil {
		return usageError{err}
	}
	mode, err := loader.ParseMode(f.attach)
	if err != nil {
		return usageError{err}
	}
	if f.count < 0 {
		return usageErrorf("--count %d: want 0 or more", f.count)
	}
	if f.duration < 0 {
		return usageErrorf("--duration %s: want 0 or more", f.duration)
	}
	if f.memEvery < 0 {
		return usageErrorf("--mem-interval %s: want 0 or more", f.memEvery)
	}
	if f.snaplen > loader.MaxCapture {
		return usageErrorf("--snaplen %d: at most %d (libpcap's limit)", f.snaplen, loader.MaxCapture)
	}
	if f.ringSize < 4096 || f.ringSize&(f.ringSize-1) != 0 {
		return usageErrorf("--buffer-size %d: want a power of two of at least 4096", f.ringSize)
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q (pod names need the Kubernetes support; use --netns, --pid or -i)", fs.Arg(0))
	}
	nTargets := 0
	for _, set := range []bool{f.iface != "", f.netns != "", fs.Changed("pid"), f.read != ""} {
		if set {
			nTargets++
		}
	}
	if nTargets != 1 {
		return usageErrorf("give exactly one target: -i IFACE, --netns NAME, --pid PID, or -r FILE")
	}
	out, err := openOutput(f.write, stdout)
	if err != nil {
		return err
	}
	if f.verbose {
		slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	if f.read != "" {
		c := &capture{flags: f, prog: prog, out: out, stderr: stderr}
		return c.runOffline(f.read)
	}

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

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// A reader that goes away (wireshark closed) must not kill podtap
	// before it detaches: take SIGPIPE as an error from write instead.
	signal.Ignore(syscall.SIGPIPE)

	c := &capture{
		flags:   f,
		prog:    prog,
		mode:    mode,
		targets: []*target.Target{t},
		out:     out,
		stderr:  stderr,
	}
	return c.run(ctx)
}

// startMemory starts recording the target's memory, if asked and found.
func (c *capture) startMemory() error {
	if c.flags.memEvery == 0 {
		return nil
	}
	dir, err := memCgroupFor(c.flags, c.targets[0])
	if err != nil {
		if c.flags.memCgroup != "" {
			return fmt.Errorf("--mem-cgroup: %w", err)
		}
		fmt.Fprintf(c.stderr, "podtap: not recording memory: %v\n", err)
		return nil
	}
	if dir == "" {
		return nil // an interface has no cgroup; --mem-cgroup names one
	}
	side := c.flags.memFile
	if side == "" && c.out.file != nil {
		side = sideFileFor(c.out.name)
	}
	c.mem, err = newMemRecorder(dir, c.targets[0].Name, c.flags.memEvery, side)
	return err
}

// filterProgram builds the filter from the shortcut flags.
func (f *captureFlags) filterProgram() (*filter.Program, error) {
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
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create capture file: %w", err)
	}
	// An existing file keeps its mode on O_TRUNC; captures can hold secrets.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("restrict capture file %s: %w", path, err)
	}
	o.w, o.file = f, f
	return o, nil
}

// capture is one run of podtap capture.
type capture struct {
	flags   *captureFlags
	prog    *filter.Program
	mode    loader.Mode
	targets []*target.Target
	out     *output
	stderr  io.Writer

	mem     *memRecorder
	objs    *loader.Objects
	attach  []*loader.Attachment
	ifaces  map[uint32]ifaceInfo
	writer  decode.Writer
	written uint64
	skipped uint64 // records read after -c was reached
	invalid uint64 // records that did not decode
	start   time.Time
}

type ifaceInfo struct {
	id     int
	target *target.Target
}

func (c *capture) run(ctx context.Context) (err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lift memlock limit: %w", err)
	}
	if stale, err := loader.RemoveStale(); err != nil {
		return fmt.Errorf("remove filters left by a killed podtap: %w", err)
	} else {
		for _, s := range stale {
			fmt.Fprintf(c.stderr, "podtap: removed %s tc filter %s left on %s by a podtap that is gone\n", s.Hook, s.Name, s.Ifname)
		}
	}
	c.objs, err = loader.Load(loader.Options{
		Filter:    c.prog,
		Snaplen:   c.flags.snaplen,
		ScanLimit: c.flags.scanLimit,
		RingSize:  c.flags.ringSize,
	})
	if err != nil {
		return err
	}
	defer c.objs.Close()
	rd, err := ringbuf.NewReader(c.objs.Events())
	if err != nil {
		return fmt.Errorf("open ring buffer: %w", err)
	}
	defer rd.Close()
	clock, err := decode.NewClock()
	if err != nil {
		return err
	}
	if err := c.openWriter(); err != nil {
		return err
	}
	defer func() {
		if c.out.file != nil {
			if cerr := c.out.file.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close capture file: %w", cerr)
			}
		}
	}()

	if err := c.startMemory(); err != nil {
		return err
	}
	defer func() {
		if merr := c.mem.close(); merr != nil && err == nil {
			err = merr
		}
	}()

	c.start = time.Now()
	for _, t := range c.targets {
		a, err := c.objs.Attach(t.Ifindex, c.mode)
		if err != nil {
			c.detach()
			return fmt.Errorf("%s (%s): %w", t.Name, t.Ifname, err)
		}
		slog.Debug("attached", "target", t.Name, "ifname", t.Ifname, "ifindex", t.Ifindex, "mode", a.Mode)
		c.attach = append(c.attach, a)
	}
	defer c.detach()
	fmt.Fprintf(c.stderr, "podtap: capturing on %s, filter: %s\n", c.describeTargets(), c.filterText())

	loopErr := c.loop(ctx, rd, clock)
	// Detach first, then take what is still in the ring, so that the
	// counters read below are final.
	detachErr := c.detach()
	if loopErr == nil {
		loopErr = c.drain(rd, clock)
	}
	c.mem.sampleNow(time.Now(), c.writer) // a last sample, at the end
	flushErr := c.writer.Flush()
	counters, cerr := c.objs.Counters()
	if cerr == nil {
		c.writeStats(counters)
		if ferr := c.writer.Flush(); flushErr == nil {
			flushErr = ferr
		}
		c.summary(counters)
		c.mem.summary(c.stderr)
	}
	return errors.Join(loopErr, detachErr, flushErr, cerr)
}

func (c *capture) filterText() string {
	if c.prog.Text == "" {
		return "none (every packet)"
	}
	return c.prog.Text
}

func (c *capture) describeTargets() string {
	var parts []string
	for _, t := range c.targets {
		parts = append(parts, fmt.Sprintf("%s (%s)", t.Name, t.Ifname))
	}
	return strings.Join(parts, ", ")
}

func (c *capture) isPcapng() bool { return c.out.pcapng || c.flags.pcapng }

// openWriter starts the output with one interface per target.
func (c *capture) openWriter() error {
	var ifaces []decode.Interface
	c.ifaces = map[uint32]ifaceInfo{}
	for i, t := range c.targets {
		desc := decode.Interface{Name: t.Ifname, Description: t.Name, Filter: c.prog.Text}
		if t.PodView {
			desc.Description = fmt.Sprintf("%s: host end of the pod's %s; directions as the pod sees them", t.Name, t.PodIf)
		}
		ifaces = append(ifaces, desc)
		id := 0
		if c.isPcapng() {
			id = i
		}
		c.ifaces[uint32(t.Ifindex)] = ifaceInfo{id: id, target: t}
	}
	return c.openWriterFor(ifaces)
}

// openWriterFor starts pcap, or pcapng with these interfaces in order.
func (c *capture) openWriterFor(ifaces []decode.Interface) error {
	snap := uint32(loader.MaxCapture)
	if c.flags.snaplen != 0 {
		snap = c.flags.snaplen
	}
	if !c.isPcapng() {
		w, err := decode.NewPcap(c.out.w, snap, ifaces[0].LinkType)
		c.writer = w
		return err
	}
	w, err := decode.NewPcapng(c.out.w, snap, ifaces[0], "podtap "+version)
	if err != nil {
		return err
	}
	for _, i := range ifaces[1:] {
		if _, err := w.AddInterface(i); err != nil {
			return err
		}
	}
	c.writer = w
	return nil
}

// loop reads records until the context ends, -c is reached, or the
// duration is over.
func (c *capture) loop(ctx context.Context, rd *ringbuf.Reader, clock *decode.Clock) error {
	var deadline <-chan time.Time
	if c.flags.duration > 0 {
		tm := time.NewTimer(c.flags.duration)
		defer tm.Stop()
		deadline = tm.C
	}
	live := !c.flags.quiet && isTerminal(c.stderr)
	lastFlush, lastLive := time.Now(), time.Now()
	var rec ringbuf.Record
	for {
		if c.done() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-deadline:
			return nil
		default:
		}
		c.mem.maybeSample(time.Now(), c.writer)
		rd.SetDeadline(time.Now().Add(100 * time.Millisecond))
		err := rd.ReadInto(&rec)
		switch {
		case err == nil:
			if err := c.handle(rec.RawSample, clock); err != nil {
				return err
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
		default:
			return fmt.Errorf("read ring buffer: %w", err)
		}
		if now := time.Now(); now.Sub(lastFlush) >= 100*time.Millisecond {
			if err := c.writer.Flush(); err != nil {
				return fmt.Errorf("write packets: %w", err)
			}
			lastFlush = now
			if live && now.Sub(lastLive) >= time.Second {
				c.liveLine()
				lastLive = now
			}
		}
	}
}

func (c *capture) done() bool {
	return c.flags.count > 0 && c.written >= uint64(c.flags.count)
}

// drain writes what is left in the ring after detaching.
func (c *capture) drain(rd *ringbuf.Reader, clock *decode.Clock) error {
	rd.SetDeadline(time.Now())
	var rec ringbuf.Record
	for {
		err := rd.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read ring buffer: %w", err)
		}
		if err := c.handle(rec.RawSample, clock); err != nil {
			return err
		}
	}
}

func (c *capture) handle(raw []byte, clock *decode.Clock) error {
	if c.done() {
		c.skipped++
		return nil
	}
	p, err := decode.ParseRecord(raw, clock)
	if err != nil {
		c.invalid++
		slog.Debug("bad record", "err", err)
		return nil
	}
	info, ok := c.ifaces[p.Ifindex]
	if !ok && len(c.targets) == 1 {
		info = c.ifaces[uint32(c.targets[0].Ifindex)]
	}
	dir := hookDirection(p.Hook, info.target)
	comment := ""
	if c.isPcapng() {
		comment = fmt.Sprintf("podtap %s %s", info.target.Name, dir)
		if d := c.prog.Describe(p.Preds); d != "" {
			comment += "; matched: " + d
		}
		if m := c.mem.takePending(); m != "" {
			comment += "; " + m
		}
	}
	if err := c.writer.WritePacket(info.id, p, dir, comment); err != nil {
		return fmt.Errorf("write packets: %w", err)
	}
	c.written++
	return nil
}

// hookDirection maps the TC hook to a direction. On the host end of a
// pod's veth, ingress carries what the pod sends.
func hookDirection(hook uint8, t *target.Target) decode.Direction {
	in := hook == 0
	if t != nil && t.PodView {
		in = !in
	}
	if in {
		return decode.DirIn
	}
	return decode.DirOut
}

func (c *capture) detach() error {
	var errs []error
	for _, a := range c.attach {
		if err := a.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	c.attach = nil
	return errors.Join(errs...)
}

func (c *capture) writeStats(k loader.Counters) {
	now := time.Now()
	// One program serves every interface, so per-interface figures are
	// not known: with a single target the totals are its own.
	if len(c.targets) != 1 {
		return
	}
	c.writer.WriteStats(0, decode.Stats{Start: c.start, End: now, Received: k.Seen, Dropped: k.Lost()})
}

func (c *capture) liveLine() {
	k, err := c.objs.Counters()
	if err != nil {
		return
	}
	fmt.Fprintf(c.stderr, "\r\033[Kseen %d  matched %d  written %d  dropped %d", k.Seen, k.Matched, c.written, k.Lost())
}

// summary prints, like tcpdump does at the end, what happened to the
// packets: every matched packet is written, dropped for a stated reason,
// or left unwritten because -c was reached.
func (c *capture) summary(k loader.Counters) {
	if !c.flags.quiet && isTerminal(c.stderr) {
		fmt.Fprint(c.stderr, "\r\033[K")
	}
	dropped := k.Lost() + c.invalid
	fmt.Fprintf(c.stderr, "podtap: %d packets seen, %d matched, %d written, %d dropped", k.Seen, k.Matched, c.written, dropped)
	if c.skipped > 0 {
		fmt.Fprintf(c.stderr, ", %d not written (-c %d reached)", c.skipped, c.flags.count)
	}
	fmt.Fprintln(c.stderr)
	var why []string
	for _, r := range []struct {
		n    uint64
		what string
	}{
		{k.LostRingbuf, "ring buffer full (try a larger --buffer-size)"},
		{k.LostLoad, "packet copy failed"},
		{k.LostScratch, "no copy buffer"},
		{c.invalid, "malformed record"},
	} {
		if r.n > 0 {
			why = append(why, fmt.Sprintf("%d %s", r.n, r.what))
		}
	}
	if len(why) > 0 {
		fmt.Fprintf(c.stderr, "podtap: dropped: %s\n", strings.Join(why, ", "))
	}
	var notes []string
	if k.CutSnaplen > 0 {
		notes = append(notes, fmt.Sprintf("%d cut to the snap length", k.CutSnaplen))
	}
	if k.CutBuffer > 0 {
		notes = append(notes, fmt.Sprintf("%d longer than %d bytes, cut", k.CutBuffer, loader.MaxCapture))
	}
	if k.ScanCut > 0 {
		notes = append(notes, fmt.Sprintf("%d searched only up to --scan-limit", k.ScanCut))
	}
	if k.BadHeader > 0 {
		notes = append(notes, fmt.Sprintf("%d with a truncated or invalid header", k.BadHeader))
	}
	if len(notes) > 0 {
		fmt.Fprintf(c.stderr, "podtap: of the packets: %s\n", strings.Join(notes, ", "))
	}
	if leftover := k.Sent - c.written - c.skipped - c.invalid; k.Sent >= c.written+c.skipped+c.invalid && leftover > 0 {
		fmt.Fprintf(c.stderr, "podtap: %d sent by the kernel but not read\n", leftover)
	}
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

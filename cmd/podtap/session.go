package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/podtap/podtap/decode"
	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/loader"
	"github.com/podtap/podtap/target"
)

// capture is one run of podtap capture: one loaded program, attached to
// one or more capture points that may come and go while it runs.
type capture struct {
	flags   *captureFlags
	prog    *filter.Program
	mode    loader.Mode
	variant loader.Variant
	out     *output
	stderr  io.Writer

	objs    *loader.Objects
	writer  decode.Writer
	points  map[uint32]*point // by host ifindex, current and gone
	nextID  int               // the next of the first pcapng interfaces
	memLog  *memLog
	written uint64
	skipped uint64 // records read after -c was reached
	gone    bool   // the reader of -w - went away
	lost    error  // a capture point disappeared (without a pod watch)
	orphans uint64 // records read after the reader went away
	invalid uint64 // records that did not decode
	start   time.Time
}

// point is one capture point: an interface podtap is (or was) attached to.
type point struct {
	target *target.Target
	id     int // pcapng interface id
	attach *loader.Attachment
	mem    *memRecorder
	wrote  uint64
}

// targetEvent adds a capture point, or removes the one on an interface.
type targetEvent struct {
	add    *target.Target
	remove int // host ifindex, with add nil
}

func (c *capture) isPcapng() bool { return c.out.pcapng || c.flags.pcapng }

func (c *capture) filterText() string {
	if c.prog.Text == "" {
		return "none (every packet)"
	}
	return c.prog.Text
}

// run captures on targets, and on those events adds or removes, until the
// context ends, -c is reached, or --duration is over.
func (c *capture) run(ctx context.Context, targets []*target.Target, events <-chan targetEvent) (err error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lift memlock limit: %w", err)
	}
	stale, err := loader.RemoveStale()
	if err != nil {
		return fmt.Errorf("remove filters left by a killed podtap: %w", err)
	}
	for _, s := range stale {
		fmt.Fprintf(c.stderr, "podtap: removed %s tc filter %s left on %s by a podtap that is gone\n", s.Hook, s.Name, s.Ifname)
	}
	c.objs, err = loader.Load(loader.Options{
		Filter:    c.prog,
		Snaplen:   c.flags.snaplen,
		ScanLimit: c.flags.scanLimit,
		RingSize:  c.flags.ringSize,
		Variant:   c.variant,
		Follow:    c.flags.follow,
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
	var first []decode.Interface
	for _, t := range targets {
		first = append(first, describe(t, c.prog.Text))
	}
	if len(first) == 0 {
		// Pods may come later; pcapng needs an interface to start with.
		first = append(first, decode.Interface{Name: "podtap", Description: "no capture point yet", Filter: c.prog.Text})
		c.nextID = 1
	}
	if err := c.openWriterFor(first); err != nil {
		return err
	}
	defer func() {
		if c.out.file != nil {
			if cerr := c.out.file.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close capture file: %w", cerr)
			}
		}
	}()
	defer func() {
		if merr := c.memLog.close(); merr != nil && err == nil {
			err = merr
		}
	}()

	c.start = time.Now()
	c.points = map[uint32]*point{}
	defer c.detachAll()
	for _, t := range targets {
		if err := c.addPoint(t, true); err != nil {
			return err
		}
	}
	if len(targets) > 0 {
		var names []string
		for _, t := range targets {
			names = append(names, fmt.Sprintf("%s (%s)", t.Name, t.Ifname))
		}
		fmt.Fprintf(c.stderr, "podtap: capturing on %s [%s, %s scan], filter: %s\n", strings.Join(names, ", "), c.attachModes(), c.objs.Variant, c.filterText())
	} else {
		fmt.Fprintf(c.stderr, "podtap: capturing, waiting for pods, filter: %s\n", c.filterText())
	}

	loopErr := c.loop(ctx, rd, clock, events)
	// Detach first, then take what is still in the ring, so that the
	// counters read below are final.
	detachErr := c.detachAll()
	if loopErr == nil {
		loopErr = c.drain(rd, clock)
	}
	if loopErr == nil {
		loopErr = c.lost
	}
	for _, p := range c.points {
		p.mem.sampleNow(time.Now(), c.writer, c.memLog) // a last sample, at the end
	}
	flushErr := c.outputErr(c.writer.Flush())
	counters, cerr := c.objs.Counters()
	if cerr == nil {
		c.writeStats(counters)
		if ferr := c.outputErr(c.writer.Flush()); flushErr == nil {
			flushErr = ferr
		}
		if c.gone {
			fmt.Fprintf(c.stderr, "podtap: the reader of standard output went away; stopped\n")
		}
		c.summary(counters)
	}
	return errors.Join(loopErr, detachErr, flushErr, cerr)
}

// describe is a target as a pcapng interface.
func describe(t *target.Target, filterText string) decode.Interface {
	i := decode.Interface{Name: t.Ifname, Description: t.Name, Filter: filterText}
	if t.Key != "" {
		i.Name = t.Key
	}
	if t.PodView {
		i.Description = fmt.Sprintf("%s: host end %s of the pod's %s; directions as the pod sees them", t.Name, t.Ifname, t.PodIf)
	}
	return i
}

// addPoint attaches to a target. The first targets already have their
// pcapng interfaces, in order; later ones get a new one.
func (c *capture) addPoint(t *target.Target, initial bool) error {
	id := 0
	if c.isPcapng() {
		if initial {
			id = c.nextID
			c.nextID++
		} else {
			var err error
			if id, err = c.writer.AddInterface(describe(t, c.prog.Text)); err != nil {
				return fmt.Errorf("add interface for %s: %w", t.Name, err)
			}
		}
	}
	a, err := c.objs.Attach(t.Ifindex, c.mode)
	if err != nil {
		return fmt.Errorf("%s (%s): %w", t.Name, t.Ifname, err)
	}
	slog.Debug("attached", "target", t.Name, "ifname", t.Ifname, "ifindex", t.Ifindex, "mode", a.Mode)
	p := &point{target: t, id: id, attach: a}
	if t.MemCgroup != "" && c.flags.memEvery > 0 {
		p.mem = &memRecorder{dir: t.MemCgroup, target: t.Name, id: id, interval: c.flags.memEvery}
	}
	c.points[uint32(t.Ifindex)] = p
	return nil
}

// removePoint detaches from an interface; its packets already written,
// and those still in the ring, keep their interface.
func (c *capture) removePoint(ifindex int) error {
	p := c.points[uint32(ifindex)]
	if p == nil || p.attach == nil {
		return nil
	}
	err := p.attach.Close()
	p.attach = nil
	p.mem.sampleNow(time.Now(), c.writer, c.memLog)
	p.mem = nil
	return err
}

// attachModes says how the points are attached: "tcx", "legacy" or both.
func (c *capture) attachModes() string {
	var modes []string
	seen := map[loader.Mode]bool{}
	for _, p := range c.points {
		if p.attach != nil && !seen[p.attach.Mode] {
			seen[p.attach.Mode] = true
			modes = append(modes, string(p.attach.Mode))
		}
	}
	return strings.Join(modes, "+")
}

func (c *capture) detachAll() error {
	var errs []error
	for _, p := range c.points {
		if p.attach != nil {
			errs = append(errs, p.attach.Close())
			p.attach = nil
		}
	}
	return errors.Join(errs...)
}

func (c *capture) loop(ctx context.Context, rd *ringbuf.Reader, clock *decode.Clock, events <-chan targetEvent) error {
	var deadline <-chan time.Time
	if c.flags.duration > 0 {
		tm := time.NewTimer(c.flags.duration)
		defer tm.Stop()
		deadline = tm.C
	}
	live := !c.flags.quiet && isTerminal(c.stderr)
	lastFlush, lastLive, lastCheck := time.Now(), time.Now(), time.Now()
	var rec ringbuf.Record
	for {
		if c.done() || c.gone || c.lost != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-deadline:
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if err := c.apply(ev); err != nil {
				fmt.Fprintf(c.stderr, "podtap: %v\n", err)
			}
			continue
		default:
		}
		now := time.Now()
		for _, p := range c.points {
			p.mem.maybeSample(now, c.writer, c.memLog)
		}
		rd.SetDeadline(now.Add(100 * time.Millisecond))
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
			if err := c.outputErr(c.writer.Flush()); err != nil {
				return fmt.Errorf("write packets: %w", err)
			}
			if c.out.readerGone() {
				c.gone = true
			}
			// Without a pod watch, nothing else notices an interface
			// that disappears (its pod's namespace deleted): like
			// tcpdump, end the capture with an error.
			if events == nil && now.Sub(lastCheck) >= 500*time.Millisecond {
				lastCheck = now
				c.checkPoints()
			}
			lastFlush = now
			if live && now.Sub(lastLive) >= time.Second {
				c.liveLine()
				lastLive = now
			}
		}
	}
}

func (c *capture) apply(ev targetEvent) error {
	if ev.add != nil {
		if p := c.points[uint32(ev.add.Ifindex)]; p != nil && p.attach != nil {
			return nil // already attached (pods sharing a namespace)
		}
		if err := c.addPoint(ev.add, false); err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "podtap: capturing on %s (%s) too\n", ev.add.Name, ev.add.Ifname)
		return nil
	}
	p := c.points[uint32(ev.remove)]
	if p == nil || p.attach == nil {
		return nil
	}
	err := c.removePoint(ev.remove)
	fmt.Fprintf(c.stderr, "podtap: %s (%s) is gone; %d packets written for it\n", p.target.Name, p.target.Ifname, p.wrote)
	return err
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
	if c.gone {
		c.orphans++
		return nil
	}
	p, err := decode.ParseRecord(raw, clock)
	if err != nil {
		c.invalid++
		slog.Debug("bad record", "err", err)
		return nil
	}
	pt := c.points[p.Ifindex]
	if pt == nil {
		// Not an interface podtap attached to: should not happen, but a
		// record is never thrown away silently.
		c.invalid++
		slog.Debug("record from an unknown interface", "ifindex", p.Ifindex)
		return nil
	}
	dir := hookDirection(p.Hook, pt.target)
	comment := ""
	if c.isPcapng() {
		comment = fmt.Sprintf("podtap %s %s", pt.target.Name, dir)
		switch {
		case p.Handshake:
			comment += "; handshake kept from before the match (--follow-handshake)"
		case p.Followed:
			comment += "; following the flow of a match (--follow)"
		default:
			if d := c.prog.Describe(p.Preds); d != "" {
				comment += "; matched: " + d
			}
		}
		if m := pt.mem.takePending(); m != "" {
			comment += "; " + m
		}
	}
	if err := c.outputErr(c.writer.WritePacket(pt.id, p, dir, comment)); err != nil {
		return fmt.Errorf("write packets: %w", err)
	}
	if c.gone {
		c.orphans++
		return nil
	}
	c.written++
	pt.wrote++
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

func (c *capture) writeStats(k loader.Counters) {
	// One program serves every interface, so per-interface figures are
	// not known: with a single capture point the totals are its own.
	if len(c.points) != 1 {
		return
	}
	for _, p := range c.points {
		c.writer.WriteStats(p.id, decode.Stats{Start: c.start, End: time.Now(), Received: k.Seen, Dropped: k.Lost()})
	}
}

func (c *capture) liveLine() {
	k, err := c.objs.Counters()
	if err != nil {
		return
	}
	fmt.Fprintf(c.stderr, "\r\033[Kseen %d  matched %d  written %d  dropped %d", k.Seen, k.Matched, c.written, k.Lost())
}

// followSummary says what --follow did, and how many followed flows the
// full table evicted: started flows that neither ended nor are still in
// the table.
func (c *capture) followSummary(k loader.Counters) {
	open, closed, err := c.objs.FollowedFlows()
	if err != nil {
		fmt.Fprintf(c.stderr, "podtap: %v\n", err)
		return
	}
	evicted := int64(k.FlowsStarted) - int64(k.FlowsClosed+k.FlowsLimited) - int64(open+closed)
	fmt.Fprintf(c.stderr, "podtap: followed %d flows: %d ended (FIN or RST), %d reached a --follow limit, %d still open, %d evicted from the full table (raise --follow-flows)",
		k.FlowsStarted, k.FlowsClosed+uint64(closed), k.FlowsLimited, open, max(evicted, 0))
	if c.flags.follow.Handshake {
		fmt.Fprintf(c.stderr, "; %d handshake packets kept, %d written before their match", k.HsKept, k.HsSent)
	}
	fmt.Fprintln(c.stderr)
}

// summary prints, like tcpdump does at the end, what happened to the
// packets: every matched packet is written, dropped for a stated reason,
// or left unwritten because -c was reached.
func (c *capture) summary(k loader.Counters) {
	if !c.flags.quiet && isTerminal(c.stderr) {
		fmt.Fprint(c.stderr, "\r\033[K")
	}
	dropped := k.Lost() + c.invalid
	fmt.Fprintf(c.stderr, "podtap: %d packets seen, %d matched", k.Seen, k.Matched)
	if c.flags.follow.On {
		fmt.Fprintf(c.stderr, ", %d followed", k.Followed)
		if c.flags.follow.Handshake {
			fmt.Fprintf(c.stderr, ", %d handshake", k.HsSent+k.HsLost)
		}
	}
	fmt.Fprintf(c.stderr, ", %d written, %d dropped", c.written, dropped)
	if c.skipped > 0 {
		fmt.Fprintf(c.stderr, ", %d not written (-c %d reached)", c.skipped, c.flags.count)
	}
	if c.orphans > 0 {
		fmt.Fprintf(c.stderr, ", %d not written (the reader went away)", c.orphans)
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
		{k.HsLost, "handshake packets: ring buffer full"},
		{c.invalid, "malformed record"},
	} {
		if r.n > 0 {
			why = append(why, fmt.Sprintf("%d %s", r.n, r.what))
		}
	}
	if len(why) > 0 {
		fmt.Fprintf(c.stderr, "podtap: dropped: %s\n", strings.Join(why, ", "))
	}
	if c.flags.follow.On {
		c.followSummary(k)
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
	if got := c.written + c.skipped + c.orphans + c.invalid; k.Sent > got {
		fmt.Fprintf(c.stderr, "podtap: %d sent by the kernel but not read\n", k.Sent-got)
	}
	for _, p := range c.points {
		p.mem.summary(c.stderr, c.memLog)
	}
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

// outputErr takes a write error that says the reader of standard output
// went away (Wireshark closed, head exited) as the end of the capture:
// it marks the capture gone and returns nil. Other errors pass.
func (c *capture) outputErr(err error) error {
	if err != nil && c.out.file == nil && errors.Is(err, syscall.EPIPE) {
		c.gone = true
		return nil
	}
	return err
}

// checkPoints ends the capture when an interface it is attached to is gone.
func (c *capture) checkPoints() {
	for _, p := range c.points {
		if p.attach != nil && !p.target.Present() {
			c.lost = fmt.Errorf("%s: interface %s is gone (deleted, or its network namespace was); %d packets written for it", p.target.Name, p.target.Ifname, p.wrote)
			return
		}
	}
}

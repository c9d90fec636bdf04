// Package loader loads podtap's TC program with a compiled filter, attaches
// it to interfaces (TCX, or legacy clsact where the kernel has no TCX) and
// reads its counters.
package loader

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/podtap/podtap/filter"
)

// MaxCapture is the largest packet copy one record carries: libpcap's limit
// for Ethernet, so every file podtap writes can be read by libpcap tools.
const MaxCapture = 262144

// RecordHeaderSize is the size of struct pt_record before the packet bytes.
const RecordHeaderSize = int(unsafe.Sizeof(podtapPtRecord{}))

// DefaultRingSize is the default ring buffer size in bytes.
const DefaultRingSize = 8 << 20

// MaxRingSize bounds the ring buffer: its pages are locked kernel memory
// that the reader maps twice, so a larger one costs a node gigabytes.
const MaxRingSize = 1 << 30

// Options configure one load of the program.
type Options struct {
	Filter    *filter.Program
	Methods   map[string]filter.MethodClass // HTTP methods; nil: filter.Methods
	Snaplen   uint32                        // bytes of each packet kept; 0: the whole packet
	ScanLimit uint32                        // bytes of each packet searched for patterns; 0: all
	RingSize  uint32                        // ring buffer bytes, a power of two; 0: DefaultRingSize
	Variant   Variant                       // how the payload scan is driven; "": the best the kernel has
	Follow    Follow                        // --follow
	// FrameOffset: frames start with this many bytes of an Ethernet header
	// made up for offline input that had none; "frame" patterns skip them.
	FrameOffset uint32
}

// Objects are the loaded programs and maps.
type Objects struct {
	coll    *ebpf.Collection
	ingress *ebpf.Program
	egress  *ebpf.Program
	Filter  *filter.Program
	Variant Variant // how the payload scan is driven
}

// Ingress is the program for the ingress hook.
func (o *Objects) Ingress() *ebpf.Program { return o.ingress }

// Egress is the program for the egress hook.
func (o *Objects) Egress() *ebpf.Program { return o.egress }

// Events is the ring buffer of matched packets.
func (o *Objects) Events() *ebpf.Map { return o.coll.Maps["events"] }

// Follow configures following the flows of matching packets.
type Follow struct {
	On        bool
	Handshake bool          // keep TCP handshakes, sent when their flow matches
	Packets   uint64        // stop following a flow after so many packets; 0: no limit
	Bytes     uint64        // ... so many bytes
	Timeout   time.Duration // ... so long after its last match
	Flows     uint32        // flows remembered at once (LRU); 0: DefaultFollowFlows
	// Grace: how long a flow is still followed after FIN from both ends
	// or a RST, for the last ACKs; 0: DefaultFollowGrace.
	Grace time.Duration
}

// DefaultFollowGrace is how long a closed flow is still followed.
const DefaultFollowGrace = time.Second

// DefaultFollowFlows is how many flows --follow remembers at once.
const DefaultFollowFlows = 65536

func boolU32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// FollowedFlows counts the flows in the follow table now: those still
// open, and those that ended (FIN from both ends, or RST) but are kept
// until a packet after their grace period removes them.
func (o *Objects) FollowedFlows() (open, closed int, err error) {
	var k podtapFlowKey
	var v podtapFlow
	it := o.coll.Maps["flows"].Iterate()
	for it.Next(&k, &v) {
		if v.ClosedNs != 0 {
			closed++
		} else {
			open++
		}
	}
	if err := it.Err(); err != nil {
		return 0, 0, fmt.Errorf("count followed flows: %w", err)
	}
	return open, closed, nil
}

// Counters is struct pt_counters: what the program saw, summed over CPUs.
type Counters = podtapPtCounters

// Record is struct pt_record, the header of each ring-buffer record.
type Record = podtapPtRecord

// Counters reads the per-CPU counters and sums them.
func (o *Objects) Counters() (Counters, error) {
	var per []Counters
	if err := o.coll.Maps["counters"].Lookup(uint32(0), &per); err != nil {
		return Counters{}, fmt.Errorf("read counters: %w", err)
	}
	var c Counters
	for _, x := range per {
		c.Seen += x.Seen
		c.Matched += x.Matched
		c.Sent += x.Sent
		c.LostRingbuf += x.LostRingbuf
		c.LostLoad += x.LostLoad
		c.LostScratch += x.LostScratch
		c.CutSnaplen += x.CutSnaplen
		c.CutBuffer += x.CutBuffer
		c.NotIp += x.NotIp
		c.BadHeader += x.BadHeader
		c.ScanCut += x.ScanCut
		c.ScanBytes += x.ScanBytes
		c.Followed += x.Followed
		c.FlowsStarted += x.FlowsStarted
		c.FlowsClosed += x.FlowsClosed
		c.FlowsLimited += x.FlowsLimited
		c.HsKept += x.HsKept
		c.HsSent += x.HsSent
		c.HsLost += x.HsLost
	}
	return c, nil
}

// Lost is the number of packets (matched or followed) that never reached
// the ring, handshake packets included.
func (c Counters) Lost() uint64 { return c.LostRingbuf + c.LostLoad + c.LostScratch + c.HsLost }

// Test runs the ingress program once on frame with BPF_PROG_TEST_RUN, as
// if the frame had arrived on an interface. What matches goes to the ring
// buffer as usual. The kernel refuses (EINVAL) frames larger than about a
// page and IP frames shorter than their IP header.
func (o *Objects) Test(frame []byte) error {
	_, err := o.ingress.Run(&ebpf.RunOptions{Data: frame})
	return err
}

// Close releases the programs and maps.
func (o *Objects) Close() error {
	o.coll.Close()
	return nil
}

// Load builds the filter into the program and loads it into the kernel.
func Load(opts Options) (*Objects, error) {
	if opts.Filter == nil {
		return nil, errors.New("no filter given")
	}
	spec, err := loadPodtap()
	if err != nil {
		return nil, fmt.Errorf("read program spec: %w", err)
	}
	ring := opts.RingSize
	if ring == 0 {
		ring = DefaultRingSize
	}
	if ring&(ring-1) != 0 || ring < 4096 || ring > MaxRingSize {
		return nil, fmt.Errorf("ring buffer size %d is not a power of two from 4096 to %d", ring, MaxRingSize)
	}
	maxCap := uint32(MaxCapture)
	if opts.Snaplen != 0 && opts.Snaplen < maxCap {
		maxCap = opts.Snaplen
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("count possible CPUs: %w", err)
	}
	spec.Maps["events"].MaxEntries = ring
	// LRU maps are allocated whole: without --follow they get one entry.
	flows, handshakes := uint32(1), uint32(1)
	if opts.Follow.On {
		flows = cmp.Or(opts.Follow.Flows, DefaultFollowFlows)
		if opts.Follow.Handshake {
			// A connection's handshake waits only until its first match,
			// or is evicted: a quarter of the flows (512 bytes each).
			handshakes = max(flows/4, 1)
		}
	}
	spec.Maps["flows"].MaxEntries = flows
	spec.Maps["handshakes"].MaxEntries = handshakes
	spec.Maps["copybuf"].MaxEntries = uint32(cpus)
	spec.Maps["copybuf"].ValueSize = uint32(RecordHeaderSize) + maxCap

	variant := opts.Variant
	if variant == "" || variant == VariantAuto {
		variant = BestVariant()
	}
	ingress, egress := "podtap_ingress_"+string(variant), "podtap_egress_"+string(variant)
	if spec.Programs[ingress] == nil {
		return nil, fmt.Errorf("scan variant %q: want auto, iter, loop or bounded", variant)
	}
	for name := range spec.Programs {
		if name != ingress && name != egress {
			delete(spec.Programs, name)
		}
	}

	f, err := kernelFilter(opts.Filter)
	if err != nil {
		return nil, err
	}
	pats := opts.Filter.Patterns()
	m, q := qgramParams(pats)
	f.QgM, f.QgQ = uint16(m), uint16(q)
	for name, v := range map[string]any{
		"cfg_snaplen":         opts.Snaplen,
		"cfg_max_cap":         maxCap,
		"cfg_scan_limit":      opts.ScanLimit,
		"cfg_frame_off":       opts.FrameOffset,
		"cfg_follow":          boolU32(opts.Follow.On),
		"cfg_handshake":       boolU32(opts.Follow.On && opts.Follow.Handshake),
		"cfg_follow_packets":  opts.Follow.Packets,
		"cfg_follow_bytes":    opts.Follow.Bytes,
		"cfg_follow_ns":       uint64(opts.Follow.Timeout.Nanoseconds()),
		"cfg_follow_grace_ns": uint64(cmp.Or(opts.Follow.Grace, DefaultFollowGrace).Nanoseconds()),
		"filter":              f,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}

	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load program (scan variant %s): %w (verifier log tail: %s)", variant, err, verifierTail(verr))
		}
		return nil, fmt.Errorf("load program (scan variant %s): %w", variant, err)
	}
	o := &Objects{coll: coll, ingress: coll.Programs[ingress], egress: coll.Programs[egress], Filter: opts.Filter, Variant: variant}
	if m != 0 {
		var t podtapQgTable
		qgramTable(pats, m, q, &t)
		if err := coll.Maps["qgtab"].Put(uint32(0), &t); err != nil {
			o.Close()
			return nil, fmt.Errorf("fill scan tables: %w", err)
		}
	}
	methods := opts.Methods
	if methods == nil {
		methods = filter.Methods
	}
	for m, class := range methods {
		var key podtapMethodKey
		if len(m) == 0 || len(m) > len(key.M) {
			o.Close()
			return nil, fmt.Errorf("HTTP method %q: want 1 to %d bytes", m, len(key.M))
		}
		key.Len = uint32(len(m))
		copy(key.M[:], m)
		if err := coll.Maps["methods"].Put(&key, uint8(class)); err != nil {
			o.Close()
			return nil, fmt.Errorf("add HTTP method %q: %w", m, err)
		}
	}
	return o, nil
}

func verifierTail(v *ebpf.VerifierError) string {
	n := len(v.Log)
	lines := v.Log[max(0, n-4):]
	return strings.Join(lines, " | ")
}

// kernelFilter lays a compiled filter out as struct pt_filter.
func kernelFilter(p *filter.Program) (*podtapPtFilter, error) {
	var f podtapPtFilter
	if len(p.Preds) > len(f.Preds) || len(p.Code) > len(f.Code) {
		return nil, fmt.Errorf("filter too large for the kernel program")
	}
	pats := p.Patterns()
	strs := p.Strings()
	if len(pats) > len(f.Pats) || len(strs) > len(f.Strs) {
		return nil, fmt.Errorf("filter too large for the kernel program")
	}
	patIndex := map[filter.PatternKey]int{}
	for i, k := range pats {
		patIndex[k] = i
		b := []byte(k.Bytes)
		pt := &f.Pats[i]
		pt.Len = uint8(len(b))
		pt.Region = uint8(k.Region)
		o0, o1 := probeOffsets(b)
		pt.Off0, pt.Off1 = uint8(o0), uint8(o1)
		pt.Probe0 = 0x0101010101010101 * uint64(b[o0])
		pt.Probe1 = 0x0101010101010101 * uint64(b[o1])
		var padded [filter.MaxPatLen]byte
		copy(padded[:], b)
		for w := range pt.Words {
			pt.Words[w] = binary.NativeEndian.Uint64(padded[w*8:])
			for j := 0; j < 8; j++ {
				if w*8+j < len(b) {
					pt.Masks[w] |= 0xff << (8 * j)
				}
			}
		}
	}
	strIndex := map[string]int{}
	for i, s := range strs {
		strIndex[s] = i
		f.Strs[i].Len = uint32(len(s))
		copy(f.Strs[i].Bytes[:], s)
	}
	f.Npreds = uint32(len(p.Preds))
	f.Npats = uint32(len(pats))
	copy(f.Code[:], p.Code)
	for i, pr := range p.Preds {
		kp := &f.Preds[i]
		kp.Kind = uint8(pr.Kind)
		kp.Op = uint8(pr.Op)
		kp.Val = pr.Value
		switch pr.Kind {
		case filter.KindProto:
			kp.Val = uint32(pr.Proto)
		case filter.KindPort:
			kp.Field = uint8(pr.Side)
		case filter.KindVLAN:
			kp.Field = 1
			if pr.STag {
				kp.Field = 2
			}
		case filter.KindAddr4, filter.KindAddr6:
			kp.Field = uint8(pr.Side)
			addr, mask := prefixWords(pr.Prefix)
			kp.Addr, kp.Mask = addr, mask
		case filter.KindPattern:
			kp.Idx = uint8(patIndex[filter.PatternKey{Bytes: string(pr.Bytes), Region: pr.Region}])
			f.ScanPreds |= 1 << i
		case filter.KindURIContains:
			// A pattern searched in the request target, which the
			// request-line stage finds first.
			kp.Kind = uint8(filter.KindPattern)
			kp.Idx = uint8(patIndex[filter.PatternKey{Bytes: string(pr.Bytes), Region: filter.RegionURI}])
			f.ScanPreds |= 1 << i
			f.HttpPreds |= 1 << i
			f.Flags |= 1 // PT_F_URI_END
		case filter.KindHTTPRequest:
			f.HttpPreds |= 1 << i
		case filter.KindMethod, filter.KindURIEq, filter.KindURIPrefix:
			kp.Idx = uint8(strIndex[string(pr.Bytes)])
			f.HttpPreds |= 1 << i
		default:
			return nil, fmt.Errorf("predicate %q: unknown kind %d", pr.Text, pr.Kind)
		}
	}
	return &f, nil
}

// prefixWords returns a prefix's address and mask as the kernel compares
// them: the bytes in network order, read as two native words.
func prefixWords(p netip.Prefix) (addr, mask [2]uint64) {
	a := p.Masked().Addr().AsSlice()
	var ab, mb [16]byte
	copy(ab[:], a)
	for i := 0; i < p.Bits(); i++ {
		mb[i/8] |= 0x80 >> (i % 8)
	}
	addr[0] = binary.NativeEndian.Uint64(ab[0:])
	addr[1] = binary.NativeEndian.Uint64(ab[8:])
	mask[0] = binary.NativeEndian.Uint64(mb[0:])
	mask[1] = binary.NativeEndian.Uint64(mb[8:])
	return addr, mask
}

// byteRank orders bytes from common to rare in typical traffic: text and
// HTTP first, then the rest; a higher rank is rarer. The scan probes the
// two rarest bytes of a pattern, so that few positions need a full
// comparison.
var byteRank = func() [256]int {
	var r [256]int
	common := " etaoinsrhldcumfpgwybvkxjqz\x00\r\n/.:=-_,;ETAOINSRHLDCUMFPGWYBVKXJQZ0123456789\"'<>&?%+()[]{}#!@$*|\\^~`\t\xff"
	for i := range r {
		r[i] = len(common) // not listed: rarest
	}
	for i := 0; i < len(common); i++ {
		r[common[i]] = i
	}
	return r
}()

// probeOffsets picks the two rarest bytes of b (equal offsets for one byte).
func probeOffsets(b []byte) (int, int) {
	best, second := 0, -1
	for i := 1; i < len(b); i++ {
		switch {
		case byteRank[b[i]] > byteRank[b[best]]:
			best, second = i, best
		case second < 0 || byteRank[b[i]] > byteRank[b[second]]:
			second = i
		}
	}
	if second < 0 {
		second = best
	}
	return best, second
}

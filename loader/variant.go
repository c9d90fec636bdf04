package loader

import (
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"

	"github.com/podtap/podtap/filter"
)

// Variant is how the program drives the payload scan's steps.
type Variant string

const (
	VariantAuto    Variant = "auto"    // the best the kernel has
	VariantIter    Variant = "iter"    // open-coded bpf_iter_num (6.4+)
	VariantLoop    Variant = "loop"    // bpf_loop (5.17+)
	VariantBounded Variant = "bounded" // a bounded loop, any kernel podtap runs on
)

// ParseVariant checks a --scan-loop value.
func ParseVariant(s string) (Variant, error) {
	switch v := Variant(s); v {
	case VariantAuto, VariantIter, VariantLoop, VariantBounded:
		return v, nil
	}
	return "", fmt.Errorf("scan loop %q: want auto, iter, loop or bounded", s)
}

var best = sync.OnceValue(func() Variant {
	if haveIterNum() {
		return VariantIter
	}
	if features.HaveProgramHelper(ebpf.SchedCLS, asm.FnLoop) == nil {
		return VariantLoop
	}
	return VariantBounded
})

// BestVariant probes the kernel for the fastest way it has to drive the
// scan: bpf_iter_num, else bpf_loop, else a bounded loop. It never looks
// at a version number.
func BestVariant() Variant { return best() }

// haveIterNum reports whether the kernel's BTF has the bpf_iter_num kfuncs.
func haveIterNum() bool {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return false
	}
	var fn *btf.Func
	return spec.TypeByName("bpf_iter_num_new", &fn) == nil
}

// qgramParams picks the q-gram scan's parameters for a filter's
// patterns: m, the shortest pattern's length, and q, the q-gram length.
// m is 0 when a pattern is shorter than three bytes: the SWAR scan then
// tests both bytes of it (or its one) eight starts at a time. A block of
// starts is m - q + 1 long: a longer q tells more of the text apart from
// the patterns, a shorter one takes longer blocks.
func qgramParams(pats []filter.PatternKey) (m, q int) {
	if len(pats) == 0 {
		return 0, 0
	}
	m = filter.MaxPatLen
	for _, p := range pats {
		m = min(m, len(p.Bytes))
	}
	switch {
	case m < 3:
		return 0, 0
	case m < 4:
		return m, 1
	case m < 7:
		return m, 2
	case m < 12:
		return m, 3
	}
	return m, 4
}

// qgramHash is QG_HASH of bpf/podtap.c: the q bytes read little endian,
// hashed to 12 bits.
func qgramHash(b string) int {
	var x uint32
	for i := 0; i < len(b); i++ {
		x |= uint32(b[i]) << (8 * i)
	}
	return int((x * 2654435761) >> 20)
}

// The q-gram table's entries (QG_ONE, QG_MANY of bpf/podtap.c).
const (
	qgOne  = 0x8000
	qgMany = 0x4000
)

// qgramTable fills the q-gram table: for each hash, the pattern and the
// offset in its first m bytes of the q-gram that hashes there; where
// several (pattern, offset) pairs share a hash, a mask of their offsets.
// pats are in the kernel's order.
func qgramTable(pats []filter.PatternKey, m, q int, t *podtapQgTable) {
	many := map[int]int{} // hash -> index into t.Many
	for pi, p := range pats {
		for o := 0; o+q <= m; o++ {
			h := qgramHash(p.Bytes[o : o+q])
			e := uint16(qgOne | pi<<8 | o)
			switch {
			case t.Ent[h] == 0:
				t.Ent[h] = e
			case t.Ent[h] == e:
			case t.Ent[h]&qgMany != 0:
				t.Many[many[h]] |= 1 << o
			default:
				k := len(many)
				many[h] = k
				t.Many[k] = 1<<(t.Ent[h]&0x3f) | 1<<o
				t.Ent[h] = uint16(qgMany | k)
			}
		}
	}
}

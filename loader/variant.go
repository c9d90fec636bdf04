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

// wmWindow is the Wu-Manber window for a filter's patterns: the shortest
// pattern's length, or 0 (use the SWAR scan) when a pattern is shorter
// than four bytes and shifts would be too short to pay.
func wmWindow(pats []filter.PatternKey) int {
	if len(pats) == 0 {
		return 0
	}
	m := filter.MaxPatLen
	for _, p := range pats {
		m = min(m, len(p.Bytes))
	}
	if m < 4 {
		return 0
	}
	return m
}

// wmHash is WM_HASH of bpf/podtap.c: two bytes, read little endian, hashed
// to 12 bits.
func wmHash(b0, b1 byte) int { return (int(b0)<<4 ^ int(b1)) & 0xfff }

// wmShifts fills the shift table: for each hash of the two bytes at the
// end of an m-byte window, how far the window may move before some
// pattern's first m bytes could fit it.
func wmShifts(pats []filter.PatternKey, m int, shift *[4096]uint8) {
	for i := range shift {
		shift[i] = uint8(m - 1)
	}
	for _, p := range pats {
		b := p.Bytes[:m]
		for j := 0; j+1 < m; j++ {
			h := wmHash(b[j], b[j+1])
			shift[h] = min(shift[h], uint8(m-2-j))
		}
	}
}

package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cilium/ebpf/rlimit"

	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/internal/frames"
	"github.com/podtap/podtap/loader"
)

// The 16-byte pattern the scan benchmarks search for.
const needle = "lbtest-needle-16"

// payloads of each kind and size.
func payload(kind string, n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 1))
	switch kind {
	case "random":
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return b
	case "near-miss":
		// Text that keeps almost matching: the needle with its last byte
		// changed, over and over.
		return bytes.Repeat([]byte(needle[:15]+"X"), n/16+1)[:n]
	case "match-at-end":
		b := payload("random", n)
		copy(b[n-len(needle):], needle)
		return b
	}
	panic(kind)
}

type kernelCase struct {
	name    string
	expr    filter.Expr
	kind    string // payload kind
	scan    bool   // report scan speed
	matches bool
	variant loader.Variant
	follow  loader.Follow
}

func kernelCases() []kernelCase {
	cases := []kernelCase{
		{"no filter: every packet copied to the ring", filter.True{}, "random", false, true, "", loader.Follow{}},
		{"--port 9, no match", filter.Port(9), "random", false, false, "", loader.Follow{}},
		{"--uri /mytest, no match", filter.URI("/mytest"), "random", false, false, "", loader.Follow{}},
		{"--uri /mytest, match", filter.URI("/mytest"), "request", false, true, "", loader.Follow{}},
		{"--contains 16 B, no match, random bytes", filter.Contains(needle), "random", true, false, "", loader.Follow{}},
		{"--contains 16 B, no match, near-miss text", filter.Contains(needle), "near-miss", true, false, "", loader.Follow{}},
		{"--contains 16 B, match at the end", filter.Contains(needle), "match-at-end", true, true, "", loader.Follow{}},
		{"4 x --contains 16 B, no match, random bytes", filter.AllOf(filter.Contains(needle),
			filter.Contains("another-needle16"), filter.Contains("a-third-needle!!"), filter.Contains("and-a-fourth-one")), "random", true, false, "", loader.Follow{}},
		{"--contains 3 B (SWAR scan), no match, random bytes", filter.Contains("lb!"), "random", true, false, "", loader.Follow{}},
		{"--uri /mytest --follow, no match, flow not followed", filter.URI("/mytest"), "random", false, false, "", loader.Follow{On: true}},
		{"--uri /mytest --follow --follow-handshake, no match", filter.URI("/mytest"), "random", false, false, "", loader.Follow{On: true, Handshake: true}},
	}
	// Each scan variant this kernel has, on the same search.
	for _, v := range availableVariants() {
		cases = append(cases,
			kernelCase{"--contains 16 B, no match, random bytes [" + string(v) + "]", filter.Contains(needle), "random", true, false, v, loader.Follow{}},
			kernelCase{"--contains 16 B, no match, near-miss text [" + string(v) + "]", filter.Contains(needle), "near-miss", true, false, v, loader.Follow{}})
	}
	return cases
}

// availableVariants lists the scan variants this kernel can run, best first.
func availableVariants() []loader.Variant {
	all := []loader.Variant{loader.VariantIter, loader.VariantLoop, loader.VariantBounded}
	for i, v := range all {
		if v == loader.BestVariant() {
			return all[i:]
		}
	}
	return nil
}

func kernelTable(o options) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	sizes := []int{64, 1460, 3000}
	var rows [][]string
	for _, c := range kernelCases() {
		prog, err := filter.Compile(c.expr, c.name)
		if err != nil {
			return err
		}
		objs, err := loader.Load(loader.Options{Filter: prog, RingSize: 256 << 20, Variant: c.variant, Follow: c.follow})
		if err != nil {
			return err
		}
		row := []string{c.name}
		for _, n := range sizes {
			var pl []byte
			if c.kind == "request" {
				pl = append([]byte("GET /mytest HTTP/1.1\r\nHost: x\r\n\r\n"), payload("random", n)...)[:n]
			} else {
				pl = payload(c.kind, n)
			}
			frame := frames.Build(frames.Spec{SrcPort: 40000, DstPort: 8080, Payload: pl})
			per, err := benchProgram(objs, frame, o.repeat)
			if err != nil {
				objs.Close()
				return fmt.Errorf("%s, %d B: %w", c.name, n, err)
			}
			cell := fmt.Sprintf("%.0f ns", float64(per.Nanoseconds()))
			if c.scan {
				cell += fmt.Sprintf(" (%.2f GB/s)", float64(n)/float64(per.Nanoseconds()))
			}
			row = append(row, cell)
		}
		objs.Close()
		rows = append(rows, row)
	}
	// The ceiling: Go's bytes.Index on the same payloads in user space.
	for _, kind := range []string{"random", "near-miss"} {
		row := []string{"Go bytes.Index, 16 B, no match, " + kind}
		for _, n := range sizes {
			pl := payload(kind, n)
			nd := []byte(needle)
			per := timePerOp(func() {
				if bytes.Index(pl, nd) >= 0 {
					panic("needle found")
				}
			})
			row = append(row, fmt.Sprintf("%.0f ns (%.2f GB/s)", float64(per.Nanoseconds()), float64(n)/float64(per.Nanoseconds())))
		}
		rows = append(rows, row)
	}
	table("Kernel program per packet (BPF_PROG_TEST_RUN), by TCP payload size",
		[]string{"filter", "64 B", "1460 B", "3000 B"}, rows)
	return nil
}

// benchProgram runs the ingress program repeat times on frame and returns
// the time per run. Records go to a large ring that is thrown away.
func benchProgram(objs *loader.Objects, frame []byte, repeat int) (time.Duration, error) {
	best := time.Duration(1 << 62)
	// Best of three: the machine is shared and noisy.
	for i := 0; i < 3; i++ {
		_, per, err := objs.Ingress().Benchmark(frame, repeat, nil)
		if err != nil {
			return 0, err
		}
		best = min(best, per)
	}
	return best, nil
}

func timePerOp(f func()) time.Duration {
	best := time.Duration(1 << 62)
	for r := 0; r < 3; r++ {
		n := 1000
		for {
			start := time.Now()
			for i := 0; i < n; i++ {
				f()
			}
			d := time.Since(start)
			if d > 50*time.Millisecond {
				best = min(best, d/time.Duration(n))
				break
			}
			n *= 4
		}
	}
	return best
}

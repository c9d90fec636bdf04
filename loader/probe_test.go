package loader

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/podtap/podtap/filter"
)

// TestProbeOffsets: the scan probes the two rarest bytes of a pattern.
func TestProbeOffsets(t *testing.T) {
	for _, tc := range []struct {
		pat    string
		o0, o1 int
	}{
		{"a", 0, 0},
		{"ab", 1, 0},                 // b is rarer than a
		{"lbtest", 1, 0},             // b, then l
		{"lbtest-needle-16", 15, 14}, // 6, then 1
		{"GET /mytest", 0, 2},        // G, then T (capitals are rarer than lower case)
		{"e e\x01", 3, 0},            // an unlisted byte is rarest; ties keep the first
	} {
		o0, o1 := probeOffsets([]byte(tc.pat))
		if o0 != tc.o0 || o1 != tc.o1 {
			t.Errorf("probeOffsets(%q) = %d, %d; want %d, %d", tc.pat, o0, o1, tc.o0, tc.o1)
		}
	}
}

// TestFollowTablesSized: the LRU tables, allocated whole, are only as big
// as --follow asks (they once took 40 MiB of kernel memory for every
// capture).
func TestFollowTablesSized(t *testing.T) {
	prog, err := filter.Compile(filter.True{}, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		follow            Follow
		flows, handshakes uint32
	}{
		{Follow{}, 1, 1},
		{Follow{On: true}, DefaultFollowFlows, 1},
		{Follow{On: true, Handshake: true, Flows: 1000}, 1000, 250},
	} {
		o, err := Load(Options{Filter: prog, Follow: tc.follow})
		if err != nil {
			t.Fatal(err)
		}
		f, h := o.coll.Maps["flows"].MaxEntries(), o.coll.Maps["handshakes"].MaxEntries()
		o.Close()
		if f != tc.flows || h != tc.handshakes {
			t.Errorf("%+v: %d flows, %d handshakes; want %d, %d", tc.follow, f, h, tc.flows, tc.handshakes)
		}
	}
}

// TestQgramTable: for every q-gram of every pattern's first m bytes, the
// entry of its hash names that (pattern, offset) pair, alone or among
// others; and no entry names a pair that does not hash there.
func TestQgramTable(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for n := 0; n < 2000; n++ {
		var pats []filter.PatternKey
		alphabet := []byte("ab\x00\xff")[:1+r.IntN(4)]
		for k := 1 + r.IntN(filter.MaxPatterns); k > 0; k-- {
			b := make([]byte, 3+r.IntN(filter.MaxPatLen-2))
			for i := range b {
				b[i] = alphabet[r.IntN(len(alphabet))]
			}
			pats = append(pats, filter.PatternKey{Bytes: string(b)})
		}
		m, q := qgramParams(pats)
		if m < 3 || q < 1 || q > 4 || q > m-2 && m >= 4 {
			t.Fatalf("qgramParams = %d, %d", m, q)
		}
		var tab podtapQgTable
		qgramTable(pats, m, q, &tab)
		want := map[int]map[[2]int]bool{} // hash -> pairs
		for pi, p := range pats {
			for o := 0; o+q <= m; o++ {
				h := qgramHash(p.Bytes[o : o+q])
				if want[h] == nil {
					want[h] = map[[2]int]bool{}
				}
				want[h][[2]int{pi, o}] = true
			}
		}
		for h, e := range tab.Ent {
			pairs := want[h]
			switch {
			case e == 0:
				if len(pairs) != 0 {
					t.Fatalf("%q: hash %d holds %v, entry is empty", pats, h, pairs)
				}
			case e&qgMany != 0:
				offs := uint64(0)
				for pr := range pairs {
					offs |= 1 << pr[1]
				}
				if len(pairs) < 2 || tab.Many[e&0xff] != offs {
					t.Fatalf("%q: hash %d holds %v, entry %#x has offsets %#x", pats, h, pairs, e, tab.Many[e&0xff])
				}
			default:
				pr := [2]int{int(e>>8) & 7, int(e & 0x3f)}
				if e&qgOne == 0 || len(pairs) != 1 || !pairs[pr] {
					t.Fatalf("%q: hash %d holds %v, entry %#x", pats, h, pairs, e)
				}
			}
		}
	}
}

// TestQgramParams: the SWAR scan for patterns under three bytes, else
// q-grams that leave blocks of at least three starts.
func TestQgramParams(t *testing.T) {
	for _, tc := range []struct {
		lens []int
		m, q int
	}{
		{nil, 0, 0},
		{[]int{1}, 0, 0},
		{[]int{2, 16}, 0, 0},
		{[]int{3}, 3, 1},
		{[]int{4}, 4, 2},
		{[]int{6}, 6, 2},
		{[]int{7}, 7, 3},
		{[]int{11}, 11, 3},
		{[]int{12}, 12, 4},
		{[]int{64, 16}, 16, 4},
	} {
		var pats []filter.PatternKey
		for _, n := range tc.lens {
			pats = append(pats, filter.PatternKey{Bytes: strings.Repeat("x", n)})
		}
		if m, q := qgramParams(pats); m != tc.m || q != tc.q {
			t.Errorf("lengths %v: m, q = %d, %d; want %d, %d", tc.lens, m, q, tc.m, tc.q)
		}
	}
}

package loader

import (
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

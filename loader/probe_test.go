package loader

import "testing"

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

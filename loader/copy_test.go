package loader_test

import (
	"bytes"
	"testing"

	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/internal/frames"
	"github.com/podtap/podtap/loader"
)

// TestRingCopy: a record carries the frame's bytes exactly, cut at the
// snap length, with the frame's length; cuts are counted.
func TestRingCopy(t *testing.T) {
	requireBPF(t)
	for _, snap := range []uint32{0, 1, 54, 100, 1514} {
		h := newHarness(t, filter.True{}, loader.Options{Snaplen: snap})
		cuts := uint64(0)
		for _, n := range []int{0, 1, 46, 100, 1460, 3000} {
			pl := make([]byte, n)
			for i := range pl {
				pl[i] = byte(i*7 + n)
			}
			frame := frames.Build(frames.Spec{SrcPort: 1, DstPort: 2, Payload: pl})
			want := frame
			if snap != 0 && len(frame) > int(snap) {
				want = frame[:snap]
				cuts++
			}
			p := h.run(t, frame)
			switch {
			case p == nil:
				t.Errorf("snaplen %d, %d-byte frame: no record", snap, len(frame))
			case !bytes.Equal(p.Data, want) || p.OrigLen != len(frame):
				t.Errorf("snaplen %d, %d-byte frame: record of %d bytes (length %d), want %d bytes of the frame",
					snap, len(frame), len(p.Data), p.OrigLen, len(want))
			}
		}
		cn := h.counters(t)
		if cn.Sent != 6 || cn.Matched != 6 || cn.CutSnaplen != cuts || cn.Lost() != 0 {
			t.Errorf("snaplen %d: %d matched, %d sent, %d cut, %d lost; want 6, 6, %d, 0",
				snap, cn.Matched, cn.Sent, cn.CutSnaplen, cn.Lost(), cuts)
		}
	}
}

// TestRingFull: records that do not fit in the ring are dropped and
// counted as ring-full losses; every matched packet is sent or lost.
func TestRingFull(t *testing.T) {
	requireBPF(t)
	h := newHarness(t, filter.True{}, loader.Options{RingSize: 4096})
	// 3054-byte frames: one fits in a 4 KiB ring, a second does not
	// until the first is read.
	frame := frames.Build(frames.Spec{SrcPort: 1, DstPort: 2, Payload: make([]byte, 3000)})
	for i := 0; i < 3; i++ {
		if err := h.objs.Test(frame); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(h.drain(t)); got != 1 {
		t.Errorf("%d records read, want 1", got)
	}
	if h.run(t, frame) == nil {
		t.Error("no record once the ring was read")
	}
	cn := h.counters(t)
	if cn.Matched != 4 || cn.Sent != 2 || cn.LostRingbuf != 2 || cn.Sent+cn.Lost() != cn.Matched {
		t.Errorf("%d matched, %d sent, %d lost to a full ring, %d lost; want 4, 2, 2, 2",
			cn.Matched, cn.Sent, cn.LostRingbuf, cn.Lost())
	}
}

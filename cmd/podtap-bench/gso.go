package main

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/podtap/podtap/filter"
	"github.com/podtap/podtap/internal/sandbox"
	"github.com/podtap/podtap/loader"
)

// gsoTable measures the program on GSO super-packets, which BPF_PROG_TEST_RUN
// cannot make: UDP datagrams sent with UDP_SEGMENT reach the TC egress hook
// of the host end of a veth as one skb of about 63 KB. The kernel's own BPF
// statistics (run time and count) give the cost per packet.
func gsoTable(o options) error {
	pod, err := sandbox.New("bench")
	if err != nil {
		return err
	}
	defer pod.Close()
	sink, err := pod.ListenPacket("udp4", ":9999")
	if err != nil {
		return err
	}
	defer sink.Close()
	go func() {
		buf := make([]byte, 1<<16)
		for {
			if _, _, err := sink.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer stats.Close()

	conn, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: pod.PodIP4.AsSlice(), Port: 9999})
	if err != nil {
		return err
	}
	defer conn.Close()
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	raw.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT, 1400) })
	if serr != nil {
		return fmt.Errorf("UDP_SEGMENT: %w", serr)
	}
	const size = 63000
	var rows [][]string
	type gsoCase struct {
		name    string
		expr    filter.Expr
		kind    string
		scan    bool
		variant loader.Variant
		ring    bool // every packet goes to the ring, which is read
	}
	cases := []gsoCase{
		{"--port 9, no match", filter.Port(9), "random", false, "", false},
		{"--contains 16 B, no match, random bytes", filter.Contains(needle), "random", true, "", false},
		{"--contains 16 B, no match, near-miss text", filter.Contains(needle), "near-miss", true, "", false},
		{"4 x --contains 16 B, no match, random bytes", filter.AllOf(filter.Contains(needle),
			filter.Contains("another-needle16"), filter.Contains("a-third-needle!!"), filter.Contains("and-a-fourth-one")), "random", true, "", false},
		{"--contains 3 B, no match, random bytes", filter.Contains("lb!"), "random", true, "", false},
	}
	for _, v := range availableVariants() {
		cases = append(cases, gsoCase{"--contains 16 B, no match, random bytes [" + string(v) + "]", filter.Contains(needle), "random", true, v, false})
	}
	cases = append(cases, gsoCase{"no filter: every packet copied to the ring", filter.True{}, "random", false, "", true})
	for _, c := range cases {
		prog, err := filter.Compile(c.expr, c.name)
		if err != nil {
			return err
		}
		objs, err := loader.Load(loader.Options{Filter: prog, Variant: c.variant})
		if err != nil {
			return err
		}
		var reader *ringbuf.Reader
		if c.ring {
			// Read the ring as podtap would, so that the copies are
			// measured rather than the ring-full path.
			if reader, err = ringbuf.NewReader(objs.Events()); err != nil {
				objs.Close()
				return err
			}
			go func() {
				var rec ringbuf.Record
				for reader.ReadInto(&rec) == nil {
				}
			}()
		}
		att, err := objs.Attach(pod.HostIdx, loader.ModeAuto)
		if err != nil {
			objs.Close()
			return err
		}
		pl := payload(c.kind, size)
		before, err := objs.Egress().Stats()
		if err != nil {
			return err
		}
		start := time.Now()
		for time.Since(start) < time.Second {
			if _, err := conn.Write(pl); err != nil {
				return fmt.Errorf("send: %w", err)
			}
		}
		after, err := objs.Egress().Stats()
		att.Close()
		counters, cerr := objs.Counters()
		if reader != nil {
			reader.Close()
		}
		objs.Close()
		if err = errors.Join(err, cerr); err != nil {
			return err
		}
		n := after.RunCount - before.RunCount
		if n == 0 {
			return fmt.Errorf("%s: the egress program did not run", c.name)
		}
		per := (after.Runtime - before.Runtime) / time.Duration(n)
		cell := fmt.Sprintf("%d ns", per.Nanoseconds())
		if c.scan {
			cell += fmt.Sprintf(" (%.2f GB/s)", float64(size)/float64(per.Nanoseconds()))
		}
		if c.ring {
			cell += fmt.Sprintf(", %d of %d sent, %d lost", counters.Sent, counters.Matched, counters.Lost())
		}
		rows = append(rows, []string{c.name, cell, fmt.Sprint(n)})
	}
	table(fmt.Sprintf("Kernel program per packet on %d-byte UDP GSO packets on a veth (BPF stats)", size),
		[]string{"filter", "per packet", "packets"}, rows)
	return nil
}

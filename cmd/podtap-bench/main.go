// Command podtap-bench measures podtap's cost side by side with the
// alternatives, in one run, and prints the tables of docs/BENCHMARKS.md:
//
//   - the kernel program per packet (BPF_PROG_TEST_RUN), against Go's
//     bytes.Index on the same payload;
//   - the kernel program on 64 KiB GSO packets on a real veth (BPF stats);
//   - iperf3 throughput over a veth with no capture, podtap and tcpdump,
//     interleaved over several rounds, as ratios to the no-capture median.
//
// It is not part of podtap; make bench runs it as root.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	var o options
	flag.StringVar(&o.podtap, "podtap", "bin/podtap", "podtap binary for the throughput runs")
	flag.IntVar(&o.rounds, "rounds", 7, "interleaved throughput rounds")
	flag.IntVar(&o.seconds, "seconds", 5, "seconds per iperf3 run")
	flag.IntVar(&o.repeat, "repeat", 20000, "BPF_PROG_TEST_RUN repetitions per measurement")
	flag.StringVar(&o.only, "only", "kernel,gso,startup,capacity,iperf", "which tables to print (comma-separated)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "podtap-bench: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	podtap  string
	rounds  int
	seconds int
	repeat  int
	only    string
}

func (o options) want(table string) bool {
	for _, t := range strings.Split(o.only, ",") {
		if t == table {
			return true
		}
	}
	return false
}

func run(o options) error {
	if o.want("kernel") {
		if err := kernelTable(o); err != nil {
			return fmt.Errorf("kernel table: %w", err)
		}
	}
	if o.want("gso") {
		if err := gsoTable(o); err != nil {
			return fmt.Errorf("gso table: %w", err)
		}
	}
	if o.want("startup") {
		if err := startupTable(o); err != nil {
			return fmt.Errorf("start-up table: %w", err)
		}
	}
	if o.want("capacity") {
		if err := capacityTable(o); err != nil {
			return fmt.Errorf("capacity table: %w", err)
		}
	}
	if o.want("iperf") {
		if err := iperfTable(o); err != nil {
			return fmt.Errorf("throughput table: %w", err)
		}
	}
	return nil
}

// table prints rows as a Markdown table.
func table(title string, head []string, rows [][]string) {
	fmt.Printf("\n### %s\n\n", title)
	w := make([]int, len(head))
	for i, h := range head {
		w[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			w[i] = max(w[i], len(c))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range cells {
			fmt.Fprintf(&b, " %-*s |", w[i], c)
		}
		fmt.Println(b.String())
	}
	line(head)
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = strings.Repeat("-", w[i])
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
}

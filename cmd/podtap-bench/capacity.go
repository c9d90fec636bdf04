package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/podtap/podtap/internal/sandbox"
	"github.com/podtap/podtap/loader"
)

// capacityTable: podtap capturing every packet of a flood of small UDP
// packets over many flows, at rising rates, with the default ring size:
// how many it writes, and how many it drops (counted, never silently).
func capacityTable(o options) error {
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
		buf := make([]byte, 2048)
		for {
			if _, _, err := sink.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	tmp, err := os.MkdirTemp("/dev/shm", "podtap-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	var rows [][]string
	for _, rate := range []int{50000, 100000, 200000, 400000, 800000} {
		out := filepath.Join(tmp, "flood.pcap")
		cmd := exec.Command(o.podtap, "capture", "--netns", pod.Name, "-w", out, "-q", "--mem-interval", "0")
		var stderr syncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		for deadline := time.Now().Add(10 * time.Second); !regexp.MustCompile("capturing on").MatchString(stderr.String()); {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				return fmt.Errorf("podtap did not start: %s", stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		sent, achieved, err := flood(pod, rate, 2*time.Second)
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return err
		}
		time.Sleep(300 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("podtap: %v: %s", err, stderr.String())
		}
		os.Remove(out)
		s := stderr.String()
		rows = append(rows, []string{
			strconv.Itoa(rate), fmt.Sprintf("%.0f", achieved), strconv.Itoa(sent),
			strconv.FormatUint(firstNumber(s, `(\d+) written`), 10),
			strconv.FormatUint(firstNumber(s, `(\d+) dropped`), 10),
			strconv.FormatUint(firstNumber(s, `(\d+) ring buffer full`), 10),
		})
		fmt.Fprintf(os.Stderr, "capacity %d pps: %s", rate, s)
	}
	table(fmt.Sprintf("Capacity: every packet of a flood of 64-byte UDP packets over 256 flows, %d MiB ring (the default), 2 s per rate", loader.DefaultRingSize>>20),
		[]string{"asked pps", "sent pps", "packets sent", "written", "dropped", "of which ring full"}, rows)
	return nil
}

// flood sends 64-byte UDP datagrams from 256 source ports to the pod at
// about rate packets a second for d, in batches (sendmmsg), and returns
// how many it sent and the rate it reached.
func flood(pod *sandbox.Pod, rate int, d time.Duration) (int, float64, error) {
	const flows, senders, batch = 256, 2, 64
	dst := &net.UDPAddr{IP: pod.PodIP4.AsSlice(), Port: 9999}
	var conns []*ipv4.PacketConn
	for i := 0; i < flows; i++ {
		c, err := net.ListenUDP("udp4", nil)
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		conns = append(conns, ipv4.NewPacketConn(c))
	}
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i] = ipv4.Message{Buffers: [][]byte{make([]byte, 64)}, Addr: dst}
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	total := 0
	start := time.Now()
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			ms := append([]ipv4.Message(nil), msgs...)
			n, k := 0, 0
			per := time.Second / time.Duration(rate/senders)
			next := time.Now()
			for ctx.Err() == nil {
				c := conns[(k*senders+s)%flows]
				k++
				if m, err := c.WriteBatch(ms, 0); err == nil {
					n += m
				}
				next = next.Add(batch * per)
				if w := time.Until(next); w > 0 {
					time.Sleep(w)
				}
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}(s)
	}
	wg.Wait()
	return total, float64(total) / time.Since(start).Seconds(), nil
}

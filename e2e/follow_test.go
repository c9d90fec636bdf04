package e2e

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestFollow: a request matching --uri /mytest --follow yields a file in
// which tshark decodes the whole HTTP exchange, request and response, with
// no segment missing, while /other requests sent at the same time are
// absent. With --follow-handshake the connection's SYN is there too.
func TestFollow(t *testing.T) {
	requireTool(t, "tshark")
	pod := newPod(t)
	serveHTTP(t, pod, 8080)
	dir := t.TempDir()
	plain := filepath.Join(dir, "follow.pcapng")
	hs := filepath.Join(dir, "handshake.pcapng")
	p1 := start(t, podtapBin, "capture", "--netns", pod.Name, "--uri", "/mytest", "--follow", "-w", plain)
	p1.waitFor(t, "capturing on")
	p2 := start(t, podtapBin, "capture", "--netns", pod.Name, "--uri", "/mytest", "--follow", "--follow-handshake", "-w", hs)
	p2.waitFor(t, "capturing on")

	big := strings.Repeat("x", 200000) // a response body of many segments
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			request(t, "GET", pod.PodURL(false, 8080, "/other"), "")
			request(t, "POST", pod.PodURL(true, 8080, "/other"), big)
		}()
	}
	request(t, "GET", pod.PodURL(false, 8080, "/mytest"), "")
	request(t, "POST", pod.PodURL(true, 8080, "/mytest"), big)
	wg.Wait()
	p1.stop(t)
	p2.stop(t)

	for _, f := range []string{plain, hs} {
		count := func(filter string) int { return len(tsharkFields(t, f, filter)) }
		if n := count(`http.request.uri == "/mytest"`); n != 2 {
			t.Errorf("%s: %d requests for /mytest, want 2", filepath.Base(f), n)
		}
		if n := count(`http.response.code == 200`); n < 2 {
			t.Errorf("%s: %d responses 200, want both", filepath.Base(f), n)
		}
		if n := count(`tcp.analysis.lost_segment`); n != 0 {
			t.Errorf("%s: %d segments flagged as lost", filepath.Base(f), n)
		}
		if n := count(`http.request.uri contains "other" or tcp.port != 8080`); n != 0 {
			t.Errorf("%s: %d packets of the /other flows", filepath.Base(f), n)
		}
		if n := count(`tcp.flags.fin == 1`); n < 4 {
			t.Errorf("%s: %d FINs, want both ends of both connections", filepath.Base(f), n)
		}
		t.Logf("%s: %d packets, %d matched", filepath.Base(f), count(""), count(`frame.comment contains "matched"`))
	}
	if n := len(tsharkFields(t, hs, `tcp.flags.syn == 1`)); n != 4 {
		t.Errorf("handshake file: %d SYN and SYN-ACK packets, want 4", n)
	}
	if n := len(tsharkFields(t, plain, `tcp.flags.syn == 1`)); n != 0 {
		t.Errorf("plain --follow file: %d SYN packets, want none (the handshake precedes the match)", n)
	}
	if !strings.Contains(p1.output(), "followed 2 flows: 2 ended (FIN or RST)") {
		t.Errorf("summary: %s", p1.output())
	}
}

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCaptureAgreesWithTshark captures real HTTP traffic to a sandbox pod
// over IPv4 and IPv6 with podtap's kernel filters while tcpdump takes a
// full capture, and demands that podtap's files hold exactly the frames
// tshark's display filters select from the full capture.
func TestCaptureAgreesWithTshark(t *testing.T) {
	requireTool(t, "tshark")
	requireTool(t, "tcpdump")
	pod := newPod(t)
	serveHTTP(t, pod, 8080)
	dir := t.TempDir()
	if d := os.Getenv("PODTAP_E2E_KEEP"); d != "" {
		dir = d
	}
	full := filepath.Join(dir, "full.pcap")
	uri := filepath.Join(dir, "uri.pcap")
	contains := filepath.Join(dir, "contains.pcapng")

	// A big buffer: the reference capture must not lose packets.
	td := start(t, "tcpdump", "-i", pod.HostIf, "-w", full, "-B", "131072", "--immediate-mode", "-Z", "root")
	td.waitFor(t, "listening on")
	p1 := start(t, podtapBin, "capture", "--netns", pod.Name, "--uri", "/mytest", "-w", uri)
	p1.waitFor(t, "capturing on")
	// More podtaps on the same veth, naming the namespace by path, one per
	// scan variant this kernel has (GSO super-packets come in fragments).
	p2 := start(t, podtapBin, "capture", "--netns", pod.NetnsPath(), "--contains", "lbtest", "-w", contains)
	p2.waitFor(t, "capturing on")
	variantFiles := map[string]*proc{}
	for _, v := range []string{"iter", "loop", "bounded"} {
		f := filepath.Join(dir, "contains-"+v+".pcapng")
		p := start(t, podtapBin, "capture", "--netns", pod.Name, "--scan-loop", v, "--contains", "lbtest", "-w", f)
		variantFiles[f] = p
	}
	for f, p := range variantFiles {
		if err := p.waitForEither(t, "capturing on", "load program"); err != nil {
			delete(variantFiles, f) // this kernel lacks the variant
			t.Logf("scan variant not available here: %v", err)
		}
	}

	big := strings.Repeat("0123456789abcdef", 6000) // ~96 KB: GSO super-packets
	for _, v6 := range []bool{false, true} {
		u := func(path string) string { return pod.PodURL(v6, 8080, path) }
		request(t, "GET", u("/mytest"), "")
		request(t, "GET", u("/other"), "")
		request(t, "GET", u("/mytest?id=42"), "")
		request(t, "GET", u("/mytest/deeper"), "")
		request(t, "POST", u("/mytest"), "lbtest in a small body")
		request(t, "POST", u("/upload"), "no marker")
		request(t, "GET", u("/other?q=lbtest"), "")
		request(t, "POST", u("/big"), big+"lbtest at the very end")
		request(t, "POST", u("/big2"), big[:3000]+"lbtest"+big)
		request(t, "PUT", u("/mytest"), "")
	}
	time.Sleep(500 * time.Millisecond) // tcpdump stops reading at SIGINT
	p1.stop(t)
	p2.stop(t)
	for _, p := range variantFiles {
		p.stop(t)
	}
	td.stop(t)
	var captured, received, dropped int
	fmt.Sscanf(td.output()[strings.Index(td.output(), "\n")+1:], "%d packets captured\n%d packets received by filter\n%d packets dropped by kernel", &captured, &received, &dropped)
	if captured == 0 || captured != received || dropped != 0 {
		t.Fatalf("the full capture is incomplete: %s", td.output())
	}

	for _, tc := range []struct {
		file, filter string
		want         int
	}{
		{uri, `http.request.uri == "/mytest"`, 6},
		{contains, `tcp contains "lbtest"`, 0},
	} {
		got := tsharkFields(t, tc.file, "")
		want := tsharkFields(t, full, tc.filter)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: podtap wrote\n%s\ntshark -Y '%s' on the full capture selects\n%s", filepath.Base(tc.file), strings.Join(got, "\n"), tc.filter, strings.Join(want, "\n"))
		}
		if tc.want > 0 && len(got) != tc.want {
			t.Errorf("%s: %d packets, want %d", filepath.Base(tc.file), len(got), tc.want)
		}
		if len(got) == 0 {
			t.Errorf("%s: no packets", filepath.Base(tc.file))
		}
		t.Logf("%s: %d packets, same as tshark -Y '%s' on the full capture of %d", filepath.Base(tc.file), len(got), tc.filter, len(tsharkFields(t, full, "")))
		st, err := os.Stat(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", tc.file, st.Mode().Perm())
		}
	}
	for f := range variantFiles {
		if got, want := tsharkFields(t, f, ""), tsharkFields(t, contains, ""); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s differs from the default scan's file:\n%s\nwant\n%s", filepath.Base(f), strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	// The large bodies travel as GSO super-packets bigger than any MTU;
	// the pattern at their end must have been found.
	if n := len(tsharkFields(t, contains, "frame.len > 1514")); n == 0 {
		t.Errorf("no super-packet (frame.len > 1514) among the --contains matches")
	}
	if !strings.Contains(p1.output(), "6 matched, 6 written, 0 dropped") {
		t.Errorf("podtap --uri summary: %s", p1.output())
	}
}

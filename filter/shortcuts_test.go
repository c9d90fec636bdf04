package filter

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/podtap/podtap/internal/frames"
)

// TestShortcutText: what the shortcut flags print as their filter is a
// display filter that Wireshark (and -Y) accepts, and it selects the same
// frames as the shortcut itself.
func TestShortcutText(t *testing.T) {
	host, err := Host("198.18.0.0/31")
	if err != nil {
		t.Fatal(err)
	}
	host6, err := Host("fd00::2")
	if err != nil {
		t.Fatal(err)
	}
	shortcuts := []Expr{Contains("lbtest"), Contains("a\"b\\c\x00\xff"), Contains("é"), URI("/mytest?id=1"),
		URIPrefix("/api/"), Method("GET"), Port(8080), host, host6}
	var fs [][]byte
	for _, v6 := range []bool{false, true} {
		for _, proto := range []uint8{0, 17} {
			for _, port := range []uint16{8080, 9} {
				for _, pl := range []string{"GET /mytest?id=1 HTTP/1.1\r\n", "POST /api/x HTTP/1.1\r\n", "xxlbtestxx", "a\"b\\c\x00\xff", "é", ""} {
					fs = append(fs, frames.Build(frames.Spec{V6: v6, Proto: proto, SrcPort: 1234, DstPort: port, Payload: []byte(pl)}))
				}
			}
		}
	}
	fs = append(fs, frames.Build(frames.Spec{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), DstPort: 8080}))
	for _, e := range shortcuts {
		text := e.(PredExpr).Pred.Text
		parsed, err := ParseDisplayFilter(text)
		if err != nil {
			t.Errorf("%s: not a display filter: %v", text, err)
			continue
		}
		want, err := Compile(e, text)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Compile(parsed, text)
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range fs {
			a, _ := want.Match(Frame{Data: f}, MethodSet(Methods))
			b, _ := got.Match(Frame{Data: f}, MethodSet(Methods))
			if a != b {
				t.Errorf("%s on frame %d: the shortcut says %v, its text as -Y says %v", text, i, a, b)
			}
		}
	}
}

// TestCheckErrors: filters that cannot run, or can never match, are
// refused in one short line, however long the pattern.
func TestCheckErrors(t *testing.T) {
	long := strings.Repeat("x", 100000)
	for _, tc := range []struct {
		expr Expr
		src  string // or a display filter
		want string
	}{
		{expr: Method("GET "), want: "a method never contains a space, CR or LF"},
		{expr: Method("GET\r\n"), want: "a method never contains a space, CR or LF"},
		{src: `http.request.method == "GET "`, want: "a method never contains a space, CR or LF"},
		{expr: URI("/a b"), want: "a request target never contains a space"},
		{expr: Contains(long), want: "pattern is 100000 bytes, at most 64"},
		{src: `tcp contains "` + long + `"`, want: "pattern is 100000 bytes, at most 64"},
		{expr: URI("/" + long), want: "URI is 100001 bytes, at most 128"},
	} {
		e := tc.expr
		if tc.src != "" {
			var err error
			if e, err = ParseDisplayFilter(tc.src); err != nil {
				t.Errorf("%.40s: %v", tc.src, err)
				continue
			}
		}
		_, err := Compile(e, "")
		if err == nil || !strings.Contains(err.Error(), tc.want) || len(err.Error()) > 200 {
			t.Errorf("%.40s: error %.300q, want one short line with %q", tc.src+fmt.Sprint(tc.expr)[:min(40, len(fmt.Sprint(tc.expr)))], err, tc.want)
		}
	}
}

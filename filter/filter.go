// Package filter describes what podtap captures: a boolean expression over
// primitive predicates (ports, addresses, payload patterns, HTTP request
// line tests) that the TC program decides in the kernel. Match is the same
// semantics in plain Go, the reference the kernel is tested against.
package filter

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Kind is the kind of a primitive predicate (enum pt_pred_kind).
type Kind uint8

const (
	KindProto       Kind = iota + 1 // a protocol header is present
	KindPort                        // TCP/UDP port comparison
	KindVLAN                        // VLAN ID comparison
	KindAddr4                       // IPv4 address in a prefix
	KindAddr6                       // IPv6 address in a prefix
	KindPattern                     // byte pattern somewhere in a region
	KindHTTPRequest                 // the TCP payload starts with a request line
	KindMethod                      // request method equals
	KindURIEq                       // request target equals
	KindURIPrefix                   // request target starts with
	KindURIContains                 // request target contains
)

// Proto is a protocol presence bit (enum pt_proto).
type Proto uint8

const (
	ProtoVLAN Proto = 1 << iota
	ProtoIP4
	ProtoIP6
	ProtoTCP
	ProtoUDP
)

// Side selects which fields a port or address predicate looks at
// (enum pt_side); ports also say which transport.
type Side uint8

const (
	SideSrc Side = 1 << iota
	SideDst
	SideTCP
	SideUDP
)

// Op is a comparison (enum pt_op).
type Op uint8

const (
	OpEq Op = iota
	OpLt
	OpLe
	OpGt
	OpGe
)

// Region is where a pattern is searched (enum pt_region).
type Region uint8

const (
	RegionFrame      Region = iota // the whole frame
	RegionL4                       // TCP or UDP header and payload
	RegionPayload                  // TCP or UDP payload
	RegionTCPL4                    // TCP header and payload (Wireshark's tcp)
	RegionUDPL4                    // UDP header and payload (Wireshark's udp)
	RegionTCPPayload               // TCP payload
	RegionUDPPayload               // UDP payload
	RegionURI                      // the HTTP request target (KindURIContains)
)

// Limits of one filter, as the kernel program is built (headers/podtap.h).
const (
	MaxPreds    = 32
	MaxCode     = 64
	MaxPatterns = 8
	MaxPatLen   = 64
	MaxStrings  = 8
	MaxStrLen   = 128
	MaxMethod   = 20
)

// Pred is one primitive test.
type Pred struct {
	Kind   Kind
	Proto  Proto        // KindProto
	Side   Side         // KindPort, KindAddr4, KindAddr6
	Op     Op           // KindPort, KindVLAN
	Value  uint32       // port or VLAN ID
	STag   bool         // KindVLAN: 802.1ad S-tags instead of C-tags
	Prefix netip.Prefix // KindAddr4, KindAddr6
	Bytes  []byte       // pattern, method or URI
	Region Region       // KindPattern
	Text   string       // how it reads, for comments and errors
}

func (p Pred) key() string {
	return fmt.Sprintf("%d/%d/%d/%d/%d/%v/%v/%x/%d", p.Kind, p.Proto, p.Side, p.Op, p.Value, p.STag, p.Prefix, p.Bytes, p.Region)
}

// Expr is a boolean expression over predicates.
type Expr interface{ isExpr() }

type (
	// PredExpr is a leaf.
	PredExpr struct{ Pred Pred }
	// And holds when both hold.
	And struct{ L, R Expr }
	// Or holds when either holds.
	Or struct{ L, R Expr }
	// Not holds when X does not.
	Not struct{ X Expr }
	// True always holds (an empty filter).
	True struct{}
)

func (PredExpr) isExpr() {}
func (And) isExpr()      {}
func (Or) isExpr()       {}
func (Not) isExpr()      {}
func (True) isExpr()     {}

// Postfix code (enum pt_code).
const (
	CodeEnd  = 0
	CodeAnd  = 1
	CodeOr   = 2
	CodeNot  = 3
	CodeTrue = 4
	CodePred = 0x80
)

// Program is a compiled filter: distinct predicates and the postfix code
// that combines them.
type Program struct {
	Preds []Pred
	Code  []byte
	Text  string // the filter as the user gave it
}

// AllOf is the conjunction of exprs (True when there are none).
func AllOf(exprs ...Expr) Expr {
	var e Expr
	for _, x := range exprs {
		if e == nil {
			e = x
		} else {
			e = And{e, x}
		}
	}
	if e == nil {
		return True{}
	}
	return e
}

// Compile checks e against the kernel's limits and turns it into a Program.
func Compile(e Expr, text string) (*Program, error) {
	p := &Program{Text: text}
	index := map[string]int{}
	var walk func(Expr) error
	walk = func(e Expr) error {
		switch e := e.(type) {
		case PredExpr:
			if err := e.Pred.check(); err != nil {
				return err
			}
			k := e.Pred.key()
			i, ok := index[k]
			if !ok {
				i = len(p.Preds)
				if i >= MaxPreds {
					return fmt.Errorf("filter has more than %d distinct tests", MaxPreds)
				}
				index[k] = i
				p.Preds = append(p.Preds, e.Pred)
			}
			p.Code = append(p.Code, CodePred|byte(i))
		case And:
			if err := walk(e.L); err != nil {
				return err
			}
			if err := walk(e.R); err != nil {
				return err
			}
			p.Code = append(p.Code, CodeAnd)
		case Or:
			if err := walk(e.L); err != nil {
				return err
			}
			if err := walk(e.R); err != nil {
				return err
			}
			p.Code = append(p.Code, CodeOr)
		case Not:
			if err := walk(e.X); err != nil {
				return err
			}
			p.Code = append(p.Code, CodeNot)
		case True:
			p.Code = append(p.Code, CodeTrue)
		default:
			return fmt.Errorf("unknown expression %T", e)
		}
		return nil
	}
	if err := walk(e); err != nil {
		return nil, err
	}
	if len(p.Code) > MaxCode {
		return nil, fmt.Errorf("filter is too long: %d operations, at most %d", len(p.Code), MaxCode)
	}
	if n := len(p.Patterns()); n > MaxPatterns {
		return nil, fmt.Errorf("filter has %d distinct byte patterns, at most %d", n, MaxPatterns)
	}
	if n := len(p.Strings()); n > MaxStrings {
		return nil, fmt.Errorf("filter has %d distinct method/URI strings, at most %d", n, MaxStrings)
	}
	return p, nil
}

func (p Pred) check() error {
	switch p.Kind {
	case KindPattern:
		if len(p.Bytes) == 0 {
			return fmt.Errorf("%s: empty pattern", p.Text)
		}
		if len(p.Bytes) > MaxPatLen {
			return fmt.Errorf("%s: pattern is %d bytes, at most %d", p.shortText(), len(p.Bytes), MaxPatLen)
		}
	case KindMethod:
		if len(p.Bytes) == 0 || len(p.Bytes) > MaxMethod {
			return fmt.Errorf("%s: a method is 1 to %d bytes", p.shortText(), MaxMethod)
		}
		if strings.ContainsAny(string(p.Bytes), " \r\n") {
			return fmt.Errorf("%s: a method never contains a space, CR or LF, so this can never match", p.shortText())
		}
	case KindURIContains:
		if len(p.Bytes) == 0 {
			return fmt.Errorf("%s: empty pattern", p.Text)
		}
		if len(p.Bytes) > MaxPatLen {
			return fmt.Errorf("%s: pattern is %d bytes, at most %d", p.shortText(), len(p.Bytes), MaxPatLen)
		}
		if strings.ContainsAny(string(p.Bytes), " \r\n") {
			return fmt.Errorf("%s: a request target never contains a space, CR or LF, so this can never match", p.Text)
		}
	case KindURIEq, KindURIPrefix:
		if len(p.Bytes) > MaxStrLen {
			return fmt.Errorf("%s: URI is %d bytes, at most %d", p.shortText(), len(p.Bytes), MaxStrLen)
		}
		if strings.ContainsAny(string(p.Bytes), " \r\n") {
			return fmt.Errorf("%s: a request target never contains a space, CR or LF, so this can never match", p.Text)
		}
	case KindAddr4:
		if !p.Prefix.Addr().Is4() {
			return fmt.Errorf("%s: not an IPv4 address", p.Text)
		}
	case KindAddr6:
		if !p.Prefix.Addr().Is6() || p.Prefix.Addr().Is4In6() {
			return fmt.Errorf("%s: not an IPv6 address", p.Text)
		}
	}
	return nil
}

// shortText is the predicate's text for an error message: a long pattern
// is cut, so that the message stays one readable line.
func (p Pred) shortText() string {
	const max = 80
	if len(p.Text) <= max {
		return p.Text
	}
	n := max
	for n > 0 && !utf8.RuneStart(p.Text[n]) {
		n--
	}
	return fmt.Sprintf("%s… (%d bytes)", p.Text[:n], len(p.Text))
}

// PatternKey identifies a distinct (bytes, region) pattern.
type PatternKey struct {
	Bytes  string
	Region Region
}

// Patterns lists the distinct patterns in the order the kernel numbers them.
func (p *Program) Patterns() []PatternKey {
	var out []PatternKey
	seen := map[PatternKey]bool{}
	for _, pr := range p.Preds {
		var k PatternKey
		switch pr.Kind {
		case KindPattern:
			k = PatternKey{string(pr.Bytes), pr.Region}
		case KindURIContains:
			k = PatternKey{string(pr.Bytes), RegionURI}
		default:
			continue
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// Strings lists the distinct method/URI strings in the kernel's order.
func (p *Program) Strings() []string {
	var out []string
	seen := map[string]bool{}
	for _, pr := range p.Preds {
		switch pr.Kind {
		case KindMethod, KindURIEq, KindURIPrefix:
			if !seen[string(pr.Bytes)] {
				seen[string(pr.Bytes)] = true
				out = append(out, string(pr.Bytes))
			}
		}
	}
	return out
}

// NeedsHTTP reports whether any predicate looks at the request line.
func (p *Program) NeedsHTTP() bool {
	for _, pr := range p.Preds {
		switch pr.Kind {
		case KindHTTPRequest, KindMethod, KindURIEq, KindURIPrefix, KindURIContains:
			return true
		}
	}
	return false
}

// Describe names the predicates set in mask, for a packet comment.
func (p *Program) Describe(mask uint64) string {
	var parts []string
	for i, pr := range p.Preds {
		if mask&(1<<i) != 0 {
			parts = append(parts, pr.Text)
		}
	}
	return strings.Join(parts, ", ")
}

// Eval evaluates the postfix code given which predicates hold.
func (p *Program) Eval(val uint64) bool {
	var st []bool
	for _, op := range p.Code {
		switch {
		case op&CodePred != 0:
			st = append(st, val&(1<<(op&0x3f)) != 0)
		case op == CodeTrue:
			st = append(st, true)
		case op == CodeNot:
			st[len(st)-1] = !st[len(st)-1]
		case op == CodeAnd, op == CodeOr:
			a, b := st[len(st)-1], st[len(st)-2]
			st = st[:len(st)-2]
			if op == CodeAnd {
				st = append(st, a && b)
			} else {
				st = append(st, a || b)
			}
		}
	}
	return len(st) == 1 && st[0]
}

// MethodClass says what a method at the start of a TCP payload makes of
// the line.
type MethodClass uint8

const (
	// MethodRequest: a request line; http.request holds.
	MethodRequest MethodClass = 1
	// MethodLineOnly: Wireshark 4.0 reads the method and URI of the line
	// but does not call it http.request (NOTIFY, SUBSCRIBE, UNSUBSCRIBE).
	MethodLineOnly MethodClass = 2
)

// Methods are the HTTP methods podtap recognises, as Wireshark 4.0's HTTP
// dissector does (checked against tshark 4.0.17): its 38 request methods,
// the three it reads without calling them requests, and each of them with
// the "M-" prefix of HTTP extensions. Anything else (PURGE, QUERY, a
// lowercase "get") starts no request line, as in Wireshark 4.0.
var Methods = func() map[string]MethodClass {
	m := map[string]MethodClass{}
	for _, s := range strings.Fields(`GET PUT COPY HEAD LOCK MOVE POLL POST BCOPY BMOVE MKCOL TRACE PATCH
		LABEL MERGE DELETE SEARCH UNLOCK REPORT UPDATE BDELETE CONNECT OPTIONS CHECKIN PROPFIND
		CHECKOUT CCM_POST PROPPATCH BPROPFIND BPROPPATCH UNCHECKOUT MKACTIVITY MKWORKSPACE
		RPC_CONNECT RPC_IN_DATA RPC_OUT_DATA VERSION-CONTROL BASELINE-CONTROL SSTP_DUPLEX_POST`) {
		m[s], m["M-"+s] = MethodRequest, MethodRequest
	}
	for _, s := range []string{"NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE"} {
		m[s], m["M-"+s] = MethodLineOnly, MethodLineOnly
	}
	return m
}()

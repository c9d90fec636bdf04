package filter

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file reads Wireshark display-filter syntax (as tshark -Y and
// Wireshark 4.0 take it) and turns the part podtap can decide in the kernel
// into an Expr. What it accepts means what tshark 4.0 means by it, checked
// against tshark on crafted frames in display_test.go; everything else is
// refused with the column it starts at, never widened or narrowed.
//
// Grammar (Wireshark 4.0; keywords are case-sensitive, as in tshark):
//
//	expr     = and { ("or" | "||") and }
//	and      = not { ("and" | "&&") not }
//	not      = ("not" | "!") not | "(" expr ")" | test
//	test     = [ "any" | "all" ] field [ slice ] [ cmp value
//	         | "contains" value | [ "not" ] "in" "{" element { "," element } "}" ]
//	cmp      = "==" | "eq" | "any_eq" | "!=" | "ne" | "all_ne" | "===" | "all_eq"
//	         | "!==" | "any_ne" | "~=" | "<" | "lt" | "<=" | "le" | ">" | "gt" | ">=" | "ge"
//	element  = value [ ".." value ]
//
// Precedence, as tshark 4.0 applies it (wireshark-filter(4) of 4.0 lists
// the same): "not" binds tightest, then "and", then "or"; "and" and "or" are
// both left-associative. Mixing them without parentheses is neither an
// error nor a warning in 4.0: "a or b and c" is "a or (b and c)".
//
// Comparisons follow 4.0's rules for fields that occur more than once in a
// packet (tcp.port is the source and the destination port, ip.addr both
// addresses, vlan.id every 802.1Q tag): "==" and the orderings hold when
// any occurrence does; "!=" holds when the field is present and no
// occurrence equals the value (so "tcp.port != 80" is false on UDP); "==="
// wants every occurrence equal, "!==" (and the deprecated "~=") some
// occurrence different; "any" and "all" before a test override the operator.
//
// Values, as 4.0 reads them: ports and VLAN IDs in decimal, hex (0x50),
// binary (0b1010000) or octal (0120); IPv4 and IPv6 addresses and CIDR
// prefixes (host names are refused: they would need a resolver); strings in
// double quotes with 4.0's escapes, or raw (r"..."); after contains, byte
// strings aa:bb:cc, aa-bb-cc or aa.bb.cc, or one byte 0xaa. Sets need
// commas in 4.0: "{80 443}" is an error there, "{80, 443, 8000..8080}" is
// not.
//
// The parser reports an error by panicking with a *SyntaxError, which
// ParseDisplayFilter recovers; nothing else is recovered.

// SyntaxError is a display filter podtap cannot run: malformed, or asking
// for something the kernel program does not test.
type SyntaxError struct {
	Pos int    // byte offset into the filter, 0-based
	Msg string // what is wrong, one line
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("-Y: column %d: %s", e.Pos+1, e.Msg)
}

// supported names what ParseDisplayFilter takes, for error messages.
const supported = "supported: tcp contains, udp contains, frame contains, tcp.payload contains, " +
	"udp.payload contains, http.request, http.request.uri, http.request.method, tcp/udp ports, " +
	"ip/ipv6 addresses, vlan.id, ieee8021ad.id, tcp, udp, ip, ipv6, vlan"

// ParseDisplayFilter parses a Wireshark display filter into an expression
// over podtap's predicates. An empty filter is True. Each predicate's Text
// is the user's own text of the test it comes from; a test that needs more
// than one predicate (tcp.port != 80 is tcp and not tcp.port == 80) gets
// texts in the same syntax that say what each predicate tests. The
// kernel's limits (MaxPreds, MaxPatLen, ...) are checked by Compile.
func ParseDisplayFilter(src string) (e Expr, err error) {
	defer func() {
		if r := recover(); r != nil {
			se, ok := r.(*SyntaxError)
			if !ok {
				panic(r)
			}
			e, err = nil, se
		}
	}()
	p := &parser{lx: lexer{src: src}}
	p.advance()
	if p.tok.kind == tEOF {
		return True{}, nil
	}
	e = p.parseOr()
	switch p.tok.kind {
	case tEOF:
	case tRParen:
		p.fail(p.tok.pos, `")" without a matching "("`)
	default:
		p.unexpected("and, or or the end of the filter")
	}
	return e, nil
}

// ---- tokens ----

type tokKind int

const (
	tEOF      tokKind = iota
	tWord             // field names, numbers, addresses, byte strings
	tString           // "..." or r"...", decoded into val
	tChar             // '...'
	tLParen           // (
	tRParen           // )
	tLBrace           // {
	tRBrace           // }
	tComma            // ,
	tDotDot           // ..
	tSlice            // [...], inner text in val
	tAnd              // and &&
	tOr               // or ||
	tNot              // not !
	tCmp              // comparison, in rel and quant
	tContains         // contains
	tMatches          // matches ~
	tIn               // in
	tAny              // any
	tAll              // all
	tArith            // + - * / % & bitwise_and
	tOther            // anything else: # $ @ = | ...
)

type relation int

const (
	relEq relation = iota
	relNe
	relLt
	relLe
	relGt
	relGe
)

// complement is the relation that holds exactly when r does not.
func (r relation) complement() relation {
	return [...]relation{relNe, relEq, relGe, relGt, relLe, relLt}[r]
}

func (r relation) String() string {
	return [...]string{"==", "!=", "<", "<=", ">", ">="}[r]
}

func (r relation) op() Op {
	return [...]Op{OpEq, OpEq, OpLt, OpLe, OpGt, OpGe}[r]
}

type quantifier int

const (
	qNone quantifier = iota
	qAny
	qAll
)

type token struct {
	kind     tokKind
	pos, end int    // src[pos:end] is the token
	text     string // src[pos:end]
	val      []byte // tString: the decoded bytes; tSlice: the text between the brackets
	rel      relation
	quant    quantifier // the quantifier a comparison operator implies
}

var keywords = map[string]token{
	"and":         {kind: tAnd},
	"or":          {kind: tOr},
	"not":         {kind: tNot},
	"contains":    {kind: tContains},
	"matches":     {kind: tMatches},
	"in":          {kind: tIn},
	"any":         {kind: tAny},
	"all":         {kind: tAll},
	"bitwise_and": {kind: tArith},
	"eq":          {kind: tCmp, rel: relEq, quant: qAny},
	"any_eq":      {kind: tCmp, rel: relEq, quant: qAny},
	"ne":          {kind: tCmp, rel: relNe, quant: qAll},
	"all_ne":      {kind: tCmp, rel: relNe, quant: qAll},
	"all_eq":      {kind: tCmp, rel: relEq, quant: qAll},
	"any_ne":      {kind: tCmp, rel: relNe, quant: qAny},
	"lt":          {kind: tCmp, rel: relLt, quant: qAny},
	"le":          {kind: tCmp, rel: relLe, quant: qAny},
	"gt":          {kind: tCmp, rel: relGt, quant: qAny},
	"ge":          {kind: tCmp, rel: relGe, quant: qAny},
}

// symbols, longest first where one is a prefix of another.
var symbols = []struct {
	s   string
	tok token
}{
	{"===", token{kind: tCmp, rel: relEq, quant: qAll}},
	{"!==", token{kind: tCmp, rel: relNe, quant: qAny}},
	{"==", token{kind: tCmp, rel: relEq, quant: qAny}},
	{"!=", token{kind: tCmp, rel: relNe, quant: qAll}},
	{"~=", token{kind: tCmp, rel: relNe, quant: qAny}},
	{"<=", token{kind: tCmp, rel: relLe, quant: qAny}},
	{">=", token{kind: tCmp, rel: relGe, quant: qAny}},
	{"<", token{kind: tCmp, rel: relLt, quant: qAny}},
	{">", token{kind: tCmp, rel: relGt, quant: qAny}},
	{"&&", token{kind: tAnd}},
	{"||", token{kind: tOr}},
	{"!", token{kind: tNot}},
	{"~", token{kind: tMatches}},
	{"..", token{kind: tDotDot}},
	{"(", token{kind: tLParen}},
	{")", token{kind: tRParen}},
	{"{", token{kind: tLBrace}},
	{"}", token{kind: tRBrace}},
	{",", token{kind: tComma}},
	{"+", token{kind: tArith}},
	{"-", token{kind: tArith}},
	{"*", token{kind: tArith}},
	{"/", token{kind: tArith}},
	{"%", token{kind: tArith}},
	{"&", token{kind: tArith}},
}

// ---- lexer ----

type lexer struct {
	src string
	off int
}

// Bytes of non-ASCII letters belong to words too: no field has them, and
// an error names the whole word.
func isWordStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == ':' || c >= 0x80
}

func isWordByte(c byte) bool {
	return isWordStart(c) || c == '.' || c == '-' || c == '/'
}

func (lx *lexer) next() token {
	s := lx.src
	for lx.off < len(s) && strings.IndexByte(" \t\r\n", s[lx.off]) >= 0 {
		lx.off++
	}
	start := lx.off
	if start == len(s) {
		return token{kind: tEOF, pos: start, end: start}
	}
	c := s[start]
	switch {
	case c == '"' || (c == 'r' || c == 'R') && start+1 < len(s) && s[start+1] == '"':
		return lx.string()
	case c == '\'':
		return lx.char()
	case c == '[':
		end := strings.IndexByte(s[start:], ']')
		if end < 0 {
			panic(&SyntaxError{start, `the closing "]" of this slice is missing`})
		}
		lx.off = start + end + 1
		return token{kind: tSlice, pos: start, end: lx.off, text: s[start:lx.off], val: []byte(s[start+1 : start+end])}
	case isWordStart(c):
		i := start
		for i < len(s) && isWordByte(s[i]) && !strings.HasPrefix(s[i:], "..") {
			i++
		}
		lx.off = i
		t := token{kind: tWord}
		if k, ok := keywords[s[start:i]]; ok {
			t = k
		}
		t.pos, t.end, t.text = start, i, s[start:i]
		return t
	}
	for _, sym := range symbols {
		if strings.HasPrefix(s[start:], sym.s) {
			t := sym.tok
			lx.off = start + len(sym.s)
			t.pos, t.end, t.text = start, lx.off, sym.s
			return t
		}
	}
	_, n := utf8.DecodeRuneInString(s[start:])
	lx.off = start + n
	return token{kind: tOther, pos: start, end: lx.off, text: s[start:lx.off]}
}

// string decodes a double-quoted string with Wireshark 4.0's escapes:
// \" \\ \' \a \b \f \n \r \t \v, \NNN (octal, at most 255), \xN or \xNN,
// \uNNNN and \UNNNNNNNN (a Unicode code point, written as UTF-8). In a raw
// string (r"..."), a backslash stays as it is and only keeps the next
// character, a quote included, from ending the string.
func (lx *lexer) string() token {
	s := lx.src
	start := lx.off
	i := start
	raw := s[i] != '"'
	if raw {
		i++
	}
	i++ // the opening quote
	var val []byte
	for {
		if i >= len(s) {
			panic(&SyntaxError{start, "the closing quote of this string is missing"})
		}
		c := s[i]
		if c == '"' {
			i++
			break
		}
		if c != '\\' {
			val = append(val, c)
			i++
			continue
		}
		if i+1 >= len(s) {
			panic(&SyntaxError{start, "the closing quote of this string is missing"})
		}
		if raw {
			val = append(val, c, s[i+1])
			i += 2
			continue
		}
		b, n, msg := unescape(s[i:])
		if msg != "" {
			panic(&SyntaxError{i, msg})
		}
		val = append(val, b...)
		i += n
	}
	lx.off = i
	return token{kind: tString, pos: start, end: i, text: s[start:i], val: val}
}

// simpleEscapes are the one-character escapes of Wireshark 4.0's strings.
var simpleEscapes = map[byte]byte{'"': '"', '\\': '\\', '\'': '\'', 'a': '\a', 'b': '\b', 'f': '\f',
	'n': '\n', 'r': '\r', 't': '\t', 'v': '\v'}

// unescape decodes the escape sequence at the start of s (s[0] is the
// backslash) and returns its bytes and length, or what is wrong with it.
func unescape(s string) (b []byte, n int, msg string) {
	c := s[1]
	if b, ok := simpleEscapes[c]; ok {
		return []byte{b}, 2, ""
	}
	digits := func(from, max int, ok func(byte) bool) string {
		j := from
		for j < len(s) && j-from < max && ok(s[j]) {
			j++
		}
		return s[from:j]
	}
	isOct := func(b byte) bool { return b >= '0' && b <= '7' }
	isHex := func(b byte) bool {
		return b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F'
	}
	switch {
	case isOct(c):
		d := digits(1, 3, isOct)
		v, _ := strconv.ParseUint(d, 8, 16)
		if v > 255 {
			return nil, 0, fmt.Sprintf(`\%s is larger than 255`, d)
		}
		return []byte{byte(v)}, 1 + len(d), ""
	case c == 'x':
		d := digits(2, 2, isHex)
		if d == "" {
			return nil, 0, `\x needs one or two hex digits`
		}
		v, _ := strconv.ParseUint(d, 16, 8)
		return []byte{byte(v)}, 2 + len(d), ""
	case c == 'u' || c == 'U':
		want := 4
		if c == 'U' {
			want = 8
		}
		d := digits(2, want, isHex)
		v, _ := strconv.ParseUint(d, 16, 32)
		if len(d) != want || v == 0 || v > utf8.MaxRune || v >= 0xd800 && v <= 0xdfff {
			return nil, 0, fmt.Sprintf(`\%c%s is not a valid Unicode code point (\%c takes %d hex digits)`, c, d, c, want)
		}
		return utf8.AppendRune(nil, rune(v)), 2 + want, ""
	}
	_, size := utf8.DecodeRuneInString(s[1:])
	return nil, 0, fmt.Sprintf(`\%s is not a valid escape (use \", \\, \xNN, \NNN, \n, \r, \t, \uNNNN or a raw string r"...")`, s[1:1+size])
}

func (lx *lexer) char() token {
	s := lx.src
	start := lx.off
	i := start + 1
	for i < len(s) && s[i] != '\'' {
		if s[i] == '\\' {
			i++
		}
		i++
	}
	if i >= len(s) {
		panic(&SyntaxError{start, "the closing quote of this character constant is missing"})
	}
	lx.off = i + 1
	return token{kind: tChar, pos: start, end: lx.off, text: s[start:lx.off]}
}

// ---- fields ----

type fieldClass int

const (
	fcProto   fieldClass = iota // a protocol: presence, maybe contains
	fcPort                      // a TCP or UDP port
	fcVLAN                      // an 802.1Q or 802.1ad VLAN ID
	fcAddr                      // an IPv4 or IPv6 address
	fcURI                       // http.request.uri
	fcMethod                    // http.request.method
	fcRequest                   // http.request
)

type fieldInfo struct {
	class      fieldClass
	proto      Proto  // fcProto: presence; fcPort, fcAddr: the protocol carrying it
	side       Side   // fcPort, fcAddr: which occurrences
	multi      bool   // occurs more than once in a packet (source and destination, stacked tags)
	tag        bool   // fcProto: presence of a VLAN tag
	stag       bool   // VLAN: 802.1ad S-tags (ieee8021ad) rather than 802.1Q C-tags
	canContain bool   // contains searches region
	region     Region //
	noExist    bool   // no predicate tests its presence alone
	base       string // the field's protocol, for the texts of derived tests
}

var fields = map[string]fieldInfo{
	"frame":      {class: fcProto, canContain: true, region: RegionFrame},
	"tcp":        {class: fcProto, proto: ProtoTCP, canContain: true, region: RegionTCPL4},
	"udp":        {class: fcProto, proto: ProtoUDP, canContain: true, region: RegionUDPL4},
	"ip":         {class: fcProto, proto: ProtoIP4},
	"ipv6":       {class: fcProto, proto: ProtoIP6},
	"vlan":       {class: fcProto, tag: true},
	"ieee8021ad": {class: fcProto, tag: true, stag: true},
	// tcp.payload and udp.payload are present only when there is a payload,
	// which no predicate tests on its own.
	"tcp.payload": {class: fcProto, canContain: true, region: RegionTCPPayload, noExist: true},
	"udp.payload": {class: fcProto, canContain: true, region: RegionUDPPayload, noExist: true},

	"tcp.port":    {class: fcPort, proto: ProtoTCP, side: SideSrc | SideDst | SideTCP, multi: true, base: "tcp"},
	"tcp.srcport": {class: fcPort, proto: ProtoTCP, side: SideSrc | SideTCP, base: "tcp"},
	"tcp.dstport": {class: fcPort, proto: ProtoTCP, side: SideDst | SideTCP, base: "tcp"},
	"udp.port":    {class: fcPort, proto: ProtoUDP, side: SideSrc | SideDst | SideUDP, multi: true, base: "udp"},
	"udp.srcport": {class: fcPort, proto: ProtoUDP, side: SideSrc | SideUDP, base: "udp"},
	"udp.dstport": {class: fcPort, proto: ProtoUDP, side: SideDst | SideUDP, base: "udp"},

	// tshark gives 802.1Q tags (TPID 0x8100 and 0x9100) to the vlan
	// dissector and 802.1ad S-tags (0x88a8) to ieee8021ad: "vlan" and
	// vlan.id see only the former.
	"vlan.id":       {class: fcVLAN, multi: true, base: "vlan"},
	"ieee8021ad.id": {class: fcVLAN, stag: true, multi: true, base: "ieee8021ad"},

	"ip.addr":   {class: fcAddr, proto: ProtoIP4, side: SideSrc | SideDst, multi: true, base: "ip"},
	"ip.src":    {class: fcAddr, proto: ProtoIP4, side: SideSrc, base: "ip"},
	"ip.dst":    {class: fcAddr, proto: ProtoIP4, side: SideDst, base: "ip"},
	"ipv6.addr": {class: fcAddr, proto: ProtoIP6, side: SideSrc | SideDst, multi: true, base: "ipv6"},
	"ipv6.src":  {class: fcAddr, proto: ProtoIP6, side: SideSrc, base: "ipv6"},
	"ipv6.dst":  {class: fcAddr, proto: ProtoIP6, side: SideDst, base: "ipv6"},

	"http.request":        {class: fcRequest, base: "http.request"},
	"http.request.uri":    {class: fcURI, canContain: true, base: "http.request.uri"},
	"http.request.method": {class: fcMethod, base: "http.request.method"},
}

// looksLikeField reports whether s is spelled like a Wireshark field or
// protocol name (rather than a number, address or byte string).
func looksLikeField(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z' || s[0] == '_') {
		return false
	}
	return !strings.ContainsAny(s, ":/")
}

// ---- parser ----

type parser struct {
	lx  lexer
	tok token
}

func (p *parser) advance() { p.tok = p.lx.next() }

func (p *parser) fail(pos int, format string, args ...any) {
	panic(&SyntaxError{pos, fmt.Sprintf(format, args...)})
}

// unexpected fails at the current token, saying what would fit there.
func (p *parser) unexpected(want string) {
	if p.tok.kind == tEOF {
		p.fail(p.tok.pos, "unexpected end of the filter (expected %s)", want)
	}
	p.fail(p.tok.pos, "unexpected %q (expected %s)", p.tok.text, want)
}

func (p *parser) parseOr() Expr {
	e := p.parseAnd()
	for p.tok.kind == tOr {
		p.advance()
		e = Or{e, p.parseAnd()}
	}
	return e
}

func (p *parser) parseAnd() Expr {
	e := p.parseNot()
	for p.tok.kind == tAnd {
		p.advance()
		e = And{e, p.parseNot()}
	}
	return e
}

func (p *parser) parseNot() Expr {
	switch p.tok.kind {
	case tNot:
		p.advance()
		return Not{p.parseNot()}
	case tLParen:
		open := p.tok.pos
		p.advance()
		e := p.parseOr()
		if p.tok.kind == tEOF {
			p.fail(open, `this "(" is never closed`)
		}
		if p.tok.kind != tRParen {
			p.unexpected(`and, or or ")"`)
		}
		p.advance()
		return e
	}
	return p.parseTest()
}

// test is one comparison, containment or presence test being compiled.
type test struct {
	p      *parser
	start  int    // where its text starts
	name   string // the field as written
	f      fieldInfo
	slice  string // "[0:N]" as written after http.request.uri, or ""
	prefix int    // its N, 0 without a slice
}

// text is the user's text of the test, from its start to the current
// token.
func (t *test) text(end int) string { return t.p.lx.src[t.start:end] }

func (p *parser) parseTest() Expr {
	t := &test{p: p, start: p.tok.pos}
	quant, quantTok := qNone, p.tok
	if p.tok.kind == tAny || p.tok.kind == tAll {
		quant = qAny
		if p.tok.kind == tAll {
			quant = qAll
		}
		p.advance()
	}
	switch p.tok.kind {
	case tWord:
	case tString, tChar:
		p.fail(p.tok.pos, "a test starts with a field name, not a value: write it as field == value")
	case tOther:
		if p.tok.text == "$" {
			p.fail(p.tok.pos, "field references (${...}) are not supported in the kernel")
		}
		p.unexpected("a field name")
	default:
		p.unexpected("a field name")
	}
	name := p.tok
	p.advance()
	if p.tok.kind == tLParen {
		p.fail(name.pos, "functions such as %s() are not supported in the kernel", name.text)
	}
	f, ok := fields[name.text]
	if !ok {
		if looksLikeField(name.text) {
			p.fail(name.pos, "%q is not supported in the kernel (%s)", name.text, supported)
		}
		p.fail(name.pos, "expected a field name, found %q", name.text)
	}
	t.name, t.f = name.text, f
	if p.tok.kind == tOther && p.tok.text == "#" {
		p.fail(p.tok.pos, "the layer operator # is not supported in the kernel")
	}
	if p.tok.kind == tSlice {
		t.slice = p.tok.text
		t.prefix = p.parseSlice(t)
	}

	var e Expr
	switch p.tok.kind {
	case tCmp:
		op := p.tok
		p.advance()
		v := p.parseValue(t)
		q := op.quant
		if quant != qNone {
			q = quant
		}
		e = t.compare(q, op, v)
	case tContains:
		if quant != qNone {
			p.fail(quantTok.pos, "%q is supported only before a comparison (==, !=, <, ...)", quantTok.text)
		}
		op := p.tok
		p.advance()
		v := p.parseValue(t)
		e = t.contains(op, v)
	case tMatches:
		p.fail(p.tok.pos, "%q (a regular expression) is not supported in the kernel: use contains or ==", p.tok.text)
	case tIn:
		if quant != qNone {
			p.fail(quantTok.pos, "%q is supported only before a comparison (==, !=, <, ...)", quantTok.text)
		}
		e = t.in()
	case tNot:
		p.advance()
		if p.tok.kind != tIn {
			p.unexpected(`"in" after "not"`)
		}
		if quant != qNone {
			p.fail(quantTok.pos, "%q is supported only before a comparison (==, !=, <, ...)", quantTok.text)
		}
		e = Not{t.in()}
	case tArith:
		p.fail(p.tok.pos, "arithmetic and bitwise operators (%s) are not supported in the kernel", p.tok.text)
	default:
		if p.tok.kind == tOther && p.tok.text == "=" {
			p.fail(p.tok.pos, `"=" is not an operator: compare with ==`)
		}
		if quant != qNone {
			p.fail(quantTok.pos, "%q must be followed by a comparison, such as %s == value", quantTok.text, name.text)
		}
		if t.prefix > 0 {
			p.fail(name.pos, `a slice is supported only as http.request.uri[0:N] == "..." (a URI prefix test)`)
		}
		e = t.exists(name.text)
	}
	switch p.tok.kind {
	case tCmp, tContains, tMatches, tIn:
		p.fail(p.tok.pos, "%q cannot follow a test: compare a field with one value, and join tests with and/or", p.tok.text)
	case tArith:
		p.fail(p.tok.pos, "arithmetic and bitwise operators (%s) are not supported in the kernel", p.tok.text)
	}
	return e
}

// parseSlice reads the [...] after a field: only http.request.uri[0:N] and
// [:N] are supported. It returns N.
func (p *parser) parseSlice(t *test) int {
	tok := p.tok
	if t.f.class != fcURI {
		p.fail(tok.pos, `a slice is supported only as http.request.uri[0:N] == "..." (a URI prefix test), not on %q`, t.name)
	}
	in := strings.TrimSpace(string(tok.val))
	var n string
	switch {
	case strings.HasPrefix(in, "0:"):
		n = in[2:]
	case strings.HasPrefix(in, ":"):
		n = in[1:]
	}
	v, err := strconv.Atoi(n)
	if err != nil || v <= 0 || n[0] < '1' || n[0] > '9' {
		p.fail(tok.pos, `only the prefix slice [0:N] (or [:N]) is supported, as http.request.uri[0:N] == "..."; not %s`, tok.text)
	}
	p.advance()
	return v
}

// value is the right-hand side of a comparison or an element of a set.
type value struct {
	tok token
}

func (p *parser) parseValue(t *test) value {
	tok := p.tok
	switch tok.kind {
	case tWord, tString, tChar:
	case tLBrace:
		p.fail(tok.pos, "arithmetic ({...}) is not supported in the kernel")
	case tArith:
		p.fail(tok.pos, "arithmetic (%s) is not supported in the kernel; values are written without a sign", tok.text)
	case tOther:
		if tok.text == "$" {
			p.fail(tok.pos, "field references (${...}) are not supported in the kernel")
		}
		p.unexpected("a value")
	default:
		p.unexpected("a value")
	}
	p.advance()
	if tok.kind == tWord {
		if p.tok.kind == tLParen {
			p.fail(tok.pos, "functions such as %s() are not supported in the kernel", tok.text)
		}
		if _, isField := fields[tok.text]; isField || p.tok.kind == tSlice {
			p.fail(tok.pos, "comparing %s with another field (%s) is not supported in the kernel: compare it with a value", t.name, tok.text)
		}
	}
	return value{tok}
}

// ---- building expressions ----

func leaf(p Pred, text string) Expr {
	p.Text = text
	return PredExpr{p}
}

func (t *test) fail(pos int, format string, args ...any) { t.p.fail(pos, format, args...) }

// exists is the presence test of the field, the whole test when the user
// wrote the field alone.
func (t *test) exists(text string) Expr {
	f := t.f
	switch f.class {
	case fcProto:
		if f.noExist {
			t.fail(t.start, "%s is supported only with contains (%s contains \"...\")", t.name, t.name)
		}
		if f.tag {
			return leaf(Pred{Kind: KindVLAN, STag: f.stag, Op: OpGe}, text)
		}
		if f.proto == 0 {
			return True{} // frame
		}
		return leaf(Pred{Kind: KindProto, Proto: f.proto}, text)
	case fcPort, fcAddr:
		return leaf(Pred{Kind: KindProto, Proto: f.proto}, text)
	case fcVLAN:
		// A tag of this kind whose ID is 0 or more: a tag is there.
		return leaf(Pred{Kind: KindVLAN, STag: f.stag, Op: OpGe}, text)
	case fcURI, fcMethod:
		// Any request line has them, also one Wireshark does not call
		// http.request (NOTIFY): a target that starts with "" is there.
		return leaf(Pred{Kind: KindURIPrefix}, text)
	}
	return leaf(Pred{Kind: KindHTTPRequest}, text)
}

// present is the presence test behind a derived test (tcp.port != 80 is
// tcp and ...), with the name of what it tests as its text.
func (t *test) present() Expr {
	return t.exists(t.f.base)
}

// comparable fails unless the field takes comparisons (op is where one
// starts).
func (t *test) comparable(op token) {
	switch t.f.class {
	case fcProto:
		t.fail(op.pos, "%s is a protocol and cannot be compared: compare one of its fields (%s)", t.name, supported)
	case fcRequest:
		t.fail(op.pos, "%s is a test on its own and cannot be compared: compare http.request.uri or http.request.method", t.name)
	}
}

func (t *test) compare(q quantifier, op token, v value) Expr {
	t.comparable(op)
	text := t.text(v.tok.end)
	switch t.f.class {
	case fcPort, fcVLAN:
		return t.compareNumber(q, op, v, text)
	case fcAddr:
		return t.compareAddr(q, op, v, text)
	}
	return t.compareString(op, v, text)
}

// number reads a port or VLAN ID the way Wireshark 4.0 reads an unsigned
// integer: decimal, 0x hex, 0b binary, or octal with a leading 0.
func (t *test) number(v value) uint32 {
	s := v.tok.text
	if v.tok.kind == tString {
		t.fail(v.tok.pos, "%s is a string, but %s is a number: write it without quotes", s, t.name)
	}
	if v.tok.kind == tChar {
		t.fail(v.tok.pos, "character constants such as %s are not supported: write the number", s)
	}
	base, digits := 10, s
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X"):
		base, digits = 16, s[2:]
	case len(s) > 2 && (s[:2] == "0b" || s[:2] == "0B"):
		base, digits = 2, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, digits = 8, s[1:]
	}
	n, err := strconv.ParseUint(digits, base, 64)
	if errors.Is(err, strconv.ErrRange) || err == nil && n > 65535 {
		t.fail(v.tok.pos, "%s is too big for %s (at most 65535)", s, t.name)
	}
	if err != nil {
		t.fail(v.tok.pos, "%q is not a number (write 80, 0x50, 0120 or 0b1010000)", s)
	}
	return uint32(n)
}

// anyNumber holds when some occurrence of the port or VLAN ID field
// stands in relation r to n.
func (t *test) anyNumber(r relation, n uint32, vtext string) Expr {
	if r == relNe {
		return Or{t.anyNumber(relLt, n, vtext), t.anyNumber(relGt, n, vtext)}
	}
	text := fmt.Sprintf("%s %s %s", t.name, r, vtext)
	if t.f.class == fcVLAN {
		return leaf(Pred{Kind: KindVLAN, STag: t.f.stag, Op: r.op(), Value: n}, text)
	}
	return leaf(Pred{Kind: KindPort, Side: t.f.side, Op: r.op(), Value: n}, text)
}

func (t *test) compareNumber(q quantifier, op token, v value, text string) Expr {
	n := t.number(v)
	r := op.rel
	if !t.f.multi {
		q = qAny // one occurrence: any and all agree
	}
	switch {
	case q == qAll:
		// Present, and no occurrence is otherwise.
		return And{t.present(), Not{t.anyNumber(r.complement(), n, v.tok.text)}}
	case r == relNe && !t.f.multi:
		return And{t.present(), Not{t.anyNumber(relEq, n, v.tok.text)}}
	case r == relNe:
		return t.anyNumber(relNe, n, v.tok.text)
	}
	return withText(t.anyNumber(r, n, v.tok.text), text)
}

// cidr reads an address or CIDR prefix of the field's IP version.
func (t *test) cidr(v value) netip.Prefix {
	s := v.tok.text
	v6 := t.f.proto == ProtoIP6
	if v.tok.kind != tWord {
		t.fail(v.tok.pos, "%s is not an address: write it without quotes", s)
	}
	pf, err := ParsePrefix(s)
	if err != nil {
		kind := "IPv4"
		if v6 {
			kind = "IPv6"
		}
		t.fail(v.tok.pos, "%q is not an %s address or CIDR prefix (host names are not resolved in the kernel)", s, kind)
	}
	switch {
	case !v6 && strings.Contains(s, ":"):
		t.fail(v.tok.pos, "%q is an IPv6 address: compare it with ipv6.addr, ipv6.src or ipv6.dst", s)
	case v6 && !strings.Contains(s, ":"):
		t.fail(v.tok.pos, "%q is an IPv4 address: compare it with ip.addr, ip.src or ip.dst", s)
	case v6 && pf.Addr().Is4():
		t.fail(v.tok.pos, "%q is an IPv4-mapped IPv6 address, which podtap's address tests do not take", s)
	}
	return pf
}

func (t *test) addrIn(side Side, pf netip.Prefix, name, vtext string) Expr {
	kind := KindAddr4
	if t.f.proto == ProtoIP6 {
		kind = KindAddr6
	}
	return leaf(Pred{Kind: kind, Side: side, Prefix: pf}, name+" == "+vtext)
}

func (t *test) compareAddr(q quantifier, op token, v value, text string) Expr {
	r := op.rel
	if r != relEq && r != relNe {
		t.fail(op.pos, "%q is not supported on addresses in the kernel: use == or != (with a CIDR prefix for a range)", op.text)
	}
	pf := t.cidr(v)
	vt := v.tok.text
	src, dst := t.f.base+".src", t.f.base+".dst"
	if !t.f.multi {
		q = qAny
	}
	switch {
	case r == relEq && q == qAny:
		return withText(t.addrIn(t.f.side, pf, t.name, vt), text)
	case r == relEq: // all: both addresses
		return And{t.addrIn(SideSrc, pf, src, vt), t.addrIn(SideDst, pf, dst, vt)}
	case q == qAll || !t.f.multi: // no occurrence in the prefix
		return And{t.present(), Not{t.addrIn(t.f.side, pf, t.name, vt)}}
	}
	// Some occurrence outside the prefix.
	return And{t.present(), Not{And{t.addrIn(SideSrc, pf, src, vt), t.addrIn(SideDst, pf, dst, vt)}}}
}

// withText gives a single predicate another text.
func withText(e Expr, text string) Expr {
	if pe, ok := e.(PredExpr); ok {
		pe.Pred.Text = text
		return pe
	}
	return e
}

// str reads a string compared with the URI or method.
func (t *test) str(v value) []byte {
	switch v.tok.kind {
	case tString:
		return v.tok.val
	case tWord:
		if t.prefix > 0 {
			// A slice is bytes: tshark reads an unquoted value as bytes.
			b, ok := parseBytes(v.tok.text)
			if !ok {
				t.fail(v.tok.pos, "%q is not a byte string: write the prefix as a quoted string or as bytes (2f:61:70:69)", v.tok.text)
			}
			return b
		}
		t.unquoted(v)
	}
	t.fail(v.tok.pos, "character constants such as %s are not supported: write a quoted string", v.tok.text)
	return nil
}

func (t *test) compareString(op token, v value, text string) Expr {
	r := op.rel
	if r != relEq && r != relNe {
		t.fail(op.pos, "%q is not supported on %s in the kernel: use ==, != or contains", op.text, t.name)
	}
	b := t.str(v)
	var pr Pred
	switch {
	case t.prefix > 0:
		if len(b) != t.prefix {
			t.fail(v.tok.pos, "%s[0:%d] is compared with %d bytes: a prefix test needs exactly %d (Wireshark compares the slice whole)",
				t.name, t.prefix, len(b), t.prefix)
		}
		pr = Pred{Kind: KindURIPrefix, Bytes: b}
	case t.f.class == fcURI:
		pr = Pred{Kind: KindURIEq, Bytes: b}
	default:
		pr = Pred{Kind: KindMethod, Bytes: b}
	}
	// One request line per packet: any and all agree.
	if r == relEq {
		return leaf(pr, text)
	}
	return And{t.present(), Not{leaf(pr, t.name+t.slice+" == "+v.tok.text)}}
}

// unquoted fails on an unquoted value compared with a string field.
func (t *test) unquoted(v value) {
	s := v.tok.text
	if _, ok := parseBytes(s); ok {
		t.fail(v.tok.pos, "write %s as a quoted string, %q (Wireshark takes an unquoted value here as that text, not as bytes)", s, s)
	}
	t.fail(v.tok.pos, "write %s as a quoted string, %q", s, s)
}

func (t *test) contains(op token, v value) Expr {
	text := t.text(v.tok.end)
	if !t.f.canContain || t.prefix > 0 {
		t.fail(op.pos, "contains is supported on tcp, udp, frame, tcp.payload, udp.payload and http.request.uri, not on %s%s", t.name, t.slice)
	}
	var b []byte
	switch v.tok.kind {
	case tString:
		b = v.tok.val
	case tChar:
		t.fail(v.tok.pos, "character constants such as %s are not supported: write a quoted string", v.tok.text)
	case tWord:
		if t.f.class == fcURI {
			t.unquoted(v)
		}
		var ok bool
		if b, ok = parseBytes(v.tok.text); !ok {
			t.fail(v.tok.pos, "%q is not a byte string: write bytes as aa:bb:cc (or aa-bb-cc, aa.bb.cc), one byte as 0xaa, text as \"...\"", v.tok.text)
		}
	}
	if len(b) == 0 {
		t.fail(v.tok.pos, "an empty string is never found by Wireshark's contains")
	}
	if t.f.class == fcURI {
		return leaf(Pred{Kind: KindURIContains, Bytes: b}, text)
	}
	return leaf(Pred{Kind: KindPattern, Bytes: b, Region: t.f.region}, text)
}

// parseBytes reads a byte string: two hex digits a byte, separated all by
// ':', all by '-' or all by '.', at least two bytes; or one byte as 0xNN
// (two digits: tshark refuses 0x5 as bytes).
// tshark 4.0 also reads "aa", "65" and "1.2.3.4" as bytes, which look too
// much like other things to take.
func parseBytes(s string) ([]byte, bool) {
	if len(s) == 4 && (s[:2] == "0x" || s[:2] == "0X") {
		v, err := strconv.ParseUint(s[2:], 16, 8)
		return []byte{byte(v)}, err == nil
	}
	if len(s) < 5 || (len(s)+1)%3 != 0 {
		return nil, false
	}
	sep := s[2]
	if sep != ':' && sep != '-' && sep != '.' {
		return nil, false
	}
	var out []byte
	for i := 0; i < len(s); i += 3 {
		if i+2 < len(s) && s[i+2] != sep {
			return nil, false
		}
		v, err := strconv.ParseUint(s[i:i+2], 16, 8)
		if err != nil || strings.ContainsAny(s[i:i+2], "+-") {
			return nil, false
		}
		out = append(out, byte(v))
	}
	return out, true
}

// in compiles "field in {...}": some occurrence equals an element or lies
// in a range.
func (t *test) in() Expr {
	p := t.p
	t.comparable(p.tok)
	if t.prefix > 0 {
		t.fail(p.tok.pos, `a slice is supported only as http.request.uri[0:N] == "..." (a URI prefix test), not with "in"`)
	}
	p.advance() // in
	if p.tok.kind != tLBrace {
		p.unexpected(`"{" and a set of values`)
	}
	open := p.tok.pos
	p.advance()
	var e Expr
	for {
		lo := p.parseValue(t)
		var el Expr
		if p.tok.kind == tDotDot {
			p.advance()
			hi := p.parseValue(t)
			el = t.inRange(lo, hi)
		} else {
			el = t.compare(qAny, token{kind: tCmp, rel: relEq, pos: lo.tok.pos, text: "=="}, lo)
			el = withText(el, t.name+" == "+lo.tok.text)
		}
		if e == nil {
			e = el
		} else {
			e = Or{e, el}
		}
		if p.tok.kind == tRBrace {
			break
		}
		if p.tok.kind == tEOF {
			p.fail(open, `this "{" is never closed`)
		}
		if p.tok.kind != tComma {
			if p.tok.kind == tWord || p.tok.kind == tString {
				p.fail(p.tok.pos, `set elements are separated by commas in Wireshark 4.0: {80, 443}`)
			}
			p.unexpected(`"," or "}"`)
		}
		p.advance()
	}
	p.advance() // }
	return e
}

func (t *test) inRange(lo, hi value) Expr {
	if t.f.class != fcPort && t.f.class != fcVLAN {
		t.fail(lo.tok.pos, "ranges (..) in a set are supported only for ports")
	}
	a, b := t.number(lo), t.number(hi)
	if a > b {
		t.fail(lo.tok.pos, "%s..%s is an empty range", lo.tok.text, hi.tok.text)
	}
	if a == b {
		return t.anyNumber(relEq, a, lo.tok.text)
	}
	if t.f.class == fcVLAN {
		// "Some tag >= a and some tag <= b" is not "some tag in a..b"
		// with stacked tags, and no predicate tests one tag twice.
		t.fail(lo.tok.pos, "ranges of VLAN IDs are not supported in the kernel (a frame can carry several tags): use %s >= %s and %s <= %s for any tags", t.name, lo.tok.text, t.name, hi.tok.text)
	}
	one := func(side Side, name string) Expr {
		s := side | t.f.side&(SideTCP|SideUDP)
		return And{
			leaf(Pred{Kind: KindPort, Side: s, Op: OpGe, Value: a}, name+" >= "+lo.tok.text),
			leaf(Pred{Kind: KindPort, Side: s, Op: OpLe, Value: b}, name+" <= "+hi.tok.text),
		}
	}
	switch t.f.side & (SideSrc | SideDst) {
	case SideSrc:
		return one(SideSrc, t.name)
	case SideDst:
		return one(SideDst, t.name)
	}
	return Or{one(SideSrc, t.f.base+".srcport"), one(SideDst, t.f.base+".dstport")}
}

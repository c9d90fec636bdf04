package filter

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The capture command's shortcut flags, each one predicate. Their Text
// reads like the Wireshark filter they stand for.

// Contains: s anywhere in a TCP or UDP payload.
func Contains(s string) Expr {
	return PredExpr{Pred{Kind: KindPattern, Bytes: []byte(s), Region: RegionPayload,
		Text: fmt.Sprintf("(tcp.payload contains %s or udp.payload contains %[1]s)", strconv.Quote(s))}}
}

// URI: the HTTP request target equals s.
func URI(s string) Expr {
	return PredExpr{Pred{Kind: KindURIEq, Bytes: []byte(s), Text: "http.request.uri == " + strconv.Quote(s)}}
}

// URIPrefix: the HTTP request target starts with s.
func URIPrefix(s string) Expr {
	return PredExpr{Pred{Kind: KindURIPrefix, Bytes: []byte(s),
		Text: fmt.Sprintf("http.request.uri[0:%d] == %s", len(s), strconv.Quote(s))}}
}

// Method: the HTTP request method equals m.
func Method(m string) Expr {
	return PredExpr{Pred{Kind: KindMethod, Bytes: []byte(m), Text: "http.request.method == " + strconv.Quote(m)}}
}

// Port: a TCP or UDP source or destination port equals n.
func Port(n uint16) Expr {
	return PredExpr{Pred{Kind: KindPort, Side: SideSrc | SideDst | SideTCP | SideUDP, Op: OpEq,
		Value: uint32(n), Text: fmt.Sprintf("(tcp.port == %d or udp.port == %[1]d)", n)}}
}

// Host: the IPv4 or IPv6 source or destination address is s (an address
// or a CIDR prefix).
func Host(s string) (Expr, error) {
	p, err := ParsePrefix(s)
	if err != nil {
		return nil, err
	}
	kind, field := KindAddr4, "ip.addr"
	if p.Addr().Is6() {
		kind, field = KindAddr6, "ipv6.addr"
	}
	return PredExpr{Pred{Kind: kind, Side: SideSrc | SideDst, Prefix: p, Text: field + " == " + s}}, nil
}

// ParsePrefix parses an address or a CIDR prefix. An IPv4-mapped IPv6
// address is taken as the IPv4 address it maps.
func ParsePrefix(s string) (netip.Prefix, error) {
	var p netip.Prefix
	var err error
	if strings.Contains(s, "/") {
		p, err = netip.ParsePrefix(s)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(s)
		if err == nil {
			p = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", s)
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: zones are not supported", s)
	}
	if p.Addr().Is4In6() {
		bits := p.Bits() - 96
		if bits < 0 {
			return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix needs at least 96 bits", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), bits)
	}
	return p.Masked(), nil
}

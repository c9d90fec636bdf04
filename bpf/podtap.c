// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * podtap's TC program: parse a packet, decide a filter in the kernel and
 * send only matching packets to user space through a ring buffer.
 *
 * The program never changes a packet's fate: it always returns
 * TC_ACT_UNSPEC (== TCX_NEXT), so it serves TCX and legacy clsact alike.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "podtap.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set from user space before load; the verifier sees them as constants. */
volatile const __u32 cfg_snaplen = 0;     /* 0: whole packet */
volatile const __u32 cfg_max_cap = 65536; /* copy buffer size, <= PT_MAX_CAP */
volatile const __u32 cfg_scan_limit = 0;  /* 0: scan the whole packet */
volatile const __u32 cfg_frame_off = 0;   /* offline: bytes of a made-up Ethernet header */
volatile const __u32 cfg_follow = 0;      /* follow the flows of matches */
volatile const __u32 cfg_handshake = 0;   /* keep TCP handshakes for them */
volatile const __u64 cfg_follow_packets = 0; /* stop following after so many; 0: no limit */
volatile const __u64 cfg_follow_bytes = 0;
volatile const __u64 cfg_follow_ns = 0;      /* ... so long after the last match */
volatile const __u64 cfg_follow_grace_ns = 1000000000; /* after FIN+FIN or RST */
volatile const struct pt_filter filter;

/* Starting positions examined per scan step, and what one step loads
 * (with the overlap a pattern starting near the chunk's end needs). */
#define SCAN_CHUNK 2048
#define SCAN_LOAD (SCAN_CHUNK + PT_MAX_PATLEN - 1)
#define SCAN_MASK 4095 /* bounds any offset into the chunk buffer */
#define SCAN_BUF (SCAN_MASK + 1 + PT_MAX_PATLEN) /* a pattern read at any masked offset */
#define SCAN_MAX_STEPS (1 << 20)

/* How scan steps are driven: chosen by probing the kernel. */
enum scan_variant {
	VAR_LOOP,    /* bpf_loop, 5.17+ */
	VAR_ITER,    /* open-coded bpf_iter_num, 6.4+ */
	VAR_BOUNDED, /* a bounded loop: any kernel podtap runs on */
};

/* The open-coded number iterator (6.4+); not in older UAPI headers. */
struct bpf_iter_num {
	__u64 __opaque[1];
} __attribute__((aligned(8)));
extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __ksym;
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __ksym;
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __ksym;

struct copybuf {
	struct pt_record hdr;
	__u8 data[PT_MAX_CAP];
};

/* What the parser learnt about one packet. */
struct pkt {
	__u32 len;    /* skb->len */
	__u32 l4_off; /* TCP/UDP header */
	__u32 pl_off; /* TCP/UDP payload */
	__u32 ip_end; /* end of the IP datagram: trailer bytes excluded */
	__u32 uri_off, uri_end; /* request target, with PT_F_URI_END */
	__u32 uri_done;         /* uri_end is final */
	__u16 sport, dport;
	__u8 tcp_flags;
	__u8 protos;  /* enum pt_proto */
	__u8 nvlan;
	__u16 vlan[PT_MAX_VLANS]; /* VLAN IDs; bit 15 marks an 802.1ad S-tag */
	__u64 src[2], dst[2];
};

/* The payload scan's state for the packet a CPU is working on. */
struct scan_state {
	__u32 pos, end;  /* next position to search, end of the search */
	__u64 want;      /* patterns still to find */
	__u64 found;     /* patterns found */
	__u32 start[PT_MAX_PATS], stop[PT_MAX_PATS]; /* each pattern's region */
	__u64 off[PT_MAX_PATS]; /* all ones for a pattern not wanted */
	__u32 cand_pos;  /* a word with candidate positions, if cand_hz */
	__u32 scanned;   /* bytes searched */
	__u64 cand_hz;   /* its candidate bytes (0x80 bits) */
	__u32 cbase;     /* q-gram scan: where the chunk in the buffer starts */
	__u32 clim;      /* ... and the block offsets it can take, [0, clim) */
	int err;
	int done;        /* the last step ended the scan */
};

struct scratch {
	struct pkt p;
	/* Predicates decided, and which of them held. They live here, not on
	 * the stack, so the verifier does not follow every combination of
	 * their bits as a separate path. */
	__u64 known;
	__u64 val;
	struct scan_state st;
	__u8 scan[SCAN_BUF];
	__u8 str[PT_MAX_STRLEN + 8];
};

/* A method and its length: bytes past the length are zero, and the
 * length keeps "POST" apart from "POST\0". */
struct method_key {
	__u32 len;
	__u8 m[PT_METHOD_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by user space */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pt_counters);
} counters SEC(".maps");

/*
 * One copy buffer per CPU, indexed by CPU id (too big for a per-CPU map).
 * User space sets max_entries to the number of possible CPUs and the value
 * size to the record header plus cfg_max_cap.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct copybuf));
} copybuf SEC(".maps");

/* Referenced so that bpf2go can generate the record's Go type. */
const struct pt_record *unused_record __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/*
 * The q-gram table of the payload scan, filled by user space. With m the
 * shortest pattern's length and q <= m - 2 the q-gram length, starting
 * positions are taken in blocks of m - q + 1: an occurrence of a pattern
 * that starts in the block [b, b + m - q] holds the q bytes at b + m - q,
 * at offset o = b + m - q - start <= m - q of its first m bytes. One
 * lookup of that q-gram's hash per block tells whether an occurrence can
 * start in the block, of which pattern and where. Unlike the shifts of
 * Boyer-Moore or Wu-Manber, no lookup waits for the one before it, and
 * text that keeps almost matching costs a comparison of two words.
 *
 * An entry is 0 when the first m bytes of no pattern hold a q-gram of that
 * hash, QG_ONE | pattern << 8 | o for one (pattern, offset), and
 * QG_MANY | k when several pairs share the hash: bit o of many[k] is set
 * for each of their offsets. 10 KiB: it stays in the L1 cache.
 */
#define QG_TABLE 4096
#define QG_MANY_MAX 256 /* > PT_MAX_PATS * PT_MAX_PATLEN / 2 */
#define QG_ITERS 512
#define QG_ONE 0x8000
#define QG_MANY 0x4000
#define QG_HASH(x) (((__u32)(x) * 2654435761u) >> 20)
struct qg_table {
	__u16 ent[QG_TABLE];
	__u64 many[QG_MANY_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct qg_table);
} qgtab SEC(".maps");

/* A flow in either direction: the lower (address, port) end first. */
struct flow_key {
	__u64 a[2], b[2];
	__u16 pa, pb;
	__u8 proto;
	__u8 _pad[3];
};

/* A followed flow. */
struct flow {
	__u64 until_ns;  /* follow until then (0: no time limit) */
	__u64 closed_ns; /* FIN from both ends, or RST, seen then (0: open) */
	__u64 packets;   /* captured by following */
	__u64 bytes;
	__u8 fins;       /* 1: FIN from a, 2: FIN from b */
	__u8 _pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* --follow-flows */
	__type(key, struct flow_key);
	__type(value, struct flow);
} flows SEC(".maps");

/* The first packets of a TCP connection, kept until its flow matches. */
struct hs_pkt {
	struct pt_record hdr;
	__u8 data[PT_HS_CAP];
};

struct handshake {
	__u32 n;
	__u32 _pad;
	struct hs_pkt pkts[PT_HS_PKTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384); /* --follow-flows too */
	__type(key, struct flow_key);
	__type(value, struct handshake);
} handshakes SEC(".maps");

/* A zeroed handshake to insert (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct handshake);
} hs_zero SEC(".maps");

/* HTTP methods that make a line a request line: value 1, or 2 for a line
 * whose method and URI count but that is no http.request. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, struct method_key);
	__type(value, __u8);
} methods SEC(".maps");


#define VLAN_STAG 0x8000

/*
 * Make the compiler reload memory after this point. In loops that
 * accumulate into map memory, this keeps values out of registers, where the
 * verifier would track each combination as a separate state.
 */
#define forget() asm volatile("" ::: "memory")

static __always_inline void add_vlan(struct pkt *p, __u16 tpid, __u16 tci)
{
	__u16 v = tci & 0x0fff;

	if (tpid == bpf_htons(ETH_P_8021AD))
		v |= VLAN_STAG;
	if (p->nvlan == 0)
		p->vlan[0] = v;
	else if (p->nvlan == 1)
		p->vlan[1] = v;
	else if (p->nvlan == 2)
		p->vlan[2] = v;
	else
		return;
	p->nvlan++;
	p->protos |= PT_PROTO_VLAN;
}

static __always_inline int is_vlan_tpid(__u16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) ||
	       proto == bpf_htons(ETH_P_8021AD) ||
	       proto == bpf_htons(0x9100);
}

/* The end of an IP datagram whose header starts at off with length field tot
 * (0 means a TSO/BIG TCP packet: the skb length counts). */
static __always_inline __u32 ip_end(__u32 off, __u32 tot, __u32 len)
{
	if (tot == 0 || off + tot > len)
		return len;
	return off + tot;
}

enum parse_result {
	PARSE_OK = 0,
	PARSE_NOT_IP,
	PARSE_BAD,
	PARSE_SLOW, /* the direct pass met a header outside the linear part */
};

/*
 * Copy len (a constant) header bytes at off into to. The direct pass reads
 * the packet's linear part, where headers nearly always are (a few ns); the
 * other pass uses bpf_skb_load_bytes, which also reads paged data (about
 * 15 ns a call). The parser runs as one pass or the other, never mixing
 * the two, so that the verifier has one kind of path through each.
 */
static __always_inline int load_hdr(struct __sk_buff *skb, int direct, __u32 off, void *to, __u32 len)
{
	if (direct) {
		void *data = (void *)(long)skb->data;
		void *end = (void *)(long)skb->data_end;

		if (off >= 1024 || data + off + len > end)
			return -1;
		__builtin_memcpy(to, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

/* Load a header or return: PARSE_SLOW from the direct pass, else onfail. */
#define LOAD_OR(skb, direct, off, to, len, onfail)                  \
	do {                                                        \
		if (load_hdr(skb, direct, off, to, len))            \
			return (direct) ? PARSE_SLOW : (onfail);    \
	} while (0)

static __always_inline int parse_l4(struct __sk_buff *skb, int direct, struct pkt *p,
				    __u8 proto, __u32 off)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr th;
		__u32 hl;

		if (off + sizeof(th) > p->ip_end)
			return PARSE_BAD;
		LOAD_OR(skb, direct, off, &th, sizeof(th), PARSE_BAD);
		hl = th.doff * 4;
		if (hl < sizeof(th) || off + hl > p->ip_end)
			return PARSE_BAD;
		p->protos |= PT_PROTO_TCP;
		p->tcp_flags = ((__u8 *)&th)[13];
		p->sport = bpf_ntohs(th.source);
		p->dport = bpf_ntohs(th.dest);
		p->l4_off = off;
		p->pl_off = off + hl;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr uh;

		if (off + sizeof(uh) > p->ip_end)
			return PARSE_BAD;
		LOAD_OR(skb, direct, off, &uh, sizeof(uh), PARSE_BAD);
		p->protos |= PT_PROTO_UDP;
		p->sport = bpf_ntohs(uh.source);
		p->dport = bpf_ntohs(uh.dest);
		p->l4_off = off;
		p->pl_off = off + sizeof(uh);
	}
	return PARSE_OK;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, int direct, struct pkt *p, __u32 off)
{
	struct iphdr ip;
	__u32 hl;

	LOAD_OR(skb, direct, off, &ip, sizeof(ip), PARSE_BAD);
	hl = ip.ihl * 4;
	if (ip.version != 4 || hl < sizeof(ip))
		return PARSE_BAD;
	p->ip_end = ip_end(off, bpf_ntohs(ip.tot_len), p->len);
	if (off + hl > p->ip_end)
		return PARSE_BAD;
	if (ip.tot_len != 0 && bpf_ntohs(ip.tot_len) < hl)
		return PARSE_BAD;
	p->protos |= PT_PROTO_IP4;
	p->src[0] = ip.saddr;
	p->dst[0] = ip.daddr;
	/* A fragment other than the first carries no L4 header. */
	if (bpf_ntohs(ip.frag_off) & 0x1fff)
		return PARSE_OK;
	return parse_l4(skb, direct, p, ip.protocol, off + hl);
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, int direct, struct pkt *p, __u32 off)
{
	struct ipv6hdr ip6;
	__u8 nexthdr;

	LOAD_OR(skb, direct, off, &ip6, sizeof(ip6), PARSE_BAD);
	if (ip6.version != 6)
		return PARSE_BAD;
	p->ip_end = ip_end(off, ip6.payload_len ? bpf_ntohs(ip6.payload_len) + sizeof(ip6) : 0, p->len);
	p->protos |= PT_PROTO_IP6;
	__builtin_memcpy(p->src, &ip6.saddr, 16);
	__builtin_memcpy(p->dst, &ip6.daddr, 16);
	nexthdr = ip6.nexthdr;
	off += sizeof(ip6);
	/* Extension headers are rare: the direct pass leaves them to the
	 * other, keeping its own paths few. */
	if (direct && nexthdr != IPPROTO_TCP && nexthdr != IPPROTO_UDP)
		return PARSE_SLOW;

	for (int i = 0; i < PT_MAX_EXTHDRS; i++) {
		__u8 eh[8];

		if (nexthdr != IPPROTO_HOPOPTS && nexthdr != IPPROTO_ROUTING &&
		    nexthdr != IPPROTO_DSTOPTS && nexthdr != IPPROTO_FRAGMENT &&
		    nexthdr != IPPROTO_AH)
			break;
		if (off + 8 > p->ip_end)
			return PARSE_BAD;
		LOAD_OR(skb, direct, off, eh, 8, PARSE_BAD);
		if (nexthdr == IPPROTO_FRAGMENT) {
			/* Offset in the top 13 bits of bytes 2-3. */
			if (((eh[2] << 8) | eh[3]) & 0xfff8)
				return PARSE_OK;
			off += 8;
		} else if (nexthdr == IPPROTO_AH) {
			off += (eh[1] + 2) * 4;
		} else {
			off += (eh[1] + 1) * 8;
		}
		nexthdr = eh[0];
	}
	return parse_l4(skb, direct, p, nexthdr, off);
}

static __always_inline int parse(struct __sk_buff *skb, int direct, struct pkt *p)
{
	struct ethhdr eth;
	__u16 proto;
	__u32 off = sizeof(eth);

	p->len = skb->len;
	LOAD_OR(skb, direct, 0, &eth, sizeof(eth), PARSE_NOT_IP);
	proto = eth.h_proto;
	if (skb->vlan_present)
		add_vlan(p, skb->vlan_proto, skb->vlan_tci);

	for (int i = 0; i < PT_MAX_VLANS; i++) {
		__u16 tag[2];

		if (!is_vlan_tpid(proto))
			break;
		LOAD_OR(skb, direct, off, tag, sizeof(tag), PARSE_BAD);
		add_vlan(p, proto, bpf_ntohs(tag[0]));
		proto = tag[1];
		off += sizeof(tag);
	}

	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(skb, direct, p, off);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(skb, direct, p, off);
	return PARSE_NOT_IP;
}

/*
 * A length the verifier can check: n, known here to be in [1, max], rebuilt
 * so that verifiers before 6.8, which learn no lower bound from "n != 0",
 * see that it is at least 1. pow2 is a power of two no less than max.
 */
static __always_inline __u32 checked_len(__u32 n, __u32 pow2, __u32 max)
{
	__u32 m = n - 1;

	asm volatile("" : "+r"(m));
	m &= pow2 - 1;
	m += 1;
	if (m > max)
		m = max;
	return m;
}

static __always_inline int cmp_op(__u8 op, __u32 a, __u32 b)
{
	switch (op) {
	case PT_OP_LT:
		return a < b;
	case PT_OP_LE:
		return a <= b;
	case PT_OP_GT:
		return a > b;
	case PT_OP_GE:
		return a >= b;
	default:
		return a == b;
	}
}

static __always_inline int addr_in(const __u64 *a, const volatile struct pt_pred *pr)
{
	return (a[0] & pr->mask[0]) == pr->addr[0] &&
	       (a[1] & pr->mask[1]) == pr->addr[1];
}

static __always_inline int vlan_pred(const struct pkt *p, const volatile struct pt_pred *pr)
{
	/* field selects the kind of tag: 1 C-tags (vlan.id), 2 S-tags. */
	__u16 want_stag = pr->field == 2 ? VLAN_STAG : 0;

	for (int i = 0; i < PT_MAX_VLANS; i++) {
		if (i >= p->nvlan)
			break;
		if ((p->vlan[i] & VLAN_STAG) == want_stag &&
		    cmp_op(pr->op, p->vlan[i] & 0x0fff, pr->val))
			return 1;
	}
	return 0;
}

/* Decide the predicates that need only the headers. */
static __always_inline void header_preds(const struct pkt *p, __u64 *known, __u64 *val)
{
	for (int i = 0; i < PT_MAX_PREDS; i++) {
		const volatile struct pt_pred *pr = &filter.preds[i];
		int v;

		if (i >= filter.npreds)
			break;
		switch (pr->kind) {
		case PT_P_PROTO:
			v = (p->protos & pr->val) != 0;
			break;
		case PT_P_PORT: {
			__u8 l4 = (pr->field & PT_SIDE_TCP ? PT_PROTO_TCP : 0) |
				  (pr->field & PT_SIDE_UDP ? PT_PROTO_UDP : 0);

			v = (p->protos & l4) &&
			    (((pr->field & PT_SIDE_SRC) && cmp_op(pr->op, p->sport, pr->val)) ||
			     ((pr->field & PT_SIDE_DST) && cmp_op(pr->op, p->dport, pr->val)));
			break;
		}
		case PT_P_VLAN:
			v = vlan_pred(p, pr);
			break;
		case PT_P_ADDR4:
		case PT_P_ADDR6:
			v = (p->protos & (pr->kind == PT_P_ADDR4 ? PT_PROTO_IP4 : PT_PROTO_IP6)) &&
			    (((pr->field & PT_SIDE_SRC) && addr_in(p->src, pr)) ||
			     ((pr->field & PT_SIDE_DST) && addr_in(p->dst, pr)));
			break;
		default:
			continue;
		}
		*known |= 1ULL << i;
		if (v)
			*val |= 1ULL << i;
		forget();
	}
}

/* Compare n bytes at buf with string idx (n is a verifier constant). */
static __always_inline int str_eq(const __u8 *buf, __u8 idx)
{
	const volatile struct pt_str *s = &filter.strs[idx & (PT_MAX_STRS - 1)];

	for (int i = 0; i < PT_MAX_STRLEN; i++) {
		if (i >= s->len)
			break;
		if (buf[i] != s->bytes[i])
			return 0;
	}
	return 1;
}

static __always_inline int is_uri_end(__u8 c)
{
	return c == ' ' || c == '\r' || c == '\n';
}

/* Byte index (0-7) of the lowest flagged byte of a candidate mask. */
static __always_inline __u32 lowest_byte(__u64 hz)
{
	__u64 low = hz & -hz;
	__u32 j = 0;

	if (low & 0x8080808000000000ULL) /* bytes 4-7 */
		j += 4;
	if (low & 0x8080000080800000ULL) /* bytes 2, 3, 6, 7 */
		j += 2;
	if (low & 0x8000800080008000ULL) /* bytes 1, 3, 5, 7 */
		j += 1;
	return j;
}

/* haszero: the 0x80 bit of each zero byte of x is set in the result; a
 * byte right above a zero byte may be flagged too (a false candidate). */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
#define HASZERO(x) (((x) - ONES) & ~(x) & HIGHS)

/*
 * One step of the search for the end of the request target: the first
 * space, CR or LF from p->uri_end on, or the end of the payload. The
 * lowest flagged byte is exact, so the first terminator is found.
 */
__attribute__((noinline)) int uri_end_step(struct __sk_buff *skb)
{
	__u32 zero = 0, n;
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	struct pkt *p;

	if (!skb || !sc)
		return 1;
	p = &sc->p;
	if (p->uri_end >= p->ip_end) {
		p->uri_done = 1;
		return 1;
	}
	n = p->ip_end - p->uri_end;
	if (n > SCAN_CHUNK)
		n = SCAN_CHUNK;
	if (n < 1 || bpf_skb_load_bytes(skb, p->uri_end, sc->scan, checked_len(n, SCAN_CHUNK, SCAN_CHUNK))) {
		p->uri_end = p->ip_end;
		p->uri_done = 1;
		return 1;
	}
	for (int w = 0; w < SCAN_CHUNK / 8; w++) {
		__u64 x, hz;

		if (w * 8 >= n)
			break;
		x = *(__u64 *)(sc->scan + w * 8);
		hz = HASZERO(x ^ 0x2020202020202020ULL) | HASZERO(x ^ 0x0d0d0d0d0d0d0d0dULL) |
		     HASZERO(x ^ 0x0a0a0a0a0a0a0a0aULL);
		if (hz) {
			p->uri_end += w * 8 + lowest_byte(hz);
			if (p->uri_end > p->ip_end) /* flagged past the data loaded */
				p->uri_end = p->ip_end;
			p->uri_done = 1;
			return 1;
		}
	}
	p->uri_end += n;
	return 0;
}

static long uri_end_cb(__u64 index, void *ctx)
{
	return uri_end_step(*(struct __sk_buff **)ctx) ? 1 : 0;
}


__attribute__((noinline)) int scan_step(struct __sk_buff *skb);
static long scan_cb(__u64 index, void *ctx);

/*
 * The bounded-loop variant's loops, for kernels without bpf_loop: two
 * nested loops of global functions, BOUNDED_STEPS steps in all, so that the
 * verifier walks 4096 + 32 iterations once each (and the q-gram scan's
 * calls stay within the kernel's eight call frames). That covers a 256 KiB
 * packet unless it holds over 100,000 candidate positions; a cut is counted.
 */
#define BOUNDED_STEPS (32 * 4096)

__attribute__((noinline)) int steps_4096(struct __sk_buff *skb, int uri)
{
	for (int i = 0; i < 4096; i++)
		if (!skb || (uri ? uri_end_step(skb) : scan_step(skb)))
			return 1;
	return 0;
}

__attribute__((noinline)) int bounded_steps(struct __sk_buff *skb, __u32 n, int uri)
{
	for (int i = 0; i < 32; i++) {
		if (i * 4096 >= n || !skb)
			break;
		if (steps_4096(skb, uri))
			break;
	}
	return 0;
}

/*
 * Run a step function (the payload scan's, or the URI end search's) until
 * it says it is done or n steps have run, with the loop the variant has.
 * Everything here is inlined with a constant variant, so each program
 * holds the code of its own variant only.
 */
static __always_inline void run_steps(int variant, struct __sk_buff *skb, __u32 n, int uri)
{
	if (variant == VAR_LOOP) {
		if (uri)
			bpf_loop(n, uri_end_cb, &skb, 0);
		else
			bpf_loop(n, scan_cb, &skb, 0);
	} else if (variant == VAR_ITER) {
		struct bpf_iter_num it;
		int *v;

		bpf_iter_num_new(&it, 0, n);
		while ((v = bpf_iter_num_next(&it))) {
			if (uri ? uri_end_step(skb) : scan_step(skb))
				break;
		}
		bpf_iter_num_destroy(&it);
	} else {
		bounded_steps(skb, n, uri);
	}
}

/*
 * Decide the predicates on the HTTP request line that starts the TCP
 * payload: a known method, one space, the request target up to the next
 * space or line end.
 */
static __always_inline void http_preds(int variant, struct __sk_buff *skb, struct pkt *p,
				       struct scratch *sc, __u64 *known, __u64 *val,
				       struct pt_counters *c)
{
	struct method_key key = {};
	__u8 line[PT_METHOD_LEN + 1] = {};
	__u32 avail = 0, mlen = 0, uri_off = 0;
	int req = 0;

	if ((p->protos & PT_PROTO_TCP) && p->pl_off < p->ip_end)
		avail = p->ip_end - p->pl_off;
	if (avail >= 2) {
		__u32 n = avail < sizeof(line) ? avail : sizeof(line);

		if (bpf_skb_load_bytes(skb, p->pl_off, line, checked_len(n, 32, sizeof(line))) == 0) {
			for (int i = 1; i < (int)sizeof(line); i++) {
				if (i >= n)
					break;
				if (line[i] == ' ') {
					mlen = i;
					break;
				}
			}
		}
	}
	if (mlen) {
		key.len = mlen;
		for (int i = 0; i < PT_METHOD_LEN; i++)
			if (i < mlen)
				key.m[i] = line[i];
		__u8 *class = bpf_map_lookup_elem(&methods, &key);

		/* 1: a request line; 2: a method and URI but, as Wireshark
		 * reads NOTIFY and SUBSCRIBE, no http.request. */
		req = class ? *class : 0;
		uri_off = p->pl_off + mlen + 1;
	}
	if (req && (filter.flags & PT_F_URI_END) && uri_off <= p->ip_end) {
		/* Where the target ends, for patterns searched in it. */
		p->uri_off = uri_off;
		p->uri_end = uri_off;
		run_steps(variant, skb, (p->ip_end - uri_off) / SCAN_CHUNK + 1, 1);
		if (!p->uri_done)
			c->scan_cut++;
	}

	for (int i = 0; i < PT_MAX_PREDS; i++) {
		const volatile struct pt_pred *pr = &filter.preds[i];
		__u32 slen;
		int v = 0;

		if (i >= filter.npreds)
			break;
		if (pr->kind != PT_P_HTTP_REQ && pr->kind != PT_P_METHOD &&
		    pr->kind != PT_P_URI_EQ && pr->kind != PT_P_URI_PREFIX)
			continue;
		slen = filter.strs[pr->idx & (PT_MAX_STRS - 1)].len;
		if (!req) {
			v = 0;
		} else if (pr->kind == PT_P_HTTP_REQ) {
			v = req == 1;
		} else if (pr->kind == PT_P_METHOD) {
			v = slen == mlen && str_eq(key.m, pr->idx);
		} else if (pr->kind == PT_P_URI_PREFIX && slen == 0) {
			v = 1;
		} else if (slen <= PT_MAX_STRLEN) {
			/* Read the string, plus the byte after it for ==, unless
			 * the payload ends right after the string. */
			__u32 n = slen + (pr->kind == PT_P_URI_EQ);
			int ends = uri_off + slen == p->ip_end;

			if (ends)
				n = slen;
			if (n == 0)
				v = 1;
			else if (uri_off + n <= p->ip_end &&
				 bpf_skb_load_bytes(skb, uri_off, sc->str, checked_len(n, 256, PT_MAX_STRLEN + 1)) == 0 &&
				 str_eq(sc->str, pr->idx))
				v = pr->kind == PT_P_URI_PREFIX || ends ||
				    is_uri_end(sc->str[slen]);
		}
		*known |= 1ULL << i;
		if (v)
			*val |= 1ULL << i;
		forget();
	}
}

/* Evaluate the postfix expression in three-valued logic.
 * Returns 0 (false), 1 (true) or 2 (not known yet). */
static __always_inline int eval(__u64 known, __u64 val)
{
	__u64 sk = 0, sv = 0; /* stacks of known and value bits, top in bit 0 */

	for (int i = 0; i < PT_MAX_CODE; i++) {
		__u8 op = filter.code[i];
		__u64 ak, av, bk, bv, rk, rv;

		if (op == PT_C_END)
			break;
		if (op & PT_C_PRED) {
			__u8 b = op & 0x3f;

			sk = (sk << 1) | ((known >> b) & 1);
			sv = (sv << 1) | ((val >> b) & 1);
			continue;
		}
		if (op == PT_C_TRUE) {
			sk = (sk << 1) | 1;
			sv = (sv << 1) | 1;
			continue;
		}
		if (op == PT_C_NOT) {
			sv ^= 1;
			continue;
		}
		ak = sk & 1;
		av = sv & 1;
		bk = (sk >> 1) & 1;
		bv = (sv >> 1) & 1;
		if (op == PT_C_AND) {
			rk = (ak & bk) | (ak & (av ^ 1)) | (bk & (bv ^ 1));
			rv = av & bv;
		} else {
			rk = (ak & bk) | (ak & av) | (bk & bv);
			rv = av | bv;
		}
		sk = (sk >> 2 << 1) | rk;
		sv = (sv >> 2 << 1) | rv;
	}
	if (!(sk & 1))
		return 2;
	return sv & 1;
}

/* Where a pattern may match: [start, stop) of its region (empty if absent). */
static __always_inline void region(const struct pkt *p, __u8 reg, __u32 *start, __u32 *stop)
{
	__u8 l4 = p->protos & (PT_PROTO_TCP | PT_PROTO_UDP);

	*start = 0;
	*stop = 0;
	switch (reg) {
	case PT_REG_FRAME:
		*start = cfg_frame_off;
		*stop = p->len;
		return;
	case PT_REG_URI:
		*start = p->uri_off;
		*stop = p->uri_end;
		return;
	case PT_REG_TCP_L4:
	case PT_REG_TCP_PAYLOAD:
		l4 &= PT_PROTO_TCP;
		break;
	case PT_REG_UDP_L4:
	case PT_REG_UDP_PAYLOAD:
		l4 &= PT_PROTO_UDP;
		break;
	}
	if (!l4)
		return;
	*stop = p->ip_end;
	if (reg == PT_REG_L4 || reg == PT_REG_TCP_L4 || reg == PT_REG_UDP_L4)
		*start = p->l4_off;
	else
		*start = p->pl_off;
}

/* Does pattern i occur at buffer offset q (absolute offset at)? */
static __always_inline int pat_at(const struct scan_state *s, const __u8 *buf,
				  int i, __u32 q, __u32 at)
{
	const volatile struct pt_pattern *pt = &filter.pats[i];

	if (at < s->start[i] || at + pt->len > s->stop[i])
		return 0;
	for (int k = 0; k < PT_MAX_PATLEN / 8; k++) {
		if (k * 8 >= pt->len)
			break;
		if ((*(__u64 *)(buf + (q & SCAN_MASK) + k * 8) & pt->masks[k]) != pt->words[k])
			return 0;
	}
	return 1;
}

/* Compare every wanted pattern at the lowest flagged position of the
 * candidate word, then drop that flag. The bytes are loaded from that very
 * position so that every buffer offset is a verifier constant. */
static __always_inline void scan_verify(struct __sk_buff *skb, struct scan_state *s, __u8 *buf)
{
	__u32 at = s->cand_pos + lowest_byte(s->cand_hz);
	__u32 n;

	s->cand_hz &= s->cand_hz - 1;
	if (at >= s->end)
		return;
	n = s->end - at;
	if (n > PT_MAX_PATLEN)
		n = PT_MAX_PATLEN;
	if (n < 1 || bpf_skb_load_bytes(skb, at, buf, checked_len(n, 64, PT_MAX_PATLEN))) {
		s->err = 1;
		return;
	}
	for (int i = 0; i < PT_MAX_PATS; i++) {
		if (i >= filter.npats)
			break;
		if ((s->want & (1ULL << i)) && pat_at(s, buf, i, 0, at)) {
			s->found |= 1ULL << i;
			s->want &= ~(1ULL << i);
			s->off[i] = ~0ULL;
		}
		forget();
	}
}

/*
 * Search one chunk with the word-wide probe filter (SWAR), used when a
 * pattern is shorter than four bytes: for eight starting positions at a
 * time, test whether both probe bytes of some wanted pattern sit in place.
 */
static __always_inline long swar_chunk(struct scan_state *s, __u8 *buf, __u32 span)
{
	for (int w = 0; w < SCAN_CHUNK / 8; w++) {
		__u64 hz = 0;

		if (w * 8 >= span)
			break;
		for (int i = 0; i < PT_MAX_PATS; i++) {
			const volatile struct pt_pattern *pt = &filter.pats[i];
			__u64 x;

			if (i >= filter.npats)
				break;
			x = (*(__u64 *)(buf + w * 8 + (pt->off0 & (PT_MAX_PATLEN - 1))) ^ pt->probe0) |
			    (*(__u64 *)(buf + w * 8 + (pt->off1 & (PT_MAX_PATLEN - 1))) ^ pt->probe1) |
			    s->off[i];
			hz |= HASZERO(x);
		}
		if (hz) {
			s->cand_pos = s->pos + w * 8;
			s->cand_hz = hz;
			s->pos = s->cand_pos + 8;
			s->scanned += w * 8 + 8;
			return 0;
		}
	}
	s->pos += span;
	s->scanned += span;
	return s->want && s->pos < s->end ? 0 : 1;
}

/* Compare pattern i at absolute offset at, inside the q-gram scan's
 * chunk; a match ends the search for it. */
__attribute__((noinline)) int qg_verify(__u32 at, __u32 i)
{
	__u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	struct scan_state *s;

	i &= PT_MAX_PATS - 1;
	if (!sc || i >= filter.npats)
		return 0;
	s = &sc->st;
	if ((s->want & (1ULL << i)) && pat_at(s, sc->scan, i, at - s->cbase, at)) {
		s->found |= 1ULL << i;
		s->want &= ~(1ULL << i);
	}
	return 0;
}

/* Bit positions by de Bruijn sequence: index of the single bit set in x
 * is debruijn[(x * 0x022fdd63cc95386d) >> 58]. */
static const __u8 debruijn[64] = {
	0,  1,  2,  53, 3,  7,  54, 27, 4,  38, 41, 8,  34, 55, 48, 28,
	62, 5,  39, 46, 44, 42, 22, 9,  24, 35, 59, 56, 49, 18, 29, 11,
	63, 52, 6,  26, 37, 40, 33, 47, 61, 45, 43, 21, 23, 58, 17, 10,
	51, 25, 36, 32, 60, 20, 57, 16, 50, 31, 19, 15, 30, 14, 13, 12,
};

/* Compare the first 16 bytes of pattern i with the buffer at q. */
static __always_inline int qg_head(const __u8 *buf, __u32 i, __u32 q)
{
	const volatile struct pt_pattern *pt = &filter.pats[i & (PT_MAX_PATS - 1)];

	q &= SCAN_MASK;
	return (*(__u64 *)(buf + q) & pt->masks[0]) == pt->words[0] &&
	       (*(__u64 *)(buf + q + 8) & pt->masks[1]) == pt->words[1];
}

/* A block whose q-gram hash several (pattern, offset) pairs share: bit o
 * of offs for each offset o. Compare every wanted pattern at each start
 * those offsets give. */
__attribute__((noinline)) int qg_block(__u32 b, __u64 offs)
{
	__u32 zero = 0, mq = filter.qg_m - filter.qg_q;
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	struct scan_state *s;

	if (!sc)
		return 0;
	s = &sc->st;
	for (int k = 0; k < PT_MAX_PATLEN; k++) {
		__u64 low = offs & -offs;
		__u32 at;

		if (!low || !s->want)
			break;
		offs &= offs - 1;
		at = b + mq - debruijn[(low * 0x022fdd63cc95386dULL) >> 58];
		for (int i = 0; i < PT_MAX_PATS; i++) {
			if (i >= filter.npats)
				break;
			if ((s->want & (1ULL << i)) && qg_head(sc->scan, i, at - s->cbase))
				qg_verify(at, i);
			forget();
		}
	}
	return 0;
}

/*
 * Search the chunk in the buffer with the q-gram table, from block
 * s->pos on, for at most QG_ITERS blocks.
 */
static __always_inline long qg_chunk(struct scan_state *s, __u8 *buf, const struct qg_table *t)
{
	__u32 mq = filter.qg_m - filter.qg_q, step = mq + 1;
	__u32 qmask = 0xffffffffu >> ((32 - 8 * filter.qg_q) & 31);
	__u32 b = s->pos - s->cbase, b0 = b;

	for (int it = 0; it < QG_ITERS; it++) {
		__u32 x, e, i, q;

		if (b >= s->clim)
			break;
		x = *(__u32 *)(buf + ((b + mq) & SCAN_MASK)) & qmask;
		e = t->ent[QG_HASH(x) & (QG_TABLE - 1)];
		b += step;
		if (!e)
			continue;
		if (e & QG_MANY) {
			qg_block(s->cbase + b - step, t->many[e & (QG_MANY_MAX - 1)]);
		} else {
			/* One candidate start: compare its first 16 bytes here,
			 * the rest (and the pattern's region) out of line. */
			i = (e >> 8) & (PT_MAX_PATS - 1);
			q = b - step + mq - (e & (PT_MAX_PATLEN - 1));
			if ((s->want & (1ULL << i)) && qg_head(buf, i, q))
				qg_verify(s->cbase + q, i);
		}
		forget();
		if (!s->want)
			break;
	}
	s->pos = s->cbase + b;
	s->scanned += (s->pos < s->end ? s->pos : s->end) - (s->cbase + b0);
	return s->want && s->pos + filter.qg_m <= s->end ? 0 : 1;
}

/*
 * One scan step, on the CPU's scan state: compare the patterns at the next
 * candidate position found by an earlier step, or search the next chunk
 * of starting positions. Returns 0 to go on, 1 when done.
 *
 * A global function: the verifier checks it once, whatever loop calls it.
 */
__attribute__((noinline)) int scan_step(struct __sk_buff *skb)
{
	__u32 zero = 0, n, span;
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	struct scan_state *s;
	__u8 *buf;
	long r;

	if (!skb || !sc)
		return 1;
	s = &sc->st;
	buf = sc->scan;
	if (s->cand_hz) {
		scan_verify(skb, s, buf);
		r = s->want && !s->err ? 0 : 1;
		s->done = r;
		return r;
	}
	if (s->pos >= s->end || !s->want) {
		s->done = 1;
		return 1;
	}
	/* The q-gram scan goes on in its chunk while blocks are left. */
	if (filter.qg_m && s->pos - s->cbase < s->clim)
		goto search;
	n = s->end - s->pos;
	if (n > SCAN_LOAD)
		n = SCAN_LOAD;
	if (filter.qg_m && n < filter.qg_m) {
		s->done = 1; /* no pattern fits in what is left */
		return 1;
	}
	if (n < 1 || bpf_skb_load_bytes(skb, s->pos, buf, checked_len(n, SCAN_MASK + 1, SCAN_LOAD))) {
		s->err = 1;
		s->done = 1;
		return 1;
	}
	/* A block's starts must be comparable with what was loaded: a whole
	 * pattern from each, up to the chunk's end; and where the search ends,
	 * a shortest pattern. */
	s->cbase = s->pos;
	s->clim = n == SCAN_LOAD ? SCAN_CHUNK + filter.qg_q - filter.qg_m : n + 1 - filter.qg_m;
search:
	if (filter.qg_m) {
		struct qg_table *t = bpf_map_lookup_elem(&qgtab, &zero);

		if (!t) {
			s->err = 1;
			s->done = 1;
			return 1;
		}
		r = qg_chunk(s, buf, t);
	} else {
		span = n < SCAN_CHUNK ? n : SCAN_CHUNK;
		r = swar_chunk(s, buf, span);
	}
	s->done = r;
	return r;
}

static long scan_cb(__u64 index, void *ctx)
{
	return scan_step(*(struct __sk_buff **)ctx) ? 1 : 0;
}

/* Search every pattern of the filter in one pass over the packet. */
static __always_inline void scan(int variant, struct __sk_buff *skb, struct scratch *sc,
				 const struct pkt *p, struct pt_counters *c,
				 __u64 *known, __u64 *val)
{
	struct scan_state *s = &sc->st;
	__u32 steps;

	s->pos = 0xffffffff;
	s->end = 0;
	s->want = 0;
	s->found = 0;
	s->cand_hz = 0;
	s->cbase = 0;
	s->clim = 0;
	s->scanned = 0;
	s->err = 0;
	s->done = 0;
	for (int i = 0; i < PT_MAX_PATS; i++) {
		__u32 a, b;

		if (i >= filter.npats)
			break;
		region(p, filter.pats[i].region, &a, &b);
		s->start[i] = a;
		s->stop[i] = b;
		s->off[i] = ~0ULL;
		if (b >= a + filter.pats[i].len) {
			s->off[i] = 0;
			s->want |= 1ULL << i;
			if (a < s->pos)
				s->pos = a;
			if (b > s->end)
				s->end = b;
		}
		forget();
	}
	if (s->want) {
		if (cfg_scan_limit && s->end - s->pos > cfg_scan_limit) {
			s->end = s->pos + cfg_scan_limit;
			c->scan_cut++;
		}
		/* A chunk per step, plus a step per candidate position. */
		steps = (s->end - s->pos) / SCAN_CHUNK + (s->end - s->pos) + 2;
		if (steps > SCAN_MAX_STEPS)
			steps = SCAN_MAX_STEPS;
		run_steps(variant, skb, steps, 0);
		if (!s->done)
			c->scan_cut++; /* the bounded variant ran out of steps */
		c->scan_bytes += s->scanned;
	}

	for (int i = 0; i < PT_MAX_PREDS; i++) {
		const volatile struct pt_pred *pr = &filter.preds[i];

		if (i >= filter.npreds)
			break;
		if (pr->kind != PT_P_PATTERN)
			continue;
		*known |= 1ULL << i;
		if (s->found & (1ULL << (pr->idx & (PT_MAX_PATS - 1))))
			*val |= 1ULL << i;
		forget();
	}
}

/*
 * Copy the packet to the ring buffer through the CPU's copy buffer, in a
 * record of its real size. Kernels before 6.8 reject a variable-length
 * load into ring memory; bpf_dynptr_copy (6.15+) could copy straight from
 * the skb, but measured no faster here (docs/BENCHMARKS.md).
 */
static __always_inline void emit(struct __sk_buff *skb, __u32 len, __u8 dir,
				 __u64 preds, __u8 flags, struct pt_counters *c)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct copybuf *b = bpf_map_lookup_elem(&copybuf, &cpu);
	__u64 cap = len;
	int cut_snap = 0;

	if (!b) {
		c->lost_scratch++;
		return;
	}
	if (cfg_snaplen && cap > cfg_snaplen) {
		cap = cfg_snaplen;
		cut_snap = 1;
	}
	if (cap > cfg_max_cap) {
		cap = cfg_max_cap;
		flags |= PT_REC_CUT_BUFFER;
	}
	if (cap < 1) {
		c->lost_load++;
		return;
	}
	cap = checked_len(cap, PT_MAX_CAP, cfg_max_cap);
	/* A record takes its size plus an 8-byte header, rounded up to 8:
	 * one that cannot fit is dropped before it is copied, not after. */
	if (bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) <
	    bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + ((sizeof(b->hdr) + cap + 8 + 7) & ~7ULL)) {
		c->lost_ringbuf++;
		return;
	}
	if (bpf_skb_load_bytes(skb, 0, b->data, cap)) {
		c->lost_load++;
		return;
	}
	if (skb->vlan_present) {
		flags |= PT_REC_VLAN_OFFLOAD;
		b->hdr.vlan_tci = skb->vlan_tci;
		b->hdr.vlan_proto = skb->vlan_proto;
	} else {
		b->hdr.vlan_tci = 0;
		b->hdr.vlan_proto = 0;
	}
	b->hdr.ts_ns = bpf_ktime_get_ns();
	b->hdr.preds = preds;
	b->hdr.ifindex = skb->ifindex;
	b->hdr.orig_len = len;
	b->hdr.cap_len = cap;
	b->hdr.dir = dir;
	b->hdr.flags = flags;
	if (bpf_ringbuf_output(&events, b, sizeof(b->hdr) + cap, 0)) {
		c->lost_ringbuf++;
		return;
	}
	c->sent++;
	if (cut_snap)
		c->cut_snaplen++;
	if (flags & PT_REC_CUT_BUFFER)
		c->cut_buffer++;
}

/* The flow key of a parsed TCP/UDP packet; *from_a says which end sent it. */
static __always_inline int flow_key(const struct pkt *p, struct flow_key *k, int *from_a)
{
	int swap;

	if (!(p->protos & (PT_PROTO_TCP | PT_PROTO_UDP)))
		return 0;
	/* Addresses compare as raw bytes read as words: any total order
	 * serves, as long as both directions pick the same. */
	if (p->src[0] != p->dst[0])
		swap = p->src[0] > p->dst[0];
	else if (p->src[1] != p->dst[1])
		swap = p->src[1] > p->dst[1];
	else
		swap = p->sport > p->dport;
	__builtin_memset(k, 0, sizeof(*k));
	k->proto = p->protos & PT_PROTO_TCP ? IPPROTO_TCP : IPPROTO_UDP;
	if (swap) {
		k->a[0] = p->dst[0];
		k->a[1] = p->dst[1];
		k->b[0] = p->src[0];
		k->b[1] = p->src[1];
		k->pa = p->dport;
		k->pb = p->sport;
	} else {
		k->a[0] = p->src[0];
		k->a[1] = p->src[1];
		k->b[0] = p->dst[0];
		k->b[1] = p->dst[1];
		k->pa = p->sport;
		k->pb = p->dport;
	}
	*from_a = !swap;
	return 1;
}

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* Note the end of a TCP connection on a followed flow. */
static __always_inline void flow_fin(struct flow *f, const struct pkt *p, int from_a, __u64 now)
{
	if (!(p->protos & PT_PROTO_TCP) || f->closed_ns)
		return;
	if (p->tcp_flags & TCP_FIN)
		f->fins |= from_a ? 1 : 2;
	if ((p->tcp_flags & TCP_RST) || f->fins == 3)
		f->closed_ns = now;
}

/*
 * Keep the first packets of a TCP connection (SYN, SYN-ACK, the ACK after
 * them), cut to PT_HS_CAP bytes, so that a later match can emit them.
 */
static __always_inline void keep_handshake(struct __sk_buff *skb, const struct pkt *p,
					   const struct flow_key *k, __u8 dir, struct pt_counters *c)
{
	__u8 fl = p->tcp_flags;
	struct handshake *h;
	struct hs_pkt *hp;
	__u32 zero = 0, n, cap;

	if (!(p->protos & PT_PROTO_TCP) || !(fl & (TCP_SYN | TCP_ACK)) || (fl & (TCP_RST | TCP_FIN)))
		return;
	if ((fl & TCP_SYN) && !(fl & TCP_ACK)) {
		struct handshake *z = bpf_map_lookup_elem(&hs_zero, &zero);

		if (!z || bpf_map_update_elem(&handshakes, k, z, BPF_ANY))
			return;
	}
	h = bpf_map_lookup_elem(&handshakes, k);
	if (!h)
		return;
	n = h->n;
	if (n >= PT_HS_PKTS)
		return;
	/* The SYN-ACK second, then a bare ACK: nothing else is a handshake. */
	if (n == 1 && !(fl & TCP_SYN))
		return;
	if (n == 2 && ((fl & TCP_SYN) || p->pl_off < p->ip_end))
		return;
	hp = &h->pkts[n];
	cap = p->len < PT_HS_CAP ? p->len : PT_HS_CAP;
	if (cap < 1 || bpf_skb_load_bytes(skb, 0, hp->data, checked_len(cap, PT_HS_CAP, PT_HS_CAP)))
		return;
	hp->hdr.ts_ns = bpf_ktime_get_ns();
	hp->hdr.preds = 0;
	hp->hdr.ifindex = skb->ifindex;
	hp->hdr.orig_len = p->len;
	hp->hdr.cap_len = cap;
	hp->hdr.dir = dir;
	hp->hdr.flags = PT_REC_HANDSHAKE;
	if (skb->vlan_present) {
		hp->hdr.flags |= PT_REC_VLAN_OFFLOAD;
		hp->hdr.vlan_tci = skb->vlan_tci;
		hp->hdr.vlan_proto = skb->vlan_proto;
	}
	h->n = n + 1;
	c->hs_kept++;
}

/* Send the kept handshake of a flow that just matched, and forget it. */
static __always_inline void send_handshake(const struct flow_key *k, struct pt_counters *c)
{
	struct handshake *h = bpf_map_lookup_elem(&handshakes, k);

	if (!h)
		return;
	for (int i = 0; i < PT_HS_PKTS; i++) {
		struct hs_pkt *hp = &h->pkts[i];
		__u32 cap = hp->hdr.cap_len;

		if (i >= h->n)
			break;
		if (cap > PT_HS_CAP)
			cap = PT_HS_CAP;
		if (bpf_ringbuf_output(&events, hp, sizeof(hp->hdr) + cap, 0)) {
			c->hs_lost++;
			continue;
		}
		c->hs_sent++;
		c->sent++;
	}
	bpf_map_delete_elem(&handshakes, k);
}

/*
 * --follow, for one packet: a match starts (or extends) following its
 * flow; a packet of a followed flow is captured until the flow ends or a
 * limit is reached. Returns 1 if a non-matching packet is to be captured.
 */
static __always_inline int follow(struct __sk_buff *skb, const struct pkt *p, int matched,
				  __u8 dir, struct pt_counters *c)
{
	struct flow_key k;
	struct flow *f;
	int from_a;
	__u64 now;

	if (!flow_key(p, &k, &from_a))
		return 0;
	if (cfg_handshake)
		keep_handshake(skb, p, &k, dir, c);
	f = bpf_map_lookup_elem(&flows, &k);
	if (!matched && !f)
		return 0; /* the common case: read no clock */
	now = bpf_ktime_get_ns();
	if (matched) {
		if (!f) {
			struct flow nf = {};

			if (cfg_handshake)
				send_handshake(&k, c);
			nf.until_ns = cfg_follow_ns ? now + cfg_follow_ns : 0;
			flow_fin(&nf, p, from_a, now);
			if (bpf_map_update_elem(&flows, &k, &nf, BPF_NOEXIST) == 0)
				c->flows_started++;
			return 0;
		}
		if (cfg_follow_ns)
			f->until_ns = now + cfg_follow_ns;
		flow_fin(f, p, from_a, now);
		return 0;
	}
	if (!f)
		return 0;
	if (f->closed_ns && now - f->closed_ns > cfg_follow_grace_ns) {
		if (bpf_map_delete_elem(&flows, &k) == 0)
			c->flows_closed++;
		return 0;
	}
	if ((f->until_ns && now > f->until_ns) ||
	    (cfg_follow_packets && f->packets >= cfg_follow_packets) ||
	    (cfg_follow_bytes && f->bytes >= cfg_follow_bytes)) {
		if (bpf_map_delete_elem(&flows, &k) == 0)
			c->flows_limited++;
		return 0;
	}
	__sync_fetch_and_add(&f->packets, 1);
	__sync_fetch_and_add(&f->bytes, p->len);
	flow_fin(f, p, from_a, now);
	return 1;
}

/*
 * Parse the packet into the CPU's scratch space. A global function, like
 * decide(): the verifier checks each once instead of once per path through
 * the parser, which keeps verification cost flat as the filter grows.
 */
__attribute__((noinline)) int parse_pkt(struct __sk_buff *skb, int direct)
{
	__u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);

	if (!skb || !sc)
		return PARSE_NOT_IP;
	__builtin_memset(&sc->p, 0, sizeof(sc->p));
	if (direct)
		return parse(skb, 1, &sc->p);
	return parse(skb, 0, &sc->p);
}

/*
 * Decide the filter on the parsed packet: 1 if it matches. The predicates
 * that held are left in the scratch space for the record. The expensive
 * tests run only when the cheap ones leave the answer open. Each group is
 * a global function, verified once; the variant's loops are in its own
 * copy of the request-line and pattern stages.
 */
static __always_inline int decide(struct __sk_buff *skb, int (*decide_http)(struct __sk_buff *),
				  int (*decide_patterns)(struct __sk_buff *))
{
	__u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	int r;

	if (!skb || !sc)
		return 0;
	sc->known = 0;
	sc->val = 0;
	header_preds(&sc->p, &sc->known, &sc->val);
	if (filter.http_preds)
		decide_http(skb);
	r = eval(sc->known, sc->val);
	if (r == 2) {
		decide_patterns(skb);
		r = eval(sc->known, sc->val);
	}
	return r == 1;
}

/* --follow for the parsed packet; a global function, verified once. */
__attribute__((noinline)) int follow_pkt(struct __sk_buff *skb, int matched, int dir)
{
	__u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);
	struct pt_counters *c = bpf_map_lookup_elem(&counters, &zero);

	if (!skb || !sc || !c)
		return 0;
	return follow(skb, &sc->p, matched, dir, c);
}

static __always_inline int handle(struct __sk_buff *skb, __u8 dir, int (*decide_fn)(struct __sk_buff *))
{
	__u32 zero = 0;
	struct pt_counters *c = bpf_map_lookup_elem(&counters, &zero);
	struct scratch *sc;
	int r, m, f = 0;

	if (!c)
		return TC_ACT_UNSPEC;
	c->seen++;

	r = parse_pkt(skb, 1);
	if (r == PARSE_SLOW)
		r = parse_pkt(skb, 0);
	if (r == PARSE_NOT_IP)
		c->not_ip++;
	else if (r == PARSE_BAD)
		c->bad_header++;
	m = decide_fn(skb);
	if (cfg_follow)
		f = follow_pkt(skb, m, dir);
	if (!m && !f)
		return TC_ACT_UNSPEC;
	if (m)
		c->matched++;
	else
		c->followed++;
	sc = bpf_map_lookup_elem(&scratch, &zero);
	if (!sc) {
		c->lost_scratch++;
		return TC_ACT_UNSPEC;
	}
	emit(skb, sc->p.len, dir, m ? sc->val : 0, m ? 0 : PT_REC_FOLLOW, c);
	return TC_ACT_UNSPEC;
}

/* The stages and programs of one scan variant. */
#define VARIANT(V, NAME)                                                       \
	__attribute__((noinline)) int decide_http_##NAME(struct __sk_buff *skb) \
	{                                                                      \
		__u32 zero = 0;                                                \
		struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);     \
		struct pt_counters *c = bpf_map_lookup_elem(&counters, &zero); \
		if (!skb || !sc || !c)                                         \
			return 0;                                              \
		http_preds(V, skb, &sc->p, sc, &sc->known, &sc->val, c);       \
		return 0;                                                      \
	}                                                                      \
	__attribute__((noinline)) int decide_patterns_##NAME(struct __sk_buff *skb) \
	{                                                                      \
		__u32 zero = 0;                                                \
		struct scratch *sc = bpf_map_lookup_elem(&scratch, &zero);     \
		struct pt_counters *c = bpf_map_lookup_elem(&counters, &zero); \
		if (!skb || !sc || !c)                                         \
			return 0;                                              \
		scan(V, skb, sc, &sc->p, c, &sc->known, &sc->val);             \
		return 0;                                                      \
	}                                                                      \
	__attribute__((noinline)) int decide_##NAME(struct __sk_buff *skb)     \
	{                                                                      \
		return decide(skb, decide_http_##NAME, decide_patterns_##NAME); \
	}                                                                      \
	SEC("tc")                                                              \
	int podtap_ingress_##NAME(struct __sk_buff *skb)                       \
	{                                                                      \
		return handle(skb, PT_DIR_INGRESS, decide_##NAME);             \
	}                                                                      \
	SEC("tc")                                                              \
	int podtap_egress_##NAME(struct __sk_buff *skb)                        \
	{                                                                      \
		return handle(skb, PT_DIR_EGRESS, decide_##NAME);              \
	}

VARIANT(VAR_LOOP, loop)
VARIANT(VAR_ITER, iter)
VARIANT(VAR_BOUNDED, bounded)

/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Types shared between the TC program and user space (mirrored by bpf2go). */
#ifndef PODTAP_H
#define PODTAP_H

#include <linux/types.h>

#define PT_MAX_PREDS 32   /* primitive predicates in one filter */
#define PT_MAX_CODE 64    /* postfix instructions of the boolean expression */
#define PT_MAX_PATS 8     /* byte patterns searched in one pass */
#define PT_MAX_PATLEN 64  /* bytes in one pattern */
#define PT_MAX_STRS 8     /* strings compared at a fixed offset (URI, method) */
#define PT_MAX_STRLEN 128 /* bytes in one such string */
#define PT_MAX_VLANS 3    /* VLAN tags parsed (one offloaded + stacked in data) */
#define PT_MAX_EXTHDRS 8  /* IPv6 extension headers walked */
#define PT_MAX_CAP (256 * 1024) /* largest packet copy one record can carry */
#define PT_METHOD_LEN 20  /* longest HTTP method recognised (M-BASELINE-CONTROL) */

/* Which hook a record came from. */
enum pt_dir {
	PT_DIR_INGRESS = 0,
	PT_DIR_EGRESS = 1,
};

/* pt_record.flags */
enum pt_rec_flags {
	PT_REC_VLAN_OFFLOAD = 1 << 0, /* tag was in skb metadata, not in the bytes */
	PT_REC_CUT_BUFFER = 1 << 1,   /* packet longer than PT_MAX_CAP: copy cut */
	PT_REC_FOLLOW = 1 << 2,       /* captured because its flow is followed */
	PT_REC_HANDSHAKE = 1 << 3,    /* kept from before the match (handshake) */
};

#define PT_HS_PKTS 3   /* handshake packets kept per TCP flow */
#define PT_HS_CAP 128  /* bytes kept of each */

/* Header of every ring-buffer record; cap_len packet bytes follow it. */
struct pt_record {
	__u64 ts_ns;    /* bpf_ktime_get_ns() */
	__u64 preds;    /* bit i set: predicate i held */
	__u32 ifindex;  /* skb->ifindex */
	__u32 orig_len; /* skb->len */
	__u32 cap_len;  /* bytes that follow */
	__u16 vlan_tci; /* offloaded tag, valid with PT_REC_VLAN_OFFLOAD */
	__u16 vlan_proto; /* its TPID, network order */
	__u8 dir;       /* enum pt_dir */
	__u8 flags;     /* enum pt_rec_flags */
	__u8 _pad[6];
};

/*
 * Per-CPU counters. Every packet the program runs on is seen; a seen
 * packet either matches or not; a matched packet is either sent or lost
 * for exactly one of the lost_* reasons.
 */
struct pt_counters {
	__u64 seen;
	__u64 matched;
	__u64 sent;
	__u64 lost_ringbuf;   /* ring buffer full */
	__u64 lost_load;      /* bpf_skb_load_bytes of the copy failed */
	__u64 lost_scratch;   /* no per-CPU copy buffer */
	__u64 cut_snaplen;    /* sent, but cut to the snap length */
	__u64 cut_buffer;     /* sent, but cut to PT_MAX_CAP */
	__u64 not_ip;         /* no IPv4/IPv6 header found */
	__u64 bad_header;     /* IPv4/IPv6/TCP/UDP header truncated or invalid */
	__u64 scan_cut;       /* payload scan stopped at the scan limit */
	__u64 scan_bytes;     /* bytes examined by the payload scan */
	/* --follow: a seen packet that did not match but belongs to a followed
	 * flow is "followed"; matched + followed are sent or lost. */
	__u64 followed;
	__u64 flows_started;  /* flows that began to be followed */
	__u64 flows_closed;   /* ... ended by FIN from both sides or RST */
	__u64 flows_limited;  /* ... ended by --follow-packets/-bytes/-timeout */
	__u64 hs_kept;        /* handshake packets kept */
	__u64 hs_sent;        /* ... sent at a match (counted in sent) */
	__u64 hs_lost;        /* ... that did not fit the ring */
};

/* Predicate kinds. */
enum pt_pred_kind {
	PT_P_PROTO = 1,   /* val: PT_PROTO_* bit present */
	PT_P_PORT,        /* field: proto/side, op, val: port */
	PT_P_VLAN,        /* op, val: VLAN ID of any tag */
	PT_P_ADDR4,       /* field: side; addr/mask in the first 4 bytes */
	PT_P_ADDR6,       /* field: side; addr/mask */
	PT_P_PATTERN,     /* idx: pattern found in its region */
	PT_P_HTTP_REQ,    /* an HTTP request line starts the TCP payload */
	PT_P_METHOD,      /* idx: string equal to the method */
	PT_P_URI_EQ,      /* idx: string equal to the request target */
	PT_P_URI_PREFIX,  /* idx: string is a prefix of the request target */
};

/* Protocol presence bits (PT_P_PROTO val, pkt protos). */
enum pt_proto {
	PT_PROTO_VLAN = 1 << 0,
	PT_PROTO_IP4 = 1 << 1,
	PT_PROTO_IP6 = 1 << 2,
	PT_PROTO_TCP = 1 << 3,
	PT_PROTO_UDP = 1 << 4,
};

/* PT_P_PORT / PT_P_ADDR* field: which side; for ports also which L4. */
enum pt_side {
	PT_SIDE_SRC = 1 << 0,
	PT_SIDE_DST = 1 << 1,
	PT_SIDE_TCP = 1 << 2,
	PT_SIDE_UDP = 1 << 3,
};

enum pt_op {
	PT_OP_EQ = 0,
	PT_OP_LT,
	PT_OP_LE,
	PT_OP_GT,
	PT_OP_GE,
};

/* Where a pattern is searched. */
enum pt_region {
	PT_REG_FRAME = 0,   /* the whole frame */
	PT_REG_L4,          /* TCP/UDP header and payload (Wireshark's tcp/udp) */
	PT_REG_PAYLOAD,     /* TCP/UDP payload */
	PT_REG_TCP_L4,      /* as PT_REG_L4, TCP only */
	PT_REG_UDP_L4,      /* as PT_REG_L4, UDP only */
	PT_REG_TCP_PAYLOAD, /* TCP payload only */
	PT_REG_UDP_PAYLOAD, /* UDP payload only */
	PT_REG_URI,         /* the HTTP request target */
};

/* Postfix code: PT_C_PRED | index pushes a predicate. */
enum pt_code {
	PT_C_END = 0,
	PT_C_AND = 1,
	PT_C_OR = 2,
	PT_C_NOT = 3,
	PT_C_TRUE = 4,
	PT_C_PRED = 0x80,
};

struct pt_pred {
	__u8 kind;
	__u8 field;
	__u8 op;
	__u8 idx;
	__u32 val;
	__u64 addr[2];  /* address bytes in network order; IPv4 uses the first 4 */
	__u64 mask[2];
};

/*
 * A pattern, with two of its bytes picked (the rarest) to test eight
 * positions at a time before comparing the whole pattern.
 */
struct pt_pattern {
	__u8 len;
	__u8 region;
	__u8 off0, off1;  /* offsets of the two probe bytes, off0 <= off1 */
	__u8 _pad[4];
	__u64 probe0;     /* byte at off0 repeated eight times */
	__u64 probe1;     /* byte at off1 repeated eight times */
	__u64 words[PT_MAX_PATLEN / 8]; /* the pattern, zero padded */
	__u64 masks[PT_MAX_PATLEN / 8]; /* which bytes of each word count */
};

struct pt_str {
	__u32 len;
	__u8 bytes[PT_MAX_STRLEN];
};

/* The whole filter, fixed for one run and set before load. */
/* pt_filter.flags */
enum pt_filter_flags {
	PT_F_URI_END = 1 << 0, /* some pattern searches the request target */
};

struct pt_filter {
	__u32 npreds;
	__u32 npats;
	__u32 flags;
	__u16 qg_m; /* q-gram scan: the shortest pattern's length; 0: the SWAR scan */
	__u16 qg_q; /* ... and the q-gram length, 2 to 4 */
	__u64 http_preds;  /* predicates that need the request line */
	__u64 scan_preds;  /* predicates decided by the payload scan */
	__u8 code[PT_MAX_CODE];
	struct pt_pred preds[PT_MAX_PREDS];
	struct pt_pattern pats[PT_MAX_PATS];
	struct pt_str strs[PT_MAX_STRS];
};

#endif

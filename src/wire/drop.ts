// Why the wire layer refused a packet: numeric verdicts for the hot path and their names for stats and logs.
//
// Verdict 0 (PASS) means the packet parsed; anything else is an index into DROP_NAMES and into a counter array
// from newDropCounters(), so counting a drop is one array increment.

export const PASS = 0

export const Drop = {
  /** The buffer is shorter than the headers say: under the fixed header, or under IPv4 total length / IPv6 40+payload length. */
  TRUNCATED: 1,
  /** The first nibble is neither 4 nor 6. */
  BAD_VERSION: 2,
  /** IPv4 IHL below 5, or a header longer than the packet. */
  BAD_IHL: 3,
  /** IPv4 total length smaller than the header (or 0 outside GSO). */
  BAD_TOTAL_LENGTH: 4,
  /** Fragment that would end past 65535 bytes, or a TCP fragment at offset 8 (RFC 1858 overlap attack). */
  BAD_FRAGMENT: 5,
  /** The L3 payload is too short for the fixed L4 header (TCP 20, UDP 8, ICMP 8, SCTP 12). */
  BAD_L4_HEADER: 6,
  /** TCP data offset below 5 words or past the end of the segment. */
  BAD_TCP_DATA_OFFSET: 7,
  /** UDP length below 8 or larger than the L3 payload. */
  BAD_UDP_LENGTH: 8,
  /** UDP over IPv6 with checksum 0, which RFC 8200 §8.1 requires receivers to discard. */
  UDP6_ZERO_CHECKSUM: 9,
  /** An IPv6 extension header that runs past the payload, or hop-by-hop options anywhere but first. */
  BAD_EXT_HEADER: 10,
  /** An IPv6 extension header tundra does not walk (mobility, HIP, shim6, experimental). */
  UNSUPPORTED_EXT_HEADER: 11,
  /** More IPv6 extension headers than MAX_EXT_HEADERS. */
  TOO_MANY_EXT_HEADERS: 12,
  /** An ICMP/ICMPv6 error whose quoted packet is too short or not IP, so NAT could not translate it. */
  BAD_ICMP_ERROR: 13,
} as const

export type DropReason = (typeof Drop)[keyof typeof Drop]

/** snake_case names indexed by verdict (index 0 is PASS), ready for metric labels. */
export const DROP_NAMES: readonly string[] = Object.freeze([
  'pass',
  'truncated',
  'bad_version',
  'bad_ihl',
  'bad_total_length',
  'bad_fragment',
  'bad_l4_header',
  'bad_tcp_data_offset',
  'bad_udp_length',
  'udp6_zero_checksum',
  'bad_ext_header',
  'unsupported_ext_header',
  'too_many_ext_headers',
  'bad_icmp_error',
])

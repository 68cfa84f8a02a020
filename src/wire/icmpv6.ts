// ICMPv6 (RFC 4443): the layout, type and code numbers, and the checksum (with the IPv6 pseudo-header).
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |     Type      |     Code      |          Checksum             |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |           Identifier          |        Sequence Number        |   echo request (128) / reply (129)
//   |                              MTU                              |   packet too big (2)
//   |                            Pointer                            |   parameter problem (4)
//   |                             unused                            |   dest unreachable (1), time exceeded (3)
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |  echo: data ...   errors: as much of the invoking packet as fits in 1280 bytes ...
//
// Unlike ICMPv4 the checksum includes the IPv6 pseudo-header (next header 58), so address NAT must update it.

import { checksum, pseudoHeaderSum6 } from './checksum'
import { set16 } from './bytes'
import { IPPROTO_ICMPV6 } from './proto'

export const ICMPV6_HEADER = 8

/** Byte offsets of the header fields. */
export const Icmpv6Field = {
  TYPE: 0,
  CODE: 1,
  CHECKSUM: 2,
  ECHO_ID: 4,
  ECHO_SEQ: 6,
  MTU: 4,
  POINTER: 4,
  /** Where the quoted invoking packet starts in an error message. */
  INNER: 8,
} as const

export const ICMPV6_DEST_UNREACH = 1
export const ICMPV6_PACKET_TOO_BIG = 2
export const ICMPV6_TIME_EXCEEDED = 3
export const ICMPV6_PARAM_PROBLEM = 4
export const ICMPV6_ECHO_REQUEST = 128
export const ICMPV6_ECHO_REPLY = 129
export const ICMPV6_ROUTER_SOLICIT = 133
export const ICMPV6_ROUTER_ADVERT = 134
export const ICMPV6_NEIGHBOR_SOLICIT = 135
export const ICMPV6_NEIGHBOR_ADVERT = 136

/** Codes of Destination Unreachable. */
export const Icmpv6Unreach = {
  NO_ROUTE: 0,
  ADMIN_PROHIBITED: 1,
  BEYOND_SCOPE: 2,
  ADDRESS: 3,
  PORT: 4,
  SOURCE_POLICY: 5,
  REJECT_ROUTE: 6,
} as const

/** Codes of Time Exceeded. */
export const Icmpv6TimeExceeded = {
  HOP_LIMIT: 0,
  REASSEMBLY: 1,
} as const

/** Codes of Parameter Problem. */
export const Icmpv6ParamProblem = {
  HEADER: 0,
  NEXT_HEADER: 1,
  OPTION: 2,
} as const

/** Computes and stores the checksum of the `len`-byte message at `off`; addresses read from srcOff/dstOff of buf. */
export function fillIcmp6Checksum(buf: Uint8Array, off: number, len: number, srcOff: number, dstOff: number): void {
  set16(buf, off + Icmpv6Field.CHECKSUM, 0)
  set16(buf, off + Icmpv6Field.CHECKSUM, checksum(buf, off, len, pseudoHeaderSum6(buf, srcOff, dstOff, IPPROTO_ICMPV6, len)))
}

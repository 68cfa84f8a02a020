// ICMP for IPv4 (RFC 792, RFC 1191): the layout, type and code numbers, and the checksum of messages tundra builds.
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |     Type      |     Code      |          Checksum             |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |           Identifier          |        Sequence Number        |   echo request / reply
//   |             unused            |         Next-Hop MTU          |   dest unreachable, frag needed (RFC 1191)
//   |    Pointer    |                  unused                       |   parameter problem
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |  echo: data ...   errors: original IP header + first 8 bytes of its payload ...
//
// The checksum covers the ICMP message only (no pseudo-header), so address NAT leaves it alone.

import { checksum } from './checksum'
import { set16 } from './bytes'

export const ICMP_HEADER = 8

/** Byte offsets of the header fields. */
export const IcmpField = {
  TYPE: 0,
  CODE: 1,
  CHECKSUM: 2,
  ECHO_ID: 4,
  ECHO_SEQ: 6,
  MTU: 6,
  POINTER: 4,
  /** Where the quoted original datagram starts in an error message. */
  INNER: 8,
} as const

export const ICMP_ECHO_REPLY = 0
export const ICMP_DEST_UNREACH = 3
export const ICMP_SOURCE_QUENCH = 4
export const ICMP_REDIRECT = 5
export const ICMP_ECHO_REQUEST = 8
export const ICMP_TIME_EXCEEDED = 11
export const ICMP_PARAM_PROBLEM = 12
export const ICMP_TIMESTAMP = 13
export const ICMP_TIMESTAMP_REPLY = 14

/** Codes of Destination Unreachable (RFC 792, RFC 1122, RFC 1812). */
export const IcmpUnreach = {
  NET: 0,
  HOST: 1,
  PROTOCOL: 2,
  PORT: 3,
  FRAG_NEEDED: 4,
  SOURCE_ROUTE_FAILED: 5,
  NET_UNKNOWN: 6,
  HOST_UNKNOWN: 7,
  NET_PROHIBITED: 9,
  HOST_PROHIBITED: 10,
  /** "Communication administratively prohibited", what a REJECT rule sends. */
  ADMIN_PROHIBITED: 13,
} as const

/** Codes of Time Exceeded. */
export const IcmpTimeExceeded = {
  TTL: 0,
  REASSEMBLY: 1,
} as const

/** Computes and stores the checksum of the `len`-byte message at `off` (for messages tundra builds). */
export function fillIcmpChecksum(buf: Uint8Array, off: number, len: number): void {
  set16(buf, off + IcmpField.CHECKSUM, 0)
  set16(buf, off + IcmpField.CHECKSUM, checksum(buf, off, len))
}

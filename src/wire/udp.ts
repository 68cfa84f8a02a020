// UDP header (RFC 768): layout and full checksums, with the rule that a zero checksum means "none" over IPv4.
//
//    0      7 8     15 16    23 24    31
//   +--------+--------+--------+--------+
//   |     Source      |   Destination   |
//   |      Port       |      Port       |
//   +--------+--------+--------+--------+
//   |                 |                 |
//   |     Length      |    Checksum     |
//   +--------+--------+--------+--------+
//   |          data octets ...
//
// Length counts header + data. A computed checksum of 0 is sent as 0xffff; a field of 0 over IPv4 means the sender
// did not compute one (and it must stay 0 through NAT). Over IPv6 a zero checksum is invalid (RFC 8200 §8.1).

import { checksum, pseudoHeaderSum4, pseudoHeaderSum6, udpFinish } from './checksum'
import { set16 } from './bytes'
import { IPPROTO_UDP } from './proto'

export const UDP_HEADER = 8

/** Byte offsets of the header fields. */
export const UdpField = {
  SRC_PORT: 0,
  DST_PORT: 2,
  LENGTH: 4,
  CHECKSUM: 6,
} as const

/** Full checksum of the `len`-byte datagram at `off` over IPv4 (0 sent as 0xffff), stored in place. */
export function fillUdpChecksum4(buf: Uint8Array, off: number, len: number, src: number, dst: number): void {
  set16(buf, off + UdpField.CHECKSUM, 0)
  set16(buf, off + UdpField.CHECKSUM, udpFinish(checksum(buf, off, len, pseudoHeaderSum4(src, dst, IPPROTO_UDP, len))))
}

/** Full checksum over IPv6 (mandatory there); the addresses are read from the packet at srcOff/dstOff. */
export function fillUdpChecksum6(buf: Uint8Array, off: number, len: number, srcOff: number, dstOff: number): void {
  set16(buf, off + UdpField.CHECKSUM, 0)
  set16(buf, off + UdpField.CHECKSUM, udpFinish(checksum(buf, off, len, pseudoHeaderSum6(buf, srcOff, dstOff, IPPROTO_UDP, len))))
}

// TCP header (RFC 9293): layout, flag bits, data offset and the full checksum of segments tundra builds.
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |          Source Port          |       Destination Port        |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                        Sequence Number                        |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                    Acknowledgment Number                      |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |  Data |       |C|E|U|A|P|R|S|F|                               |
//   | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//   |       |       |R|E|G|K|H|T|N|N|                               |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |           Checksum            |         Urgent Pointer        |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                           [Options]                           |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// The checksum covers the pseudo-header, the header and the data (checksum.ts).

import { checksum, pseudoHeaderSum4, pseudoHeaderSum6 } from './checksum'
import { set16 } from './bytes'
import { IPPROTO_TCP } from './proto'

export const TCP_MIN_HEADER = 20

/** Byte offsets of the header fields. */
export const TcpField = {
  SRC_PORT: 0,
  DST_PORT: 2,
  SEQ: 4,
  ACK: 8,
  DATA_OFFSET: 12,
  FLAGS: 13,
  WINDOW: 14,
  CHECKSUM: 16,
  URGENT: 18,
  OPTIONS: 20,
} as const

export const TCP_FIN = 0x01
export const TCP_SYN = 0x02
export const TCP_RST = 0x04
export const TCP_PSH = 0x08
export const TCP_ACK = 0x10
export const TCP_URG = 0x20
export const TCP_ECE = 0x40
export const TCP_CWR = 0x80

/** Header length in bytes (data offset * 4). */
export function tcpDataOffset(buf: Uint8Array, off: number): number {
  return (buf[off + TcpField.DATA_OFFSET]! >>> 4) << 2
}

/** Full checksum of the `len`-byte segment at `off` over IPv4, stored in place (for segments tundra builds). */
export function fillTcpChecksum4(buf: Uint8Array, off: number, len: number, src: number, dst: number): void {
  set16(buf, off + TcpField.CHECKSUM, 0)
  set16(buf, off + TcpField.CHECKSUM, checksum(buf, off, len, pseudoHeaderSum4(src, dst, IPPROTO_TCP, len)))
}

/** Full checksum over IPv6; the addresses are read from the packet at srcOff/dstOff. */
export function fillTcpChecksum6(buf: Uint8Array, off: number, len: number, srcOff: number, dstOff: number): void {
  set16(buf, off + TcpField.CHECKSUM, 0)
  set16(buf, off + TcpField.CHECKSUM, checksum(buf, off, len, pseudoHeaderSum6(buf, srcOff, dstOff, IPPROTO_TCP, len)))
}

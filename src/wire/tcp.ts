// TCP header (RFC 9293) accessors: what NAT, conntrack and tracing read; options are left untouched.
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
import { get16, get32, set16, set32 } from './bytes'
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

/** The flag bits as one object, for code that prefers `TcpFlag.SYN`. */
export const TcpFlag = {
  FIN: TCP_FIN,
  SYN: TCP_SYN,
  RST: TCP_RST,
  PSH: TCP_PSH,
  ACK: TCP_ACK,
  URG: TCP_URG,
  ECE: TCP_ECE,
  CWR: TCP_CWR,
} as const

export function tcpSrcPort(buf: Uint8Array, off: number): number {
  return get16(buf, off)
}

export function setTcpSrcPort(buf: Uint8Array, off: number, port: number): void {
  set16(buf, off, port)
}

export function tcpDstPort(buf: Uint8Array, off: number): number {
  return get16(buf, off + 2)
}

export function setTcpDstPort(buf: Uint8Array, off: number, port: number): void {
  set16(buf, off + 2, port)
}

export function tcpSeq(buf: Uint8Array, off: number): number {
  return get32(buf, off + 4)
}

export function setTcpSeq(buf: Uint8Array, off: number, seq: number): void {
  set32(buf, off + 4, seq)
}

export function tcpAck(buf: Uint8Array, off: number): number {
  return get32(buf, off + 8)
}

export function setTcpAck(buf: Uint8Array, off: number, ack: number): void {
  set32(buf, off + 8, ack)
}

/** Header length in bytes (data offset * 4). */
export function tcpDataOffset(buf: Uint8Array, off: number): number {
  return (buf[off + 12]! >>> 4) << 2
}

/** Header length in bytes; the reserved bits and NS/AE bit are cleared. */
export function setTcpDataOffset(buf: Uint8Array, off: number, headerBytes: number): void {
  buf[off + 12] = ((headerBytes >>> 2) & 0x0f) << 4
}

/** The eight classic flag bits (CWR..FIN). */
export function tcpFlags(buf: Uint8Array, off: number): number {
  return buf[off + 13]!
}

export function setTcpFlags(buf: Uint8Array, off: number, flags: number): void {
  buf[off + 13] = flags
}

export function tcpWindow(buf: Uint8Array, off: number): number {
  return get16(buf, off + 14)
}

export function setTcpWindow(buf: Uint8Array, off: number, win: number): void {
  set16(buf, off + 14, win)
}

export function tcpChecksum(buf: Uint8Array, off: number): number {
  return get16(buf, off + 16)
}

export function setTcpChecksum(buf: Uint8Array, off: number, csum: number): void {
  set16(buf, off + 16, csum)
}

export function tcpUrgent(buf: Uint8Array, off: number): number {
  return get16(buf, off + 18)
}

/** Full checksum of the `len`-byte segment at `off` over IPv4, stored in place (for segments tundra builds). */
export function fillTcpChecksum4(buf: Uint8Array, off: number, len: number, src: number, dst: number): void {
  set16(buf, off + 16, 0)
  set16(buf, off + 16, checksum(buf, off, len, pseudoHeaderSum4(src, dst, IPPROTO_TCP, len)))
}

/** Full checksum over IPv6; the addresses are read from the packet at srcOff/dstOff. */
export function fillTcpChecksum6(buf: Uint8Array, off: number, len: number, srcOff: number, dstOff: number): void {
  set16(buf, off + 16, 0)
  set16(buf, off + 16, checksum(buf, off, len, pseudoHeaderSum6(buf, srcOff, dstOff, IPPROTO_TCP, len)))
}

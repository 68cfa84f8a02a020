// IPv4 header (RFC 791): layout, version/IHL, header checksum, plus address text conversion for the control plane.
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |Version|  IHL  |Type of Service|          Total Length         |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |         Identification        |Flags|      Fragment Offset    |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |  Time to Live |    Protocol   |         Header Checksum       |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                       Source Address                          |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                    Destination Address                        |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                    Options                    |    Padding    |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Flags: bit 0 reserved (evil bit), bit 1 DF, bit 2 MF. Fragment Offset counts 8-byte units.
// Addresses are unsigned 32-bit integers (`>>> 0`). Nothing here validates: run parsePacket (packet.ts) first.

import { checksum } from './checksum'
import { set16 } from './bytes'

export const IPV4_MIN_HEADER = 20
export const IPV4_MAX_HEADER = 60

/** Byte offsets of the header fields. */
export const Ipv4Field = {
  VER_IHL: 0,
  TOS: 1,
  TOTAL_LENGTH: 2,
  ID: 4,
  FLAGS_FRAG: 6,
  TTL: 8,
  PROTOCOL: 9,
  CHECKSUM: 10,
  SRC: 12,
  DST: 16,
  OPTIONS: 20,
} as const

/** Bits of the 16-bit flags + fragment offset word. */
export const IPV4_FLAG_EVIL = 0x8000
export const IPV4_FLAG_DF = 0x4000
export const IPV4_FLAG_MF = 0x2000
export const IPV4_FRAG_MASK = 0x1fff

export function ipv4Version(buf: Uint8Array, off: number): number {
  return buf[off]! >>> 4
}

/** Header length in bytes (IHL * 4). */
export function ipv4Ihl(buf: Uint8Array, off: number): number {
  return (buf[off]! & 0x0f) << 2
}

/** Computes and stores the header checksum over IHL*4 bytes (for packets tundra builds). */
export function fillIpv4Checksum(buf: Uint8Array, off: number): void {
  set16(buf, off + Ipv4Field.CHECKSUM, 0)
  set16(buf, off + Ipv4Field.CHECKSUM, checksum(buf, off, ipv4Ihl(buf, off)))
}

/** True when the header checksum verifies (the sum over the header, checksum included, is all ones). */
export function ipv4ChecksumOk(buf: Uint8Array, off: number): boolean {
  return checksum(buf, off, ipv4Ihl(buf, off)) === 0
}

/** Dotted quad of a uint32 address. */
export function ipv4ToString(n: number): string {
  return `${(n >>> 24) & 0xff}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`
}

/**
 * Parses a strict dotted quad ("10.96.0.10") to a uint32; undefined for anything else (no leading zeros, which other
 * parsers read as octal, no shorthand like "10.1", no whitespace). Never throws; allocates nothing.
 */
export function parseIpv4(s: string): number | undefined {
  if (typeof s !== 'string' || s.length < 7 || s.length > 15) return undefined
  return parseDottedQuad(s, 0)
}

/** A dotted quad from position `start` to the end of `s`, as uint32, or undefined (also the tail of an IPv6 address). */
export function parseDottedQuad(s: string, start: number): number | undefined {
  let addr = 0
  let octet = 0
  let digits = 0
  let dots = 0
  for (let i = start; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 48 && c <= 57) {
      if (digits === 1 && octet === 0) return undefined
      octet = octet * 10 + (c - 48)
      if (octet > 255) return undefined
      digits++
    } else if (c === 46) {
      if (digits === 0 || dots === 3) return undefined
      addr = addr * 256 + octet
      octet = 0
      digits = 0
      dots++
    } else {
      return undefined
    }
  }
  if (digits === 0 || dots !== 3) return undefined
  return addr * 256 + octet
}

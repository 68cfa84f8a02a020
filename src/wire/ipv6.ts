// IPv6 fixed header (RFC 8200) layout, the extension-header walk, and address text conversion (RFC 4291/5952).
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |Version| Traffic Class |           Flow Label                  |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |         Payload Length        |  Next Header  |   Hop Limit   |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                                                               |
//   +                     Source Address (16 bytes)                 +
//   |                                                               |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                                                               |
//   +                  Destination Address (16 bytes)               +
//   |                                                               |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// Extension headers walked (hop-by-hop 0, routing 43, destination options 60, AH 51) share the shape
//   | Next Header | Hdr Ext Len | ...            length = (Hdr Ext Len + 1) * 8   (AH: (len + 2) * 4)
// and the fragment header (44) is always 8 bytes:
//   | Next Header |  Reserved   |  Fragment Offset (13 bits) |Res|M|
//   |                      Identification                          |
//
// Addresses stay in the packet; code passes (buf, offset) pairs instead of copying them out.

import { Drop } from './drop'
import { get16, get32, set16 } from './bytes'
import { parseDottedQuad } from './ipv4'
import {
  IPPROTO_AH,
  IPPROTO_DSTOPTS,
  IPPROTO_EXPERIMENT1,
  IPPROTO_EXPERIMENT2,
  IPPROTO_FRAGMENT,
  IPPROTO_HIP,
  IPPROTO_HOPOPTS,
  IPPROTO_MOBILITY,
  IPPROTO_ROUTING,
  IPPROTO_SHIM6,
} from './proto'

export const IPV6_HEADER = 40
const IPV6_SRC = 8
const IPV6_DST = 24
/** Minimum link MTU (RFC 8200 §5); an ICMPv6 error must fit in it. */
export const IPV6_MIN_MTU = 1280
/** Longest extension-header chain parsePacket accepts; real traffic carries one or two. */
const MAX_EXT_HEADERS = 8

/** Byte offsets of the fixed header fields. */
export const Ipv6Field = {
  VER_TC_FLOW: 0,
  PAYLOAD_LENGTH: 4,
  NEXT_HEADER: 6,
  HOP_LIMIT: 7,
  SRC: IPV6_SRC,
  DST: IPV6_DST,
} as const

/** Byte offsets inside the fragment extension header. */
export const Ipv6FragField = {
  NEXT_HEADER: 0,
  OFFSET_FLAGS: 2,
  ID: 4,
  LENGTH: 8,
} as const

/**
 * Out-parameter of walkIpv6Headers; allocate one per caller and reuse it.
 * After a PASS: `proto` is the upper-layer protocol and `l4Off` its absolute offset, or -1 for a non-first fragment
 * (whose bytes are the middle of someone's payload). `fragOffset` is in bytes.
 */
export class Ipv6Walk {
  proto = 0
  l4Off = 0
  /** Number of extension headers walked. */
  count = 0
  isFragment = 0
  fragOffset = 0
  moreFragments = 0
  fragId = 0
  /** Absolute offset of the fragment header, -1 when none. */
  fragHeaderOff = -1
}

/**
 * Walks the extension headers of the IPv6 packet at `off` whose payload ends at `end` (exclusive; the caller has
 * bounded it by both the payload length and the buffer). Returns PASS (0) or a Drop reason, filling `out`.
 * Reads nothing at or past `end`.
 */
export function walkIpv6Headers(buf: Uint8Array, off: number, end: number, out: Ipv6Walk): number {
  let nh = buf[off + 6]!
  let p = off + IPV6_HEADER
  let count = 0
  out.isFragment = 0
  out.fragOffset = 0
  out.moreFragments = 0
  out.fragId = 0
  out.fragHeaderOff = -1
  for (;;) {
    if (nh === IPPROTO_HOPOPTS || nh === IPPROTO_ROUTING || nh === IPPROTO_DSTOPTS || nh === IPPROTO_AH) {
      if (nh === IPPROTO_HOPOPTS && count !== 0) return Drop.BAD_EXT_HEADER
      if (p + 8 > end) return Drop.BAD_EXT_HEADER
      const hl = nh === IPPROTO_AH ? (buf[p + 1]! + 2) << 2 : (buf[p + 1]! + 1) << 3
      if (p + hl > end) return Drop.BAD_EXT_HEADER
      nh = buf[p]!
      p += hl
    } else if (nh === IPPROTO_FRAGMENT) {
      if (p + 8 > end) return Drop.BAD_EXT_HEADER
      // A second fragment header would mean nested fragmentation, which RFC 8200 does not allow.
      if (out.fragHeaderOff !== -1) return Drop.BAD_EXT_HEADER
      const w = get16(buf, p + 2)
      out.fragHeaderOff = p
      out.fragOffset = w & 0xfff8
      out.moreFragments = w & 1
      out.isFragment = out.fragOffset !== 0 || out.moreFragments !== 0 ? 1 : 0
      out.fragId = get32(buf, p + 4)
      nh = buf[p]!
      p += 8
      if (out.fragOffset !== 0) {
        count++
        out.count = count
        out.proto = nh
        out.l4Off = -1
        return 0
      }
    } else if (nh === IPPROTO_MOBILITY || nh === IPPROTO_HIP || nh === IPPROTO_SHIM6 || nh === IPPROTO_EXPERIMENT1 || nh === IPPROTO_EXPERIMENT2) {
      return Drop.UNSUPPORTED_EXT_HEADER
    } else {
      out.count = count
      out.proto = nh
      out.l4Off = p
      return 0
    }
    if (++count > MAX_EXT_HEADERS) return Drop.TOO_MANY_EXT_HEADERS
  }
}

const HEX = '0123456789abcdef'

/**
 * RFC 5952 text of the 16 bytes at `off`: lower case, no leading zeros, the longest run of two or more zero groups
 * (leftmost on a tie) as "::", and IPv4-mapped addresses as ::ffff:a.b.c.d.
 */
export function ipv6ToString(buf: Uint8Array, off: number): string {
  if (get32(buf, off) === 0 && get32(buf, off + 4) === 0 && get16(buf, off + 8) === 0 && get16(buf, off + 10) === 0xffff) {
    return `::ffff:${buf[off + 12]!}.${buf[off + 13]!}.${buf[off + 14]!}.${buf[off + 15]!}`
  }
  let bestStart = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    if (get16(buf, off + 2 * i) !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && get16(buf, off + 2 * j) === 0) j++
    if (j - i > bestLen) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  let s = ''
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      s += '::'
      i += bestLen - 1
      continue
    }
    if (s.length > 0 && !s.endsWith(':')) s += ':'
    const w = get16(buf, off + 2 * i)
    let started = false
    for (let k = 12; k >= 0; k -= 4) {
      const d = (w >>> k) & 0xf
      if (d !== 0 || started || k === 0) {
        s += HEX[d]!
        started = true
      }
    }
  }
  return s
}

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48
  if (c >= 97 && c <= 102) return c - 87
  if (c >= 65 && c <= 70) return c - 55
  return -1
}

/**
 * Parses IPv6 text (RFC 4291 §2.2: hex groups, one "::", an optional dotted-quad tail) into 16 bytes at `off` of
 * `out`. Zones ("%eth0"), brackets and prefixes are rejected. Returns the offset after the
 * address, or undefined on bad input (out untouched); never throws, allocates nothing.
 */
export function parseIpv6(s: string, out: Uint8Array, off: number): number | undefined {
  if (typeof s !== 'string' || s.length < 2 || s.length > 45 || off < 0 || off + 16 > out.length) return undefined
  // Up to 8 groups, parsed left to right; `gap` is the group index where "::" sits.
  const groups = GROUPS
  let n = 0
  let gap = -1
  let i = 0
  const len = s.length
  if (s.charCodeAt(0) === 58) {
    if (s.charCodeAt(1) !== 58) return undefined
    gap = 0
    i = 2
    if (i === len) {
      out.fill(0, off, off + 16)
      return off + 16
    }
  }
  for (;;) {
    // One group: hex digits, or a dotted quad if a '.' follows before the next ':'.
    const start = i
    let v = 0
    while (i < len && i - start < 5) {
      const d = hexDigit(s.charCodeAt(i))
      if (d < 0) break
      v = (v << 4) | d
      i++
    }
    if (i < len && s.charCodeAt(i) === 46) {
      // IPv4 tail: must be last and needs room for two groups.
      if (n > 6) return undefined
      const v4 = parseDottedQuad(s, start)
      if (v4 === undefined) return undefined
      groups[n++] = v4 >>> 16
      groups[n++] = v4 & 0xffff
      i = len
      break
    }
    const digits = i - start
    if (digits === 0 || digits > 4 || n === 8) return undefined
    groups[n++] = v
    if (i === len) break
    if (s.charCodeAt(i) !== 58) return undefined
    i++
    if (i < len && s.charCodeAt(i) === 58) {
      if (gap >= 0) return undefined
      gap = n
      i++
      if (i === len) break
    } else if (i === len) {
      return undefined
    }
  }
  if (gap < 0 ? n !== 8 : n > 7) return undefined
  const fill = 8 - n
  let w = 0
  for (let g = 0; g < n; g++) {
    if (g === gap) w += fill
    set16(out, off + 2 * w, groups[g]!)
    w++
  }
  if (gap === n) w += fill
  for (let g = 0; g < 8; g++) {
    // Zero the groups the "::" stands for.
    if (gap >= 0 && g >= gap && g < gap + fill) set16(out, off + 2 * g, 0)
  }
  return off + 16
}

const GROUPS = new Uint16Array(8)

// Packets tundra originates itself: ICMP/ICMPv6 errors quoting an offending packet, and echo replies made in place.
//
// Builders write into a caller's buffer at an offset and return the bytes written (0 when it does not fit); these
// packets get full checksums. The offending packet may live in the same buffer, even at the same offset: everything
// needed from it is read before anything is written.

import { checksum, csumUpdate16, pseudoHeaderSum6 } from './checksum'
import { copyBytes, get16, get32, set16, set32 } from './bytes'
import { fillIpv4Checksum } from './ipv4'
import { IPV6_MIN_MTU } from './ipv6'
import { IPPROTO_ICMP, IPPROTO_ICMPV6 } from './proto'
import type { PacketInfo } from './packet'

/** TTL / hop limit of packets tundra originates (Linux's default). */
export const DEFAULT_TTL = 64
/** TOS of ICMP errors: precedence "internetwork control", as Linux sends them. */
const ICMP_ERROR_TOS = 0xc0

/** RFC 1812 §4.3.2.3: an ICMPv4 error should not exceed 576 bytes, whatever it quotes. */
export const ICMP4_ERROR_MAX = 576

/**
 * An option-less IPv4 header at `off` for a packet tundra builds, with its full header checksum. `flagsFrag` is the
 * flags/fragment-offset word (0x4000 = DF).
 */
export function writeIpv4Header(
  out: Uint8Array,
  off: number,
  tos: number,
  total: number,
  id: number,
  flagsFrag: number,
  proto: number,
  src: number,
  dst: number,
  ttl = DEFAULT_TTL,
): void {
  out[off] = 0x45
  out[off + 1] = tos
  set16(out, off + 2, total)
  set16(out, off + 4, id)
  set16(out, off + 6, flagsFrag)
  out[off + 8] = ttl
  out[off + 9] = proto
  set32(out, off + 12, src)
  set32(out, off + 16, dst)
  fillIpv4Checksum(out, off)
}

/**
 * Writes an IPv4 ICMP error (e.g. type 3 code 3, port unreachable) from `src` to the source of the offending
 * packet at (orig, origOff) whose buffer holds `origLen` bytes. The quote is the offending IP header and the first
 * `quoteBytes` bytes of its payload (8 by default, RFC 792; Linux quotes as much as fits in 576 bytes, RFC 1812),
 * bounded by its total length, origLen and 576 bytes in all. `rest` is the 32-bit word after the checksum: the
 * next-hop MTU for Fragmentation Needed (RFC 1191), pointer << 24 for Parameter Problem, else 0.
 * Returns bytes written, or 0 when out has no room from outOff.
 */
export function buildIcmp4Error(
  out: Uint8Array,
  outOff: number,
  orig: Uint8Array,
  origOff: number,
  origLen: number,
  src: number,
  type: number,
  code: number,
  rest = 0,
  ttl = DEFAULT_TTL,
  quoteBytes = 8,
): number {
  const ihl = (orig[origOff]! & 0x0f) << 2
  let q = ihl + quoteBytes
  const tl = get16(orig, origOff + 2)
  if (tl !== 0 && q > tl) q = tl
  if (q > origLen) q = origLen
  if (q > ICMP4_ERROR_MAX - 28) q = ICMP4_ERROR_MAX - 28
  if (q < 0) q = 0
  const total = 28 + q
  if (outOff < 0 || outOff + total > out.length) return 0
  const dst = get32(orig, origOff + 12)
  copyBytes(out, outOff + 28, orig, origOff, q)
  // DF with ID 0: an atomic datagram (RFC 6864).
  writeIpv4Header(out, outOff, ICMP_ERROR_TOS, total, 0, 0x4000, IPPROTO_ICMP, src, dst, ttl)
  const m = outOff + 20
  out[m] = type
  out[m + 1] = code
  set16(out, m + 2, 0)
  set32(out, m + 4, rest)
  set16(out, m + 2, checksum(out, m, 8 + q))
  return total
}

// Addresses saved before the quote copy may overwrite them (the offending packet can share the output buffer).
const SAVED_SRC = new Uint8Array(16)
const SAVED_DST = new Uint8Array(16)

/**
 * Writes an ICMPv6 error from the 16-byte address at (src, srcOff) to the source of the offending packet, quoting as
 * much of it as keeps the whole error within 1280 bytes (RFC 4443 §2.4(c)). `rest` is the MTU for Packet Too Big,
 * the pointer for Parameter Problem, else 0. Returns bytes written, or 0 when out has no room from outOff.
 */
export function buildIcmp6Error(
  out: Uint8Array,
  outOff: number,
  orig: Uint8Array,
  origOff: number,
  origLen: number,
  src: Uint8Array,
  srcOff: number,
  type: number,
  code: number,
  rest = 0,
  hopLimit = DEFAULT_TTL,
): number {
  let q = 40 + get16(orig, origOff + 4)
  if (q > origLen) q = origLen
  if (q > IPV6_MIN_MTU - 48) q = IPV6_MIN_MTU - 48
  if (q < 0) q = 0
  const total = 48 + q
  if (outOff < 0 || outOff + total > out.length) return 0
  for (let i = 0; i < 16; i++) {
    SAVED_SRC[i] = src[srcOff + i]!
    SAVED_DST[i] = orig[origOff + 8 + i]!
  }
  copyBytes(out, outOff + 48, orig, origOff, q)
  set32(out, outOff, 0x60000000)
  set16(out, outOff + 4, 8 + q)
  out[outOff + 6] = IPPROTO_ICMPV6
  out[outOff + 7] = hopLimit
  for (let i = 0; i < 16; i++) {
    out[outOff + 8 + i] = SAVED_SRC[i]!
    out[outOff + 24 + i] = SAVED_DST[i]!
  }
  const m = outOff + 40
  out[m] = type
  out[m + 1] = code
  set16(out, m + 2, 0)
  set32(out, m + 4, rest)
  set16(out, m + 2, checksum(out, m, 8 + q, pseudoHeaderSum6(out, outOff + 8, outOff + 24, IPPROTO_ICMPV6, 8 + q)))
  return total
}

function v4Unicast(a: number): boolean {
  const top = a >>> 24
  return a !== 0 && top !== 127 && top < 224
}

function v6Multicast(buf: Uint8Array, off: number): boolean {
  return buf[off] === 0xff
}

function v6Unspecified(buf: Uint8Array, off: number): boolean {
  return get32(buf, off) === 0 && get32(buf, off + 4) === 0 && get32(buf, off + 8) === 0 && get32(buf, off + 12) === 0
}

/**
 * Whether RFC 1812 §4.3.2.7 / RFC 4443 §2.4(e) allow an ICMP error of (type, code) about the parsed packet: never
 * about an ICMP error, a non-first fragment, or a packet from an address that is not one host (unspecified,
 * loopback, multicast, broadcast), and not about multicast/broadcast packets except ICMPv6 Packet Too Big and
 * Parameter Problem code 2.
 */
export function icmpErrorAllowed(buf: Uint8Array, info: PacketInfo, type: number, code: number): boolean {
  if (info.innerL3Off >= 0) return false
  if (info.fragOffset !== 0) return false
  if (info.l4Proto === IPPROTO_ICMPV6 && info.family === 6 && info.l4Off >= 0 && info.icmpType < 128) return false
  if (info.family === 4) {
    return v4Unicast(info.src) && info.dst !== 0xffffffff && info.dst >>> 28 !== 14
  }
  if (v6Unspecified(buf, info.srcOff) || v6Multicast(buf, info.srcOff)) return false
  if (v6Multicast(buf, info.dstOff)) return type === 2 || (type === 4 && code === 2)
  return true
}

/**
 * Turns the ICMPv4 echo request of the IPv4 packet at ipOff into its echo reply in place: addresses swapped, type 0,
 * TTL 64, IPv4 options dropped (the message moves up), ICMP checksum updated incrementally and a fresh IPv4 header
 * checksum. Returns the new IP packet length. Pass an unfragmented request to a unicast address (parsePacket PASS).
 */
export function icmp4EchoToReply(buf: Uint8Array, ipOff: number): number {
  const ihl = (buf[ipOff]! & 0x0f) << 2
  const l4Len = get16(buf, ipOff + 2) - ihl
  const src = get32(buf, ipOff + 12)
  set32(buf, ipOff + 12, get32(buf, ipOff + 16))
  set32(buf, ipOff + 16, src)
  if (ihl > 20) {
    copyBytes(buf, ipOff + 20, buf, ipOff + ihl, l4Len)
    buf[ipOff] = 0x45
  }
  const tl = 20 + l4Len
  set16(buf, ipOff + 2, tl)
  buf[ipOff + 8] = DEFAULT_TTL
  fillIpv4Checksum(buf, ipOff)
  const m = ipOff + 20
  const oldWord = get16(buf, m)
  buf[m] = 0
  set16(buf, m + 2, csumUpdate16(get16(buf, m + 2), oldWord, get16(buf, m)))
  return tl
}

/**
 * Turns the ICMPv6 echo request at l4Off (l4Len bytes) of the IPv6 packet at ipOff into its echo reply in place:
 * addresses swapped (the pseudo-header sum does not change), type 129, hop limit 64, extension headers dropped (the
 * message moves up to ipOff + 40), checksum updated incrementally. Returns the new IP packet length. The request
 * must be to a unicast address: a reply's source cannot be multicast.
 */
export function icmp6EchoToReply(buf: Uint8Array, ipOff: number, l4Off: number, l4Len: number): number {
  for (let i = 8; i < 24; i++) {
    const t = buf[ipOff + i]!
    buf[ipOff + i] = buf[ipOff + i + 16]!
    buf[ipOff + i + 16] = t
  }
  const m = ipOff + 40
  if (l4Off !== m) copyBytes(buf, m, buf, l4Off, l4Len)
  set16(buf, ipOff + 4, l4Len)
  buf[ipOff + 6] = IPPROTO_ICMPV6
  buf[ipOff + 7] = DEFAULT_TTL
  const oldWord = get16(buf, m)
  buf[m] = 129
  set16(buf, m + 2, csumUpdate16(get16(buf, m + 2), oldWord, get16(buf, m)))
  return 40 + l4Len
}

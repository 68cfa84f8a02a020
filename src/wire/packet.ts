// The once-per-packet validator: checks every length the headers claim against the buffer and fills a reusable
// PacketInfo, so everything downstream (NAT, conntrack, DNS, routing) reads fields without re-checking.
//
//   parsePacket(buf, off, len, info, gso?) -> 0 (PASS) or a Drop reason (drop.ts)
//
// Rules, in order (the first that fails decides the verdict; nothing at or past off+len is ever read):
//   IPv4  len < 20: TRUNCATED; IHL < 5: BAD_IHL; total length < 20 (or 0 outside GSO): BAD_TOTAL_LENGTH;
//         total length > len: TRUNCATED; IHL*4 > total length: BAD_IHL; fragment ending past 65535 or TCP fragment
//         at offset 8: BAD_FRAGMENT. Bytes past total length (link padding) are ignored.
//   IPv6  len < 40: TRUNCATED; 40 + payload length > len: TRUNCATED; extension headers: see walkIpv6Headers;
//         fragments not a multiple of 8 (unless last) or ending past 65535: BAD_FRAGMENT.
//   L4    non-first fragments have no L4 header: isFragment = 1, l4Off = -1, PASS. Otherwise TCP < 20, UDP < 8,
//         ICMP < 8, SCTP < 12 bytes: BAD_L4_HEADER; TCP data offset < 5 words or past the segment:
//         BAD_TCP_DATA_OFFSET; UDP length < 8 or past the payload: BAD_UDP_LENGTH; UDP/IPv6 checksum 0:
//         UDP6_ZERO_CHECKSUM; an ICMP error whose quote is not an IP header + 8 bytes: BAD_ICMP_ERROR.
//
// With gso = true (packets from a TUN with IFF_VNET_HDR), an IPv4 total length or IPv6 payload length of 0 means
// "the rest of the buffer", as for >64K GSO super-packets (BIG TCP).

import { Drop, PASS } from './drop'
import { get16, get32 } from './bytes'
import { IPV6_HEADER, Ipv6Field, Ipv6Walk, walkIpv6Headers } from './ipv6'
import { Ipv4Field } from './ipv4'
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from './proto'

export type { DropReason } from './drop'

/**
 * What parsePacket learnt about one packet. Allocate once per worker and reuse: every field is rewritten on each
 * call. Offsets are absolute offsets into the buffer passed to parsePacket. Meaningful only after a PASS.
 */
export class PacketInfo {
  /** 4 or 6 */
  family = 0
  l3Off = 0
  /** IPv4 total length / 40 + IPv6 payload length: the packet's length from its own header, never the buffer's */
  l3Len = 0
  /** IPv4 IHL*4, or 40 + the extension headers before the upper layer (or before the fragment data) */
  l3HdrLen = 0
  /** upper-layer protocol (after IPv6 extension headers) */
  l4Proto = 0
  /** -1 for non-first fragments */
  l4Off = -1
  /** bytes of L4 header + data in this packet; for UDP the UDP length field, which may be below the IP payload */
  l4Len = 0
  /** IPv4 addresses as uint32; 0 for IPv6 (use srcOff/dstOff) */
  src = 0
  dst = 0
  /** absolute offsets of the addresses (4 or 16 bytes), for both families */
  srcOff = 0
  dstOff = 0
  /** TCP/UDP/SCTP ports, or the ICMP/ICMPv6 echo identifier in both; 0 when there is none */
  srcPort = 0
  dstPort = 0
  tcpFlags = 0
  icmpType = 0
  icmpCode = 0
  /** fragment offset in bytes */
  fragOffset = 0
  moreFragments = 0
  /** 1 for any fragment, first included (offset != 0 or MF) */
  isFragment = 0
  /** IPv4 identification / IPv6 fragment header identification (0 when not a fragment) */
  fragId = 0
  /** TTL or hop limit */
  ttl = 0
  // The packet quoted by an ICMP/ICMPv6 error, what NAT uses to find the connection it relates to.
  /** -1 unless an ICMP error */
  innerL3Off = -1
  /** -1 when the quote has no L4 header (non-first fragment) or this is not an error */
  innerL4Off = -1
  innerL4Proto = 0
  innerSrc = 0
  innerDst = 0
  innerSrcOff = 0
  innerDstOff = 0
  innerSrcPort = 0
  innerDstPort = 0
}

// Scratch for the IPv6 walks; wire/ is synchronous, so one of each per process is enough.
const outerWalk = new Ipv6Walk()
const innerWalk = new Ipv6Walk()

/**
 * The length of the IP packet at off as its own header states it (IPv4 total length, IPv6 40 + payload length), for
 * a packet rewritten in place after parsePacket (an echo reply drops options or extension headers). Reads 6 bytes.
 */
export function ipPacketLength(buf: Uint8Array, off: number): number {
  return buf[off]! >>> 4 === 4 ? get16(buf, off + Ipv4Field.TOTAL_LENGTH) : IPV6_HEADER + get16(buf, off + Ipv6Field.PAYLOAD_LENGTH)
}

/**
 * Validates the IP packet of `len` bytes at `off` and fills `info`. Returns PASS (0) or a Drop reason; never throws
 * and never reads at or past off + len (nor past the buffer).
 */
export function parsePacket(buf: Uint8Array, off: number, len: number, info: PacketInfo, gso = false): number {
  info.l3Off = off
  info.l4Off = -1
  info.l4Len = 0
  info.srcPort = 0
  info.dstPort = 0
  info.tcpFlags = 0
  info.icmpType = 0
  info.icmpCode = 0
  info.fragOffset = 0
  info.moreFragments = 0
  info.isFragment = 0
  info.fragId = 0
  info.innerL3Off = -1
  info.innerL4Off = -1
  info.innerL4Proto = 0
  info.innerSrc = 0
  info.innerDst = 0
  info.innerSrcPort = 0
  info.innerDstPort = 0
  if (off < 0) return Drop.TRUNCATED
  if (len > buf.length - off) len = buf.length - off
  if (len < 1) return Drop.TRUNCATED
  const version = buf[off]! >>> 4
  if (version === 4) return parse4(buf, off, len, info, gso)
  if (version === 6) return parse6(buf, off, len, info, gso)
  info.family = 0
  return Drop.BAD_VERSION
}

function parse4(buf: Uint8Array, off: number, len: number, info: PacketInfo, gso: boolean): number {
  info.family = 4
  if (len < 20) return Drop.TRUNCATED
  const ihl = (buf[off]! & 0x0f) << 2
  if (ihl < 20) return Drop.BAD_IHL
  let tl = get16(buf, off + 2)
  if (tl === 0 && gso) tl = len
  if (tl < 20) return Drop.BAD_TOTAL_LENGTH
  if (tl > len) return Drop.TRUNCATED
  if (ihl > tl) return Drop.BAD_IHL
  const proto = buf[off + 9]!
  const w = get16(buf, off + 6)
  const fragOffset = (w & 0x1fff) << 3
  const mf = (w >>> 13) & 1
  info.l3Len = tl
  info.l3HdrLen = ihl
  info.l4Proto = proto
  info.src = get32(buf, off + 12)
  info.dst = get32(buf, off + 16)
  info.srcOff = off + 12
  info.dstOff = off + 16
  info.ttl = buf[off + 8]!
  if (fragOffset !== 0 || mf !== 0) {
    info.isFragment = 1
    info.fragOffset = fragOffset
    info.moreFragments = mf
    info.fragId = get16(buf, off + 4)
    // Reassembly past 65535 bytes is the ping of death; offset 8 for TCP can overwrite the first fragment's flags.
    if (fragOffset + tl - ihl > 65535) return Drop.BAD_FRAGMENT
    if (fragOffset !== 0) return proto === IPPROTO_TCP && fragOffset === 8 ? Drop.BAD_FRAGMENT : PASS
  }
  return parseL4(buf, off + ihl, tl - ihl, proto, info, 4, gso)
}

function parse6(buf: Uint8Array, off: number, len: number, info: PacketInfo, gso: boolean): number {
  info.family = 6
  if (len < 40) return Drop.TRUNCATED
  let plen = get16(buf, off + 4)
  if (plen === 0 && gso) plen = len - 40
  if (40 + plen > len) return Drop.TRUNCATED
  const end = off + 40 + plen
  info.l3Len = 40 + plen
  info.src = 0
  info.dst = 0
  info.srcOff = off + 8
  info.dstOff = off + 24
  info.ttl = buf[off + 7]!
  const walk = outerWalk
  const v = walkIpv6Headers(buf, off, end, walk)
  if (v !== PASS) return v
  const proto = walk.proto
  info.l4Proto = proto
  if (walk.fragHeaderOff >= 0) {
    const dataOff = walk.fragHeaderOff + 8
    info.isFragment = walk.isFragment
    info.fragOffset = walk.fragOffset
    info.moreFragments = walk.moreFragments
    info.fragId = walk.fragId
    if (walk.isFragment !== 0) {
      const dataLen = end - dataOff
      // RFC 8200 §4.5: non-last fragments are multiples of 8; no reassembled payload may exceed 65535 bytes.
      if (walk.moreFragments !== 0 && (dataLen & 7) !== 0) return Drop.BAD_FRAGMENT
      // Unfragmentable part (headers before the fragment header) + offset + data is the reassembled payload.
      if (walk.fragHeaderOff - off - 40 + walk.fragOffset + dataLen > 65535) return Drop.BAD_FRAGMENT
    }
    if (walk.l4Off < 0) {
      info.l3HdrLen = dataOff - off
      return PASS
    }
  }
  info.l3HdrLen = walk.l4Off - off
  return parseL4(buf, walk.l4Off, end - walk.l4Off, proto, info, 6, gso)
}

function parseL4(buf: Uint8Array, l4Off: number, l4Len: number, proto: number, info: PacketInfo, family: number, gso: boolean): number {
  info.l4Off = l4Off
  info.l4Len = l4Len
  // A first fragment carries the L4 header but only part of the data.
  const firstFragment = info.moreFragments
  if (proto === IPPROTO_TCP) {
    if (l4Len < 20) return Drop.BAD_L4_HEADER
    const doff = (buf[l4Off + 12]! >>> 4) << 2
    if (doff < 20 || doff > l4Len) return Drop.BAD_TCP_DATA_OFFSET
    info.srcPort = get16(buf, l4Off)
    info.dstPort = get16(buf, l4Off + 2)
    info.tcpFlags = buf[l4Off + 13]!
    return PASS
  }
  if (proto === IPPROTO_UDP) {
    if (l4Len < 8) return Drop.BAD_L4_HEADER
    let ulen = get16(buf, l4Off + 4)
    if (ulen === 0 && gso) ulen = l4Len
    if (ulen < 8 || (ulen > l4Len && firstFragment === 0)) return Drop.BAD_UDP_LENGTH
    if (family === 6 && get16(buf, l4Off + 6) === 0) return Drop.UDP6_ZERO_CHECKSUM
    if (firstFragment === 0) info.l4Len = ulen
    info.srcPort = get16(buf, l4Off)
    info.dstPort = get16(buf, l4Off + 2)
    return PASS
  }
  if ((proto === IPPROTO_ICMP && family === 4) || (proto === IPPROTO_ICMPV6 && family === 6)) {
    if (l4Len < 8) return Drop.BAD_L4_HEADER
    const type = buf[l4Off]!
    info.icmpType = type
    info.icmpCode = buf[l4Off + 1]!
    if (family === 4) {
      if (type === 8 || type === 0) {
        info.srcPort = info.dstPort = get16(buf, l4Off + 4)
      } else if (type === 3 || type === 11 || type === 12 || type === 4 || type === 5) {
        return parseInner4(buf, l4Off + 8, l4Off + l4Len, info)
      }
    } else {
      if (type === 128 || type === 129) {
        info.srcPort = info.dstPort = get16(buf, l4Off + 4)
      } else if (type >= 1 && type <= 4) {
        return parseInner6(buf, l4Off + 8, l4Off + l4Len, info)
      }
    }
    return PASS
  }
  if (proto === IPPROTO_SCTP) {
    if (l4Len < 12) return Drop.BAD_L4_HEADER
    info.srcPort = get16(buf, l4Off)
    info.dstPort = get16(buf, l4Off + 2)
    return PASS
  }
  return PASS
}

/** Ports (or echo id) of a quoted L4 header at q that has at least 8 bytes before `end`, or BAD_ICMP_ERROR. */
function innerPorts(buf: Uint8Array, q: number, end: number, proto: number, info: PacketInfo): number {
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP) {
    if (q + 8 > end) return Drop.BAD_ICMP_ERROR
    info.innerSrcPort = get16(buf, q)
    info.innerDstPort = get16(buf, q + 2)
  } else if (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) {
    if (q + 8 > end) return Drop.BAD_ICMP_ERROR
    const t = buf[q]!
    const echo = proto === IPPROTO_ICMP ? t === 8 || t === 0 : t === 128 || t === 129
    if (echo) info.innerSrcPort = info.innerDstPort = get16(buf, q + 4)
  }
  return PASS
}

function parseInner4(buf: Uint8Array, q: number, end: number, info: PacketInfo): number {
  if (end - q < 20 || buf[q]! >>> 4 !== 4) return Drop.BAD_ICMP_ERROR
  const ihl = (buf[q]! & 0x0f) << 2
  if (ihl < 20 || q + ihl > end) return Drop.BAD_ICMP_ERROR
  const proto = buf[q + 9]!
  info.innerL3Off = q
  info.innerL4Proto = proto
  info.innerSrc = get32(buf, q + 12)
  info.innerDst = get32(buf, q + 16)
  info.innerSrcOff = q + 12
  info.innerDstOff = q + 16
  if ((get16(buf, q + 6) & 0x1fff) !== 0) return PASS
  info.innerL4Off = q + ihl
  return innerPorts(buf, q + ihl, end, proto, info)
}

function parseInner6(buf: Uint8Array, q: number, end: number, info: PacketInfo): number {
  if (end - q < 40 || buf[q]! >>> 4 !== 6) return Drop.BAD_ICMP_ERROR
  // The quote may be cut anywhere: walk only what is both quoted and claimed.
  const claimed = q + 40 + get16(buf, q + 4)
  const qend = claimed < end ? claimed : end
  const walk = innerWalk
  if (walkIpv6Headers(buf, q, qend, walk) !== PASS) return Drop.BAD_ICMP_ERROR
  info.innerL3Off = q
  info.innerL4Proto = walk.proto
  info.innerSrc = 0
  info.innerDst = 0
  info.innerSrcOff = q + 8
  info.innerDstOff = q + 24
  if (walk.l4Off < 0) return PASS
  info.innerL4Off = walk.l4Off
  return innerPorts(buf, walk.l4Off, qend, walk.proto, info)
}

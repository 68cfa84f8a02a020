// NAT rewrites of addresses and ports with every checksum they touch updated incrementally (RFC 1624).
//
// Which checksum moves when:
//                         IPv4 hdr   TCP/UDP field                 ICMPv4 field   ICMPv6 field   SCTP CRC32c
//   IPv4 address          yes        pseudo-header                 no             -              no
//   IPv6 address          -          pseudo-header                 -              pseudo-header  no
//   port / echo id        no         yes unless partial            yes            yes            recomputed
//
// `partial` is true for packets whose TCP/UDP field holds the uncomplemented pseudo-header sum (CHECKSUM_PARTIAL,
// virtio_net_hdr NEEDS_CSUM): only pseudo-header changes (addresses, length) are applied to it, because whoever
// completes the checksum sums the L4 header and payload, new ports included. A UDP-over-IPv4 checksum of 0 means
// "none" and stays 0; a UDP result of 0 is stored as 0xffff.
//
// `which` is SRC or DST. Offsets are absolute (ipOff: IP header, l4Off: L4 header, -1 when there is none, as for
// non-first fragments). Call these after parsePacket (packet.ts) said PASS: nothing here re-validates.

import { csumApply, csumUpdate32, diff16, diff32, partialApply, udpFinish } from './checksum'
import { get16, get32, set16, set32 } from './bytes'
import { fillSctpChecksum } from './sctp'
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from './proto'

export const SRC = 0
export const DST = 1

/** Echo request/reply of ICMPv4 (8/0) or ICMPv6 (128/129): the messages with an identifier to map. */
function isEcho(proto: number, type: number): boolean {
  return proto === IPPROTO_ICMP ? type === 8 || type === 0 : type === 128 || type === 129
}

/** Bytes from l4Off to the end of the IP packet at ipOff, from the IP header's own length field. */
function l4LengthFromIp(buf: Uint8Array, ipOff: number, l4Off: number): number {
  return buf[ipOff]! >>> 4 === 4 ? ipOff + get16(buf, ipOff + 2) - l4Off : ipOff + 40 + get16(buf, ipOff + 4) - l4Off
}

/**
 * Applies `delta` (see diff16/diff32) to the L4 checksum of `proto`. `pseudo` says whether the change is in the
 * pseudo-header (and so also applies to a partial sum) or in the L4 bytes themselves.
 */
function applyL4Delta(buf: Uint8Array, l4Off: number, proto: number, delta: number, pseudo: boolean, partial: boolean): void {
  if (proto === IPPROTO_TCP) {
    const at = l4Off + 16
    if (partial) {
      if (pseudo) set16(buf, at, partialApply(get16(buf, at), delta))
    } else set16(buf, at, csumApply(get16(buf, at), delta))
  } else if (proto === IPPROTO_UDP) {
    const at = l4Off + 6
    if (partial) {
      if (pseudo) set16(buf, at, partialApply(get16(buf, at), delta))
    } else {
      const c = get16(buf, at)
      if (c !== 0) set16(buf, at, udpFinish(csumApply(c, delta)))
    }
  } else if (proto === IPPROTO_ICMPV6 || (proto === IPPROTO_ICMP && !pseudo)) {
    const at = l4Off + 2
    if (partial) {
      if (pseudo) set16(buf, at, partialApply(get16(buf, at), delta))
    } else set16(buf, at, csumApply(get16(buf, at), delta))
  }
}

/**
 * Rewrites a TCP/UDP/SCTP port, or the identifier of an ICMP/ICMPv6 echo (either `which`), with the L4 checksum
 * updated. Returns the old port/id, or -1 when the protocol has none (other protocols, ICMP non-echo, l4Off < 0).
 * `ipOff` is read only for SCTP, whose CRC is recomputed over the length the IP header gives.
 */
function rewriteL4Port(buf: Uint8Array, ipOff: number, l4Off: number, proto: number, which: number, newPort: number, partial: boolean): number {
  if (l4Off < 0) return -1
  let at: number
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP) {
    at = l4Off + (which === DST ? 2 : 0)
  } else if (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) {
    if (!isEcho(proto, buf[l4Off]!)) return -1
    at = l4Off + 4
  } else {
    return -1
  }
  const old = get16(buf, at)
  if (old === newPort) return old
  set16(buf, at, newPort)
  if (proto === IPPROTO_SCTP) {
    const len = l4LengthFromIp(buf, ipOff, l4Off)
    if (len >= 12) fillSctpChecksum(buf, l4Off, len)
  } else {
    applyL4Delta(buf, l4Off, proto, diff16(old, newPort), false, partial)
  }
  return old
}

/**
 * TCP/UDP part of natIpv4/natIpv6: that side's port to newPort (-1 keeps it) and the L4 checksum updated by the
 * address change (addrDelta, unfolded) plus the port change in one fold. A partial checksum (NEEDS_CSUM) covers only
 * the pseudo-header, so only the address change applies to it; a UDP checksum of 0 (none) stays 0. A delta of 0
 * leaves the checksum as it is (applying it would not change it either).
 */
function natPortAndChecksum(buf: Uint8Array, l4Off: number, proto: number, which: number, newPort: number, addrDelta: number, partial: boolean): void {
  const pOff = l4Off + (which === DST ? 2 : 0)
  const oldPort = get16(buf, pOff)
  let portDelta = 0
  if (newPort >= 0 && newPort !== oldPort) {
    set16(buf, pOff, newPort)
    portDelta = diff16(oldPort, newPort)
  }
  const at = l4Off + (proto === IPPROTO_TCP ? 16 : 6)
  const c = get16(buf, at)
  if (partial) {
    if (addrDelta !== 0) set16(buf, at, partialApply(c, addrDelta))
  } else if (addrDelta + portDelta !== 0) {
    if (proto === IPPROTO_TCP) set16(buf, at, csumApply(c, addrDelta + portDelta))
    else if (c !== 0) set16(buf, at, udpFinish(csumApply(c, addrDelta + portDelta)))
  }
}

/**
 * One-call IPv4 NAT of one side: stores newAddr as the source or destination address and newPort as that side's
 * port (or the echo id for ICMP; pass -1 to keep the port), updating the IPv4 header checksum and the L4 checksum in a
 * single fold. With l4Off < 0 (non-first fragment) only the address changes.
 */
export function natIpv4(buf: Uint8Array, ipOff: number, l4Off: number, proto: number, which: number, newAddr: number, newPort: number, partial: boolean): void {
  const aOff = ipOff + (which === DST ? 16 : 12)
  const oldAddr = get32(buf, aOff)
  let addrDelta = 0
  if (oldAddr !== newAddr) {
    set32(buf, aOff, newAddr)
    set16(buf, ipOff + 10, csumUpdate32(get16(buf, ipOff + 10), oldAddr, newAddr))
    addrDelta = diff32(oldAddr, newAddr)
  }
  if (l4Off < 0) return
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) {
    natPortAndChecksum(buf, l4Off, proto, which, newPort, addrDelta, partial)
  } else if (newPort >= 0 && (proto === IPPROTO_ICMP || proto === IPPROTO_SCTP)) {
    rewriteL4Port(buf, ipOff, l4Off, proto, which, newPort, partial)
  }
}

/** Unfolded difference of replacing the 16 bytes at (buf, off) with those at (newBuf, newOff). */
function ipv6AddrDelta(buf: Uint8Array, off: number, newBuf: Uint8Array, newOff: number): number {
  let d = 0
  for (let i = 0; i < 16; i += 2) {
    d += (~((buf[off + i]! << 8) | buf[off + i + 1]!) & 0xffff) + ((newBuf[newOff + i]! << 8) | newBuf[newOff + i + 1]!)
  }
  return d
}

/**
 * One-call IPv6 NAT of one side: address (16 bytes at newBuf/newOff) and port or echo id (-1 keeps it), one
 * checksum update. With l4Off < 0 (non-first fragment) only the address changes.
 */
export function natIpv6(
  buf: Uint8Array,
  ipOff: number,
  l4Off: number,
  proto: number,
  which: number,
  newBuf: Uint8Array,
  newOff: number,
  newPort: number,
  partial: boolean,
): void {
  const aOff = ipOff + (which === DST ? 24 : 8)
  const addrDelta = ipv6AddrDelta(buf, aOff, newBuf, newOff)
  for (let i = 0; i < 16; i++) buf[aOff + i] = newBuf[newOff + i]!
  if (l4Off < 0) return
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) {
    natPortAndChecksum(buf, l4Off, proto, which, newPort, addrDelta, partial)
  } else if (proto === IPPROTO_ICMPV6) {
    let delta = addrDelta
    if (newPort >= 0 && isEcho(proto, buf[l4Off]!)) {
      const oldId = get16(buf, l4Off + 4)
      if (oldId !== newPort) {
        set16(buf, l4Off + 4, newPort)
        delta += diff16(oldId, newPort)
      }
    }
    const at = l4Off + 2
    // Echo id changes are not pseudo-header changes; ICMPv6 is never offloaded, so partial is not expected here.
    set16(buf, at, partial ? partialApply(get16(buf, at), addrDelta) : csumApply(get16(buf, at), delta))
  } else if (proto === IPPROTO_SCTP && newPort >= 0) {
    rewriteL4Port(buf, ipOff, l4Off, proto, which, newPort, partial)
  }
}

/**
 * NAT of the packet quoted in an ICMPv4 error (the "related" direction): stores newAddr as the quoted header's source
 * or destination and newPort (-1 keeps it) as that side's port / echo id, updating the quoted IPv4 header checksum,
 * the quoted L4 checksum when it lies inside the quote, and the outer ICMP checksum, all incrementally.
 * `icmpLen` bounds the ICMP message; `innerL4Off` is -1 when the quote has no L4 header (as packet.ts reports).
 */
export function natIcmp4Inner(
  buf: Uint8Array,
  icmpOff: number,
  icmpLen: number,
  innerIpOff: number,
  innerL4Off: number,
  innerProto: number,
  which: number,
  newAddr: number,
  newPort: number,
): void {
  const end = icmpOff + icmpLen
  let outer = 0
  const aOff = innerIpOff + (which === DST ? 16 : 12)
  const oldAddr = get32(buf, aOff)
  let addrDelta = 0
  if (oldAddr !== newAddr) {
    set32(buf, aOff, newAddr)
    addrDelta = diff32(oldAddr, newAddr)
    const oldIpCsum = get16(buf, innerIpOff + 10)
    const newIpCsum = csumUpdate32(oldIpCsum, oldAddr, newAddr)
    set16(buf, innerIpOff + 10, newIpCsum)
    outer += addrDelta + diff16(oldIpCsum, newIpCsum)
  }
  if (innerL4Off >= 0) outer += rewriteQuotedL4(buf, end, innerL4Off, innerProto, which, addrDelta, newPort)
  if (outer !== 0) set16(buf, icmpOff + 2, csumApply(get16(buf, icmpOff + 2), outer))
}

/**
 * natIcmp4Inner for ICMPv6 errors: the quoted IPv6 packet's address (16 bytes at newBuf/newOff) and port / echo id.
 * The outer ICMPv6 checksum is updated for the quoted bytes that changed (the outer pseudo-header is natIpv6's job).
 */
export function natIcmp6Inner(
  buf: Uint8Array,
  icmpOff: number,
  icmpLen: number,
  innerIpOff: number,
  innerL4Off: number,
  innerProto: number,
  which: number,
  newBuf: Uint8Array,
  newOff: number,
  newPort: number,
): void {
  const end = icmpOff + icmpLen
  const aOff = innerIpOff + (which === DST ? 24 : 8)
  const addrDelta = ipv6AddrDelta(buf, aOff, newBuf, newOff)
  for (let i = 0; i < 16; i++) buf[aOff + i] = newBuf[newOff + i]!
  let outer = addrDelta
  if (innerL4Off >= 0) outer += rewriteQuotedL4(buf, end, innerL4Off, innerProto, which, addrDelta, newPort)
  set16(buf, icmpOff + 2, csumApply(get16(buf, icmpOff + 2), outer))
}

/**
 * Port / echo id and checksum of a quoted L4 header that may be cut short at `end`; returns the delta of every
 * byte it changed, for the enclosing ICMP checksum. `addrDelta` is the quoted pseudo-header's change.
 */
function rewriteQuotedL4(buf: Uint8Array, end: number, l4Off: number, proto: number, which: number, addrDelta: number, newPort: number): number {
  let outer = 0
  let portDelta = 0
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP) {
    const pOff = l4Off + (which === DST ? 2 : 0)
    if (newPort >= 0 && pOff + 2 <= end) {
      const oldPort = get16(buf, pOff)
      if (oldPort !== newPort) {
        set16(buf, pOff, newPort)
        portDelta = diff16(oldPort, newPort)
        outer += portDelta
      }
    }
    // SCTP's CRC covers the whole (cut) packet and cannot be fixed from a quote; it is left as quoted.
    if (proto === IPPROTO_SCTP) return outer
    const at = l4Off + (proto === IPPROTO_TCP ? 16 : 6)
    if (at + 2 <= end && addrDelta + portDelta !== 0) {
      const c = get16(buf, at)
      // A quoted checksum may be a partial sum or plain garbage; it is updated the same way, never validated.
      if (proto === IPPROTO_UDP && c === 0) return outer
      let n = csumApply(c, addrDelta + portDelta)
      if (proto === IPPROTO_UDP) n = udpFinish(n)
      set16(buf, at, n)
      outer += diff16(c, n)
    }
  } else if (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) {
    if (l4Off + 4 > end) return outer
    // ICMPv6 covers the quoted pseudo-header; ICMPv4 only its own bytes.
    let delta = proto === IPPROTO_ICMPV6 ? addrDelta : 0
    if (newPort >= 0 && l4Off + 6 <= end && isEcho(proto, buf[l4Off]!)) {
      const oldId = get16(buf, l4Off + 4)
      if (oldId !== newPort) {
        set16(buf, l4Off + 4, newPort)
        const d = diff16(oldId, newPort)
        delta += d
        outer += d
      }
    }
    if (delta !== 0) {
      const c = get16(buf, l4Off + 2)
      const n = csumApply(c, delta)
      set16(buf, l4Off + 2, n)
      outer += diff16(c, n)
    }
  }
  return outer
}

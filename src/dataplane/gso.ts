// Software segmentation and checksum completion for packets that must leave the offload path: a GSO super-packet
// (64 KB TCP, or UDP with USO) that crosses to another node inside VXLAN is cut here into wire-sized segments,
// the way the kernel's skb_segment would, with full checksums.
import { sum16, fold, pseudoHeaderSum4, pseudoHeaderSum6 } from '../wire/checksum'
import { IPPROTO_TCP, IPPROTO_UDP } from '../wire/proto'
import { Ipv4Field, ipv4Ihl, ipv4Version } from '../wire/ipv4'
import { IPV6_HEADER, Ipv6Field } from '../wire/ipv6'
import { TCP_CWR, TCP_FIN, TCP_PSH, TcpField, tcpDataOffset } from '../wire/tcp'
import { UDP_HEADER, UdpField } from '../wire/udp'

/** A UDP checksum that computes to 0 is sent as all ones (0 means "no checksum", RFC 768). */
const UDP_ZERO_CSUM = 0xffff

/** Fills in a NEEDS_CSUM (CHECKSUM_PARTIAL) checksum: the field holds the pseudo-header sum already. */
export function completeChecksum(buf: Buffer, pktOff: number, pktLen: number, csumStart: number, csumOffset: number, isUdp: boolean): void {
  const start = pktOff + csumStart
  const field = start + csumOffset
  if (field + 2 > pktOff + pktLen) return
  let c = ~fold(sum16(buf, start, pktOff + pktLen - start)) & 0xffff
  if (c === 0 && isUdp) c = UDP_ZERO_CSUM
  buf.writeUInt16BE(c, field)
}

/**
 * Cuts the TCP or UDP super-packet at `src[off, off+len)` into segments of `gsoSize` payload bytes, written one after
 * another into `out` from `outOff` with `gap` bytes free before each (room for an encapsulation header).
 * Records each segment's offset/length; returns the number of segments (0 when they would not fit).
 */
export function segment(
  src: Buffer,
  off: number,
  len: number,
  gsoSize: number,
  out: Buffer,
  outOff: number,
  gap: number,
  offsets: Uint32Array,
  lengths: Uint32Array,
  maxSegs: number,
): number {
  const v6 = ipv4Version(src, off) === 6
  const l3 = v6 ? IPV6_HEADER : ipv4Ihl(src, off)
  const proto = v6 ? src[off + Ipv6Field.NEXT_HEADER]! : src[off + Ipv4Field.PROTOCOL]!
  const l4 = off + l3
  const isTcp = proto === IPPROTO_TCP
  if (!isTcp && proto !== IPPROTO_UDP) return 0
  const l4h = isTcp ? tcpDataOffset(src, l4) : UDP_HEADER
  const hdr = l3 + l4h
  const payload = len - hdr
  if (payload <= 0 || gsoSize <= 0) return 0
  const n = Math.ceil(payload / gsoSize)
  if (n > maxSegs || outOff + n * (gap + hdr + gsoSize) > out.length) return 0
  const seq0 = isTcp ? src.readUInt32BE(l4 + TcpField.SEQ) : 0
  const id0 = v6 ? 0 : src.readUInt16BE(off + Ipv4Field.ID)
  const flags0 = isTcp ? src[l4 + TcpField.FLAGS]! : 0
  let o = outOff
  for (let i = 0; i < n; i++) {
    const chunk = Math.min(gsoSize, payload - i * gsoSize)
    o += gap
    src.copy(out, o, off, off + hdr)
    src.copy(out, o + hdr, off + hdr + i * gsoSize, off + hdr + i * gsoSize + chunk)
    const segLen = hdr + chunk
    const s4 = o + l3
    if (v6) out.writeUInt16BE(segLen - IPV6_HEADER, o + Ipv6Field.PAYLOAD_LENGTH)
    else {
      out.writeUInt16BE(segLen, o + Ipv4Field.TOTAL_LENGTH)
      out.writeUInt16BE((id0 + i) & 0xffff, o + Ipv4Field.ID)
      out.writeUInt16BE(0, o + Ipv4Field.CHECKSUM)
      out.writeUInt16BE(~fold(sum16(out, o, l3)) & 0xffff, o + Ipv4Field.CHECKSUM)
    }
    const l4len = segLen - l3
    if (isTcp) {
      out.writeUInt32BE((seq0 + i * gsoSize) >>> 0, s4 + TcpField.SEQ)
      let f = flags0
      if (i !== n - 1) f &= ~(TCP_FIN | TCP_PSH)
      if (i !== 0) f &= ~TCP_CWR
      out[s4 + TcpField.FLAGS] = f
      out.writeUInt16BE(0, s4 + TcpField.CHECKSUM)
    } else {
      out.writeUInt16BE(l4len, s4 + UdpField.LENGTH)
      out.writeUInt16BE(0, s4 + UdpField.CHECKSUM)
    }
    const pseudo = v6
      ? pseudoHeaderSum6(out, o + Ipv6Field.SRC, o + Ipv6Field.DST, proto, l4len)
      : pseudoHeaderSum4(out.readUInt32BE(o + Ipv4Field.SRC), out.readUInt32BE(o + Ipv4Field.DST), proto, l4len)
    let c = ~fold(sum16(out, s4, l4len, pseudo)) & 0xffff
    if (c === 0 && !isTcp) c = UDP_ZERO_CSUM
    out.writeUInt16BE(c, s4 + (isTcp ? TcpField.CHECKSUM : UdpField.CHECKSUM))
    offsets[i] = o
    lengths[i] = segLen
    o += segLen
  }
  return n
}

// Software segmentation and checksum completion for packets that must leave the offload path: a GSO super-packet
// (64 KB TCP, or UDP with USO) that crosses to another node inside VXLAN is cut here into wire-sized segments,
// the way the kernel's skb_segment would, with full checksums.
import { sum16, fold, pseudoHeaderSum4, pseudoHeaderSum6 } from '../wire/checksum'

const TCP_FIN = 0x01, TCP_PSH = 0x08, TCP_CWR = 0x80

/** Fills in a NEEDS_CSUM (CHECKSUM_PARTIAL) checksum: the field holds the pseudo-header sum already. */
export function completeChecksum(buf: Buffer, pktOff: number, pktLen: number, csumStart: number, csumOffset: number, isUdp: boolean): void {
  const start = pktOff + csumStart
  const field = start + csumOffset
  if (field + 2 > pktOff + pktLen) return
  let c = (~fold(sum16(buf, start, pktOff + pktLen - start))) & 0xffff
  if (c === 0 && isUdp) c = 0xffff
  buf.writeUInt16BE(c, field)
}

/**
 * Cuts the TCP or UDP super-packet at `src[off, off+len)` into segments of `gsoSize` payload bytes, written one after
 * another into `out` from `outOff` with `gap` bytes free before each (room for an encapsulation header).
 * Records each segment's offset/length; returns the number of segments (0 when they would not fit).
 */
export function segment(src: Buffer, off: number, len: number, gsoSize: number, out: Buffer, outOff: number, gap: number,
  offsets: Uint32Array, lengths: Uint32Array, maxSegs: number): number {
  const v6 = (src[off]! >> 4) === 6
  const l3 = v6 ? 40 : (src[off]! & 0x0f) * 4
  const proto = v6 ? src[off + 6]! : src[off + 9]!
  const l4 = off + l3
  const isTcp = proto === 6
  if (!isTcp && proto !== 17) return 0
  const l4h = isTcp ? (src[l4 + 12]! >> 4) * 4 : 8
  const hdr = l3 + l4h
  const payload = len - hdr
  if (payload <= 0 || gsoSize <= 0) return 0
  const n = Math.ceil(payload / gsoSize)
  if (n > maxSegs || outOff + n * (gap + hdr + gsoSize) > out.length) return 0
  const seq0 = isTcp ? src.readUInt32BE(l4 + 4) : 0
  const id0 = v6 ? 0 : src.readUInt16BE(off + 4)
  const flags0 = isTcp ? src[l4 + 13]! : 0
  let o = outOff
  for (let i = 0; i < n; i++) {
    const chunk = Math.min(gsoSize, payload - i * gsoSize)
    o += gap
    src.copy(out, o, off, off + hdr)
    src.copy(out, o + hdr, off + hdr + i * gsoSize, off + hdr + i * gsoSize + chunk)
    const segLen = hdr + chunk
    const s4 = o + l3
    if (v6) out.writeUInt16BE(segLen - 40, o + 4)
    else {
      out.writeUInt16BE(segLen, o + 2)
      out.writeUInt16BE((id0 + i) & 0xffff, o + 4)
      out.writeUInt16BE(0, o + 10)
      out.writeUInt16BE((~fold(sum16(out, o, l3))) & 0xffff, o + 10)
    }
    const l4len = segLen - l3
    let pseudo: number
    if (isTcp) {
      out.writeUInt32BE((seq0 + i * gsoSize) >>> 0, s4 + 4)
      let f = flags0
      if (i !== n - 1) f &= ~(TCP_FIN | TCP_PSH)
      if (i !== 0) f &= ~TCP_CWR
      out[s4 + 13] = f
      out.writeUInt16BE(0, s4 + 16)
    } else {
      out.writeUInt16BE(l4len, s4 + 4)
      out.writeUInt16BE(0, s4 + 6)
    }
    pseudo = v6 ? pseudoHeaderSum6(out, o + 8, o + 24, proto, l4len) : pseudoHeaderSum4(out.readUInt32BE(o + 12), out.readUInt32BE(o + 16), proto, l4len)
    let c = (~fold(sum16(out, s4, l4len, pseudo))) & 0xffff
    if (c === 0 && !isTcp) c = 0xffff
    out.writeUInt16BE(c, s4 + (isTcp ? 16 : 6))
    offsets[i] = o
    lengths[i] = segLen
    o += segLen
  }
  return n
}

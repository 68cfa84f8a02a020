// UDP write coalescing: consecutive datagrams of one flow, of one size, forwarded in one batch, go back to the kernel
// as one USO super-packet (virtio gso_type UDP_L4): one write() and one pass through routing for the run instead of
// one per datagram. The kernel cuts it back into the same datagrams where it must (udp_rcv_segment at a receiving
// socket without UDP_GRO, software GSO before a NIC without USO), as it does for a local sender's UDP_SEGMENT.
// This is the write side of the batching the kernel's UDP GRO does on receive; it is what lets small-packet UDP
// through a TUN cost less than one full stack traversal per datagram.
//
// In place and without copies of headers: each later datagram's payload is moved to the end of the run's head in the
// batch buffer (it always lies after it, so the move only goes down), and the head's headers are fixed up when the
// run closes. Only packets next to each other in the batch are merged, so nothing another output still points at
// is overwritten. A datagram whose checksum nobody vouched for (no NEEDS_CSUM, no DATA_VALID) is not merged: the
// super-packet's checksums are finished by the kernel, which would otherwise hide a bad one from the receiver.
import { GSO_TYPE_MASK, GsoType, VNET_HDR_LEN, VnetFlags, VnetOff } from '../device/vnet'
import { fold, checksum, pseudoHeaderSum4, pseudoHeaderSum6 } from '../wire/checksum'
import { IPPROTO_UDP } from '../wire/proto'
import { IPV4_FLAG_DF, IPV4_MIN_HEADER, Ipv4Field } from '../wire/ipv4'
import { IPV6_HEADER, Ipv6Field } from '../wire/ipv6'
import { UDP_HEADER, UdpField } from '../wire/udp'
import type { PacketInfo } from '../wire/packet'

/** Datagrams in one super-packet: the kernel takes up to UDP_MAX_SEGMENTS (64 on older kernels, 128 on newer). */
export const COALESCE_MAX_SEGS = 64
/** An IPv4 total length / IPv6 payload length is 16 bits. */
const MAX_IP_LEN = 0xffff
/** IPv4 header bytes that must match between datagrams of a run: TOS, TTL, protocol, addresses (fragment bits apart). */
const V4_SAME: readonly (readonly [number, number])[] = [
  [Ipv4Field.TOS, 1],
  [Ipv4Field.TTL, 2],
  [Ipv4Field.SRC, 8],
]
/** IPv6: version/traffic class/flow label, next header + hop limit, addresses. */
const V6_SAME: readonly (readonly [number, number])[] = [
  [Ipv6Field.VER_TC_FLOW, 4],
  [Ipv6Field.NEXT_HEADER, 34],
]

export class UdpCoalescer {
  /** index in the output list of the run's head, -1: no run open */
  private head = -1
  private headOff = 0
  /** IP + UDP header bytes of the run */
  private hdr = 0
  /** payload bytes of every datagram of the run but maybe the last */
  private seg = 0
  private segs = 0
  private v6 = false
  /** batch index of the run's last datagram: only the next one may join */
  private lastIdx = -2
  /** datagrams merged into a run's head (each one write() saved) */
  merged = 0
  /** super-packets made */
  runs = 0

  /**
   * Puts the forwarded packet at `off`/`len` (batch index `idx`) into the output list at `n` or into the open run;
   * returns the new list length. `flags`/`gsoType` are its virtio header's (vnet: the device has one).
   */
  add(
    buf: Buffer,
    off: number,
    len: number,
    info: PacketInfo,
    flags: number,
    gsoType: number,
    idx: number,
    offsets: Uint32Array,
    lengths: Uint32Array,
    n: number,
  ): number {
    const ok = this.eligible(buf, off, len, info, flags, gsoType)
    if (ok && this.head >= 0 && idx === this.lastIdx + 1 && this.joins(buf, off, len)) {
      const h = this.head
      const end = offsets[h]! + lengths[h]!
      const pay = len - this.hdr
      buf.copyWithin(end, off + this.hdr, off + len)
      lengths[h] = lengths[h]! + pay
      this.segs++
      this.merged++
      this.lastIdx = idx
      // a shorter datagram can only be the last one; the limits close the run before they are crossed
      if (pay < this.seg || this.segs >= COALESCE_MAX_SEGS || lengths[h]! + this.seg > MAX_IP_LEN) this.close(buf, offsets, lengths)
      return n
    }
    this.close(buf, offsets, lengths)
    offsets[n] = off
    lengths[n] = len
    if (ok) {
      this.head = n
      this.headOff = off
      this.v6 = info.family === 6
      this.hdr = info.l4Off - off + UDP_HEADER
      this.seg = len - this.hdr
      this.segs = 1
      this.lastIdx = idx
    }
    return n + 1
  }

  /** Ends the open run (call before writing the list): the head's headers describe the whole super-packet. */
  close(buf: Buffer, _offsets: Uint32Array, lengths: Uint32Array): void {
    const h = this.head
    if (h < 0) return
    this.head = -1
    this.lastIdx = -2
    if (this.segs < 2) return
    this.runs++
    const off = this.headOff
    const total = lengths[h]!
    const l3 = this.hdr - UDP_HEADER
    const udpLen = total - l3
    let pseudo: number
    if (this.v6) {
      buf.writeUInt16BE(total - IPV6_HEADER, off + Ipv6Field.PAYLOAD_LENGTH)
      pseudo = pseudoHeaderSum6(buf, off + Ipv6Field.SRC, off + Ipv6Field.DST, IPPROTO_UDP, udpLen)
    } else {
      buf.writeUInt16BE(total, off + Ipv4Field.TOTAL_LENGTH)
      buf.writeUInt16BE(0, off + Ipv4Field.CHECKSUM)
      buf.writeUInt16BE(checksum(buf, off, l3), off + Ipv4Field.CHECKSUM)
      pseudo = pseudoHeaderSum4(buf.readUInt32BE(off + Ipv4Field.SRC), buf.readUInt32BE(off + Ipv4Field.DST), IPPROTO_UDP, udpLen)
    }
    const u = off + l3
    buf.writeUInt16BE(udpLen, u + UdpField.LENGTH)
    // CHECKSUM_PARTIAL: the field holds the pseudo-header sum, folded and not inverted; the kernel finishes each segment
    buf.writeUInt16BE(fold(pseudo), u + UdpField.CHECKSUM)
    const v = off - VNET_HDR_LEN
    buf[v + VnetOff.FLAGS] = VnetFlags.NEEDS_CSUM
    buf[v + VnetOff.GSO_TYPE] = GsoType.UDP_L4
    buf.writeUInt16LE(this.hdr, v + VnetOff.HDR_LEN)
    buf.writeUInt16LE(this.seg, v + VnetOff.GSO_SIZE)
    buf.writeUInt16LE(l3, v + VnetOff.CSUM_START)
    buf.writeUInt16LE(UdpField.CHECKSUM, v + VnetOff.CSUM_OFFSET)
  }

  /** A plain UDP datagram (no IP options or extension headers, no fragment, not GSO) whose checksum is vouched for. */
  private eligible(buf: Buffer, off: number, len: number, info: PacketInfo, flags: number, gsoType: number): boolean {
    if (info.l4Proto !== IPPROTO_UDP || info.isFragment || (gsoType & GSO_TYPE_MASK) !== GsoType.NONE) return false
    const l3 = info.l4Off - off
    if (l3 !== (info.family === 6 ? IPV6_HEADER : IPV4_MIN_HEADER)) return false
    if (len <= l3 + UDP_HEADER || buf.readUInt16BE(info.l4Off + UdpField.LENGTH) !== len - l3) return false
    if ((flags & VnetFlags.NEEDS_CSUM) !== 0) {
      const v = off - VNET_HDR_LEN
      return buf.readUInt16LE(v + VnetOff.CSUM_START) === l3 && buf.readUInt16LE(v + VnetOff.CSUM_OFFSET) === UdpField.CHECKSUM
    }
    return (flags & VnetFlags.DATA_VALID) !== 0
  }

  /** Same flow, same header fields, and no longer than the run's datagrams. */
  private joins(buf: Buffer, off: number, len: number): boolean {
    const hd = this.headOff
    if (len - this.hdr > this.seg || buf.readUInt32BE(off + this.hdr - UDP_HEADER) !== buf.readUInt32BE(hd + this.hdr - UDP_HEADER)) return false
    const same = this.v6 ? V6_SAME : V4_SAME
    for (let r = 0; r < same.length; r++) {
      const [at, n] = same[r]!
      for (let i = 0; i < n; i++) if (buf[off + at + i] !== buf[hd + at + i]) return false
    }
    if (!this.v6 && (buf.readUInt16BE(off + Ipv4Field.FLAGS_FRAG) & IPV4_FLAG_DF) !== (buf.readUInt16BE(hd + Ipv4Field.FLAGS_FRAG) & IPV4_FLAG_DF)) return false
    return true
  }
}

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
import { GSO_TYPE_MASK, GsoType, VnetFlags, VnetOff } from '../device/vnet'
import { VNET_HDR_LEN } from '../device/device'
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
    finishUso(buf, this.headOff, this.hdr - UDP_HEADER, this.seg, lengths[h]!, this.v6)
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

/**
 * Makes the UDP datagram at `off` (`l3` bytes of IP header, `total` bytes in all: several datagrams' payloads of
 * `seg` bytes each, the last maybe shorter) one USO super-packet: IP and UDP lengths of the whole, the UDP checksum
 * field holding the pseudo-header sum (CHECKSUM_PARTIAL: folded, not inverted; the kernel finishes each segment) and
 * the virtio header before it saying UDP_L4 with gso_size `seg`.
 */
function finishUso(buf: Buffer, off: number, l3: number, seg: number, total: number, v6: boolean): void {
  const udpLen = total - l3
  let pseudo: number
  if (v6) {
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
  buf.writeUInt16BE(fold(pseudo), u + UdpField.CHECKSUM)
  const v = off - VNET_HDR_LEN
  buf[v + VnetOff.FLAGS] = VnetFlags.NEEDS_CSUM
  buf[v + VnetOff.GSO_TYPE] = GsoType.UDP_L4
  buf.writeUInt16LE(l3 + UDP_HEADER, v + VnetOff.HDR_LEN)
  buf.writeUInt16LE(seg, v + VnetOff.GSO_SIZE)
  buf.writeUInt16LE(l3, v + VnetOff.CSUM_START)
  buf.writeUInt16LE(UdpField.CHECKSUM, v + VnetOff.CSUM_OFFSET)
}

/** Open runs ReplyRuns keeps at once (a linear search per reply). */
const REPLY_OPEN_RUNS = 16
/** Bytes of the reply area: every reply of a batch is copied here (a full area is written out and reused). */
const REPLY_AREA = 4 << 20
/** Most replies one area holds. */
const REPLY_MAX = 8192

/**
 * Replies tundra builds itself (cluster DNS answers: IPv4 + UDP, full checksums), grouped per client flow and size
 * into USO super-packets: a client with many queries in flight gets its answers in one write instead of one each.
 * Unlike UdpCoalescer the replies of one batch need not be neighbours: each run gets room for COALESCE_MAX_SEGS
 * replies in the area when it opens, and a reply for an open run is appended there (only its payload is copied).
 * Answers to different flows may leave in another order than they were made; each flow keeps its order.
 */
export class ReplyRuns {
  readonly buf = Buffer.alloc(REPLY_AREA)
  readonly offsets = new Uint32Array(REPLY_MAX)
  readonly lengths = new Uint32Array(REPLY_MAX)
  count = 0
  /** replies merged into a run (one write each saved) */
  merged = 0
  runs = 0
  private used = 0
  // open runs, REPLY_OPEN_RUNS slots: the list index of the head (-1: free), the flow and size, segments so far and most
  private readonly head = new Int32Array(REPLY_OPEN_RUNS).fill(-1)
  private readonly dst = new Uint32Array(REPLY_OPEN_RUNS)
  private readonly ports = new Uint32Array(REPLY_OPEN_RUNS)
  private readonly size = new Uint32Array(REPLY_OPEN_RUNS)
  private readonly segs = new Uint32Array(REPLY_OPEN_RUNS)
  private readonly maxSegs = new Uint32Array(REPLY_OPEN_RUNS)
  private next = 0

  /** `vnet`: the device takes virtio headers (else every reply is written as it is). */
  constructor(private readonly vnet: boolean) {}

  /**
   * Takes the IPv4/UDP reply at src[off, off+len) (no IP options; checksums complete); false when the area is full
   * (write it, reset, add again).
   */
  add(src: Buffer, off: number, len: number): boolean {
    const dst = src.readUInt32BE(off + Ipv4Field.DST)
    const ports = src.readUInt32BE(off + IPV4_MIN_HEADER)
    const pay = len - IPV4_MIN_HEADER - UDP_HEADER
    if (this.vnet) {
      for (let r = 0; r < REPLY_OPEN_RUNS; r++) {
        const h = this.head[r]!
        if (h < 0 || this.dst[r] !== dst || this.ports[r] !== ports || pay > this.size[r]!) continue
        const at = this.offsets[h]! + this.lengths[h]!
        src.copy(this.buf, at, off + IPV4_MIN_HEADER + UDP_HEADER, off + len)
        this.lengths[h] = this.lengths[h]! + pay
        this.merged++
        if (++this.segs[r]! >= this.maxSegs[r]! || pay < this.size[r]!) this.closeRun(r)
        return true
      }
    }
    const gap = this.vnet ? VNET_HDR_LEN : 0
    // room for a whole run behind a reply that may start one: as many payloads as the kernel and 64 KB allow
    const maxSegs = this.vnet && pay > 0 ? Math.min(COALESCE_MAX_SEGS, Math.floor((MAX_IP_LEN - IPV4_MIN_HEADER - UDP_HEADER) / pay)) : 1
    const room = maxSegs >= 2 ? IPV4_MIN_HEADER + UDP_HEADER + pay * maxSegs : len
    const at = (this.used + gap + 7) & ~7
    if (this.count >= REPLY_MAX || at + room > this.buf.length) return false
    if (gap > 0) this.buf.fill(0, at - gap, at)
    src.copy(this.buf, at, off, off + len)
    this.offsets[this.count] = at
    this.lengths[this.count] = len
    this.used = at + room
    if (maxSegs >= 2) {
      // a new run in the next slot round-robin (the run there, if any, is closed: it keeps its place in the list)
      const r = this.next
      this.next = (r + 1) % REPLY_OPEN_RUNS
      this.closeRun(r)
      this.head[r] = this.count
      this.dst[r] = dst
      this.ports[r] = ports
      this.size[r] = pay
      this.segs[r] = 1
      this.maxSegs[r] = maxSegs
    }
    this.count++
    return true
  }

  /** Closes every open run: the list is ready to write. */
  finish(): void {
    for (let r = 0; r < REPLY_OPEN_RUNS; r++) this.closeRun(r)
  }

  reset(): void {
    this.finish()
    this.count = 0
    this.used = 0
  }

  private closeRun(r: number): void {
    const h = this.head[r]!
    if (h < 0) return
    this.head[r] = -1
    if (this.segs[r]! < 2) return
    this.runs++
    finishUso(this.buf, this.offsets[h]!, IPV4_MIN_HEADER, this.size[r]!, this.lengths[h]!, false)
  }
}

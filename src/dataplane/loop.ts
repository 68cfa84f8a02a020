// The hot loop: one batch of packets from the TUN in, decisions made in place, batches written back.
// Per packet: validate once -> VXLAN decap -> cluster DNS (answered in the path) -> Service NAT -> route
// (local: back to the kernel through the TUN; another node's pod CIDR: VXLAN). Nothing here allocates per packet.
import type { Batch, Device } from '../device/device'
import { GSO_TYPE_MASK, GsoType, VNET_HDR_LEN, VnetFlags, VnetOff } from '../device/vnet'
import { PacketInfo, parsePacket, DROP_NAMES, PASS } from '../wire/packet'
import { checksum, pseudoHeaderSum4 } from '../wire/checksum'
import { writeIpv4Header } from '../wire/build'
import { IPPROTO_UDP } from '../wire/proto'
import { IPV4_FLAG_DF, IPV4_MIN_HEADER, Ipv4Field } from '../wire/ipv4'
import { UDP_HEADER, UdpField } from '../wire/udp'
import { encapsulate, innerOffset, VXLAN_OVERHEAD, VXLAN_PORT } from './vxlan'
import { completeChecksum, segment } from './gso'
import { CAPTURE_VERDICTS, type Capture } from './capture'
import { NatAction } from '../nat/verdict'
import { monoSeconds } from '../nat/clock'

export interface Peer { readonly net: number; readonly mask: number; readonly ip: number; readonly mac: Buffer }

export interface PacketNat {
  /** returns one of the Action codes; rewrites in place */
  process(buf: Buffer, off: number, len: number, info: PacketInfo, partial: boolean, now: number): number
  /** writes the ICMP error for a REJECT into out at outOff; returns its length (0 = none) */
  writeReject(buf: Buffer, off: number, len: number, info: PacketInfo, out: Buffer, outOff: number): number
}

export interface PacketDns {
  answerInPlace(buf: Buffer, off: number, len: number, out: Buffer, outOff: number, outMax: number, transport: number): number
  forward(query: Buffer, cb: (answer: Buffer) => void): void
}

/** The NAT step's verdicts, defined once in nat/verdict.ts. */
const Action = NatAction

export interface LoopOptions {
  readonly nodeIp: number
  readonly dnsIp: number
  readonly dnsPort: number
  readonly vni: number
  readonly localMac: Buffer
  readonly peers: readonly Peer[]
}

class Counters {
  packets = 0
  bytes = 0
  batches = 0
  forwarded = 0
  natted = 0
  replied = 0
  rejected = 0
  dropped = 0
  dnsAnswered = 0
  dnsForwarded = 0
  vxlanIn = 0
  vxlanOut = 0
  readonly drops = new Float64Array(64)
}

const TX_SIZE = 8 << 20
const MAX_OUT = 8192
/** Segments one GSO super-packet may be cut into for VXLAN, and the scratch buffer they are cut into. */
const MAX_SEGS = 2048
const SEG_SIZE = 256 << 10
/** Room kept in tx for one ICMP error (an ICMPv6 error is at most the 1280-byte minimum MTU). */
const REJECT_ROOM = 1600
/** IPv4 + UDP headers of a reply tundra builds (no IP options). */
const UDP4_HEADERS = IPV4_MIN_HEADER + UDP_HEADER
/** Largest DNS answer written in the packet path: the room kept for it in tx. */
const DNS_MAX_ANSWER = 4096
/** A UDP checksum that computes to 0 is sent as all ones (0 means "no checksum", RFC 768). */
const UDP_ZERO_CSUM = 0xffff

export class Dataplane {
  readonly counters = new Counters()
  /** set by `tundra capture`; null (the usual case) costs one check per packet */
  capture: Capture | null = null
  private readonly info = new PacketInfo()
  private readonly tx = Buffer.alloc(TX_SIZE)
  private txUsed = 0
  private readonly txOffsets = new Uint32Array(MAX_OUT)
  private readonly txLengths = new Uint32Array(MAX_OUT)
  private txCount = 0
  private readonly inOffsets = new Uint32Array(MAX_OUT)
  private readonly inLengths = new Uint32Array(MAX_OUT)
  private readonly segOffsets = new Uint32Array(MAX_SEGS)
  private readonly segLengths = new Uint32Array(MAX_SEGS)
  private readonly seg = Buffer.alloc(SEG_SIZE)
  private now = monoSeconds()
  private readonly vnet: boolean
  private readonly gap: number

  constructor(private readonly dev: Device, private nat: PacketNat, private dns: PacketDns, private opts: LoopOptions) {
    this.vnet = dev.vnetHdr
    this.gap = this.vnet ? VNET_HDR_LEN : 0
  }

  setNat(nat: PacketNat): void { this.nat = nat }

  /** Sends the TCP resets a table swap queued (connections whose endpoint went away). Call between batches. */
  sendResets(src: { pendingResets: number; writeResets(out: Uint8Array, outOff: number, offsets: Uint32Array, lengths: Uint32Array, max: number, gap?: number): number }): void {
    while (src.pendingResets > 0) {
      const n = src.writeResets(this.tx, 0, this.txOffsets, this.txLengths, MAX_OUT, this.gap)
      if (n === 0) break
      this.dev.writeBatch(this.tx, this.txOffsets, this.txLengths, n)
    }
  }
  setPeers(opts: LoopOptions): void { this.opts = opts }
  get options(): LoopOptions { return this.opts }

  readonly onBatch = (batch: Batch): void => {
    const c = this.counters
    c.batches++
    this.now = monoSeconds()
    this.txUsed = 0
    this.txCount = 0
    let nIn = 0
    const { buf, offsets, lengths } = batch
    const info = this.info
    const opts = this.opts
    for (let i = 0; i < batch.count; i++) {
      let off = offsets[i]!
      let len = lengths[i]!
      c.packets++
      c.bytes += len
      let flags = 0, gsoType = 0
      if (this.vnet) { flags = buf[off - VNET_HDR_LEN + VnetOff.FLAGS]!; gsoType = buf[off - VNET_HDR_LEN + VnetOff.GSO_TYPE]! & GSO_TYPE_MASK }
      let verdict = parsePacket(buf, off, len, info, gsoType !== GsoType.NONE)
      if (verdict !== PASS) { c.dropped++; c.drops[verdict]!++; continue }
      len = info.l3Len

      // VXLAN from another node: continue with the inner packet as if a local pod had sent it.
      if (info.family === 4 && info.l4Proto === IPPROTO_UDP && info.dst === opts.nodeIp && info.dstPort === VXLAN_PORT && !info.isFragment) {
        const inner = innerOffset(buf, off, len, info.l4Off, opts.vni)
        if (inner >= 0) {
          // A partial checksum (NEEDS_CSUM) on the outer packet belongs to the inner L4 header when it starts past
          // the encapsulation: a kernel vxlan peer whose frames reach us without crossing a NIC (veth, bridge)
          // leaves the inner TCP/UDP checksum to offload. Keep it pending, relative to the inner packet.
          const shift = inner - off
          const h = off - VNET_HDR_LEN
          const csumStart = this.vnet && (flags & VnetFlags.NEEDS_CSUM) !== 0 ? buf.readUInt16LE(h + VnetOff.CSUM_START) : 0
          const csumOffset = this.vnet ? buf.readUInt16LE(h + VnetOff.CSUM_OFFSET) : 0
          len = off + len - inner
          off = inner
          if (this.vnet) buf.fill(0, off - VNET_HDR_LEN, off)
          flags = 0; gsoType = GsoType.NONE
          if (csumStart >= shift + IPV4_MIN_HEADER) {
            const ih = off - VNET_HDR_LEN
            buf[ih + VnetOff.FLAGS] = VnetFlags.NEEDS_CSUM
            buf.writeUInt16LE(csumStart - shift, ih + VnetOff.CSUM_START)
            buf.writeUInt16LE(csumOffset, ih + VnetOff.CSUM_OFFSET)
            flags = VnetFlags.NEEDS_CSUM
          }
          verdict = parsePacket(buf, off, len, info, false)
          if (verdict !== PASS) { c.dropped++; c.drops[verdict]!++; continue }
          len = info.l3Len
          c.vxlanIn++
        }
      }

      // Cluster DNS over UDP, answered here: no conntrack entry, no extra hop.
      if (info.family === 4 && info.l4Proto === IPPROTO_UDP && info.dst === opts.dnsIp && info.dstPort === opts.dnsPort && !info.isFragment) {
        this.answerDns(buf, info)
        continue
      }

      const cap = this.capture
      const capThis = cap !== null && info.family === 4 && cap.wants(info.src, info.dst)
      if (capThis && cap.opts.pre) cap.record(buf, off, len, 'pre-nat')
      const act = this.nat.process(buf, off, len, info, (flags & VnetFlags.NEEDS_CSUM) !== 0, this.now)
      if (capThis && cap.opts.post) cap.record(buf, off, len, `post-nat ${CAPTURE_VERDICTS[act] ?? act}`)
      if (act === Action.DROP) { c.dropped++; continue }
      if (act === Action.REJECT) {
        const o = this.txUsed + this.gap
        const n = o + REJECT_ROOM <= TX_SIZE ? this.nat.writeReject(buf, off, len, info, this.tx, o) : 0
        if (n > 0) this.pushTx(o, n)
        c.rejected++
        continue
      }
      if (act === Action.REPLY) { c.replied++ } else if (act === Action.FORWARD) c.natted++
      // Route by the (possibly rewritten) destination.
      if (info.family === 4) {
        const dst = buf.readUInt32BE(off + Ipv4Field.DST)
        const peer = this.peerFor(dst)
        if (peer !== null) { this.toPeer(buf, off, len, peer, flags, gsoType); continue }
      }
      if (nIn < MAX_OUT) { this.inOffsets[nIn] = off; this.inLengths[nIn] = len; nIn++ }
      c.forwarded++
    }
    if (nIn > 0) this.dev.writeBatch(buf, this.inOffsets, this.inLengths, nIn)
    if (this.txCount > 0) this.dev.writeBatch(this.tx, this.txOffsets, this.txLengths, this.txCount)
  }

  private peerFor(dst: number): Peer | null {
    const peers = this.opts.peers
    for (let p = 0; p < peers.length; p++) {
      const peer = peers[p]!
      if (((dst & peer.mask) >>> 0) === peer.net) return peer
    }
    return null
  }

  private pushTx(off: number, len: number): void {
    if (this.txCount >= MAX_OUT) return
    if (this.vnet) this.tx.fill(0, off - VNET_HDR_LEN, off)
    this.txOffsets[this.txCount] = off
    this.txLengths[this.txCount] = len
    this.txCount++
    this.txUsed = off + len
  }

  /** Encapsulates for another node; super-packets are segmented first since the outer packet must fit the wire. */
  private toPeer(buf: Buffer, off: number, len: number, peer: Peer, flags: number, gsoType: number): void {
    const c = this.counters
    const opts = this.opts
    const entropy = buf.readUInt16BE(off + Ipv4Field.SRC) ^ buf.readUInt16BE(off + Ipv4Field.SRC + 2) ^
      buf.readUInt16BE(off + Ipv4Field.DST + 2) ^ (this.info.srcPort ^ this.info.dstPort)
    if (gsoType !== GsoType.NONE) {
      const h = off - VNET_HDR_LEN
      const gsoSize = buf.readUInt16LE(h + VnetOff.GSO_SIZE)
      const n = segment(buf, off, len, gsoSize, this.seg, 0, 0, this.segOffsets, this.segLengths, this.segOffsets.length)
      for (let s = 0; s < n; s++) {
        const o = this.txUsed + this.gap
        const sl = this.segLengths[s]!
        if (o + sl + VXLAN_OVERHEAD > TX_SIZE) { c.dropped++; break }
        const w = encapsulate(this.tx, o, this.seg, this.segOffsets[s]!, sl, opts.nodeIp, peer.ip, opts.vni, opts.localMac, peer.mac, entropy)
        this.pushTx(o, w)
        c.vxlanOut++
      }
      if (n === 0) c.dropped++
      return
    }
    if ((flags & VnetFlags.NEEDS_CSUM) !== 0) {
      const h = off - VNET_HDR_LEN
      completeChecksum(buf, off, len, buf.readUInt16LE(h + VnetOff.CSUM_START), buf.readUInt16LE(h + VnetOff.CSUM_OFFSET), this.info.l4Proto === IPPROTO_UDP)
    }
    const o = this.txUsed + this.gap
    if (o + len + VXLAN_OVERHEAD > TX_SIZE) { c.dropped++; return }
    const w = encapsulate(this.tx, o, buf, off, len, opts.nodeIp, peer.ip, opts.vni, opts.localMac, peer.mac, entropy)
    this.pushTx(o, w)
    c.vxlanOut++
  }

  /** Writes the DNS answer as a UDP reply from the DNS service address; upstream names complete asynchronously. */
  private answerDns(buf: Buffer, info: PacketInfo): void {
    const c = this.counters
    const q = info.l4Off + UDP_HEADER
    const qlen = info.l4Len - UDP_HEADER
    const o = this.txUsed + this.gap
    if (o + UDP4_HEADERS + DNS_MAX_ANSWER > TX_SIZE) { c.dropped++; return }
    const n = this.dns.answerInPlace(buf, q, qlen, this.tx, o + UDP4_HEADERS, DNS_MAX_ANSWER, 0)
    if (n > 0) {
      writeUdpReply(this.tx, o, info.dst, info.src, info.dstPort, info.srcPort, n)
      this.pushTx(o, UDP4_HEADERS + n)
      c.dnsAnswered++
      return
    }
    if (n === 0) { c.dropped++; return }
    // -1: not ours, ask upstream; the reply is written on its own when it arrives.
    c.dnsForwarded++
    const src = info.src, dst = info.dst, sport = info.srcPort, dport = info.dstPort
    this.dns.forward(Buffer.from(buf.subarray(q, q + qlen)), answer => {
      const pkt = Buffer.alloc(this.gap + UDP4_HEADERS + answer.length)
      answer.copy(pkt, this.gap + UDP4_HEADERS)
      writeUdpReply(pkt, this.gap, dst, src, dport, sport, answer.length)
      const offs = new Uint32Array([this.gap]), lens = new Uint32Array([UDP4_HEADERS + answer.length])
      this.dev.writeBatch(pkt, offs, lens, 1)
    })
  }
}

let replyId = 0

/** IPv4 + UDP headers in front of `payloadLen` bytes already at off + UDP4_HEADERS, full checksums (tundra built it). */
function writeUdpReply(out: Buffer, off: number, src: number, dst: number, sport: number, dport: number, payloadLen: number): void {
  replyId = (replyId + 1) & 0xffff
  writeIpv4Header(out, off, 0, UDP4_HEADERS + payloadLen, replyId, IPV4_FLAG_DF, IPPROTO_UDP, src, dst)
  const u = off + IPV4_MIN_HEADER
  const udpLen = UDP_HEADER + payloadLen
  out.writeUInt16BE(sport, u + UdpField.SRC_PORT)
  out.writeUInt16BE(dport, u + UdpField.DST_PORT)
  out.writeUInt16BE(udpLen, u + UdpField.LENGTH)
  out.writeUInt16BE(0, u + UdpField.CHECKSUM)
  let cs = checksum(out, u, udpLen, pseudoHeaderSum4(src, dst, IPPROTO_UDP, udpLen))
  if (cs === 0) cs = UDP_ZERO_CSUM
  out.writeUInt16BE(cs, u + UdpField.CHECKSUM)
}

export function dropNames(counters: Counters): Record<string, number> {
  const out: Record<string, number> = {}
  counters.drops.forEach((v, i) => { if (v > 0) out[DROP_NAMES[i] ?? `reason${i}`] = v })
  return out
}

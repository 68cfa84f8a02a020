// The hot loop: one batch of packets from the TUN in, decisions made in place, batches written back.
// Per packet: validate once -> VXLAN decap (configured peers only) -> source check -> cluster DNS (answered in the
// path) -> TTL -> Service NAT -> route (local: back to the kernel through the TUN; another node's pod CIDR: VXLAN).
// Pods are untrusted: a source no pod of this node may use, VXLAN from a non-peer, an expired TTL and an untranslated
// service address are counted drops (LoopDrop), never a bounce between the kernel and tundra; the ICMP errors tundra
// sends are rate-limited like the kernel's (icmp_msgs_per_sec / icmp_msgs_burst). Nothing here allocates per packet.
import type { Batch, Device } from '../device/device'
import { GSO_TYPE_MASK, GsoType, VnetFlags, VnetOff } from '../device/vnet'
import { VNET_HDR_LEN } from '../device/device'
import { PacketInfo, parsePacket, ipPacketLength } from '../wire/packet'
import { DROP_NAMES, PASS } from '../wire/drop'
import { checksum, pseudoHeaderSum4 } from '../wire/checksum'
import { buildIcmp4Error, buildIcmp6Error, icmpErrorAllowed, writeIpv4Header } from '../wire/build'
import { IPPROTO_TCP, IPPROTO_UDP } from '../wire/proto'
import { TcpField } from '../wire/tcp'
import { IPV4_FLAG_DF, IPV4_MIN_HEADER, Ipv4Field, ipv4ChecksumOk } from '../wire/ipv4'
import { ICMP_TIME_EXCEEDED } from '../wire/icmp'
import { ICMPV6_DEST_UNREACH, ICMPV6_TIME_EXCEEDED, Icmpv6Unreach } from '../wire/icmpv6'
import { UDP_HEADER, UdpField } from '../wire/udp'
import { encapsulate, innerOffset, VXLAN_OVERHEAD, VXLAN_PORT } from './vxlan'
import { completeChecksum, segment } from './gso'
import { ReplyRuns, UdpCoalescer } from './coalesce'
import { CAPTURE_VERDICTS, type Capture } from './capture'
import type { FlowRing } from './observe'
import { NatAction } from '../nat/verdict'
import { monoSeconds } from '../nat/clock'

export interface Peer {
  readonly net: number
  readonly mask: number
  readonly ip: number
  readonly mac: Buffer
}

/** An IPv4 prefix as the loop compares it: (addr & mask) === net. */
export interface Net4 {
  readonly net: number
  readonly mask: number
}

/** An IPv6 prefix: its 16 bytes and length. */
export interface Net6 {
  readonly bytes: Uint8Array
  readonly prefix: number
}

/**
 * Drops the loop decides itself. They index Counters.drops after the wire layer's reasons (wire/drop.ts, indexes
 * below LOOP_DROP_BASE), so counting one is one array increment; LOOP_DROP_NAMES is generated from this object.
 */
export const LoopDrop = {
  /** a packet from the pod side whose source no pod of this node may use: another node's pod block, a service address */
  SPOOFED_SOURCE: 32,
  /** VXLAN (UDP 4789 to the node) from an address that is no configured peer */
  VXLAN_NOT_PEER: 33,
  /** a peer's VXLAN whose inner source is neither in that peer's pod block nor its node address (or is IPv6) */
  VXLAN_SPOOFED_INNER: 34,
  /** TTL / hop limit ran out where tundra routes (an IPv4 one is answered with time exceeded from the node) */
  TTL_EXCEEDED: 35,
  /** an address of the service CIDR that is no ClusterIP: dropped, as kube-proxy's nftables mode does (routed, it would loop) */
  NO_SERVICE: 36,
  /** more packets out of one batch than the output arrays or the tx buffer hold */
  TX_OVERFLOW: 37,
  /** a GSO super-packet for another node that could not be cut into segments */
  GSO_SEGMENT: 38,
  /** a query to the cluster DNS address that got no answer (malformed; the DNS counters say more) */
  DNS_NO_ANSWER: 39,
  /** a peer's VXLAN whose inner IPv4 header checksum is wrong (the kernel checked only the outer one) */
  VXLAN_INNER_CHECKSUM: 40,
} as const

const LOOP_DROP_BASE = 32

/** Names of Counters.drops indexes: the wire layer's, then the loop's (snake_case, for metric labels). */
export const LOOP_DROP_NAMES: readonly string[] = (() => {
  const out: string[] = [...DROP_NAMES]
  if (out.length > LOOP_DROP_BASE) throw new Error("wire drop reasons overlap the loop's")
  for (const [k, v] of Object.entries(LoopDrop)) out[v] = k.toLowerCase()
  return Object.freeze(out)
})()

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

/** Packets another part queued to be sent between batches (the shape sendResets takes). */
export interface QueuedOut {
  readonly pendingResets: number
  writeResets(out: Uint8Array, outOff: number, offsets: Uint32Array, lengths: Uint32Array, max: number, gap?: number): number
}

export interface LoopOptions {
  readonly nodeIp: number
  readonly dnsIp: number
  readonly dnsPort: number
  readonly vni: number
  readonly localMac: Buffer
  readonly peers: readonly Peer[]
  /** this node's pod block: the only pod sources the TUN may bring (unset: not checked) */
  readonly podNet?: Net4
  /** every pod of the cluster; a source in it outside podNet is spoofed (unless from a peer's VXLAN) */
  readonly clusterNet?: Net4
  /** the service CIDRs: never a valid source; an untranslated destination in them would loop */
  readonly serviceNet?: Net4
  readonly serviceNet6?: Net6
  /**
   * This node's IPv6 address (16 bytes): the source of the ICMPv6 errors tundra sends itself (hop limit exceeded, a
   * service address with no ClusterIP). Unset: those IPv6 packets are dropped without an answer.
   */
  readonly nodeIp6?: Uint8Array
  /** ICMP errors tundra sends: a token bucket of `burst` refilled at `perSecond` (default 1000/s, burst 50, as Linux) */
  readonly icmpRate?: { readonly perSecond: number; readonly burst: number }
}

/** Linux's net.ipv4.icmp_msgs_per_sec and icmp_msgs_burst defaults. */
const ICMP_RATE_DEFAULT = { perSecond: 1000, burst: 50 } as const

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
  /** ICMP errors tundra sent (rejects, time exceeded, unreachable) and those the rate limit suppressed */
  icmpErrors = 0
  icmpRateLimited = 0
  /** UDP datagrams written inside another's USO super-packet (coalesce.ts: one write and one routing pass saved each) */
  udpCoalesced = 0
  /** USO super-packets those runs made */
  udpSuperPackets = 0
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
/** A TTL at or below this is not forwarded: the kernel would decrement it to 0 (RFC 1812 §5.3.1). */
const TTL_MIN_FORWARD = 1
/** What one TTL decrement adds to the IPv4 header checksum (RFC 1141). */
const TTL_CSUM_STEP = 0x0100
/** IPv6 header: the hop limit's offset. */
const IPV6_HOP_LIMIT = 7

/** A prefix no address is in (mask 0 leaves 0, never 1): an unset guard costs the same compare and never matches. */
const NO_NET: Net4 = { net: 1, mask: 0 }
/** A prefix every address is in: an unset pod block. */
const ANY_NET: Net4 = { net: 0, mask: 0 }

function inNet6(buf: Uint8Array, off: number, n: Net6 | undefined): boolean {
  if (n === undefined) return false
  const whole = n.prefix >>> 3
  for (let i = 0; i < whole; i++) if (buf[off + i] !== n.bytes[i]) return false
  const bits = n.prefix & 7
  if (bits === 0) return true
  const m = (0xff << (8 - bits)) & 0xff
  return (buf[off + whole]! & m) === (n.bytes[whole]! & m)
}

export class Dataplane {
  readonly counters = new Counters()
  /** set by `tundra capture`; null (the usual case) costs one check per packet */
  capture: Capture | null = null
  /** packets the NAT step queued during a batch (failover SYNs), written after it; null: none */
  queued: QueuedOut | null = null
  /** set while `tundra observe` watches (observe.ts); null (the usual case) costs one check per packet */
  observer: FlowRing | null = null
  /** the batch's buffer, for the observer's records of the loop's own drops */
  private batchBuf: Buffer = Buffer.alloc(0)
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
  /** runs of one flow's UDP datagrams written as one USO super-packet (vnet devices only) */
  readonly coalescer = new UdpCoalescer()
  /** cluster DNS answers of a batch, grouped per client flow into USO super-packets */
  private readonly replies: ReplyRuns
  private now = monoSeconds()
  /** monotonic milliseconds at the start of the batch, for the ICMP token bucket */
  private nowMs = performance.now()
  private icmpTokens: number
  private icmpLastMs = performance.now()
  private readonly vnet: boolean
  private readonly gap: number
  private podNet = 0
  private podMask = 0
  private clusterNet = 1
  private clusterMask = 0
  private svcNet = 1
  private svcMask = 0

  constructor(
    private readonly dev: Device,
    private nat: PacketNat,
    private dns: PacketDns,
    private opts: LoopOptions,
  ) {
    this.vnet = dev.vnetHdr
    this.gap = this.vnet ? VNET_HDR_LEN : 0
    this.replies = new ReplyRuns(this.vnet)
    this.icmpTokens = (opts.icmpRate ?? ICMP_RATE_DEFAULT).burst
    this.setGuards(opts)
  }

  setNat(nat: PacketNat): void {
    this.nat = nat
  }

  /** Sends the TCP resets a table swap queued (connections whose endpoint went away). Call between batches. */
  sendResets(src: {
    pendingResets: number
    writeResets(out: Uint8Array, outOff: number, offsets: Uint32Array, lengths: Uint32Array, max: number, gap?: number): number
  }): void {
    while (src.pendingResets > 0) {
      const n = src.writeResets(this.tx, 0, this.txOffsets, this.txLengths, MAX_OUT, this.gap)
      if (n === 0) break
      this.dev.writeBatch(this.tx, this.txOffsets, this.txLengths, n)
    }
  }
  setPeers(opts: LoopOptions): void {
    this.opts = opts
    this.setGuards(opts)
  }

  /** The IPv4 prefixes as plain number fields: the per-packet checks read no optional objects. */
  private setGuards(opts: LoopOptions): void {
    const pod = opts.podNet ?? ANY_NET,
      cluster = opts.clusterNet ?? NO_NET,
      svc = opts.serviceNet ?? NO_NET
    this.podNet = pod.net
    this.podMask = pod.mask
    this.clusterNet = cluster.net
    this.clusterMask = cluster.mask
    this.svcNet = svc.net
    this.svcMask = svc.mask
  }
  get options(): LoopOptions {
    return this.opts
  }

  readonly onBatch = (batch: Batch): void => {
    const c = this.counters
    c.batches++
    this.now = monoSeconds()
    this.nowMs = performance.now()
    this.txUsed = 0
    this.txCount = 0
    let nIn = 0
    const { buf, offsets, lengths } = batch
    const info = this.info
    const opts = this.opts
    this.batchBuf = buf
    for (let i = 0; i < batch.count; i++) {
      let off = offsets[i]!
      let len = lengths[i]!
      c.packets++
      c.bytes += len
      let flags = 0,
        gsoType = 0
      if (this.vnet) {
        flags = buf[off - VNET_HDR_LEN + VnetOff.FLAGS]!
        gsoType = buf[off - VNET_HDR_LEN + VnetOff.GSO_TYPE]! & GSO_TYPE_MASK
      }
      let verdict = parsePacket(buf, off, len, info, gsoType !== GsoType.NONE)
      if (verdict !== PASS) {
        c.dropped++
        c.drops[verdict]!++
        continue
      }
      len = info.l3Len

      // VXLAN from another node: continue with the inner packet as if a local pod had sent it. Only configured
      // peers may send it, and only with inner sources of their own (pod block, node address).
      let fromPeer = false
      if (info.family === 4 && info.l4Proto === IPPROTO_UDP && info.dst === opts.nodeIp && info.dstPort === VXLAN_PORT && !info.isFragment) {
        const peer = this.peerAt(info.src)
        if (peer === null) {
          this.drop(LoopDrop.VXLAN_NOT_PEER)
          continue
        }
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
          flags = 0
          gsoType = GsoType.NONE
          if (csumStart >= shift + IPV4_MIN_HEADER) {
            const ih = off - VNET_HDR_LEN
            buf[ih + VnetOff.FLAGS] = VnetFlags.NEEDS_CSUM
            buf.writeUInt16LE(csumStart - shift, ih + VnetOff.CSUM_START)
            buf.writeUInt16LE(csumOffset, ih + VnetOff.CSUM_OFFSET)
            flags = VnetFlags.NEEDS_CSUM
          }
          verdict = parsePacket(buf, off, len, info, false)
          if (verdict !== PASS) {
            c.dropped++
            c.drops[verdict]!++
            continue
          }
          len = info.l3Len
          // ip_rcv would refuse it after the kernel's own decap; NAT below only updates the sum, keeping it wrong
          if (info.family === 4 && !ipv4ChecksumOk(buf, off)) {
            this.drop(LoopDrop.VXLAN_INNER_CHECKSUM)
            continue
          }
          if (info.family !== 4 || ((info.src & peer.mask) >>> 0 !== peer.net && info.src !== peer.ip)) {
            this.drop(LoopDrop.VXLAN_SPOOFED_INNER)
            continue
          }
          fromPeer = true
          c.vxlanIn++
        }
      }

      // The pod side: rule 92 steers only sources in the cluster CIDR here, and the CNI keeps each pod to its own
      // address; what is left to refuse is another node's pod block (except to this node's address: a NodePort
      // reached from a remote pod over the node network) and any service address (the DNS address sends ICMP).
      if (!fromPeer) {
        if (info.family === 4) {
          const s = info.src
          if (
            ((s & this.clusterMask) >>> 0 === this.clusterNet && (s & this.podMask) >>> 0 !== this.podNet && info.dst !== opts.nodeIp) ||
            (this.serviceAddr4(s) && s !== opts.dnsIp)
          ) {
            this.drop(LoopDrop.SPOOFED_SOURCE)
            continue
          }
        } else if (inNet6(buf, info.srcOff, opts.serviceNet6)) {
          this.drop(LoopDrop.SPOOFED_SOURCE)
          continue
        }
      }

      // Cluster DNS over UDP, answered here: no conntrack entry, no extra hop.
      if (info.family === 4 && info.l4Proto === IPPROTO_UDP && info.dst === opts.dnsIp && info.dstPort === opts.dnsPort && !info.isFragment) {
        this.answerDns(buf, info)
        continue
      }

      // tundra routes, so it is a hop: the TTL goes down here (before NAT, so time exceeded quotes what the client
      // sent and no connection is tracked for a packet that dies), and a packet that loops dies within its TTL.
      if (!this.decrementTtl(buf, off, len, info)) continue

      const cap = this.capture
      const capThis = cap !== null && info.family === 4 && cap.wants(info.src, info.dst)
      if (capThis && cap.opts.pre) cap.record(buf, off, len, 'pre-nat')
      const ob = this.observer
      if (ob !== null) ob.beforeNat(buf, info)
      const act = this.nat.process(buf, off, len, info, (flags & VnetFlags.NEEDS_CSUM) !== 0, this.now)
      if (act === Action.REPLY) len = ipPacketLength(buf, off) // the answer may be shorter (options dropped)
      if (ob !== null) ob.afterNat(buf, off, info, act)
      if (capThis && cap.opts.post) cap.record(buf, off, len, `post-nat ${CAPTURE_VERDICTS[act] ?? act}`)
      if (act === Action.DROP) {
        c.dropped++
        continue
      }
      if (act === Action.REJECT) {
        const o = this.txUsed + this.gap
        if (this.icmpAllowed()) {
          const n = o + REJECT_ROOM <= TX_SIZE ? this.nat.writeReject(buf, off, len, info, this.tx, o) : 0
          if (n > 0 && this.pushTx(o, n)) c.icmpErrors++
        }
        c.rejected++
        continue
      }
      if (act === Action.REPLY) {
        c.replied++
      } else if (act === Action.FORWARD) c.natted++
      else if (act === Action.PASS && this.untranslatedService(buf, info)) {
        // No ClusterIP here: the kernel would route it straight back into the TUN. Dropped without an answer, as
        // kube-proxy's nftables mode does (cluster-ips-check: "Drop traffic to unallocated ClusterIPs"). IPv6 gets an
        // address unreachable from the node (RFC 4443 §3.1 code 3), rate-limited like every error tundra sends.
        if (info.family === 6) this.sendIcmp6(buf, off, len, info, ICMPV6_DEST_UNREACH, Icmpv6Unreach.ADDRESS)
        this.drop(LoopDrop.NO_SERVICE)
        continue
      }
      // Route by the (possibly rewritten) destination.
      if (info.family === 4) {
        const dst = buf.readUInt32BE(off + Ipv4Field.DST)
        const peer = this.peerFor(dst)
        if (peer !== null) {
          this.toPeer(buf, off, len, peer, flags, gsoType)
          continue
        }
      }
      if (nIn >= MAX_OUT) {
        this.drop(LoopDrop.TX_OVERFLOW)
        continue
      }
      c.forwarded++
      if (this.vnet) nIn = this.coalescer.add(buf, off, len, info, flags, gsoType, i, this.inOffsets, this.inLengths, nIn)
      else {
        this.inOffsets[nIn] = off
        this.inLengths[nIn] = len
        nIn++
      }
    }
    const co = this.coalescer
    co.close(buf, this.inOffsets, this.inLengths)
    if (nIn > 0) this.dev.writeBatch(buf, this.inOffsets, this.inLengths, nIn)
    this.writeReplies()
    c.udpCoalesced = co.merged + this.replies.merged
    c.udpSuperPackets = co.runs + this.replies.runs
    if (this.txCount > 0) this.dev.writeBatch(this.tx, this.txOffsets, this.txLengths, this.txCount)
    const q = this.queued
    if (q !== null && q.pendingResets > 0) this.sendResets(q)
  }

  private peerFor(dst: number): Peer | null {
    const peers = this.opts.peers
    for (let p = 0; p < peers.length; p++) {
      const peer = peers[p]!
      if ((dst & peer.mask) >>> 0 === peer.net) return peer
    }
    return null
  }

  /** The configured peer whose node address is `ip`, or null. */
  private peerAt(ip: number): Peer | null {
    const peers = this.opts.peers
    for (let p = 0; p < peers.length; p++) if (peers[p]!.ip === ip) return peers[p]!
    return null
  }

  private drop(reason: number): void {
    this.counters.dropped++
    this.counters.drops[reason]!++
    if (this.observer !== null) this.observer.loopDrop(this.batchBuf, this.info, reason)
  }

  /** Writes the answers gathered so far (their runs closed) and empties the reply area. */
  private writeReplies(): void {
    const r = this.replies
    if (r.count === 0) return
    r.finish()
    this.dev.writeBatch(r.buf, r.offsets, r.lengths, r.count)
    r.reset()
  }

  /** Queues tx[off, off+len) for the batch's write; false (and a counted drop) when the output arrays are full. */
  private pushTx(off: number, len: number): boolean {
    if (this.txCount >= MAX_OUT) {
      this.drop(LoopDrop.TX_OVERFLOW)
      return false
    }
    if (this.vnet) this.tx.fill(0, off - VNET_HDR_LEN, off)
    this.txOffsets[this.txCount] = off
    this.txLengths[this.txCount] = len
    this.txCount++
    this.txUsed = off + len
    return true
  }

  /** One token of the ICMP error bucket (refilled from the batch's monotonic time), or false and counted. */
  private icmpAllowed(): boolean {
    const rate = this.opts.icmpRate ?? ICMP_RATE_DEFAULT
    const elapsed = this.nowMs - this.icmpLastMs
    if (elapsed > 0) {
      this.icmpTokens = Math.min(rate.burst, this.icmpTokens + (elapsed * rate.perSecond) / 1000)
      this.icmpLastMs = this.nowMs
    }
    if (this.icmpTokens >= 1) {
      this.icmpTokens--
      return true
    }
    this.counters.icmpRateLimited++
    return false
  }

  /** An ICMPv4 error from this node's address about the packet at off, if RFC 1812 and the rate limit allow it. */
  private sendIcmp4(buf: Buffer, off: number, len: number, info: PacketInfo, type: number, code: number): void {
    if (!icmpErrorAllowed(buf, info, type, code) || !this.icmpAllowed()) return
    const o = this.txUsed + this.gap
    if (o + REJECT_ROOM > TX_SIZE) return
    const n = buildIcmp4Error(this.tx, o, buf, off, len, this.opts.nodeIp, type, code)
    if (n > 0 && this.pushTx(o, n)) this.counters.icmpErrors++
  }

  /** An ICMPv6 error from this node's IPv6 address, if it has one and RFC 4443 §2.4(e) and the rate limit allow it. */
  private sendIcmp6(buf: Buffer, off: number, len: number, info: PacketInfo, type: number, code: number): void {
    const src = this.opts.nodeIp6
    if (src === undefined || !icmpErrorAllowed(buf, info, type, code) || !this.icmpAllowed()) return
    const o = this.txUsed + this.gap
    if (o + REJECT_ROOM > TX_SIZE) return
    const n = buildIcmp6Error(this.tx, o, buf, off, len, src, 0, type, code)
    if (n > 0 && this.pushTx(o, n)) this.counters.icmpErrors++
  }

  /**
   * Decrements the TTL / hop limit of a packet tundra routes (IPv4 header checksum updated incrementally, RFC 1141).
   * Returns false when it ran out: dropped, counted, and answered with time exceeded from the node (ICMPv6 when the
   * node has an IPv6 address).
   */
  private decrementTtl(buf: Buffer, off: number, len: number, info: PacketInfo): boolean {
    if (info.family === 4) {
      const ttl = buf[off + Ipv4Field.TTL]!
      if (ttl <= TTL_MIN_FORWARD) {
        this.sendIcmp4(buf, off, len, info, ICMP_TIME_EXCEEDED, 0)
        this.drop(LoopDrop.TTL_EXCEEDED)
        return false
      }
      buf[off + Ipv4Field.TTL] = ttl - 1
      // RFC 1141: the TTL is the high byte of its 16-bit word, so the stored checksum goes up by 0x0100 (end-around carry)
      const c = off + Ipv4Field.CHECKSUM
      let sum = ((buf[c]! << 8) | buf[c + 1]!) + TTL_CSUM_STEP
      sum = (sum + (sum >>> 16)) & 0xffff
      buf[c] = sum >>> 8
      buf[c + 1] = sum & 0xff
      return true
    }
    const hops = buf[off + IPV6_HOP_LIMIT]!
    if (hops <= TTL_MIN_FORWARD) {
      this.sendIcmp6(buf, off, len, info, ICMPV6_TIME_EXCEEDED, 0)
      this.drop(LoopDrop.TTL_EXCEEDED)
      return false
    }
    buf[off + IPV6_HOP_LIMIT] = hops - 1
    return true
  }

  /** In the service CIDR and not in the cluster CIDR (they may overlap, as the lab's 10.96/12 and 10.100/16 do). */
  private serviceAddr4(a: number): boolean {
    return (a & this.svcMask) >>> 0 === this.svcNet && (a & this.clusterMask) >>> 0 !== this.clusterNet
  }

  /** A destination in the service CIDR that NAT left alone (no ClusterIP), other than the DNS address on lo. */
  private untranslatedService(buf: Buffer, info: PacketInfo): boolean {
    if (info.family === 4) return info.dst !== this.opts.dnsIp && this.serviceAddr4(info.dst)
    return inNet6(buf, info.dstOff, this.opts.serviceNet6)
  }

  /** Encapsulates for another node; super-packets are segmented first since the outer packet must fit the wire. */
  private toPeer(buf: Buffer, off: number, len: number, peer: Peer, flags: number, gsoType: number): void {
    const c = this.counters
    const opts = this.opts
    const entropy =
      buf.readUInt16BE(off + Ipv4Field.SRC) ^
      buf.readUInt16BE(off + Ipv4Field.SRC + 2) ^
      buf.readUInt16BE(off + Ipv4Field.DST + 2) ^
      (this.info.srcPort ^ this.info.dstPort)
    if (gsoType !== GsoType.NONE) {
      const h = off - VNET_HDR_LEN
      const gsoSize = buf.readUInt16LE(h + VnetOff.GSO_SIZE)
      const n = segment(buf, off, len, gsoSize, this.seg, 0, 0, this.segOffsets, this.segLengths, this.segOffsets.length)
      for (let s = 0; s < n; s++) {
        const o = this.txUsed + this.gap
        const sl = this.segLengths[s]!
        if (o + sl + VXLAN_OVERHEAD > TX_SIZE) {
          this.drop(LoopDrop.TX_OVERFLOW)
          break
        }
        const w = encapsulate(this.tx, o, this.seg, this.segOffsets[s]!, sl, opts.nodeIp, peer.ip, opts.vni, opts.localMac, peer.mac, entropy)
        if (this.pushTx(o, w)) c.vxlanOut++
      }
      if (n === 0) this.drop(LoopDrop.GSO_SEGMENT)
      return
    }
    if ((flags & VnetFlags.NEEDS_CSUM) !== 0) {
      const h = off - VNET_HDR_LEN
      const csumStart = buf.readUInt16LE(h + VnetOff.CSUM_START)
      const csumOffset = buf.readUInt16LE(h + VnetOff.CSUM_OFFSET)
      // Only a partial sum of this packet's TCP/UDP header, in its checksum field, is completed: a vnet header that
      // claims another place (never the kernel's) would have the sum written over the IP header or a quoted packet
      // (found by test/dataplane/fuzz.test.ts).
      const p = this.info.l4Proto
      const field = p === IPPROTO_TCP ? TcpField.CHECKSUM : p === IPPROTO_UDP ? UdpField.CHECKSUM : -1
      if (csumStart === this.info.l4Off - off && csumOffset === field) completeChecksum(buf, off, len, csumStart, csumOffset, p === IPPROTO_UDP)
    }
    const o = this.txUsed + this.gap
    if (o + len + VXLAN_OVERHEAD > TX_SIZE) {
      this.drop(LoopDrop.TX_OVERFLOW)
      return
    }
    const w = encapsulate(this.tx, o, buf, off, len, opts.nodeIp, peer.ip, opts.vni, opts.localMac, peer.mac, entropy)
    if (this.pushTx(o, w)) c.vxlanOut++
  }

  /** Writes the DNS answer as a UDP reply from the DNS service address; upstream names complete asynchronously. */
  private answerDns(buf: Buffer, info: PacketInfo): void {
    const c = this.counters
    const q = info.l4Off + UDP_HEADER
    const qlen = info.l4Len - UDP_HEADER
    const o = this.txUsed + this.gap
    if (o + UDP4_HEADERS + DNS_MAX_ANSWER > TX_SIZE) {
      this.drop(LoopDrop.TX_OVERFLOW)
      return
    }
    const ob = this.observer
    if (ob !== null) ob.dns(buf, info, q, qlen, -1)
    const n = this.dns.answerInPlace(buf, q, qlen, this.tx, o + UDP4_HEADERS, DNS_MAX_ANSWER, 0)
    if (n > 0) {
      if (ob !== null) ob.dns(this.tx, info, o + UDP4_HEADERS, n, this.tx[o + UDP4_HEADERS + 3]! & 0x0f)
      writeUdpReply(this.tx, o, info.dst, info.src, info.dstPort, info.srcPort, n)
      // into the batch's reply runs (tx at o is only scratch for it): one write per client flow, not per answer
      if (!this.replies.add(this.tx, o, UDP4_HEADERS + n)) {
        this.writeReplies()
        this.replies.add(this.tx, o, UDP4_HEADERS + n)
      }
      c.dnsAnswered++
      return
    }
    if (n === 0) {
      this.drop(LoopDrop.DNS_NO_ANSWER)
      return
    }
    // -1: not ours, ask upstream; the reply is written on its own when it arrives.
    c.dnsForwarded++
    const src = info.src,
      dst = info.dst,
      sport = info.srcPort,
      dport = info.dstPort
    this.dns.forward(Buffer.from(buf.subarray(q, q + qlen)), answer => {
      const pkt = Buffer.alloc(this.gap + UDP4_HEADERS + answer.length)
      answer.copy(pkt, this.gap + UDP4_HEADERS)
      writeUdpReply(pkt, this.gap, dst, src, dport, sport, answer.length)
      const offs = new Uint32Array([this.gap]),
        lens = new Uint32Array([UDP4_HEADERS + answer.length])
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
  counters.drops.forEach((v, i) => {
    if (v > 0) out[LOOP_DROP_NAMES[i] ?? `reason${i}`] = v
  })
  return out
}

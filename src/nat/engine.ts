// The per-packet Service NAT step: conntrack lookup, frontend lookup, endpoint choice, DNAT/masquerade, reverse NAT,
// ICMP error and fragment translation, all in place on the caller's bytes with incremental checksums.
//
//   process(buf, off, len, info, partialCsum, now) -> NatAction     per packet, after parsePacket() said PASS
//   writeReject(buf, off, len, info, out, outOff) -> bytes          after REJECT: the ICMP error to send back
//   swap(table) -> SwapResult                                        between batches: install a new NatTable
//   writeResets(out, outOff, offsets, lengths, max, gap?) -> count   after a swap: RSTs for flows that lost their endpoint
//   tick(now)                                                        once per batch or timer: incremental reaping
//
// Action codes (same numbers as the dataplane's Action):
//   PASS     not service traffic: untouched
//   FORWARD  rewritten in place; route by the (new) destination
//   REPLY    an answer was written in place (echo reply from a ClusterIP); info.l3Len holds its length; send it back
//   REJECT   untouched; call writeReject and send the ICMP port unreachable it writes
//   DROP     discard; the reason is counted in `counters` (NatStat)
//
// Masquerade follows kube-proxy's KUBE-MARK-MASQ: ClusterIP from outside the cluster CIDRs (or masqueradeAll),
// NodePort/externalIP/LB with externalTrafficPolicy Cluster, host-originated traffic to an externalTrafficPolicy
// Local frontend, and hairpin (client == chosen endpoint). Pod -> ClusterIP keeps the pod's address.
//
// Nothing on the per-packet path allocates: state lives in typed arrays, scratch keys are preallocated, and every
// outcome is a number plus a counter.

import type { Family } from '../model/cluster'
import type { PacketInfo } from '../wire/packet'
import { get32 } from '../wire/bytes'
import { DST, SRC, natIcmp4Inner, natIcmp6Inner, natIpv4, natIpv6 } from '../wire/l4rewrite'
import { buildIcmp4Error, buildIcmp6Error, icmp4EchoToReply, icmp6EchoToReply, icmpErrorAllowed } from '../wire/build'
import { ICMP_DEST_UNREACH, IcmpUnreach } from '../wire/icmp'
import { ICMPV6_DEST_UNREACH, Icmpv6Unreach } from '../wire/icmpv6'
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP } from '../wire/proto'
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../wire/tcp'
import { inAddrList, inCidrList, parseAddrWords, wordsToBytes, wordsToString } from './addr'
import type { FamilyTable, NatTable, SvcPort } from './compile'
import type { EndpointSet } from './endpoints'
import { epBase, epPort, removedEndpoints } from './endpoints'
import { FrontendKind } from './compile'
import {
  Conntrack, CtFlag, CtStat, ORIG, REPLY, TcpState, TcpVerdict, TCP_STATE_NAMES, hasPorts,
} from './conntrack'
import type { ConntrackTimeouts } from './conntrack'
import { U32Map } from './hash'
import { buildTcpReset4, buildTcpReset6 } from './reset'
import { endpointString } from '../kubeproxy/names'
import { AffinityTable, Rng, findEndpoint, flowHash } from './select'

export const NatAction = { PASS: 0, FORWARD: 1, REPLY: 2, REJECT: 3, DROP: 4 } as const
export type NatActionValue = (typeof NatAction)[keyof typeof NatAction]

/** Indexes of NatEngine.counters. */
export const NatStat = {
  /** not service traffic */
  PASS: 0,
  /** new connections translated */
  NEW: 1,
  /** packets of tracked connections translated (either direction) */
  TRACKED: 2,
  /** ICMP errors about tracked connections translated */
  ICMP_ERROR: 3,
  /** non-first fragments translated */
  FRAGMENT: 4,
  /** echo requests to a ClusterIP answered */
  ECHO_REPLY: 5,
  /** new connections masqueraded */
  MASQUERADE: 6,
  /** of which because client == endpoint */
  HAIRPIN: 7,
  /** new connections that followed a ClientIP affinity pin */
  AFFINITY_HIT: 8,
  /** new connections whose reply tuple clashed and got a new source port */
  PORT_CLASH: 9,
  /** packets fitting no TCP state (dropped or passed per the invalid policy) */
  INVALID: 10,
  REJECT_NO_ENDPOINTS: 11,
  /** a ClusterIP on a port (or protocol) it does not serve */
  REJECT_NO_PORT: 12,
  /** echo request to a ClusterIP with icmpMode reject */
  REJECT_ICMP: 13,
  DROP_INVALID: 14,
  /** externalTrafficPolicy/internalTrafficPolicy Local and no endpoint on this node */
  DROP_NO_LOCAL_ENDPOINTS: 15,
  /** LoadBalancer traffic from outside loadBalancerSourceRanges */
  DROP_SOURCE_RANGE: 16,
  DROP_CONNTRACK_FULL: 17,
  /** no free masquerade source port toward that endpoint */
  DROP_NO_SNAT_PORT: 18,
  /** a fragment to a ClusterIP whose first fragment was not seen, or a fragmented echo request */
  DROP_FRAGMENT: 19,
  /** echo request to a ClusterIP with icmpMode drop */
  DROP_ICMP: 20,
  /** connections removed because their endpoint went away */
  STALE_FLUSHED: 21,
  RESET_QUEUED: 22,
  RESET_SENT: 23,
  /** resets not queued because the queue was full */
  RESET_OVERFLOW: 24,
  /** mid-stream TCP picked up as ESTABLISHED (invalid policy pass) */
  LOOSE_PICKUP: 25,
} as const
export const NAT_STAT_NAMES: readonly string[] = [
  'pass', 'new', 'tracked', 'icmp_error', 'fragment', 'echo_reply', 'masquerade', 'hairpin', 'affinity_hit',
  'port_clash', 'invalid', 'reject_no_endpoints', 'reject_no_port', 'reject_icmp', 'drop_invalid',
  'drop_no_local_endpoints', 'drop_source_range', 'drop_conntrack_full', 'drop_no_snat_port', 'drop_fragment',
  'drop_icmp', 'stale_flushed', 'reset_queued', 'reset_sent', 'reset_overflow', 'loose_pickup',
]

/** Why a new connection was masqueraded (0: it was not). */
export const MasqReason = { NONE: 0, MASQUERADE_ALL: 1, OFF_CLUSTER: 2, EXTERNAL_CLUSTER_POLICY: 3, LOCAL_SOURCE: 4, HAIRPIN: 5 } as const
export const MASQ_REASON_NAMES: readonly string[] = [
  'none', 'masquerade-all', 'source outside the cluster CIDRs', 'external traffic with externalTrafficPolicy Cluster',
  'traffic from this node to an externalTrafficPolicy Local frontend', 'hairpin (client is the chosen endpoint)',
]

export interface NatEngineOptions {
  /** most IPv4 connections (default 262144) */
  readonly conntrackMax?: number
  /** most IPv6 connections (default 65536) */
  readonly conntrackMax6?: number
  readonly timeouts?: Partial<ConntrackTimeouts>
  /** packets that fit no TCP state: drop them (kube-proxy's INVALID DROP rule) or let them pass */
  readonly invalid?: 'drop' | 'pass'
  /**
   * Masquerade source ports, inclusive. Default 1024-29999: below the kernel's ephemeral range (32768-60999), so a
   * masqueraded flow never takes a 4-tuple the node's own sockets could use, and below the NodePort range.
   */
  readonly snatPorts?: readonly [number, number]
  /** seed of the random endpoint choice and source ports (random by default) */
  readonly seed?: number
  /** entries each of the conntrack, affinity and fragment tables reaps per tick (default 1024) */
  readonly reapBudget?: number
  /** resets that may wait for writeResets (default 65536) */
  readonly resetQueue?: number
  /** seconds a first fragment's mapping serves later fragments (default 30, Linux ipfrag_time) */
  readonly fragmentTimeout?: number
}

export interface SwapResult {
  /** conntrack entries removed because their endpoint or service port went away */
  readonly flushed: number
  /** TCP resets queued for writeResets */
  readonly resets: number
}

/** Decoded conntrack entry, for `tundra conntrack list` and tests. */
export interface ConntrackEntry {
  readonly family: Family
  readonly protocol: string
  /** TCP state name, or '' */
  readonly state: string
  readonly orig: TupleText
  readonly reply: TupleText
  readonly expiresIn: number
  readonly flags: readonly string[]
  /** kube-proxy ServicePortName of the entry's service port, or '' */
  readonly service: string
  readonly svcPortId: number
  readonly packets: readonly [number, number]
  readonly bytes: readonly [number, number]
}

export interface TupleText {
  readonly src: string
  readonly dst: string
  readonly sport: number
  readonly dport: number
}

/** Selects conntrack entries to flush; every given field must match. */
export interface ConntrackFilter {
  readonly family?: Family
  /** 'tcp' | 'udp' | 'sctp' or an IP protocol number */
  readonly protocol?: string | number
  /** "ns/name": every port of the service */
  readonly service?: string
  /** any address of either tuple */
  readonly address?: string
  /** any port of either tuple */
  readonly port?: number
}

const PROTO_NAMES: Readonly<Record<number, string>> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp' }
const NO_FRONTEND = 0xffffffff
const SNAT_TRIES = 4096
/** words per queued reset: family, src (4), dst (4), ports, seq, ack */
const RST_WORDS = 12

/** Per-family state: conntrack, affinity pins, fragment mappings, scratch. */
class Fam {
  readonly aw: number
  readonly kw: number
  readonly ct: Conntrack
  readonly aff: AffinityTable
  /** (src words, dst words, fragment id, proto) -> (ref, expires) */
  readonly frag: U32Map
  /** scratch: one IPv6 address as bytes, for the wire/ rewrite helpers */
  readonly a16 = new Uint8Array(16)

  constructor(readonly family: Family, max: number, timeouts: Partial<ConntrackTimeouts>, seed: number | undefined) {
    this.aw = family === 4 ? 1 : 4
    this.kw = 2 * this.aw + 1
    this.ct = new Conntrack(seed === undefined ? { family, max, timeouts } : { family, max, timeouts, seed })
    this.aff = new AffinityTable(this.aw)
    this.frag = new U32Map(2 * this.aw + 2, 2, 256)
  }
}

export class NatEngine {
  table: NatTable
  readonly counters = new Float64Array(NAT_STAT_NAMES.length)
  /** per service-port id: packets translated, new connections */
  svcPackets: Float64Array
  svcNew: Float64Array
  readonly v4: Fam
  readonly v6: Fam
  private readonly rng: Rng
  private readonly invalidDrop: boolean
  private readonly portLo: number
  private readonly portHi: number
  private readonly reapBudget: number
  private readonly fragTimeout: number
  private readonly rstQ: Uint32Array
  private rstHead = 0
  private rstCount = 0

  constructor(table: NatTable, opts: NatEngineOptions = {}) {
    this.table = table
    const t = opts.timeouts ?? {}
    this.v4 = new Fam(4, opts.conntrackMax ?? 262144, t, opts.seed)
    this.v6 = new Fam(6, opts.conntrackMax6 ?? 65536, t, opts.seed === undefined ? undefined : opts.seed ^ 0x66)
    this.rng = new Rng(opts.seed)
    this.invalidDrop = (opts.invalid ?? 'drop') === 'drop'
    const [lo, hi] = opts.snatPorts ?? [1024, 29999]
    if (!(lo >= 1 && hi <= 65535 && lo <= hi)) throw new RangeError(`bad snatPorts ${lo}-${hi}`)
    this.portLo = lo
    this.portHi = hi
    this.reapBudget = opts.reapBudget ?? 1024
    this.fragTimeout = opts.fragmentTimeout ?? 30
    this.rstQ = new Uint32Array((opts.resetQueue ?? 65536) * RST_WORDS)
    this.svcPackets = new Float64Array(Math.max(16, table.svcPorts.length))
    this.svcNew = new Float64Array(Math.max(16, table.svcPorts.length))
  }

  // -------------------------------------------------------------------------------------------------------------
  // Hot path

  /** See the file header. `info` must come from parsePacket(buf, off, len) returning PASS. */
  process(buf: Uint8Array, _off: number, _len: number, info: PacketInfo, partialCsum: boolean, now: number): number {
    const fam = info.family === 4 ? this.v4 : info.family === 6 ? this.v6 : null
    if (fam === null) return this.pass()
    if (info.l4Off < 0) return this.laterFragment(fam, buf, info, now)
    const proto = info.l4Proto
    if (hasPorts(proto)) return this.ported(fam, buf, info, partialCsum, now)
    if (proto === (fam.aw === 1 ? IPPROTO_ICMP : IPPROTO_ICMPV6)) return this.icmp(fam, buf, info, partialCsum, now)
    // kube-proxy rejects anything else sent to a ClusterIP.
    this.loadAddrs(fam, buf, info)
    if (this.isVip(fam, fam.ct.key, fam.aw)) {
      this.counters[NatStat.REJECT_NO_PORT]!++
      return NatAction.REJECT
    }
    return this.pass()
  }

  private pass(): number {
    this.counters[NatStat.PASS]!++
    return NatAction.PASS
  }

  /** ct.key = (src, dst) words of the packet; ports word left alone. */
  private loadAddrs(fam: Fam, buf: Uint8Array, info: PacketInfo): void {
    const k = fam.ct.key
    if (fam.aw === 1) {
      k[0] = info.src
      k[1] = info.dst
    } else {
      const s = info.srcOff
      const d = info.dstOff
      for (let i = 0; i < 4; i++) {
        k[i] = get32(buf, s + i * 4)
        k[4 + i] = get32(buf, d + i * 4)
      }
    }
  }

  private isVip(fam: Fam, words: Uint32Array, off: number): boolean {
    const vip = (fam.aw === 1 ? this.table.v4 : this.table.v6).vip
    const aw = fam.aw
    for (let i = 0; i < aw; i++) vip.key[i] = words[off + i]!
    return vip.find() >= 0
  }

  private ported(fam: Fam, buf: Uint8Array, info: PacketInfo, partial: boolean, now: number): number {
    const ct = fam.ct
    const aw = fam.aw
    this.loadAddrs(fam, buf, info)
    ct.key[2 * aw] = ((info.srcPort << 16) | info.dstPort) >>> 0
    const proto = info.l4Proto
    const ref = ct.lookup(proto)
    if (ref >= 0) {
      const e = ref >>> 1
      const dir = ref & 1
      if (ct.expires[e]! <= now) {
        ct.delete(e)
        ct.stats[CtStat.EXPIRED_ON_LOOKUP]!++
      } else {
        let reopen = false
        if (proto === IPPROTO_TCP) {
          const v = ct.tcp(e, dir, info.tcpFlags, now)
          if (v === TcpVerdict.REOPEN) {
            ct.delete(e)
            reopen = true
          } else {
            if (v === TcpVerdict.INVALID) {
              this.counters[NatStat.INVALID]!++
              if (this.invalidDrop) {
                this.counters[NatStat.DROP_INVALID]!++
                return NatAction.DROP
              }
            }
            if ((info.tcpFlags & TCP_RST) === 0) this.trackSeq(ct, e, dir, buf, info)
          }
        } else {
          ct.touch(e, dir, now)
        }
        if (!reopen) {
          if (info.isFragment !== 0) this.noteFragment(fam, info, ref, now)
          this.translate(fam, buf, info, e, dir, partial)
          this.account(ct, e, dir, info)
          this.counters[NatStat.TRACKED]!++
          return NatAction.FORWARD
        }
      }
    }
    return this.newConnection(fam, buf, info, partial, now)
  }

  private account(ct: Conntrack, e: number, dir: number, info: PacketInfo): void {
    const c = e * 4 + dir * 2
    ct.counters[c]!++
    ct.counters[c + 1]! += info.l3Len
    const id = ct.svcPort[e]!
    if (id >= 0 && id < this.svcPackets.length) this.svcPackets[id]!++
  }

  /** Remembers the next sequence number each side sends, for the resets writeResets builds. */
  private trackSeq(ct: Conntrack, e: number, dir: number, buf: Uint8Array, info: PacketInfo): void {
    const l4 = info.l4Off
    const flags = info.tcpFlags
    const doff = (buf[l4 + 12]! >>> 4) << 2
    const end = (get32(buf, l4 + 4) + (info.l4Len - doff) + (flags & TCP_SYN ? 1 : 0) + (flags & TCP_FIN ? 1 : 0)) >>> 0
    const i = e * 2 + dir
    const cur = ct.seqNext[i]!
    if (cur === 0 || ((end - cur) | 0) > 0) ct.seqNext[i] = end
  }

  /** Applies entry e's mapping to a packet travelling in `dir` (addresses only when l4Off < 0). */
  private translate(fam: Fam, buf: Uint8Array, info: PacketInfo, e: number, dir: number, partial: boolean): void {
    const ct = fam.ct
    const f = ct.flags[e]!
    const aw = fam.aw
    const t = ct.tuples
    const l3 = info.l3Off
    const l4 = info.l4Off
    const proto = info.l4Proto
    if (dir === ORIG) {
      const r = e * ct.tw + ct.kw
      const ports = t[r + 2 * aw]!
      if (f & CtFlag.DNAT) this.rewrite(fam, buf, l3, l4, proto, DST, t, r, ports >>> 16, partial)
      if (f & CtFlag.SNAT) this.rewrite(fam, buf, l3, l4, proto, SRC, t, r + aw, ports & 0xffff, partial)
    } else {
      const o = e * ct.tw
      const ports = t[o + 2 * aw]!
      if (f & CtFlag.DNAT) this.rewrite(fam, buf, l3, l4, proto, SRC, t, o + aw, ports & 0xffff, partial)
      if (f & CtFlag.SNAT) this.rewrite(fam, buf, l3, l4, proto, DST, t, o, ports >>> 16, partial)
    }
  }

  private rewrite(
    fam: Fam, buf: Uint8Array, l3: number, l4: number, proto: number, which: number,
    words: Uint32Array, wo: number, port: number, partial: boolean,
  ): void {
    if (fam.aw === 1) {
      // int32, not uint32: a value >= 2^31 passed to a call V8 does not inline is boxed (an allocation per packet).
      // natIpv4 uses the address bitwise, so the sign does not change the bytes or the checksums it writes.
      natIpv4(buf, l3, l4, proto, which, words[wo]! | 0, port, partial)
    } else {
      wordsToBytes(words, wo, 4, fam.a16, 0)
      natIpv6(buf, l3, l4, proto, which, fam.a16, 0, port, partial)
    }
  }

  private newConnection(fam: Fam, buf: Uint8Array, info: PacketInfo, partial: boolean, now: number): number {
    const t = this.table
    const ft: FamilyTable = fam.aw === 1 ? t.v4 : t.v6
    const ct = fam.ct
    const k = ct.key
    const aw = fam.aw
    const proto = info.l4Proto
    const fe = ft.fe
    for (let i = 0; i < aw; i++) fe.key[i] = k[aw + i]!
    fe.key[aw] = ((proto << 16) | info.dstPort) >>> 0
    const v = fe.get(NO_FRONTEND)
    if (v === NO_FRONTEND) {
      if (this.isVip(fam, k, aw)) {
        this.counters[NatStat.REJECT_NO_PORT]!++
        return NatAction.REJECT
      }
      return this.pass()
    }
    const id = v >>> 2
    const kind = v & 3
    const sp = t.svcPorts[id]!

    // A new TCP connection starts with a SYN; anything else has no state to belong to.
    let state: number = TcpState.SYN_SENT
    if (proto === IPPROTO_TCP) {
      const f = info.tcpFlags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)
      if (f !== TCP_SYN) {
        this.counters[NatStat.INVALID]!++
        if (this.invalidDrop) {
          this.counters[NatStat.DROP_INVALID]!++
          return NatAction.DROP
        }
        // Policy pass: pick up mid-stream connections like nf_conntrack_tcp_loose; other segments go out untouched.
        if ((f & (TCP_ACK | TCP_RST | TCP_SYN)) !== TCP_ACK) return this.pass()
        state = TcpState.ESTABLISHED
        this.counters[NatStat.LOOSE_PICKUP]!++
      }
    }

    // Endpoint set and masquerade, as kube-proxy's KUBE-SVC / KUBE-EXT chains decide them.
    let set: EndpointSet
    let masq: number = MasqReason.NONE
    const fromCluster = ft.hasClusterCidrs && inCidrList(ft.clusterCidrs, aw, k, 0)
    if (kind === FrontendKind.CLUSTER_IP) {
      set = sp.internal
      if (t.config.masqueradeAll) masq = MasqReason.MASQUERADE_ALL
      else if (ft.hasClusterCidrs && !fromCluster) masq = MasqReason.OFF_CLUSTER
    } else {
      if (kind === FrontendKind.LOAD_BALANCER && sp.sourceRanges.length > 0 &&
        !inCidrList(sp.sourceRanges, aw, k, 0) && !inAddrList(sp.allowedLbSources, aw, k, 0)) {
        this.counters[NatStat.DROP_SOURCE_RANGE]!++
        return NatAction.DROP
      }
      if (sp.externalPolicy === 'Local') {
        if (fromCluster) {
          set = sp.cluster
        } else if (inAddrList(ft.nodeAddrs, aw, k, 0)) {
          set = sp.cluster
          masq = MasqReason.LOCAL_SOURCE
        } else {
          set = sp.local
        }
      } else {
        set = sp.cluster
        masq = MasqReason.EXTERNAL_CLUSTER_POLICY
      }
    }
    if (set.count === 0) {
      // Endpoints exist, just none here: kube-proxy drops. None at all: it rejects.
      if (sp.cluster.count > 0) {
        this.counters[NatStat.DROP_NO_LOCAL_ENDPOINTS]!++
        return NatAction.DROP
      }
      this.counters[NatStat.REJECT_NO_ENDPOINTS]!++
      return NatAction.REJECT
    }

    const idx = this.choose(fam, sp, set, proto, now)
    const d = set.data
    const epOff = set.off + idx * (aw + 1)
    let hairpin = true
    for (let i = 0; i < aw; i++) if (d[epOff + i] !== k[i]) { hairpin = false; break }
    if (hairpin) masq = MasqReason.HAIRPIN

    // Reply tuple: endpoint -> client (or this node's address when masquerading).
    const kw = ct.kw
    const tk = ct.tk
    for (let i = 0; i < kw; i++) tk[i] = k[i]!
    for (let i = 0; i < aw; i++) tk[kw + i] = d[epOff + i]!
    const epPort = d[epOff + aw]! & 0xffff
    const portsAt = kw + 2 * aw
    if (masq !== MasqReason.NONE && ft.hasSnat) {
      for (let i = 0; i < aw; i++) tk[kw + aw + i] = ft.snat[i]!
      if (this.allocPort(ct, proto, epPort, portsAt) < 0) {
        this.counters[NatStat.DROP_NO_SNAT_PORT]!++
        return NatAction.DROP
      }
      this.counters[NatStat.MASQUERADE]!++
      if (masq === MasqReason.HAIRPIN) this.counters[NatStat.HAIRPIN]!++
    } else {
      for (let i = 0; i < aw; i++) tk[kw + aw + i] = k[i]!
      tk[portsAt] = ((epPort << 16) | info.srcPort) >>> 0
      // Two clients' flows can meet on one endpoint with the same reply tuple (same client port to two services
      // backed by the same pod): keep the address, move the source port, as Linux's nf_nat_used_tuple does.
      if (ct.find(tk, kw, proto) >= 0) {
        if (this.allocPort(ct, proto, epPort, portsAt) < 0) {
          this.counters[NatStat.DROP_NO_SNAT_PORT]!++
          return NatAction.DROP
        }
        this.counters[NatStat.PORT_CLASH]!++
      }
    }

    const e = ct.create(proto, id, idx, now)
    if (e < 0) {
      this.counters[NatStat.DROP_CONNTRACK_FULL]!++
      return NatAction.DROP
    }
    if (proto === IPPROTO_TCP) {
      ct.setTcpState(e, state, now)
      this.trackSeq(ct, e, ORIG, buf, info)
    } else {
      ct.touch(e, ORIG, now)
    }
    if (info.isFragment !== 0) this.noteFragment(fam, info, e * 2, now)
    this.translate(fam, buf, info, e, ORIG, partial)
    this.account(ct, e, ORIG, info)
    this.counters[NatStat.NEW]!++
    if (id < this.svcNew.length) this.svcNew[id]!++
    return NatAction.FORWARD
  }

  /** Endpoint index for a new connection: affinity pin, else Maglev or uniform random. */
  private choose(fam: Fam, sp: SvcPort, set: EndpointSet, proto: number, now: number): number {
    const k = fam.ct.key
    const aw = fam.aw
    if (sp.affinityTimeout > 0) {
      const aff = fam.aff
      const ak = aff.key
      ak[0] = sp.id
      for (let i = 0; i < aw; i++) ak[1 + i] = k[i]!
      const s = aff.lookup(now)
      if (s >= 0) {
        const idx = findEndpoint(set, aff.vals, aff.valOff(s), aff.portOf(s), aff.hintOf(s))
        if (idx >= 0) {
          aff.refresh(s, idx, now + sp.affinityTimeout)
          this.counters[NatStat.AFFINITY_HIT]!++
          return idx
        }
      }
      const idx = this.pick(set, fam, proto)
      aff.pin(set, idx, now + sp.affinityTimeout)
      return idx
    }
    return this.pick(set, fam, proto)
  }

  private pick(set: EndpointSet, fam: Fam, proto: number): number {
    const n = set.count
    if (n === 1) return 0
    const m = set.maglev
    if (m !== null && this.table.config.lb === 'maglev') return m[(flowHash(fam.ct.key, fam.kw, proto) >>> 0) % m.length]!
    return this.rng.below(n)
  }

  /**
   * A source port for the reply tuple in ct.tk (reply src/dst already set) that no connection to that endpoint uses:
   * a random start, then the next free one. Writes the ports word; returns the port or -1.
   */
  private allocPort(ct: Conntrack, proto: number, epPort: number, portsAt: number): number {
    const lo = this.portLo
    const hi = this.portHi
    let p = lo + this.rng.below(hi - lo + 1)
    const tk = ct.tk
    const kw = ct.kw
    const tries = Math.min(SNAT_TRIES, hi - lo + 1)
    for (let i = 0; i < tries; i++) {
      tk[portsAt] = ((epPort << 16) | p) >>> 0
      if (ct.find(tk, kw, proto) < 0) return p
      p = p === hi ? lo : p + 1
    }
    return -1
  }

  // Fragments -----------------------------------------------------------------------------------------------------

  /** Maps (src, dst, id, proto) of a first fragment (pre-NAT addresses in ct.key) to its connection. */
  private noteFragment(fam: Fam, info: PacketInfo, ref: number, now: number): void {
    const fm = fam.frag
    const k = fam.ct.key
    const n = 2 * fam.aw
    for (let i = 0; i < n; i++) fm.key[i] = k[i]!
    fm.key[n] = info.fragId
    fm.key[n + 1] = info.l4Proto
    const s = fm.insert()
    fm.vals[s * 2] = ref
    fm.vals[s * 2 + 1] = now + this.fragTimeout
  }

  private laterFragment(fam: Fam, buf: Uint8Array, info: PacketInfo, now: number): number {
    this.loadAddrs(fam, buf, info)
    const fm = fam.frag
    const ct = fam.ct
    const k = ct.key
    const n = 2 * fam.aw
    for (let i = 0; i < n; i++) fm.key[i] = k[i]!
    fm.key[n] = info.fragId
    fm.key[n + 1] = info.l4Proto
    const s = fm.find()
    if (s >= 0 && fm.vals[s * 2 + 1]! > now) {
      const ref = fm.vals[s * 2]!
      const e = ref >>> 1
      const dir = ref & 1
      // The entry may have been reused since: it must still carry this fragment's addresses.
      if (ct.isUsed(e) && ct.proto[e] === info.l4Proto) {
        const base = ct.tupleOff(e, dir)
        let same = true
        for (let i = 0; i < n; i++) if (ct.tuples[base + i] !== k[i]) { same = false; break }
        if (same) {
          this.translate(fam, buf, info, e, dir, false)
          this.account(ct, e, dir, info)
          this.counters[NatStat.FRAGMENT]!++
          return NatAction.FORWARD
        }
      }
    }
    if (this.isVip(fam, k, fam.aw)) {
      this.counters[NatStat.DROP_FRAGMENT]!++
      return NatAction.DROP
    }
    return this.pass()
  }

  // ICMP ----------------------------------------------------------------------------------------------------------

  private icmp(fam: Fam, buf: Uint8Array, info: PacketInfo, _partial: boolean, now: number): number {
    if (info.innerL3Off >= 0) return this.icmpError(fam, buf, info, now)
    if (info.icmpType !== (fam.aw === 1 ? 8 : 128)) return this.pass()
    this.loadAddrs(fam, buf, info)
    if (!this.isVip(fam, fam.ct.key, fam.aw)) return this.pass()
    const mode = this.table.config.icmpMode
    if (mode === 'drop') {
      this.counters[NatStat.DROP_ICMP]!++
      return NatAction.DROP
    }
    if (mode === 'reject') {
      this.counters[NatStat.REJECT_ICMP]!++
      return NatAction.REJECT
    }
    if (info.isFragment !== 0) {
      this.counters[NatStat.DROP_FRAGMENT]!++
      return NatAction.DROP
    }
    info.l3Len = fam.aw === 1
      ? icmp4EchoToReply(buf, info.l3Off)
      : icmp6EchoToReply(buf, info.l3Off, info.l4Off, info.l4Len)
    this.counters[NatStat.ECHO_REPLY]!++
    return NatAction.REPLY
  }

  /**
   * An ICMP error quoting a packet of a tracked connection: the quote and the outer header are translated as the
   * endpoint or the client must see them (Linux nf_nat_icmp_reply_translation). The quoted packet travelled the
   * other way, so looking up its inverted tuple gives the direction of the error itself.
   */
  private icmpError(fam: Fam, buf: Uint8Array, info: PacketInfo, now: number): number {
    const ip = info.innerL4Proto
    if (info.innerL4Off < 0 || !hasPorts(ip)) return this.pass()
    const ct = fam.ct
    const k = ct.key
    const aw = fam.aw
    if (aw === 1) {
      k[0] = info.innerDst
      k[1] = info.innerSrc
    } else {
      for (let i = 0; i < 4; i++) {
        k[i] = get32(buf, info.innerDstOff + i * 4)
        k[4 + i] = get32(buf, info.innerSrcOff + i * 4)
      }
    }
    k[2 * aw] = ((info.innerDstPort << 16) | info.innerSrcPort) >>> 0
    const ref = ct.lookup(ip)
    if (ref < 0) return this.pass()
    const e = ref >>> 1
    if (ct.expires[e]! <= now) return this.pass()
    const dir = ref & 1
    const f = ct.flags[e]!
    const t = ct.tuples
    const icmpOff = info.l4Off
    const icmpLen = info.l4Len
    const l3 = info.l3Off
    const oproto = aw === 1 ? IPPROTO_ICMP : IPPROTO_ICMPV6
    if (dir === REPLY) {
      // Error from the endpoint's side: the quote goes back to the original tuple, the outer to VIP -> client.
      const o = e * ct.tw
      const ports = t[o + 2 * aw]!
      if (f & CtFlag.SNAT) this.quoted(fam, buf, info, icmpOff, icmpLen, ip, SRC, t, o, ports >>> 16)
      if (f & CtFlag.DNAT) this.quoted(fam, buf, info, icmpOff, icmpLen, ip, DST, t, o + aw, ports & 0xffff)
      if (f & CtFlag.DNAT) this.rewrite(fam, buf, l3, icmpOff, oproto, SRC, t, o + aw, -1, false)
      if (f & CtFlag.SNAT) this.rewrite(fam, buf, l3, icmpOff, oproto, DST, t, o, -1, false)
    } else {
      // Error from the client's side: the quote becomes what the endpoint sent, the outer goes to the endpoint.
      const r = e * ct.tw + ct.kw
      const ports = t[r + 2 * aw]!
      if (f & CtFlag.DNAT) this.quoted(fam, buf, info, icmpOff, icmpLen, ip, SRC, t, r, ports >>> 16)
      if (f & CtFlag.SNAT) this.quoted(fam, buf, info, icmpOff, icmpLen, ip, DST, t, r + aw, ports & 0xffff)
      if (f & CtFlag.SNAT) this.rewrite(fam, buf, l3, icmpOff, oproto, SRC, t, r + aw, -1, false)
      if (f & CtFlag.DNAT) this.rewrite(fam, buf, l3, icmpOff, oproto, DST, t, r, -1, false)
    }
    this.counters[NatStat.ICMP_ERROR]!++
    return NatAction.FORWARD
  }

  private quoted(
    fam: Fam, buf: Uint8Array, info: PacketInfo, icmpOff: number, icmpLen: number, ip: number, which: number,
    words: Uint32Array, wo: number, port: number,
  ): void {
    if (fam.aw === 1) {
      natIcmp4Inner(buf, icmpOff, icmpLen, info.innerL3Off, info.innerL4Off, ip, which, words[wo]! | 0, port)
    } else {
      wordsToBytes(words, wo, 4, fam.a16, 0)
      natIcmp6Inner(buf, icmpOff, icmpLen, info.innerL3Off, info.innerL4Off, ip, which, fam.a16, 0, port)
    }
  }

  /**
   * The ICMP port unreachable for a packet process() answered REJECT, written at out[outOff] from the address the
   * client sent to. Returns its length, 0 when none may be sent (RFC 1812 rules) or it does not fit.
   */
  writeReject(buf: Uint8Array, off: number, len: number, info: PacketInfo, out: Uint8Array, outOff: number): number {
    if (info.family === 4) {
      if (!icmpErrorAllowed(buf, info, ICMP_DEST_UNREACH, IcmpUnreach.PORT)) return 0
      return buildIcmp4Error(out, outOff, buf, off, len, info.dst, ICMP_DEST_UNREACH, IcmpUnreach.PORT)
    }
    if (!icmpErrorAllowed(buf, info, ICMPV6_DEST_UNREACH, Icmpv6Unreach.PORT)) return 0
    return buildIcmp6Error(out, outOff, buf, off, len, buf, info.dstOff, ICMPV6_DEST_UNREACH, Icmpv6Unreach.PORT)
  }

  // -------------------------------------------------------------------------------------------------------------
  // Between batches

  /** Incremental upkeep: reaps a slice of each table. Call once per batch or from a timer, with the coarse clock. */
  tick(now: number): void {
    this.reapFamily(this.v4, now)
    this.reapFamily(this.v6, now)
  }

  private reapFamily(fam: Fam, now: number): void {
    const b = this.reapBudget
    fam.ct.reap(now, b)
    fam.aff.reap(now, b)
    fam.frag.reapExpired(1, now, b)
  }

  /**
   * Installs `next` (call between batches). Connections to endpoints that stopped serving, or to service ports that
   * are gone, are removed now: UDP/SCTP flows re-balance on their next packet, TCP clients get a reset queued for
   * writeResets. Affinity pins of service ports that are gone are forgotten.
   */
  swap(next: NatTable): SwapResult {
    const prev = this.table
    if (prev === next) return { flushed: 0, resets: 0 }
    const n = Math.max(prev.svcPorts.length, next.svcPorts.length)
    // 0: unchanged, 1: some endpoints stale (listed in staleEps), 2: all (service port gone or slot reused)
    const kind = new Uint8Array(n)
    const staleEps = [new U32Map(3, 1, 64), new U32Map(6, 1, 16)]
    let any = false
    // An updateNat result lists the ids it changed: at 20 000 services that is a handful, not a scan.
    const ids = changedIds(prev, next)
    for (let j = 0, end = ids === undefined ? prev.svcPorts.length : ids.length; j < end; j++) {
      const id = ids === undefined ? j : ids[j]!
      if (id >= prev.svcPorts.length) continue
      const a = prev.svcPorts[id]
      if (a === undefined) continue
      const b = next.svcPorts[id]
      if (b === a) continue
      if (b === undefined || b.uid !== a.uid) {
        kind[id] = 2
        any = true
        continue
      }
      if (b.serving === a.serving) continue
      const m = staleEps[a.family === 4 ? 0 : 1]!
      const was = a.serving
      for (const i of removedEndpoints(was, b.serving)) {
        const base = epBase(was, i)
        m.key[0] = id
        for (let w = 0; w < was.aw; w++) m.key[1 + w] = was.data[base + w]!
        m.key[1 + was.aw] = epPort(was, i)
        m.set(1)
        kind[id] = 1
        any = true
      }
    }
    this.table = next
    this.resizeServiceCounters(prev, next, ids)
    if (!any) return { flushed: 0, resets: 0 }
    for (const fam of [this.v4, this.v6]) {
      fam.aff.dropWhere(id => id < n && kind[id] === 2)
    }
    return this.flushStale((fam, e) => {
      const id = fam.ct.svcPort[e]!
      if (id < 0 || id >= n) return false
      const kd = kind[id]!
      if (kd === 0) return false
      if (kd === 2) return true
      const m = staleEps[fam.aw === 1 ? 0 : 1]!
      const ct = fam.ct
      const r = ct.tupleOff(e, REPLY)
      m.key[0] = id
      for (let i = 0; i < fam.aw; i++) m.key[1 + i] = ct.tuples[r + i]!
      m.key[1 + fam.aw] = ct.tuples[r + 2 * fam.aw]! >>> 16
      return m.find() >= 0
    })
  }

  private resizeServiceCounters(prev: NatTable, next: NatTable, ids: readonly number[] | undefined): void {
    const n = next.svcPorts.length
    if (n > this.svcPackets.length) {
      const size = Math.max(n, this.svcPackets.length * 2)
      const p = new Float64Array(size)
      p.set(this.svcPackets)
      const q = new Float64Array(size)
      q.set(this.svcNew)
      this.svcPackets = p
      this.svcNew = q
    }
    for (let j = 0, end = ids === undefined ? prev.svcPorts.length : ids.length; j < end; j++) {
      const id = ids === undefined ? j : ids[j]!
      if (id >= prev.svcPorts.length) continue
      const a = prev.svcPorts[id]
      const b = next.svcPorts[id]
      if (a !== undefined && (b === undefined || b.uid !== a.uid)) {
        this.svcPackets[id] = 0
        this.svcNew[id] = 0
      }
    }
  }

  /** Removes entries `stale` accepts; queues a reset for each TCP connection still open. */
  private flushStale(stale: (fam: Fam, e: number) => boolean): SwapResult {
    let flushed = 0
    let resets = 0
    for (const fam of [this.v4, this.v6]) {
      const ct = fam.ct
      // Stop once every live entry was looked at: a table far from full is not scanned to its end.
      let left = ct.count
      for (let e = 0; e < ct.capacity && left > 0; e++) {
        if (!ct.isUsed(e)) continue
        left--
        if (!stale(fam, e)) continue
        if (ct.proto[e] === IPPROTO_TCP) {
          const s = ct.state[e]!
          if (s !== TcpState.TIME_WAIT && s !== TcpState.CLOSE && s !== TcpState.NONE && this.queueReset(fam, e)) resets++
        }
        ct.delete(e)
        flushed++
      }
    }
    this.counters[NatStat.STALE_FLUSHED]! += flushed
    return { flushed, resets }
  }

  private queueReset(fam: Fam, e: number): boolean {
    const cap = this.rstQ.length / RST_WORDS
    if (this.rstCount >= cap) {
      this.counters[NatStat.RESET_OVERFLOW]!++
      return false
    }
    const ct = fam.ct
    const aw = fam.aw
    const o = ct.tupleOff(e, ORIG)
    const q = this.rstQ
    const at = ((this.rstHead + this.rstCount) % cap) * RST_WORDS
    q[at] = fam.family
    // To the client, from the address and port it connected to.
    for (let i = 0; i < aw; i++) {
      q[at + 1 + i] = ct.tuples[o + aw + i]!
      q[at + 5 + i] = ct.tuples[o + i]!
    }
    const ports = ct.tuples[o + 2 * aw]!
    q[at + 9] = (((ports & 0xffff) << 16) | (ports >>> 16)) >>> 0
    const replied = (ct.flags[e]! & CtFlag.REPLIED) !== 0
    q[at + 10] = replied ? ct.seqNext[e * 2 + 1]! : 0
    q[at + 11] = ct.seqNext[e * 2]!
    this.rstCount++
    this.counters[NatStat.RESET_QUEUED]!++
    return true
  }

  /** Resets waiting to be written. */
  get pendingResets(): number {
    return this.rstCount
  }

  /**
   * Writes up to `max` queued TCP resets into `out` from outOff, each preceded by `gap` zero bytes (room for a
   * virtio_net_hdr), recording each packet's offset and length. Returns how many it wrote; call again while
   * pendingResets > 0.
   */
  writeResets(out: Uint8Array, outOff: number, offsets: Uint32Array, lengths: Uint32Array, max: number, gap = 0): number {
    const cap = this.rstQ.length / RST_WORDS
    const q = this.rstQ
    let o = outOff
    let n = 0
    const limit = Math.min(max, offsets.length, lengths.length)
    while (this.rstCount > 0 && n < limit) {
      const at = this.rstHead * RST_WORDS
      const p = o + gap
      const ports = q[at + 9]!
      const w = q[at] === 4
        ? buildTcpReset4(out, p, q[at + 1]!, q[at + 5]!, ports >>> 16, ports & 0xffff, q[at + 10]!, q[at + 11]!)
        : buildTcpReset6(out, p, q, at + 1, at + 5, ports >>> 16, ports & 0xffff, q[at + 10]!, q[at + 11]!)
      if (w === 0) break
      out.fill(0, o, p)
      offsets[n] = p
      lengths[n] = w
      n++
      o = p + w
      this.rstHead = (this.rstHead + 1) % cap
      this.rstCount--
      this.counters[NatStat.RESET_SENT]!++
    }
    return n
  }

  // -------------------------------------------------------------------------------------------------------------
  // Off the hot path: CLI, restarts, explain

  /** Counters by name (non-zero only), conntrack sizes included. */
  stats(): Record<string, number> {
    const out: Record<string, number> = {}
    for (let i = 0; i < NAT_STAT_NAMES.length; i++) if (this.counters[i] !== 0) out[NAT_STAT_NAMES[i]!] = this.counters[i]!
    out.conntrack_entries = this.v4.ct.count + this.v6.ct.count
    out.affinity_pins = this.v4.aff.size + this.v6.aff.size
    return out
  }

  /** Every live conntrack entry, decoded (for `tundra conntrack list`). */
  conntrackEntries(now: number): ConntrackEntry[] {
    const out: ConntrackEntry[] = []
    for (const fam of [this.v4, this.v6]) {
      for (const e of fam.ct.entries()) out.push(this.decode(fam, e, now))
    }
    return out
  }

  private decode(fam: Fam, e: number, now: number): ConntrackEntry {
    const ct = fam.ct
    const aw = fam.aw
    const tuple = (dir: number): TupleText => {
      const o = ct.tupleOff(e, dir)
      const p = ct.tuples[o + 2 * aw]!
      return {
        src: wordsToString(ct.tuples, o, fam.family),
        dst: wordsToString(ct.tuples, o + aw, fam.family),
        sport: p >>> 16,
        dport: p & 0xffff,
      }
    }
    const f = ct.flags[e]!
    const flags: string[] = []
    if (f & CtFlag.REPLIED) flags.push('replied')
    if (f & CtFlag.ASSURED) flags.push('assured')
    if (f & CtFlag.DNAT) flags.push('dnat')
    if (f & CtFlag.SNAT) flags.push('snat')
    const id = ct.svcPort[e]!
    const sp = id >= 0 ? this.table.svcPorts[id] : undefined
    const proto = ct.proto[e]!
    return {
      family: fam.family,
      protocol: PROTO_NAMES[proto] ?? String(proto),
      state: proto === IPPROTO_TCP ? TCP_STATE_NAMES[ct.state[e]!]! : '',
      orig: tuple(ORIG),
      reply: tuple(REPLY),
      expiresIn: Math.max(0, ct.expires[e]! - now),
      flags,
      service: sp?.servicePortName ?? '',
      svcPortId: id,
      packets: [ct.counters[e * 4]!, ct.counters[e * 4 + 2]!],
      bytes: [ct.counters[e * 4 + 1]!, ct.counters[e * 4 + 3]!],
    }
  }

  /** Looks a tuple up in conntrack (either direction), for explain/trace. */
  findConntrack(family: Family, proto: number, src: string, dst: string, sport: number, dport: number, now: number): { entry: ConntrackEntry; direction: 'original' | 'reply' } | undefined {
    const fam = family === 4 ? this.v4 : this.v6
    const w = new Uint32Array(fam.kw)
    if (!parseAddrWords(src, family, w, 0) || !parseAddrWords(dst, family, w, fam.aw)) return undefined
    w[2 * fam.aw] = ((sport << 16) | dport) >>> 0
    const ref = fam.ct.find(w, 0, proto)
    if (ref < 0 || fam.ct.expires[ref >>> 1]! <= now) return undefined
    return { entry: this.decode(fam, ref >>> 1, now), direction: (ref & 1) === ORIG ? 'original' : 'reply' }
  }

  /** The live affinity pin of `client` for a service port, for explain/trace. */
  findAffinity(sp: SvcPort, client: string, now: number): { endpoint: string; expiresIn: number } | undefined {
    const fam = sp.family === 4 ? this.v4 : this.v6
    const aff = fam.aff
    aff.key[0] = sp.id
    if (!parseAddrWords(client, sp.family, aff.key, 1)) return undefined
    const s = aff.map.find()
    if (s < 0 || aff.expiresOf(s) <= now) return undefined
    return {
      endpoint: endpointString(wordsToString(aff.vals, aff.valOff(s), sp.family), aff.portOf(s)),
      expiresIn: aff.expiresOf(s) - now,
    }
  }

  /** Deletes the conntrack entries the filter selects (conntrack -D); returns how many. */
  flush(filter: ConntrackFilter = {}): number {
    let n = 0
    const fp = filter.protocol
    const proto = typeof fp === 'string'
      ? Number(Object.keys(PROTO_NAMES).find(k => PROTO_NAMES[Number(k)] === fp.toLowerCase()) ?? -1)
      : fp
    for (const fam of [this.v4, this.v6]) {
      if (filter.family !== undefined && filter.family !== fam.family) continue
      const ct = fam.ct
      const aw = fam.aw
      let addr: Uint32Array | undefined
      if (filter.address !== undefined) {
        addr = new Uint32Array(aw)
        if (!parseAddrWords(filter.address, fam.family, addr, 0)) continue
      }
      n += ct.flush(e => {
        if (proto !== undefined && ct.proto[e] !== proto) return false
        if (filter.service !== undefined) {
          const sp = this.table.svcPorts[ct.svcPort[e]!]
          if (sp === undefined || `${sp.namespace}/${sp.name}` !== filter.service) return false
        }
        const base = e * ct.tw
        if (addr !== undefined) {
          let hit = false
          for (const at of [0, aw, ct.kw, ct.kw + aw]) {
            let same = true
            for (let i = 0; i < aw; i++) if (ct.tuples[base + at + i] !== addr[i]) { same = false; break }
            if (same) { hit = true; break }
          }
          if (!hit) return false
        }
        if (filter.port !== undefined) {
          const p = filter.port
          const a = ct.tuples[base + 2 * aw]!
          const b = ct.tuples[base + ct.kw + 2 * aw]!
          if (a >>> 16 !== p && (a & 0xffff) !== p && b >>> 16 !== p && (b & 0xffff) !== p) return false
        }
        return true
      })
    }
    return n
  }

  /**
   * Conntrack state for a restart: service ports are recorded by key so that restore() can map them onto a freshly
   * compiled table. Layout: "TNSN", u32 header length, JSON header, u32 length + IPv4 snapshot, u32 length + IPv6.
   */
  snapshot(): Buffer {
    const keys = this.table.svcPorts.map(sp => sp?.key ?? null)
    const header = Buffer.from(JSON.stringify({ version: 1, keys }))
    const s4 = this.v4.ct.snapshot()
    const s6 = this.v6.ct.snapshot()
    const out = Buffer.alloc(8 + header.length + 4 + s4.length + 4 + s6.length)
    let o = out.write('TNSN', 0, 'latin1')
    o = out.writeUInt32LE(header.length, o)
    o += header.copy(out, o)
    o = out.writeUInt32LE(s4.length, o)
    o += s4.copy(out, o)
    o = out.writeUInt32LE(s6.length, o)
    s6.copy(out, o)
    return out
  }

  /**
   * Loads a snapshot() into this engine's (current) table: entries of service ports that no longer exist, and of
   * endpoints that stopped serving, are not kept (TCP ones get a reset queued). Returns entries restored.
   */
  restore(buf: Buffer, now: number): number {
    if (buf.length < 8 || buf.toString('latin1', 0, 4) !== 'TNSN') throw new RangeError('not a NAT engine snapshot')
    const hl = buf.readUInt32LE(4)
    const header = JSON.parse(buf.toString('utf8', 8, 8 + hl)) as { version: number; keys: (string | null)[] }
    if (header.version !== 1) throw new RangeError(`unsupported NAT snapshot version ${header.version}`)
    const byKey = new Map<string, number>()
    for (const sp of this.table.svcPorts) if (sp !== undefined) byKey.set(sp.key, sp.id)
    const map = (id: number): number => {
      const key = header.keys[id]
      return key === null || key === undefined ? -1 : byKey.get(key) ?? -1
    }
    let o = 8 + hl
    const l4 = buf.readUInt32LE(o)
    let restored = this.v4.ct.restore(buf.subarray(o + 4, o + 4 + l4), now, map)
    o += 4 + l4
    const l6 = buf.readUInt32LE(o)
    restored += this.v6.ct.restore(buf.subarray(o + 4, o + 4 + l6), now, map)
    // Endpoints that stopped serving while we were down.
    const r = this.flushStale((fam, e) => {
      const ct = fam.ct
      const sp = this.table.svcPorts[ct.svcPort[e]!]
      if (sp === undefined) return false
      const ro = ct.tupleOff(e, REPLY)
      return findEndpoint(sp.serving, ct.tuples, ro, ct.tuples[ro + 2 * fam.aw]! >>> 16, -1) < 0
    })
    return restored - r.flushed
  }
}

/** The service port ids `next` changed relative to `prev` when it says so (updateNat of prev), else undefined (all). */
function changedIds(prev: NatTable, next: NatTable): readonly number[] | undefined {
  return next.delta !== undefined && next.delta.from === prev.generation ? next.delta.ids : undefined
}

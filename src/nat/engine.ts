// The per-packet Service NAT step: conntrack lookup, frontend lookup, endpoint choice, DNAT/masquerade, reverse NAT,
// ICMP error and fragment translation, all in place on the caller's bytes with incremental checksums.
//
//   process(buf, off, len, info, partialCsum, now) -> NatAction     per packet, after parsePacket() said PASS
//   writeReject(buf, off, len, info, out, outOff) -> bytes          after REJECT: the ICMP error to send back
//   install(img) -> SwapResult                                       between batches: a NatImage (image.ts)
//   step(budget) / tick(now)                                         once per batch or timer: a slice of the stale-
//                                                                    flow flush, incremental reaping
//   writeResets(out, outOff, offsets, lengths, max, gap?) -> count   RSTs for flows that lost their endpoint
//   ctCount() / ctChunk(cursor, max) / flushChunk(filter, ...)       conntrack for the control thread, bounded
//
// The engine reads only the installed image (typed arrays, state.ts), never NatTable objects: the table can be
// compiled on another thread. `new NatEngine(table)` and `swap(table)` remain for single-thread users (tests, CLI).
// Actions are NatAction (verdict.ts).
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
import { wordsToBytes, wordsToString } from './addr'
import { parseIpWords } from '../wire/addr'
import type { NatTable, SvcPort } from './compile'
import { Conntrack, CtFlag, CtStat, ORIG, REPLY, TcpState, TcpVerdict, hasPorts } from './conntrack'
import { buildTcpReset4, buildTcpReset6 } from './reset'
import { endpointString } from '../model/names'
import { Rng, findEndpoint, flowHash } from './select'
import { Sched, SchedState, countsConnections } from './sched'
import { Decided, Decision, NO_FRONTEND, decide, frontendOf, isHairpin, isVip } from './decide'
import { MasqReason, NAT_STAT_NAMES, NatAction, NatStat } from './verdict'
import { Fam, SetView, Tables } from './state'
import { IcmpMode, REC_SCHED_MASK, REC_SCHED_SHIFT, REC_WORDS, REV_AMBIGUOUS, Rec, RevW, natImage } from './image'
import { inAddrList } from './addr'
import type { NatImage } from './image'
import { StaleFlush } from './flush'
import { CT_CHUNK, decodeCtChunk, encodeCtChunk, flushCtChunk, newRestoreReport, prepareRestore, resolveCtFilter, restoreCtChunk } from './ctview'
import type { ConntrackEntry, ConntrackFilter, CtFilter, RestoreReport } from './ctview'
import { assembleSnapshot } from './ctview'
import type { ConntrackTimeouts, SharedConntrack } from './conntrack'
import { EndpointBook, SIG_WORDS, Sig } from './signals'
import { Outlier } from './outlier'
import { CONN_STAT_NAMES, ConnStat, ConnectFail, PendingConnects, SYN_BYTES, type ConnectOptions } from './failover'
import { monoMs } from './clock'
import { PacketInfo as PacketView, parsePacket } from '../wire/packet'
import { PASS } from '../wire/drop'
import { fillTcpChecksum4, fillTcpChecksum6 } from '../wire/tcp'

export type { NatActionValue } from './verdict'
export type { ConntrackEntry, ConntrackFilter, CtFilter, RestoreReport, TupleText } from './ctview'

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
  /** conntrack entries / affinity slots the stale-flow flush visits per tick (default 8192, well under 1 ms) */
  readonly flushBudget?: number
  /** per-backend signals, outlier ejection, connect-time failover (failover.ts); absent: all off, no cost */
  readonly connect?: ConnectOptions
  /**
   * Conntrack shared with other packet threads (sharedConntrack() per family): conntrackMax/seed then come from the
   * tables; `owner` (1..2^31-1, unique per thread) names this thread's hold on their locks.
   */
  readonly shared?: SharedTables
}

/** The conntrack tables packet threads share, and which thread this engine is. */
export interface SharedTables {
  readonly v4: SharedConntrack
  readonly v6: SharedConntrack
  /** sessionAffinity pins (sharedAffinity()), under the same locks as conntrack; per engine when left out */
  readonly aff4?: SharedArrayBuffer
  readonly aff6?: SharedArrayBuffer
  readonly owner: number
}

export interface SwapResult {
  /**
   * conntrack entries removed because their endpoint or service port went away (install: by its first slice; the
   * rest goes in later step() calls while flushPending)
   */
  readonly flushed: number
  /** TCP resets queued for writeResets */
  readonly resets: number
}

const SNAT_TRIES = 4096
/** retarget(): the old entry was deleted, no new one made */
const GONE = -2
/** words per queued reset: family, src (4), dst (4), ports, seq, ack */
const RST_WORDS = 12

export class NatEngine {
  readonly counters = new Float64Array(NAT_STAT_NAMES.length)
  /** per service-port id: packets translated, new connections */
  svcPackets: Float64Array
  svcNew: Float64Array
  /**
   * per (service port, endpoint): packets and new connections always, signals and outlier state with connect
   * tracking (signals.ts; the one per-endpoint book, tundra_endpoint_*)
   */
  readonly book: EndpointBook
  /** connect tracking (signals, ejection, failover) is on: opts.connect turned some part on */
  readonly tracking: boolean = false
  readonly v4: Fam
  readonly v6: Fam
  /** the installed image */
  readonly tables: Tables
  private readonly rng: Rng
  /** rr cursors, wrr steps, lc heaps and per-endpoint connection counts (sched.ts) */
  readonly sched = new SchedState()
  private readonly invalidDrop: boolean
  private readonly portLo: number
  private readonly portHi: number
  private readonly reapBudget: number
  private readonly flushBudget: number
  private readonly fragTimeout: number
  private readonly rstQ: Uint32Array
  private rstHead = 0
  private rstCount = 0
  /** scratch: the endpoint set a new connection chooses from */
  private readonly set = new SetView()
  /** scratch: decide()'s answer for a new connection */
  private readonly decided = new Decided()
  private readonly stale: StaleFlush
  /** the table of the last swap()/constructor/install(img, table); undefined after an install without one */
  private table_: NatTable | undefined
  /** the coarse clock as last given to tick() (conntrack chunks report expiry against it) */
  private now = 0
  /** connect tracking counters (ConnStat) */
  readonly connCounters = new Float64Array(CONN_STAT_NAMES.length)
  private readonly pend: PendingConnects | null = null
  private readonly outlier: Outlier | null = null
  private readonly failoverOn: boolean = false
  private readonly maxTries: number = 1
  private readonly synTimeoutMs: number = 1000
  private tcpBefore = 0
  /** where the signals of a connect whose slot was freed go (nowhere) */
  private readonly noSig = new Float64Array(SIG_WORDS)
  private readonly foInfo = new PacketView()
  private readonly backScratch: number[] = []
  /** ejections and connect failures for `tundra observe` (set by the packet thread while someone watches) */
  onConnectEvent: ((kind: number, family: number, e: number, ep: number, reason: number) => void) | null = null
  /** the millisecond clock of connect times and timeouts (clock.ts; tests drive their own) */
  msClock: () => number = monoMs
  /** conntrack is shared with other packet threads: every use of it holds its family's lock */
  readonly isShared: boolean

  constructor(table: NatTable, opts: NatEngineOptions = {}) {
    const t = opts.timeouts ?? {}
    const sh = opts.shared
    this.v4 = new Fam(4, opts.conntrackMax ?? 262144, t, opts.seed, sh && { table: sh.v4, owner: sh.owner, ...(sh.aff4 ? { affinity: sh.aff4 } : {}) })
    this.v6 = new Fam(
      6,
      opts.conntrackMax6 ?? 65536,
      t,
      opts.seed === undefined ? undefined : opts.seed ^ 0x66,
      sh && { table: sh.v6, owner: sh.owner, ...(sh.aff6 ? { affinity: sh.aff6 } : {}) },
    )
    this.isShared = sh !== undefined
    this.tables = new Tables(this.v4, this.v6)
    this.stale = new StaleFlush(this.tables, this.v4, this.v6, new SetView())
    this.rng = new Rng(opts.seed)
    for (const fam of [this.v4, this.v6]) fam.ct.onDelete = e => this.uncount(fam, e)
    this.invalidDrop = (opts.invalid ?? 'drop') === 'drop'
    const [lo, hi] = opts.snatPorts ?? [1024, 29999]
    if (!(lo >= 1 && hi <= 65535 && lo <= hi)) throw new RangeError(`bad snatPorts ${lo}-${hi}`)
    this.portLo = lo
    this.portHi = hi
    this.reapBudget = opts.reapBudget ?? 1024
    this.flushBudget = Math.max(1, opts.flushBudget ?? 8192)
    this.fragTimeout = opts.fragmentTimeout ?? 30
    this.rstQ = new Uint32Array((opts.resetQueue ?? 65536) * RST_WORDS)
    this.svcPackets = new Float64Array(Math.max(16, table.svcPorts.length))
    this.svcNew = new Float64Array(Math.max(16, table.svcPorts.length))
    this.book = new EndpointBook(this.v4.ct.capacity, this.v6.ct.capacity)
    const c = opts.connect
    if (c !== undefined && (c.signals || c.failover.enabled || c.outlier !== null)) {
      this.tracking = true
      this.pend = new PendingConnects(c.failover.pool, this.v4.ct.capacity, this.v6.ct.capacity, c.failover.enabled)
      this.outlier = c.outlier === null ? null : new Outlier(c.outlier, this.book)
      this.failoverOn = c.failover.enabled
      this.maxTries = 1 + c.failover.maxRetries
      this.synTimeoutMs = c.failover.synTimeoutMs
    }
    this.install(natImage(table), table)
  }

  /**
   * The NatTable last given to the constructor, swap() or install(img, table): for single-thread callers (CLI,
   * metrics, tests). An engine fed only images by another thread has none: reading it then throws.
   */
  get table(): NatTable {
    if (this.table_ === undefined)
      throw new Error(`the NAT engine runs image generation ${this.tables.generation} without its table (installed from another thread)`)
    return this.table_
  }

  /** Generation of the installed image. */
  get generation(): number {
    return this.tables.generation
  }

  // -------------------------------------------------------------------------------------------------------------
  // Hot path

  /** See the file header. `info` must come from parsePacket(buf, off, len) returning PASS. */
  process(buf: Uint8Array, off: number, len: number, info: PacketInfo, partialCsum: boolean, now: number): number {
    if (!this.isShared) return this.processOne(buf, off, len, info, partialCsum, now)
    // Shared conntrack: one packet's NAT step under its family's lock (nothing in it throws or waits).
    const ct = info.family === 6 ? this.v6.ct : this.v4.ct
    ct.lock()
    const r = this.processOne(buf, off, len, info, partialCsum, now)
    ct.unlock()
    return r
  }

  /** Runs `fn` holding both conntrack locks (v4 then v6: the one order) when shared; off the hot path. */
  private locked<T>(fn: () => T): T {
    if (!this.isShared) return fn()
    this.v4.ct.lock()
    this.v6.ct.lock()
    try {
      return fn()
    } finally {
      this.v6.ct.unlock()
      this.v4.ct.unlock()
    }
  }

  /** A packet thread that died holding a conntrack lock (its `owner` id): releases it. Returns whether any was held. */
  releaseLocksOf(owner: number): boolean {
    const a = this.v4.ct.releaseIfHeldBy(owner)
    const b = this.v6.ct.releaseIfHeldBy(owner)
    return a || b
  }

  private processOne(buf: Uint8Array, _off: number, _len: number, info: PacketInfo, partialCsum: boolean, now: number): number {
    const fam = info.family === 4 ? this.v4 : info.family === 6 ? this.v6 : null
    if (fam === null) return this.pass()
    if (info.l4Off < 0) return this.laterFragment(fam, buf, info, now)
    const proto = info.l4Proto
    if (hasPorts(proto)) return this.ported(fam, buf, info, partialCsum, now)
    if (proto === (fam.aw === 1 ? IPPROTO_ICMP : IPPROTO_ICMPV6)) return this.icmp(fam, buf, info, partialCsum, now)
    // kube-proxy rejects anything else sent to a ClusterIP.
    this.loadAddrs(fam, buf, info)
    if (isVip(fam, fam.ct.key, fam.aw)) {
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
          if (this.tracking) {
            const w = this.connWatch(fam, e, dir, info.tcpFlags, now)
            if (w >= 0) return w
          }
          const v = ct.tcp(e, dir, info.tcpFlags, now)
          if (this.tracking) this.connAfter(fam, e)
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
            // lc/wlc count open connections: a FIN or RST ends one (IPVS's ActiveConn), its entry may linger
            if ((ct.flags[e]! & CtFlag.COUNTED) !== 0 && ct.state[e]! >= TcpState.FIN_WAIT && ct.state[e]! <= TcpState.CLOSE) {
              this.uncount(fam, e)
              ct.flags[e] = ct.flags[e]! & ~CtFlag.COUNTED
            }
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
    // the one slot lookup of the packet: packets always, bytes with connect tracking
    const book = this.book
    const b = book.entry(ct.aw === 1 ? 0 : 1, e)
    if (b < 0 || (this.isShared && !book.holds(b, ct, e))) return
    book.packets[b]!++
    if (this.tracking) book.sig[b * SIG_WORDS + Sig.BYTES_TO + dir]! += info.l3Len
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
    fam: Fam,
    buf: Uint8Array,
    l3: number,
    l4: number,
    proto: number,
    which: number,
    words: Uint32Array,
    wo: number,
    port: number,
    partial: boolean,
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

  /**
   * A SYN that no Service translates, whose reply tuple is the reply tuple of a translated connection: the client
   * reused a source port toward an endpoint it earlier reached through a Service (another 4-tuple to its kernel).
   * Left alone, the old entry would reverse-translate the new connection's replies. Linux moves the new connection
   * to another source port here (nf_nat_used_tuple_new); a pass-through keeps no entry to carry that, so instead a
   * closed old entry (TIME_WAIT, CLOSE or expired: its connection is over) is removed. An open one stays, counted.
   */
  private evictClosedClash(fam: Fam, now: number): void {
    const ct = fam.ct
    const k = ct.key
    const aw = fam.aw
    swapKey(k, aw)
    const ref = ct.lookup(IPPROTO_TCP)
    swapKey(k, aw)
    if (ref < 0 || (ref & 1) !== REPLY) return
    const e = ref >>> 1
    if (ct.expires[e]! <= now || ct.state[e]! === TcpState.TIME_WAIT || ct.state[e]! === TcpState.CLOSE) {
      ct.delete(e)
      this.counters[NatStat.CLASH_EVICTED]!++
    } else this.counters[NatStat.CLASH_OPEN]!++
  }

  private newConnection(fam: Fam, buf: Uint8Array, info: PacketInfo, partial: boolean, now: number): number {
    const tb = this.tables
    const ct = fam.ct
    const k = ct.key
    const aw = fam.aw
    const proto = info.l4Proto
    const v = frontendOf(fam, k, proto, info.dstPort)
    if (v === NO_FRONTEND) {
      if (isVip(fam, k, aw)) {
        this.counters[NatStat.REJECT_NO_PORT]!++
        return NatAction.REJECT
      }
      if (
        now < this.replyPickupUntil &&
        proto === IPPROTO_TCP &&
        (info.tcpFlags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_ACK &&
        this.replyPickup(fam, buf, info, partial, now)
      )
        return NatAction.FORWARD
      if (proto === IPPROTO_TCP && (info.tcpFlags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN) this.evictClosedClash(fam, now)
      return this.pass()
    }

    // A new TCP connection starts with a SYN. A bare ACK with no entry is a connection whose entry was lost (a
    // crash, a flush): picked up as ESTABLISHED like nf_conntrack_tcp_loose, so it keeps working when it lands on
    // its endpoint again and is reset by the endpoint (RST reverse-NATed to the client) when it does not.
    let state: number = TcpState.SYN_SENT
    if (proto === IPPROTO_TCP) {
      const f = info.tcpFlags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)
      if (f !== TCP_SYN) {
        const loose = this.invalidDrop ? f === TCP_ACK : (f & (TCP_ACK | TCP_RST | TCP_SYN)) === TCP_ACK
        if (!loose || !this.invalidDrop) this.counters[NatStat.INVALID]!++
        if (!loose) {
          if (this.invalidDrop) {
            this.counters[NatStat.DROP_INVALID]!++
            return NatAction.DROP
          }
          return this.pass()
        }
        state = TcpState.ESTABLISHED
        this.counters[NatStat.LOOSE_PICKUP]!++
      }
    }

    // Endpoint set, masquerade and verdict: decide.ts, shared with explain.
    const dec = this.decided
    const verdict = decide(tb, fam, v, k, dec)
    if (verdict !== Decision.DNAT) return this.refuse(verdict)
    const id = dec.id
    const which = dec.which
    let masq = dec.masq
    const set = tb.view(this.set, id, which)

    let idx = this.choose(fam, id, tb.rec[id * REC_WORDS + Rec.AFFINITY]!, set, proto, now)
    if (this.outlier !== null && this.book.ejectedOf[id]! > 0) idx = this.avoidEjected(fam, id, set, idx, proto)
    const d = set.data
    const epOff = set.off + idx * (aw + 1)
    if (isHairpin(set, idx, k)) masq = MasqReason.HAIRPIN

    // Reply tuple: endpoint -> client (or this node's address when masquerading).
    const kw = ct.kw
    const tk = ct.tk
    for (let i = 0; i < kw; i++) tk[i] = k[i]!
    for (let i = 0; i < aw; i++) tk[kw + i] = d[epOff + i]!
    const epPort = d[epOff + aw]! & 0xffff
    const portsAt = kw + 2 * aw
    if (masq !== MasqReason.NONE && fam.hasSnat) {
      for (let i = 0; i < aw; i++) tk[kw + aw + i] = fam.snat[i]!
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
    if (countsConnections(this.schedOf(id))) {
      ct.flags[e] = ct.flags[e]! | CtFlag.COUNTED
      this.sched.count(id, aw, d, epOff, epPort, idx, 1)
    }
    if (proto === IPPROTO_TCP) {
      ct.setTcpState(e, state, now)
      this.trackSeq(ct, e, ORIG, buf, info)
    } else {
      ct.touch(e, ORIG, now)
    }
    if (info.isFragment !== 0) this.noteFragment(fam, info, e * 2, now)
    const b = this.book.attach(aw === 1 ? 0 : 1, ct, e, tb.rec[id * REC_WORDS + Rec.UID]!, true)
    if (this.tracking) this.connOpened(fam, e, b, buf, info, state)
    this.translate(fam, buf, info, e, ORIG, partial)
    this.account(ct, e, ORIG, info)
    this.counters[NatStat.NEW]!++
    if (id < this.svcNew.length) this.svcNew[id]!++
    return NatAction.FORWARD
  }

  /**
   * A bare ACK from a serving endpoint's address:port with no entry (ct.key holds it: endpoint -> client): the reply
   * of a ClusterIP connection whose entry was lost. When exactly one service port has that endpoint (the reverse
   * index) and the client is not this node (a masqueraded flow's client is unknown), the entry is recreated from
   * the reply side and the packet reverse-NATed, so the client sees its ClusterIP peer again. False: left alone.
   */
  /**
   * Until this time (engine clock) an endpoint's packet of a connection with no entry is re-adopted (replyPickup).
   * Only after a restart: tundra keeps no entry for direct pod-to-pod connections, so at other times such a packet
   * may belong to one (a client that dialled the pod itself) and must pass untouched. 0: never.
   */
  replyPickupUntil = 0

  private replyPickup(fam: Fam, buf: Uint8Array, info: PacketInfo, partial: boolean, now: number): boolean {
    const ct = fam.ct
    const aw = fam.aw
    const k = ct.key
    const rev = fam.rev
    const rk = rev.key
    for (let i = 0; i < aw; i++) rk[i] = k[i]!
    rk[aw] = ((IPPROTO_TCP << 16) | info.srcPort) >>> 0
    const s = rev.find()
    if (s < 0) return false
    const rv = s * rev.vw
    const id = rev.vals[rv + RevW.ID]!
    if (id === REV_AMBIGUOUS || !this.tables.present(id)) return false
    if (inAddrList(fam.nodeAddrs, aw, k, aw) || (fam.hasSnat && inAddrList(fam.snat, aw, k, aw))) return false
    // Original tuple: client -> ClusterIP:port; reply tuple: the packet as it is.
    const kw = ct.kw
    const tk = ct.tk
    for (let i = 0; i < kw; i++) tk[kw + i] = k[i]!
    for (let i = 0; i < aw; i++) {
      tk[i] = k[aw + i]!
      tk[aw + i] = rev.vals[rv + RevW.VIP + i]!
    }
    tk[2 * aw] = ((info.dstPort << 16) | rev.vals[rv + RevW.PORT]!) >>> 0
    if (ct.find(tk, 0, IPPROTO_TCP) >= 0) return false
    const set = this.tables.view(this.set, id, Rec.SERVING_SET)
    const e = ct.create(IPPROTO_TCP, id, findEndpoint(set, tk, kw, info.srcPort, -1), now)
    if (e < 0) {
      this.counters[NatStat.DROP_CONNTRACK_FULL]!++
      return false
    }
    if (this.tracking) this.connForget(fam, e)
    ct.touch(e, REPLY, now)
    ct.setTcpState(e, TcpState.ESTABLISHED, now)
    this.trackSeq(ct, e, REPLY, buf, info)
    this.book.attach(aw === 1 ? 0 : 1, ct, e, this.tables.rec[id * REC_WORDS + Rec.UID]!, false)
    this.translate(fam, buf, info, e, REPLY, partial)
    this.account(ct, e, REPLY, info)
    this.counters[NatStat.REPLY_PICKUP]!++
    return true
  }

  /** Counts a new connection decide() refused and returns its action. */
  private refuse(verdict: number): number {
    if (verdict === Decision.DROP_SOURCE_RANGE) {
      this.counters[NatStat.DROP_SOURCE_RANGE]!++
      return NatAction.DROP
    }
    if (verdict === Decision.DROP_NO_LOCAL_ENDPOINTS) {
      this.counters[NatStat.DROP_NO_LOCAL_ENDPOINTS]!++
      return NatAction.DROP
    }
    if (verdict === Decision.DROP_LOCALHOST) {
      this.counters[NatStat.DROP_LOCALHOST]!++
      return NatAction.DROP
    }
    this.counters[NatStat.REJECT_NO_ENDPOINTS]!++
    return NatAction.REJECT
  }

  /** Endpoint index for a new connection: affinity pin, else Maglev or uniform random. */
  private choose(fam: Fam, id: number, affinity: number, set: SetView, proto: number, now: number): number {
    const k = fam.ct.key
    const aw = fam.aw
    if (affinity > 0) {
      const aff = fam.aff
      const ak = aff.key
      ak[0] = id
      for (let i = 0; i < aw; i++) ak[1 + i] = k[i]!
      const s = aff.lookup(now)
      if (s >= 0) {
        const idx = findEndpoint(set, aff.vals, aff.valOff(s), aff.portOf(s), aff.hintOf(s))
        if (idx >= 0) {
          aff.refresh(s, idx, now + affinity)
          this.counters[NatStat.AFFINITY_HIT]!++
          return idx
        }
      }
      const idx = this.pick(set, fam, proto, id)
      aff.pin(set, idx, now + affinity)
      return idx
    }
    return this.pick(set, fam, proto, id)
  }

  /** The scheduler of service port id (its record's flags). */
  private schedOf(id: number): number {
    return (this.tables.rec[id * REC_WORDS + Rec.FLAGS]! >>> REC_SCHED_SHIFT) & REC_SCHED_MASK
  }

  /** The service port's scheduler picks an endpoint of `set` (sched.ts). */
  private pick(set: SetView, fam: Fam, proto: number, id: number): number {
    const n = set.count
    if (n === 1) return 0
    switch (this.schedOf(id)) {
      case Sched.RR:
        return this.sched.rr(id, set)
      case Sched.WRR:
        return this.sched.wrr(id, set)
      case Sched.LC:
      case Sched.WLC:
        return this.sched.lc(id, set)
      case Sched.SH:
        return this.sched.sh(set, fam.ct.key)
      case Sched.MH: {
        const m = set.maglev
        if (m !== null) return m[set.magOff + ((flowHash(fam.ct.key, fam.kw, proto) >>> 0) % this.tables.maglevSize)]!
        return this.rng.below(n)
      }
      default:
        return this.rng.below(n)
    }
  }

  /** A counted connection is going: its endpoint (the reply tuple's source) has one fewer. */
  private uncount(fam: Fam, e: number): void {
    const ct = fam.ct
    const id = ct.svcPort[e]!
    if (id < 0) return
    const r = e * ct.tw + ct.kw
    this.sched.count(id, fam.aw, ct.tuples, r, ct.tuples[r + 2 * fam.aw]! >>> 16, ct.endpoint[e]!, -1)
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
        for (let i = 0; i < n; i++)
          if (ct.tuples[base + i] !== k[i]) {
            same = false
            break
          }
        if (same) {
          this.translate(fam, buf, info, e, dir, false)
          this.account(ct, e, dir, info)
          this.counters[NatStat.FRAGMENT]!++
          return NatAction.FORWARD
        }
      }
    }
    if (isVip(fam, k, fam.aw)) {
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
    if (!isVip(fam, fam.ct.key, fam.aw)) return this.pass()
    const mode = this.tables.icmpMode
    if (mode === IcmpMode.DROP) {
      this.counters[NatStat.DROP_ICMP]!++
      return NatAction.DROP
    }
    if (mode === IcmpMode.REJECT) {
      this.counters[NatStat.REJECT_ICMP]!++
      return NatAction.REJECT
    }
    if (info.isFragment !== 0) {
      this.counters[NatStat.DROP_FRAGMENT]!++
      return NatAction.DROP
    }
    if (fam.aw === 1) icmp4EchoToReply(buf, info.l3Off)
    else icmp6EchoToReply(buf, info.l3Off, info.l4Off, info.l4Len)
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
    if (this.tracking && dir === REPLY && ip === IPPROTO_TCP && this.connUnreachable(fam, e, info, now)) return NatAction.DROP
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
    fam: Fam,
    buf: Uint8Array,
    info: PacketInfo,
    icmpOff: number,
    icmpLen: number,
    ip: number,
    which: number,
    words: Uint32Array,
    wo: number,
    port: number,
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

  /**
   * Incremental upkeep: reaps a slice of each table and runs a slice of a pending stale-flow flush. Call once per
   * batch or from a timer, with the coarse clock.
   */
  tick(now: number): void {
    this.now = now
    this.locked(() => {
      this.reapFamily(this.v4, now)
      this.reapFamily(this.v6, now)
    })
    this.step(this.flushBudget)
    if (this.tracking) this.connTick(this.msClock(), now)
  }

  private reapFamily(fam: Fam, now: number): void {
    const b = this.reapBudget
    fam.ct.reap(now, b)
    fam.aff.reap(now, b)
    fam.frag.reapExpired(1, now, b)
  }

  /**
   * One slice of the stale-flow flush an install started: visits at most `budget` conntrack entries or affinity
   * slots, removes the stale ones and queues resets for open TCP connections. Returns what it did.
   */
  step(budget: number = this.flushBudget): SwapResult {
    const r0 = this.stale.resets
    const flushed = this.locked(() => this.stale.step(budget, this))
    this.counters[NatStat.STALE_FLUSHED]! += flushed
    return { flushed, resets: this.stale.resets - r0 }
  }

  /** Whether an install's stale flows are still being flushed (step() has work). */
  get flushPending(): boolean {
    return this.stale.pending
  }

  /**
   * Installs an image (between batches): a full image in O(number of its buffers), a delta in O(change). Flows
   * the image lists as stale are flushed in slices by step()/tick(): UDP/SCTP flows re-balance on their next
   * packet, TCP clients get a reset queued for writeResets; pins of service ports that are gone are forgotten.
   * Runs the first slice now and returns what it did. `table` (the NatTable the image was made from) is kept for
   * single-thread callers that read engine.table. Throws a NatImageError, changing nothing, when a delta does not
   * follow the installed generation.
   */
  install(img: NatImage, table?: NatTable): SwapResult {
    const tb = this.tables
    tb.check(img)
    tb.apply(img)
    this.table_ = table
    this.resizeServiceCounters(tb.ids, img.staleIds)
    this.book.staleIds(img.staleIds)
    this.locked(() => this.stale.add(img)) // it reads conntrack's per-service counts
    return this.step(this.flushBudget)
  }

  /**
   * Convenience for single-thread callers: install(natImage(next, current)) and finish the flush now (not bounded:
   * the packet thread uses install + step instead).
   */
  swap(next: NatTable): SwapResult {
    const prev = this.table_
    if (prev === next) return { flushed: 0, resets: 0 }
    let { flushed, resets } = this.install(natImage(next, prev), next)
    while (this.stale.pending) {
      const r = this.step(1 << 20)
      flushed += r.flushed
      resets += r.resets
    }
    return { flushed, resets }
  }

  /** Grows the per-id counters to `n` ids and zeroes those of ids whose service port went or changed. */
  private resizeServiceCounters(n: number, gone: Uint32Array): void {
    if (n > this.svcPackets.length) {
      const size = Math.max(n, this.svcPackets.length * 2)
      const p = new Float64Array(size)
      p.set(this.svcPackets)
      const q = new Float64Array(size)
      q.set(this.svcNew)
      this.svcPackets = p
      this.svcNew = q
    }
    for (let i = 0; i < gone.length; i++) {
      const id = gone[i]!
      if (id < this.svcPackets.length) {
        this.svcPackets[id] = 0
        this.svcNew[id] = 0
      }
    }
  }

  /** Queues a reset to the client of entry e (FlushSink); false when the queue is full. */
  queueReset(fam: Fam, e: number): boolean {
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
      const w =
        q[at] === 4
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

  /** Live conntrack entries of both families: O(1). */
  ctCount(): number {
    return this.v4.ct.count + this.v6.ct.count
  }

  /**
   * Up to `max` live entries from `cursor` (0 to start), encoded for decodeCtChunk on the control side; visits at
   * most 8 * max slots. next = -1 when the listing is done. Expiry is reported against `now` (default: the clock of
   * the last tick). `into` (ctChunkBytes(max) or more, e.g. handed back by the control thread) avoids allocating.
   * Snapshots are assembled from the same chunks (assembleSnapshot).
   */
  ctChunk(cursor: number, max: number = CT_CHUNK, now: number = this.now, into?: ArrayBuffer): { bytes: ArrayBuffer; next: number } {
    return this.locked(() => encodeCtChunk(this.v4, this.v6, cursor, max, now, into))
  }

  /** Deletes entries a resolved filter selects among the next O(max) slots (conntrack -D in slices). */
  flushChunk(filter: CtFilter, cursor: number, max: number = CT_CHUNK): { flushed: number; next: number } {
    return this.locked(() => flushCtChunk(this.v4, this.v6, filter, cursor, max))
  }

  /** Every live conntrack entry, decoded (single-thread convenience over ctChunk + decodeCtChunk). */
  conntrackEntries(now: number): ConntrackEntry[] {
    const out: ConntrackEntry[] = []
    const table = this.table_
    for (let c = 0; c >= 0; ) {
      const { bytes, next } = this.ctChunk(c, CT_CHUNK, now)
      for (const e of decodeCtChunk(bytes, table)) out.push(e)
      c = next
    }
    return out
  }

  private decode(fam: Fam, e: number, now: number): ConntrackEntry {
    const one = encodeCtChunk(this.v4, this.v6, (fam === this.v4 ? 0 : this.v4.ct.capacity) + e, 1, now)
    return decodeCtChunk(one.bytes, this.table_)[0]!
  }

  /** Looks a tuple up in conntrack (either direction), for explain/trace. */
  findConntrack(
    family: Family,
    proto: number,
    src: string,
    dst: string,
    sport: number,
    dport: number,
    now: number,
  ): { entry: ConntrackEntry; direction: 'original' | 'reply' } | undefined {
    const fam = family === 4 ? this.v4 : this.v6
    const w = new Uint32Array(fam.kw)
    if (parseIpWords(src, family, w, 0) === undefined || parseIpWords(dst, family, w, fam.aw) === undefined) return undefined
    w[2 * fam.aw] = ((sport << 16) | dport) >>> 0
    return this.locked(() => {
      const ref = fam.ct.find(w, 0, proto)
      if (ref < 0 || fam.ct.expires[ref >>> 1]! <= now) return undefined
      return { entry: this.decode(fam, ref >>> 1, now), direction: (ref & 1) === ORIG ? ('original' as const) : ('reply' as const) }
    })
  }

  /**
   * Deletes the connection whose original tuple this is (conntrack -D of one entry, as the control thread asks after
   * matching a listing); false when it is gone already.
   */
  deleteTuple(family: Family, proto: number, src: string, dst: string, sport: number, dport: number): boolean {
    const fam = family === 4 ? this.v4 : this.v6
    const w = this.tupleScratch
    if (parseIpWords(src, family, w, 0) === undefined || parseIpWords(dst, family, w, fam.aw) === undefined) return false
    w[2 * fam.aw] = ((sport << 16) | dport) >>> 0
    return this.locked(() => {
      const ref = fam.ct.find(w, 0, proto)
      if (ref < 0 || (ref & 1) !== ORIG) return false
      fam.ct.delete(ref >>> 1)
      return true
    })
  }

  private readonly tupleScratch = new Uint32Array(9)

  /** The live affinity pin of `client` for a service port (its id and family are all it needs), for explain/trace. */
  findAffinity(sp: Pick<SvcPort, 'id' | 'family'>, client: string, now: number): { endpoint: string; expiresIn: number } | undefined {
    const fam = sp.family === 4 ? this.v4 : this.v6
    const aff = fam.aff
    aff.key[0] = sp.id
    if (parseIpWords(client, sp.family, aff.key, 1) === undefined) return undefined
    return this.locked(() => {
      const s = aff.map.find()
      if (s < 0 || aff.expiresOf(s) <= now) return undefined
      return {
        endpoint: endpointString(wordsToString(aff.vals, aff.valOff(s), sp.family), aff.portOf(s)),
        expiresIn: aff.expiresOf(s) - now,
      }
    })
  }

  /** Deletes the conntrack entries the filter selects (conntrack -D); returns how many. Single-thread convenience. */
  flush(filter: ConntrackFilter = {}): number {
    const f = resolveCtFilter(filter, this.table_)
    let n = 0
    for (let c = 0; c >= 0; ) {
      const r = this.flushChunk(f, c, 1 << 16)
      n += r.flushed
      c = r.next
    }
    return n
  }

  /** Conntrack state for a restart (single-thread convenience: chunks assembled with this engine's table). */
  snapshot(): Buffer {
    const chunks: ArrayBuffer[] = []
    for (let c = 0; c >= 0; ) {
      const r = this.ctChunk(c, 1 << 16)
      chunks.push(r.bytes)
      c = r.next
    }
    return assembleSnapshot(chunks, this.table)
  }

  /**
   * Loads a snapshot() into this engine's (current) table: entries of service ports that no longer exist, and of
   * endpoints that stopped serving, are not kept (TCP ones get a reset queued); corrupt entries are skipped and
   * counted (restoreReport()). Returns entries restored. A file that is not a snapshot throws a RangeError.
   */
  restore(buf: Uint8Array, now: number): number {
    // a file of an older version was written on this engine's clock (single-thread callers: tests, tools)
    const { chunks, report } = prepareRestore(buf, this.table, Date.now(), newRestoreReport(), now)
    for (const c of chunks) this.restoreChunk(c, now, report)
    this.lastRestore = report
    return report.restored
  }

  /** What the last restore() did, with the first few problems in words. */
  lastRestore: RestoreReport = newRestoreReport()

  /**
   * Packet side of a restore: entries of one prepareRestore() chunk (service-port ids already mapped onto the
   * installed table). Fields are checked again; counts go to `report`.
   */
  restoreChunk(bytes: ArrayBuffer | Uint8Array, now: number, report: RestoreReport = newRestoreReport()): RestoreReport {
    const view = new SetView()
    this.locked(() =>
      restoreCtChunk(this.v4, this.v6, bytes, now, report, (fam, e) => {
        if (this.tracking) this.connForget(fam, e)
        const ct = fam.ct
        const id = ct.svcPort[e]!
        if (id < 0) {
          this.book.attach(fam.aw === 1 ? 0 : 1, ct, e, 0, false)
          return true
        }
        const ro = ct.tupleOff(e, REPLY)
        if (this.tables.present(id) && findEndpoint(this.tables.view(view, id, Rec.SERVING_SET), ct.tuples, ro, ct.tuples[ro + 2 * fam.aw]! >>> 16, -1) >= 0) {
          this.book.attach(fam.aw === 1 ? 0 : 1, ct, e, this.tables.rec[id * REC_WORDS + Rec.UID]!, false)
          return true
        }
        // Endpoints that stopped serving while we were down.
        if (ct.proto[e] === IPPROTO_TCP) {
          const s = ct.state[e]!
          if (s !== TcpState.TIME_WAIT && s !== TcpState.CLOSE && s !== TcpState.NONE) this.queueReset(fam, e)
        }
        ct.delete(e)
        this.counters[NatStat.STALE_FLUSHED]!++
        return false
      }),
    )
    return report
  }

  // -------------------------------------------------------------------------------------------------------------
  // Connect tracking: per-backend signals, outlier ejection, connect-time failover (signals.ts, outlier.ts,
  // failover.ts). Every method here runs only when opts.connect turned it on (this.tracking). Pending connects
  // and the outlier's list hold slot refs (book.ref), which stop resolving when the control thread frees a slot.

  /** A new connection on entry e to endpoint slot b (-1: none) (before its first packet is translated). */
  private connOpened(fam: Fam, e: number, b: number, buf: Uint8Array, info: PacketInfo, state: number): void {
    const book = this.book
    const aw = fam.aw
    const pend = this.pend!
    const of = aw === 1 ? pend.of4 : pend.of6
    of[e] = 0
    if (b < 0 || info.l4Proto !== IPPROTO_TCP || state !== TcpState.SYN_SENT) return
    book.sig[b * SIG_WORDS + Sig.TCP_OPENED]!++
    const ct = fam.ct
    const p = pend.add(fam.family, e, ct.tuples[e * ct.tw + 2 * aw]!, book.ref(b), this.msClock(), this.synTimeoutMs)
    if (p < 0) {
      this.connCounters[ConnStat.UNTRACKED]!++
      return
    }
    // A SYN carrying data (TCP Fast Open) has exchanged data: never failed over.
    const doff = (buf[info.l4Off + 12]! >>> 4) << 2
    if (this.failoverOn && (info.l4Len > doff || !pend.keep(p, buf, info.l3Off, info.l3Len))) this.connCounters[ConnStat.SYN_NOT_KEPT]!++
  }

  /** Entry e was made without a chosen endpoint (pickup, restore): nothing to attribute. */
  private connForget(fam: Fam, e: number): void {
    this.book.detach(fam.aw === 1 ? 0 : 1, e)
    ;(fam.aw === 1 ? this.pend!.of4 : this.pend!.of6)[e] = 0
  }

  /**
   * A TCP segment of tracked entry e, before conntrack sees it: counts resets; in SYN_SENT, a SYN-ACK from the
   * endpoint ends the connect (its time goes to the histogram) and a RST fails it. Returns an action when the
   * segment is swallowed (failed over), else -1.
   */
  private connWatch(fam: Fam, e: number, dir: number, flags: number, now: number): number {
    const ct = fam.ct
    const st = ct.state[e]!
    this.tcpBefore = st
    const book = this.book
    const b = book.entry(fam.aw === 1 ? 0 : 1, e)
    if (b >= 0 && (flags & TCP_RST) !== 0 && (!this.isShared || book.holds(b, ct, e))) book.sig[b * SIG_WORDS + Sig.RST_CLIENT + dir]!++
    if (dir !== REPLY || st !== TcpState.SYN_SENT) return -1
    const p = (fam.aw === 1 ? this.pend!.of4 : this.pend!.of6)[e]! - 1
    if (p < 0) return -1
    const pend = this.pend!
    if (!pend.owns(p, fam.family, e, ct.tuples[e * ct.tw + 2 * fam.aw]!)) return -1
    if ((flags & (TCP_SYN | TCP_ACK | TCP_RST)) === (TCP_SYN | TCP_ACK)) {
      const ep = book.resolve(pend.ep[p]!)
      if (ep >= 0) {
        book.connectTime(ep, this.msClock() - pend.sentMs[p]!)
        this.outlier?.succeeded(ep)
      }
      pend.release(p)
      return -1
    }
    if ((flags & TCP_RST) !== 0) return this.connFailed(fam, e, p, ConnectFail.RST, now) ? NatAction.DROP : -1
    return -1
  }

  /** After conntrack saw a segment of entry e: a connection that just ended is counted closed. */
  private connAfter(fam: Fam, e: number): void {
    const st = fam.ct.state[e]!
    if (st === this.tcpBefore || (st !== TcpState.TIME_WAIT && st !== TcpState.CLOSE)) return
    if (this.tcpBefore === TcpState.TIME_WAIT || this.tcpBefore === TcpState.CLOSE) return
    const b = this.book.entry(fam.aw === 1 ? 0 : 1, e)
    if (b >= 0 && (!this.isShared || this.book.holds(b, fam.ct, e))) this.book.sig[b * SIG_WORDS + Sig.CLOSED]!++
  }

  /** An ICMP unreachable from the endpoint's side quoting entry e's SYN: true when it was swallowed (failed over). */
  private connUnreachable(fam: Fam, e: number, info: PacketInfo, now: number): boolean {
    if (info.icmpType !== (fam.aw === 1 ? ICMP_DEST_UNREACH : ICMPV6_DEST_UNREACH)) return false
    const ct = fam.ct
    if (ct.state[e] !== TcpState.SYN_SENT) return false
    const p = (fam.aw === 1 ? this.pend!.of4 : this.pend!.of6)[e]! - 1
    if (p < 0 || !this.pend!.owns(p, fam.family, e, ct.tuples[e * ct.tw + 2 * fam.aw]!)) return false
    return this.connFailed(fam, e, p, ConnectFail.UNREACHABLE, now)
  }

  /**
   * The connect of pending slot p (entry e) failed: counted against its endpoint (ejection); with failover the SYN
   * goes to another ready endpoint not tried yet and true is returned (what failed is swallowed). False: the
   * failure takes its course.
   */
  private connFailed(fam: Fam, e: number, p: number, why: number, now: number): boolean {
    const pend = this.pend!
    const book = this.book
    const b = book.resolve(pend.ep[p]!)
    const nowMs = this.msClock()
    // a slot freed meanwhile (its endpoint left the table): the failure counts nowhere (a scratch word)
    const sig = b >= 0 ? book.sig : this.noSig
    const o = b >= 0 ? b * SIG_WORDS : 0
    sig[o + Sig.FAILED]!++
    // the attempt is over; a RST that reaches the client is counted closed by conntrack's transition (connAfter)
    const closed = o + Sig.CLOSED
    this.connCounters[ConnStat.FAILED_RST + why]!++
    if (b >= 0 && this.outlier?.failed(b, nowMs)) {
      this.connCounters[ConnStat.EJECTIONS]!++
      this.onConnectEvent?.(1, fam.family, e, b, why)
    }
    this.onConnectEvent?.(0, fam.family, e, b, why)
    if (!this.failoverOn || pend.len[p] === 0 || pend.tries[p]! >= this.maxTries) {
      if (this.failoverOn) this.connCounters[ConnStat.FAILOVER_EXHAUSTED]!++
      if (why !== ConnectFail.RST) sig[closed]!++
      pend.release(p)
      return false
    }
    const ne = this.retarget(fam, e, p, now)
    if (ne === GONE) {
      // The old entry is gone and no new one could be made: the failure is swallowed, the client's next SYN is new.
      this.connCounters[ConnStat.RESEND_DROPPED]!++
      sig[closed]!++
      pend.release(p)
      return true
    }
    if (ne < 0) {
      this.connCounters[ConnStat.FAILOVER_EXHAUSTED]!++
      if (why !== ConnectFail.RST) sig[closed]!++
      pend.release(p)
      return false
    }
    sig[closed]!++
    this.connCounters[ConnStat.FAILOVER]!++
    return true
  }

  /**
   * Moves pending connection p (entry e, SYN_SENT) to another endpoint of the set decide() gives its original tuple,
   * one not tried and not ejected (uniformly among those), and queues its SYN. Returns the new entry, -1 (nothing
   * changed) or GONE (the old entry was deleted but no new one could be made).
   */
  private retarget(fam: Fam, e: number, p: number, now: number): number {
    const ct = fam.ct
    const pend = this.pend!
    const book = this.book
    const aw = fam.aw
    const kw = ct.kw
    const k = ct.key
    const o = e * ct.tw
    for (let i = 0; i < kw; i++) k[i] = ct.tuples[o + i]!
    const ports = k[2 * aw]!
    const v = frontendOf(fam, k, IPPROTO_TCP, ports & 0xffff)
    if (v === NO_FRONTEND) return -1
    const dec = this.decided
    if (decide(this.tables, fam, v, k, dec) !== Decision.DNAT) return -1
    const id = dec.id
    if (id !== ct.svcPort[e]) return -1
    const set = this.tables.view(this.set, id, dec.which)
    const uid = this.tables.rec[id * REC_WORDS + Rec.UID]!
    const stride = aw + 1
    const nowMs = this.msClock()
    // Candidates: not tried; ejected ones only when nothing else is left.
    let fresh = 0
    let healthy = 0
    for (let i = 0; i < set.count; i++) {
      const eo = set.off + i * stride
      const b = book.slot(id, uid, set.data, eo, aw, set.data[eo + aw]! & 0xffff)
      if (pend.wasTried(p, b < 0 ? -1 : book.ref(b))) continue
      fresh++
      if (this.outlier === null || !this.outlier.skip(b, id, set.count, nowMs)) healthy++
    }
    if (fresh === 0) return -1
    const useHealthy = healthy > 0
    let r = this.rng.below(useHealthy ? healthy : fresh)
    let idx = -1
    let nb = -1
    for (let i = 0; i < set.count; i++) {
      const eo = set.off + i * stride
      const b = book.slot(id, uid, set.data, eo, aw, set.data[eo + aw]! & 0xffff)
      if (pend.wasTried(p, b < 0 ? -1 : book.ref(b))) continue
      if (useHealthy && this.outlier !== null && this.outlier.skip(b, id, set.count, nowMs)) continue
      if (r-- === 0) {
        idx = i
        nb = b
        break
      }
    }
    if (idx < 0) return -1
    // Rebuild the entry: same original tuple, reply tuple from the new endpoint.
    const epOff = set.off + idx * stride
    const epPort = set.data[epOff + aw]! & 0xffff
    const snat = (ct.flags[e]! & CtFlag.SNAT) !== 0
    const seq = ct.seqNext[e * 2]!
    const tk = ct.tk
    for (let i = 0; i < kw; i++) tk[i] = k[i]!
    const replyDst0 = o + kw + aw
    for (let i = 0; i < aw; i++) {
      tk[kw + i] = set.data[epOff + i]!
      tk[kw + aw + i] = ct.tuples[replyDst0 + i]!
    }
    const clientPort = ct.tuples[o + kw + 2 * aw]! & 0xffff
    const portsAt = kw + 2 * aw
    // The client itself would need masquerading (hairpin) that this connection was not set up with.
    if (!snat && isHairpin(set, idx, k)) return -1
    ct.delete(e)
    this.connForget(fam, e)
    tk[portsAt] = ((epPort << 16) | clientPort) >>> 0
    if (ct.find(tk, kw, IPPROTO_TCP) >= 0 && this.allocPort(ct, IPPROTO_TCP, epPort, portsAt) < 0) return GONE
    const ne = ct.create(IPPROTO_TCP, id, idx, now)
    if (ne < 0) return GONE
    ct.setTcpState(ne, TcpState.SYN_SENT, now)
    ct.seqNext[ne * 2] = seq
    book.attach(aw === 1 ? 0 : 1, ct, ne, uid, true)
    if (nb >= 0) book.sig[nb * SIG_WORDS + Sig.TCP_OPENED]!++
    const affinity = this.tables.rec[id * REC_WORDS + Rec.AFFINITY]!
    if (affinity > 0) {
      const ak = fam.aff.key
      ak[0] = id
      for (let i = 0; i < aw; i++) ak[1 + i] = k[i]!
      fam.aff.pin(set, idx, now + affinity)
    }
    pend.ports[p] = tk[2 * aw]!
    pend.retried(p, ne, nb < 0 ? -1 : book.ref(nb), nowMs, this.synTimeoutMs)
    return ne
  }

  /** The chosen endpoint idx is ejected: another one the same way (bounded redraws, then a scan), or idx in panic. */
  private avoidEjected(fam: Fam, id: number, set: SetView, idx: number, proto: number): number {
    const book = this.book
    const ol = this.outlier!
    const uid = this.tables.rec[id * REC_WORDS + Rec.UID]!
    const aw = fam.aw
    const stride = aw + 1
    const nowMs = this.msClock()
    const n = set.count
    let i = idx
    for (let tries = 0; tries < 8; tries++) {
      const eo = set.off + i * stride
      if (!ol.skip(book.slot(id, uid, set.data, eo, aw, set.data[eo + aw]! & 0xffff), id, n, nowMs)) {
        if (i !== idx) this.connCounters[ConnStat.SKIPPED_EJECTED]!++
        return i
      }
      i = set.maglev !== null ? (i + 1) % n : this.pick(set, fam, proto, id)
    }
    for (i = 0; i < n; i++) {
      const eo = set.off + i * stride
      if (!ol.skip(book.slot(id, uid, set.data, eo, aw, set.data[eo + aw]! & 0xffff), id, n, nowMs)) {
        this.connCounters[ConnStat.SKIPPED_EJECTED]!++
        return i
      }
    }
    return idx
  }

  /** Timer: connects past their deadline fail (and fail over); ejections whose time is up end. O(pending). */
  private connTick(nowMs: number, now: number): void {
    const pend = this.pend!
    for (let i = 0; i < pend.count; ) {
      const p = pend.liveAt(i)
      if (pend.deadlineMs[p]! > nowMs) {
        i++
        continue
      }
      const fam = pend.fam[p] === 4 ? this.v4 : this.v6
      const e = pend.entry[p]!
      const ct = fam.ct
      if (!ct.isUsed(e) || ct.state[e] !== TcpState.SYN_SENT || !pend.owns(p, fam.family, e, ct.tuples[e * ct.tw + 2 * fam.aw]!)) {
        pend.release(p)
        continue
      }
      const before = pend.count
      if (this.connFailed(fam, e, p, ConnectFail.TIMEOUT, now)) i++
      else if (pend.count === before) i++
    }
    if (this.outlier !== null) this.outlier.expire(nowMs, this.backScratch)
  }

  /** Failover SYNs waiting to be sent. */
  get pendingFailover(): number {
    return this.pend === null ? 0 : this.pend.outCount
  }

  /**
   * Writes up to `max` failover SYNs into `out` (the shape of writeResets): each is the client's SYN as it came,
   * translated for its new entry, with a full TCP checksum (a packet tundra sends itself).
   */
  writeFailover(out: Uint8Array, outOff: number, offsets: Uint32Array, lengths: Uint32Array, max: number, gap = 0): number {
    const pend = this.pend
    if (pend === null) return 0
    let o = outOff
    let n = 0
    const limit = Math.min(max, offsets.length, lengths.length)
    const info = this.foInfo
    while (n < limit) {
      const p = pend.shiftOut()
      if (p < 0) break
      const len = pend.len[p]!
      if (pend.fam[p] === 0 || len === 0) continue
      const at = o + gap
      if (at + len > out.length) {
        this.connCounters[ConnStat.RESEND_DROPPED]!++
        break
      }
      out.fill(0, o, at)
      out.set(pend.bytes.subarray(p * SYN_BYTES, p * SYN_BYTES + len), at)
      if (parsePacket(out, at, len, info, false) !== PASS || info.l4Proto !== IPPROTO_TCP) continue
      const fam = info.family === 4 ? this.v4 : this.v6
      this.translate(fam, out, info, pend.entry[p]!, ORIG, false)
      if (info.family === 4) fillTcpChecksum4(out, info.l4Off, info.l4Len, get32(out, at + 12), get32(out, at + 16))
      else fillTcpChecksum6(out, info.l4Off, info.l4Len, info.srcOff, info.dstOff)
      offsets[n] = at
      lengths[n] = len
      n++
      o = at + len
    }
    return n
  }
}

/** Turns the scratch key (src, dst, sport<<16|dport) into its reverse in place; applying it twice restores it. */
function swapKey(k: Uint32Array, aw: number): void {
  for (let i = 0; i < aw; i++) {
    const a = k[i]!
    k[i] = k[aw + i]!
    k[aw + i] = a
  }
  const p = k[2 * aw]!
  k[2 * aw] = ((p << 16) | (p >>> 16)) >>> 0
}

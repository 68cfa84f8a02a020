// `tundra observe`: a live flow stream (new / closed / rejected / dropped flows with their reason, DNS queries and
// answers, failed connects and endpoint ejections), like `hubble observe`.
//
// The loop holds `observer: FlowRing | null`; it is null unless someone watches, so the cost then is that null check.
// While watched, the packet thread writes fixed-size records into a preallocated ring (REC_WORDS words, a time and a
// NAME_BYTES name per record; drop-oldest, counted); the control thread drains it with a bounded request (drain():
// at most `max` records, copied) and decodes the copy with decodeFlows().
import type { PacketInfo } from '../wire/packet'
import { IPPROTO_TCP } from '../wire/proto'
import { TCP_FIN, TCP_RST } from '../wire/tcp'
import type { NatEngine } from '../nat/engine'
import { NatAction, NatStat, NAT_STAT_NAMES } from '../nat/verdict'

/** Record kinds. */
const Flow = {
  NEW: 0,
  CLOSED: 1,
  REJECTED: 2,
  DROPPED: 3,
  DNS_QUERY: 4,
  DNS_ANSWER: 5,
  CONNECT_FAILED: 6,
  EJECTED: 7,
} as const
const FLOW_NAMES: readonly string[] = ['new', 'closed', 'rejected', 'dropped', 'dns-query', 'dns-answer', 'connect-failed', 'ejected']

/** Words per record: kind|family<<8|proto<<16, src (4), dst (4), sport<<16|dport, to (4), toPort|reason<<16, extra */
const REC_WORDS = 16
const W = { HEAD: 0, SRC: 1, DST: 5, PORTS: 9, TO: 10, TO_PORT: 14, EXTRA: 15 } as const
/** DNS name bytes per record (a longer name is cut). */
const NAME_BYTES = 64
/** Reasons: NAT counter index, LOOP_REASON + loop drop code, or these. */
const LOOP_REASON = 0x100
const REASON_FIN = 0x200
const REASON_RST = 0x201
const CONNECT_REASON = 0x300
const CONNECT_REASONS: readonly string[] = ['rst', 'unreachable', 'timeout']

/** A decoded record (control thread). */
export interface FlowRecord {
  /** wall-clock ms (the packet thread's monotonic clock plus its time origin) */
  readonly timeMs: number
  readonly kind: string
  readonly family: 4 | 6
  readonly protocol: string
  readonly src: string
  readonly sport: number
  readonly dst: string
  readonly dport: number
  /** the endpoint a new flow went to, a failed / ejected endpoint ('' none) */
  readonly endpoint: string
  readonly reason: string
  /** DNS: the name, type and (answers) the rcode */
  readonly dns?: { readonly name: string; readonly qtype: number; readonly rcode?: number }
}

export class FlowRing {
  readonly cap: number
  private readonly words: Uint32Array
  private readonly times: Float64Array
  private readonly names: Uint8Array
  private head = 0
  count = 0
  /** records overwritten before they were read */
  overwritten = 0
  /** ms (performance.now()) of the last drain: the packet path stops watching when nobody asks for a while */
  lastDrainMs = performance.now()
  private readonly before: Float64Array
  /** the packet's tuple before NAT: src (4), dst (4), ports */
  private readonly preW = new Uint32Array(9)

  constructor(
    cap: number,
    private readonly engine: NatEngine,
  ) {
    this.cap = cap
    this.words = new Uint32Array(cap * REC_WORDS)
    this.times = new Float64Array(cap)
    this.names = new Uint8Array(cap * NAME_BYTES)
    this.before = new Float64Array(engine.counters.length)
  }

  /** The next record's word offset (drop-oldest when full). */
  private next(kind: number, family: number, proto: number): number {
    let i: number
    if (this.count < this.cap) {
      i = (this.head + this.count) % this.cap
      this.count++
    } else {
      i = this.head
      this.head = (this.head + 1) % this.cap
      this.overwritten++
    }
    const o = i * REC_WORDS
    this.words.fill(0, o, o + REC_WORDS)
    this.words[o] = kind | (family << 8) | (proto << 16)
    this.times[i] = performance.now()
    this.names[i * NAME_BYTES] = 0
    return o
  }

  /** Addresses and ports of the packet as it came (before NAT rewrote it). */
  private tuple(o: number, buf: Uint8Array, info: PacketInfo): void {
    const w = this.words
    if (info.family === 4) {
      w[o + W.SRC] = info.src
      w[o + W.DST] = info.dst
    } else {
      for (let i = 0; i < 4; i++) {
        w[o + W.SRC + i] = word(buf, info.srcOff + i * 4)
        w[o + W.DST + i] = word(buf, info.dstOff + i * 4)
      }
    }
    w[o + W.PORTS] = ((info.srcPort << 16) | info.dstPort) >>> 0
  }

  /** Before NAT: remembers the engine's counters (what changed says why a packet was dropped) and the tuple. */
  beforeNat(buf: Uint8Array, info: PacketInfo): void {
    this.before.set(this.engine.counters)
    const p = this.preW
    p.fill(0)
    if (info.family === 4) {
      p[0] = info.src
      p[4] = info.dst
    } else
      for (let i = 0; i < 4; i++) {
        p[i] = word(buf, info.srcOff + i * 4)
        p[4 + i] = word(buf, info.dstOff + i * 4)
      }
    p[8] = ((info.srcPort << 16) | info.dstPort) >>> 0
  }

  /** After NAT: a record for a new, closing, rejected or dropped flow. `buf` holds the translated packet. */
  afterNat(buf: Uint8Array, off: number, info: PacketInfo, act: number): void {
    const srcWords = this.preW
    const c = this.engine.counters
    if (act === NatAction.FORWARD) {
      if (c[NatStat.NEW]! > this.before[NatStat.NEW]!) {
        const o = this.next(Flow.NEW, info.family, info.l4Proto)
        this.pre(o, srcWords)
        // the endpoint: the translated destination
        if (info.family === 4) this.words[o + W.TO] = ((buf[off + 16]! << 24) | (buf[off + 17]! << 16) | (buf[off + 18]! << 8) | buf[off + 19]!) >>> 0
        else for (let i = 0; i < 4; i++) this.words[o + W.TO + i] = word(buf, off + 24 + i * 4)
        if (info.l4Off >= 0) this.words[o + W.TO_PORT] = (buf[info.l4Off + 2]! << 8) | buf[info.l4Off + 3]!
      } else if (info.l4Proto === IPPROTO_TCP && (info.tcpFlags & (TCP_FIN | TCP_RST)) !== 0) {
        const o = this.next(Flow.CLOSED, info.family, info.l4Proto)
        this.pre(o, srcWords)
        this.words[o + W.TO_PORT] = ((info.tcpFlags & TCP_RST) !== 0 ? REASON_RST : REASON_FIN) << 16
      }
      return
    }
    if (act !== NatAction.DROP && act !== NatAction.REJECT) return
    const o = this.next(act === NatAction.DROP ? Flow.DROPPED : Flow.REJECTED, info.family, info.l4Proto)
    this.pre(o, srcWords)
    let reason = 0
    for (let i = 0; i < c.length; i++)
      if (c[i]! > this.before[i]! && i !== NatStat.INVALID) {
        reason = i
        if (NAT_STAT_NAMES[i]!.startsWith('drop') || NAT_STAT_NAMES[i]!.startsWith('reject')) break
      }
    this.words[o + W.TO_PORT] = reason << 16
  }

  /** The pre-NAT tuple the loop saved (preTuple) into the record at o. */
  private pre(o: number, s: Uint32Array): void {
    for (let i = 0; i < 9; i++) this.words[o + W.SRC + i] = s[i]!
  }

  /** The loop's own drop (spoofed source, no service, ...): `reason` is its drop code. */
  loopDrop(buf: Uint8Array, info: PacketInfo, reason: number): void {
    const o = this.next(Flow.DROPPED, info.family, info.l4Proto)
    this.tuple(o, buf, info)
    this.words[o + W.TO_PORT] = (LOOP_REASON + reason) << 16
  }

  /** A DNS query (rcode < 0) or its answer, with the question name read from the message at q. */
  dns(buf: Uint8Array, info: PacketInfo, q: number, qlen: number, rcode: number): void {
    const o = this.next(rcode < 0 ? Flow.DNS_QUERY : Flow.DNS_ANSWER, info.family, info.l4Proto)
    this.tuple(o, buf, info)
    const i = o / REC_WORDS
    const nb = i * NAME_BYTES
    // QNAME from offset 12: labels copied as dotted text, at most NAME_BYTES - 1 bytes
    let p = q + 12
    let n = 0
    const end = q + qlen
    while (p < end) {
      const l = buf[p]!
      if (l === 0 || l > 63) break
      if (n > 0 && n < NAME_BYTES - 1) this.names[nb + 1 + n++] = 0x2e
      for (let k = 1; k <= l && p + k < end && n < NAME_BYTES - 1; k++) this.names[nb + 1 + n++] = buf[p + k]!
      p += l + 1
    }
    this.names[nb] = n
    const qtype = p + 3 <= end ? (buf[p + 1]! << 8) | buf[p + 2]! : 0
    this.words[o + W.EXTRA] = ((qtype << 16) | (rcode < 0 ? 0xffff : rcode & 0xffff)) >>> 0
  }

  /** A failed connect (kind 0) or an ejection (kind 1) from the engine's connect tracking. */
  connectEvent(kind: number, family: number, e: number, ep: number, why: number): void {
    const o = this.next(kind === 0 ? Flow.CONNECT_FAILED : Flow.EJECTED, family, IPPROTO_TCP)
    const eng = this.engine
    const fam = family === 4 ? eng.v4 : eng.v6
    const ct = fam.ct
    const aw = fam.aw
    const t = e * ct.tw
    if (ct.isUsed(e)) {
      for (let i = 0; i < aw; i++) {
        this.words[o + W.SRC + i] = ct.tuples[t + i]!
        this.words[o + W.DST + i] = ct.tuples[t + aw + i]!
      }
      this.words[o + W.PORTS] = ct.tuples[t + 2 * aw]!
    }
    const book = eng.book
    if (ep >= 0) {
      const k = book.keys
      const at = book.addrOff(ep)
      for (let i = 0; i < aw; i++) this.words[o + W.TO + i] = k[at + i]!
      this.words[o + W.TO_PORT] = (book.portOf(ep) & 0xffff) | ((CONNECT_REASON + why) << 16)
    }
  }

  /** Copies of up to `max` records, oldest first, removed from the ring. */
  drain(max: number): { words: Uint32Array; times: Float64Array; names: Uint8Array; n: number; overwritten: number; originMs: number } {
    const n = Math.min(max, this.count)
    const words = new Uint32Array(n * REC_WORDS)
    const times = new Float64Array(n)
    const names = new Uint8Array(n * NAME_BYTES)
    for (let j = 0; j < n; j++) {
      const i = (this.head + j) % this.cap
      words.set(this.words.subarray(i * REC_WORDS, (i + 1) * REC_WORDS), j * REC_WORDS)
      times[j] = this.times[i]!
      names.set(this.names.subarray(i * NAME_BYTES, (i + 1) * NAME_BYTES), j * NAME_BYTES)
    }
    this.head = (this.head + n) % this.cap
    this.count -= n
    this.lastDrainMs = performance.now()
    return { words, times, names, n, overwritten: this.overwritten, originMs: performance.timeOrigin }
  }
}

function word(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0
}

const PROTOS: Readonly<Record<number, string>> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp' }

function addrText(w: Uint32Array, o: number, family: number): string {
  if (family === 4) {
    const a = w[o]!
    return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`
  }
  const parts: string[] = []
  for (let i = 0; i < 4; i++) parts.push((w[o + i]! >>> 16).toString(16), (w[o + i]! & 0xffff).toString(16))
  return parts.join(':').replace(/(^|:)0(:0)+(:|$)/, '::')
}

/** Decodes a drain() copy; `loopDrops` names the loop's drop codes. */
export function decodeFlows(
  d: { words: Uint32Array; times: Float64Array; names: Uint8Array; n: number; originMs: number },
  loopDrops: readonly string[],
): FlowRecord[] {
  const out: FlowRecord[] = []
  for (let j = 0; j < d.n; j++) {
    const o = j * REC_WORDS
    const w = d.words
    const head = w[o]!
    const kind = head & 0xff
    const family = ((head >>> 8) & 0xff) === 6 ? 6 : 4
    const proto = head >>> 16
    const r = w[o + W.TO_PORT]! >>> 16
    const reason =
      r >= CONNECT_REASON
        ? (CONNECT_REASONS[r - CONNECT_REASON] ?? '')
        : r === REASON_FIN
          ? 'fin'
          : r === REASON_RST
            ? 'rst'
            : r >= LOOP_REASON
              ? (loopDrops[r - LOOP_REASON] ?? String(r))
              : kind === Flow.DROPPED || kind === Flow.REJECTED
                ? (NAT_STAT_NAMES[r] ?? String(r))
                : ''
    const toPort = w[o + W.TO_PORT]! & 0xffff
    const to = w[o + W.TO]! !== 0 || w[o + W.TO + 3]! !== 0 ? addrText(w, o + W.TO, family) : ''
    const rec: FlowRecord = {
      timeMs: d.originMs + d.times[j]!,
      kind: FLOW_NAMES[kind] ?? String(kind),
      family,
      protocol: PROTOS[proto] ?? String(proto),
      src: addrText(w, o + W.SRC, family),
      sport: w[o + W.PORTS]! >>> 16,
      dst: addrText(w, o + W.DST, family),
      dport: w[o + W.PORTS]! & 0xffff,
      endpoint: to === '' ? '' : family === 6 ? `[${to}]:${toPort}` : `${to}:${toPort}`,
      reason,
    }
    if (kind === Flow.DNS_QUERY || kind === Flow.DNS_ANSWER) {
      const nb = j * NAME_BYTES
      const name = Buffer.from(d.names.subarray(nb + 1, nb + 1 + d.names[nb]!)).toString('latin1')
      const x = w[o + W.EXTRA]!
      out.push({ ...rec, dns: { name, qtype: x >>> 16, ...(kind === Flow.DNS_ANSWER ? { rcode: x & 0xffff } : {}) } })
    } else out.push(rec)
  }
  return out
}

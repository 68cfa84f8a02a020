// Connection tracking in typed arrays, after gVisor's stack/conntrack.go and Linux nf_conntrack: every connection
// has an original and a reply tuple, both indexed in one open-addressing hash table, and no object per entry.
//
// Tuple = (src address, dst address, sport << 16 | dport) as uint32 words plus the IP protocol (kept per entry and
// mixed into the hash). A "ref" is entry * 2 + direction (0 original, 1 reply).
//
// Memory layout per entry e, IPv4 (aw = 1, kw = 3 key words, tw = 6 tuple words):
//
//   tuples    Uint32Array  e*6 .. e*6+5   orig src, orig dst, orig ports, reply src, reply dst, reply ports   24 B
//   proto     Uint8Array   e              IP protocol                                                           1 B
//   state     Uint8Array   e              TcpState (0 for other protocols)                                      1 B
//   flags     Uint8Array   e              CtFlag bits                                                           1 B
//   expires   Uint32Array  e              coarse seconds: valid while now < expires                             4 B
//   svcPort   Int32Array   e              service-port id of the NAT table (-1 none)                            4 B
//   endpoint  Int32Array   e              endpoint index in the set it was chosen from (informational)          4 B
//   seqNext   Uint32Array  e*2 + dir      TCP: next sequence number each side will send (for RSTs we build)     8 B
//   counters  Float64Array e*4 ..         packets and bytes, original then reply                               32 B
//   next      Int32Array   e              free-list link                                                        4 B
//   slots     Int32Array   4 per entry    ref + 1 of the tuple in that slot, 0 empty (load <= 1/2)             16 B
//   slotHash  Int32Array   4 per entry    full hash of that slot's tuple (cheap probe compare, no rehash)     16 B
//                                                                                                            -----
//                                                                                                            115 B
//
// Capacity is rounded up to a power of two (slots = 4 * capacity); `max` entries may be live. IPv6 uses the same
// code with aw = 4 (tw = 18, 163 B per entry): the slower family, kept in a separate instance.
//
// Time is a coarse clock in whole seconds, passed in by the caller once per batch. Expired entries are removed
// lazily on lookup and by reap(), which visits a small slice of the table per call.
//
// Every array above is a view into one buffer, laid out by ctLayout(); the table's scalars (count, free-list head,
// reap and early-drop cursors) live in a small Int32Array header in that buffer too. Packet threads that share one
// table (sharedConntrack(): a SharedArrayBuffer) each build a Conntrack over it, and hold its lock (lock()/unlock(),
// one futex-style word in the header) around every lookup and change: ARCHITECTURE.md "Packet threads" says why
// one lock per family and not striped locks. Stats stay per instance (per thread); the control thread sums them.

import { fmix32, mixWord } from './hash'
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../wire/proto'
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from '../wire/tcp'
import type { Family } from '../model/cluster'

export const ORIG = 0
export const REPLY = 1

/** Linux's TCP conntrack states (nf_conntrack_tcp.h order), plus SYN_SENT2 for simultaneous open. */
export const TcpState = {
  NONE: 0,
  SYN_SENT: 1,
  SYN_RECV: 2,
  ESTABLISHED: 3,
  FIN_WAIT: 4,
  CLOSE_WAIT: 5,
  LAST_ACK: 6,
  TIME_WAIT: 7,
  CLOSE: 8,
  SYN_SENT2: 9,
} as const
export const TCP_STATE_NAMES: readonly string[] = [
  'NONE',
  'SYN_SENT',
  'SYN_RECV',
  'ESTABLISHED',
  'FIN_WAIT',
  'CLOSE_WAIT',
  'LAST_ACK',
  'TIME_WAIT',
  'CLOSE',
  'SYN_SENT2',
]

export const CtFlag = {
  USED: 1,
  /** a packet was seen in the reply direction */
  REPLIED: 2,
  /** TCP reached ESTABLISHED with a reply, or UDP/other saw a reply: not a candidate for early drop */
  ASSURED: 4,
  /** the destination is translated (original dst != reply src) */
  DNAT: 8,
  /** the source is translated (original src != reply dst): masquerade or a port clash */
  SNAT: 16,
  /** a least-connections scheduler counts this connection: onDelete is told when it goes (nat/sched.ts) */
  COUNTED: 32,
} as const

/** What tcp() decided about a segment. */
export const TcpVerdict = {
  OK: 0,
  /** no transition from this state on this segment (Linux sIV): count it, drop or pass per policy */
  INVALID: 1,
  /** accepted without a state change (Linux sIG) */
  IGNORE: 2,
  /** a SYN on a closed/time-wait connection: delete the entry and treat the segment as a new connection */
  REOPEN: 3,
} as const

export interface ConntrackTimeouts {
  readonly tcpSynSent: number
  readonly tcpSynRecv: number
  /** kube-proxy sets nf_conntrack_tcp_timeout_established to 86400 */
  readonly tcpEstablished: number
  readonly tcpFinWait: number
  /** kube-proxy sets nf_conntrack_tcp_timeout_close_wait to 3600 */
  readonly tcpCloseWait: number
  readonly tcpLastAck: number
  readonly tcpTimeWait: number
  readonly tcpClose: number
  readonly udp: number
  /** once a reply was seen */
  readonly udpStream: number
  readonly icmp: number
  /** SCTP is tracked without its state machine: unreplied / replied, like UDP */
  readonly sctp: number
  readonly sctpReplied: number
  readonly generic: number
}

export const DEFAULT_TIMEOUTS: ConntrackTimeouts = Object.freeze({
  tcpSynSent: 120,
  tcpSynRecv: 60,
  tcpEstablished: 86400,
  tcpFinWait: 120,
  tcpCloseWait: 3600,
  tcpLastAck: 30,
  tcpTimeWait: 120,
  tcpClose: 10,
  udp: 30,
  udpStream: 120,
  icmp: 30,
  sctp: 30,
  sctpReplied: 210,
  generic: 600,
})

export const CtStat = {
  CREATED: 0,
  DELETED: 1,
  /** a non-assured entry evicted to make room */
  EARLY_DROP: 2,
  /** insert refused: table full and nothing to evict */
  FULL: 3,
  /** expired entries removed by reap() */
  REAPED: 4,
  /** expired entries found (and removed) by a lookup */
  EXPIRED_ON_LOOKUP: 5,
} as const
export const CT_STAT_NAMES: readonly string[] = ['created', 'deleted', 'early_drop', 'full', 'reaped', 'expired_on_lookup']

export interface ConntrackOptions {
  readonly family: Family
  /**
   * a table other threads use too (sharedConntrack()): its buffer is used as it is (not initialised again); `max`,
   * `family` and `seed` come from it
   */
  readonly shared?: SharedConntrack
  /** this thread's lock owner id (1..2^31-1; default 1): a dead owner's lock can be released by the survivor */
  readonly lockOwner?: number
  /** most live entries (default 262144); capacity is this rounded up to a power of two */
  readonly max?: number
  readonly timeouts?: Partial<ConntrackTimeouts>
  /** hash seed (random by default, so remote hosts cannot aim for collisions) */
  readonly seed?: number
}

// Linux tcp_conntracks[dir][index][state]; sIV = invalid, sIG = ignore. Index: syn, synack, fin, ack, rst, none.
// biome-ignore format: the kernel's state table, a row per segment kind and a column per state
const sNO = 0, sSS = 1, sSR = 2, sES = 3, sFW = 4, sCW = 5, sLA = 6, sTW = 7, sCL = 8, sS2 = 9, sIV = 10, sIG = 11
// biome-ignore format: a row per segment kind, a column per state, as in the kernel's nf_conntrack_proto_tcp.c
const TCP_TABLE = Uint8Array.from([
  // ORIGINAL     sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
  /* syn    */ sSS, sSS, sIG, sIG, sIG, sIG, sIG, sSS, sSS, sS2,
  /* synack */ sIV, sIV, sSR, sIV, sIV, sIV, sIV, sIV, sIV, sSR,
  /* fin    */ sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV,
  /* ack    */ sES, sIV, sES, sES, sCW, sCW, sTW, sTW, sCL, sIV,
  /* rst    */ sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL,
  /* none   */ sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV,
  // REPLY
  /* syn    */ sIV, sS2, sIV, sIV, sIV, sIV, sIV, sSS, sIV, sS2,
  /* synack */ sIV, sSR, sIG, sIG, sIG, sIG, sIG, sIG, sIG, sSR,
  /* fin    */ sIV, sIV, sFW, sFW, sLA, sLA, sLA, sTW, sCL, sIV,
  /* ack    */ sIV, sIG, sSR, sES, sCW, sCW, sTW, sTW, sCL, sIG,
  /* rst    */ sIV, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL,
  /* none   */ sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV, sIV,
])
void sNO

/** Row of TCP_TABLE for a segment's flags (Linux get_conntrack_index). */
function tcpIndex(flags: number): number {
  if (flags & TCP_RST) return 4
  if (flags & TCP_SYN) return flags & TCP_ACK ? 1 : 0
  if (flags & TCP_FIN) return 2
  if (flags & TCP_ACK) return 3
  return 5
}

/** Entries visited by one early-drop attempt (Linux scans a few buckets too). */
const EARLY_DROP_SCAN = 64

/** Header words (Int32) at the start of a table's buffer. */
const Hdr = { COUNT: 0, FREE: 1, REAP: 2, DROP: 3, LOCK: 4, WAITERS: 5, WORDS: 8 } as const
/** Service-port ids whose live entries a shared table counts (entriesOf answers "maybe" above). */
const SHARED_PER_SVC = 1 << 16
/** Spins on a held lock before sleeping on it (a NAT step holds it for well under a microsecond). */
const LOCK_SPINS = 256
/** A sleeper re-checks the lock at least this often (ms): a thread that died holding it is then noticed. */
const LOCK_WAIT_MS = 1

/** A conntrack table in a SharedArrayBuffer: what crosses to each packet thread (structured clone shares it). */
export interface SharedConntrack {
  readonly sab: SharedArrayBuffer
  readonly family: Family
  readonly max: number
  readonly seed: number
}

/** Byte offsets of every array in a table's buffer (8-aligned), and its size. */
function ctLayout(family: Family, cap: number, perSvc: number): Record<string, number> {
  const tw = family === 4 ? 6 : 18
  const sizes: [string, number][] = [
    ['header', Hdr.WORDS * 4],
    ['counters', cap * 4 * 8],
    ['tuples', cap * tw * 4],
    ['expires', cap * 4],
    ['svcPort', cap * 4],
    ['endpoint', cap * 4],
    ['seqNext', cap * 2 * 4],
    ['next', cap * 4],
    ['slots', cap * 4 * 4],
    ['slotHash', cap * 4 * 4],
    ['perSvc', perSvc * 4],
    ['proto', cap],
    ['state', cap],
    ['flags', cap],
  ]
  const out: Record<string, number> = {}
  let o = 0
  for (const [k, n] of sizes) {
    out[k] = o
    o += (n + 7) & ~7
  }
  out.bytes = o
  return out
}

function capacityFor(max: number): number {
  let cap = 16
  while (cap < max) cap *= 2
  return cap
}

/** A new, empty table in a SharedArrayBuffer, for packet threads to share (each wraps it: new Conntrack({ shared })). */
export function sharedConntrack(family: Family, max: number, seed: number = (Math.random() * 0x100000000) >>> 0): SharedConntrack {
  max = Math.max(1, Math.floor(max))
  const cap = capacityFor(max)
  const sab = new SharedArrayBuffer(ctLayout(family, cap, SHARED_PER_SVC).bytes!)
  const sc = { sab, family, max, seed: seed >>> 0 }
  initFreeList(new Int32Array(sab, ctLayout(family, cap, SHARED_PER_SVC).next!, cap), cap)
  return sc
}

function initFreeList(next: Int32Array, cap: number): void {
  for (let i = 0; i < cap; i++) next[i] = i + 1
  next[cap - 1] = -1
}

const SNAPSHOT_MAGIC = 0x54434e54 // "TNCT"
const SNAPSHOT_VERSION = 1

export class Conntrack {
  readonly family: Family
  /** address words */
  readonly aw: number
  /** key words of one tuple: 2 * aw + 1 */
  readonly kw: number
  /** words of both tuples */
  readonly tw: number
  readonly capacity: number
  readonly max: number
  readonly timeouts: ConntrackTimeouts
  /** header words (count, free head, cursors, lock) in the table's buffer */
  private readonly hdr: Int32Array
  /** whether other threads use this table: lock() then matters */
  readonly isShared: boolean
  private readonly owner: number

  readonly tuples: Uint32Array
  readonly proto: Uint8Array
  readonly state: Uint8Array
  readonly flags: Uint8Array
  readonly expires: Uint32Array
  readonly svcPort: Int32Array
  readonly endpoint: Int32Array
  readonly seqNext: Uint32Array
  readonly counters: Float64Array
  private readonly next: Int32Array
  readonly slots: Int32Array
  readonly slotHash: Int32Array
  private readonly mask: number
  readonly seed: number
  /** per-state TCP timeouts, by TcpState */
  private readonly tcpTimeout: Uint32Array

  /** scratch: one tuple to look up (kw words) */
  readonly key: Uint32Array
  /** scratch: original then reply tuple of an entry to create (tw words) */
  readonly tk: Uint32Array
  /** CtStat counters */
  readonly stats = new Float64Array(CT_STAT_NAMES.length)
  /** live entries per service-port id (grows with the highest id seen): lets a stale-flow flush skip ids with none */
  private perSvc: Uint32Array

  constructor(opts: ConntrackOptions) {
    const sh = opts.shared
    this.family = sh?.family ?? opts.family
    this.aw = this.family === 4 ? 1 : 4
    this.kw = 2 * this.aw + 1
    this.tw = 2 * this.kw
    this.max = sh?.max ?? Math.max(1, Math.floor(opts.max ?? 262144))
    const cap = capacityFor(this.max)
    this.capacity = cap
    this.timeouts = Object.freeze({ ...DEFAULT_TIMEOUTS, ...(opts.timeouts ?? {}) })
    this.seed = sh?.seed ?? opts.seed ?? (Math.random() * 0x100000000) >>> 0
    this.isShared = sh !== undefined
    this.owner = opts.lockOwner ?? 1
    if (!(Number.isInteger(this.owner) && this.owner >= 1 && this.owner <= 0x7fffffff)) throw new RangeError(`bad lockOwner ${this.owner}`)
    const t = this.timeouts
    this.tcpTimeout = Uint32Array.from([
      t.tcpClose,
      t.tcpSynSent,
      t.tcpSynRecv,
      t.tcpEstablished,
      t.tcpFinWait,
      t.tcpCloseWait,
      t.tcpLastAck,
      t.tcpTimeWait,
      t.tcpClose,
      t.tcpSynSent,
    ])
    const L = ctLayout(this.family, cap, sh ? SHARED_PER_SVC : 0)
    const buf = sh ? sh.sab : new ArrayBuffer(L.bytes!)
    if (buf.byteLength !== L.bytes)
      throw new RangeError(`shared conntrack buffer is ${buf.byteLength} bytes, IPv${this.family} with max ${this.max} needs ${L.bytes}`)
    this.hdr = new Int32Array(buf, L.header!, Hdr.WORDS)
    this.tuples = new Uint32Array(buf, L.tuples!, cap * this.tw)
    this.proto = new Uint8Array(buf, L.proto!, cap)
    this.state = new Uint8Array(buf, L.state!, cap)
    this.flags = new Uint8Array(buf, L.flags!, cap)
    this.expires = new Uint32Array(buf, L.expires!, cap)
    this.svcPort = new Int32Array(buf, L.svcPort!, cap)
    this.endpoint = new Int32Array(buf, L.endpoint!, cap)
    this.seqNext = new Uint32Array(buf, L.seqNext!, cap * 2)
    this.counters = new Float64Array(buf, L.counters!, cap * 4)
    this.next = new Int32Array(buf, L.next!, cap)
    if (!sh) initFreeList(this.next, cap)
    this.slots = new Int32Array(buf, L.slots!, cap * 4)
    this.slotHash = new Int32Array(buf, L.slotHash!, cap * 4)
    this.perSvc = sh ? new Uint32Array(buf, L.perSvc!, SHARED_PER_SVC) : new Uint32Array(256)
    this.mask = cap * 4 - 1
    this.key = new Uint32Array(this.kw)
    this.tk = new Uint32Array(this.tw)
  }

  /** Live entries. */
  get count(): number {
    return this.hdr[Hdr.COUNT]!
  }

  private get freeHead(): number {
    return this.hdr[Hdr.FREE]!
  }

  private set freeHead(v: number) {
    this.hdr[Hdr.FREE] = v
  }

  /**
   * Takes the table's lock (a shared table; a no-op otherwise). Futex style: spin a little, then sleep on the word;
   * unlock() wakes a sleeper only when one is there, so an uncontended lock/unlock is two atomic operations.
   */
  lock(): void {
    if (!this.isShared) return
    const h = this.hdr
    const me = this.owner
    if (Atomics.compareExchange(h, Hdr.LOCK, 0, me) === 0) return
    for (;;) {
      for (let i = 0; i < LOCK_SPINS; i++) {
        if (Atomics.load(h, Hdr.LOCK) === 0 && Atomics.compareExchange(h, Hdr.LOCK, 0, me) === 0) return
      }
      Atomics.add(h, Hdr.WAITERS, 1)
      const cur = Atomics.load(h, Hdr.LOCK)
      if (cur !== 0) Atomics.wait(h, Hdr.LOCK, cur, LOCK_WAIT_MS)
      Atomics.sub(h, Hdr.WAITERS, 1)
      if (Atomics.compareExchange(h, Hdr.LOCK, 0, me) === 0) return
    }
  }

  unlock(): void {
    if (!this.isShared) return
    const h = this.hdr
    Atomics.store(h, Hdr.LOCK, 0)
    if (Atomics.load(h, Hdr.WAITERS) > 0) Atomics.notify(h, Hdr.LOCK, 1)
  }

  /** Releases the lock if thread `owner` holds it (that thread died): returns whether it did. */
  releaseIfHeldBy(owner: number): boolean {
    if (!this.isShared || Atomics.compareExchange(this.hdr, Hdr.LOCK, owner, 0) !== owner) return false
    Atomics.notify(this.hdr, Hdr.LOCK, 1)
    return true
  }

  /** Bytes of every typed array this table owns (the figure behind "bytes per entry"). */
  byteLength(): number {
    return (
      this.tuples.byteLength +
      this.proto.byteLength +
      this.state.byteLength +
      this.flags.byteLength +
      this.expires.byteLength +
      this.svcPort.byteLength +
      this.endpoint.byteLength +
      this.seqNext.byteLength +
      this.counters.byteLength +
      this.next.byteLength +
      this.slots.byteLength +
      this.slotHash.byteLength
    )
  }

  private hash(a: Uint32Array, off: number, proto: number): number {
    let h = this.seed ^ proto
    const kw = this.kw
    for (let i = 0; i < kw; i++) h = mixWord(h, a[off + i]!)
    return fmix32(h)
  }

  /** Ref (entry * 2 + dir) of the tuple at (a, off) with `proto`, or -1. Does not look at expiry. */
  find(a: Uint32Array, off: number, proto: number): number {
    const h = this.hash(a, off, proto)
    const slots = this.slots
    const slotHash = this.slotHash
    const tuples = this.tuples
    const kw = this.kw
    const mask = this.mask
    let s = h & mask
    let v: number
    while ((v = slots[s]!) !== 0) {
      if (slotHash[s] === h) {
        const ref = v - 1
        const e = ref >>> 1
        if (this.proto[e] === proto) {
          const base = e * this.tw + (ref & 1) * kw
          let i = 0
          while (i < kw && tuples[base + i] === a[off + i]) i++
          if (i === kw) return ref
        }
      }
      s = (s + 1) & mask
    }
    return -1
  }

  /** find() on the scratch `key`. */
  lookup(proto: number): number {
    return this.find(this.key, 0, proto)
  }

  private link(ref: number): void {
    const e = ref >>> 1
    const h = this.hash(this.tuples, e * this.tw + (ref & 1) * this.kw, this.proto[e]!)
    let s = h & this.mask
    while (this.slots[s] !== 0) s = (s + 1) & this.mask
    this.slots[s] = ref + 1
    this.slotHash[s] = h
  }

  private unlink(ref: number): void {
    const e = ref >>> 1
    const h = this.hash(this.tuples, e * this.tw + (ref & 1) * this.kw, this.proto[e]!)
    const slots = this.slots
    const slotHash = this.slotHash
    const mask = this.mask
    let s = h & mask
    while (slots[s] !== ref + 1) {
      if (slots[s] === 0) return
      s = (s + 1) & mask
    }
    // Backward-shift deletion: pull later members of the run into the hole when their home allows it.
    let hole = s
    s = (s + 1) & mask
    while (slots[s] !== 0) {
      const home = slotHash[s]! & mask
      if (((s - home) & mask) >= ((s - hole) & mask)) {
        slots[hole] = slots[s]!
        slotHash[hole] = slotHash[s]!
        hole = s
      }
      s = (s + 1) & mask
    }
    slots[hole] = 0
  }

  /**
   * Creates an entry from the scratch `tk` (original tuple, then reply tuple); the caller has checked that neither
   * tuple exists. Evicts a non-assured entry when full. Returns the entry index, or -1 when there is no room.
   */
  create(proto: number, svcPort: number, endpoint: number, now: number): number {
    if (this.count >= this.max && !this.earlyDrop(now)) {
      this.stats[CtStat.FULL]!++
      return -1
    }
    const e = this.freeHead
    this.freeHead = this.next[e]!
    const tw = this.tw
    const tuples = this.tuples
    const tk = this.tk
    for (let i = 0; i < tw; i++) tuples[e * tw + i] = tk[i]!
    this.proto[e] = proto
    this.state[e] = 0
    let f = CtFlag.USED
    const kw = this.kw
    const aw = this.aw
    // DNAT: orig dst (+dport) differs from reply src (+sport); SNAT: orig src (+sport) differs from reply dst (+dport).
    let dnat = (tk[aw * 2]! & 0xffff) !== tk[kw + aw * 2]! >>> 16
    let snat = tk[aw * 2]! >>> 16 !== (tk[kw + aw * 2]! & 0xffff)
    for (let i = 0; i < aw; i++) {
      if (tk[aw + i] !== tk[kw + i]) dnat = true
      if (tk[i] !== tk[kw + aw + i]) snat = true
    }
    if (dnat) f |= CtFlag.DNAT
    if (snat) f |= CtFlag.SNAT
    this.flags[e] = f
    this.expires[e] = now + this.timeouts.generic
    this.svcPort[e] = svcPort
    if (svcPort >= 0) {
      if (svcPort >= this.perSvc.length) this.growPerSvc(svcPort)
      if (svcPort < this.perSvc.length) this.perSvc[svcPort]!++
    }
    this.endpoint[e] = endpoint
    this.seqNext[e * 2] = 0
    this.seqNext[e * 2 + 1] = 0
    this.counters.fill(0, e * 4, e * 4 + 4)
    this.link(e * 2)
    this.link(e * 2 + 1)
    this.hdr[Hdr.COUNT]!++
    this.stats[CtStat.CREATED]!++
    return e
  }

  /** Called with an entry flagged COUNTED just before it is deleted (its tuples still readable). */
  onDelete: ((e: number) => void) | null = null

  delete(e: number): void {
    if ((this.flags[e]! & CtFlag.USED) === 0) return
    if ((this.flags[e]! & CtFlag.COUNTED) !== 0 && this.onDelete !== null) this.onDelete(e)
    this.unlink(e * 2)
    this.unlink(e * 2 + 1)
    this.flags[e] = 0
    this.next[e] = this.freeHead
    this.freeHead = e
    this.hdr[Hdr.COUNT]!--
    const id = this.svcPort[e]!
    if (id >= 0 && id < this.perSvc.length) this.perSvc[id]!--
    this.stats[CtStat.DELETED]!++
  }

  /** How many live entries service port `id` has. */
  entriesOf(id: number): number {
    if (id < 0) return 0
    if (id < this.perSvc.length) return this.perSvc[id]!
    // a shared table counts the first SHARED_PER_SVC ids only: above, say "maybe some"
    return this.isShared ? 1 : 0
  }

  private growPerSvc(id: number): void {
    if (this.isShared) return
    let n = this.perSvc.length
    while (n <= id) n *= 2
    const next = new Uint32Array(n)
    next.set(this.perSvc)
    this.perSvc = next
  }

  isUsed(e: number): boolean {
    return (this.flags[e]! & CtFlag.USED) !== 0
  }

  /** Evicts one entry to make room: an expired one, else the non-assured one closest to expiry among a few. */
  private earlyDrop(now: number): boolean {
    let best = -1
    let bestExp = Infinity
    const cap = this.capacity
    let c = this.hdr[Hdr.DROP]!
    for (let n = 0; n < EARLY_DROP_SCAN; n++) {
      c = (c + 1) & (cap - 1)
      const f = this.flags[c]!
      if ((f & CtFlag.USED) === 0) continue
      const exp = this.expires[c]!
      if (exp <= now) {
        best = c
        break
      }
      if ((f & CtFlag.ASSURED) === 0 && exp < bestExp) {
        best = c
        bestExp = exp
      }
    }
    this.hdr[Hdr.DROP] = c
    if (best < 0) return false
    this.delete(best)
    this.stats[CtStat.EARLY_DROP]!++
    return true
  }

  /** Timeout for a non-TCP entry after a packet (UDP/SCTP get the longer one once a reply was seen). */
  private otherTimeout(e: number): number {
    const p = this.proto[e]!
    const replied = (this.flags[e]! & CtFlag.REPLIED) !== 0
    const t = this.timeouts
    if (p === IPPROTO_UDP) return replied ? t.udpStream : t.udp
    if (p === IPPROTO_ICMP || p === IPPROTO_ICMPV6) return t.icmp
    if (p === IPPROTO_SCTP) return replied ? t.sctpReplied : t.sctp
    return t.generic
  }

  /** Records a packet of a non-TCP entry: reply bit and timeout. */
  touch(e: number, dir: number, now: number): void {
    if (dir === REPLY) this.flags[e] = this.flags[e]! | CtFlag.REPLIED | CtFlag.ASSURED
    this.expires[e] = now + this.otherTimeout(e)
  }

  /** Sets the state of a new TCP entry (SYN_SENT, or ESTABLISHED for a mid-stream pickup) and its timeout. */
  setTcpState(e: number, state: number, now: number): void {
    this.state[e] = state
    this.expires[e] = now + this.tcpTimeout[state]!
  }

  /** Runs a segment through the TCP state machine (Linux tcp_conntracks, no window tracking); see TcpVerdict. */
  tcp(e: number, dir: number, tcpFlags: number, now: number): number {
    const old = this.state[e]!
    const ns = TCP_TABLE[dir * 60 + tcpIndex(tcpFlags) * 10 + old]!
    if (ns === sIV) return TcpVerdict.INVALID
    if (dir === REPLY) this.flags[e] = this.flags[e]! | CtFlag.REPLIED
    if (ns === sIG) return TcpVerdict.IGNORE
    if (ns === sSS && old >= sTW) return dir === ORIG ? TcpVerdict.REOPEN : TcpVerdict.INVALID
    this.state[e] = ns
    if (ns === sES && (this.flags[e]! & CtFlag.REPLIED) !== 0) this.flags[e] = this.flags[e]! | CtFlag.ASSURED
    this.expires[e] = now + this.tcpTimeout[ns]!
    return TcpVerdict.OK
  }

  /** Removes expired entries among the next `budget` entries; returns how many it removed. */
  reap(now: number, budget: number): number {
    const cap = this.capacity
    let c = this.hdr[Hdr.REAP]!
    let n = 0
    if (budget > cap) budget = cap
    for (let i = 0; i < budget; i++) {
      if ((this.flags[c]! & CtFlag.USED) !== 0 && this.expires[c]! <= now) {
        this.delete(c)
        n++
      }
      c = (c + 1) & (cap - 1)
    }
    this.hdr[Hdr.REAP] = c
    this.stats[CtStat.REAPED]! += n
    return n
  }

  /** Deletes every entry `pred` accepts (off the hot path); returns how many. */
  flush(pred: (e: number) => boolean): number {
    let n = 0
    for (let e = 0; e < this.capacity; e++) {
      if ((this.flags[e]! & CtFlag.USED) !== 0 && pred(e)) {
        this.delete(e)
        n++
      }
    }
    return n
  }

  /** Indexes of live entries, in table order (off the hot path). */
  *entries(): Generator<number> {
    for (let e = 0; e < this.capacity; e++) if ((this.flags[e]! & CtFlag.USED) !== 0) yield e
  }

  /** Base index in `tuples` of entry e's tuple in `dir`. */
  tupleOff(e: number, dir: number): number {
    return e * this.tw + dir * this.kw
  }

  private recordBytes(): number {
    return this.tw * 4 + 4 + 4 + 4 + 4 + 8 + 32
  }

  /**
   * Serialises every live entry (for restarts). Layout, little-endian: magic u32, version u32, family u32,
   * count u32, then per entry: tuples (tw u32), proto u8, state u8, flags u8, pad u8, expires u32, svcPort i32,
   * endpoint i32, seqNext 2 x u32, counters 4 x f64.
   */
  snapshot(): Buffer {
    const rb = this.recordBytes()
    const buf = Buffer.alloc(16 + this.count * rb)
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
    dv.setUint32(0, SNAPSHOT_MAGIC, true)
    dv.setUint32(4, SNAPSHOT_VERSION, true)
    dv.setUint32(8, this.family, true)
    dv.setUint32(12, this.count, true)
    let o = 16
    for (let e = 0; e < this.capacity; e++) {
      if ((this.flags[e]! & CtFlag.USED) === 0) continue
      for (let i = 0; i < this.tw; i++, o += 4) dv.setUint32(o, this.tuples[e * this.tw + i]!, true)
      dv.setUint8(o, this.proto[e]!)
      dv.setUint8(o + 1, this.state[e]!)
      dv.setUint8(o + 2, this.flags[e]!)
      dv.setUint32(o + 4, this.expires[e]!, true)
      dv.setInt32(o + 8, this.svcPort[e]!, true)
      dv.setInt32(o + 12, this.endpoint[e]!, true)
      dv.setUint32(o + 16, this.seqNext[e * 2]!, true)
      dv.setUint32(o + 20, this.seqNext[e * 2 + 1]!, true)
      for (let i = 0; i < 4; i++) dv.setFloat64(o + 24 + i * 8, this.counters[e * 4 + i]!, true)
      o += 56
    }
    return buf
  }

  /**
   * Adds the entries of a snapshot(): expired ones (at `now`) and ones whose tuples already exist are skipped;
   * `mapSvcPort` may renumber service-port ids or return -1 to skip the entry. Returns entries restored.
   * Throws a RangeError on a buffer that is not a snapshot of this family.
   */
  restore(buf: Uint8Array, now: number, mapSvcPort: (id: number) => number = id => id): number {
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
    if (buf.byteLength < 16 || dv.getUint32(0, true) !== SNAPSHOT_MAGIC) throw new RangeError('not a conntrack snapshot')
    if (dv.getUint32(4, true) !== SNAPSHOT_VERSION) throw new RangeError(`unsupported conntrack snapshot version ${dv.getUint32(4, true)}`)
    if (dv.getUint32(8, true) !== this.family) throw new RangeError(`snapshot is for IPv${dv.getUint32(8, true)}, table is IPv${this.family}`)
    const n = dv.getUint32(12, true)
    const rb = this.recordBytes()
    if (buf.byteLength < 16 + n * rb) throw new RangeError('conntrack snapshot is truncated')
    let restored = 0
    for (let r = 0; r < n; r++) {
      let o = 16 + r * rb
      for (let i = 0; i < this.tw; i++, o += 4) this.tk[i] = dv.getUint32(o, true)
      const proto = dv.getUint8(o)
      const expires = dv.getUint32(o + 4, true)
      if (expires <= now) continue
      const sp = mapSvcPort(dv.getInt32(o + 8, true))
      if (sp < 0 && dv.getInt32(o + 8, true) >= 0) continue
      if (this.find(this.tk, 0, proto) >= 0 || this.find(this.tk, this.kw, proto) >= 0) continue
      if (this.count >= this.max) break
      const e = this.create(proto, sp, dv.getInt32(o + 12, true), now)
      if (e < 0) break
      this.state[e] = dv.getUint8(o + 1)
      this.flags[e] = dv.getUint8(o + 2) | CtFlag.USED
      this.expires[e] = expires
      this.seqNext[e * 2] = dv.getUint32(o + 16, true)
      this.seqNext[e * 2 + 1] = dv.getUint32(o + 20, true)
      for (let i = 0; i < 4; i++) this.counters[e * 4 + i] = dv.getFloat64(o + 24 + i * 8, true)
      restored++
    }
    return restored
  }
}

/** Whether an IP protocol number is one conntrack tracks with ports. */
export function hasPorts(proto: number): boolean {
  return proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP
}

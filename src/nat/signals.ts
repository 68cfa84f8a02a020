// The per-endpoint book (packet thread): one slot per (service port, endpoint) with everything counted about it:
// packets and new connections (tundra_endpoint_packets_total / _new_connections_total, always), and, when connect
// tracking is on, golden signals (failures, resets, closes, bytes, connect-time histogram) and outlier state.
//
//   attach(fi, ct, e, uid, isNew)          entry e got its endpoint (new connection, reply pickup, restore): one lookup
//   entry(fi, e) -> slot | -1              the slot of entry e: two array reads and a generation check, no lookup
//   slot(id, uid, words, off, aw, port)    the slot of an endpoint of a set (ejection, failover): one lookup
//   snapshot(nowMs) / release(slots)       copies for the control thread / the slots whose endpoint left the table
//
// A slot is keyed by (service-port id and uid, address words, port): a pod backing two service ports has two slots,
// and a service port that takes a freed id never inherits the counts of the one before. The control thread frees
// the slots of endpoints gone from the table (release, a bounded batch); a freed slot is reused, and its generation
// moves on, so an entry or a pending connect holding a ref (gen << SLOT_BITS | slot) of the old one counts nowhere.
// A service-port id an install removed or reused gets a new epoch (staleIds): its slots' outlier state and signals
// start over when next used, so nothing is walked on the packet thread.
//
// Memory: 4 B per conntrack entry of capacity per family (per engine: with several packet threads over one shared
// conntrack each engine has its own array, and an entry another thread made simply has no slot here), plus about
// 260 B per counted endpoint (up to 65,536 endpoints; more are counted in `overflow` only).
import { U32Map } from './hash'
import type { NatTable } from './compile'
import { REPLY, type Conntrack } from './conntrack'
import type { Family } from '../model/cluster'
import { wordsToString } from './addr'
import { endpointString } from '../model/names'

/** Signal words per endpoint slot (new connections are `connections`, counted always). */
export const Sig = {
  /** TCP connects that failed: RST or ICMP unreachable to the SYN, or no SYN-ACK within the connect timeout */
  FAILED: 0,
  /** TCP connections that ended (FIN or RST seen) or failed */
  CLOSED: 1,
  /** RSTs the client sent */
  RST_CLIENT: 2,
  /** RSTs the endpoint sent */
  RST_ENDPOINT: 3,
  /** IP bytes client -> endpoint */
  BYTES_TO: 4,
  /** IP bytes endpoint -> client */
  BYTES_FROM: 5,
  /** times the endpoint was ejected */
  EJECTIONS: 6,
  /** TCP connections opened (active = TCP_OPENED - CLOSED) */
  TCP_OPENED: 7,
} as const
export const SIG_WORDS = 8

/** Upper bounds (ms) of the connect-time histogram buckets; one more bucket (+Inf), then sum and count. */
export const CONNECT_BUCKETS_MS: readonly number[] = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
const NB = CONNECT_BUCKETS_MS.length
const HIST_WORDS = NB + 3
const HIST_SUM = NB + 1
const HIST_COUNT = NB + 2

/** key words: id, uid, address (4 words, IPv4 padded with zeros), port */
const KEY_WORDS = 7
const SLOT_BITS = 16
/** at most this many endpoints are counted at once */
const MAX_SLOTS = 1 << SLOT_BITS
const SLOT_MASK = MAX_SLOTS - 1
const GEN_MASK = 0x7fff
const NONE = -1
const INITIAL_SLOTS = 64

/** What snapshot() hands over (copies): per slot, key words and counters; slots with used 0 are free. */
export interface EndpointSnapshot {
  readonly n: number
  readonly keys: Uint32Array
  readonly used: Uint8Array
  readonly packets: Float64Array
  readonly connections: Float64Array
  /** SIG_WORDS per slot (zeros when connect tracking is off) */
  readonly sig: Float64Array
  readonly hist: Float64Array
  /** ms the endpoint stays ejected (0: not ejected) */
  readonly ejectedMs: Float64Array
  /** 1: the slot's signals belong to the service port now holding its id */
  readonly live: Uint8Array
  /** attaches that found no free slot */
  readonly overflow: number
  /** connect tracking is on: sig, hist and ejectedMs are counted */
  readonly signals: boolean
}

/** The service-port id of a snapshot slot. */
export function slotServicePort(snap: EndpointSnapshot, slot: number): number {
  return snap.keys[slot * KEY_WORDS]!
}

/** The service-port uid of a snapshot slot (SvcPort.uid: tells a slot's service port from a later one at its id). */
export function slotServicePortUid(snap: EndpointSnapshot, slot: number): number {
  return snap.keys[slot * KEY_WORDS + 1]!
}

/** "ip:port" (or "[ip6]:port") of a snapshot slot, as kube-proxy names an endpoint. */
export function slotEndpoint(snap: EndpointSnapshot, slot: number, family: Family): string {
  const k = slot * KEY_WORDS
  return endpointString(wordsToString(snap.keys, k + 2, family), snap.keys[k + 6]!)
}

export class EndpointBook {
  private readonly map = new U32Map(KEY_WORDS, 1, INITIAL_SLOTS)
  /** per family (0 IPv4, 1 IPv6), per conntrack entry: gen << SLOT_BITS | slot, or NONE */
  private readonly bySlot: [Int32Array, Int32Array]
  private cap = INITIAL_SLOTS
  keys: Uint32Array = new Uint32Array(this.cap * KEY_WORDS)
  private used: Uint8Array = new Uint8Array(this.cap)
  private gen: Uint16Array = new Uint16Array(this.cap)
  packets: Float64Array = new Float64Array(this.cap)
  connections: Float64Array = new Float64Array(this.cap)
  sig: Float64Array = new Float64Array(this.cap * SIG_WORDS)
  hist: Float64Array = new Float64Array(this.cap * HIST_WORDS)
  /** outlier state (outlier.ts): ejected until (ms), consecutive failures, ejections in a row */
  ejectedUntil: Float64Array = new Float64Array(this.cap)
  consecutive: Uint32Array = new Uint32Array(this.cap)
  streak: Uint32Array = new Uint32Array(this.cap)
  private epoch: Uint32Array = new Uint32Array(this.cap)
  /** free slots below `top` (a stack), then the never-used ones from `top` */
  private free: Int32Array = new Int32Array(this.cap)
  private freeCount = 0
  private top = 0
  private overflow = 0
  /** per service-port id: epoch, ejected endpoint slots */
  private idEpoch: Uint32Array = new Uint32Array(64)
  ejectedOf: Uint32Array = new Uint32Array(64)

  constructor(capacity4: number, capacity6: number) {
    this.bySlot = [new Int32Array(capacity4).fill(NONE), new Int32Array(capacity6).fill(NONE)]
  }

  /**
   * Entry e of family fi now has its endpoint (its reply tuple's source) in the service port of uid `uid`; a new
   * connection is counted when isNew. Returns the slot, or -1 (no service port, or no free slot).
   */
  attach(fi: number, ct: Conntrack, e: number, uid: number, isNew: boolean): number {
    const arr = this.bySlot[fi]!
    const id = ct.svcPort[e]!
    if (id < 0) {
      arr[e] = NONE
      return -1
    }
    const r = ct.tupleOff(e, REPLY)
    const b = this.slot(id, uid, ct.tuples, r, ct.aw, ct.tuples[r + 2 * ct.aw]! >>> 16)
    if (b < 0) {
      arr[e] = NONE
      return -1
    }
    arr[e] = (this.gen[b]! << SLOT_BITS) | b
    if (isNew) this.connections[b]!++
    return b
  }

  /** Entry e of family fi has no endpoint to count (made without one, or moved away). */
  detach(fi: number, e: number): void {
    this.bySlot[fi]![e] = NONE
  }

  /** The slot entry e of family fi counts into, or -1. */
  entry(fi: number, e: number): number {
    const v = this.bySlot[fi]![e]!
    if (v === NONE) return -1
    const b = v & SLOT_MASK
    return this.gen[b] === v >>> SLOT_BITS ? b : -1
  }

  /**
   * Whether slot b is the endpoint of entry e (its service port, first address word and port): with conntrack
   * shared by packet threads, this engine's word for e may be left from an entry another thread has since replaced.
   */
  holds(b: number, ct: Conntrack, e: number): boolean {
    const r = ct.tupleOff(e, REPLY)
    const k = b * KEY_WORDS
    return this.keys[k] === ct.svcPort[e] && this.keys[k + 2] === ct.tuples[r] && this.keys[k + 6] === ct.tuples[r + 2 * ct.aw]! >>> 16
  }

  /** A ref to slot b that stops resolving once b is released (pending connects, ejection lists). */
  ref(b: number): number {
    return (this.gen[b]! << SLOT_BITS) | b
  }

  /** The slot of a ref, or -1 when it was released since. */
  resolve(ref: number): number {
    if (ref < 0) return -1
    const b = ref & SLOT_MASK
    return this.used[b] === 1 && this.gen[b] === ref >>> SLOT_BITS ? b : -1
  }

  /** The slot of (id, uid, endpoint at words[off..off+aw), port), made on first use; -1 when all are taken. */
  slot(id: number, uid: number, words: Uint32Array, off: number, aw: number, port: number): number {
    if (id >= this.idEpoch.length) this.growIds(id + 1)
    const k = this.map.key
    k[0] = id
    k[1] = uid
    for (let i = 0; i < 4; i++) k[2 + i] = i < aw ? words[off + i]! : 0
    k[6] = port & 0xffff
    const ms = this.map.find()
    if (ms >= 0) {
      const b = this.map.vals[ms]!
      if (this.epoch[b] !== this.idEpoch[id]) this.reset(b, id)
      return b
    }
    const b = this.take()
    if (b < 0) {
      this.overflow++
      return -1
    }
    this.map.vals[this.map.insert()] = b
    for (let i = 0; i < KEY_WORDS; i++) this.keys[b * KEY_WORDS + i] = k[i]!
    this.used[b] = 1
    this.packets[b] = 0
    this.connections[b] = 0
    this.reset(b, id)
    return b
  }

  /** The service-port id of slot b. */
  idOf(b: number): number {
    return this.keys[b * KEY_WORDS]!
  }

  /** Where slot b's endpoint address words start in `keys`. */
  addrOff(b: number): number {
    return b * KEY_WORDS + 2
  }

  /** Slot b's endpoint port. */
  portOf(b: number): number {
    return this.keys[b * KEY_WORDS + 6]!
  }

  /** Whether slot b is in use and belongs to the service port now holding its id. */
  current(b: number): boolean {
    return this.used[b] === 1 && this.epoch[b] === this.idEpoch[this.keys[b * KEY_WORDS]!]
  }

  /** Service-port ids an install removed or reused: their slots' signals start over when next used. */
  staleIds(ids: Uint32Array): void {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!
      if (id >= this.idEpoch.length) continue
      this.idEpoch[id] = (this.idEpoch[id]! + 1) >>> 0
      this.ejectedOf[id] = 0
    }
  }

  /** A connect finished in `ms`. */
  connectTime(b: number, ms: number): void {
    const h = b * HIST_WORDS
    let i = 0
    while (i < NB && ms > CONNECT_BUCKETS_MS[i]!) i++
    this.hist[h + i]!++
    this.hist[h + HIST_SUM]! += ms
    this.hist[h + HIST_COUNT]!++
  }

  /** Copies of the slots (O(slots), as the per-service counters are copied). */
  snapshot(nowMs: number, signals: boolean): EndpointSnapshot {
    const n = this.top
    const ejectedMs = new Float64Array(n)
    const live = new Uint8Array(n)
    for (let b = 0; b < n; b++) {
      live[b] = this.current(b) ? 1 : 0
      ejectedMs[b] = live[b] === 1 && this.ejectedUntil[b]! > nowMs ? this.ejectedUntil[b]! - nowMs : 0
    }
    return {
      n,
      keys: this.keys.slice(0, n * KEY_WORDS),
      used: this.used.slice(0, n),
      packets: this.packets.slice(0, n),
      connections: this.connections.slice(0, n),
      sig: this.sig.slice(0, n * SIG_WORDS),
      hist: this.hist.slice(0, n * HIST_WORDS),
      ejectedMs,
      live,
      overflow: this.overflow,
      signals,
    }
  }

  /** Frees these slots (endpoints gone from the table); returns how many were in use. */
  release(slots: readonly number[]): number {
    let n = 0
    const k = this.map.key
    for (const b of slots) {
      if (!Number.isInteger(b) || b < 0 || b >= this.top || this.used[b] !== 1) continue
      for (let i = 0; i < KEY_WORDS; i++) k[i] = this.keys[b * KEY_WORDS + i]!
      this.map.delete()
      const id = this.idOf(b)
      if (this.ejectedUntil[b]! > 0 && this.current(b) && this.ejectedOf[id]! > 0) this.ejectedOf[id]!--
      this.used[b] = 0
      this.gen[b] = (this.gen[b]! + 1) & GEN_MASK
      this.packets[b] = 0
      this.connections[b] = 0
      this.reset(b, id)
      this.free[this.freeCount++] = b
      n++
    }
    return n
  }

  private take(): number {
    if (this.freeCount > 0) return this.free[--this.freeCount]!
    if (this.top >= MAX_SLOTS) return -1
    if (this.top >= this.cap) this.grow()
    return this.top++
  }

  private reset(b: number, id: number): void {
    this.epoch[b] = this.idEpoch[id]!
    this.sig.fill(0, b * SIG_WORDS, (b + 1) * SIG_WORDS)
    this.hist.fill(0, b * HIST_WORDS, (b + 1) * HIST_WORDS)
    this.ejectedUntil[b] = 0
    this.consecutive[b] = 0
    this.streak[b] = 0
  }

  /** Doubles the per-slot arrays (an allocation per doubling, on a new endpoint only). */
  private grow(): void {
    const cap = Math.min(MAX_SLOTS, this.cap * 2)
    const g = <T extends Float64Array | Uint32Array | Uint16Array | Uint8Array | Int32Array>(a: T, w: number, make: (n: number) => T): T => {
      const x = make(cap * w)
      x.set(a)
      return x
    }
    this.keys = g(this.keys, KEY_WORDS, n => new Uint32Array(n))
    this.used = g(this.used, 1, n => new Uint8Array(n))
    this.gen = g(this.gen, 1, n => new Uint16Array(n))
    this.packets = g(this.packets, 1, n => new Float64Array(n))
    this.connections = g(this.connections, 1, n => new Float64Array(n))
    this.sig = g(this.sig, SIG_WORDS, n => new Float64Array(n))
    this.hist = g(this.hist, HIST_WORDS, n => new Float64Array(n))
    this.ejectedUntil = g(this.ejectedUntil, 1, n => new Float64Array(n))
    this.consecutive = g(this.consecutive, 1, n => new Uint32Array(n))
    this.streak = g(this.streak, 1, n => new Uint32Array(n))
    this.epoch = g(this.epoch, 1, n => new Uint32Array(n))
    this.free = g(this.free, 1, n => new Int32Array(n))
    this.cap = cap
  }

  private growIds(n: number): void {
    const size = Math.max(n, this.idEpoch.length * 2)
    const e = new Uint32Array(size)
    e.set(this.idEpoch)
    this.idEpoch = e
    const j = new Uint32Array(size)
    j.set(this.ejectedOf)
    this.ejectedOf = j
  }
}

/**
 * Several packet threads' books (one engine each over a shared conntrack) as one snapshot for the control thread:
 * slot `slot` of thread t becomes slot slot * threads + t, so a release list of merged slots splits back
 * (splitRelease) without state. An endpoint counted by several threads has a slot per thread; rows sum them.
 */
export function mergeEndpointSnapshots(snaps: readonly (EndpointSnapshot | undefined)[]): EndpointSnapshot {
  const T = snaps.length
  let max = 0
  for (const s of snaps) if (s !== undefined) max = Math.max(max, s.n)
  const n = max * T
  const out = {
    n,
    keys: new Uint32Array(n * KEY_WORDS),
    used: new Uint8Array(n),
    packets: new Float64Array(n),
    connections: new Float64Array(n),
    sig: new Float64Array(n * SIG_WORDS),
    hist: new Float64Array(n * HIST_WORDS),
    ejectedMs: new Float64Array(n),
    live: new Uint8Array(n),
    overflow: 0,
    signals: false,
  }
  snaps.forEach((s, t) => {
    if (s === undefined) return
    out.overflow += s.overflow
    out.signals ||= s.signals
    for (let b = 0; b < s.n; b++) {
      const c = b * T + t
      out.keys.set(s.keys.subarray(b * KEY_WORDS, (b + 1) * KEY_WORDS), c * KEY_WORDS)
      out.used[c] = s.used[b]!
      out.packets[c] = s.packets[b]!
      out.connections[c] = s.connections[b]!
      out.sig.set(s.sig.subarray(b * SIG_WORDS, (b + 1) * SIG_WORDS), c * SIG_WORDS)
      out.hist.set(s.hist.subarray(b * HIST_WORDS, (b + 1) * HIST_WORDS), c * HIST_WORDS)
      out.ejectedMs[c] = s.ejectedMs[b]!
      out.live[c] = s.live[b]!
    }
  })
  return out
}

/** The release list of a merged snapshot (mergeEndpointSnapshots) for thread t of `threads`. */
export function splitRelease(release: readonly number[], t: number, threads: number): number[] {
  const out: number[] = []
  for (const c of release) if (Number.isInteger(c) && c >= 0 && c % threads === t) out.push(Math.floor(c / threads))
  return out
}

/** The histogram of slot b as Prometheus wants it: cumulative counts per bucket bound, sum and count. */
function connectHistogram(s: EndpointSnapshot, b: number): { buckets: number[]; sum: number; count: number } {
  const o = b * HIST_WORDS
  const buckets: number[] = []
  let c = 0
  for (let i = 0; i <= NB; i++) {
    c += s.hist[o + i]!
    buckets.push(c)
  }
  return { buckets, sum: s.hist[o + HIST_SUM]!, count: s.hist[o + HIST_COUNT]! }
}

/** One endpoint of one service port, as the CLI and metrics show it (control thread). */
export interface SignalRow {
  readonly id: number
  readonly namespace: string
  readonly service: string
  /** the port's name, or its number when unnamed */
  readonly port: string
  /** "ip:port" ("[ip]:port" for IPv6) */
  readonly endpoint: string
  readonly opened: number
  readonly active: number
  readonly failed: number
  readonly closed: number
  readonly resetsClient: number
  readonly resetsEndpoint: number
  readonly bytesTo: number
  readonly bytesFrom: number
  readonly ejections: number
  /** ms it stays ejected (0: not ejected) */
  readonly ejectedMs: number
  /** connect-time histogram: cumulative counts per CONNECT_BUCKETS_MS bound then +Inf, sum (ms) and count */
  readonly connect: { readonly buckets: readonly number[]; readonly sum: number; readonly count: number }
}

/** The snapshot's slots of service ports the table holds now, with their names (O(slots)). */
export function signalRows(table: NatTable, s: EndpointSnapshot): SignalRow[] {
  const out: SignalRow[] = []
  if (!s.signals) return out
  for (let b = 0; b < s.n; b++) {
    if (s.used[b] !== 1 || s.live[b] !== 1) continue
    const id = slotServicePort(s, b)
    const sp = table.svcPorts[id]
    if (sp === undefined || sp.uid !== slotServicePortUid(s, b)) continue
    const o = b * SIG_WORDS
    const g = (i: number): number => s.sig[o + i]!
    out.push({
      id,
      namespace: sp.namespace,
      service: sp.name,
      port: sp.portName !== '' ? sp.portName : String(sp.port),
      endpoint: slotEndpoint(s, b, sp.family),
      opened: s.connections[b]!,
      active: Math.max(0, g(Sig.TCP_OPENED) - g(Sig.CLOSED)),
      failed: g(Sig.FAILED),
      closed: g(Sig.CLOSED),
      resetsClient: g(Sig.RST_CLIENT),
      resetsEndpoint: g(Sig.RST_ENDPOINT),
      bytesTo: g(Sig.BYTES_TO),
      bytesFrom: g(Sig.BYTES_FROM),
      ejections: g(Sig.EJECTIONS),
      ejectedMs: s.ejectedMs[b]!,
      connect: connectHistogram(s, b),
    })
  }
  return sumByEndpoint(out)
}

/** One row per (service port, endpoint): rows of the same one from several packet threads' books summed. */
function sumByEndpoint(rows: SignalRow[]): SignalRow[] {
  const by = new Map<string, SignalRow>()
  for (const r of rows) {
    const k = `${r.id} ${r.endpoint}`
    const p = by.get(k)
    if (p === undefined) {
      by.set(k, r)
      continue
    }
    by.set(k, {
      ...p,
      opened: p.opened + r.opened,
      active: p.active + r.active,
      failed: p.failed + r.failed,
      closed: p.closed + r.closed,
      resetsClient: p.resetsClient + r.resetsClient,
      resetsEndpoint: p.resetsEndpoint + r.resetsEndpoint,
      bytesTo: p.bytesTo + r.bytesTo,
      bytesFrom: p.bytesFrom + r.bytesFrom,
      ejections: p.ejections + r.ejections,
      ejectedMs: Math.max(p.ejectedMs, r.ejectedMs),
      connect: {
        buckets: p.connect.buckets.map((v, i) => v + (r.connect.buckets[i] ?? 0)),
        sum: p.connect.sum + r.connect.sum,
        count: p.connect.count + r.connect.count,
      },
    })
  }
  return by.size === rows.length ? rows : [...by.values()]
}

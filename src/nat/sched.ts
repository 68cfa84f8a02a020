// Endpoint schedulers for a new connection, after IPVS's (net/netfilter/ipvs/ip_vs_{rr,wrr,lc,wlc,sh,mh}.c):
//
//   random  uniform choice per connection: kube-proxy's iptables/nftables probabilities (the default)
//   rr      round robin over the set, one cursor per service port (IPVS's, and kube-proxy's IPVS default)
//   wrr     IPVS's weighted round robin (current weight stepping down by the weights' gcd), exact proportions
//   lc/wlc  least connections from tundra's own conntrack: a min-heap per service port over the set's live counts
//           (O(log n) per connection and per close, n = endpoints of that service; no scan). A TCP connection
//           counts until its first FIN or RST (IPVS's ActiveConn), a UDP/SCTP flow until its entry goes
//   sh      source hash: the client address alone picks the endpoint, stable while the set is
//   mh      Maglev (maglev.ts): a table built at compile time, one hash and one read
//
// The scheduler of a service port is compiled into its record (image.ts: Rec.FLAGS bits REC_SCHED_SHIFT..); the
// state below (rr cursors, wrr steps, lc heaps, per-endpoint connection counts) lives on the packet thread in typed
// arrays. A per-id structure is rebuilt, O(endpoints), the first time the id is used after its set changed.
// Weights: EndpointSlices have none and kube-proxy's IPVS mode gives every real server weight 1; so does tundra,
// so wrr is rr and wlc is lc on a cluster. The weight of an endpoint word (bits 24..31 of port | flags << 16, 0 = 1)
// is read here so the algorithms are exact when a weight is set.

import { U32Map, hashWords } from './hash'

/** Scheduler ids, as compiled into a record. */
export const Sched = { RANDOM: 0, RR: 1, WRR: 2, LC: 3, WLC: 4, SH: 5, MH: 6 } as const
export type SchedValue = (typeof Sched)[keyof typeof Sched]
export type SchedulerName = 'random' | 'rr' | 'wrr' | 'lc' | 'wlc' | 'sh' | 'mh'
/** Names by id (what `tundra dump --format ipvsadm` prints). */
export const SCHED_NAMES: readonly SchedulerName[] = ['random', 'rr', 'wrr', 'lc', 'wlc', 'sh', 'mh']

/** The Service label that picks a scheduler for one service (a tundra extension: kube-proxy has none). */
export const SCHEDULER_LABEL = 'tundra.io/scheduler'

/** The id of a scheduler name ('maglev' is mh), or undefined. */
export function schedulerId(name: string): SchedValue | undefined {
  if (name === 'maglev') return Sched.MH
  const i = SCHED_NAMES.indexOf(name as SchedulerName)
  return i < 0 ? undefined : (i as SchedValue)
}

/** Whether the scheduler counts connections per endpoint. */
export function countsConnections(s: number): boolean {
  return s === Sched.LC || s === Sched.WLC
}

/** Fixed: every node hashes the same client to the same position. */
const SH_SEED = 0x73686173
/** The weight of an endpoint sits in the top byte of its port word. */
const WEIGHT_SHIFT = 24

/** sh's choice among n endpoints for the client address at words[0..aw) (the engine and tundra trace both use it). */
export function shIndex(words: Uint32Array, aw: number, n: number): number {
  return (hashWords(words, 0, aw, SH_SEED) >>> 0) % n
}

/** How each scheduler chooses, for tundra trace. */
export const SCHED_TEXT: readonly string[] = [
  'uniformly at random',
  'round robin (rr)',
  'weighted round robin (wrr)',
  'least connections (lc)',
  'weighted least connections (wlc)',
  'source hash (sh)',
  'Maglev (mh)',
]

/** An endpoint set as the schedulers read it (SetView and EndpointSet both fit). */
export interface SchedSet {
  readonly count: number
  readonly aw: number
  readonly data: Uint32Array
  readonly off: number
}

/** Weight of endpoint i (1 when none is set). */
function epWeight(set: SchedSet, i: number): number {
  const w = set.data[set.off + i * (set.aw + 1) + set.aw]! >>> WEIGHT_SHIFT
  return w === 0 ? 1 : w
}

function gcd(a: number, b: number): number {
  while (b !== 0) {
    const t = a % b
    a = b
    b = t
  }
  return a
}

/** lc/wlc state of one service port: the set it was built for, counts and a min-heap of endpoint indexes. */
class LcHeap {
  readonly data: Uint32Array
  readonly off: number
  readonly n: number
  readonly aw: number
  /** live connections per endpoint index */
  readonly load: Int32Array
  readonly weight: Int32Array
  /** heap[0] is the least loaded (load / weight) */
  readonly heap: Int32Array
  /** position of each endpoint in heap */
  readonly pos: Int32Array

  constructor(set: SchedSet, countOf: (i: number) => number) {
    this.data = set.data
    this.off = set.off
    this.n = set.count
    this.aw = set.aw
    this.load = new Int32Array(this.n)
    this.weight = new Int32Array(this.n)
    this.heap = new Int32Array(this.n)
    this.pos = new Int32Array(this.n)
    for (let i = 0; i < this.n; i++) {
      this.load[i] = countOf(i)
      this.weight[i] = epWeight(set, i)
      this.heap[i] = i
      this.pos[i] = i
    }
    for (let i = (this.n >> 1) - 1; i >= 0; i--) this.down(i)
  }

  same(set: SchedSet): boolean {
    return set.data === this.data && set.off === this.off && set.count === this.n
  }

  /** a before b: lower load per weight (cross-multiplied, as ip_vs_wlc does); ties by index, for determinism */
  private less(a: number, b: number): boolean {
    const x = this.load[a]! * this.weight[b]!
    const y = this.load[b]! * this.weight[a]!
    return x < y || (x === y && a < b)
  }

  private swap(i: number, j: number): void {
    const a = this.heap[i]!
    const b = this.heap[j]!
    this.heap[i] = b
    this.heap[j] = a
    this.pos[b] = i
    this.pos[a] = j
  }

  private up(i: number): void {
    while (i > 0) {
      const p = (i - 1) >> 1
      if (!this.less(this.heap[i]!, this.heap[p]!)) return
      this.swap(i, p)
      i = p
    }
  }

  private down(i: number): void {
    const n = this.n
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) return
      let c = l
      if (l + 1 < n && this.less(this.heap[l + 1]!, this.heap[l]!)) c = l + 1
      if (!this.less(this.heap[c]!, this.heap[i]!)) return
      this.swap(i, c)
      i = c
    }
  }

  add(i: number, d: number): void {
    const v = this.load[i]! + d
    this.load[i] = v < 0 ? 0 : v
    if (d > 0) this.down(this.pos[i]!)
    else this.up(this.pos[i]!)
  }

  /** Whether endpoint i of this heap's set is the one at (words, wo) with port. */
  is(i: number, words: Uint32Array, wo: number, port: number): boolean {
    if (i < 0 || i >= this.n) return false
    const b = this.off + i * (this.aw + 1)
    if ((this.data[b + this.aw]! & 0xffff) !== port) return false
    for (let w = 0; w < this.aw; w++) if (this.data[b + w] !== words[wo + w]) return false
    return true
  }
}

/**
 * Scheduler state of one engine (packet thread). Per service-port id: the rr/wrr cursor and the lc heap; per
 * (id, endpoint address, port): live connections of the lc/wlc services, kept by count()/uncount().
 */
export class SchedState {
  /** rr: next index; wrr: last index */
  private cursor: Int32Array = new Int32Array(16)
  /** wrr: current weight */
  private cw: Int32Array = new Int32Array(16)
  /** wrr: the set the cursor walks (its max weight and gcd are cached with it) */
  private wrrData: (Uint32Array | null)[] = []
  private wrrOff: Int32Array = new Int32Array(16)
  private wrrN: Int32Array = new Int32Array(16)
  private wrrMax: Int32Array = new Int32Array(16)
  private wrrGcd: Int32Array = new Int32Array(16)
  private heaps: (LcHeap | undefined)[] = []
  /** per family: [id, address words, port] -> live connections */
  private readonly load4 = new U32Map(3, 1, 256)
  private readonly load6 = new U32Map(6, 1, 64)

  /** Room for ids below n (an install calls it; amortised, never per packet in steady state). */
  reserve(n: number): void {
    if (n <= this.cursor.length) return
    const len = Math.max(n, this.cursor.length * 2)
    const grow = (a: Int32Array): Int32Array => {
      const b = new Int32Array(len)
      b.set(a)
      return b
    }
    this.cursor = grow(this.cursor)
    this.cw = grow(this.cw)
    this.wrrOff = grow(this.wrrOff)
    this.wrrN = grow(this.wrrN)
    this.wrrMax = grow(this.wrrMax)
    this.wrrGcd = grow(this.wrrGcd)
  }

  /** rr: the next endpoint of the set, one cursor per service port. */
  rr(id: number, set: SchedSet): number {
    this.reserve(id + 1)
    let i = this.cursor[id]!
    if (i >= set.count) i = 0
    this.cursor[id] = i + 1
    return i
  }

  /** wrr: IPVS's ip_vs_wrr_schedule: walk the set, lowering the current weight by the gcd at each wrap. */
  wrr(id: number, set: SchedSet): number {
    this.reserve(id + 1)
    const n = set.count
    if (this.wrrData[id] !== set.data || this.wrrOff[id] !== set.off || this.wrrN[id] !== n) {
      let max = 0
      let g = 0
      for (let i = 0; i < n; i++) {
        const w = epWeight(set, i)
        if (w > max) max = w
        g = gcd(g, w)
      }
      this.wrrData[id] = set.data
      this.wrrOff[id] = set.off
      this.wrrN[id] = n
      this.wrrMax[id] = max
      this.wrrGcd[id] = g
      // Start just before a wrap, so the first pick opens a full cycle (IPVS starts mid-cycle at weight 0).
      this.cursor[id] = n - 1
      this.cw[id] = 0
    }
    let i = this.cursor[id]!
    let cw = this.cw[id]!
    for (;;) {
      i++
      if (i >= n) {
        i = 0
        cw -= this.wrrGcd[id]!
        if (cw <= 0) cw = this.wrrMax[id]!
      }
      if (epWeight(set, i) >= cw) break
    }
    this.cursor[id] = i
    this.cw[id] = cw
    return i
  }

  /** sh: a hash of the client address (words at k[0..aw)) picks the endpoint. */
  sh(set: SchedSet, k: Uint32Array): number {
    return shIndex(k, set.aw, set.count)
  }

  /** lc / wlc: the endpoint with the fewest live connections (per weight). */
  lc(id: number, set: SchedSet): number {
    let h = this.heaps[id]
    if (h === undefined || !h.same(set)) {
      const map = set.aw === 1 ? this.load4 : this.load6
      h = new LcHeap(set, i => {
        const b = set.off + i * (set.aw + 1)
        this.keyOf(map, id, set.data, b, set.aw, set.data[b + set.aw]! & 0xffff)
        const s = map.find()
        return s < 0 ? 0 : map.vals[s]!
      })
      this.heaps[id] = h
    }
    return h.heap[0]!
  }

  private keyOf(map: U32Map, id: number, words: Uint32Array, wo: number, aw: number, port: number): void {
    const key = map.key
    key[0] = id
    for (let w = 0; w < aw; w++) key[1 + w] = words[wo + w]!
    key[1 + aw] = port
  }

  /**
   * A connection of service port id to the endpoint (address words at words[wo..], port) opened (d = 1) or closed
   * (d = -1); idx is its index in the set it was chosen from (checked against the heap's set before use).
   */
  count(id: number, aw: number, words: Uint32Array, wo: number, port: number, idx: number, d: number): void {
    const map = aw === 1 ? this.load4 : this.load6
    this.keyOf(map, id, words, wo, aw, port)
    let s = map.find()
    if (s < 0) {
      if (d < 0) return
      s = map.insert()
      map.vals[s] = 0
    }
    const v = map.vals[s]! + d
    if (v <= 0) map.removeAt(s)
    else map.vals[s] = v
    const h = this.heaps[id]
    if (h !== undefined && h.is(idx, words, wo, port)) h.add(idx, d)
  }

  /** Live connections the lc/wlc services count (tests, stats). */
  get counted(): number {
    let n = 0
    for (const m of [this.load4, this.load6]) for (let s = 0; s < m.cap; s++) if (m.used[s] !== 0) n += m.vals[s]!
    return n
  }
}

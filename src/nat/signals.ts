// Per-backend golden signals and outlier state, in typed arrays indexed by an endpoint slot (packet thread).
//
//   EndpointBook.slot(id, words, off, aw, port) -> slot       one hash lookup per new connection (creates the slot)
//   sig[slot * SIG_WORDS + Sig.*]                             counters (Float64)
//   hist[slot * HIST_WORDS + bucket]                          SYN -> SYN-ACK connect time, CONNECT_BUCKETS_MS
//   snapshot() -> EndpointSignals                             copies for the control thread: O(endpoints seen)
//
// An endpoint slot is keyed by (service-port id, endpoint address, port): a pod backing two service ports has two
// slots. A service-port id that an install reuses for another service port gets a new epoch; its slots are reset
// the next time they are used, so nothing is walked on the packet thread. Slots are never freed: their number is
// the number of (service port, endpoint) pairs seen since start.

import { U32Map } from './hash'
import type { NatTable } from './compile'
import { wordsToString } from './addr'
import { endpointString } from '../model/names'

/** Counter words per endpoint slot. */
export const Sig = {
  /** new connections sent to the endpoint */
  OPENED: 0,
  /** TCP connects that failed: RST or ICMP unreachable to the SYN, or no SYN-ACK within the connect timeout */
  FAILED: 1,
  /** TCP connections that ended (FIN or RST seen) or failed */
  CLOSED: 2,
  /** RSTs the client sent */
  RST_CLIENT: 3,
  /** RSTs the endpoint sent */
  RST_ENDPOINT: 4,
  /** IP bytes client -> endpoint */
  BYTES_TO: 5,
  /** IP bytes endpoint -> client */
  BYTES_FROM: 6,
  /** times the endpoint was ejected */
  EJECTIONS: 7,
  /** TCP connections opened (active = TCP_OPENED - CLOSED) */
  TCP_OPENED: 8,
} as const
export const SIG_WORDS = 9

/** Upper bounds (ms) of the connect-time histogram buckets; one more bucket (+Inf), then sum and count. */
export const CONNECT_BUCKETS_MS: readonly number[] = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
const NB = CONNECT_BUCKETS_MS.length
const HIST_WORDS = NB + 3
const HIST_SUM = NB + 1
const HIST_COUNT = NB + 2

/** Key words: id, address (4 words, IPv4 padded), port | family bit. */
const KEY_WORDS = 6
const V6_BIT = 1 << 16

/** What the control thread gets: copies, `n` slots. */
export interface EndpointSignals {
  readonly n: number
  /** KEY_WORDS per slot: id, address words, port (| 1 << 16 for IPv6) */
  readonly keys: Uint32Array
  readonly sig: Float64Array
  readonly hist: Float64Array
  /** ms the endpoint stays ejected (0: not ejected) */
  readonly ejectedMs: Float64Array
  /** 1: the slot belongs to the service port now holding its id */
  readonly live: Uint8Array
}

export class EndpointBook {
  private readonly map = new U32Map(KEY_WORDS, 1, 256)
  n = 0
  private cap = 256
  keys: Uint32Array = new Uint32Array(this.cap * KEY_WORDS)
  sig: Float64Array = new Float64Array(this.cap * SIG_WORDS)
  hist: Float64Array = new Float64Array(this.cap * HIST_WORDS)
  /** outlier state (outlier.ts): ejected until (ms), consecutive failures, ejections in a row */
  ejectedUntil: Float64Array = new Float64Array(this.cap)
  consecutive: Uint32Array = new Uint32Array(this.cap)
  streak: Uint32Array = new Uint32Array(this.cap)
  private epoch: Uint32Array = new Uint32Array(this.cap)
  /** per service-port id: epoch, ejected endpoint slots */
  private idEpoch: Uint32Array = new Uint32Array(64)
  ejectedOf: Uint32Array = new Uint32Array(64)

  /** The slot of (id, endpoint at words[off..off+aw), port), created on first use. */
  slot(id: number, words: Uint32Array, off: number, aw: number, port: number): number {
    if (id >= this.idEpoch.length) this.growIds(id + 1)
    const k = this.map.key
    k[0] = id
    for (let i = 0; i < 4; i++) k[1 + i] = i < aw ? words[off + i]! : 0
    k[5] = (port & 0xffff) | (aw === 4 ? V6_BIT : 0)
    const s = this.map.insert()
    if (this.map.inserted) {
      const b = this.n++
      if (b >= this.cap) this.grow()
      this.map.vals[s] = b
      for (let i = 0; i < KEY_WORDS; i++) this.keys[b * KEY_WORDS + i] = k[i]!
      this.reset(b, id)
      return b
    }
    const b = this.map.vals[s]!
    if (this.epoch[b] !== this.idEpoch[id]) this.reset(b, id)
    return b
  }

  /** The service-port id of slot b. */
  idOf(b: number): number {
    return this.keys[b * KEY_WORDS]!
  }

  /** Whether slot b belongs to the service port now holding its id. */
  current(b: number): boolean {
    return this.epoch[b] === this.idEpoch[this.keys[b * KEY_WORDS]!]
  }

  /** Service-port ids an install removed or reused: their slots start over when next used. */
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

  snapshot(nowMs: number): EndpointSignals {
    const n = this.n
    const ejectedMs = new Float64Array(n)
    const live = new Uint8Array(n)
    for (let b = 0; b < n; b++) {
      live[b] = this.current(b) ? 1 : 0
      ejectedMs[b] = live[b] === 1 && this.ejectedUntil[b]! > nowMs ? this.ejectedUntil[b]! - nowMs : 0
    }
    return {
      n,
      keys: this.keys.slice(0, n * KEY_WORDS),
      sig: this.sig.slice(0, n * SIG_WORDS),
      hist: this.hist.slice(0, n * HIST_WORDS),
      ejectedMs,
      live,
    }
  }

  private reset(b: number, id: number): void {
    this.epoch[b] = this.idEpoch[id]!
    this.sig.fill(0, b * SIG_WORDS, (b + 1) * SIG_WORDS)
    this.hist.fill(0, b * HIST_WORDS, (b + 1) * HIST_WORDS)
    this.ejectedUntil[b] = 0
    this.consecutive[b] = 0
    this.streak[b] = 0
  }

  private grow(): void {
    const cap = this.cap * 2
    const g64 = (a: Float64Array, w: number): Float64Array => {
      const x = new Float64Array(cap * w)
      x.set(a)
      return x
    }
    const g32 = (a: Uint32Array, w: number): Uint32Array => {
      const x = new Uint32Array(cap * w)
      x.set(a)
      return x
    }
    this.keys = g32(this.keys, KEY_WORDS)
    this.sig = g64(this.sig, SIG_WORDS)
    this.hist = g64(this.hist, HIST_WORDS)
    this.ejectedUntil = g64(this.ejectedUntil, 1)
    this.consecutive = g32(this.consecutive, 1)
    this.streak = g32(this.streak, 1)
    this.epoch = g32(this.epoch, 1)
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

/** Decodes slot b's key of a snapshot: id, address words (aw of them), port, family. */
function signalKey(s: EndpointSignals, b: number): { id: number; family: 4 | 6; words: Uint32Array; port: number } {
  const o = b * KEY_WORDS
  const family = (s.keys[o + 5]! & V6_BIT) !== 0 ? 6 : 4
  return { id: s.keys[o]!, family, words: s.keys.subarray(o + 1, o + 1 + (family === 4 ? 1 : 4)), port: s.keys[o + 5]! & 0xffff }
}

/** The histogram of slot b as Prometheus wants it: cumulative counts per bucket bound, sum and count. */
function connectHistogram(s: EndpointSignals, b: number): { buckets: number[]; sum: number; count: number } {
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
export function signalRows(table: NatTable, s: EndpointSignals): SignalRow[] {
  const out: SignalRow[] = []
  for (let b = 0; b < s.n; b++) {
    if (s.live[b] !== 1) continue
    const k = signalKey(s, b)
    const sp = table.svcPorts[k.id]
    if (sp === undefined || sp.family !== k.family) continue
    const o = b * SIG_WORDS
    const g = (i: number): number => s.sig[o + i]!
    out.push({
      id: k.id,
      namespace: sp.namespace,
      service: sp.name,
      port: sp.portName !== '' ? sp.portName : String(sp.port),
      endpoint: endpointString(wordsToString(k.words, 0, k.family), k.port),
      opened: g(Sig.OPENED),
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
  return out
}

// TCP connects in flight (SYN sent, no SYN-ACK yet): a bounded pool of slots, one per tracked connection, for the
// connect-time signal, outlier ejection's timeouts and connect-time failover.
//
// A slot remembers the conntrack entry (family, entry, original ports word to recognise reuse), the endpoint slot
// (signals.ts), when the SYN went out and when it times out, the endpoints already tried, and with failover the
// client's SYN as it arrived (before NAT, at most SYN_BYTES: IP header + TCP header with options). When the pool is
// full a connection is simply not tracked (counted). Timeouts are found by walking the live slots: O(pending).

import { DEFAULT_OUTLIER, checkOutlier, type OutlierConfig } from './outlier'

export interface FailoverConfig {
  /** re-send a failed SYN to another endpoint */
  readonly enabled: boolean
  /** no SYN-ACK after this many ms counts as a failed connect (and fails over) */
  readonly synTimeoutMs: number
  /** other endpoints tried after the first, at most (0-7) */
  readonly maxRetries: number
  /** connects tracked at once */
  readonly pool: number
}

const DEFAULT_FAILOVER: FailoverConfig = Object.freeze({ enabled: false, synTimeoutMs: 1000, maxRetries: 2, pool: 16384 })

/** Endpoints a slot remembers as tried (the first + retries). */
const MAX_TRIED = 8
/** Bytes of a SYN kept for failover: a 60-byte IPv4 header or 40-byte IPv6 header + a 60-byte TCP header. */
export const SYN_BYTES = 120

/** Checks every field; throws a RangeError naming the bad one. */
function checkFailover(c: FailoverConfig): FailoverConfig {
  if (!(c.synTimeoutMs >= 50 && c.synTimeoutMs <= 60_000)) throw new RangeError(`failover synTimeout must be 50ms-60s, not ${c.synTimeoutMs}ms`)
  if (!Number.isInteger(c.maxRetries) || c.maxRetries < 0 || c.maxRetries > MAX_TRIED - 1)
    throw new RangeError(`failover maxRetries must be an integer 0-${MAX_TRIED - 1}, not ${c.maxRetries}`)
  if (!Number.isInteger(c.pool) || c.pool < 1 || c.pool > 1 << 20) throw new RangeError(`failover pool must be an integer 1-1048576, not ${c.pool}`)
  return c
}

/** Why a connect failed (observe records and counters). */
export const ConnectFail = { RST: 0, UNREACHABLE: 1, TIMEOUT: 2 } as const

export class PendingConnects {
  readonly cap: number
  /** 4 or 6; 0: free */
  readonly fam: Uint8Array
  readonly entry: Int32Array
  readonly ports: Uint32Array
  /** endpoint slot (signals.ts) of the current attempt */
  readonly ep: Int32Array
  readonly sentMs: Float64Array
  readonly deadlineMs: Float64Array
  readonly tries: Uint8Array
  readonly tried: Int32Array
  /** stored SYN length (0: none stored) */
  readonly len: Uint16Array
  readonly bytes: Uint8Array
  /** per conntrack entry: slot + 1 (0: not tracked), per family */
  readonly of4: Int32Array
  readonly of6: Int32Array
  private readonly next: Int32Array
  private freeHead = 0
  /** live slots, dense, and each slot's position in it */
  private readonly live: Int32Array
  private readonly pos: Int32Array
  count = 0
  /** slots whose SYN waits to be sent (a ring) */
  private readonly outQ: Int32Array
  private outHead = 0
  outCount = 0

  constructor(cap: number, ct4: number, ct6: number, keepSyn: boolean) {
    this.cap = cap
    this.fam = new Uint8Array(cap)
    this.entry = new Int32Array(cap)
    this.ports = new Uint32Array(cap)
    this.ep = new Int32Array(cap)
    this.sentMs = new Float64Array(cap)
    this.deadlineMs = new Float64Array(cap)
    this.tries = new Uint8Array(cap)
    this.tried = new Int32Array(cap * MAX_TRIED)
    this.len = new Uint16Array(cap)
    this.bytes = new Uint8Array(keepSyn ? cap * SYN_BYTES : 0)
    this.of4 = new Int32Array(ct4)
    this.of6 = new Int32Array(ct6)
    this.next = new Int32Array(cap)
    for (let i = 0; i < cap; i++) this.next[i] = i + 1 < cap ? i + 1 : -1
    this.live = new Int32Array(cap)
    this.pos = new Int32Array(cap)
    this.outQ = new Int32Array(cap)
  }

  /** The per-entry index of a family (4 or 6). */
  ofFam(family: number): Int32Array {
    return family === 4 ? this.of4 : this.of6
  }

  /** A slot for conntrack entry e of `family`, or -1 when the pool is full. */
  add(family: number, e: number, ports: number, ep: number, nowMs: number, timeoutMs: number): number {
    const p = this.freeHead
    if (p < 0) return -1
    this.freeHead = this.next[p]!
    this.fam[p] = family
    this.entry[p] = e
    this.ports[p] = ports
    this.ep[p] = ep
    this.sentMs[p] = nowMs
    this.deadlineMs[p] = nowMs + timeoutMs
    this.tries[p] = 1
    this.tried[p * MAX_TRIED] = ep
    this.len[p] = 0
    this.live[this.count] = p
    this.pos[p] = this.count
    this.count++
    this.ofFam(family)[e] = p + 1
    return p
  }

  /** Keeps the SYN at buf[off, off+len) for slot p; false when it does not fit. */
  keep(p: number, buf: Uint8Array, off: number, len: number): boolean {
    if (len > SYN_BYTES || this.bytes.length === 0) return false
    this.bytes.set(buf.subarray(off, off + len), p * SYN_BYTES)
    this.len[p] = len
    return true
  }

  /** Whether slot p still describes entry e (not freed, not reused for another connection). */
  owns(p: number, family: number, e: number, ports: number): boolean {
    return this.fam[p] === family && this.entry[p] === e && this.ports[p] === ports
  }

  /** Whether endpoint slot ep was tried by slot p. */
  wasTried(p: number, ep: number): boolean {
    const n = this.tries[p]!
    for (let i = 0; i < n; i++) if (this.tried[p * MAX_TRIED + i] === ep) return true
    return false
  }

  /** Slot p moved to conntrack entry e on endpoint slot ep; its SYN is queued to be sent. */
  retried(p: number, e: number, ep: number, nowMs: number, timeoutMs: number): void {
    const old = this.entry[p]!
    const of = this.ofFam(this.fam[p]!)
    if (of[old] === p + 1) of[old] = 0
    this.entry[p] = e
    of[e] = p + 1
    this.ep[p] = ep
    this.sentMs[p] = nowMs
    this.deadlineMs[p] = nowMs + timeoutMs
    const n = this.tries[p]!
    if (n < MAX_TRIED) {
      this.tried[p * MAX_TRIED + n] = ep
      this.tries[p] = n + 1
    }
    this.outQ[(this.outHead + this.outCount) % this.cap] = p
    this.outCount++
  }

  /** The next slot whose SYN waits to be sent, removed from the queue (-1: none). */
  shiftOut(): number {
    if (this.outCount === 0) return -1
    const p = this.outQ[this.outHead]!
    this.outHead = (this.outHead + 1) % this.cap
    this.outCount--
    return p
  }

  release(p: number): void {
    const family = this.fam[p]!
    if (family === 0) return
    const of = this.ofFam(family)
    const e = this.entry[p]!
    if (of[e] === p + 1) of[e] = 0
    this.fam[p] = 0
    this.len[p] = 0
    const i = this.pos[p]!
    const last = this.live[--this.count]!
    this.live[i] = last
    this.pos[last] = i
    this.next[p] = this.freeHead
    this.freeHead = p
  }

  /** Live slot at position i of the dense list (0 <= i < count). */
  liveAt(i: number): number {
    return this.live[i]!
  }
}

/** Connect tracking as the engine takes it: any part on makes the engine keep the per-endpoint book. */
export interface ConnectOptions {
  /** per-endpoint counters and the connect-time histogram */
  readonly signals: boolean
  readonly failover: FailoverConfig
  /** null: no ejection */
  readonly outlier: OutlierConfig | null
}

/** Counters of connect tracking, by index (ConnStat) and name. */
export const ConnStat = {
  /** SYNs re-sent to another endpoint */
  FAILOVER: 0,
  /** failed connects with no other endpoint left or retries used up: the failure reaches the client */
  FAILOVER_EXHAUSTED: 1,
  /** connects not tracked: the pool was full */
  UNTRACKED: 2,
  /** SYNs too long (or with data) to keep: no failover for them */
  SYN_NOT_KEPT: 3,
  /** new connections that skipped an ejected endpoint */
  SKIPPED_EJECTED: 4,
  EJECTIONS: 5,
  FAILED_RST: 6,
  FAILED_UNREACHABLE: 7,
  FAILED_TIMEOUT: 8,
  /** failover SYNs not sent: the output had no room */
  RESEND_DROPPED: 9,
} as const
export const CONN_STAT_NAMES: readonly string[] = [
  'failover_resent',
  'failover_exhausted',
  'connect_untracked',
  'connect_syn_not_kept',
  'skipped_ejected',
  'endpoint_ejections',
  'connect_failed_rst',
  'connect_failed_unreachable',
  'connect_failed_timeout',
  'failover_resend_dropped',
]

/** Connect tracking as a config file writes it (agent JSON, `tundra run`'s tundra: section): durations in seconds. */
export interface ConnectConfig {
  readonly failover?: undefined | { readonly enabled?: boolean; readonly synTimeout?: number; readonly maxRetries?: number; readonly pool?: number }
  readonly outlierEjection?:
    | undefined
    | {
        readonly enabled?: boolean
        readonly consecutiveFailures?: number
        readonly baseEjectionTime?: number
        readonly maxEjectionTime?: number
        readonly maxEjectionPercent?: number
      }
  readonly signals?: undefined | { readonly enabled?: boolean }
}

const CONNECT_FIELDS: Readonly<Record<string, readonly string[]>> = {
  failover: ['enabled', 'synTimeout', 'maxRetries', 'pool'],
  outlierEjection: ['enabled', 'consecutiveFailures', 'baseEjectionTime', 'maxEjectionTime', 'maxEjectionPercent'],
  signals: ['enabled'],
}

/**
 * The engine's ConnectOptions from a config's failover / outlierEjection / signals sections, every field checked
 * (an unknown one, a wrong type or a value out of range throws a RangeError naming it). Defaults: failover off,
 * ejection off, signals on. Failover and ejection keep per-engine state whose timer touches conntrack outside the
 * shared-conntrack lock, so they are refused with packetThreads > 1 (signals are per engine and stay allowed).
 */
export function connectOptions(c: ConnectConfig, packetThreads = 1): ConnectOptions {
  for (const [section, fields] of Object.entries(CONNECT_FIELDS)) {
    const s = (c as Record<string, unknown>)[section]
    if (s === undefined || s === null) continue
    if (typeof s !== 'object' || Array.isArray(s)) throw new RangeError(`${section}: expected a mapping, got ${JSON.stringify(s)}`)
    for (const [k, v] of Object.entries(s)) {
      if (!fields.includes(k)) throw new RangeError(`${section}.${k}: unknown field (known: ${fields.join(', ')})`)
      const want = k === 'enabled' ? 'boolean' : 'number'
      if (v !== undefined && typeof v !== want) throw new RangeError(`${section}.${k}: expected a ${want}, got ${JSON.stringify(v)}`)
    }
  }
  const f = c.failover ?? {}
  const o = c.outlierEjection ?? {}
  const sec = (v: number | undefined, d: number): number => (v === undefined ? d : v * 1000)
  const failover = checkFailover({
    enabled: f.enabled ?? DEFAULT_FAILOVER.enabled,
    synTimeoutMs: sec(f.synTimeout, DEFAULT_FAILOVER.synTimeoutMs),
    maxRetries: f.maxRetries ?? DEFAULT_FAILOVER.maxRetries,
    pool: f.pool ?? DEFAULT_FAILOVER.pool,
  })
  const outlier =
    o.enabled === true
      ? checkOutlier({
          consecutiveFailures: o.consecutiveFailures ?? DEFAULT_OUTLIER.consecutiveFailures,
          baseEjectionMs: sec(o.baseEjectionTime, DEFAULT_OUTLIER.baseEjectionMs),
          maxEjectionMs: sec(o.maxEjectionTime, DEFAULT_OUTLIER.maxEjectionMs),
          maxEjectionPercent: o.maxEjectionPercent ?? DEFAULT_OUTLIER.maxEjectionPercent,
        })
      : null
  if (packetThreads > 1) {
    const on = [failover.enabled ? 'failover.enabled' : '', outlier !== null ? 'outlierEjection.enabled' : ''].filter(x => x !== '')
    if (on.length > 0)
      throw new RangeError(
        `${on.join(' and ')}: not supported with tun.packetThreads ${packetThreads} (> 1): connect tracking is per packet thread; use packetThreads 1`,
      )
  }
  return { signals: c.signals?.enabled ?? true, failover, outlier }
}

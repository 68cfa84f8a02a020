// Passive outlier ejection: consecutive connect failures (RST or ICMP unreachable to the SYN, no SYN-ACK within the
// connect timeout) take an endpoint out of new-connection selection for a back-off that doubles on each ejection in
// a row, up to a maximum; a successful connect resets both. State lives in the EndpointBook (signals.ts); the
// selection reads one per-service-port count (zero: nothing to skip) and, only when it is not zero, the chosen
// endpoint's ejected-until time. Panic threshold: when more than maxEjectionPercent of a service port's endpoints
// are ejected, ejection is ignored for it and every endpoint is used.

import { type EndpointBook, Sig, SIG_WORDS } from './signals'

export interface OutlierConfig {
  /** consecutive failures that eject an endpoint (>= 1) */
  readonly consecutiveFailures: number
  /** first ejection, ms; doubled on each ejection in a row */
  readonly baseEjectionMs: number
  /** longest ejection, ms */
  readonly maxEjectionMs: number
  /** most endpoints of a service port, in percent, that may be ejected at once; above it all are used */
  readonly maxEjectionPercent: number
}

export const DEFAULT_OUTLIER: OutlierConfig = Object.freeze({
  consecutiveFailures: 5,
  baseEjectionMs: 30_000,
  maxEjectionMs: 300_000,
  maxEjectionPercent: 50,
})

/** Checks every field; throws a RangeError naming the bad one. */
export function checkOutlier(c: OutlierConfig): OutlierConfig {
  if (!Number.isInteger(c.consecutiveFailures) || c.consecutiveFailures < 1 || c.consecutiveFailures > 1000)
    throw new RangeError(`outlier consecutiveFailures must be an integer 1-1000, not ${c.consecutiveFailures}`)
  if (!(c.baseEjectionMs >= 1 && c.baseEjectionMs <= 86_400_000)) throw new RangeError(`outlier baseEjection must be 1ms-24h, not ${c.baseEjectionMs}ms`)
  if (!(c.maxEjectionMs >= c.baseEjectionMs && c.maxEjectionMs <= 86_400_000))
    throw new RangeError(`outlier maxEjection must be baseEjection-24h, not ${c.maxEjectionMs}ms`)
  if (!(c.maxEjectionPercent >= 0 && c.maxEjectionPercent <= 100)) throw new RangeError(`outlier maxEjectionPercent must be 0-100, not ${c.maxEjectionPercent}`)
  return c
}

export class Outlier {
  /** refs of ejected slots (book.ref), for expiry in tick (O(ejected)) */
  private readonly ejected: number[] = []

  constructor(
    readonly cfg: OutlierConfig,
    private readonly book: EndpointBook,
  ) {}

  /** A connect to slot b failed at nowMs; true when this ejected it. */
  failed(b: number, nowMs: number): boolean {
    const k = this.book
    const c = ++k.consecutive[b]!
    if (c < this.cfg.consecutiveFailures || k.ejectedUntil[b]! > nowMs) return false
    const streak = k.streak[b]!
    const ms = Math.min(this.cfg.maxEjectionMs, this.cfg.baseEjectionMs * 2 ** Math.min(streak, 30))
    k.streak[b] = streak + 1
    k.consecutive[b] = 0
    k.ejectedUntil[b] = nowMs + ms
    k.ejectedOf[k.idOf(b)]!++
    k.sig[b * SIG_WORDS + Sig.EJECTIONS]!++
    this.ejected.push(k.ref(b))
    return true
  }

  /** A connect to slot b succeeded. */
  succeeded(b: number): void {
    this.book.consecutive[b] = 0
    this.book.streak[b] = 0
  }

  /**
   * Whether selection must skip slot b of service port `id` (with `count` endpoints): it is ejected and the
   * service port is under its panic threshold.
   */
  skip(b: number, id: number, count: number, nowMs: number): boolean {
    const k = this.book
    if (b < 0 || k.ejectedUntil[b]! <= nowMs) return false
    return k.ejectedOf[id]! * 100 <= this.cfg.maxEjectionPercent * count
  }

  /** Ends ejections whose time is up; returns the slots that came back (reused array). */
  expire(nowMs: number, back: number[]): number[] {
    back.length = 0
    const k = this.book
    const list = this.ejected
    for (let i = 0; i < list.length; ) {
      const b = k.resolve(list[i]!)
      if (b < 0 || !k.current(b)) {
        list[i] = list[list.length - 1]!
        list.pop()
        continue
      }
      if (k.ejectedUntil[b]! <= nowMs) {
        const id = k.idOf(b)
        if (k.ejectedOf[id]! > 0) k.ejectedOf[id]!--
        k.ejectedUntil[b] = 0
        back.push(b)
        list[i] = list[list.length - 1]!
        list.pop()
        continue
      }
      i++
    }
    return back
  }
}

// Exponential backoff with jitter (client-go's reflector: 800 ms doubling to 30 s), and a sleep that stop() can cut short.
import { setTimeout as delay } from 'node:timers/promises'

export interface BackoffOptions {
  readonly initialMs?: number
  readonly maxMs?: number
  readonly factor?: number
  /** up to this fraction is added at random, so a fleet of nodes does not reconnect in lockstep */
  readonly jitter?: number
}

export class Backoff {
  private readonly initial: number
  private readonly max: number
  private readonly factor: number
  private readonly jitter: number
  private current: number

  constructor(opts: BackoffOptions = {}) {
    this.initial = opts.initialMs ?? 800
    this.max = opts.maxMs ?? 30_000
    this.factor = opts.factor ?? 2
    this.jitter = opts.jitter ?? 0.2
    this.current = this.initial
  }

  next(): number {
    const base = this.current
    this.current = Math.min(this.max, this.current * this.factor)
    return Math.min(this.max, Math.round(base * (1 + Math.random() * this.jitter)))
  }

  reset(): void {
    this.current = this.initial
  }
}

/** Resolves after ms, or false at once when the signal aborts. */
export async function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false
  try {
    await delay(ms, undefined, { signal })
    return true
  } catch {
    return false
  }
}

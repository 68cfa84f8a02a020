// A manual clock for SyncRunner: time moves only when the test says, timers fire in order.
import type { Clock } from '../../../src/run/sync'

export class FakeClock implements Clock {
  private t: number
  private seq = 0
  private readonly timers = new Map<number, { at: number; fn: () => void }>()

  constructor(start = Date.UTC(2025, 0, 1)) {
    this.t = start
  }

  now(): number {
    return this.t
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq
    this.timers.set(id, { at: this.t + ms, fn })
    return id
  }

  clearTimeout(h: unknown): void {
    this.timers.delete(h as number)
  }

  /** Moves time forward, firing each due timer at its own time (and the microtasks it queues before the next). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined
      for (const e of this.timers) if (e[1].at <= end && (next === undefined || e[1].at < next[1].at)) next = e
      if (next === undefined) break
      this.timers.delete(next[0])
      this.t = Math.max(this.t, next[1].at)
      next[1].fn()
      for (let i = 0; i < 10; i++) await Promise.resolve()
    }
    this.t = end
  }

  pending(): number {
    return this.timers.size
  }
}

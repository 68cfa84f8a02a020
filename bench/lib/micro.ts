// In-process micro benchmarks behind a small interface, so benchmark.js (the design card's choice) can be swapped
// for another runner without touching the cases. A case's fn does `opsPerCall` operations per call; results are
// per operation.
import Benchmark from 'benchmark'

export interface MicroCase {
  readonly group: string
  readonly name: string
  /** operations one call of fn performs (a batch amortises the runner's per-call overhead) */
  readonly opsPerCall: number
  readonly fn: () => void
}

export interface MicroResult {
  readonly group: string
  readonly name: string
  readonly nsPerOp: number
  readonly opsPerSec: number
  /** relative margin of error of the mean, percent (99 % confidence) */
  readonly rmePct: number
  readonly samples: number
  readonly runner: string
}

export interface MicroOptions {
  /** seconds of sampling per case */
  readonly maxTime: number
  readonly minSamples: number
}

export interface MicroRunner {
  readonly name: string
  run(c: MicroCase, o: MicroOptions): MicroResult
}

/** benchmark.js, run synchronously; fn is called (never decompiled: no setup/teardown strings), so closures work. */
export const benchmarkJs: MicroRunner = {
  name: 'benchmark.js 2.1.4',
  run(c, o) {
    const b = new Benchmark(`${c.group}: ${c.name}`, c.fn, { maxTime: o.maxTime, minSamples: o.minSamples, async: false, initCount: 1 })
    b.run({ async: false })
    const err = (b as unknown as { error?: unknown }).error
    if (err) throw err instanceof Error ? err : new Error(String(err))
    const secPerCall = b.stats.mean
    const nsPerOp = (secPerCall * 1e9) / c.opsPerCall
    return {
      group: c.group,
      name: c.name,
      nsPerOp,
      opsPerSec: 1e9 / nsPerOp,
      rmePct: b.stats.rme,
      samples: b.stats.sample.length,
      runner: this.name,
    }
  },
}

/** A plain hrtime loop (fallback, and a cross-check of the runner): fixed time, no statistics beyond the mean. */
export const hrtimeLoop: MicroRunner = {
  name: 'hrtime loop',
  run(c, o) {
    for (let i = 0; i < 1000; i++) c.fn()
    const samples: number[] = []
    const end = process.hrtime.bigint() + BigInt(Math.round(o.maxTime * 1e9))
    while (process.hrtime.bigint() < end || samples.length < o.minSamples) {
      const t0 = process.hrtime.bigint()
      let calls = 0
      do {
        c.fn()
        calls++
      } while (process.hrtime.bigint() - t0 < 10_000_000n)
      samples.push(Number(process.hrtime.bigint() - t0) / calls / c.opsPerCall)
    }
    const m = samples.reduce((a, b) => a + b, 0) / samples.length
    const sd = Math.sqrt(samples.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(1, samples.length - 1))
    return {
      group: c.group,
      name: c.name,
      nsPerOp: m,
      opsPerSec: 1e9 / m,
      rmePct: ((2.576 * sd) / Math.sqrt(samples.length) / m) * 100,
      samples: samples.length,
      runner: this.name,
    }
  },
}

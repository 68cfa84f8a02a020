// Seeded randomness for property tests: one generator, and the seed printed so a failure can be replayed.
import type { Test } from 'tap'

/** mulberry32: small, fast, seedable; numbers in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

/** The seed from `env` (a replay) or a fresh one, printed on the test with how to replay it. */
export function testSeed(t: Test, env: string): number {
  const seed = Number(process.env[env] ?? (Date.now() ^ (process.pid << 8)) >>> 0)
  t.comment(`seed ${seed} (replay with ${env}=${seed})`)
  return seed
}

// Maglev consistent hashing (Eisenbud et al., NSDI 2016), as Cilium's pkg/maglev builds it: one lookup table per
// endpoint set, computed at compile time, so a new flow costs one hash and one array read.
//
// Each endpoint gets a permutation of the M table slots from two hashes of its name (offset = h1 % M,
// skip = h2 % (M - 1) + 1); endpoints take turns claiming their next free preferred slot until the table is full.
// M is prime so every skip walks all slots. The table depends only on the set of names and M (the order they are
// given in does not matter once sorted, which compile.ts does), so two nodes with the same inputs pick the same
// endpoint, and removing one of N endpoints moves about 1/N of the flows.

import { hashString } from './hash'

/** Cilium's default table size: a prime well above 100x the endpoints a typical service has. */
export const MAGLEV_DEFAULT_SIZE = 16381

/** Seeds of the two permutation hashes; fixed so every node computes the same tables. */
const SEED_OFFSET = 0x5bd1e995
const SEED_SKIP = 0x1b873593

/** Value of an unfilled slot while building (never present in a finished table). */
const EMPTY = 0xffff

export function isPrime(n: number): boolean {
  if (!Number.isInteger(n) || n < 2) return false
  if (n % 2 === 0) return n === 2
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false
  return true
}

/**
 * The lookup table for endpoints named `names` (index i in the table means names[i]). M must be prime and larger
 * than names.length; at most 65535 endpoints (slots are uint16). Returns null for an empty set.
 */
export function maglevTable(names: readonly string[], m: number, seed = 0): Uint16Array | null {
  const n = names.length
  if (n === 0) return null
  if (!isPrime(m) || n >= m || n >= EMPTY) throw new RangeError(`maglev needs a prime table size above ${n} endpoints (got ${m})`)
  const table = new Uint16Array(m).fill(EMPTY)
  const cur = new Uint32Array(n)
  const skip = new Uint32Array(n)
  for (let i = 0; i < n; i++) {
    const name = names[i]!
    cur[i] = hashString(name, SEED_OFFSET ^ seed) % m
    skip[i] = (hashString(name, SEED_SKIP ^ seed) % (m - 1)) + 1
  }
  let filled = 0
  for (;;) {
    for (let i = 0; i < n; i++) {
      let c = cur[i]!
      const s = skip[i]!
      while (table[c] !== EMPTY) {
        c += s
        if (c >= m) c -= m
      }
      table[c] = i
      c += s
      cur[i] = c >= m ? c - m : c
      if (++filled === m) return table
    }
  }
}

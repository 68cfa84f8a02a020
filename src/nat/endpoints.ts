// Endpoint sets as spans of a shared Uint32Array arena: what the engine reads to pick and rewrite to an endpoint.
//
// Endpoint i of a set occupies stride = aw + 1 words from off + i * stride:
//
//   [address words (1 for IPv4, 4 for IPv6)] [port | flags << 16]        flags: EP_LOCAL, EP_TERMINATING
//
// One compile fills a few large arena chunks instead of allocating small arrays per service (at 20,000 services the
// garbage collector, not the compiler, was the cost). Names ("10.0.0.1:8080", "[fd00::1]:8080") are made on demand
// for dumps, explain and Maglev, never kept per endpoint.

import type { Family } from '../model/cluster'
import { wordsToString } from './addr'
import { endpointString } from '../model/names'

/** The endpoint runs on this node. */
export const EP_LOCAL = 1
/** The endpoint is terminating (used only because no endpoint is ready). */
export const EP_TERMINATING = 2

export interface EndpointSet {
  readonly count: number
  readonly family: Family
  /** address words per endpoint */
  readonly aw: number
  readonly data: Uint32Array
  /** first word of endpoint 0 in data */
  readonly off: number
  /** Maglev lookup table (values index this set) when lb is maglev */
  readonly maglev: Uint16Array | null
}

/** Index in set.data of endpoint i's first address word. */
export function epBase(set: EndpointSet, i: number): number {
  return set.off + i * (set.aw + 1)
}

export function epPort(set: EndpointSet, i: number): number {
  return set.data[set.off + i * (set.aw + 1) + set.aw]! & 0xffff
}

export function epFlags(set: EndpointSet, i: number): number {
  return set.data[set.off + i * (set.aw + 1) + set.aw]! >>> 16
}

/** "ip:port" or "[ip6]:port", as kube-proxy prints an endpoint (and hashes it into a KUBE-SEP name). */
export function endpointName(set: EndpointSet, i: number): string {
  return endpointString(wordsToString(set.data, epBase(set, i), set.family), epPort(set, i))
}

const NAMES = new WeakMap<EndpointSet, readonly string[]>()

/** Names of every endpoint, in set order (cached per set; off the hot path). */
export function endpointNames(set: EndpointSet): readonly string[] {
  let n = NAMES.get(set)
  if (n === undefined) {
    const out: string[] = []
    for (let i = 0; i < set.count; i++) out.push(endpointName(set, i))
    n = Object.freeze(out)
    NAMES.set(set, n)
  }
  return n
}

const EMPTY4: EndpointSet = Object.freeze({ count: 0, family: 4, aw: 1, data: new Uint32Array(0), off: 0, maglev: null })
const EMPTY6: EndpointSet = Object.freeze({ count: 0, family: 6, aw: 4, data: new Uint32Array(0), off: 0, maglev: null })

export function emptySet(family: Family): EndpointSet {
  return family === 4 ? EMPTY4 : EMPTY6
}

/** Whether endpoint i of a and endpoint j of b have the same address and port (flags ignored). */
export function sameEndpoint(a: EndpointSet, i: number, b: EndpointSet, j: number): boolean {
  if (a.aw !== b.aw) return false
  const ab = epBase(a, i)
  const bb = epBase(b, j)
  for (let k = 0; k < a.aw; k++) if (a.data[ab + k] !== b.data[bb + k]) return false
  return (a.data[ab + a.aw]! & 0xffff) === (b.data[bb + b.aw]! & 0xffff)
}

/**
 * Endpoints of `before` missing from `after` (by address and port). Both sets are sorted by address, then port, as
 * compile.ts builds them, so one merge walk suffices.
 */
export function removedEndpoints(before: EndpointSet, after: EndpointSet): number[] {
  const out: number[] = []
  let j = 0
  for (let i = 0; i < before.count; i++) {
    while (j < after.count && compareEndpoints(after, j, before, i) < 0) j++
    if (j < after.count && sameEndpoint(before, i, after, j)) continue
    out.push(i)
  }
  return out
}

/** Order of compile.ts's sets: address words, then port. */
export function compareEndpoints(a: EndpointSet, i: number, b: EndpointSet, j: number): number {
  const ab = epBase(a, i)
  const bb = epBase(b, j)
  for (let k = 0; k <= a.aw; k++) {
    const x = k === a.aw ? a.data[ab + k]! & 0xffff : a.data[ab + k]!
    const y = k === a.aw ? b.data[bb + k]! & 0xffff : b.data[bb + k]!
    if (x !== y) return x - y
  }
  return 0
}

/** Bump allocator of arena words: chunks grow from `first` words to 64K words; big requests get their own. */
export class Arena {
  private chunk: Uint32Array
  private used = 0
  private next: number

  constructor(first = 4096) {
    this.chunk = new Uint32Array(first)
    this.next = Math.min(65536, first * 2)
  }

  /** Reserves `words`; returns the chunk, with the start in `at`. */
  alloc(words: number): Uint32Array {
    if (this.used + words > this.chunk.length) {
      if (words > 65536) {
        this.at = 0
        return new Uint32Array(words)
      }
      this.chunk = new Uint32Array(Math.max(this.next, words))
      this.next = Math.min(65536, this.next * 2)
      this.used = 0
    }
    this.at = this.used
    this.used += words
    return this.chunk
  }

  /** start of the last alloc() in its chunk */
  at = 0
}

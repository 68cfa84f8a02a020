// Endpoint choice for a new connection: ClientIP session affinity first, then Maglev or uniform random.
//
// kube-proxy's iptables chain picks endpoint i with probability 1/(N-i) given that no earlier rule matched, which
// is exactly a uniform choice among N; `below(N)` is that choice in one draw. Affinity follows kube-proxy's "recent"
// lists: per service port and client address, the endpoint last chosen, refreshed by every new connection that
// uses it, forgotten after timeoutSeconds without one. Pins are kept in a typed-array hash with no cap on clients.

import { U32Map, hashWords } from './hash'
import type { EndpointSet } from './endpoints'

/** Fixed: two nodes hashing the same flow must land on the same Maglev slot. */
export const MAGLEV_FLOW_SEED = 0x2f0e1d5c

/** xoshiro128** (Blackman & Vigna): fast, seedable, good enough for load balancing; state in a typed array. */
export class Rng {
  private readonly s = new Uint32Array(4)

  constructor(seed = (Math.random() * 0x100000000) >>> 0) {
    // splitmix32 expands the seed so that small seeds still give well-mixed states.
    let x = seed >>> 0
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0
      let z = x
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
      this.s[i] = (z ^ (z >>> 16)) >>> 0
    }
    if ((this.s[0]! | this.s[1]! | this.s[2]! | this.s[3]!) === 0) this.s[0] = 1
  }

  next32(): number {
    const s = this.s
    const s1 = s[1]!
    let r = Math.imul(s1, 5)
    r = (r << 7) | (r >>> 25)
    r = Math.imul(r, 9) >>> 0
    const t = s1 << 9
    s[2] = s[2]! ^ s[0]!
    s[3] = s[3]! ^ s1
    s[1] = s1 ^ s[2]!
    s[0] = s[0]! ^ s[3]!
    s[2] = s[2]! ^ t
    const s3 = s[3]!
    s[3] = (s3 << 11) | (s3 >>> 21)
    return r
  }

  /** Uniform integer in [0, n) for n >= 1 (multiply-shift; bias below n / 2^32). */
  below(n: number): number {
    return Math.floor((this.next32() * n) / 4294967296)
  }
}

/** Flow hash for Maglev over the original tuple words (addresses and ports) and the protocol (int32). */
export function flowHash(words: Uint32Array, n: number, proto: number): number {
  return hashWords(words, 0, n, MAGLEV_FLOW_SEED ^ proto)
}

/**
 * Index of the endpoint (address at (words, off), port) in `set`, or -1. Tries `hint` first, so a pin made against
 * the current set costs one compare; after an update the set is searched.
 */
export function findEndpoint(set: EndpointSet, words: Uint32Array, off: number, port: number, hint: number): number {
  const d = set.data
  const aw = set.aw
  const stride = aw + 1
  if (hint >= 0 && hint < set.count) {
    const b = set.off + hint * stride
    if ((d[b + aw]! & 0xffff) === port) {
      let i = 0
      while (i < aw && d[b + i] === words[off + i]) i++
      if (i === aw) return hint
    }
  }
  for (let e = 0, b = set.off; e < set.count; e++, b += stride) {
    if ((d[b + aw]! & 0xffff) !== port) continue
    let i = 0
    while (i < aw && d[b + i] === words[off + i]) i++
    if (i === aw) return e
  }
  return -1
}

/**
 * ClientIP affinity pins of one family: (svcPortId, client address) -> (endpoint address, port, index hint,
 * expires). The engine fills `key` (svcPortId then the client address words) before lookup/pin.
 */
/** A SharedArrayBuffer for an affinity table packet threads share (`pins` at most; each thread wraps it). */
export function sharedAffinity(family: 4 | 6, pins: number): SharedArrayBuffer {
  const aw = family === 4 ? 1 : 4
  let cap = 16
  while (cap < pins * 2) cap *= 2
  return new SharedArrayBuffer(U32Map.sharedBytes(1 + aw, aw + 3, cap))
}

function sharedAffinitySlots(aw: number, sab: SharedArrayBuffer): number {
  return (sab.byteLength - 8) / ((1 + aw + aw + 3) * 4 + 1)
}

export class AffinityTable {
  readonly aw: number
  readonly map: U32Map
  /** value layout: [endpoint words (aw), port, index hint, expires] */
  private readonly vw: number

  constructor(aw: number, expected = 1024, shared?: SharedArrayBuffer) {
    this.aw = aw
    this.vw = aw + 3
    this.map = shared ? U32Map.overShared(1 + aw, this.vw, sharedAffinitySlots(aw, shared), shared) : new U32Map(1 + aw, this.vw, expected)
  }

  get key(): Uint32Array {
    return this.map.key
  }

  get size(): number {
    return this.map.size
  }

  /** Slot of the live pin for `key`, or -1 (an expired pin is removed). */
  lookup(now: number): number {
    const s = this.map.find()
    if (s < 0) return -1
    if (this.map.vals[s * this.vw + this.aw + 2]! <= now) {
      this.map.removeAt(s)
      return -1
    }
    return s
  }

  /** Endpoint address words of a pin start at vals[valOff(slot)]. */
  valOff(slot: number): number {
    return slot * this.vw
  }

  get vals(): Uint32Array {
    return this.map.vals
  }

  portOf(slot: number): number {
    return this.map.vals[slot * this.vw + this.aw]!
  }

  hintOf(slot: number): number {
    return this.map.vals[slot * this.vw + this.aw + 1]!
  }

  expiresOf(slot: number): number {
    return this.map.vals[slot * this.vw + this.aw + 2]!
  }

  /** Pins `key` to endpoint `idx` of `set` until `expires` (inserting or refreshing). */
  pin(set: EndpointSet, idx: number, expires: number): void {
    const s = this.map.insert()
    if (s < 0) return // a shared table that is full: this connection goes without a pin
    const v = this.map.vals
    const o = s * this.vw
    const aw = this.aw
    const b = set.off + idx * (set.aw + 1)
    for (let i = 0; i < aw; i++) v[o + i] = set.data[b + i]!
    v[o + aw] = set.data[b + aw]! & 0xffff
    v[o + aw + 1] = idx
    v[o + aw + 2] = expires
  }

  /** Refreshes the pin in `slot` (a new connection used it). */
  refresh(slot: number, idx: number, expires: number): void {
    const o = slot * this.vw
    this.map.vals[o + this.aw + 1] = idx
    this.map.vals[o + this.aw + 2] = expires
  }

  /** Removes expired pins among the next `budget` slots. */
  reap(now: number, budget: number): number {
    return this.map.reapExpired(this.aw + 2, now, budget)
  }

  /** Removes every pin of the service ports `ids` accepts (after a table swap reused their ids). */
  dropWhere(ids: (svcPortId: number) => boolean): number {
    const m = this.map
    let n = 0
    for (let c = 0; c < m.cap; ) {
      if (m.used[c] !== 0 && ids(m.keys[c * m.kw]!)) {
        m.removeAt(c)
        n++
        continue
      }
      c++
    }
    return n
  }
}

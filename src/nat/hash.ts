// Hashing and a flat open-addressing map over typed arrays: the O(1), allocation-free lookups under the NAT tables.
//
// U32Map maps a fixed number of uint32 key words to a fixed number of uint32 value words. Lookups read the key from
// the map's own scratch array `key` (fill it, then call find), so a packet costs no objects and no strings.
// Linear probing at load <= 1/2; deletion shifts later entries back (no tombstones), so probe chains stay short
// however long the map lives.

// Hashes on the hot path return signed int32: an unsigned value >= 2^31 returned from (or passed to) a function V8
// does not inline is boxed as a heap number, i.e. one allocation per packet.

/** murmur3's 32-bit finalizer: a bijection that spreads every input bit over the output (as int32). */
export function fmix32(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h | 0
}

/** One murmur3 x86_32 round: mixes word `k` into running hash `h`. */
export function mixWord(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51)
  k = (k << 15) | (k >>> 17)
  k = Math.imul(k, 0x1b873593)
  h ^= k
  h = (h << 13) | (h >>> 19)
  return (Math.imul(h, 5) + 0xe6546b64) | 0
}

/** Hash of n words of `a` from `off`, seeded (int32). */
export function hashWords(a: Uint32Array, off: number, n: number, seed: number): number {
  let h = seed | 0
  for (let i = 0; i < n; i++) h = mixWord(h, a[off + i]!)
  return fmix32(h ^ n)
}

/** murmur3 x86_32 of a string's UTF-16 code units, unsigned (deterministic across processes and machines). */
export function hashString(s: string, seed: number): number {
  let h = seed | 0
  let i = 0
  for (; i + 1 < s.length; i += 2) h = mixWord(h, s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16))
  if (i < s.length) {
    let k = Math.imul(s.charCodeAt(i), 0xcc9e2d51)
    k = (k << 15) | (k >>> 17)
    h ^= Math.imul(k, 0x1b873593)
  }
  return fmix32(h ^ s.length) >>> 0
}

function pow2AtLeast(n: number): number {
  let c = 16
  while (c < n) c *= 2
  return c
}

export class U32Map {
  /** key words per entry */
  readonly kw: number
  /** value words per entry */
  readonly vw: number
  /** scratch key: fill kw words, then find/insert */
  readonly key: Uint32Array
  /** slot capacity (a power of two) */
  cap: number
  /** set by insert(): whether the key was new */
  inserted = false
  keys: Uint32Array
  vals: Uint32Array
  used: Uint8Array
  private mask: number
  private readonly seed: number

  constructor(kw: number, vw: number, expected = 8, seed = 0x9e3779b9) {
    this.kw = kw
    this.vw = vw
    this.key = new Uint32Array(kw)
    this.seed = seed
    this.cap = pow2AtLeast(expected * 2)
    this.mask = this.cap - 1
    this.keys = new Uint32Array(this.cap * kw)
    this.vals = new Uint32Array(this.cap * vw)
    this.used = new Uint8Array(this.cap)
  }

  /** the arrays belong to another map too: copy them before the first change */
  private shared = false
  private size_ = 0
  /** a map over a SharedArrayBuffer (sharedMapBuffer): its size lives there, and it never grows */
  private fixedHdr: Int32Array | null = null

  /** Keys in the map. */
  get size(): number {
    return this.fixedHdr === null ? this.size_ : this.fixedHdr[0]!
  }

  set size(v: number) {
    if (this.fixedHdr === null) this.size_ = v
    else this.fixedHdr[0] = v
  }

  /** Bytes of a SharedArrayBuffer for a map of `cap` slots (a power of two) that threads share (overShared). */
  static sharedBytes(kw: number, vw: number, cap: number): number {
    return 8 + cap * (kw + vw) * 4 + cap
  }

  /**
   * A map over a SharedArrayBuffer of sharedBytes() (zeroed = empty) that other threads wrap too; callers
   * serialise every use with a lock of their own. It never grows: insert() returns -1 once it is half full.
   */
  static overShared(kw: number, vw: number, cap: number, sab: SharedArrayBuffer, seed = 0x9e3779b9): U32Map {
    if (cap < 16 || (cap & (cap - 1)) !== 0 || sab.byteLength !== U32Map.sharedBytes(kw, vw, cap)) {
      throw new RangeError(`shared map buffer of ${sab.byteLength} bytes does not fit ${cap} slots of ${kw}+${vw} words`)
    }
    const m = new U32Map(kw, vw, 1, seed)
    m.cap = cap
    m.mask = cap - 1
    m.fixedHdr = new Int32Array(sab, 0, 2)
    m.keys = new Uint32Array(sab, 8, cap * kw)
    m.vals = new Uint32Array(sab, 8 + cap * kw * 4, cap * vw)
    m.used = new Uint8Array(sab, 8 + cap * (kw + vw) * 4, cap)
    return m
  }

  /** The hash seed (an image of this map must be read with the same one). */
  get hashSeed(): number {
    return this.seed
  }

  /**
   * A map over arrays built elsewhere (a NatImage that crossed threads): O(1), the arrays are used as they are.
   * `cap` must be a power of two and the arrays laid out as this class lays them out.
   */
  static wrap(kw: number, vw: number, cap: number, size: number, keys: Uint32Array, vals: Uint32Array, used: Uint8Array, seed: number): U32Map {
    if (cap < 1 || (cap & (cap - 1)) !== 0 || keys.length !== cap * kw || vals.length !== cap * vw || used.length !== cap || size * 2 > cap) {
      throw new RangeError(`map image does not fit: cap ${cap}, ${keys.length} key words, ${vals.length} value words, ${used.length} slots, size ${size}`)
    }
    const m = new U32Map(kw, vw, 1, seed)
    m.cap = cap
    m.mask = cap - 1
    m.size = size
    m.keys = keys
    m.vals = vals
    m.used = used
    return m
  }

  /**
   * A copy for updateNat that shares this map's arrays until its first change (copy-on-write), so an update that
   * leaves the map as it was costs nothing. This map must not change afterwards.
   */
  clone(): U32Map {
    const m = new U32Map(this.kw, this.vw, 1, this.seed)
    m.cap = this.cap
    m.mask = this.mask
    m.size = this.size
    m.keys = this.keys
    m.vals = this.vals
    m.used = this.used
    m.shared = true
    return m
  }

  /** Whether this map still shares its arrays with the map it was cloned from. */
  get isShared(): boolean {
    return this.shared
  }

  private own(): void {
    this.shared = false
    this.keys = this.keys.slice()
    this.vals = this.vals.slice()
    this.used = this.used.slice()
  }

  /** Sets value word `i` of the entry in `slot` (copying shared arrays first when it changes). */
  setValAt(slot: number, i: number, v: number): void {
    const at = slot * this.vw + i
    if (this.vals[at] === v >>> 0) return
    if (this.shared) this.own()
    this.vals[at] = v
  }

  private home(keys: Uint32Array, off: number): number {
    return hashWords(keys, off, this.kw, this.seed) & this.mask
  }

  private sameKey(slot: number): boolean {
    const kw = this.kw
    const keys = this.keys
    const key = this.key
    const base = slot * kw
    for (let i = 0; i < kw; i++) if (keys[base + i] !== key[i]) return false
    return true
  }

  /** Slot holding `key`, or -1. */
  find(): number {
    let s = this.home(this.key, 0)
    const used = this.used
    const mask = this.mask
    while (used[s] !== 0) {
      if (this.sameKey(s)) return s
      s = (s + 1) & mask
    }
    return -1
  }

  /** First value word for `key`, or `missing`. */
  get(missing: number): number {
    const s = this.find()
    return s < 0 ? missing : this.vals[s * this.vw]!
  }

  /**
   * Slot for `key`, inserting it (values zeroed) when absent; `inserted` tells which. May grow the map (the only
   * allocation, amortised over the inserts that filled it).
   */
  insert(): number {
    if ((this.size + 1) * 2 > this.cap) {
      if (this.fixedHdr !== null) {
        // full (a shared map): the key may still be there
        const s = this.find()
        this.inserted = false
        return s
      }
      this.grow()
    }
    let s = this.home(this.key, 0)
    const mask = this.mask
    while (this.used[s] !== 0) {
      if (this.sameKey(s)) {
        this.inserted = false
        return s
      }
      s = (s + 1) & mask
    }
    if (this.shared) this.own()
    this.used[s] = 1
    const kw = this.kw
    for (let i = 0; i < kw; i++) this.keys[s * kw + i] = this.key[i]!
    this.vals.fill(0, s * this.vw, s * this.vw + this.vw)
    this.size++
    this.inserted = true
    return s
  }

  /** Sets the first value word of `key` (inserting it). */
  set(v: number): void {
    const s = this.insert()
    if (this.shared) this.setValAt(s, 0, v)
    else this.vals[s * this.vw] = v
  }

  /** Removes `key` if present; returns whether it was. */
  delete(): boolean {
    const s = this.find()
    if (s < 0) return false
    this.removeAt(s)
    return true
  }

  /** Removes the entry in `slot`, shifting later members of its probe run back so no tombstone is needed. */
  removeAt(slot: number): void {
    if (this.shared) this.own()
    const used = this.used
    const mask = this.mask
    const kw = this.kw
    const vw = this.vw
    const keys = this.keys
    const vals = this.vals
    let hole = slot
    let s = (slot + 1) & mask
    while (used[s] !== 0) {
      const h = this.home(keys, s * kw)
      // Move s into the hole when its home is not cyclically within (hole, s].
      if (((s - h) & mask) >= ((s - hole) & mask)) {
        for (let i = 0; i < kw; i++) keys[hole * kw + i] = keys[s * kw + i]!
        for (let i = 0; i < vw; i++) vals[hole * vw + i] = vals[s * vw + i]!
        hole = s
      }
      s = (s + 1) & mask
    }
    used[hole] = 0
    this.size--
  }

  clear(): void {
    if (this.shared) this.own()
    this.used.fill(0)
    this.size = 0
  }

  private cursor = 0

  /**
   * Incremental expiry: among the next `budget` slots, removes entries whose value word `w` (a deadline in coarse
   * seconds) is <= now. Returns how many it removed.
   */
  reapExpired(w: number, now: number, budget: number): number {
    let n = 0
    let c = this.cursor
    const vw = this.vw
    for (let i = 0; i < budget; i++) {
      if (c >= this.cap) c = 0
      if (this.used[c] !== 0 && this.vals[c * vw + w]! <= now) {
        this.removeAt(c)
        n++
        continue // the backward shift may have moved a live entry into this slot: look at it again
      }
      c++
    }
    this.cursor = c
    return n
  }

  private grow(): void {
    const oldCap = this.cap
    const oldKeys = this.keys
    const oldVals = this.vals
    const oldUsed = this.used
    const kw = this.kw
    const vw = this.vw
    this.cap = oldCap * 2
    this.mask = this.cap - 1
    this.keys = new Uint32Array(this.cap * kw)
    this.vals = new Uint32Array(this.cap * vw)
    this.used = new Uint8Array(this.cap)
    this.shared = false
    for (let o = 0; o < oldCap; o++) {
      if (oldUsed[o] === 0) continue
      let s = this.home(oldKeys, o * kw)
      while (this.used[s] !== 0) s = (s + 1) & this.mask
      this.used[s] = 1
      for (let i = 0; i < kw; i++) this.keys[s * kw + i] = oldKeys[o * kw + i]!
      for (let i = 0; i < vw; i++) this.vals[s * vw + i] = oldVals[o * vw + i]!
    }
  }
}

/** Buckets of a ChunkedMap; a power of two. */
const CHUNKS = 256

/**
 * A string-keyed map that is cheap to copy with a few changes: keys hash into 256 small Maps and `with()` copies
 * only the buckets it touches (updateNat at 20,000 services copies ~80 entries instead of 20,000). Immutable once
 * built; reads as a ReadonlyMap.
 */
export class ChunkedMap<V> implements ReadonlyMap<string, V> {
  private readonly chunks: readonly (ReadonlyMap<string, V> | undefined)[]
  readonly size: number

  private constructor(chunks: readonly (ReadonlyMap<string, V> | undefined)[], size: number) {
    this.chunks = chunks
    this.size = size
  }

  static from<V>(entries: Iterable<readonly [string, V]>): ChunkedMap<V> {
    const chunks: (Map<string, V> | undefined)[] = new Array(CHUNKS).fill(undefined)
    let size = 0
    for (const [k, v] of entries) {
      const i = hashString(k, 0) & (CHUNKS - 1)
      const c = (chunks[i] ??= new Map<string, V>())
      if (!c.has(k)) size++
      c.set(k, v)
    }
    return new ChunkedMap(chunks, size)
  }

  /** A copy with `changes` applied (undefined deletes); this map is not modified. */
  with(changes: ReadonlyMap<string, V | undefined>): ChunkedMap<V> {
    if (changes.size === 0) return this
    const chunks = this.chunks.slice()
    const copied = new Set<number>()
    let size = this.size
    for (const [k, v] of changes) {
      const i = hashString(k, 0) & (CHUNKS - 1)
      if (!copied.has(i)) {
        copied.add(i)
        chunks[i] = new Map(chunks[i] ?? [])
      }
      const c = chunks[i] as Map<string, V>
      const had = c.has(k)
      if (v === undefined) {
        if (had) {
          c.delete(k)
          size--
        }
      } else {
        if (!had) size++
        c.set(k, v)
      }
    }
    return new ChunkedMap(chunks, size)
  }

  get(k: string): V | undefined {
    return this.chunks[hashString(k, 0) & (CHUNKS - 1)]?.get(k)
  }

  has(k: string): boolean {
    return this.chunks[hashString(k, 0) & (CHUNKS - 1)]?.has(k) ?? false
  }

  *entries(): MapIterator<[string, V]> {
    for (const c of this.chunks) if (c !== undefined) yield* c.entries()
  }

  *keys(): MapIterator<string> {
    for (const c of this.chunks) if (c !== undefined) yield* c.keys()
  }

  *values(): MapIterator<V> {
    for (const c of this.chunks) if (c !== undefined) yield* c.values()
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries()
  }

  forEach(fn: (value: V, key: string, map: ReadonlyMap<string, V>) => void): void {
    for (const [k, v] of this.entries()) fn(v, k, this)
  }
}

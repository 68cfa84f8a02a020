// The control side of the zone: ZoneCompiler keeps what each owner (a Service, a namespace, the zone itself)
// contributes, and turns a change into the few entries it touches, encoded as ZoneImages for the packet thread
// (installed.ts). A service change recomputes its own names, the names that depend on them (CNAME chains into them,
// via a dependency index built at resolution), namespace and empty non-terminal names whose reference counts cross
// zero, and the PTRs its addresses claim (shared with other services). Entries that encode to the same bytes are not
// sent again. The SOA serial lives in the image header and is written at answer time, so a new serial rewrites
// nothing.
//
// The compiler mirrors the packet side's index: it picks every slot, so a delta is a list of slot writes plus one
// new arena chunk. When chunks, garbage or the load factor grow past their limits, update() returns a full image
// instead (compaction, on the control thread).

import type { Cluster, Pod, Service } from '../model/cluster'
import { fnv1a, nameToWire, normalizeName, QType } from './message'
import { Ans, EMPTY_CHUNK, EntryFlag, SLOT_INTS, Slot, type FullZoneImage, type ZoneImage } from './installed'
import {
  NS_KEY,
  compileEntry,
  inZoneName,
  mergeNodes,
  namespacePart,
  resolvePtr,
  serviceOwner,
  servicePart,
  staticPart,
  type CompiledAnswer,
  type EntryAnswers,
  type NodeBuild,
  type NodeView,
  type Part,
  type PtrClaim,
  type Rec,
  type ZoneLookup,
  type ZoneParams,
} from './records'

export type { DeltaZoneImage, FullZoneImage, ZoneImage } from './installed'

export interface ZoneOptions {
  /** cluster domain; default 'cluster.local' */
  readonly zone?: string
  /** TTL of positive answers and the SOA minimum (negative caching); default 5 s */
  readonly ttl?: number
  /** the cluster DNS service IP(s) (A/AAAA of ns.dns.<zone>); default 10.96.0.10 */
  readonly dnsIP?: string | readonly string[]
  /**
   * The lowest SOA serial; default: unix seconds at each compile. Every image's serial is max(previous + 1, this), so
   * it only grows; across restarts pass the last serial + 1 (or rely on the clock).
   */
  readonly serial?: number
  /** `<a-b-c-d>.<ns>.pod.<zone>` records (CoreDNS `pods insecure`); default true */
  readonly podRecords?: boolean
}

function zoneParams(opts: ZoneOptions): ZoneParams {
  const origin = normalizeName(opts.zone ?? 'cluster.local')
  if (origin === '') throw new RangeError('The cluster zone must not be the root')
  const dnsIPs = typeof opts.dnsIP === 'string' ? [opts.dnsIP] : [...(opts.dnsIP ?? ['10.96.0.10'])]
  return Object.freeze({ origin, ttl: opts.ttl ?? 5, dnsIPs, podRecords: opts.podRecords ?? true })
}

/** A name's answers as the packet side sees them (decoded from the entry bytes), for tests and tools. */
export interface ZoneEntry extends EntryAnswers {
  readonly name: string
}

interface Contribution {
  readonly owner: string
  readonly node: NodeBuild
}
interface Claim {
  readonly owner: string
  readonly seq: number
  readonly claim: PtrClaim
}
interface Stored {
  bytes: Uint8Array
  readonly hash: number
  slot: number
}

/** Beyond these, update() compacts into a full image (garbage: bytes of replaced entries still in old chunks). */
const MAX_CHUNKS = 1 << 16
const MAX_LOAD = 0.7
const MIN_GARBAGE_BYTES = 1 << 20
const EMPTY_NODE: NodeView = Object.freeze({ rrs: new Map(), extra: new Map(), reverse: false })

export class ZoneCompiler implements ZoneLookup {
  readonly params: ZoneParams
  private readonly minSerial: number | undefined
  private serial_ = 0
  private gen = 0
  private emitted = false
  // ---- contributions
  private parts = new Map<string, Part>()
  private contrib = new Map<string, Contribution[]>()
  private claims = new Map<string, Claim[]>()
  private entRefs = new Map<string, number>()
  private nsServices = new Map<string, number>()
  private nsSet = new Set<string>()
  private podNs = new Set<string>()
  private podsRef: readonly Pod[] | undefined
  private touchedNs = new Set<string>()
  private views = new Map<string, NodeView>()
  private deps = new Map<string, Set<string>>()
  private depsOf = new Map<string, string[]>()
  private dirty = new Set<string>()
  private problemCount = 0
  // ---- output: a mirror of the packet side's index
  private entries = new Map<string, Stored>()
  private slots = new Int32Array(0)
  private slotName: (string | undefined)[] = []
  private mask = -1
  private chunks = 0
  private garbage = 0
  private liveBytes = 0
  private writes: number[] = []

  constructor(opts: ZoneOptions = {}) {
    this.params = zoneParams(opts)
    this.minSerial = opts.serial
  }

  /** SOA serial of the last image. */
  get serial(): number {
    return this.serial_
  }

  /** Compile a whole cluster from scratch: a full image. `minSerial`: the serial must be at least this. */
  full(cluster: Cluster, minSerial = 0): FullZoneImage {
    this.reset()
    this.addPart(staticPart(this.params))
    this.syncPods(cluster.pods)
    for (const svc of cluster.services) this.addService(svc)
    this.syncNamespaces()
    this.applyChanges(this.flush())
    return this.emitFull(true, minSerial)
  }

  /**
   * Recompile the `changed` services (added or modified, as they are in `cluster` now) and drop the `deleted` ones:
   * a delta image on top of the last image, or a full one when there is none yet or compaction is due. Only
   * `cluster.pods` is read from `cluster` (namespaces known from pods), and only when it is not the array the last
   * call saw: pass the same array while pods do not change, or the update costs O(pods).
   */
  update(cluster: Cluster, changed: readonly Service[], deleted: readonly { namespace: string; name: string }[]): ZoneImage {
    if (!this.emitted) return this.full(cluster)
    this.syncPods(cluster.pods)
    for (const d of deleted) this.removeService(d.namespace, d.name)
    for (const svc of changed) this.addService(svc)
    this.syncNamespaces()
    return this.emitDelta(this.flush())
  }

  /** A full image of the current state (no recompile), e.g. when the packet side refused a delta. */
  snapshot(): FullZoneImage {
    return this.emitFull(false, 0)
  }

  // ---- what tools and tests read ------------------------------------------------------------------------------

  /** Compile problems (objects skipped): the zone's own, then by owner. */
  problems(): string[] {
    return [...this.parts.values()].sort((a, b) => (a.owner < b.owner ? -1 : a.owner > b.owner ? 1 : 0)).flatMap(p => p.problems)
  }

  get problemTotal(): number {
    return this.problemCount
  }

  namespaces(): string[] {
    return [...this.nsSet].sort()
  }

  /** Names with an entry. */
  get size(): number {
    return this.entries.size
  }

  /** Names with an entry (existing names and empty non-terminals), sorted. */
  names(): string[] {
    return [...this.entries.keys()].sort()
  }

  /** Every record in the zone (the SOA with serial 0). */
  records(): Rec[] {
    const out: Rec[] = []
    for (const name of new Set([...this.contrib.keys(), ...this.claims.keys()])) {
      const nb = this.node(name)
      if (nb === undefined) continue
      for (const list of nb.rrs.values()) out.push(...list)
      if (nb.cname !== undefined && !nb.reverse) {
        out.push({ name, type: QType.CNAME, ttl: this.params.ttl, data: { kind: 'name', target: nb.cname } })
      }
    }
    return out
  }

  /** The entry for a name, decoded from the bytes the packet side gets. */
  entry(name: string): ZoneEntry | undefined {
    const st = this.entries.get(normalizeName(name))
    return st === undefined ? undefined : decodeEntry(normalizeName(name), st.bytes)
  }

  // ---- ZoneLookup -----------------------------------------------------------------------------------------------

  /** @internal the merged view of a name, as resolution reads it */
  node(name: string): NodeView | undefined {
    const cached = this.views.get(name)
    if (cached !== undefined) return cached
    let v: NodeView | undefined
    const cl = this.claims.get(name)
    const list = this.contrib.get(name)
    // reverse names are read once per recompute (never through a CNAME chain inside the zone): not worth caching
    if (cl !== undefined)
      return resolvePtr(
        name,
        cl.map(c => c.claim),
        this.params.ttl,
      )
    if (list !== undefined) {
      if (list.length === 1) return list[0]!.node
      v = mergeNodes(list.map(c => c.node))
    } else return this.entRefs.has(name) ? EMPTY_NODE : undefined
    this.views.set(name, v)
    return v
  }

  /** @internal */
  hasNamespace(ns: string): boolean {
    return this.nsSet.has(ns)
  }

  // ---- contributions ------------------------------------------------------------------------------------------

  private reset(): void {
    this.parts = new Map()
    this.contrib = new Map()
    this.claims = new Map()
    this.entRefs = new Map()
    this.nsServices = new Map()
    this.nsSet = new Set()
    this.podNs = new Set()
    this.podsRef = undefined
    this.touchedNs = new Set()
    this.views = new Map()
    this.deps = new Map()
    this.depsOf = new Map()
    this.dirty = new Set()
    this.problemCount = 0
    this.entries = new Map()
    this.emitted = false
  }

  private addService(svc: Service): void {
    const owner = serviceOwner(svc.namespace, svc.name)
    const old = this.parts.get(owner)
    if (old !== undefined) this.removePart(old)
    else this.countNamespace(svc.namespace.toLowerCase(), 1)
    this.addPart(servicePart(svc, this.params))
  }

  private removeService(namespace: string, name: string): void {
    const old = this.parts.get(serviceOwner(namespace, name))
    if (old === undefined) return
    this.removePart(old)
    this.countNamespace(namespace.toLowerCase(), -1)
  }

  private countNamespace(ns: string, delta: number): void {
    const n = (this.nsServices.get(ns) ?? 0) + delta
    if (n > 0) this.nsServices.set(ns, n)
    else this.nsServices.delete(ns)
    this.touchedNs.add(ns)
  }

  private syncPods(pods: readonly Pod[]): void {
    if (pods === this.podsRef) return
    this.podsRef = pods
    const next = new Set<string>()
    for (const p of pods) next.add(p.namespace.toLowerCase())
    for (const ns of next) if (!this.podNs.has(ns)) this.touchedNs.add(ns)
    for (const ns of this.podNs) if (!next.has(ns)) this.touchedNs.add(ns)
    this.podNs = next
  }

  /** Namespaces whose existence changed get (or lose) their empty non-terminals, and pod names in them resolve. */
  private syncNamespaces(): void {
    for (const ns of this.touchedNs) {
      const want = this.nsServices.has(ns) || this.podNs.has(ns)
      if (want === this.nsSet.has(ns)) continue
      if (want) {
        this.nsSet.add(ns)
        this.addPart(namespacePart(ns, this.params))
      } else {
        this.nsSet.delete(ns)
        const part = this.parts.get(namespacePart(ns, this.params).owner)
        if (part !== undefined) this.removePart(part)
      }
      this.dirty.add(NS_KEY + ns)
    }
    this.touchedNs.clear()
  }

  private addPart(part: Part): void {
    this.parts.set(part.owner, part)
    this.problemCount += part.problems.length
    for (const [name, node] of part.nodes) {
      let list = this.contrib.get(name)
      if (list === undefined) {
        list = []
        this.contrib.set(name, list)
      }
      let at = list.length
      while (at > 0 && list[at - 1]!.owner > part.owner) at--
      list.splice(at, 0, { owner: part.owner, node })
      if (list.length === 1 && !this.entRefs.has(name)) this.countAncestors(name, 1)
      this.touch(name)
    }
    part.ptrs.forEach((claim, seq) => {
      let list = this.claims.get(claim.name)
      if (list === undefined) {
        list = []
        this.claims.set(claim.name, list)
      }
      let at = list.length
      while (at > 0 && (list[at - 1]!.owner > part.owner || (list[at - 1]!.owner === part.owner && list[at - 1]!.seq > seq))) at--
      list.splice(at, 0, { owner: part.owner, seq, claim })
      this.touch(claim.name)
    })
  }

  private removePart(part: Part): void {
    this.parts.delete(part.owner)
    this.problemCount -= part.problems.length
    for (const name of part.nodes.keys()) {
      const list = this.contrib.get(name)
      if (list === undefined) continue
      const i = list.findIndex(c => c.owner === part.owner)
      if (i >= 0) list.splice(i, 1)
      if (list.length === 0) {
        this.contrib.delete(name)
        if (!this.entRefs.has(name)) this.countAncestors(name, -1)
      }
      this.touch(name)
    }
    for (const claim of part.ptrs) {
      const list = this.claims.get(claim.name)
      if (list === undefined) continue
      const kept = list.filter(c => c.owner !== part.owner)
      if (kept.length === 0) this.claims.delete(claim.name)
      else this.claims.set(claim.name, kept)
      this.touch(claim.name)
    }
  }

  /**
   * Every ancestor of a name in the zone exists (an empty non-terminal when nothing else puts it there). entRefs
   * counts a name's existing children, so a name appearing or disappearing walks up only while its parent's
   * existence changes too: O(1) amortized per name.
   */
  private countAncestors(name: string, delta: number): void {
    if (name === this.params.origin || !inZoneName(this.params, name)) return
    let n = name
    while (n !== this.params.origin) {
      // `n` itself appeared (delta 1) or disappeared (delta -1): its parent gains or loses a child
      n = n.slice(n.indexOf('.') + 1)
      const was = this.entRefs.get(n) ?? 0
      const c = was + delta
      if (c > 0) this.entRefs.set(n, c)
      else this.entRefs.delete(n)
      if (c > 0 && was > 0) return
      this.touch(n)
      // the parent's existence changed only when nothing else holds it there
      if (this.contrib.has(n)) return
    }
  }

  private touch(name: string): void {
    this.dirty.add(name)
    this.views.delete(name)
  }

  // ---- recompiling entries --------------------------------------------------------------------------------------

  /** Recompute every dirty name and its dependents: the entries whose bytes changed (null: the name is gone). */
  private flush(): [string, Uint8Array | null][] {
    const todo = new Set<string>()
    for (const key of this.dirty) {
      if (!key.startsWith(NS_KEY)) todo.add(key)
      const d = this.deps.get(key)
      if (d !== undefined) for (const x of d) todo.add(x)
    }
    this.dirty.clear()
    const changes: [string, Uint8Array | null][] = []
    for (const name of todo) {
      this.unregister(name)
      const nb = this.node(name)
      if (nb === undefined) {
        if (this.entries.has(name)) changes.push([name, null])
        continue
      }
      const deps: string[] = []
      const bytes = encodeEntry(name, compileEntry(this, name, nb, deps))
      if (deps.length > 0) this.register(name, deps)
      const old = this.entries.get(name)
      if (old !== undefined && sameBytes(old.bytes, bytes)) continue
      changes.push([name, bytes])
    }
    return changes
  }

  private register(name: string, keys: readonly string[]): void {
    const uniq = [...new Set(keys)]
    this.depsOf.set(name, uniq)
    for (const k of uniq) {
      let s = this.deps.get(k)
      if (s === undefined) {
        s = new Set()
        this.deps.set(k, s)
      }
      s.add(name)
    }
  }

  private unregister(name: string): void {
    const keys = this.depsOf.get(name)
    if (keys === undefined) return
    for (const k of keys) {
      const s = this.deps.get(k)
      if (s === undefined) continue
      s.delete(name)
      if (s.size === 0) this.deps.delete(k)
    }
    this.depsOf.delete(name)
  }

  // ---- images -------------------------------------------------------------------------------------------------

  private nextSerial(minSerial: number): number {
    const floor = this.minSerial ?? Math.floor(Date.now() / 1000)
    this.serial_ = Math.max(this.serial_ + 1, floor, minSerial) >>> 0
    return this.serial_
  }

  private applyChanges(changes: readonly [string, Uint8Array | null][]): void {
    for (const [name, bytes] of changes) {
      if (bytes === null) this.entries.delete(name)
      else {
        const st = this.entries.get(name)
        if (st !== undefined) st.bytes = bytes
        else this.entries.set(name, { bytes, hash: fnv1a(bytes, 1, 1 + bytes[0]!), slot: -1 })
      }
    }
  }

  private meta(serial: number): { origin: string; ttl: number; podRecords: boolean; serial: number; gen: number; names: number; problems: number } {
    const p = this.params
    return {
      origin: p.origin,
      ttl: p.ttl,
      podRecords: p.podRecords,
      serial,
      gen: ++this.gen,
      names: this.entries.size,
      problems: this.problemCount,
    }
  }

  private emitFull(bumpSerial: boolean, minSerial: number): FullZoneImage {
    const count = this.entries.size
    let size = 16
    while (size < count * 2) size <<= 1
    const slots = new Int32Array(size * SLOT_INTS)
    for (let i = 0; i < size; i++) slots[i * SLOT_INTS + Slot.CHUNK] = EMPTY_CHUNK
    let total = 0
    for (const st of this.entries.values()) total += st.bytes.length
    const arena = new Uint8Array(total)
    const slotName: (string | undefined)[] = new Array<string | undefined>(size)
    const mask = size - 1
    let off = 0
    for (const [name, st] of this.entries) {
      arena.set(st.bytes, off)
      let i = st.hash & mask
      while (slots[i * SLOT_INTS + Slot.CHUNK] !== EMPTY_CHUNK) i = (i + 1) & mask
      slots[i * SLOT_INTS + Slot.HASH] = st.hash
      slots[i * SLOT_INTS + Slot.CHUNK] = 0
      slots[i * SLOT_INTS + Slot.OFF] = off
      st.slot = i
      slotName[i] = name
      off += st.bytes.length
    }
    this.slots = slots.slice()
    this.slotName = slotName
    this.mask = mask
    this.chunks = 1
    this.garbage = 0
    this.liveBytes = total
    this.emitted = true
    const serial = bumpSerial ? this.nextSerial(minSerial) : this.serial_
    return { kind: 'full', ...this.meta(serial), slots, arena }
  }

  private emitDelta(changes: readonly [string, Uint8Array | null][]): ZoneImage {
    let adds = 0
    let total = 0
    for (const [name, bytes] of changes) {
      if (bytes === null) continue
      total += bytes.length
      if (!this.entries.has(name)) adds++
    }
    if (this.chunks >= MAX_CHUNKS || this.entries.size + adds > (this.mask + 1) * MAX_LOAD || this.garbage > Math.max(MIN_GARBAGE_BYTES, this.liveBytes)) {
      this.applyChanges(changes)
      return this.emitFull(true, 0)
    }
    const chunk = new Uint8Array(total)
    const chunkId = this.chunks++
    this.writes = []
    let off = 0
    for (const [name, bytes] of changes) {
      const st = this.entries.get(name)
      if (bytes !== null) {
        chunk.set(bytes, off)
        if (st !== undefined) {
          this.garbage += st.bytes.length
          this.liveBytes += bytes.length - st.bytes.length
          st.bytes = bytes
          this.setSlot(st.slot, st.hash, chunkId, off)
        } else {
          const hash = fnv1a(bytes, 1, 1 + bytes[0]!)
          let i = hash & this.mask
          while (this.slots[i * SLOT_INTS + Slot.CHUNK] !== EMPTY_CHUNK) i = (i + 1) & this.mask
          this.entries.set(name, { bytes, hash, slot: i })
          this.slotName[i] = name
          this.liveBytes += bytes.length
          this.setSlot(i, hash, chunkId, off)
        }
        off += bytes.length
      } else if (st !== undefined) {
        this.garbage += st.bytes.length
        this.liveBytes -= st.bytes.length
        this.entries.delete(name)
        this.deleteSlot(st.slot)
      }
    }
    const writes = Int32Array.from(this.writes)
    this.writes = []
    const base = this.gen
    return { kind: 'delta', ...this.meta(this.nextSerial(0)), base, writes, chunk, chunkId }
  }

  private setSlot(i: number, hash: number, chunk: number, off: number): void {
    const s = i * SLOT_INTS
    this.slots[s + Slot.HASH] = hash
    this.slots[s + Slot.CHUNK] = chunk
    this.slots[s + Slot.OFF] = off
    this.writes.push(i, hash, chunk, off)
  }

  /** Linear-probing deletion by backward shift: no tombstones, so lookups stay as short as at insert. */
  private deleteSlot(slot: number): void {
    const mask = this.mask
    const slots = this.slots
    let i = slot
    this.setSlot(i, 0, EMPTY_CHUNK, 0)
    this.slotName[i] = undefined
    let j = i
    for (;;) {
      j = (j + 1) & mask
      const s = j * SLOT_INTS
      if (slots[s + Slot.CHUNK] === EMPTY_CHUNK) return
      const k = slots[s + Slot.HASH]! & mask
      const stays = i <= j ? i < k && k <= j : i < k || k <= j
      if (stays) continue
      this.setSlot(i, slots[s + Slot.HASH]!, slots[s + Slot.CHUNK]!, slots[s + Slot.OFF]!)
      const name = this.slotName[j]!
      this.slotName[i] = name
      this.entries.get(name)!.slot = i
      this.setSlot(j, 0, EMPTY_CHUNK, 0)
      this.slotName[j] = undefined
      i = j
    }
  }
}

// ---- entry bytes (layout in installed.ts) -------------------------------------------------------------------------

function encodeEntry(name: string, e: EntryAnswers): Uint8Array {
  const key = nameToWire(name)
  const ext = e.external === null ? null : Buffer.from(e.external, 'latin1')
  const all = e.other === null ? e.answers : [...e.answers, e.other]
  let size = 1 + key.length + 2 + (ext === null ? 0 : 1 + ext.length)
  for (const a of all) size += Ans.BODY + a.body.length
  const out = new Uint8Array(size)
  const dv = new DataView(out.buffer)
  out[0] = key.length
  out.set(key, 1)
  let o = 1 + key.length
  out[o++] = all.length
  out[o++] = (e.other !== null ? EntryFlag.OTHER : 0) | (ext !== null ? EntryFlag.EXTERNAL : 0)
  if (ext !== null) {
    out[o++] = ext.length
    out.set(ext, o)
    o += ext.length
  }
  all.forEach((a, i) => {
    dv.setUint16(o + Ans.QTYPE, i < e.answers.length ? e.types[i]! : 0)
    out[o + Ans.RCODE] = a.rcode
    out[o + Ans.RR_SIZE] = a.rrSize
    dv.setUint16(o + Ans.AN, a.an)
    dv.setUint16(o + Ans.NS, a.ns)
    dv.setUint16(o + Ans.AR, a.ar)
    dv.setUint16(o + Ans.ROTATE, a.rotate)
    dv.setUint32(o + Ans.BODY_LEN, a.body.length)
    dv.setUint32(o + Ans.AR_START, a.arStart)
    dv.setUint32(o + Ans.SERIAL_AT, a.serialAt + 1)
    out.set(a.body, o + Ans.BODY)
    o += Ans.BODY + a.body.length
  })
  return out
}

function decodeEntry(name: string, b: Uint8Array): ZoneEntry {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength)
  let o = 1 + b[0]!
  const n = b[o++]!
  const flags = b[o++]!
  let external: string | null = null
  if (flags & EntryFlag.EXTERNAL) {
    const len = b[o++]!
    external = Buffer.from(b.buffer, b.byteOffset + o, len).toString('latin1')
    o += len
  }
  const types: number[] = []
  const answers: CompiledAnswer[] = []
  let other: CompiledAnswer | null = null
  for (let i = 0; i < n; i++) {
    const bodyLen = dv.getUint32(o + Ans.BODY_LEN)
    const a: CompiledAnswer = Object.freeze({
      rcode: b[o + Ans.RCODE]!,
      aa: true,
      an: dv.getUint16(o + Ans.AN),
      ns: dv.getUint16(o + Ans.NS),
      ar: dv.getUint16(o + Ans.AR),
      body: b.subarray(o + Ans.BODY, o + Ans.BODY + bodyLen),
      arStart: dv.getUint32(o + Ans.AR_START),
      rotate: dv.getUint16(o + Ans.ROTATE),
      rrSize: b[o + Ans.RR_SIZE]!,
      serialAt: dv.getUint32(o + Ans.SERIAL_AT) - 1,
    })
    if (i === n - 1 && flags & EntryFlag.OTHER) other = a
    else {
      types.push(dv.getUint16(o + Ans.QTYPE))
      answers.push(a)
    }
    o += Ans.BODY + bodyLen
  }
  return Object.freeze({ name, types: Object.freeze(types), answers: Object.freeze(answers), other, external })
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

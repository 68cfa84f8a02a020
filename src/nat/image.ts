// The NAT table as the packet thread reads it: a handful of typed arrays whose buffers cross threads by transfer.
//
//   natImage(next, prev?) -> NatImage        control side: full, or a delta when `next` = updateNat(prev, ...)
//   natImageTransfer(img) -> ArrayBuffer[]   the postMessage transfer list
//   NatEngine.install(img)                   packet side: a full image is wrapped (O(buffers)), a delta applied in
//                                            O(change)
//
// Layout. `records` holds REC_WORDS words per service-port id (a full image: by id, with spare ids; a delta: one
// per entry of `ids`). Endpoint sets are spans (off, count, maglev off) into `data` (endpoint words as in
// endpoints.ts: address words then port | flags << 16) and `maglev` (tables of head[MAGLEV_SIZE] slots, values index
// the set). sourceRanges / allowed LB sources are spans of `data` too. The packet side keeps each image's
// data + maglev as one "chunk" and a record's CHUNK word names it; a delta's chunk holds only the changed ids' sets.
//
// Frontend (fe) and ClusterIP (vip) maps: a full image carries copies of the U32Map arrays (wrapped as they are);
// a delta carries ops [present, key words..., value] for each key the changed services owned before or own now.
// Stale flows are decided here, from prev and next: `staleIds` (service ports gone or whose slot now holds another
// service port: all their flows go) and `staleEps` (id, 4 address words, port: endpoints that stopped serving).

import type { FamilyTable, NatTable, SvcPort } from './compile'
import type { EndpointSet } from './endpoints'
import { epBase, epPort, removedEndpoints } from './endpoints'
import { U32Map } from './hash'
import { parseIpWords } from '../wire/addr'
import { IPPROTO_UDP } from '../wire/proto'
import { inCidrList, parseCidrList } from './addr'

export const ImageKind = { FULL: 0, DELTA: 1 } as const
export type ImageKindValue = (typeof ImageKind)[keyof typeof ImageKind]

/** Word offsets in a service-port record. Each *_SET is three words: data offset, count, maglev offset. */
export const Rec = {
  UID: 0,
  FLAGS: 1,
  PROTO: 2,
  /** ClientIP affinity timeout in seconds (0: none) */
  AFFINITY: 3,
  /** packet side: the chunk holding this record's spans */
  CHUNK: 4,
  CLUSTER_SET: 5,
  LOCAL_SET: 8,
  INTERNAL_SET: 11,
  EXTERNAL_SET: 14,
  SERVING_SET: 17,
  RANGES: 20,
  RANGES_LEN: 21,
  ALLOWED: 22,
  ALLOWED_LEN: 23,
} as const
export const REC_WORDS = 24
/** Word offsets inside a *_SET triple. */
export const SetW = { OFF: 0, COUNT: 1, MAGLEV: 2 } as const
export const RecFlag = { PRESENT: 1, V6: 2, INTERNAL_LOCAL: 4, EXTERNAL_LOCAL: 8 } as const
/** The scheduler id (sched.ts Sched) sits in Rec.FLAGS bits 8..11. */
export const REC_SCHED_SHIFT = 8
export const REC_SCHED_MASK = 0xf
export const NO_MAGLEV = 0xffffffff

/** Word offsets in `head`. Per family f (0: IPv4, 1: IPv6) the FAM_* words start at FAM + f * FAM_WORDS. */
export const Head = {
  FLAGS: 0,
  ICMP_MODE: 1,
  MAGLEV_SIZE: 2,
  /** svcPorts.length of the table */
  IDS: 3,
  /** records present (a full image's refs to its chunk) */
  PRESENT: 4,
  FAM: 5,
} as const
export const FamW = { NODE: 0, NODE_LEN: 1, SNAT: 2, SNAT_LEN: 3, CIDRS: 4, CIDRS_LEN: 5 } as const
export const FAM_WORDS = 6
export const HEAD_WORDS = Head.FAM + 2 * FAM_WORDS
export const HeadFlag = { MASQUERADE_ALL: 1, MAGLEV: 2 } as const
export const IcmpMode = { REPLY: 0, REJECT: 1, DROP: 2 } as const
/** Words per staleEps record: id, address (4 words, IPv4 padded with zeros), port. */
export const STALE_EP_WORDS = 6
/** Index of each map in `maps` / `ops`. */
export const MapIx = { FE4: 0, VIP4: 1, FE6: 2, VIP6: 3, REV4: 4, REV6: 5 } as const
/** Maps a full image carries (and op lists a delta carries). */
export const MAP_COUNT = 6
/** Reverse index value words: id (or REV_AMBIGUOUS), service port, ClusterIP address words. */
export const RevW = { ID: 0, PORT: 1, VIP: 2 } as const
export const REV_AMBIGUOUS = 0xffffffff

/** A U32Map's arrays, as U32Map.wrap takes them. */
export interface MapImage {
  readonly kw: number
  readonly vw: number
  readonly cap: number
  readonly size: number
  readonly seed: number
  readonly keys: Uint32Array
  readonly vals: Uint32Array
  readonly used: Uint8Array
}

export interface NatImage {
  readonly kind: ImageKindValue
  readonly generation: number
  /** a delta applies to the table of this generation only; -1 for a full image */
  readonly from: number
  readonly head: Uint32Array
  /** delta: the id of each record; full: empty (record i is id i) */
  readonly ids: Uint32Array
  readonly records: Uint32Array
  readonly data: Uint32Array
  readonly maglev: Uint16Array
  /** full: fe4, vip4, fe6, vip6, rev4, rev6 (MapIx); delta: empty */
  readonly maps: readonly MapImage[]
  /**
   * delta: per map (MapIx), records of (1 + kw + vw) words [present, key..., value...] (vw = 1 but for REV*);
   * full: empty
   */
  readonly ops: readonly Uint32Array[]
  readonly staleIds: Uint32Array
  readonly staleEps: Uint32Array
}

/** Every buffer of the image, for postMessage's transfer list (the image is unusable on this side afterwards). */
export function natImageTransfer(img: NatImage): ArrayBuffer[] {
  const seen = new Set<ArrayBuffer>()
  const add = (a: { buffer: ArrayBufferLike }): void => {
    if (a.buffer instanceof ArrayBuffer) seen.add(a.buffer)
  }
  for (const a of [img.head, img.ids, img.records, img.data, img.maglev, img.staleIds, img.staleEps, ...img.ops]) add(a)
  for (const m of img.maps) {
    add(m.keys)
    add(m.vals)
    add(m.used)
  }
  return [...seen]
}

/**
 * The image of `next` for an engine that has `prev` installed: a delta when `next` came from updateNat(prev),
 * costing O(changed service ports); a full image otherwise (with the stale flows of prev -> next when prev is given).
 */
export function natImage(next: NatTable, prev?: NatTable): NatImage {
  if (prev !== undefined && prev !== next && next.delta !== undefined && next.delta.from === prev.generation) {
    return deltaImage(next, prev, next.delta.ids)
  }
  return fullImage(next, prev)
}

// ---------------------------------------------------------------------------------------------------------------
// Packing

/** A growable Uint32Array. */
class Words {
  a: Uint32Array
  n = 0
  constructor(cap: number) {
    this.a = new Uint32Array(Math.max(16, cap))
  }
  reserve(k: number): number {
    if (this.n + k > this.a.length) {
      let c = this.a.length * 2
      while (c < this.n + k) c *= 2
      const b = new Uint32Array(c)
      b.set(this.a.subarray(0, this.n))
      this.a = b
    }
    const at = this.n
    this.n += k
    return at
  }
  push(v: number): void {
    this.a[this.reserve(1)] = v
  }
  done(): Uint32Array {
    return this.n === this.a.length ? this.a : this.a.slice(0, this.n)
  }
}

class Packer {
  readonly data: Words
  private readonly sets = new Map<EndpointSet, number>()
  private readonly tables = new Map<Uint16Array, number>()
  private readonly magList: Uint16Array[] = []
  private magLen = 0
  constructor(
    readonly maglevSize: number,
    readonly maglevOn: boolean,
    dataHint: number,
  ) {
    this.data = new Words(dataHint)
  }

  setOff(set: EndpointSet): number {
    let o = this.sets.get(set)
    if (o !== undefined) return o
    const w = set.count * (set.aw + 1)
    o = this.data.reserve(w)
    this.data.a.set(set.data.subarray(set.off, set.off + w), o)
    this.sets.set(set, o)
    return o
  }

  magOff(set: EndpointSet): number {
    const m = set.maglev
    if (!this.maglevOn || m === null || m.length !== this.maglevSize) return NO_MAGLEV
    let o = this.tables.get(m)
    if (o === undefined) {
      o = this.magLen
      this.tables.set(m, o)
      this.magList.push(m)
      this.magLen += m.length
    }
    return o
  }

  words(w: Uint32Array): number {
    const o = this.data.reserve(w.length)
    this.data.a.set(w, o)
    return o
  }

  maglev(): Uint16Array {
    const out = new Uint16Array(this.magLen)
    let o = 0
    for (const m of this.magList) {
      out.set(m, o)
      o += m.length
    }
    return out
  }

  writeSet(rec: Uint32Array, at: number, set: EndpointSet): void {
    rec[at + SetW.OFF] = set.count === 0 ? 0 : this.setOff(set)
    rec[at + SetW.COUNT] = set.count
    rec[at + SetW.MAGLEV] = set.count === 0 ? NO_MAGLEV : this.magOff(set)
  }

  record(rec: Uint32Array, r: number, sp: SvcPort): void {
    rec[r + Rec.UID] = sp.uid
    rec[r + Rec.FLAGS] =
      RecFlag.PRESENT |
      (sp.family === 6 ? RecFlag.V6 : 0) |
      (sp.internalPolicy === 'Local' ? RecFlag.INTERNAL_LOCAL : 0) |
      (sp.externalPolicy === 'Local' ? RecFlag.EXTERNAL_LOCAL : 0) |
      ((sp.scheduler ?? 0) << REC_SCHED_SHIFT)
    rec[r + Rec.PROTO] = sp.proto
    rec[r + Rec.AFFINITY] = sp.affinityTimeout
    rec[r + Rec.CHUNK] = 0
    this.writeSet(rec, r + Rec.CLUSTER_SET, sp.cluster)
    this.writeSet(rec, r + Rec.LOCAL_SET, sp.local)
    this.writeSet(rec, r + Rec.INTERNAL_SET, sp.internal)
    this.writeSet(rec, r + Rec.EXTERNAL_SET, sp.external)
    this.writeSet(rec, r + Rec.SERVING_SET, sp.serving)
    rec[r + Rec.RANGES] = sp.sourceRanges.length === 0 ? 0 : this.words(sp.sourceRanges)
    rec[r + Rec.RANGES_LEN] = sp.sourceRanges.length
    rec[r + Rec.ALLOWED] = sp.allowedLbSources.length === 0 ? 0 : this.words(sp.allowedLbSources)
    rec[r + Rec.ALLOWED_LEN] = sp.allowedLbSources.length
  }
}

/** Stale flows of one id from a (prev) to b (next). */
class Stale {
  readonly ids = new Words(16)
  readonly eps = new Words(16)
  /** excludeCIDRs per family (IPv4, IPv6): an endpoint leaving from inside them keeps every flow */
  private readonly exclude: readonly [Uint32Array, Uint32Array]
  /**
   * IPVS mode: graceful termination (a TCP/SCTP endpoint leaving keeps its flows, as at weight 0; UDP ones go, as
   * kube-proxy clears UDP conntrack) and excludeCIDRs (flows of endpoints in them are never touched)
   */
  constructor(
    private readonly graceful: boolean,
    exclude: readonly string[],
  ) {
    this.exclude = [parseCidrList(exclude, 4), parseCidrList(exclude, 6)]
  }
  add(id: number, a: SvcPort | undefined, b: SvcPort | undefined): void {
    if (a === undefined || a === b) return
    if (b === undefined || b.uid !== a.uid) {
      this.ids.push(id)
      return
    }
    if (b.serving === a.serving) return
    if (this.graceful && b.proto !== IPPROTO_UDP) return
    const was = a.serving
    const exclude = this.exclude[was.aw === 1 ? 0 : 1]!
    for (const i of removedEndpoints(was, b.serving)) {
      if (exclude.length > 0 && inCidrList(exclude, was.aw, was.data, epBase(was, i))) continue
      const at = this.eps.reserve(STALE_EP_WORDS)
      const base = epBase(was, i)
      this.eps.a[at] = id
      for (let w = 0; w < 4; w++) this.eps.a[at + 1 + w] = w < was.aw ? was.data[base + w]! : 0
      this.eps.a[at + 5] = epPort(was, i)
    }
  }
}

function headOf(t: NatTable, present: number): Uint32Array {
  const h = new Uint32Array(HEAD_WORDS)
  const c = t.config
  // MAGLEV: tables are carried for every set that has one (a service's scheduler, not the node, says mh).
  h[Head.FLAGS] = (c.masqueradeAll ? HeadFlag.MASQUERADE_ALL : 0) | HeadFlag.MAGLEV
  h[Head.ICMP_MODE] = c.icmpMode === 'reject' ? IcmpMode.REJECT : c.icmpMode === 'drop' ? IcmpMode.DROP : IcmpMode.REPLY
  h[Head.MAGLEV_SIZE] = c.maglevTableSize
  h[Head.IDS] = t.svcPorts.length
  h[Head.PRESENT] = present
  return h
}

function mapImage(m: U32Map): MapImage {
  return { kw: m.kw, vw: m.vw, cap: m.cap, size: m.size, seed: m.hashSeed, keys: m.keys.slice(), vals: m.vals.slice(), used: m.used.slice() }
}

function famLists(p: Packer, head: Uint32Array, f: number, ft: FamilyTable): void {
  const b = Head.FAM + f * FAM_WORDS
  head[b + FamW.NODE] = p.words(ft.nodeAddrs)
  head[b + FamW.NODE_LEN] = ft.nodeAddrs.length
  head[b + FamW.SNAT] = p.words(ft.hasSnat ? ft.snat : new Uint32Array(0))
  head[b + FamW.SNAT_LEN] = ft.hasSnat ? ft.snat.length : 0
  head[b + FamW.CIDRS] = p.words(ft.hasClusterCidrs ? ft.clusterCidrs : new Uint32Array(0))
  head[b + FamW.CIDRS_LEN] = ft.hasClusterCidrs ? ft.clusterCidrs.length : 0
}

const EMPTY = (): Uint32Array => new Uint32Array(0)

function fullImage(next: NatTable, prev: NatTable | undefined): NatImage {
  const c = next.config
  const n = next.svcPorts.length
  // Spare ids: a delta that adds service ports writes into them instead of growing the array on the packet side.
  const cap = n + (n >> 3) + 16
  const records = new Uint32Array(cap * REC_WORDS)
  const p = new Packer(c.maglevTableSize, true, n * 8 + 64)
  let present = 0
  for (let id = 0; id < n; id++) {
    const sp = next.svcPorts[id]
    if (sp === undefined) continue
    p.record(records, id * REC_WORDS, sp)
    present++
  }
  const head = headOf(next, present)
  famLists(p, head, 0, next.v4)
  famLists(p, head, 1, next.v6)
  const stale = new Stale(next.config.gracefulTermination, next.config.excludeCIDRs)
  if (prev !== undefined && prev !== next) {
    for (let id = 0; id < prev.svcPorts.length; id++) stale.add(id, prev.svcPorts[id], next.svcPorts[id])
  }
  return {
    kind: ImageKind.FULL,
    generation: next.generation,
    from: -1,
    head,
    ids: EMPTY(),
    records,
    data: p.data.done(),
    maglev: p.maglev(),
    maps: [mapImage(next.v4.fe), mapImage(next.v4.vip), mapImage(next.v6.fe), mapImage(next.v6.vip), ...revIndexOf(next).images()],
    ops: [],
    staleIds: stale.ids.done(),
    staleEps: stale.eps.done(),
  }
}

function deltaImage(next: NatTable, prev: NatTable, changed: readonly number[]): NatImage {
  const c = next.config
  const p = new Packer(c.maglevTableSize, true, changed.length * 8 + 16)
  const ids = Uint32Array.from(changed)
  const records = new Uint32Array(ids.length * REC_WORDS)
  const stale = new Stale(next.config.gracefulTermination, next.config.excludeCIDRs)
  const services = new Set<string>()
  for (let j = 0; j < ids.length; j++) {
    const id = ids[j]!
    const a = prev.svcPorts[id]
    const b = next.svcPorts[id]
    if (b !== undefined) p.record(records, j * REC_WORDS, b)
    stale.add(id, a, b)
    if (a !== undefined) services.add(`${a.namespace}/${a.name}`)
    if (b !== undefined) services.add(`${b.namespace}/${b.name}`)
  }
  // Map entries: every key a changed service owned before or owns now, as `next` has it.
  const ops = [new Words(16), new Words(16), new Words(16), new Words(16)]
  const seen = [new Set<string>(), new Set<string>(), new Set<string>(), new Set<string>()]
  const maps = [next.v4.fe, next.v4.vip, next.v6.fe, next.v6.vip]
  for (const key of services) {
    for (const cs of [prev.services.get(key), next.services.get(key)]) {
      if (cs === undefined) continue
      const owned = [cs.fe4, cs.vip4, cs.fe6, cs.vip6]
      for (let mi = 0; mi < 4; mi++) {
        const m = maps[mi]!
        const list = owned[mi]!
        const kw = m.kw
        for (let r = 0; r + kw <= list.length; r += kw) {
          const k = list.slice(r, r + kw).join(',')
          if (seen[mi]!.has(k)) continue
          seen[mi]!.add(k)
          for (let i = 0; i < kw; i++) m.key[i] = list[r + i]!
          const s = m.find()
          const o = ops[mi]!
          const at = o.reserve(kw + 2)
          o.a[at] = s >= 0 ? 1 : 0
          for (let i = 0; i < kw; i++) o.a[at + 1 + i] = list[r + i]!
          o.a[at + 1 + kw] = s >= 0 ? m.vals[s * m.vw]! : 0
        }
      }
    }
  }
  const rev = revIndexAfter(prev, next, changed)
  return {
    kind: ImageKind.DELTA,
    generation: next.generation,
    from: prev.generation,
    head: headOf(next, 0),
    ids,
    records,
    data: p.data.done(),
    maglev: p.maglev(),
    maps: [],
    ops: [...ops.map(o => o.done()), ...rev.ops()],
    staleIds: stale.ids.done(),
    staleEps: stale.eps.done(),
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Reverse index: serving endpoint -> the one service port it serves

/** The reverse index of one table (control side): owners per endpoint key and the two maps an image copies. */
class RevIndex {
  /** "family,key words" -> ids of the service ports whose serving set holds that endpoint */
  private readonly owners = new Map<string, Set<number>>()
  readonly maps: readonly [U32Map, U32Map] = [new U32Map(2, 3, 16), new U32Map(5, 6, 16)]
  /** keys changed since the last ops() */
  private touched = new Set<string>()
  private readonly vip = new Uint32Array(4)

  /** Adds (or removes) every serving endpoint of sp. */
  service(sp: SvcPort, add: boolean): void {
    if (parseIpWords(sp.clusterIP, sp.family, this.vip, 0) === undefined) return // headless: no ClusterIP to answer from
    const set = sp.serving
    const aw = set.aw
    for (let i = 0; i < set.count; i++) {
      const b = epBase(set, i)
      let k = `${sp.family}`
      for (let w = 0; w < aw; w++) k += `,${set.data[b + w]}`
      k += `,${((sp.proto << 16) | epPort(set, i)) >>> 0}`
      let o = this.owners.get(k)
      if (add) {
        if (o === undefined) this.owners.set(k, (o = new Set()))
        o.add(sp.id)
      } else if (o !== undefined) {
        o.delete(sp.id)
        if (o.size === 0) this.owners.delete(k)
      }
      this.touched.add(k)
    }
  }

  /** Writes the touched keys into the maps (as `table` has them); returns them with their presence. */
  sync(table: NatTable): string[] {
    const keys = [...this.touched]
    this.touched = new Set()
    for (const k of keys) {
      const parts = k.split(',').map(Number)
      const m = this.maps[parts[0] === 4 ? 0 : 1]
      for (let i = 0; i < m.kw; i++) m.key[i] = parts[1 + i]!
      const o = this.owners.get(k)
      if (o === undefined) {
        m.delete()
        continue
      }
      const s = m.insert()
      if (o.size !== 1) {
        for (let i = 0; i < m.vw; i++) m.setValAt(s, i, i === RevW.ID ? REV_AMBIGUOUS : 0)
        continue
      }
      const sp = table.svcPorts[o.values().next().value!]!
      m.setValAt(s, RevW.ID, sp.id)
      m.setValAt(s, RevW.PORT, sp.port)
      parseIpWords(sp.clusterIP, sp.family, this.vip, 0)
      for (let i = 0; i < m.vw - RevW.VIP; i++) m.setValAt(s, RevW.VIP + i, this.vip[i]!)
    }
    return keys
  }

  images(): MapImage[] {
    return this.maps.map(mapImage)
  }

  /** Delta ops for `keys` (see NatImage.ops), one list per family. */
  opsOf(keys: readonly string[]): Uint32Array[] {
    const out = [new Words(16), new Words(16)]
    for (const k of keys) {
      const parts = k.split(',').map(Number)
      const f = parts[0] === 4 ? 0 : 1
      const m = this.maps[f]
      const o = out[f]!
      for (let i = 0; i < m.kw; i++) m.key[i] = parts[1 + i]!
      const s = m.find()
      const at = o.reserve(1 + m.kw + m.vw)
      o.a[at] = s >= 0 ? 1 : 0
      for (let i = 0; i < m.kw; i++) o.a[at + 1 + i] = m.key[i]!
      if (s >= 0) for (let i = 0; i < m.vw; i++) o.a[at + 1 + m.kw + i] = m.vals[s * m.vw + i]!
    }
    return out.map(o => o.done())
  }
}

/** Reverse index per table; a delta moves its predecessor's index to the new table. */
const revIndexes = new WeakMap<NatTable, RevIndex>()

function revIndexOf(table: NatTable): RevIndex {
  let r = revIndexes.get(table)
  if (r === undefined) {
    r = new RevIndex()
    for (const sp of table.svcPorts) if (sp !== undefined) r.service(sp, true)
    r.sync(table)
    revIndexes.set(table, r)
  }
  return r
}

/** next's index from prev's in O(changed service ports); its delta ops. */
function revIndexAfter(prev: NatTable, next: NatTable, changed: readonly number[]): { ops(): Uint32Array[] } {
  const r = revIndexOf(prev)
  revIndexes.delete(prev)
  for (const id of changed) {
    const a = prev.svcPorts[id]
    const b = next.svcPorts[id]
    if (a === b) continue
    if (a !== undefined) r.service(a, false)
    if (b !== undefined) r.service(b, true)
  }
  const keys = r.sync(next)
  revIndexes.set(next, r)
  return { ops: () => r.opsOf(keys) }
}

// Packet-side state of the NAT engine: per family (conntrack, affinity pins, fragment mappings, the installed maps
// and address lists) and the installed image's service-port records and endpoint chunks.
//
// Chunks: every installed image brings one chunk (its data and maglev arrays); a record names the chunk its spans
// point into. A chunk is dropped once no record names it, so a delta costs O(change) and garbage never piles up
// beyond the chunks still partly in use.

import type { Family } from '../model/cluster'
import { Conntrack } from './conntrack'
import type { ConntrackTimeouts, SharedConntrack } from './conntrack'
import { U32Map } from './hash'
import { AffinityTable } from './select'
import type { NatImage } from './image'
import { FAM_WORDS, FamW, HEAD_WORDS, Head, HeadFlag, ImageKind, MAP_COUNT, MapIx, NO_MAGLEV, REC_WORDS, Rec, RecFlag, SetW } from './image'

const NONE32 = new Uint32Array(0)
const NONE16 = new Uint16Array(0)

/** Per-family state: conntrack, affinity pins, fragment mappings, the installed lookups, scratch. */
export class Fam {
  readonly aw: number
  readonly kw: number
  readonly ct: Conntrack
  readonly aff: AffinityTable
  /** (src words, dst words, fragment id, proto) -> (ref, expires) */
  readonly frag: U32Map
  /** scratch: one IPv6 address as bytes, for the wire/ rewrite helpers */
  readonly a16 = new Uint8Array(16)
  /** (addr words, proto << 16 | port) -> svcPortId * 4 + kind */
  fe: U32Map
  /** ClusterIPs (addr words) -> svcPortId of their first port */
  vip: U32Map
  /** serving endpoint (addr words, proto << 16 | port) -> [svcPortId or REV_AMBIGUOUS, port, ClusterIP words] */
  rev: U32Map
  nodeAddrs: Uint32Array = NONE32
  snat: Uint32Array = NONE32
  hasSnat = false
  clusterCidrs: Uint32Array = NONE32
  hasClusterCidrs = false

  constructor(
    readonly family: Family,
    max: number,
    timeouts: Partial<ConntrackTimeouts>,
    seed: number | undefined,
    shared?: { readonly table: SharedConntrack; readonly owner: number; readonly affinity?: SharedArrayBuffer },
  ) {
    this.aw = family === 4 ? 1 : 4
    this.kw = 2 * this.aw + 1
    this.ct = shared
      ? new Conntrack({ family, timeouts, shared: shared.table, lockOwner: shared.owner })
      : new Conntrack(seed === undefined ? { family, max, timeouts } : { family, max, timeouts, seed })
    this.aff = new AffinityTable(this.aw, 1024, shared?.affinity)
    this.frag = new U32Map(2 * this.aw + 2, 2, 256)
    this.fe = new U32Map(this.aw + 1, 1, 1)
    this.vip = new U32Map(this.aw, 1, 1)
    this.rev = new U32Map(this.aw + 1, this.aw + 2, 1)
  }
}

/** An install that cannot apply: nothing was changed. */
class NatImageError extends Error {
  readonly code = 'ERR_NAT_IMAGE' as const
}

/**
 * A read-only view of one endpoint set of the installed image (satisfies EndpointSet for findEndpoint and the
 * affinity table). The engine keeps one and re-points it per new connection: no allocation per packet.
 */
export class SetView {
  count = 0
  family: Family = 4
  aw = 1
  data: Uint32Array = NONE32
  off = 0
  /** the chunk's maglev array, or null; the set's table starts at magOff */
  maglev: Uint16Array | null = null
  magOff = 0
}

/** The installed image: service-port records by id and the chunks their spans point into. */
export class Tables {
  generation = -1
  /** REC_WORDS per id */
  rec: Uint32Array = NONE32
  /** svcPorts.length of the installed table */
  ids = 0
  data: Uint32Array[] = []
  mag: Uint16Array[] = []
  private refs: number[] = []
  private free: number[] = []
  masqueradeAll = false
  maglevOn = false
  maglevSize = 0
  icmpMode = 0

  constructor(
    readonly v4: Fam,
    readonly v6: Fam,
  ) {}

  /** Whether id holds a service port. */
  present(id: number): boolean {
    return id >= 0 && id < this.ids && (this.rec[id * REC_WORDS + Rec.FLAGS]! & RecFlag.PRESENT) !== 0
  }

  /** Points `v` at the set of record id whose triple starts at word `which` (Rec.*_SET). */
  view(v: SetView, id: number, which: number): SetView {
    const r = id * REC_WORDS
    const rec = this.rec
    const ci = rec[r + Rec.CHUNK]!
    const six = (rec[r + Rec.FLAGS]! & RecFlag.V6) !== 0
    v.family = six ? 6 : 4
    v.aw = six ? 4 : 1
    v.count = rec[r + which + SetW.COUNT]!
    v.off = rec[r + which + SetW.OFF]!
    v.data = this.data[ci]!
    const m = rec[r + which + SetW.MAGLEV]!
    v.maglev = m === NO_MAGLEV || !this.maglevOn ? null : this.mag[ci]!
    v.magOff = m === NO_MAGLEV ? 0 : m
    return v
  }

  /** Checks that img applies here (structure, generation); throws NatImageError, changing nothing, when not. */
  check(img: NatImage): void {
    const bad = (why: string): never => {
      throw new NatImageError(`NAT image of generation ${img.generation} not installed: ${why}`)
    }
    if (img.head.length !== HEAD_WORDS) bad(`head has ${img.head.length} words, want ${HEAD_WORDS}`)
    if (img.records.length % REC_WORDS !== 0) bad('records are not whole')
    if (img.staleEps.length % 6 !== 0) bad('stale endpoints are not whole')
    if (img.kind === ImageKind.FULL) {
      if (img.maps.length !== MAP_COUNT) bad(`${img.maps.length} maps, want ${MAP_COUNT}`)
      if (img.records.length < img.head[Head.IDS]! * REC_WORDS) bad('fewer records than ids')
      return
    }
    if (img.kind !== ImageKind.DELTA) bad(`unknown kind ${String(img.kind)}`)
    if (img.from !== this.generation) bad(`a delta from generation ${img.from}, but generation ${this.generation} is installed`)
    if (img.records.length !== img.ids.length * REC_WORDS) bad('records do not match ids')
    if (img.ops.length !== MAP_COUNT) bad(`${img.ops.length} map op lists, want ${MAP_COUNT}`)
    const ids = img.head[Head.IDS]!
    for (let j = 0; j < img.ids.length; j++) {
      if (img.ids[j]! >= ids) bad(`id ${img.ids[j]} beyond the table's ${ids}`)
      const r = j * REC_WORDS
      if ((img.records[r + Rec.FLAGS]! & RecFlag.PRESENT) === 0) continue
      const aw = (img.records[r + Rec.FLAGS]! & RecFlag.V6) !== 0 ? 4 : 1
      for (const s of [Rec.CLUSTER_SET, Rec.LOCAL_SET, Rec.INTERNAL_SET, Rec.EXTERNAL_SET, Rec.SERVING_SET]) {
        const n = img.records[r + s + SetW.COUNT]!
        if (n > 0 && img.records[r + s + SetW.OFF]! + n * (aw + 1) > img.data.length) bad(`id ${img.ids[j]}: endpoint span out of range`)
        const m = img.records[r + s + SetW.MAGLEV]!
        if (n > 0 && m !== NO_MAGLEV && m + this.maglevSize > img.maglev.length) bad(`id ${img.ids[j]}: maglev span out of range`)
      }
    }
  }

  /** Applies a checked image. Delta: O(changed ids + map ops); full: O(1) (views over its arrays). */
  apply(img: NatImage): void {
    const h = img.head
    if (img.kind === ImageKind.FULL) {
      this.rec = img.records
      this.data = [img.data]
      this.mag = [img.maglev]
      this.refs = [h[Head.PRESENT]!]
      this.free = []
      this.masqueradeAll = (h[Head.FLAGS]! & HeadFlag.MASQUERADE_ALL) !== 0
      this.maglevOn = (h[Head.FLAGS]! & HeadFlag.MAGLEV) !== 0
      this.maglevSize = h[Head.MAGLEV_SIZE]!
      this.icmpMode = h[Head.ICMP_MODE]!
      for (let f = 0; f < 2; f++) {
        const fam = f === 0 ? this.v4 : this.v6
        const fe = img.maps[f === 0 ? MapIx.FE4 : MapIx.FE6]!
        const vip = img.maps[f === 0 ? MapIx.VIP4 : MapIx.VIP6]!
        fam.fe = U32Map.wrap(fe.kw, fe.vw, fe.cap, fe.size, fe.keys, fe.vals, fe.used, fe.seed)
        fam.vip = U32Map.wrap(vip.kw, vip.vw, vip.cap, vip.size, vip.keys, vip.vals, vip.used, vip.seed)
        const rev = img.maps[f === 0 ? MapIx.REV4 : MapIx.REV6]!
        fam.rev = U32Map.wrap(rev.kw, rev.vw, rev.cap, rev.size, rev.keys, rev.vals, rev.used, rev.seed)
        const b = Head.FAM + f * FAM_WORDS
        const span = (o: number, n: number): Uint32Array => img.data.subarray(h[b + o]!, h[b + o]! + h[b + n]!)
        fam.nodeAddrs = span(FamW.NODE, FamW.NODE_LEN)
        fam.snat = span(FamW.SNAT, FamW.SNAT_LEN)
        fam.hasSnat = fam.snat.length > 0
        fam.clusterCidrs = span(FamW.CIDRS, FamW.CIDRS_LEN)
        fam.hasClusterCidrs = fam.clusterCidrs.length > 0
      }
    } else {
      const ci = this.chunk(img.data, img.maglev)
      for (let j = 0; j < img.ids.length; j++) {
        const id = img.ids[j]!
        this.reserve(id + 1)
        const r = id * REC_WORDS
        if ((this.rec[r + Rec.FLAGS]! & RecFlag.PRESENT) !== 0) this.unref(this.rec[r + Rec.CHUNK]!)
        const src = j * REC_WORDS
        for (let w = 0; w < REC_WORDS; w++) this.rec[r + w] = img.records[src + w]!
        if ((img.records[src + Rec.FLAGS]! & RecFlag.PRESENT) !== 0) {
          this.rec[r + Rec.CHUNK] = ci
          this.refs[ci]!++
        }
      }
      if (this.refs[ci] === 0) this.unrefFree(ci)
      for (let mi = 0; mi < 4; mi++) {
        const fam = mi < 2 ? this.v4 : this.v6
        const m = mi % 2 === 0 ? fam.fe : fam.vip
        const ops = img.ops[mi]!
        const kw = m.kw
        for (let o = 0; o + kw + 2 <= ops.length; o += kw + 2) {
          for (let i = 0; i < kw; i++) m.key[i] = ops[o + 1 + i]!
          if (ops[o] === 0) m.delete()
          else m.set(ops[o + 1 + kw]!)
        }
      }
      for (let f = 0; f < 2; f++) {
        const m = f === 0 ? this.v4.rev : this.v6.rev
        const ops = img.ops[f === 0 ? MapIx.REV4 : MapIx.REV6]!
        const kw = m.kw
        const vw = m.vw
        for (let o = 0; o + 1 + kw + vw <= ops.length; o += 1 + kw + vw) {
          for (let i = 0; i < kw; i++) m.key[i] = ops[o + 1 + i]!
          if (ops[o] === 0) {
            m.delete()
            continue
          }
          const s = m.insert()
          for (let i = 0; i < vw; i++) m.vals[s * vw + i] = ops[o + 1 + kw + i]!
        }
      }
    }
    this.ids = h[Head.IDS]!
    this.generation = img.generation
  }

  private chunk(data: Uint32Array, mag: Uint16Array): number {
    const ci = this.free.pop() ?? this.data.length
    this.data[ci] = data
    this.mag[ci] = mag.length > 0 ? mag : NONE16
    this.refs[ci] = 0
    return ci
  }

  private unref(ci: number): void {
    if (--this.refs[ci]! === 0) this.unrefFree(ci)
  }

  private unrefFree(ci: number): void {
    this.data[ci] = NONE32
    this.mag[ci] = NONE16
    this.free.push(ci)
  }

  /** Room for `n` ids (doubling: amortised O(1) per id a delta adds beyond the full image's spare ids). */
  private reserve(n: number): void {
    if (n * REC_WORDS <= this.rec.length) return
    const next = new Uint32Array(Math.max(n, (this.rec.length / REC_WORDS) * 2) * REC_WORDS)
    next.set(this.rec)
    this.rec = next
  }

  /** Chunks in use (for tests and stats). */
  get chunks(): number {
    return this.data.length - this.free.length
  }
}

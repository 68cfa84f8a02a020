// Conntrack as the control thread sees it: bounded chunks of compact binary entries from the packet thread,
// decoded (service names resolved) on the control side; flushes by a filter resolved to numbers first; snapshots
// assembled from chunks and restored with every field checked.
//
//   packet side (each call visits O(max) slots)          control side
//   encodeCtChunk(v4, v6, cursor, max, now)  ──bytes──▶  decodeCtChunk(bytes, table) -> ConntrackEntry[]
//   flushCtChunk(v4, v6, filter, cursor, max)  ◀──────   resolveCtFilter(filter, table) -> CtFilter
//   restoreCtChunk(...)                        ◀──────   assembleSnapshot(chunks, table) / prepareRestore(file, table)
//
// Chunk layout, little-endian: magic "TNCC" u32, version u32, count u32, now u32, then `count` entries:
//   family u8, proto u8, state u8, flags u8, expires u32, svcPort i32, endpoint i32, seqNext 2 x u32,
//   counters 4 x f64 (packets, bytes: original, reply), tuples (tw u32: original then reply)
// = 80 bytes per IPv4 entry, 128 per IPv6 entry.
//
// Snapshot file (version 2): "TNSN", u32 header length, JSON header { version: 2, keys: svcPort key by id }, then
// entries as above. Version 1 files (one conntrack snapshot per family) are read too.

import type { Family } from '../model/cluster'
import type { NatTable } from './compile'
import type { Fam } from './state'
import { CtFlag, ORIG, REPLY, TCP_STATE_NAMES, hasPorts } from './conntrack'
import { IPPROTO_TCP } from '../wire/proto'
import { wordsToString } from './addr'
import { parseIpWords } from '../wire/addr'

/** Entries per chunk the control thread asks for (ARCHITECTURE.md: bounded work per request). */
export const CT_CHUNK = 4096
/** A chunk call looks at most this many slots per entry it may return, so a sparse table costs a bounded scan. */
const SCAN_PER_ENTRY = 8
const CHUNK_MAGIC = 0x43434e54 // "TNCC"
const CHUNK_VERSION = 1
const CHUNK_HEAD = 16
/** Fixed part of an entry; the tuples follow. */
const ENTRY_FIXED = 56
const E = { FAMILY: 0, PROTO: 1, STATE: 2, FLAGS: 3, EXPIRES: 4, SVC: 8, ENDPOINT: 12, SEQ: 16, COUNTERS: 24, TUPLES: 56 } as const
const FLAG_BITS = CtFlag.USED | CtFlag.REPLIED | CtFlag.ASSURED | CtFlag.DNAT | CtFlag.SNAT

function ctEntryBytes(family: Family): number {
  return ENTRY_FIXED + (family === 4 ? 6 : 18) * 4
}

const PROTO_NAMES: Readonly<Record<number, string>> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp' }

/** Decoded conntrack entry, for `tundra conntrack list` and tests. */
export interface ConntrackEntry {
  readonly family: Family
  readonly protocol: string
  /** TCP state name, or '' */
  readonly state: string
  readonly orig: TupleText
  readonly reply: TupleText
  readonly expiresIn: number
  readonly flags: readonly string[]
  /** kube-proxy ServicePortName of the entry's service port, or '' */
  readonly service: string
  readonly svcPortId: number
  readonly packets: readonly [number, number]
  readonly bytes: readonly [number, number]
}

export interface TupleText {
  readonly src: string
  readonly dst: string
  readonly sport: number
  readonly dport: number
}

/** Selects conntrack entries to flush; every given field must match. */
export interface ConntrackFilter {
  readonly family?: Family
  /** 'tcp' | 'udp' | 'sctp' or an IP protocol number */
  readonly protocol?: string | number
  /** "ns/name": every port of the service */
  readonly service?: string
  /** any address of either tuple */
  readonly address?: string
  /** any port of either tuple */
  readonly port?: number
}

/** A ConntrackFilter in numbers (structured-clone safe): what the packet side matches. */
export interface CtFilter {
  /** matches nothing (e.g. an unknown service or protocol name) */
  readonly none: boolean
  /** 0: any */
  readonly family: 0 | Family
  /** -1: any */
  readonly proto: number
  /** service-port ids, or null for any */
  readonly ids: readonly number[] | null
  /** 4 words (IPv4 in word 0) and the family it parses as (0: no address filter) */
  readonly address: Uint32Array
  readonly addressFamily: 0 | Family
  /** -1: any */
  readonly port: number
}

/** Resolves names (protocol, service, address) against `table` on the control side. */
export function resolveCtFilter(f: ConntrackFilter, table: NatTable | undefined): CtFilter {
  let none = false
  let proto = -1
  if (typeof f.protocol === 'string') {
    const k = Object.keys(PROTO_NAMES).find(p => PROTO_NAMES[Number(p)] === f.protocol!.toString().toLowerCase())
    if (k === undefined) none = true
    else proto = Number(k)
  } else if (typeof f.protocol === 'number') {
    proto = f.protocol
  }
  let ids: number[] | null = null
  if (f.service !== undefined) {
    ids = [...(table?.services.get(f.service)?.svcPortIds ?? [])]
    if (ids.length === 0) none = true
  }
  const address = new Uint32Array(4)
  let addressFamily: 0 | Family = 0
  if (f.address !== undefined) {
    if (parseIpWords(f.address, 4, address, 0) !== undefined) addressFamily = 4
    else if (parseIpWords(f.address, 6, address, 0) !== undefined) addressFamily = 6
    else none = true
  }
  return { none, family: f.family ?? 0, proto, ids, address, addressFamily, port: f.port ?? -1 }
}

function matches(fam: Fam, e: number, f: CtFilter): boolean {
  const ct = fam.ct
  if (f.proto >= 0 && ct.proto[e] !== f.proto) return false
  if (f.ids !== null && !f.ids.includes(ct.svcPort[e]!)) return false
  const aw = fam.aw
  const base = e * ct.tw
  if (f.addressFamily !== 0) {
    let hit = false
    for (const at of [0, aw, ct.kw, ct.kw + aw]) {
      let same = true
      for (let i = 0; i < aw; i++)
        if (ct.tuples[base + at + i] !== f.address[i]) {
          same = false
          break
        }
      if (same) {
        hit = true
        break
      }
    }
    if (!hit) return false
  }
  if (f.port >= 0) {
    const p = f.port
    const a = ct.tuples[base + 2 * aw]!
    const b = ct.tuples[base + ct.kw + 2 * aw]!
    if (a >>> 16 !== p && (a & 0xffff) !== p && b >>> 16 !== p && (b & 0xffff) !== p) return false
  }
  return true
}

/** Where slot `c` of the cursor space (IPv4 entries, then IPv6) lives. */
function famAt(v4: Fam, v6: Fam, c: number): Fam | null {
  return c < v4.ct.capacity ? v4 : c < v4.ct.capacity + v6.ct.capacity ? v6 : null
}

/**
 * Deletes entries `f` selects among the next O(max) slots from `cursor` (conntrack -D in slices). next = -1: done.
 */
export function flushCtChunk(v4: Fam, v6: Fam, f: CtFilter, cursor: number, max: number): { flushed: number; next: number } {
  let flushed = 0
  let c = Math.max(0, Math.floor(cursor))
  const end = v4.ct.capacity + v6.ct.capacity
  if (f.none) return { flushed, next: -1 }
  for (let n = 0; n < max * SCAN_PER_ENTRY && c < end; n++, c++) {
    const fam = famAt(v4, v6, c)!
    if (f.family !== 0 && fam.family !== f.family) continue
    if (f.addressFamily !== 0 && f.addressFamily !== fam.family) continue
    const e = c < v4.ct.capacity ? c : c - v4.ct.capacity
    if (!fam.ct.isUsed(e) || !matches(fam, e, f)) continue
    fam.ct.delete(e)
    if (++flushed >= max) {
      c++
      break
    }
  }
  return { flushed, next: c >= end ? -1 : c }
}

/** Writes entry e of fam at dv[o]; returns the next offset. */
function writeEntry(dv: DataView, o: number, fam: Fam, e: number): number {
  const ct = fam.ct
  dv.setUint8(o + E.FAMILY, fam.family)
  dv.setUint8(o + E.PROTO, ct.proto[e]!)
  dv.setUint8(o + E.STATE, ct.state[e]!)
  // COUNTED is the engine's own bookkeeping (a least-connections count), not part of the connection
  dv.setUint8(o + E.FLAGS, ct.flags[e]! & ~CtFlag.COUNTED)
  dv.setUint32(o + E.EXPIRES, ct.expires[e]!, true)
  dv.setInt32(o + E.SVC, ct.svcPort[e]!, true)
  dv.setInt32(o + E.ENDPOINT, ct.endpoint[e]!, true)
  dv.setUint32(o + E.SEQ, ct.seqNext[e * 2]!, true)
  dv.setUint32(o + E.SEQ + 4, ct.seqNext[e * 2 + 1]!, true)
  for (let i = 0; i < 4; i++) dv.setFloat64(o + E.COUNTERS + i * 8, ct.counters[e * 4 + i]!, true)
  const b = e * ct.tw
  for (let i = 0; i < ct.tw; i++) dv.setUint32(o + E.TUPLES + i * 4, ct.tuples[b + i]!, true)
  return o + ENTRY_FIXED + ct.tw * 4
}

/** Bytes a chunk of up to `max` entries may need. */
export function ctChunkBytes(max: number): number {
  return CHUNK_HEAD + Math.max(0, max) * ctEntryBytes(6)
}

/**
 * Up to `max` live entries from `cursor` (visiting at most max * 8 slots), encoded; next = -1 when done. With
 * `into` (at least ctChunkBytes(max), e.g. the buffer the control thread sent back after decoding the previous
 * chunk) nothing is allocated and `bytes` is `into`; otherwise a buffer of the exact size.
 */
export function encodeCtChunk(v4: Fam, v6: Fam, cursor: number, max: number, now: number, into?: ArrayBuffer): { bytes: ArrayBuffer; next: number } {
  const end = v4.ct.capacity + v6.ct.capacity
  let c = Math.max(0, Math.floor(cursor))
  const reuse = into !== undefined && into.byteLength >= ctChunkBytes(max)
  // Sized for the family the scan can reach (IPv4 entries are 80 bytes, IPv6 ones 128).
  const only4 = c + max * SCAN_PER_ENTRY <= v4.ct.capacity
  const buf = reuse ? into : new ArrayBuffer(CHUNK_HEAD + Math.max(0, max) * ctEntryBytes(only4 ? 4 : 6))
  const dv = new DataView(buf)
  let o = CHUNK_HEAD
  let count = 0
  for (let n = 0; n < max * SCAN_PER_ENTRY && c < end && count < max; n++, c++) {
    const fam = famAt(v4, v6, c)!
    const e = c < v4.ct.capacity ? c : c - v4.ct.capacity
    if (!fam.ct.isUsed(e)) continue
    o = writeEntry(dv, o, fam, e)
    count++
  }
  dv.setUint32(0, CHUNK_MAGIC, true)
  dv.setUint32(4, CHUNK_VERSION, true)
  dv.setUint32(8, count, true)
  dv.setUint32(12, now >>> 0, true)
  return { bytes: reuse ? buf : buf.slice(0, o), next: c >= end ? -1 : c }
}

/** One entry read back, every field checked. */
interface RawEntry {
  family: Family
  proto: number
  state: number
  flags: number
  expires: number
  svcPort: number
  endpoint: number
  seq0: number
  seq1: number
  counters: [number, number, number, number]
  /** tw words */
  tuples: Uint32Array
}

/** The problem with an entry's fields, or '' when it is sound. */
function entryProblem(r: RawEntry): string {
  if (!hasPorts(r.proto)) return `protocol ${r.proto} is not tracked`
  if (r.proto === IPPROTO_TCP ? r.state >= TCP_STATE_NAMES.length : r.state !== 0) return `state ${r.state} is out of range for protocol ${r.proto}`
  if ((r.flags & ~FLAG_BITS) !== 0 || (r.flags & CtFlag.USED) === 0) return `flags 0x${r.flags.toString(16)} are not valid`
  if (r.svcPort < -1) return `service-port id ${r.svcPort} is not valid`
  if (r.endpoint < -1) return `endpoint index ${r.endpoint} is not valid`
  for (const c of r.counters) if (!Number.isFinite(c) || c < 0) return `counter ${c} is not a count`
  return ''
}

function readEntry(dv: DataView, o: number, r: RawEntry): number {
  const family = dv.getUint8(o + E.FAMILY)
  if (family !== 4 && family !== 6) return -1
  r.family = family
  r.proto = dv.getUint8(o + E.PROTO)
  r.state = dv.getUint8(o + E.STATE)
  r.flags = dv.getUint8(o + E.FLAGS)
  r.expires = dv.getUint32(o + E.EXPIRES, true)
  r.svcPort = dv.getInt32(o + E.SVC, true)
  r.endpoint = dv.getInt32(o + E.ENDPOINT, true)
  r.seq0 = dv.getUint32(o + E.SEQ, true)
  r.seq1 = dv.getUint32(o + E.SEQ + 4, true)
  for (let i = 0; i < 4; i++) r.counters[i] = dv.getFloat64(o + E.COUNTERS + i * 8, true)
  const tw = family === 4 ? 6 : 18
  if (r.tuples.length !== tw) r.tuples = new Uint32Array(tw)
  for (let i = 0; i < tw; i++) r.tuples[i] = dv.getUint32(o + E.TUPLES + i * 4, true)
  return o + ENTRY_FIXED + tw * 4
}

function newRaw(): RawEntry {
  return {
    family: 4,
    proto: 0,
    state: 0,
    flags: 0,
    expires: 0,
    svcPort: -1,
    endpoint: -1,
    seq0: 0,
    seq1: 0,
    counters: [0, 0, 0, 0],
    tuples: new Uint32Array(6),
  }
}

/** Checks a chunk's header; returns its entry count and `now`, or throws a RangeError saying what is wrong. */
function chunkHeader(dv: DataView): { count: number; now: number } {
  if (dv.byteLength < CHUNK_HEAD || dv.getUint32(0, true) !== CHUNK_MAGIC) throw new RangeError('not a conntrack chunk')
  if (dv.getUint32(4, true) !== CHUNK_VERSION) throw new RangeError(`unsupported conntrack chunk version ${dv.getUint32(4, true)}`)
  return { count: dv.getUint32(8, true), now: dv.getUint32(12, true) }
}

function tupleText(t: Uint32Array, o: number, family: Family): TupleText {
  const aw = family === 4 ? 1 : 4
  const p = t[o + 2 * aw]!
  return { src: wordsToString(t, o, family), dst: wordsToString(t, o + aw, family), sport: p >>> 16, dport: p & 0xffff }
}

function entryOf(r: RawEntry, now: number, table: NatTable | undefined): ConntrackEntry {
  const flags: string[] = []
  if (r.flags & CtFlag.REPLIED) flags.push('replied')
  if (r.flags & CtFlag.ASSURED) flags.push('assured')
  if (r.flags & CtFlag.DNAT) flags.push('dnat')
  if (r.flags & CtFlag.SNAT) flags.push('snat')
  const sp = r.svcPort >= 0 ? table?.svcPorts[r.svcPort] : undefined
  const kw = r.family === 4 ? 3 : 9
  return {
    family: r.family,
    protocol: PROTO_NAMES[r.proto] ?? String(r.proto),
    state: r.proto === IPPROTO_TCP ? (TCP_STATE_NAMES[r.state] ?? String(r.state)) : '',
    orig: tupleText(r.tuples, ORIG * kw, r.family),
    reply: tupleText(r.tuples, REPLY * kw, r.family),
    expiresIn: Math.max(0, r.expires - now),
    flags,
    service: sp?.servicePortName ?? '',
    svcPortId: r.svcPort,
    packets: [r.counters[0], r.counters[2]],
    bytes: [r.counters[1], r.counters[3]],
  }
}

/** Control side: the entries of one chunk, service names resolved from `table`. */
export function decodeCtChunk(bytes: ArrayBuffer | Uint8Array, table: NatTable | undefined): ConntrackEntry[] {
  const out: ConntrackEntry[] = []
  forEachCtEntry(bytes, table, e => out.push(e))
  return out
}

/** Control side: how many entries a chunk holds (its header; nothing decoded). */
export function ctChunkCount(bytes: ArrayBuffer): number {
  return chunkHeader(new DataView(bytes)).count
}

/** Control side: each entry of one chunk decoded and handed to `visit` (nothing kept: a scan of a full table is bounded). */
export function forEachCtEntry(bytes: ArrayBuffer | Uint8Array, table: NatTable | undefined, visit: (e: ConntrackEntry) => void): void {
  const dv = bytes instanceof Uint8Array ? new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength) : new DataView(bytes)
  const { count, now } = chunkHeader(dv)
  const r = newRaw()
  let o = CHUNK_HEAD
  for (let i = 0; i < count; i++) {
    if (o + ENTRY_FIXED > dv.byteLength) throw new RangeError(`conntrack chunk is truncated at entry ${i} of ${count}`)
    const fam = dv.getUint8(o)
    if ((fam !== 4 && fam !== 6) || o + ctEntryBytes(fam) > dv.byteLength) throw new RangeError(`conntrack chunk entry ${i} is corrupt`)
    o = readEntry(dv, o, r)
    visit(entryOf(r, now, table))
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Snapshots

const SNAP_MAGIC = 'TNSN'
const V1_MAGIC = 0x54434e54 // "TNCT"

/**
 * Control side: a snapshot file from the chunks of one full listing (service ports recorded by key). Version 3 stores
 * each entry's remaining lifetime (its expiry minus its chunk's clock) and the wall time of the save, so a restore
 * needs neither clock to agree with the one that wrote it. The file is snapshotHead() then each chunk's
 * snapshotBody(), so a writer may stream it a chunk at a time (the agent does: no copy of the whole table).
 */
export function assembleSnapshot(chunks: readonly ArrayBuffer[], table: NatTable, wallMs: number = Date.now()): Buffer {
  return Buffer.concat([snapshotHead(table, wallMs), ...chunks.map(c => snapshotBody(c))])
}

/** The start of a snapshot file: magic, header length, header (version 3, service-port keys, save time). */
export function snapshotHead(table: NatTable, wallMs: number = Date.now()): Buffer {
  const keys = table.svcPorts.map(sp => sp?.key ?? null)
  const header = Buffer.from(JSON.stringify({ version: 3, keys, savedAt: wallMs }))
  const out = Buffer.alloc(8 + header.length)
  out.write(SNAP_MAGIC, 0, 'latin1')
  out.writeUInt32LE(header.length, 4)
  header.copy(out, 8)
  return out
}

/** A chunk's entries as snapshot records: its bytes after the chunk header, expiries turned into lifetimes left in place. */
export function snapshotBody(chunk: ArrayBuffer): Uint8Array {
  const { count, now } = chunkHeader(new DataView(chunk))
  const body = new Uint8Array(chunk, CHUNK_HEAD)
  const dv = new DataView(chunk, CHUNK_HEAD)
  let o = 0
  for (let i = 0; i < count && o + ENTRY_FIXED <= body.length; i++) {
    const fam = dv.getUint8(o)
    const left = dv.getUint32(o + E.EXPIRES, true) - now
    dv.setUint32(o + E.EXPIRES, left > 0 ? left : 0, true)
    o += ctEntryBytes(fam === 6 ? 6 : 4)
  }
  return body.subarray(0, Math.min(o, body.length))
}

export interface RestoreReport {
  restored: number
  /** expired by `now` */
  expired: number
  /** their service port no longer exists */
  unknownService: number
  /** their tuples are already tracked */
  duplicate: number
  /** a field out of range: skipped */
  corrupt: number
  /** removed after restoring because their endpoint stopped serving (TCP ones get a reset) */
  notServing: number
  /** no room in the table */
  full: number
  /** the first few problems, in words */
  readonly problems: string[]
}

export function newRestoreReport(): RestoreReport {
  return { restored: 0, expired: 0, unknownService: 0, duplicate: 0, corrupt: 0, notServing: 0, full: 0, problems: [] }
}

const MAX_PROBLEMS = 10

function problem(rep: RestoreReport, msg: string): void {
  rep.corrupt++
  if (rep.problems.length < MAX_PROBLEMS) rep.problems.push(msg)
}

/**
 * Control side: reads a snapshot file (version 1 or 2), checks every entry, maps service ports by key onto `table`'s
 * ids, and returns chunks (at most CT_CHUNK entries each) for the packet side's restoreCtChunk. Corrupt entries are
 * counted in `report` with a message; a file that is not a snapshot at all throws a RangeError saying why.
 */
export function prepareRestore(
  buf: Uint8Array,
  table: NatTable,
  wallMs: number = Date.now(),
  report: RestoreReport = newRestoreReport(),
  /** the clock a version 1 or 2 file's absolute expiries are on (those agents ran on wall seconds) */
  legacyNow: number = Math.floor(wallMs / 1000),
): { chunks: ArrayBuffer[]; report: RestoreReport } {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  if (b.length < 8 || b.toString('latin1', 0, 4) !== SNAP_MAGIC) throw new RangeError('not a NAT engine snapshot')
  const hl = b.readUInt32LE(4)
  if (8 + hl > b.length) throw new RangeError(`NAT snapshot is truncated: header of ${hl} bytes, file of ${b.length}`)
  let header: { version?: unknown; keys?: unknown; savedAt?: unknown }
  try {
    header = JSON.parse(b.toString('utf8', 8, 8 + hl)) as typeof header
  } catch {
    throw new RangeError('NAT snapshot header is not valid JSON')
  }
  if (header.version !== 1 && header.version !== 2 && header.version !== 3) throw new RangeError(`unsupported NAT snapshot version ${String(header.version)}`)
  // Version 3 holds remaining lifetimes as of savedAt (wall ms); older ones absolute expiries in wall seconds. Either
  // way the chunks made here carry lifetimes left now (base 0), which the packet side adds to its own clock.
  let spent: number
  if (header.version === 3) {
    if (typeof header.savedAt !== 'number' || !Number.isFinite(header.savedAt)) throw new RangeError('NAT snapshot header has no savedAt time')
    spent = Math.max(0, Math.floor((wallMs - header.savedAt) / 1000))
  } else spent = legacyNow
  if (!Array.isArray(header.keys)) throw new RangeError('NAT snapshot header has no service-port keys')
  const keys = header.keys as unknown[]
  const byKey = new Map<string, number>()
  for (const sp of table.svcPorts) if (sp !== undefined) byKey.set(sp.key, sp.id)
  const mapId = (id: number): number => {
    const k = keys[id]
    return typeof k === 'string' ? (byKey.get(k) ?? -1) : -1
  }

  const chunks: ArrayBuffer[] = []
  let cur: { dv: DataView; buf: ArrayBuffer; o: number; n: number } | null = null
  const flushCur = (): void => {
    if (cur === null) return
    cur.dv.setUint32(0, CHUNK_MAGIC, true)
    cur.dv.setUint32(4, CHUNK_VERSION, true)
    cur.dv.setUint32(8, cur.n, true)
    cur.dv.setUint32(12, 0, true) // base 0: expiries are lifetimes left
    chunks.push(cur.buf.slice(0, cur.o))
    cur = null
  }
  const r = newRaw()
  const accept = (): void => {
    const p = entryProblem(r)
    if (p !== '') {
      problem(report, `entry ${report.corrupt + report.restored + report.expired + report.unknownService}: ${p}`)
      return
    }
    if (r.expires <= spent) {
      report.expired++
      return
    }
    r.expires -= spent
    if (r.svcPort >= 0) {
      const id = mapId(r.svcPort)
      if (id < 0) {
        report.unknownService++
        return
      }
      r.svcPort = id
    }
    if (cur === null) {
      const cb = new ArrayBuffer(CHUNK_HEAD + CT_CHUNK * ctEntryBytes(6))
      cur = { dv: new DataView(cb), buf: cb, o: CHUNK_HEAD, n: 0 }
    }
    cur.o = writeRaw(cur.dv, cur.o, r)
    if (++cur.n >= CT_CHUNK) flushCur()
  }

  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength)
  let o = 8 + hl
  if (header.version !== 1) {
    while (o < b.length) {
      const fam = dv.getUint8(o)
      if (fam !== 4 && fam !== 6) {
        problem(report, `entry at byte ${o}: family ${fam} is not 4 or 6; the rest of the file is skipped`)
        break
      }
      if (o + ctEntryBytes(fam) > b.length) {
        problem(report, `entry at byte ${o} is truncated`)
        break
      }
      o = readEntry(dv, o, r)
      accept()
    }
  } else {
    // Version 1: u32 length + a Conntrack.snapshot() per family (IPv4 then IPv6).
    for (const family of [4, 6] as const) {
      if (o + 4 > b.length) throw new RangeError('NAT snapshot is truncated')
      const len = dv.getUint32(o, true)
      const start = o + 4
      o = start + len
      if (o > b.length) throw new RangeError(`NAT snapshot is truncated: IPv${family} part of ${len} bytes`)
      if (len < 16 || dv.getUint32(start, true) !== V1_MAGIC) throw new RangeError(`NAT snapshot IPv${family} part is not a conntrack snapshot`)
      if (dv.getUint32(start + 8, true) !== family) throw new RangeError(`NAT snapshot IPv${family} part is for IPv${dv.getUint32(start + 8, true)}`)
      const n = dv.getUint32(start + 12, true)
      const tw = family === 4 ? 6 : 18
      const rb = tw * 4 + 56
      if (16 + n * rb > len) throw new RangeError(`NAT snapshot IPv${family} part is truncated: ${n} entries announced`)
      for (let i = 0; i < n; i++) {
        let p = start + 16 + i * rb
        r.family = family
        if (r.tuples.length !== tw) r.tuples = new Uint32Array(tw)
        for (let w = 0; w < tw; w++, p += 4) r.tuples[w] = dv.getUint32(p, true)
        r.proto = dv.getUint8(p)
        r.state = dv.getUint8(p + 1)
        r.flags = dv.getUint8(p + 2) | CtFlag.USED
        r.expires = dv.getUint32(p + 4, true)
        r.svcPort = dv.getInt32(p + 8, true)
        r.endpoint = dv.getInt32(p + 12, true)
        r.seq0 = dv.getUint32(p + 16, true)
        r.seq1 = dv.getUint32(p + 20, true)
        for (let k = 0; k < 4; k++) r.counters[k] = dv.getFloat64(p + 24 + k * 8, true)
        accept()
      }
    }
  }
  flushCur()
  return { chunks, report }
}

function writeRaw(dv: DataView, o: number, r: RawEntry): number {
  dv.setUint8(o + E.FAMILY, r.family)
  dv.setUint8(o + E.PROTO, r.proto)
  dv.setUint8(o + E.STATE, r.state)
  dv.setUint8(o + E.FLAGS, r.flags)
  dv.setUint32(o + E.EXPIRES, r.expires, true)
  dv.setInt32(o + E.SVC, r.svcPort, true)
  dv.setInt32(o + E.ENDPOINT, r.endpoint, true)
  dv.setUint32(o + E.SEQ, r.seq0, true)
  dv.setUint32(o + E.SEQ + 4, r.seq1, true)
  for (let i = 0; i < 4; i++) dv.setFloat64(o + E.COUNTERS + i * 8, r.counters[i]!, true)
  for (let i = 0; i < r.tuples.length; i++) dv.setUint32(o + E.TUPLES + i * 4, r.tuples[i]!, true)
  return o + ENTRY_FIXED + r.tuples.length * 4
}

/**
 * Packet side: adds the entries of a prepared chunk (fields checked again: the bytes crossed a thread). `serving`
 * says whether an entry's endpoint still serves (else it is removed again, a TCP one with a reset queued by the
 * caller through `drop`). Returns nothing; counts go to `report`.
 */
export function restoreCtChunk(
  v4: Fam,
  v6: Fam,
  bytes: ArrayBuffer | Uint8Array,
  now: number,
  report: RestoreReport,
  keep: (fam: Fam, e: number) => boolean,
): void {
  const dv = bytes instanceof Uint8Array ? new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength) : new DataView(bytes)
  // Expiries in the chunk are on the clock of its header (0: lifetimes left); here they move to `now`'s clock.
  const { count, now: base } = chunkHeader(dv)
  const r = newRaw()
  let o = CHUNK_HEAD
  for (let i = 0; i < count; i++) {
    const f = o < dv.byteLength ? dv.getUint8(o) : 0
    if ((f !== 4 && f !== 6) || o + ctEntryBytes(f) > dv.byteLength) {
      problem(report, `chunk entry ${i} of ${count} is cut short or has family ${f}`)
      return
    }
    o = readEntry(dv, o, r)
    const p = entryProblem(r)
    if (p !== '') {
      problem(report, `chunk entry ${i}: ${p}`)
      continue
    }
    r.expires = r.expires - base + now
    if (r.expires <= now) {
      report.expired++
      continue
    }
    const fam = r.family === 4 ? v4 : v6
    const ct = fam.ct
    if (ct.find(r.tuples, 0, r.proto) >= 0 || ct.find(r.tuples, ct.kw, r.proto) >= 0) {
      report.duplicate++
      continue
    }
    ct.tk.set(r.tuples)
    const e = ct.count >= ct.max ? -1 : ct.create(r.proto, r.svcPort, r.endpoint, now)
    if (e < 0) {
      report.full++
      continue
    }
    ct.state[e] = r.state
    ct.flags[e] = r.flags | CtFlag.USED
    ct.expires[e] = r.expires
    ct.seqNext[e * 2] = r.seq0
    ct.seqNext[e * 2 + 1] = r.seq1
    for (let k = 0; k < 4; k++) ct.counters[e * 4 + k] = r.counters[k]!
    if (keep(fam, e)) report.restored++
    else report.notServing++
  }
}

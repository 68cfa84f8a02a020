// The fast path: turn a parsed Query into a reply from the installed zone image, writing into the caller's buffer. No
// allocation for names in the table, NXDOMAIN, or IPv4 pod names; nothing throws.
//
// Reply layout: header (12) | question copied from the query, original case (nameLen + 4) | compiled body | OPT (11)
// when the query had one. Compiled bodies already point at the question name (offset 12); replies for names outside
// the table patch a SOA template's pointers to where the zone suffix sits inside the question. The zone's SOA serial is
// written at answer time (entries carry its offset), so a new serial rewrites no entry.

import { podLabelAddress, podLabelIPv4 } from './addr'
import { DNS_HEADER_LEN, OPT_RR_LEN, QCLASS_IN, QType, Query, Rcode, copyInto, fnv1a, responseFlags, writeHeader, writeOpt } from './message'
import { set16 as put16, set32 as put32 } from '../wire/bytes'
import { Ans, EntryFlag, SLOT_INTS, Slot, SoaTemplate, type InstalledZone } from './installed'

/** answer() result: the name is not in the cluster zone (or is a reverse name we hold nothing for); ask upstream. */
export const NOT_OURS = -1
/** answer() result: NXDOMAIN under <ns>.svc.<zone> that autopath wants to resolve via the search path instead. */
export const AUTOPATH = -2
/** answer() result: a CNAME chain that leaves the zone (Responder.external names where); complete it upstream. */
export const EXTERNAL = -3

const POD_LABEL = [3, 0x70, 0x6f, 0x64] // "\x03pod"
const SVC_LABEL = [3, 0x73, 0x76, 0x63] // "\x03svc"

/** Per-server answering state: rotation counter and scratch. */
export class Responder {
  private rot = 0
  private readonly ip4 = new Uint8Array(4)
  /** after answer() returned EXTERNAL: where the name sits in externalArena (read by the external getter) */
  private externalArena: Uint8Array = this.ip4
  private externalAt = 0

  constructor(
    /** UDP payload size we advertise in OPT */
    readonly ednsSize: number,
  ) {}

  /** After answer() returned EXTERNAL: the out-of-zone name the CNAME chain ends at (decoded here, off the fast path). */
  get external(): string {
    const a = this.externalArena
    return Buffer.from(a.buffer, a.byteOffset + this.externalAt + 1, a[this.externalAt]!).toString('latin1')
  }

  /**
   * Bytes written at out[outOff..], NOT_OURS, AUTOPATH or EXTERNAL. `limit` is the largest reply allowed (transport
   * and client size already applied). The query must have parsed OK with class IN and a non-transfer qtype.
   * `autopath`: return AUTOPATH instead of NXDOMAIN for misses under an existing <ns>.svc.<zone>. `external`: return
   * EXTERNAL for a CNAME chain that leaves the zone (unless CNAME itself is asked) instead of the in-zone part alone.
   */
  answer(
    zone: InstalledZone,
    q: Query,
    query: Uint8Array,
    off: number,
    out: Uint8Array,
    outOff: number,
    limit: number,
    autopath: boolean,
    external = false,
  ): number {
    const slot = zone.find(q.name, 0, q.nameLen, q.hash)
    if (slot >= 0) {
      const a = zone.chunks[zone.slots[slot * SLOT_INTS + Slot.CHUNK]!]!
      let p = zone.slots[slot * SLOT_INTS + Slot.OFF]!
      p += 1 + a[p]!
      const n = a[p]!
      const flags = a[p + 1]!
      p += 2
      if (flags & EntryFlag.EXTERNAL) {
        if (external && q.qtype !== QType.CNAME) {
          this.externalArena = a
          this.externalAt = p
          return EXTERNAL
        }
        p += 1 + a[p]!
      }
      const typed = flags & EntryFlag.OTHER ? n - 1 : n
      for (let i = 0; i < typed; i++) {
        if (get16(a, p + Ans.QTYPE) === q.qtype) return this.writeCompiled(zone, a, p, q, query, off, out, outOff, limit)
        p += Ans.BODY + get32(a, p + Ans.BODY_LEN)
      }
      if (typed === n) return NOT_OURS
      return this.writeCompiled(zone, a, p, q, query, off, out, outOff, limit)
    }
    const zl = zone.originLabels
    if (!inZone(zone, q)) return NOT_OURS
    const zoneAt = DNS_HEADER_LEN + q.labelOff[q.labels - zl]!
    // <label>.<ns>.pod.<zone>
    if (zone.podRecords && q.labels === zl + 3 && labelIs(q, 2, POD_LABEL)) {
      const nsStart = q.labelOff[1]!
      if (zone.find(q.name, nsStart, q.nameLen, fnv1a(q.name, nsStart, q.nameLen)) >= 0) {
        return this.writePod(zone, q, query, off, out, outOff, limit, zoneAt)
      }
    }
    if (autopath && q.labels >= zl + 3 && labelIs(q, q.labels - zl - 1, SVC_LABEL)) {
      const nsStart = q.labelOff[q.labels - zl - 2]!
      if (zone.find(q.name, nsStart, q.nameLen, fnv1a(q.name, nsStart, q.nameLen)) >= 0) return AUTOPATH
    }
    return this.writeNegative(zone, q, query, off, out, outOff, limit, Rcode.NXDOMAIN, zoneAt)
  }

  /** The answer at a[p] (layout in installed.ts). */
  private writeCompiled(
    zone: InstalledZone,
    a: Uint8Array,
    p: number,
    q: Query,
    query: Uint8Array,
    off: number,
    out: Uint8Array,
    outOff: number,
    limit: number,
  ): number {
    const qEnd = DNS_HEADER_LEN + q.nameLen + 4
    const opt = q.edns ? OPT_RR_LEN : 0
    const rcode = a[p + Ans.RCODE]!
    const arStart = get32(a, p + Ans.AR_START)
    const rotate = get16(a, p + Ans.ROTATE)
    let bodyLen = get32(a, p + Ans.BODY_LEN)
    let an = get16(a, p + Ans.AN)
    let ns = get16(a, p + Ans.NS)
    let ar = get16(a, p + Ans.AR)
    let tc = false
    if (qEnd + bodyLen + opt > limit) {
      // RFC 2181 §9: dropping the whole additional section needs no TC; anything less whole does
      if (qEnd + arStart + opt <= limit) {
        bodyLen = arStart
        ar = 0
      } else {
        bodyLen = 0
        an = ns = ar = 0
        tc = true
        if (qEnd + opt > limit) return 0
      }
    }
    copyInto(out, outOff + DNS_HEADER_LEN, query, off + DNS_HEADER_LEN, qEnd - DNS_HEADER_LEN)
    writeHeader(out, outOff, q.id, responseFlags(q.flags, true, tc, rcode), 1, an, ns, ar + (opt ? 1 : 0))
    let o = outOff + qEnd
    const body = p + Ans.BODY
    if (rotate > 1 && an === rotate) {
      const rrSize = a[p + Ans.RR_SIZE]!
      const start = (this.rot++ % rotate) * rrSize
      const setLen = rotate * rrSize
      copyBody(out, o, a, body + start, setLen - start)
      copyBody(out, o + setLen - start, a, body, start)
      copyBody(out, o + setLen, a, body + setLen, bodyLen - setLen)
      if (this.rot > 0x3fffffff) this.rot = 0
    } else {
      copyBody(out, o, a, body, bodyLen)
    }
    const serialAt = get32(a, p + Ans.SERIAL_AT) - 1
    if (serialAt >= 0 && serialAt < bodyLen) put32(out, o + serialAt, zone.serial)
    o += bodyLen
    if (opt) o = writeOpt(out, o, this.ednsSize, rcode, q.ednsDo)
    return o - outOff
  }

  /** NXDOMAIN or NODATA for a name outside the table: SOA in authority, its names pointing into the question. */
  private writeNegative(
    zone: InstalledZone,
    q: Query,
    query: Uint8Array,
    off: number,
    out: Uint8Array,
    outOff: number,
    limit: number,
    rcode: number,
    zoneAt: number,
  ): number {
    const qEnd = DNS_HEADER_LEN + q.nameLen + 4
    const opt = q.edns ? OPT_RR_LEN : 0
    const soa = zone.soaTemplate
    const fits = qEnd + soa.length + opt <= limit
    if (!fits && qEnd + opt > limit) return 0
    copyInto(out, outOff + DNS_HEADER_LEN, query, off + DNS_HEADER_LEN, qEnd - DNS_HEADER_LEN)
    writeHeader(out, outOff, q.id, responseFlags(q.flags, true, !fits, rcode), 1, 0, fits ? 1 : 0, opt ? 1 : 0)
    let o = outOff + qEnd
    if (fits) {
      copyInto(out, o, soa, 0, soa.length)
      const ptr = 0xc000 | zoneAt
      put16(out, o + SoaTemplate.OWNER_PTR, ptr)
      put16(out, o + SoaTemplate.MNAME_PTR, ptr)
      put16(out, o + SoaTemplate.RNAME_PTR, ptr)
      o += soa.length
    }
    if (opt) o = writeOpt(out, o, this.ednsSize, rcode, q.ednsDo)
    return o - outOff
  }

  private writePod(zone: InstalledZone, q: Query, query: Uint8Array, off: number, out: Uint8Array, outOff: number, limit: number, zoneAt: number): number {
    const label = q.labelOff[0]!
    const llen = q.name[label]!
    let addr: Uint8Array | undefined = this.ip4
    if (!podLabelIPv4(q.name, label + 1, llen, this.ip4)) {
      addr = podLabelAddress(Buffer.from(q.name.buffer, q.name.byteOffset + label + 1, llen).toString('latin1'))
      // a label that reads as four octets but fails (e.g. "1-2-3-999") is not an IPv6 address either
    }
    if (addr === undefined) return this.writeNegative(zone, q, query, off, out, outOff, limit, Rcode.NXDOMAIN, zoneAt)
    const type = addr.length === 4 ? QType.A : QType.AAAA
    if (q.qtype !== type) return this.writeNegative(zone, q, query, off, out, outOff, limit, Rcode.NOERROR, zoneAt)
    const qEnd = DNS_HEADER_LEN + q.nameLen + 4
    const opt = q.edns ? OPT_RR_LEN : 0
    const rr = 12 + addr.length
    if (qEnd + rr + opt > limit) return 0
    copyInto(out, outOff + DNS_HEADER_LEN, query, off + DNS_HEADER_LEN, qEnd - DNS_HEADER_LEN)
    writeHeader(out, outOff, q.id, responseFlags(q.flags, true, false, Rcode.NOERROR), 1, 1, 0, opt ? 1 : 0)
    let o = outOff + qEnd
    put16(out, o, 0xc000 | DNS_HEADER_LEN)
    put16(out, o + 2, type)
    put16(out, o + 4, QCLASS_IN)
    put32(out, o + 6, zone.ttl)
    put16(out, o + 10, addr.length)
    copyInto(out, o + 12, addr, 0, addr.length)
    o += rr
    if (opt) o = writeOpt(out, o, this.ednsSize, Rcode.NOERROR, q.ednsDo)
    return o - outOff
  }
}

/** Whether the question name ends with the zone origin (on a label boundary). */
function inZone(zone: InstalledZone, q: Query): boolean {
  const zl = zone.originLabels
  if (q.labels < zl) return false
  const start = q.labelOff[q.labels - zl]!
  const w = zone.originWire
  if (q.nameLen - start !== w.length) return false
  for (let i = 0; i < w.length; i++) if (q.name[start + i] !== w[i]) return false
  return true
}

function labelIs(q: Query, index: number, label: readonly number[]): boolean {
  const at = q.labelOff[index]!
  for (let i = 0; i < label.length; i++) if (q.name[at + i] !== label[i]) return false
  return true
}

function get16(a: Uint8Array, o: number): number {
  return (a[o]! << 8) | a[o + 1]!
}

function get32(a: Uint8Array, o: number): number {
  return ((a[o]! << 24) | (a[o + 1]! << 16) | (a[o + 2]! << 8) | a[o + 3]!) >>> 0
}

/** Copy from a zone arena, which is never the output buffer: a plain loop, no overlap check, no subarray. */
function copyBody(out: Uint8Array, o: number, a: Uint8Array, from: number, n: number): void {
  for (let i = 0; i < n; i++) out[o + i] = a[from + i]!
}

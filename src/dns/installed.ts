// The packet side of the zone: ZoneImages as they cross from the control thread, and the installed zone the Responder
// answers from. Installing a full image wraps its buffers (O(1)); a delta image appends one arena chunk and rewrites
// the index slots it names (O(change)). Nothing here walks the zone.
//
// Index: open addressing with linear probing over SLOT_INTS Int32s per slot (hash, chunk, offset); chunk -1 = empty.
// The control side (ZoneCompiler) mirrors the index and decides every slot, so a delta is a list of slot writes.
//
// Entry, at arena[offset] (all integers big-endian):
//   u8 keyLen | key: lowercase wire name | u8 answers | u8 flags (EntryFlag) | [u8 extLen | ext: latin1 name]
//   then `answers` answers, the `other` one last when EntryFlag.OTHER is set:
//   u16 qtype | u8 rcode | u8 rrSize | u16 an | u16 ns | u16 ar | u16 rotate | u32 bodyLen | u32 arStart |
//   u32 serialAt + 1 (0 = none) | body (answer + authority + additional, compressed against the question at 12)

import { QType, nameToWire } from './message'
import { SOA_EXPIRE, SOA_MAX_TTL, SOA_REFRESH, SOA_RETRY } from './records'

export const SLOT_INTS = 3
export const Slot = { HASH: 0, CHUNK: 1, OFF: 2 } as const
export const EMPTY_CHUNK = -1

export const EntryFlag = { OTHER: 1, EXTERNAL: 2 } as const
export const Ans = {
  QTYPE: 0,
  RCODE: 2,
  RR_SIZE: 3,
  AN: 4,
  NS: 6,
  AR: 8,
  ROTATE: 10,
  BODY_LEN: 12,
  AR_START: 16,
  SERIAL_AT: 20,
  BODY: 24,
} as const

/** What every image says about the zone it belongs to. */
export interface ZoneImageMeta {
  readonly origin: string
  readonly ttl: number
  readonly podRecords: boolean
  readonly serial: number
  /** generation: a delta applies only on top of generation `base` */
  readonly gen: number
  /** names in the zone after this image */
  readonly names: number
  /** compile problems in the zone after this image (objects skipped) */
  readonly problems: number
}

export interface FullZoneImage extends ZoneImageMeta {
  readonly kind: 'full'
  /** index: SLOT_INTS per slot, a power of two of slots */
  readonly slots: Int32Array
  /** chunk 0 */
  readonly arena: Uint8Array
}

export interface DeltaZoneImage extends ZoneImageMeta {
  readonly kind: 'delta'
  readonly base: number
  /** slot writes in order: (slot, hash, chunk, offset) each; chunk -1 empties the slot */
  readonly writes: Int32Array
  /** the new and replaced entries; becomes chunk `chunkId` */
  readonly chunk: Uint8Array
  readonly chunkId: number
}

export type ZoneImage = FullZoneImage | DeltaZoneImage

const WRITE_INTS = 4

/** The buffers to list in postMessage's transfer list (each view owns its whole buffer). */
export function zoneImageTransfer(img: ZoneImage): ArrayBuffer[] {
  const views = img.kind === 'full' ? [img.slots, img.arena] : [img.writes, img.chunk]
  return views.map(v => v.buffer as ArrayBuffer)
}

/** An image that does not fit the installed zone; the installed zone is unchanged. */
export class ZoneImageError extends Error {
  readonly code = 'ZONE_IMAGE_MISMATCH'
  override readonly name = 'ZoneImageError'
}

/** SOA RR offsets in the template used for names outside the table (answer.ts patches the three pointers). */
export const SoaTemplate = {
  OWNER_PTR: 0,
  MNAME_PTR: 19,
  RNAME_PTR: 32,
  SERIAL: 34,
  LEN: 54,
} as const

/** The installed zone: index + arena chunks + what the Responder needs about the zone. Mutated only by install(). */
export class InstalledZone {
  origin = ''
  originWire: Uint8Array = Uint8Array.of(0)
  originLabels = 0
  ttl = 0
  podRecords = true
  serial = 0
  gen = -1
  /** names in the zone */
  size = 0
  problems = 0
  slots: Int32Array = new Int32Array(0)
  mask = -1
  chunks: Uint8Array[] = []
  /** SOA RR with pointer placeholders, for replies whose names are not in the table (NXDOMAIN, pod NODATA) */
  readonly soaTemplate = new Uint8Array(SoaTemplate.LEN)

  /** Install a full image (wrap, O(1)) or a delta (O(change)); throws ZoneImageError when a delta does not fit. */
  install(img: ZoneImage): void {
    if (img.kind === 'full') {
      const slots = img.slots.length / SLOT_INTS
      if (!Number.isInteger(slots) || slots === 0 || (slots & (slots - 1)) !== 0) {
        throw new ZoneImageError(`Zone image index has ${img.slots.length} ints, not ${SLOT_INTS} × a power of two`)
      }
      if (img.origin !== this.origin) {
        this.originWire = nameToWire(img.origin)
        this.originLabels = img.origin === '' ? 0 : img.origin.split('.').length
        this.origin = img.origin
      }
      this.slots = img.slots
      this.mask = slots - 1
      this.chunks = [img.arena]
    } else {
      if (img.base !== this.gen || img.origin !== this.origin) {
        throw new ZoneImageError(`Zone delta for generation ${img.base} of ${img.origin}, installed: ${this.gen} of ${this.origin}`)
      }
      if (img.chunkId !== this.chunks.length) {
        throw new ZoneImageError(`Zone delta brings chunk ${img.chunkId}, expected ${this.chunks.length}`)
      }
      const w = img.writes
      for (let i = 0; i < w.length; i += WRITE_INTS) {
        const s = w[i]! * SLOT_INTS
        if (s < 0 || s >= this.slots.length) throw new ZoneImageError(`Zone delta writes slot ${w[i]} of ${this.mask + 1}`)
      }
      this.chunks.push(img.chunk)
      const slots = this.slots
      for (let i = 0; i < w.length; i += WRITE_INTS) {
        const s = w[i]! * SLOT_INTS
        slots[s + Slot.HASH] = w[i + 1]!
        slots[s + Slot.CHUNK] = w[i + 2]!
        slots[s + Slot.OFF] = w[i + 3]!
      }
    }
    this.gen = img.gen
    this.size = img.names
    this.problems = img.problems
    if (img.ttl !== this.ttl || img.kind === 'full') this.fillSoaTemplate(img.ttl)
    this.ttl = img.ttl
    this.podRecords = img.podRecords
    this.serial = img.serial
    const t = this.soaTemplate
    t[SoaTemplate.SERIAL] = img.serial >>> 24
    t[SoaTemplate.SERIAL + 1] = img.serial >>> 16
    t[SoaTemplate.SERIAL + 2] = img.serial >>> 8
    t[SoaTemplate.SERIAL + 3] = img.serial
  }

  /** Slot of the wire name name[start, end) whose FNV-1a hash is `hash`, or -1. Allocates nothing. */
  find(name: Uint8Array, start: number, end: number, hash: number): number {
    const slots = this.slots
    const len = end - start
    let i = hash & this.mask
    for (;;) {
      const s = i * SLOT_INTS
      const c = slots[s + Slot.CHUNK]!
      if (c === EMPTY_CHUNK) return -1
      if (slots[s + Slot.HASH] === hash) {
        const a = this.chunks[c]!
        const off = slots[s + Slot.OFF]!
        if (a[off] === len) {
          let j = 0
          while (j < len && a[off + 1 + j] === name[start + j]) j++
          if (j === len) return i
        }
      }
      i = (i + 1) & this.mask
    }
  }

  private fillSoaTemplate(ttl: number): void {
    // owner and rdata names are pointers to the zone suffix, patched per reply: ns.dns.<zone>, hostmaster.<zone>
    const t = this.soaTemplate
    const dv = new DataView(t.buffer, t.byteOffset, t.byteLength)
    dv.setUint16(0, 0xc000)
    dv.setUint16(2, QType.SOA)
    dv.setUint16(4, 1)
    dv.setUint32(6, Math.min(ttl, SOA_MAX_TTL))
    dv.setUint16(10, SoaTemplate.LEN - 12)
    t.set([2, 0x6e, 0x73, 3, 0x64, 0x6e, 0x73, 0xc0, 0], 12)
    t[21] = 10
    t.set([0x68, 0x6f, 0x73, 0x74, 0x6d, 0x61, 0x73, 0x74, 0x65, 0x72], 22)
    dv.setUint16(SoaTemplate.RNAME_PTR, 0xc000)
    dv.setUint32(38, SOA_REFRESH)
    dv.setUint32(42, SOA_RETRY)
    dv.setUint32(46, SOA_EXPIRE)
    dv.setUint32(50, ttl)
  }
}

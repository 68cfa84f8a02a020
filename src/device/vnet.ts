// The virtio_net_hdr that precedes each packet on a TUN opened with IFF_VNET_HDR: how the kernel says "this is a GSO
// super-packet, cut it into gso_size pieces" and "the L4 checksum is only partial, finish it from csum_start".
//
//   struct virtio_net_hdr {            (include/uapi/linux/virtio_net.h; 10 bytes, little-endian on x86/arm64)
//      0       1       2               4               6               8              10
//     +-------+-------+---------------+---------------+---------------+---------------+
//     | flags |gso_typ|    hdr_len    |   gso_size    |  csum_start   |  csum_offset  |
//     +-------+-------+---------------+---------------+---------------+---------------+
//   }
//   flags:       NEEDS_CSUM — the L4 checksum field holds only the pseudo-header sum; whoever emits the packet sums
//                from csum_start and stores at csum_start + csum_offset. DATA_VALID — checksum already verified.
//   gso_type:    NONE, TCPV4, UDP (UFO, obsolete), TCPV6, UDP_L4 (USO); | ECN when the stream uses ECN (CWR).
//   hdr_len:     bytes of L3+L4 headers (a hint); gso_size: payload bytes per segment (the MSS for TCP).
//   csum_start / csum_offset: counted from the start of the IP header.
//
// A NAT that rewrites an address or port of a NEEDS_CSUM packet updates only the pseudo-header part of the L4
// checksum (the field is not a full checksum yet) and writes the packet back with the same header: the kernel (or
// the NIC) segments it and completes the checksums.
import { VNET_HDR_LEN } from './device'

export { VNET_HDR_LEN }

/** Byte offsets inside the header. */
export const VnetOff = { FLAGS: 0, GSO_TYPE: 1, HDR_LEN: 2, GSO_SIZE: 4, CSUM_START: 6, CSUM_OFFSET: 8 } as const

export const VnetFlags = { NEEDS_CSUM: 1, DATA_VALID: 2 } as const

export const GsoType = { NONE: 0, TCPV4: 1, UDP: 3, TCPV6: 4, UDP_L4: 5, ECN: 0x80 } as const

/** gso_type without the ECN bit. */
export const GSO_TYPE_MASK = 0x7f

/** A plain copy of the fields, for tests, logs and the CLI (the hot path uses VnetHdr or the functions below). */
export interface VnetHdrFields {
  flags: number
  gsoType: number
  hdrLen: number
  gsoSize: number
  csumStart: number
  csumOffset: number
}

/**
 * A view over the header at `buf[off, off + 10)`; `bind()` moves it to another packet so one view serves a whole
 * batch without allocating. Setters write through to the buffer.
 */
export class VnetHdr {
  constructor(public buf: Buffer, public off: number) {}

  /** Points the view at the header of the packet whose IP header starts at `ipOff` (the Batch convention). */
  static forPacket(buf: Buffer, ipOff: number): VnetHdr { return new VnetHdr(buf, ipOff - VNET_HDR_LEN) }

  bind(buf: Buffer, off: number): this { this.buf = buf; this.off = off; return this }
  bindPacket(buf: Buffer, ipOff: number): this { this.buf = buf; this.off = ipOff - VNET_HDR_LEN; return this }

  flags(): number { return this.buf[this.off]! }
  setFlags(v: number): void { this.buf[this.off] = v }
  gsoType(): number { return this.buf[this.off + VnetOff.GSO_TYPE]! }
  setGsoType(v: number): void { this.buf[this.off + VnetOff.GSO_TYPE] = v }
  hdrLen(): number { return this.buf.readUInt16LE(this.off + VnetOff.HDR_LEN) }
  setHdrLen(v: number): void { this.buf.writeUInt16LE(v, this.off + VnetOff.HDR_LEN) }
  gsoSize(): number { return this.buf.readUInt16LE(this.off + VnetOff.GSO_SIZE) }
  setGsoSize(v: number): void { this.buf.writeUInt16LE(v, this.off + VnetOff.GSO_SIZE) }
  csumStart(): number { return this.buf.readUInt16LE(this.off + VnetOff.CSUM_START) }
  setCsumStart(v: number): void { this.buf.writeUInt16LE(v, this.off + VnetOff.CSUM_START) }
  csumOffset(): number { return this.buf.readUInt16LE(this.off + VnetOff.CSUM_OFFSET) }
  setCsumOffset(v: number): void { this.buf.writeUInt16LE(v, this.off + VnetOff.CSUM_OFFSET) }

  needsCsum(): boolean { return (this.buf[this.off]! & VnetFlags.NEEDS_CSUM) !== 0 }
  /** true for a super-packet the kernel will segment (any gso_type but NONE) */
  isGso(): boolean { return (this.buf[this.off + VnetOff.GSO_TYPE]! & GSO_TYPE_MASK) !== GsoType.NONE }
  /** Zeroes the header: "a complete packet with full checksums", what packets tundra builds carry. */
  clear(): void { this.buf.fill(0, this.off, this.off + VNET_HDR_LEN) }
}

/** Reads the header at `off` into a plain object. */
export function readVnetHdr(buf: Buffer, off: number): VnetHdrFields {
  return {
    flags: buf[off]!,
    gsoType: buf[off + VnetOff.GSO_TYPE]!,
    hdrLen: buf.readUInt16LE(off + VnetOff.HDR_LEN),
    gsoSize: buf.readUInt16LE(off + VnetOff.GSO_SIZE),
    csumStart: buf.readUInt16LE(off + VnetOff.CSUM_START),
    csumOffset: buf.readUInt16LE(off + VnetOff.CSUM_OFFSET),
  }
}

/** Writes a header at `off` (missing fields are zero); returns the offset just past it, where the IP header goes. */
export function writeVnetHdr(buf: Buffer, off: number, h: Partial<VnetHdrFields> = {}): number {
  buf[off] = h.flags ?? 0
  buf[off + VnetOff.GSO_TYPE] = h.gsoType ?? 0
  buf.writeUInt16LE(h.hdrLen ?? 0, off + VnetOff.HDR_LEN)
  buf.writeUInt16LE(h.gsoSize ?? 0, off + VnetOff.GSO_SIZE)
  buf.writeUInt16LE(h.csumStart ?? 0, off + VnetOff.CSUM_START)
  buf.writeUInt16LE(h.csumOffset ?? 0, off + VnetOff.CSUM_OFFSET)
  return off + VNET_HDR_LEN
}

/** Zeroes the header in front of the packet whose IP header starts at `ipOff`. */
export function clearVnetHdr(buf: Buffer, ipOff: number): void {
  buf.fill(0, ipOff - VNET_HDR_LEN, ipOff)
}

const GSO_NAMES: Record<number, string> = { 0: 'none', 1: 'tcpv4', 3: 'udp', 4: 'tcpv6', 5: 'udp_l4' }

/** `needs_csum gso=tcpv4 gso_size=1448 hdr_len=66 csum=34+16`, for traces and test messages. */
export function formatVnetHdr(h: VnetHdrFields): string {
  const parts: string[] = []
  if (h.flags & VnetFlags.NEEDS_CSUM) parts.push('needs_csum')
  if (h.flags & VnetFlags.DATA_VALID) parts.push('data_valid')
  const type = h.gsoType & GSO_TYPE_MASK
  parts.push(`gso=${GSO_NAMES[type] ?? `type${type}`}${h.gsoType & GsoType.ECN ? '|ecn' : ''}`)
  if (type !== GsoType.NONE) parts.push(`gso_size=${h.gsoSize}`, `hdr_len=${h.hdrLen}`)
  if (h.flags & VnetFlags.NEEDS_CSUM) parts.push(`csum=${h.csumStart}+${h.csumOffset}`)
  return parts.join(' ')
}

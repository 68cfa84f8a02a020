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

/** Byte offsets inside the header. */
export const VnetOff = { FLAGS: 0, GSO_TYPE: 1, HDR_LEN: 2, GSO_SIZE: 4, CSUM_START: 6, CSUM_OFFSET: 8 } as const

export const VnetFlags = { NEEDS_CSUM: 1, DATA_VALID: 2 } as const

export const GsoType = { NONE: 0, TCPV4: 1, UDP: 3, TCPV6: 4, UDP_L4: 5, ECN: 0x80 } as const

/** gso_type without the ECN bit. */
export const GSO_TYPE_MASK = 0x7f

/** A plain copy of the fields, for the in-memory device, tests and logs (the hot path reads the bytes at VnetOff). */
export interface VnetHdrFields {
  flags: number
  gsoType: number
  hdrLen: number
  gsoSize: number
  csumStart: number
  csumOffset: number
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

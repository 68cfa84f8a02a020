// SCTP common header (RFC 9260 §3.1): ports for Service NAT and the CRC32c checksum a port rewrite must redo.
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |     Source Port Number        |     Destination Port Number   |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                      Verification Tag                         |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                           Checksum                            |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                     chunks ...
//
// The checksum is CRC32c over the whole packet with the field zeroed, stored least significant byte first
// (RFC 9260 Appendix A). It has no pseudo-header: address NAT leaves it alone, port NAT recomputes it.

export const SCTP_HEADER = 12

/** Byte offsets of the common header fields. */
export const SctpField = {
  SRC_PORT: 0,
  DST_PORT: 2,
  VERIFICATION_TAG: 4,
  CHECKSUM: 8,
} as const

/** The checksum as the CRC value (the field's bytes read little-endian). */
function sctpChecksum(buf: Uint8Array, off: number): number {
  const at = off + SctpField.CHECKSUM
  return (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0
}

/** Stores a CRC value in the checksum field, least significant byte first (RFC 9260 Appendix A). */
function setSctpChecksum(buf: Uint8Array, off: number, crc: number): void {
  const at = off + SctpField.CHECKSUM
  buf[at] = crc
  buf[at + 1] = crc >>> 8
  buf[at + 2] = crc >>> 16
  buf[at + 3] = crc >>> 24
}

// Reflected Castagnoli polynomial table, built once at load.
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
    t[n] = c >>> 0
  }
  return t
})()

/** CRC32c (Castagnoli) of `len` bytes at `off`; "123456789" gives 0xe3069283. */
export function crc32c(buf: Uint8Array, off: number, len: number): number {
  let c = 0xffffffff
  const end = off + len
  for (let i = off; i < end; i++) c = CRC32C_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}

/** Computes and stores the CRC32c of the `len`-byte SCTP packet at `off`. */
export function fillSctpChecksum(buf: Uint8Array, off: number, len: number): void {
  setSctpChecksum(buf, off, 0)
  setSctpChecksum(buf, off, crc32c(buf, off, len))
}

/** True when the stored CRC32c matches the packet (the field is restored afterwards). */
export function sctpChecksumOk(buf: Uint8Array, off: number, len: number): boolean {
  const stored = sctpChecksum(buf, off)
  fillSctpChecksum(buf, off, len)
  const ok = sctpChecksum(buf, off) === stored
  setSctpChecksum(buf, off, stored)
  return ok
}

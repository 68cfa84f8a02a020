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
  return (buf[off + 8]! | (buf[off + 9]! << 8) | (buf[off + 10]! << 16) | (buf[off + 11]! << 24)) >>> 0
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
  buf[off + 8] = 0
  buf[off + 9] = 0
  buf[off + 10] = 0
  buf[off + 11] = 0
  const c = crc32c(buf, off, len)
  buf[off + 8] = c
  buf[off + 9] = c >>> 8
  buf[off + 10] = c >>> 16
  buf[off + 11] = c >>> 24
}

/** True when the stored CRC32c matches the packet (the field is restored afterwards). */
export function sctpChecksumOk(buf: Uint8Array, off: number, len: number): boolean {
  const stored = sctpChecksum(buf, off)
  fillSctpChecksum(buf, off, len)
  const ok = sctpChecksum(buf, off) === stored
  buf[off + 8] = stored
  buf[off + 9] = stored >>> 8
  buf[off + 10] = stored >>> 16
  buf[off + 11] = stored >>> 24
  return ok
}

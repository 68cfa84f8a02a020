// Big-endian integer access by direct byte indexing: faster than Buffer#readUInt16BE and never throws out of range.
//
// Reads past the end of the buffer yield 0 bits rather than an exception; callers validate lengths once
// (packet.ts) and then read freely.

export function get16(buf: Uint8Array, off: number): number {
  return (buf[off]! << 8) | buf[off + 1]!
}

/** Unsigned 32-bit read (`>>> 0`), the representation of IPv4 addresses throughout tundra. */
export function get32(buf: Uint8Array, off: number): number {
  return ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0
}

export function set16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 8
  buf[off + 1] = v
}

export function set32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24
  buf[off + 1] = v >>> 16
  buf[off + 2] = v >>> 8
  buf[off + 3] = v
}

/** memmove of n bytes that is safe when both ranges are views of the same memory and overlap; allocates nothing. */
export function copyBytes(dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number, n: number): void {
  if (n <= 0) return
  if (dst.buffer === src.buffer) {
    const d = dst.byteOffset + dstOff
    const s = src.byteOffset + srcOff
    if (d > s && d < s + n) {
      for (let i = n - 1; i >= 0; i--) dst[dstOff + i] = src[srcOff + i]!
      return
    }
  }
  for (let i = 0; i < n; i++) dst[dstOff + i] = src[srcOff + i]!
}

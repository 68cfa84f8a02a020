// The Internet checksum (RFC 1071) and its incremental update (RFC 1624), the arithmetic under every header in wire/.
//
// A "sum" here is an unfolded ones'-complement accumulation of 16-bit big-endian words: a plain non-negative
// integer that may exceed 16 bits. `fold` brings it to 16 bits, `checksum` folds and inverts. Two representations of
// zero exist in ones'-complement (0x0000 and 0xffff); the helpers below keep the one a full recompute would produce,
// so an incrementally updated checksum is bit-for-bit what recomputing it would give (tests rely on that).
//
// Stored checksum fields come in two flavours:
//   complemented  ~fold(sum)  what travels on the wire (IPv4 header, TCP, UDP, ICMP, ICMPv6)
//   partial        fold(sum)  the pseudo-header sum the kernel leaves in a TCP/UDP field for CHECKSUM_PARTIAL /
//                             VIRTIO_NET_HDR_F_NEEDS_CSUM packets; the device (or whoever completes it) later sums
//                             the L4 header and payload over it and stores the complement.

/** Words summed before the running total is moved out of small-integer range; 16384 * 0xffff < 2^30. */
const CHUNK_BYTES = 32768

/**
 * Ones'-complement accumulation of `len` bytes at `off` as 16-bit big-endian words; an odd trailing byte is padded
 * with a zero byte. Returns the unfolded sum plus `initial` (safe for any packet size: totals stay far below 2^53).
 */
export function sum16(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial
  let i = off
  const end = off + len
  const evenEnd = end - (len & 1)
  while (i < evenEnd) {
    // Per chunk the accumulator stays a small integer, which V8 keeps unboxed.
    const stop = Math.min(evenEnd, i + CHUNK_BYTES)
    let c = 0
    // Four words per iteration; the loop below handles the rest.
    const stop8 = stop - ((stop - i) & 7)
    while (i < stop8) {
      c += ((buf[i]! << 8) | buf[i + 1]!) + ((buf[i + 2]! << 8) | buf[i + 3]!) + ((buf[i + 4]! << 8) | buf[i + 5]!) + ((buf[i + 6]! << 8) | buf[i + 7]!)
      i += 8
    }
    while (i < stop) {
      c += (buf[i]! << 8) | buf[i + 1]!
      i += 2
    }
    sum += c
  }
  if (len & 1) sum += buf[end - 1]! << 8
  return sum
}

/** Folds a non-negative sum to 16 bits (end-around carry), not inverted. Zero folds to zero, anything else to 1..0xffff. */
export function fold(sum: number): number {
  // `x & 0xffff` is exact for any integer below 2^53; `>>>` only below 2^32, hence the division for big sums.
  while (sum > 0xffffffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000)
  sum = (sum & 0xffff) + (sum >>> 16)
  return (sum & 0xffff) + (sum >>> 16)
}

/** The Internet checksum of `len` bytes at `off`, with `initial` (e.g. a pseudo-header sum) added in. */
export function checksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  return ~fold(sum16(buf, off, len, initial)) & 0xffff
}

/** Sum of the IPv4 pseudo-header (RFC 793 / 768): addresses, zero+protocol, L4 length. */
export function pseudoHeaderSum4(src: number, dst: number, proto: number, l4len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + (l4len >>> 16) + (l4len & 0xffff)
}

/** Sum of the IPv6 pseudo-header (RFC 8200 §8.1): 16-byte addresses at srcOff/dstOff, 32-bit length, next header. */
export function pseudoHeaderSum6(buf: Uint8Array, srcOff: number, dstOff: number, proto: number, l4len: number): number {
  let sum = proto + (l4len >>> 16) + (l4len & 0xffff)
  for (let i = 0; i < 16; i += 2) {
    sum += ((buf[srcOff + i]! << 8) | buf[srcOff + i + 1]!) + ((buf[dstOff + i]! << 8) | buf[dstOff + i + 1]!)
  }
  return sum
}

/** RFC 1624 eqn. 3: a stored (complemented) checksum after one 16-bit word changed from old16 to new16. */
export function csumUpdate16(csum: number, old16: number, new16: number): number {
  let s = (~csum & 0xffff) + (~old16 & 0xffff) + (new16 & 0xffff)
  s = (s & 0xffff) + (s >>> 16)
  s = (s & 0xffff) + (s >>> 16)
  return ~s & 0xffff
}

/** RFC 1624 eqn. 3 for a 32-bit field (an IPv4 address): both halves in one step. */
export function csumUpdate32(csum: number, old32: number, new32: number): number {
  let s = (~csum & 0xffff) + (~old32 >>> 16) + (~old32 & 0xffff) + (new32 >>> 16) + (new32 & 0xffff)
  s = (s & 0xffff) + (s >>> 16)
  s = (s & 0xffff) + (s >>> 16)
  return ~s & 0xffff
}

/**
 * RFC 1624 eqn. 3 with a precomputed difference: `delta` is the unfolded sum of ~old words and new words
 * (see `diff16`/`diff32`), so several field changes cost one fold. Works for complemented checksums.
 */
export function csumApply(csum: number, delta: number): number {
  return ~fold((~csum & 0xffff) + delta) & 0xffff
}

/** `csumApply` for a partial (uncomplemented) sum. */
export function partialApply(sum: number, delta: number): number {
  return fold((sum & 0xffff) + delta)
}

/** Difference term of a 16-bit change, for csumApply/partialApply. */
export function diff16(old16: number, new16: number): number {
  return (~old16 & 0xffff) + (new16 & 0xffff)
}

/** Difference term of a 32-bit change, for csumApply/partialApply. */
export function diff32(old32: number, new32: number): number {
  return (~old32 >>> 16) + (~old32 & 0xffff) + (new32 >>> 16) + (new32 & 0xffff)
}

/** What goes in a UDP checksum field for a computed checksum: 0 means "no checksum", so a true 0 travels as 0xffff. */
export function udpFinish(csum: number): number {
  return csum === 0 ? 0xffff : csum
}

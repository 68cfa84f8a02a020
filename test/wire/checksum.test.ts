// Checksum arithmetic against published examples (RFC 1071, RFC 1624, a textbook IPv4 header) and a naive reference.
import t from 'tap'
import {
  checksum,
  csumApply,
  csumUpdate16,
  csumUpdate32,
  diff16,
  diff32,
  fold,
  partialApply,
  pseudoHeaderSum4,
  pseudoHeaderSum6,
  sum16,
  udpFinish,
} from '../../src/wire/checksum'
import { mulberry32 } from '../helpers/seed'

/** Naive RFC 1071 checksum over a byte list, written independently of src/wire. */
function refChecksum(bytes: ArrayLike<number>, extraWords: readonly number[] = []): number {
  let s = 0
  for (let i = 0; i < bytes.length; i += 2) s += bytes[i]! * 256 + (i + 1 < bytes.length ? bytes[i + 1]! : 0)
  for (const w of extraWords) s += w
  while (s > 0xffff) s = (s % 65536) + Math.floor(s / 65536)
  return 0xffff - s
}

t.test('RFC 1071 §3 example: sum of 00 01 f2 03 f4 f5 f6 f7 is 0x2ddf0, folded 0xddf2', async t => {
  const b = Buffer.from('0001f203f4f5f6f7', 'hex')
  t.equal(sum16(b, 0, 8), 0x2ddf0)
  t.equal(fold(0x2ddf0), 0xddf2)
  t.equal(checksum(b, 0, 8), 0x220d)
  t.equal(sum16(b, 0, 8, 5), 0x2ddf5, 'initial is added')
})

t.test('odd length pads the trailing byte with zero, at any offset', async t => {
  const b = Buffer.from('ff0102030405', 'hex')
  t.equal(sum16(b, 1, 3), 0x0102 + 0x0300)
  t.equal(sum16(b, 1, 1), 0x0100)
  t.equal(sum16(b, 1, 0), 0)
  t.equal(checksum(b, 1, 5), refChecksum([1, 2, 3, 4, 5]))
})

t.test('the classic IPv4 header example checksums to 0xb861 and verifies to 0', async t => {
  // 192.168.0.1 -> 192.168.0.199 UDP, from the Wikipedia "IPv4 header checksum" article.
  const h = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex')
  t.equal(checksum(h, 0, 20), 0xb861)
  h.writeUInt16BE(0xb861, 10)
  t.equal(checksum(h, 0, 20), 0)
})

t.test('fold handles sums above 2^32 and never returns more than 16 bits', async t => {
  t.equal(fold(0), 0)
  t.equal(fold(0xffff), 0xffff)
  t.equal(fold(0x10000), 1)
  t.equal(fold(0x1fffe), 0xffff)
  t.equal(fold(0xffffffff), 0xffff)
  t.equal(fold(0x100000000), 1)
  // 2^48 + 5 = 1 * 2^48 + 5: words are 1, 0, 0, 5 -> 6
  t.equal(fold(2 ** 48 + 5), 6)
  t.equal(fold(Number.MAX_SAFE_INTEGER), fold(0x1f + 0xffff * 3))
})

t.test('large buffers (GSO-sized, 256 KiB) sum like the reference', async t => {
  const rnd = mulberry32(7)
  const b = Buffer.alloc(262147)
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256)
  t.equal(checksum(b, 1, b.length - 1), refChecksum(b.subarray(1)))
  const allOnes = Buffer.alloc(200000, 0xff)
  t.equal(sum16(allOnes, 0, allOnes.length), 100000 * 0xffff)
  t.equal(checksum(allOnes, 0, allOnes.length), 0)
})

t.test('pseudo-header sums match a hand-written word list', async t => {
  const src = 0x0a000001 // 10.0.0.1
  const dst = 0xc0a80102 // 192.168.1.2
  t.equal(pseudoHeaderSum4(src, dst, 6, 40), 0x0a00 + 0x0001 + 0xc0a8 + 0x0102 + 6 + 40)
  t.equal(pseudoHeaderSum4(0xffffffff, 0xffffffff, 17, 0xffff), 0xffff * 5 + 17)
  const a = Buffer.from('20010db8000000000000000000000001' + 'fe800000000000000000000000000002', 'hex')
  t.equal(pseudoHeaderSum6(a, 0, 16, 58, 70000), 0x2001 + 0x0db8 + 1 + 0xfe80 + 2 + 58 + 1 + (70000 - 65536))
})

t.test('RFC 1624 §4 example: HC 0xdd2f, m 0x5555 -> 0x3285 gives 0x0000 (eqn. 3), not 0xffff', async t => {
  t.equal(csumUpdate16(0xdd2f, 0x5555, 0x3285), 0x0000)
})

t.test('incremental updates equal a full recompute on random data (exact bits)', async t => {
  const seed = 0xc0ffee
  const rnd = mulberry32(seed)
  const bad: string[] = []
  for (let n = 0; n < 20000; n++) {
    const len = 4 + 2 * Math.floor(rnd() * 40)
    const b = Buffer.alloc(len)
    for (let i = 0; i < len; i++) b[i] = Math.floor(rnd() * 256)
    // Some all-ones / all-zero words to reach the 0x0000 / 0xffff corners.
    if (rnd() < 0.2) b.fill(rnd() < 0.5 ? 0xff : 0, 0, len - 2)
    b[len - 1]! |= 1 // data never sums to zero, as with a pseudo-header (protocol != 0)
    const before = checksum(b, 0, len)
    const at = 2 * Math.floor(rnd() * ((len - 2) / 2))
    const old16 = b.readUInt16BE(at)
    const new16 = rnd() < 0.1 ? (rnd() < 0.5 ? 0 : 0xffff) : Math.floor(rnd() * 65536)
    b.writeUInt16BE(new16, at)
    const want16 = refChecksum(b)
    const got16 = csumUpdate16(before, old16, new16)
    if (got16 !== want16) bad.push(`16: len ${len} at ${at} ${old16}->${new16}: ${got16} != ${want16}`)
    if (csumApply(before, diff16(old16, new16)) !== got16) bad.push('csumApply(diff16) != csumUpdate16')
    if (len >= 6) {
      const at32 = 2 * Math.floor(rnd() * ((len - 4) / 2))
      const before32 = checksum(b, 0, len)
      const old32 = b.readUInt32BE(at32)
      const new32 = Math.floor(rnd() * 2 ** 32)
      b.writeUInt32BE(new32, at32)
      const want32 = refChecksum(b)
      const got32 = csumUpdate32(before32, old32, new32)
      if (got32 !== want32) bad.push(`32: len ${len} at ${at32}: ${got32} != ${want32}`)
      if (csumApply(before32, diff32(old32, new32)) !== got32) bad.push('csumApply(diff32) != csumUpdate32')
    }
  }
  t.same(bad.slice(0, 5), [], `seed ${seed}`)
})

t.test('partial (uncomplemented) sums: update then complete equals a full checksum', async t => {
  const rnd = mulberry32(42)
  const bad: string[] = []
  for (let n = 0; n < 20000; n++) {
    const src = Math.floor(rnd() * 2 ** 32)
    const dst = Math.floor(rnd() * 2 ** 32)
    const newSrc = Math.floor(rnd() * 2 ** 32)
    const len = 8 + Math.floor(rnd() * 60)
    const seg = Buffer.alloc(len)
    for (let i = 0; i < len; i++) seg[i] = Math.floor(rnd() * 256)
    // The kernel's CHECKSUM_PARTIAL field: the folded pseudo-header sum, not inverted.
    const partial = fold(pseudoHeaderSum4(src, dst, 6, len))
    seg.writeUInt16BE(partialApply(partial, diff32(src, newSrc)), 6)
    const completed = checksum(seg, 0, len)
    seg.writeUInt16BE(0, 6)
    const want = refChecksum(seg, [newSrc >>> 16, newSrc & 0xffff, dst >>> 16, dst & 0xffff, 6, len])
    if (completed !== want) bad.push(`${n}: ${completed} != ${want}`)
    const p16 = partialApply(partial, diff16(src >>> 16, newSrc >>> 16))
    if (partialApply(p16, diff16(src & 0xffff, newSrc & 0xffff)) !== partialApply(partial, diff32(src, newSrc))) bad.push('16+16 != 32')
  }
  t.same(bad.slice(0, 5), [])
})

t.test('UDP zero rule', async t => {
  t.equal(udpFinish(0), 0xffff)
  t.equal(udpFinish(0x1234), 0x1234)
  // A checksum that becomes 0 must travel as 0xffff: 0x0001 with word 0 -> 1 is ~(0xfffe + 0xffff + 1) = 0.
  t.equal(csumUpdate16(0x0001, 0, 1), 0)
  t.equal(udpFinish(csumUpdate16(0x0001, 0, 1)), 0xffff)
})

// Packets tundra originates, checked field by field and against what the Linux kernel sent for the same input
// (fixtures/loopback.json).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildIcmp4Error, buildIcmp6Error, icmp4EchoToReply, icmp6EchoToReply, icmpErrorAllowed } from '../../src/wire/build'
import { PacketInfo, parsePacket } from '../../src/wire/packet'
import { PASS } from '../../src/wire/drop'
import { parseIpv6 } from '../../src/wire/ipv6'

const FX = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'loopback.json'), 'utf8')) as Record<string, { hex: string }>
function fx(name: string): Buffer {
  const f = FX[name]
  if (!f) throw new Error(`no fixture ${name}`)
  return Buffer.from(f.hex, 'hex')
}
const LOOP4 = 0x7f000001
const info = new PacketInfo()

/** Independent RFC 1071 checksum; 0 over a region whose stored checksum is right. */
function refChecksum(b: Uint8Array, off: number, len: number, words: readonly number[] = []): number {
  let s = 0
  for (let i = 0; i < len; i += 2) s += b[off + i]! * 256 + (i + 1 < len ? b[off + i + 1]! : 0)
  for (const w of words) s += w
  while (s > 0xffff) s = (s % 65536) + Math.floor(s / 65536)
  return 0xffff - s
}
function pseudo6(b: Buffer, off: number, len: number): number[] {
  const w: number[] = []
  for (let i = 8; i < 40; i += 2) w.push(b.readUInt16BE(off + i))
  return [...w, len >>> 16, len & 0xffff, 58]
}

t.test('ICMPv4 port unreachable: RFC 792 quote, valid checksums, readable fields', async t => {
  const orig = fx('udp4_partial')
  const out = Buffer.alloc(100, 0xee)
  const n = buildIcmp4Error(out, 4, orig, 0, orig.length, 0x0a000001, 3, 3)
  t.equal(n, 20 + 8 + 20 + 8)
  const p = out.subarray(4, 4 + n)
  t.equal(p[0], 0x45)
  t.equal(p[1], 0xc0, 'TOS: internetwork control, as the kernel sends errors')
  t.equal(p.readUInt16BE(2), n)
  t.equal(p.readUInt16BE(6), 0x4000, 'DF, offset 0')
  t.equal(p[8], 64)
  t.equal(p[9], 1)
  t.equal(p.readUInt32BE(12), 0x0a000001)
  t.equal(p.readUInt32BE(16), LOOP4, 'to the offender')
  t.equal(refChecksum(p, 0, 20), 0, 'IPv4 header checksum verifies')
  t.equal(refChecksum(p, 20, n - 20), 0, 'ICMP checksum verifies')
  t.equal(p[20], 3)
  t.equal(p[21], 3)
  t.equal(p.readUInt32BE(24), 0)
  t.same(p.subarray(28), orig.subarray(0, 28), 'quote: header + first 8 bytes')
  t.equal(out[3], 0xee, 'nothing written before outOff')
  t.equal(out[4 + n], 0xee, 'nothing written after the packet')
  t.equal(parsePacket(p, 0, n, info), PASS)
  t.match({ ...info }, { icmpType: 3, icmpCode: 3, innerL3Off: 28, innerL4Proto: 17, innerSrcPort: 40420, innerDstPort: 9 })
})

t.test('ICMPv4 error with a full quote is the kernel packet except ID and flags', async t => {
  const orig = fx('udp4_partial')
  const kernel = fx('icmp4_port_unreachable')
  const out = Buffer.alloc(kernel.length)
  t.equal(buildIcmp4Error(out, 0, orig, 0, orig.length, LOOP4, 3, 3, 0, 64, 548), kernel.length)
  t.same(out.subarray(0, 4), kernel.subarray(0, 4))
  t.same(out.subarray(8, 10), kernel.subarray(8, 10))
  t.same(out.subarray(12), kernel.subarray(12), 'addresses and the whole ICMP message, checksum 0x1d0f included')
  t.equal(refChecksum(out, 0, 20), 0)
})

t.test('ICMPv4 quote limits and the MTU of Fragmentation Needed', async t => {
  const big = fx('icmp4_frag_first') // 1276 bytes
  const out = Buffer.alloc(1500)
  t.equal(buildIcmp4Error(out, 0, big, 0, big.length, LOOP4, 3, 4, 1280, 64, 10000), 576, 'RFC 1812: at most 576 bytes')
  t.equal(out.readUInt16BE(26), 1280, 'next-hop MTU in the low 16 bits of the rest word')
  t.equal(refChecksum(out, 20, 556), 0)
  const rr = fx('icmp4_echo_request_rr')
  t.equal(buildIcmp4Error(out, 0, rr, 0, rr.length, LOOP4, 11, 0), 28 + 60 + 8, 'the quote keeps IPv4 options')
  t.equal(buildIcmp4Error(out, 0, rr, 0, 30, LOOP4, 11, 0), 28 + 30, 'never quotes past origLen')
  t.equal(buildIcmp4Error(out, 1450, big, 0, big.length, LOOP4, 3, 4), 0, 'no room: 0 and nothing written')
  t.equal(buildIcmp4Error(Buffer.alloc(55), 0, big, 0, big.length, LOOP4, 3, 4), 0)
})

t.test('ICMPv4 error built over the offending packet itself (same buffer, overlapping)', async t => {
  const orig = fx('tcp4_syn_partial')
  const want = Buffer.alloc(100)
  const n = buildIcmp4Error(want, 0, orig, 0, orig.length, 0x0a000001, 3, 13)
  for (const shift of [-10, 0, 1, 10, 28]) {
    const buf = Buffer.alloc(200)
    orig.copy(buf, 50)
    t.equal(buildIcmp4Error(buf, 50 + shift, buf, 50, orig.length, 0x0a000001, 3, 13), n)
    t.same(buf.subarray(50 + shift, 50 + shift + n), want.subarray(0, n), `output at shift ${shift}`)
  }
})

t.test('ICMPv6 port unreachable matches the kernel byte for byte (flow label aside)', async t => {
  const orig = fx('udp6_partial')
  const kernel = fx('icmp6_port_unreachable')
  const src = Buffer.alloc(16)
  t.equal(parseIpv6('::1', src, 0), 16)
  const out = Buffer.alloc(200)
  const n = buildIcmp6Error(out, 3, orig, 0, orig.length, src, 0, 1, 4)
  t.equal(n, kernel.length)
  const p = out.subarray(3, 3 + n)
  t.equal(p.readUInt32BE(0), 0x60000000)
  t.same(p.subarray(4), kernel.subarray(4), 'payload length, next header, hop limit, addresses, ICMPv6 with checksum 0x0716')
  t.equal(refChecksum(p, 40, n - 40, pseudo6(p, 0, n - 40)), 0)
})

t.test('ICMPv6 errors stay within 1280 bytes and carry the MTU', async t => {
  const big = fx('icmp6_frag_first') // 1280 bytes already
  const out = Buffer.alloc(2000)
  const src = Buffer.alloc(16)
  parseIpv6('fd00::1', src, 0)
  const n = buildIcmp6Error(out, 0, big, 0, big.length, src, 0, 2, 0, 1280)
  t.equal(n, 1280)
  t.equal(out.readUInt16BE(4), 1240)
  t.equal(out.readUInt32BE(44), 1280, 'Packet Too Big MTU')
  t.same(out.subarray(48, 1280), big.subarray(0, 1232))
  t.same(out.subarray(24, 40), big.subarray(8, 24), 'to the offender')
  t.same(out.subarray(8, 24), src)
  t.equal(refChecksum(out, 40, n - 40, pseudo6(out, 0, n - 40)), 0)
  t.equal(parsePacket(out, 0, n, info), PASS)
  t.match({ ...info }, { icmpType: 2, innerL3Off: 48, innerL4Proto: 58, innerSrcPort: 9751 })
  t.equal(buildIcmp6Error(Buffer.alloc(1279), 0, big, 0, big.length, src, 0, 2, 0, 1280), 0)
})

t.test('ICMPv6 error in place, with the source address taken from the offending packet', async t => {
  const orig = fx('tcp6_syn_partial')
  const want = Buffer.alloc(200)
  const n = buildIcmp6Error(want, 0, orig, 0, orig.length, orig, 24, 1, 4)
  t.same(want.subarray(8, 24), orig.subarray(24, 40))
  for (const shift of [-20, 0, 8, 48]) {
    const buf = Buffer.alloc(300)
    orig.copy(buf, 100)
    t.equal(buildIcmp6Error(buf, 100 + shift, buf, 100, orig.length, buf, 124, 1, 4), n)
    t.same(buf.subarray(100 + shift, 100 + shift + n), want.subarray(0, n), `shift ${shift}`)
  }
})

t.test('icmpErrorAllowed: RFC 1812 / RFC 4443 rules', async t => {
  const udp = fx('udp4_partial')
  udp.writeUInt32BE(0x0a000001, 12) // RFC 1812 rules out loopback sources, as below
  parsePacket(udp, 0, udp.length, info)
  t.ok(icmpErrorAllowed(udp, info, 3, 3))
  const e = fx('icmp4_port_unreachable')
  parsePacket(e, 0, e.length, info)
  t.notOk(icmpErrorAllowed(e, info, 3, 3), 'not about an ICMP error')
  const echo = fx('icmp4_echo_request')
  echo.writeUInt32BE(0x0a000001, 12)
  parsePacket(echo, 0, echo.length, info)
  t.ok(icmpErrorAllowed(echo, info, 11, 0), 'about an echo request is fine')
  const f2 = fx('icmp4_frag_second')
  parsePacket(f2, 0, f2.length, info)
  t.notOk(icmpErrorAllowed(f2, info, 11, 1), 'not about a non-first fragment')
  for (const [src, dst, ok] of [
    [0, LOOP4, false],
    [0xe0000001, LOOP4, false],
    [LOOP4, 0xffffffff, false],
    [LOOP4, 0xe00000fb, false],
    [0xffffffff, LOOP4, false],
    [0xf0000001, LOOP4, false],
    [LOOP4, 0x0a000002, false],
    [0x0a000001, 0x0a000002, true],
    [0x0a000001, LOOP4, true],
  ] as const) {
    const p = Buffer.from(udp)
    p.writeUInt32BE(src, 12)
    p.writeUInt32BE(dst, 16)
    parsePacket(p, 0, p.length, info)
    t.equal(icmpErrorAllowed(p, info, 3, 3), ok, `${src.toString(16)} -> ${dst.toString(16)}`)
  }
  const u6 = fx('udp6_partial')
  parsePacket(u6, 0, u6.length, info)
  t.ok(icmpErrorAllowed(u6, info, 1, 4))
  const m6 = Buffer.from(u6)
  parseIpv6('ff02::1', m6, 24)
  parsePacket(m6, 0, m6.length, info)
  t.notOk(icmpErrorAllowed(m6, info, 1, 4), 'not about multicast...')
  t.ok(icmpErrorAllowed(m6, info, 2, 0), '...except Packet Too Big')
  t.ok(icmpErrorAllowed(m6, info, 4, 2), '...and Parameter Problem code 2')
  const z6 = Buffer.from(u6)
  z6.fill(0, 8, 24)
  parsePacket(z6, 0, z6.length, info)
  t.notOk(icmpErrorAllowed(z6, info, 1, 4), 'not to the unspecified address')
  const e6 = fx('icmp6_port_unreachable')
  parsePacket(e6, 0, e6.length, info)
  t.notOk(icmpErrorAllowed(e6, info, 1, 4))
  const echo6 = fx('icmp6_echo_request')
  parsePacket(echo6, 0, echo6.length, info)
  t.ok(icmpErrorAllowed(echo6, info, 3, 0))
})

t.test('echo replies in place match the kernel replies', async t => {
  const req = fx('icmp4_echo_request')
  const kernel = fx('icmp4_echo_reply')
  t.equal(icmp4EchoToReply(req, 0), 84)
  t.same(req.subarray(20), kernel.subarray(20), 'ICMP message identical, checksum 0x2411 by incremental update')
  t.same(req.subarray(12, 20), kernel.subarray(12, 20))
  t.equal(req[8], 64)
  t.equal(refChecksum(req, 0, 20), 0)

  // Swapping matters: use distinct addresses.
  const q = fx('icmp4_echo_request')
  q.writeUInt32BE(0x0a000001, 12)
  q.writeUInt32BE(0x0a000002, 16)
  icmp4EchoToReply(q, 0)
  t.equal(q.readUInt32BE(12), 0x0a000002)
  t.equal(q.readUInt32BE(16), 0x0a000001)
  t.equal(refChecksum(q, 0, 20), 0, 'header checksum redone')

  const rr = fx('icmp4_echo_request_rr')
  const rrKernel = fx('icmp4_echo_reply_rr')
  t.equal(icmp4EchoToReply(rr, 0), 84, 'the Record Route option is dropped')
  t.equal(rr[0], 0x45)
  t.same(rr.subarray(20, 84), rrKernel.subarray(60, 124), 'ICMP message moved up, identical to the kernel reply')
  t.equal(refChecksum(rr, 0, 20), 0)
  t.equal(parsePacket(rr, 0, 84, info), PASS)
  t.match({ ...info }, { icmpType: 0, srcPort: 8357, l4Off: 20 })

  const req6 = fx('icmp6_echo_request')
  const kernel6 = fx('icmp6_echo_reply')
  t.equal(icmp6EchoToReply(req6, 0, 40, 64), 104)
  t.same(req6.subarray(4), kernel6.subarray(4), 'everything but the flow label, checksum 0xef74 included')
})

t.test('ICMPv6 echo reply drops extension headers and swaps addresses', async t => {
  const req = fx('icmp6_echo_request')
  // Insert a 16-byte destination options header between the IPv6 header and ICMPv6.
  const dst = Buffer.alloc(16)
  dst[0] = 58
  dst[1] = 1
  const p = Buffer.concat([req.subarray(0, 40), dst, req.subarray(40)])
  p[6] = 60
  p.writeUInt16BE(16 + 64, 4)
  parseIpv6('2001:db8::1', p, 8)
  parseIpv6('2001:db8::2', p, 24)
  // Fix the ICMPv6 checksum for the new addresses with the reference.
  p.writeUInt16BE(0, 58)
  p.writeUInt16BE(refChecksum(p, 56, 64, pseudo6(p, 0, 64)), 58)
  t.equal(parsePacket(p, 0, p.length, info), PASS)
  t.equal(icmp6EchoToReply(p, 0, info.l4Off, info.l4Len), 104)
  t.equal(p[6], 58)
  t.equal(p.readUInt16BE(4), 64)
  const want = Buffer.alloc(16)
  parseIpv6('2001:db8::2', want, 0)
  t.same(p.subarray(8, 24), want)
  t.equal(p[40], 129)
  t.equal(refChecksum(p, 40, 64, pseudo6(p, 0, 64)), 0)
  t.equal(parsePacket(p, 0, 104, info), PASS)
  t.match({ ...info }, { icmpType: 129, l4Off: 40, srcPort: 8218 })
})

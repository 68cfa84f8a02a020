// NAT helpers on captured packets (fixtures/loopback.json): partial checksums, zero UDP checksums, ICMP ids, SCTP,
// fragments and the packets quoted inside ICMP errors. random.test.ts covers the same helpers on random packets.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { DST, SRC, natIcmp4Inner, natIcmp6Inner, natIpv4, natIpv6 } from '../../src/wire/l4rewrite'
import { PacketInfo, parsePacket } from '../../src/wire/packet'
import { PASS } from '../../src/wire/drop'
import { buildIcmp4Error, buildIcmp6Error } from '../../src/wire/build'
import { parseIpv6 } from '../../src/wire/ipv6'
import { fillSctpChecksum, sctpChecksumOk } from '../../src/wire/sctp'

const FX = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'loopback.json'), 'utf8')) as Record<string, { hex: string }>
function fx(name: string): Buffer {
  const f = FX[name]
  if (!f) throw new Error(`no fixture ${name}`)
  return Buffer.from(f.hex, 'hex')
}
const info = new PacketInfo()
const VIP = 0x0a60000a // 10.96.0.10
const POD = 0x0af40105 // 10.244.1.5

function refSum(b: Uint8Array, off: number, len: number, words: readonly number[] = []): number {
  let s = 0
  for (let i = 0; i < len; i += 2) s += b[off + i]! * 256 + (i + 1 < len ? b[off + i + 1]! : 0)
  for (const w of words) s += w
  while (s > 0xffff) s = (s % 65536) + Math.floor(s / 65536)
  return s
}
function refChecksum(b: Uint8Array, off: number, len: number, words: readonly number[] = []): number {
  return 0xffff - refSum(b, off, len, words)
}
function pseudo4(b: Buffer, ipOff: number, proto: number, len: number): number[] {
  const s = b.readUInt32BE(ipOff + 12)
  const d = b.readUInt32BE(ipOff + 16)
  return [s >>> 16, s & 0xffff, d >>> 16, d & 0xffff, proto, len]
}
function pseudo6(b: Buffer, ipOff: number, proto: number, len: number): number[] {
  const w: number[] = []
  for (let i = 8; i < 40; i += 2) w.push(b.readUInt16BE(ipOff + i))
  return [...w, len >>> 16, len & 0xffff, proto]
}

t.test('partial (NEEDS_CSUM) TCP SYN: DNAT, then completing gives the full checksum', async t => {
  const p = fx('tcp4_syn_partial')
  natIpv4(p, 0, 20, 6, DST, VIP, 8080, true)
  t.equal(p.readUInt32BE(16), VIP)
  t.equal(p.readUInt16BE(22), 8080)
  t.equal(refChecksum(p, 0, 20), 0, 'IPv4 header checksum still verifies')
  t.equal(p.readUInt16BE(36), refSum(p, 0, 0, pseudo4(p, 0, 6, 40)), 'the field is the new pseudo-header sum: the port change left it alone')
  const completed = refChecksum(p, 20, 40)
  p.writeUInt16BE(0, 36)
  t.equal(completed, refChecksum(p, 20, 40, pseudo4(p, 0, 6, 40)))
})

t.test('partial TCP over IPv6 and partial UDP', async t => {
  const p = fx('tcp6_syn_partial')
  const vip6 = Buffer.alloc(16)
  parseIpv6('fd00:96::a', vip6, 0)
  natIpv6(p, 0, 40, 6, DST, vip6, 0, 8443, true)
  t.same(p.subarray(24, 40), vip6)
  const completed = refChecksum(p, 40, 40)
  p.writeUInt16BE(0, 56)
  t.equal(completed, refChecksum(p, 40, 40, pseudo6(p, 0, 6, 40)))

  const u = fx('udp4_partial')
  natIpv4(u, 0, 20, 17, SRC, POD, 5353, true)
  const done = refChecksum(u, 20, 13)
  u.writeUInt16BE(0, 26)
  t.equal(done, refChecksum(u, 20, 13, pseudo4(u, 0, 17, 13)))
})

t.test('full checksums: SNAT of the kernel RST verifies; zero UDP checksum stays zero', async t => {
  const p = fx('tcp4_rst')
  natIpv4(p, 0, 20, 6, SRC, VIP, 80, false)
  t.equal(refChecksum(p, 0, 20), 0)
  t.equal(refChecksum(p, 20, 20, pseudo4(p, 0, 6, 20)), 0)
  const u = fx('udp4_partial')
  u.writeUInt16BE(0, 26)
  natIpv4(u, 0, 20, 17, DST, VIP, 53, false)
  t.equal(u.readUInt16BE(26), 0)
  t.equal(u.readUInt16BE(22), 53)
  t.equal(refChecksum(u, 0, 20), 0)
  natIpv4(u, 0, 20, 17, DST, VIP, -1, false)
  t.equal(u.readUInt16BE(22), 53, 'port -1 keeps the port')
})

t.test('ICMP echo ids, non-echo ICMP and non-first fragments', async t => {
  const p = fx('icmp4_echo_request')
  natIpv4(p, 0, 20, 1, SRC, POD, 31000, false)
  t.equal(p.readUInt16BE(24), 31000)
  t.equal(refChecksum(p, 20, 64), 0, 'ICMP checksum covers the id, not the address')
  t.equal(refChecksum(p, 0, 20), 0)
  natIpv4(p, 0, 20, 1, DST, p.readUInt32BE(16), 31001, false)
  t.equal(p.readUInt16BE(24), 31001, 'either side names the echo id')
  t.equal(refChecksum(p, 20, 64), 0)

  const e = fx('icmp4_port_unreachable')
  const before = Buffer.from(e)
  natIpv4(e, 0, 20, 1, SRC, e.readUInt32BE(12), 1234, false)
  t.same(e, before, 'errors have no id')

  const e6 = fx('icmp6_echo_request')
  natIpv6(
    e6,
    0,
    40,
    58,
    DST,
    (() => {
      const a = Buffer.alloc(16)
      parseIpv6('fd00::7', a, 0)
      return a
    })(),
    0,
    4444,
    false,
  )
  t.equal(e6.readUInt16BE(44), 4444)
  t.equal(refChecksum(e6, 40, 64, pseudo6(e6, 0, 58, 64)), 0, 'ICMPv6 covers the pseudo-header and the id')

  const f = fx('icmp4_frag_second')
  const payload = Buffer.from(f.subarray(20))
  natIpv4(f, 0, -1, 1, DST, VIP, 1, false)
  t.equal(f.readUInt32BE(16), VIP)
  t.equal(refChecksum(f, 0, 20), 0)
  t.same(f.subarray(20), payload, 'no L4 header in a non-first fragment: nothing past the IP header changes')
})

t.test('SCTP: ports recompute the CRC32c, addresses leave it alone', async t => {
  const p = Buffer.alloc(20 + 32)
  p[0] = 0x45
  p.writeUInt16BE(p.length, 2)
  p[8] = 64
  p[9] = 132
  p.writeUInt32BE(POD, 12)
  p.writeUInt32BE(VIP, 16)
  p.writeUInt16BE(5000, 20)
  p.writeUInt16BE(80, 22)
  p.write('0100001411223344000100000001000155667788', 32, 'hex')
  fillSctpChecksum(p, 20, 32)
  t.equal(parsePacket(p, 0, p.length, info), PASS)
  const crc = p.readUInt32LE(28)
  natIpv4(p, 0, 20, 132, DST, POD + 1, -1, false)
  t.equal(p.readUInt32LE(28), crc)
  natIpv4(p, 0, 20, 132, DST, POD + 2, 9090, false)
  t.equal(p.readUInt16BE(22), 9090)
  t.ok(sctpChecksumOk(p, 20, 32))
  t.not(p.readUInt32LE(28), crc)
})

/** Sets every checksum of an IPv4 ICMP error about a UDP datagram that is quoted whole, from scratch. */
function recheck4(e: Buffer): void {
  const ulen = e.readUInt16BE(48 + 4)
  e.writeUInt16BE(0, 48 + 6)
  e.writeUInt16BE(refChecksum(e, 48, ulen, pseudo4(e, 28, 17, ulen)), 48 + 6)
  e.writeUInt16BE(0, 38)
  e.writeUInt16BE(refChecksum(e, 28, 20), 38)
  e.writeUInt16BE(0, 22)
  e.writeUInt16BE(refChecksum(e, 20, e.length - 20), 22)
  e.writeUInt16BE(0, 10)
  e.writeUInt16BE(refChecksum(e, 0, 20), 10)
}

t.test('reverse NAT of an ICMPv4 error quoting a whole UDP datagram equals a from-scratch packet', async t => {
  // Client POD:40420 sent to VIP:9, DNATed to 127.0.0.1:9, which answered port unreachable (the captured packet).
  const e = fx('icmp4_port_unreachable')
  e.writeUInt32BE(POD, 16) // outer destination: the client
  e.writeUInt32BE(POD, 28 + 12) // quoted source: the client
  recheck4(e) // make every checksum, the quoted UDP one included, complete and right
  t.equal(parsePacket(e, 0, e.length, info), PASS)
  t.equal(info.innerL4Off, 48)
  // The client must see the error come from the VIP, about its packet to the VIP.
  natIpv4(e, 0, 20, 1, SRC, VIP, -1, false)
  natIcmp4Inner(e, info.l4Off, info.l4Len, info.innerL3Off, info.innerL4Off, info.innerL4Proto, DST, VIP, 9)
  const want = Buffer.from(e)
  want.writeUInt32BE(VIP, 12)
  want.writeUInt32BE(VIP, 28 + 16)
  recheck4(want)
  t.same(e, want)
  // And a port change inside the quote.
  natIcmp4Inner(e, 20, e.length - 20, 28, 48, 17, DST, VIP, 53)
  want.writeUInt16BE(53, 48 + 2)
  recheck4(want)
  t.same(e, want)
})

t.test('ICMPv4 error quoting 8 bytes of TCP: ports change, the absent TCP checksum is not touched', async t => {
  const rst = fx('tcp4_rst')
  rst.writeUInt32BE(POD, 12)
  rst.writeUInt16BE(0, 10)
  rst.writeUInt16BE(refChecksum(rst, 0, 20), 10)
  const e = Buffer.alloc(56)
  t.equal(buildIcmp4Error(e, 0, rst, 0, rst.length, 0x0a000001, 3, 1), 56)
  natIcmp4Inner(e, 20, 36, 28, 48, 6, SRC, VIP, 80)
  t.equal(e.readUInt32BE(28 + 12), VIP)
  t.equal(e.readUInt16BE(48), 80)
  t.equal(refChecksum(e, 28, 20), 0, 'quoted IP header checksum updated')
  t.equal(refChecksum(e, 20, 36), 0, 'ICMP checksum updated')
  t.equal(refChecksum(e, 0, 20), 0, 'outer header untouched and valid')
})

t.test('ICMPv4 error about an echo request: quoted id and quoted ICMP checksum', async t => {
  const req = fx('icmp4_echo_request')
  const e = Buffer.alloc(200)
  const n = buildIcmp4Error(e, 0, req, 0, req.length, 0x0a000001, 11, 0, 0, 64, 548)
  t.equal(n, 28 + 84)
  natIcmp4Inner(e, 20, n - 20, 28, 48, 1, SRC, POD, 777)
  t.equal(e.readUInt16BE(48 + 4), 777)
  t.equal(refChecksum(e, 48, 64), 0, 'the quoted echo is whole, so its checksum must verify')
  t.equal(refChecksum(e, 28, 20), 0)
  t.equal(refChecksum(e, 20, n - 20), 0)
})

t.test('reverse NAT of an ICMPv6 error', async t => {
  const e = fx('icmp6_port_unreachable')
  // Complete the quoted UDP checksum (captured as a partial sum) and the outer one, from scratch.
  const fix = (b: Buffer): void => {
    b.writeUInt16BE(0, 88 + 6)
    b.writeUInt16BE(refChecksum(b, 88, 14, pseudo6(b, 48, 17, 14)), 88 + 6)
    b.writeUInt16BE(0, 42)
    b.writeUInt16BE(refChecksum(b, 40, b.length - 40, pseudo6(b, 0, 58, b.length - 40)), 42)
  }
  fix(e)
  t.equal(parsePacket(e, 0, e.length, info), PASS)
  const vip6 = Buffer.alloc(16)
  parseIpv6('fd00:96::a', vip6, 0)
  natIpv6(e, 0, 40, 58, SRC, vip6, 0, -1, false)
  natIcmp6Inner(e, info.l4Off, info.l4Len, info.innerL3Off, info.innerL4Off, info.innerL4Proto, DST, vip6, 0, 53)
  const want = Buffer.from(e)
  fix(want)
  t.same(e, want, 'incremental updates equal recomputing both checksums')
  t.same(e.subarray(48 + 24, 48 + 40), vip6)
  t.equal(e.readUInt16BE(88 + 2), 53)
  t.same(e.subarray(8, 24), vip6)

  // An error about a ping: the quoted ICMPv6 checksum covers the quoted pseudo-header.
  const req = fx('icmp6_echo_request')
  const src = Buffer.alloc(16)
  parseIpv6('fd00::1', src, 0)
  const err = Buffer.alloc(300)
  const n = buildIcmp6Error(err, 0, req, 0, req.length, src, 0, 3, 0)
  natIcmp6Inner(err, 40, n - 40, 48, 88, 58, SRC, vip6, 0, 999)
  t.equal(refChecksum(err, 88, 64, pseudo6(err, 48, 58, 64)), 0, 'quoted echo checksum follows the quoted address')
  t.equal(refChecksum(err, 40, n - 40, pseudo6(err, 0, 58, n - 40)), 0)
  t.equal(err.readUInt16BE(88 + 4), 999)
})

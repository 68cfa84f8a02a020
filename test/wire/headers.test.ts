// Checksums, addresses and the IPv6 walk against real packets: fixtures/loopback.json holds tcpdump captures from Linux loopback (see its note).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { isIPv6 } from 'node:net'
import { join } from 'node:path'
import { checksum, fold, pseudoHeaderSum4, pseudoHeaderSum6 } from '../../src/wire/checksum'
import { fillIpv4Checksum, ipv4ChecksumOk, ipv4Ihl, ipv4ToString, ipv4Version, parseIpv4 } from '../../src/wire/ipv4'
import { Ipv6Walk, ipv6ToString, parseIpv6, walkIpv6Headers } from '../../src/wire/ipv6'
import { TCP_ACK, TCP_RST, TCP_SYN, TcpField, fillTcpChecksum4, fillTcpChecksum6, tcpDataOffset } from '../../src/wire/tcp'
import { UdpField, fillUdpChecksum4, fillUdpChecksum6 } from '../../src/wire/udp'
import { ICMP_DEST_UNREACH, ICMP_ECHO_REQUEST, IcmpUnreach, fillIcmpChecksum } from '../../src/wire/icmp'
import { ICMPV6_DEST_UNREACH, ICMPV6_ECHO_REQUEST, fillIcmp6Checksum } from '../../src/wire/icmpv6'
import { crc32c, fillSctpChecksum, sctpChecksumOk } from '../../src/wire/sctp'

const FX = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'loopback.json'), 'utf8')) as Record<string, { hex: string }>
function fx(name: string): Buffer {
  const f = FX[name]
  if (!f) throw new Error(`no fixture ${name}`)
  return Buffer.from(f.hex, 'hex')
}
const LOOP4 = 0x7f000001

t.test('IPv4 header of a ping to 127.0.0.1: version, length, checksum', async t => {
  const p = fx('icmp4_echo_request')
  t.equal(ipv4Version(p, 0), 4)
  t.equal(ipv4Ihl(p, 0), 20)
  t.ok(ipv4ChecksumOk(p, 0))
  p.writeUInt16BE(0, 10)
  t.notOk(ipv4ChecksumOk(p, 0))
  fillIpv4Checksum(p, 0)
  t.equal(p.readUInt16BE(10), 0xd2e9, 'fillIpv4Checksum reproduces the kernel value')
})

t.test('IPv4 options', async t => {
  const rr = fx('icmp4_echo_request_rr')
  t.equal(ipv4Ihl(rr, 0), 60)
  t.ok(ipv4ChecksumOk(rr, 0), 'checksum over all 60 header bytes')
})

t.test('ipv4ToString / parseIpv4', async t => {
  t.equal(ipv4ToString(0x0a60000a), '10.96.0.10')
  t.equal(ipv4ToString(0xffffffff), '255.255.255.255')
  t.equal(ipv4ToString(0), '0.0.0.0')
  t.equal(parseIpv4('10.96.0.10'), 0x0a60000a)
  t.equal(parseIpv4('255.255.255.255'), 0xffffffff)
  t.equal(parseIpv4('0.0.0.0'), 0)
  t.equal(parseIpv4('1.2.3.4'), 0x01020304)
  for (const bad of [
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.1.1.1',
    '1.2.3.04',
    '01.2.3.4',
    ' 1.2.3.4',
    '1.2.3.4 ',
    '1..2.3',
    '1.2.3.',
    '.1.2.3',
    'a.b.c.d',
    '1.2.3.-4',
    '1.2.3.4/32',
    '::1',
    '1e1.1.1.1',
    '1234.1.1.1',
    '999.999.999.999',
  ]) {
    t.equal(parseIpv4(bad), undefined, JSON.stringify(bad))
  }
  t.equal(parseIpv4(undefined as unknown as string), undefined, 'never throws on a non-string')
  let bad = 0
  for (let i = 0; i < 2000; i++) {
    const n = Math.floor(Math.random() * 2 ** 32)
    if (parseIpv4(ipv4ToString(n)) !== n) bad++
  }
  t.equal(bad, 0, 'round trip')
})

t.test('IPv6 addresses of a ping to ::1', async t => {
  const p = fx('icmp6_echo_request')
  t.equal(ipv6ToString(p, 8), '::1')
  t.equal(ipv6ToString(p, 24), '::1')
})

t.test('walkIpv6Headers through real fragment headers', async t => {
  const w = new Ipv6Walk()
  const first = fx('icmp6_frag_first')
  t.equal(walkIpv6Headers(first, 0, first.length, w), 0)
  t.match(w, { proto: 58, l4Off: 48, count: 1, isFragment: 1, fragOffset: 0, moreFragments: 1, fragId: 0x385a11cf, fragHeaderOff: 40 })
  const second = fx('icmp6_frag_second')
  t.equal(walkIpv6Headers(second, 0, second.length, w), 0)
  t.match(w, { proto: 58, l4Off: -1, isFragment: 1, fragOffset: 1232, moreFragments: 0, fragId: 0x385a11cf })
  const plain = fx('tcp6_syn_partial')
  t.equal(walkIpv6Headers(plain, 0, plain.length, w), 0)
  t.match(w, { proto: 6, l4Off: 40, count: 0, isFragment: 0, fragHeaderOff: -1 })
})

t.test('ipv6ToString follows RFC 5952', async t => {
  const cases: [string, string][] = [
    ['2001:db8::1', '2001:db8::1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['2001:0db8:0000:0000:0000:ff00:0042:8329', '2001:db8::ff00:42:8329'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['ff02::1', 'ff02::1'],
    ['fe80:0:0:0:1::', 'fe80::1:0:0:0'],
    ['::ffff:10.0.0.1', '::ffff:10.0.0.1'],
    ['::ffff:a00:1', '::ffff:10.0.0.1'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['0:0:1:0:0:0:0:0', '0:0:1::'],
  ]
  const b = Buffer.alloc(20)
  for (const [input, want] of cases) {
    t.ok(parseIpv6(input, b, 2), `parse ${input}`)
    t.equal(ipv6ToString(b, 2), want, input)
  }
  t.ok(parseIpv6('2001:db8::ff00:42:8329', b, 0))
  t.equal(b.subarray(0, 16).toString('hex'), '20010db8000000000000ff0000428329')
})

t.test('parseIpv6 rejects what inet_pton rejects, and never throws', async t => {
  const b = Buffer.alloc(16, 0xaa)
  for (const bad of [
    '',
    ':',
    ':::',
    '1:2:3:4:5:6:7:8:9',
    '1::2::3',
    '12345::',
    'g::',
    '1:2:3:4:5:6:7',
    '::1%eth0',
    '[::1]',
    '1.2.3.4',
    '::1.2.3',
    '::256.1.1.1',
    '1:2:3:4:5:6:7:1.2.3.4',
    ' ::1',
    '::1 ',
    '::01.2.3.4',
    '02001::',
    '1::2:',
    ':1::2',
    '1:',
    '::1:',
    '::1.2.3.4:5',
    '1:2:3:4:5:6:7:8::',
    '::1:2:3:4:5:6:7:8',
    '::/64',
    'fe80::1/64',
  ]) {
    t.notOk(parseIpv6(bad, b, 0), JSON.stringify(bad))
    t.equal(isIPv6(bad) && !bad.includes('%'), false, `node agrees ${JSON.stringify(bad)} is invalid`)
  }
  t.equal(b.toString('hex'), 'aa'.repeat(16), 'failed parses leave the output alone')
  t.notOk(parseIpv6('::1', b, 1), 'no room at offset 1')
  t.notOk(parseIpv6(null as unknown as string, b, 0))
  t.ok(parseIpv6('1:2:3:4:5:6:7::', b, 0), '"::" standing for one group')
  t.equal(b.toString('hex'), '00010002000300040005000600070000')
})

t.test('random addresses: ipv6ToString agrees with the WHATWG URL serializer and round-trips', async t => {
  const b = Buffer.alloc(16)
  const c = Buffer.alloc(16)
  const bad: string[] = []
  for (let i = 0; i < 5000; i++) {
    for (let g = 0; g < 8; g++) b.writeUInt16BE(Math.random() < 0.4 ? 0 : Math.floor(Math.random() * 65536), 2 * g)
    const mapped = b.readUInt32BE(0) === 0 && b.readUInt32BE(4) === 0 && b.readUInt32BE(8) === 0xffff
    const s = ipv6ToString(b, 0)
    if (!mapped) {
      const url = new URL(`http://[${s}]/`).hostname.slice(1, -1)
      if (url !== s) bad.push(`${s} vs URL ${url}`)
    }
    if (!isIPv6(s)) bad.push(`node rejects ${s}`)
    if (!parseIpv6(s, c, 0) || !c.equals(b)) bad.push(`round trip ${s}`)
    const long = Array.from({ length: 8 }, (_, g) =>
      b
        .readUInt16BE(2 * g)
        .toString(16)
        .padStart(4, '0'),
    ).join(':')
    if (!parseIpv6(long.toUpperCase(), c, 0) || !c.equals(b)) bad.push(`full form ${long}`)
  }
  t.same(bad.slice(0, 5), [])
})

const tcpCsum = (b: Buffer, l4: number): number => b.readUInt16BE(l4 + TcpField.CHECKSUM)
const udpCsum = (b: Buffer, l4: number): number => b.readUInt16BE(l4 + UdpField.CHECKSUM)

t.test('TCP checksums of a real SYN with options, and of the kernel RST', async t => {
  const p = fx('tcp4_syn_partial')
  const l4 = ipv4Ihl(p, 0)
  t.equal(tcpDataOffset(p, l4), 40)
  t.equal(p[l4 + TcpField.FLAGS], TCP_SYN)
  t.equal(tcpCsum(p, l4), 0xfe30)
  t.equal(tcpCsum(p, l4), fold(pseudoHeaderSum4(LOOP4, LOOP4, 6, 40)), 'the partial field is the folded pseudo-header sum')
  fillTcpChecksum4(p, l4, 40, LOOP4, LOOP4)
  t.equal(tcpCsum(p, l4), 0x0ce5, 'full checksum = what tcpdump computed')
  const rst = fx('tcp4_rst')
  t.equal(rst[20 + TcpField.FLAGS], TCP_RST | TCP_ACK)
  t.equal(tcpCsum(rst, 20), 0x2d1e)
  fillTcpChecksum4(rst, 20, 20, LOOP4, LOOP4)
  t.equal(tcpCsum(rst, 20), 0x2d1e, 'recomputing a kernel-made checksum changes nothing')
  const p6 = fx('tcp6_syn_partial')
  t.equal(tcpCsum(p6, 40), fold(pseudoHeaderSum6(p6, 8, 24, 6, 40)))
  fillTcpChecksum6(p6, 40, 40, 8, 24)
  t.equal(tcpCsum(p6, 40), 0xd718)
  const r6 = fx('tcp6_rst_partial')
  fillTcpChecksum6(r6, 40, 20, 8, 24)
  t.equal(tcpCsum(r6, 40), 0xfe0d)
})

t.test('UDP checksums', async t => {
  const p = fx('udp4_partial')
  t.equal(udpCsum(p, 20), 0xfe20)
  fillUdpChecksum4(p, 20, 13, LOOP4, LOOP4)
  t.equal(udpCsum(p, 20), 0x2012)
  const p6 = fx('udp6_partial')
  fillUdpChecksum6(p6, 40, 14, 8, 24)
  t.equal(udpCsum(p6, 40), 0x1c92)
  // A datagram whose checksum computes to 0 is sent as 0xffff: make the data sum cancel the rest exactly.
  const z = Buffer.alloc(10)
  z.writeUInt16BE(1000, 0)
  z.writeUInt16BE(2000, 2)
  z.writeUInt16BE(10, 4)
  const rest = checksum(z, 0, 10, pseudoHeaderSum4(LOOP4, LOOP4, 17, 10))
  z.writeUInt16BE(rest, 8) // data word that makes the total sum 0xffff, so the checksum is 0
  fillUdpChecksum4(z, 0, 10, LOOP4, LOOP4)
  t.equal(udpCsum(z, 0), 0xffff)
})

t.test('ICMP checksums match the kernel', async t => {
  const p = fx('icmp4_echo_request')
  t.equal(p[20], ICMP_ECHO_REQUEST)
  t.equal(p.readUInt16BE(22), 0x1c11)
  fillIcmpChecksum(p, 20, 64)
  t.equal(p.readUInt16BE(22), 0x1c11)
  const e = fx('icmp4_port_unreachable')
  t.same([e[20], e[21]], [ICMP_DEST_UNREACH, IcmpUnreach.PORT])
  t.equal(checksum(e, 20, e.readUInt16BE(2) - 20), 0, 'kernel ICMP checksum verifies')
  const p6 = fx('icmp6_echo_request')
  t.equal(p6[40], ICMPV6_ECHO_REQUEST)
  t.equal(p6.readUInt16BE(42), 0xf074)
  fillIcmp6Checksum(p6, 40, 64, 8, 24)
  t.equal(p6.readUInt16BE(42), 0xf074, 'checksum with the IPv6 pseudo-header matches the kernel')
  t.equal(fx('icmp6_port_unreachable')[40], ICMPV6_DEST_UNREACH)
})

t.test('SCTP CRC32c against published vectors and a crafted INIT', async t => {
  t.equal(crc32c(Buffer.from('123456789'), 0, 9), 0xe3069283, 'the CRC-32C check value')
  t.equal(crc32c(Buffer.alloc(32), 0, 32), 0x8a9136aa, 'RFC 3720 B.4: 32 bytes of zeros')
  t.equal(crc32c(Buffer.alloc(32, 0xff), 0, 32), 0x62a8ab43, 'RFC 3720 B.4: 32 bytes of ones')
  const inc = Buffer.from(Array.from({ length: 32 }, (_, i) => i))
  t.equal(crc32c(inc, 0, 32), 0x46dd794e, 'RFC 3720 B.4: incrementing bytes')
  // Hand-made SCTP INIT (ports 5000 -> 80, tag 0, one 20-byte INIT chunk).
  const p = Buffer.from('138800500000000000000000' + '01000014' + '11223344' + '0001000000010001' + '55667788', 'hex')
  fillSctpChecksum(p, 0, p.length)
  const z = Buffer.from(p)
  z.fill(0, 8, 12)
  t.equal(p.readUInt32LE(8), crc32c(z, 0, z.length), 'the CRC is taken with the field zeroed, stored least significant byte first')
  t.ok(sctpChecksumOk(p, 0, p.length))
  p[20]! ^= 1
  t.notOk(sctpChecksumOk(p, 0, p.length))
})

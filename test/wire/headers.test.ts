// Header accessors read real packets: fixtures/loopback.json holds tcpdump captures from Linux loopback (see its note).
import t from 'tap'
import { readFileSync } from 'node:fs'
import { isIPv6 } from 'node:net'
import { join } from 'node:path'
import { checksum, fold, pseudoHeaderSum4, pseudoHeaderSum6 } from '../../src/wire/checksum'
import {
  decrementIpv4Ttl,
  fillIpv4Checksum,
  ipv4Checksum,
  ipv4ChecksumOk,
  ipv4DontFragment,
  ipv4Dst,
  ipv4FragmentOffset,
  ipv4Id,
  ipv4Ihl,
  ipv4MoreFragments,
  ipv4Protocol,
  ipv4Src,
  ipv4ToString,
  ipv4TotalLength,
  ipv4Ttl,
  ipv4Version,
  parseIpv4,
  rewriteIpv4Dst,
  rewriteIpv4Src,
  setIpv4Dst,
  setIpv4Src,
  setIpv4Ttl,
} from '../../src/wire/ipv4'
import {
  IPV6_DST,
  IPV6_SRC,
  Ipv6Walk,
  ipv6FlowLabel,
  ipv6HopLimit,
  ipv6NextHeader,
  ipv6PayloadLength,
  ipv6ToString,
  ipv6TrafficClass,
  ipv6Version,
  parseIpv6,
  setIpv6VersionTcFlow,
  walkIpv6Headers,
} from '../../src/wire/ipv6'
import {
  TCP_ACK,
  TCP_RST,
  TCP_SYN,
  fillTcpChecksum4,
  fillTcpChecksum6,
  tcpAck,
  tcpChecksum,
  tcpDataOffset,
  tcpDstPort,
  tcpFlags,
  tcpSeq,
  tcpSrcPort,
  tcpWindow,
} from '../../src/wire/tcp'
import { fillUdpChecksum4, fillUdpChecksum6, udpChecksum, udpDstPort, udpLength, udpSrcPort } from '../../src/wire/udp'
import {
  ICMP_DEST_UNREACH,
  ICMP_ECHO_REQUEST,
  IcmpUnreach,
  fillIcmpChecksum,
  icmpChecksum,
  icmpCode,
  icmpEchoId,
  icmpEchoSeq,
  icmpInnerOffset,
  icmpIsError,
  icmpType,
} from '../../src/wire/icmp'
import {
  ICMPV6_DEST_UNREACH,
  ICMPV6_ECHO_REQUEST,
  fillIcmp6Checksum,
  icmp6Checksum,
  icmp6Code,
  icmp6EchoId,
  icmp6InnerOffset,
  icmp6IsError,
  icmp6Mtu,
  icmp6Type,
} from '../../src/wire/icmpv6'
import { crc32c, fillSctpChecksum, sctpChecksum, sctpChecksumOk, sctpDstPort, sctpSrcPort } from '../../src/wire/sctp'

const FX = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'loopback.json'), 'utf8')) as Record<string, { hex: string }>
function fx(name: string): Buffer {
  const f = FX[name]
  if (!f) throw new Error(`no fixture ${name}`)
  return Buffer.from(f.hex, 'hex')
}
const LOOP4 = 0x7f000001

t.test('IPv4 header fields of a ping to 127.0.0.1', async t => {
  const p = fx('icmp4_echo_request')
  t.equal(ipv4Version(p, 0), 4)
  t.equal(ipv4Ihl(p, 0), 20)
  t.equal(ipv4TotalLength(p, 0), 84)
  t.equal(ipv4Id(p, 0), 0x69bd)
  t.equal(ipv4DontFragment(p, 0), true)
  t.equal(ipv4MoreFragments(p, 0), false)
  t.equal(ipv4FragmentOffset(p, 0), 0)
  t.equal(ipv4Ttl(p, 0), 64)
  t.equal(ipv4Protocol(p, 0), 1)
  t.equal(ipv4Checksum(p, 0), 0xd2e9)
  t.equal(ipv4Src(p, 0), LOOP4)
  t.equal(ipv4Dst(p, 0), LOOP4)
  t.ok(ipv4ChecksumOk(p, 0))
  p.writeUInt16BE(0, 10)
  t.notOk(ipv4ChecksumOk(p, 0))
  fillIpv4Checksum(p, 0)
  t.equal(ipv4Checksum(p, 0), 0xd2e9, 'fillIpv4Checksum reproduces the kernel value')
})

t.test('IPv4 options and fragments', async t => {
  const rr = fx('icmp4_echo_request_rr')
  t.equal(ipv4Ihl(rr, 0), 60)
  t.ok(ipv4ChecksumOk(rr, 0), 'checksum over all 60 header bytes')
  const first = fx('icmp4_frag_first')
  t.equal(ipv4MoreFragments(first, 0), true)
  t.equal(ipv4FragmentOffset(first, 0), 0)
  const second = fx('icmp4_frag_second')
  t.equal(ipv4MoreFragments(second, 0), false)
  t.equal(ipv4FragmentOffset(second, 0), 1256)
  t.equal(ipv4Id(second, 0), ipv4Id(first, 0))
})

t.test('IPv4 address rewrites and TTL decrement keep the header checksum exact', async t => {
  const p = fx('tcp4_rst')
  t.equal(rewriteIpv4Src(p, 0, 0x0a000001), LOOP4, 'returns the old address')
  t.equal(rewriteIpv4Dst(p, 0, 0xc0a80a0b), LOOP4)
  t.equal(ipv4Src(p, 0), 0x0a000001)
  t.equal(ipv4Dst(p, 0), 0xc0a80a0b)
  const incremental = ipv4Checksum(p, 0)
  fillIpv4Checksum(p, 0)
  t.equal(incremental, ipv4Checksum(p, 0))
  t.equal(decrementIpv4Ttl(p, 0), 63)
  t.equal(ipv4Ttl(p, 0), 63)
  const afterTtl = ipv4Checksum(p, 0)
  fillIpv4Checksum(p, 0)
  t.equal(afterTtl, ipv4Checksum(p, 0))
  setIpv4Ttl(p, 0, 0)
  t.equal(decrementIpv4Ttl(p, 0), 0, 'TTL 0 stays 0')
  setIpv4Src(p, 0, 0xffffffff)
  t.equal(ipv4Src(p, 0), 0xffffffff, 'addresses read back unsigned')
  setIpv4Dst(p, 0, 0x80000000)
  t.equal(ipv4Dst(p, 0), 0x80000000)
})

t.test('ipv4ToString / parseIpv4', async t => {
  t.equal(ipv4ToString(0x0a60000a), '10.96.0.10')
  t.equal(ipv4ToString(0xffffffff), '255.255.255.255')
  t.equal(ipv4ToString(0), '0.0.0.0')
  t.equal(parseIpv4('10.96.0.10'), 0x0a60000a)
  t.equal(parseIpv4('255.255.255.255'), 0xffffffff)
  t.equal(parseIpv4('0.0.0.0'), 0)
  t.equal(parseIpv4('1.2.3.4'), 0x01020304)
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1.2.3.04', '01.2.3.4', ' 1.2.3.4', '1.2.3.4 ', '1..2.3',
    '1.2.3.', '.1.2.3', 'a.b.c.d', '1.2.3.-4', '1.2.3.4/32', '::1', '1e1.1.1.1', '1234.1.1.1', '999.999.999.999']) {
    t.equal(parseIpv4(bad), -1, JSON.stringify(bad))
  }
  t.equal(parseIpv4(undefined as unknown as string), -1, 'never throws on a non-string')
  let bad = 0
  for (let i = 0; i < 2000; i++) {
    const n = Math.floor(Math.random() * 2 ** 32)
    if (parseIpv4(ipv4ToString(n)) !== n) bad++
  }
  t.equal(bad, 0, 'round trip')
})

t.test('IPv6 fixed header of a ping to ::1', async t => {
  const p = fx('icmp6_echo_request')
  t.equal(ipv6Version(p, 0), 6)
  t.equal(ipv6TrafficClass(p, 0), 0)
  t.equal(ipv6FlowLabel(p, 0), 0x9c744)
  t.equal(ipv6PayloadLength(p, 0), 64)
  t.equal(ipv6NextHeader(p, 0), 58)
  t.equal(ipv6HopLimit(p, 0), 64)
  t.equal(ipv6ToString(p, IPV6_SRC), '::1')
  t.equal(ipv6ToString(p, IPV6_DST), '::1')
  const h = Buffer.alloc(4)
  setIpv6VersionTcFlow(h, 0, 0xb8, 0xabcde)
  t.equal(h.toString('hex'), '6b8abcde')
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
  for (const bad of ['', ':', ':::', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', 'g::', '1:2:3:4:5:6:7', '::1%eth0',
    '[::1]', '1.2.3.4', '::1.2.3', '::256.1.1.1', '1:2:3:4:5:6:7:1.2.3.4', ' ::1', '::1 ', '::01.2.3.4', '02001::',
    '1::2:', ':1::2', '1:', '::1:', '::1.2.3.4:5', '1:2:3:4:5:6:7:8::', '::1:2:3:4:5:6:7:8', '::/64', 'fe80::1/64']) {
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
    const long = Array.from({ length: 8 }, (_, g) => b.readUInt16BE(2 * g).toString(16).padStart(4, '0')).join(':')
    if (!parseIpv6(long.toUpperCase(), c, 0) || !c.equals(b)) bad.push(`full form ${long}`)
  }
  t.same(bad.slice(0, 5), [])
})

t.test('TCP fields of a real SYN with options, and the kernel RST', async t => {
  const p = fx('tcp4_syn_partial')
  const l4 = ipv4Ihl(p, 0)
  t.equal(tcpSrcPort(p, l4), 33500)
  t.equal(tcpDstPort(p, l4), 1)
  t.equal(tcpSeq(p, l4), 3011857996)
  t.equal(tcpAck(p, l4), 0)
  t.equal(tcpDataOffset(p, l4), 40)
  t.equal(tcpFlags(p, l4), TCP_SYN)
  t.equal(tcpWindow(p, l4), 65495)
  t.equal(tcpChecksum(p, l4), 0xfe30)
  t.equal(tcpChecksum(p, l4), fold(pseudoHeaderSum4(LOOP4, LOOP4, 6, 40)), 'the partial field is the folded pseudo-header sum')
  fillTcpChecksum4(p, l4, 40, LOOP4, LOOP4)
  t.equal(tcpChecksum(p, l4), 0x0ce5, 'full checksum = what tcpdump computed')
  const rst = fx('tcp4_rst')
  t.equal(tcpFlags(rst, 20), TCP_RST | TCP_ACK)
  t.equal(tcpAck(rst, 20), 3011857997)
  t.equal(tcpChecksum(rst, 20), 0x2d1e)
  fillTcpChecksum4(rst, 20, 20, LOOP4, LOOP4)
  t.equal(tcpChecksum(rst, 20), 0x2d1e, 'recomputing a kernel-made checksum changes nothing')
  const p6 = fx('tcp6_syn_partial')
  t.equal(tcpChecksum(p6, 40), fold(pseudoHeaderSum6(p6, 8, 24, 6, 40)))
  fillTcpChecksum6(p6, 40, 40, 8, 24)
  t.equal(tcpChecksum(p6, 40), 0xd718)
  const r6 = fx('tcp6_rst_partial')
  fillTcpChecksum6(r6, 40, 20, 8, 24)
  t.equal(tcpChecksum(r6, 40), 0xfe0d)
})

t.test('UDP fields and checksums', async t => {
  const p = fx('udp4_partial')
  t.equal(udpSrcPort(p, 20), 40420)
  t.equal(udpDstPort(p, 20), 9)
  t.equal(udpLength(p, 20), 13)
  t.equal(udpChecksum(p, 20), 0xfe20)
  fillUdpChecksum4(p, 20, 13, LOOP4, LOOP4)
  t.equal(udpChecksum(p, 20), 0x2012)
  const p6 = fx('udp6_partial')
  t.equal(udpLength(p6, 40), 14)
  fillUdpChecksum6(p6, 40, 14, 8, 24)
  t.equal(udpChecksum(p6, 40), 0x1c92)
  // A datagram whose checksum computes to 0 is sent as 0xffff: make the data sum cancel the rest exactly.
  const z = Buffer.alloc(10)
  z.writeUInt16BE(1000, 0)
  z.writeUInt16BE(2000, 2)
  z.writeUInt16BE(10, 4)
  const rest = checksum(z, 0, 10, pseudoHeaderSum4(LOOP4, LOOP4, 17, 10))
  z.writeUInt16BE(rest, 8) // data word that makes the total sum 0xffff, so the checksum is 0
  fillUdpChecksum4(z, 0, 10, LOOP4, LOOP4)
  t.equal(udpChecksum(z, 0), 0xffff)
})

t.test('ICMP echo and error fields', async t => {
  const p = fx('icmp4_echo_request')
  t.equal(icmpType(p, 20), ICMP_ECHO_REQUEST)
  t.equal(icmpCode(p, 20), 0)
  t.equal(icmpEchoId(p, 20), 8217)
  t.equal(icmpEchoSeq(p, 20), 1)
  t.equal(icmpChecksum(p, 20), 0x1c11)
  fillIcmpChecksum(p, 20, 64)
  t.equal(icmpChecksum(p, 20), 0x1c11)
  const e = fx('icmp4_port_unreachable')
  t.equal(icmpType(e, 20), ICMP_DEST_UNREACH)
  t.equal(icmpCode(e, 20), IcmpUnreach.PORT)
  t.ok(icmpIsError(3) && icmpIsError(11) && !icmpIsError(8) && !icmpIsError(0))
  const inner = icmpInnerOffset(20)
  t.equal(inner, 28)
  t.equal(ipv4Protocol(e, inner), 17)
  t.equal(udpDstPort(e, inner + 20), 9)
  t.equal(checksum(e, 20, ipv4TotalLength(e, 0) - 20), 0, 'kernel ICMP checksum verifies')
})

t.test('ICMPv6 echo and error fields', async t => {
  const p = fx('icmp6_echo_request')
  t.equal(icmp6Type(p, 40), ICMPV6_ECHO_REQUEST)
  t.equal(icmp6EchoId(p, 40), 8218)
  t.equal(icmp6Checksum(p, 40), 0xf074)
  fillIcmp6Checksum(p, 40, 64, 8, 24)
  t.equal(icmp6Checksum(p, 40), 0xf074, 'checksum with the IPv6 pseudo-header matches the kernel')
  const e = fx('icmp6_port_unreachable')
  t.equal(icmp6Type(e, 40), ICMPV6_DEST_UNREACH)
  t.equal(icmp6Code(e, 40), 4)
  t.equal(icmp6Mtu(e, 40), 0)
  t.ok(icmp6IsError(1) && icmp6IsError(4) && !icmp6IsError(128) && !icmp6IsError(135))
  const inner = icmp6InnerOffset(40)
  t.equal(ipv6NextHeader(e, inner), 17)
  t.equal(udpDstPort(e, inner + 40), 9)
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
  t.equal(sctpSrcPort(p, 0), 5000)
  t.equal(sctpDstPort(p, 0), 80)
  const z = Buffer.from(p)
  z.fill(0, 8, 12)
  t.equal(sctpChecksum(p, 0), crc32c(z, 0, z.length), 'the CRC is taken with the field zeroed')
  t.equal(p[8], sctpChecksum(p, 0) & 0xff, 'stored least significant byte first')
  t.ok(sctpChecksumOk(p, 0, p.length))
  p[20]! ^= 1
  t.notOk(sctpChecksumOk(p, 0, p.length))
})

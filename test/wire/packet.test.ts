// parsePacket on captured packets (fixtures/loopback.json) and on hand-made malformed ones, one per drop rule.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { PacketInfo, parsePacket } from '../../src/wire/packet'
import { DROP_NAMES, Drop, PASS } from '../../src/wire/drop'
/** The longest extension-header chain parsePacket accepts (MAX_EXT_HEADERS in src/wire/ipv6.ts). */
const MAX_EXT_HEADERS = 8

const FX = JSON.parse(readFileSync(join(__dirname, 'fixtures', 'loopback.json'), 'utf8')) as Record<string, { hex: string }>
function fx(name: string): Buffer {
  const f = FX[name]
  if (!f) throw new Error(`no fixture ${name}`)
  return Buffer.from(f.hex, 'hex')
}
const LOOP4 = 0x7f000001
const info = new PacketInfo()

function parse(p: Buffer, gso = false): number {
  return parsePacket(p, 0, p.length, info, gso)
}

/** IPv4 header fix-ups used by the mutations below (the parser does not check the header checksum). */
function withTotalLength(p: Buffer, tl: number): Buffer {
  const q = Buffer.from(p)
  q.writeUInt16BE(tl, 2)
  return q
}

/** An IPv6 packet from ::1 to ::2 with the given extension headers (type, body length in bytes incl. the 2 first) and L4 bytes. */
function build6(exts: readonly (readonly [number, Buffer])[], proto: number, l4: Buffer): Buffer {
  const parts: Buffer[] = []
  const hdr = Buffer.alloc(40)
  hdr[0] = 0x60
  hdr[7] = 64
  hdr[23] = 1
  hdr[39] = 2
  parts.push(hdr)
  const types = [...exts.map(e => e[0]), proto]
  hdr[6] = types[0]!
  exts.forEach(([, body], i) => {
    body[0] = types[i + 1]!
    parts.push(body)
  })
  parts.push(l4)
  const p = Buffer.concat(parts)
  p.writeUInt16BE(p.length - 40, 4)
  return p
}

/** Generic extension header of `len` bytes (a multiple of 8). */
function ext(len: number): Buffer {
  const b = Buffer.alloc(len)
  b[1] = len / 8 - 1
  return b
}

function frag6(offsetBytes: number, more: boolean, id = 0x1234): Buffer {
  const b = Buffer.alloc(8)
  b.writeUInt16BE(offsetBytes | (more ? 1 : 0), 2)
  b.writeUInt32BE(id, 4)
  return b
}

function tcpHeader(doffWords = 5, extra = 0): Buffer {
  const b = Buffer.alloc(doffWords * 4 + extra)
  b.writeUInt16BE(1234, 0)
  b.writeUInt16BE(80, 2)
  b[12] = doffWords << 4
  b[13] = 0x02
  return b
}

t.test('captured packets parse, with every field as on the wire', async t => {
  t.equal(parse(fx('tcp4_syn_partial')), PASS)
  t.match(
    { ...info },
    {
      family: 4,
      l3Off: 0,
      l3Len: 60,
      l3HdrLen: 20,
      l4Proto: 6,
      l4Off: 20,
      l4Len: 40,
      src: LOOP4,
      dst: LOOP4,
      srcOff: 12,
      dstOff: 16,
      srcPort: 33500,
      dstPort: 1,
      tcpFlags: 2,
      ttl: 64,
      isFragment: 0,
      fragOffset: 0,
      moreFragments: 0,
      innerL3Off: -1,
      innerL4Off: -1,
    },
  )
  t.equal(parse(fx('tcp6_syn_partial')), PASS)
  t.match(
    { ...info },
    {
      family: 6,
      l3Len: 80,
      l3HdrLen: 40,
      l4Proto: 6,
      l4Off: 40,
      l4Len: 40,
      src: 0,
      dst: 0,
      srcOff: 8,
      dstOff: 24,
      srcPort: 53594,
      dstPort: 1,
      tcpFlags: 2,
      ttl: 64,
    },
  )
  t.equal(parse(fx('udp4_partial')), PASS)
  t.match({ ...info }, { l4Proto: 17, l4Off: 20, l4Len: 13, srcPort: 40420, dstPort: 9 })
  t.equal(parse(fx('udp6_partial')), PASS)
  t.match({ ...info }, { family: 6, l4Proto: 17, l4Off: 40, l4Len: 14, srcPort: 40749, dstPort: 9 })
  t.equal(parse(fx('icmp4_echo_request')), PASS)
  t.match({ ...info }, { l4Proto: 1, icmpType: 8, icmpCode: 0, srcPort: 8217, dstPort: 8217, l4Len: 64 })
  t.equal(parse(fx('icmp6_echo_reply')), PASS)
  t.match({ ...info }, { l4Proto: 58, icmpType: 129, srcPort: 8218, dstPort: 8218 })
  t.equal(parse(fx('icmp4_echo_request_rr')), PASS)
  t.match({ ...info }, { l3HdrLen: 60, l4Off: 60, l4Len: 64, srcPort: 8357 })
})

t.test('ICMP errors expose the quoted packet', async t => {
  t.equal(parse(fx('icmp4_port_unreachable')), PASS)
  t.match(
    { ...info },
    {
      icmpType: 3,
      icmpCode: 3,
      srcPort: 0,
      dstPort: 0,
      innerL3Off: 28,
      innerL4Off: 48,
      innerL4Proto: 17,
      innerSrc: LOOP4,
      innerDst: LOOP4,
      innerSrcOff: 40,
      innerDstOff: 44,
      innerSrcPort: 40420,
      innerDstPort: 9,
    },
  )
  t.equal(parse(fx('icmp6_port_unreachable')), PASS)
  t.match(
    { ...info },
    {
      icmpType: 1,
      icmpCode: 4,
      innerL3Off: 48,
      innerL4Off: 88,
      innerL4Proto: 17,
      innerSrcOff: 56,
      innerDstOff: 72,
      innerSrcPort: 40749,
      innerDstPort: 9,
    },
  )
  t.equal(parse(fx('icmp6_port_unreachable_frag')), PASS, 'a quote cut at 1280 bytes is fine')
  t.match({ ...info }, { innerL4Proto: 17, innerDstPort: 53 })
})

t.test('fragments: first ones carry the L4 header, later ones do not', async t => {
  t.equal(parse(fx('icmp4_frag_first')), PASS)
  t.match({ ...info }, { isFragment: 1, moreFragments: 1, fragOffset: 0, fragId: 8494, l4Off: 20, l4Len: 1256, srcPort: 9750 })
  t.equal(parse(fx('icmp4_frag_second')), PASS)
  t.match({ ...info }, { isFragment: 1, moreFragments: 0, fragOffset: 1256, fragId: 8494, l4Off: -1, l4Len: 0, l3HdrLen: 20, srcPort: 0, l4Proto: 1 })
  t.equal(parse(fx('icmp6_frag_first')), PASS)
  t.match({ ...info }, { isFragment: 1, moreFragments: 1, fragOffset: 0, fragId: 0x385a11cf, l4Off: 48, l3HdrLen: 48, l4Proto: 58, srcPort: 9751 })
  t.equal(parse(fx('icmp6_frag_second')), PASS)
  t.match({ ...info }, { isFragment: 1, moreFragments: 0, fragOffset: 1232, l4Off: -1, l3HdrLen: 48, l4Proto: 58 })
  t.equal(parse(fx('udp6_frag_first')), PASS, 'UDP length 1308 may exceed a first fragment')
  t.match({ ...info }, { l4Proto: 17, l4Off: 48, l4Len: 1232, dstPort: 53 })
  t.equal(parse(fx('udp6_frag_second')), PASS)
  t.match({ ...info }, { l4Off: -1, fragOffset: 1232 })
})

t.test('offsets, trailing padding and a buffer shared with other data', async t => {
  const p = fx('udp4_partial')
  const big = Buffer.alloc(100, 0xee)
  p.copy(big, 10)
  // The packet is 33 bytes; the caller says 40 (link padding): total length wins.
  t.equal(parsePacket(big, 10, 40, info), PASS)
  t.match({ ...info }, { l3Off: 10, l3Len: 33, l4Off: 30, l4Len: 13, srcOff: 22, dstOff: 26, srcPort: 40420 })
  t.equal(parsePacket(big, 10, 32, info), Drop.TRUNCATED, 'one byte short')
  const short = Buffer.alloc(50)
  p.copy(short, 30) // only 20 of the 33 bytes fit
  t.equal(parsePacket(short, 30, 33, info), Drop.TRUNCATED, 'len past the end of the buffer is clamped, not trusted')
  t.equal(parsePacket(big, 200, 10, info), Drop.TRUNCATED)
})

t.test('GSO: a zero length field means the rest of the buffer only when gso is set', async t => {
  const p = withTotalLength(fx('tcp4_syn_partial'), 0)
  t.equal(parse(p), Drop.BAD_TOTAL_LENGTH)
  t.equal(parse(p, true), PASS)
  t.match({ ...info }, { l3Len: 60, l4Len: 40 })
  const big = Buffer.concat([p, Buffer.alloc(70000)]) // a >64K super-packet
  t.equal(parsePacket(big, 0, big.length, info, true), PASS)
  t.equal(info.l3Len, big.length)
  const q = Buffer.from(fx('tcp6_syn_partial'))
  q.writeUInt16BE(0, 4)
  t.equal(parse(q), Drop.BAD_L4_HEADER, 'payload length 0: TCP header is not inside the packet')
  t.equal(parse(q, true), PASS)
  t.equal(info.l4Len, 40)
})

t.test('IPv4 header rules, one drop reason each', async t => {
  const syn = fx('tcp4_syn_partial')
  t.equal(parse(Buffer.alloc(0)), Drop.TRUNCATED)
  t.equal(parse(Buffer.from([0x45])), Drop.TRUNCATED)
  t.equal(parse(syn.subarray(0, 19)), Drop.TRUNCATED)
  t.equal(parse(syn.subarray(0, 59)), Drop.TRUNCATED, 'total length 60 > 59 bytes')
  const v5 = Buffer.from(syn)
  v5[0] = 0x55
  t.equal(parse(v5), Drop.BAD_VERSION)
  v5[0] = 0x05
  t.equal(parse(v5), Drop.BAD_VERSION)
  const ihl4 = Buffer.from(syn)
  ihl4[0] = 0x44
  t.equal(parse(ihl4), Drop.BAD_IHL)
  const ihlBig = withTotalLength(syn.subarray(0, 40), 40)
  ihlBig[0] = 0x4f // 60-byte header in a 40-byte packet
  t.equal(parse(ihlBig), Drop.BAD_IHL)
  t.equal(parse(withTotalLength(syn, 19)), Drop.BAD_TOTAL_LENGTH)
  t.equal(parse(withTotalLength(syn, 61)), Drop.TRUNCATED, 'total length lies upwards')
  t.equal(parse(withTotalLength(syn, 0xffff)), Drop.TRUNCATED)
  // Ping of death: offset 65528 + 1256 bytes of data.
  const pod = Buffer.from(fx('icmp4_frag_second'))
  pod.writeUInt16BE(65528 / 8, 6)
  t.equal(parse(pod), Drop.BAD_FRAGMENT)
  // RFC 1858: a TCP fragment at offset 8 can rewrite the first fragment's flags.
  const tiny = Buffer.from(syn)
  tiny.writeUInt16BE(1, 6)
  t.equal(parse(tiny), Drop.BAD_FRAGMENT)
  tiny.writeUInt16BE(2, 6)
  t.equal(parse(tiny), PASS, 'offset 16 is a plain non-first fragment')
  t.equal(info.l4Off, -1)
})

t.test('L4 rules', async t => {
  const syn = fx('tcp4_syn_partial')
  t.equal(parse(withTotalLength(syn, 39)), Drop.BAD_L4_HEADER, '19 bytes of TCP')
  const doff4 = Buffer.from(syn)
  doff4[32] = 0x40
  t.equal(parse(doff4), Drop.BAD_TCP_DATA_OFFSET)
  const doff0 = Buffer.from(syn)
  doff0[32] = 0x00
  t.equal(parse(doff0), Drop.BAD_TCP_DATA_OFFSET)
  const doffBig = Buffer.from(syn)
  doffBig[32] = 0xb0 // 44 bytes in a 40-byte segment
  t.equal(parse(doffBig), Drop.BAD_TCP_DATA_OFFSET)
  doffBig[32] = 0xa0
  t.equal(parse(doffBig), PASS, 'exactly the segment')

  const udp = fx('udp4_partial')
  t.equal(parse(withTotalLength(udp, 27)), Drop.BAD_L4_HEADER, '7 bytes of UDP')
  const ulen7 = Buffer.from(udp)
  ulen7.writeUInt16BE(7, 24)
  t.equal(parse(ulen7), Drop.BAD_UDP_LENGTH)
  ulen7.writeUInt16BE(14, 24)
  t.equal(parse(ulen7), Drop.BAD_UDP_LENGTH, 'UDP length past the IP payload')
  ulen7.writeUInt16BE(8, 24)
  t.equal(parse(ulen7), PASS, 'UDP length below the IP payload: trailing bytes ignored')
  t.equal(info.l4Len, 8)
  const zero4 = Buffer.from(udp)
  zero4.writeUInt16BE(0, 26)
  t.equal(parse(zero4), PASS, 'UDP/IPv4 without checksum is fine')
  const zero6 = Buffer.from(fx('udp6_partial'))
  zero6.writeUInt16BE(0, 46)
  t.equal(parse(zero6), Drop.UDP6_ZERO_CHECKSUM)
  const ulenGso = Buffer.from(udp)
  ulenGso.writeUInt16BE(0, 24)
  t.equal(parse(ulenGso), Drop.BAD_UDP_LENGTH)
  t.equal(parse(ulenGso, true), PASS)

  const echo = fx('icmp4_echo_request')
  t.equal(parse(withTotalLength(echo, 27)), Drop.BAD_L4_HEADER, '7 bytes of ICMP')
  const echo6 = Buffer.from(fx('icmp6_echo_request'))
  echo6.writeUInt16BE(7, 4)
  t.equal(parse(echo6), Drop.BAD_L4_HEADER, '7 bytes of ICMPv6')

  // SCTP common header is 12 bytes.
  const sctp = Buffer.from(udp)
  sctp[9] = 132
  t.equal(parse(withTotalLength(sctp, 31)), Drop.BAD_L4_HEADER)
  t.equal(parse(withTotalLength(sctp, 32)), PASS)
  t.match({ ...info }, { l4Proto: 132, srcPort: 40420, dstPort: 9 })

  // Protocols without ports pass with ports 0.
  const gre = Buffer.from(udp)
  gre[9] = 47
  t.equal(parse(gre), PASS)
  t.match({ ...info }, { l4Proto: 47, l4Off: 20, l4Len: 13, srcPort: 0, dstPort: 0 })
})

t.test('ICMP error quotes must hold an IP header and 8 bytes', async t => {
  const e = fx('icmp4_port_unreachable') // 20 + 8 + 20 (quoted IP) + 13 (quoted UDP)
  t.equal(parse(withTotalLength(e, 20 + 8 + 19)), Drop.BAD_ICMP_ERROR, 'quoted header cut short')
  t.equal(parse(withTotalLength(e, 20 + 8 + 20 + 7)), Drop.BAD_ICMP_ERROR, 'quoted UDP header cut short')
  t.equal(parse(withTotalLength(e, 20 + 8 + 20 + 8)), PASS, 'RFC 792 minimum quote')
  const v6inside = Buffer.from(e)
  v6inside[28] = 0x65
  t.equal(parse(v6inside), Drop.BAD_ICMP_ERROR)
  const ihl4 = Buffer.from(e)
  ihl4[28] = 0x44
  t.equal(parse(ihl4), Drop.BAD_ICMP_ERROR)
  const fragInside = Buffer.from(e)
  fragInside.writeUInt16BE(3, 28 + 6) // the quote is a non-first fragment: no ports to read
  t.equal(parse(fragInside), PASS)
  t.match({ ...info }, { innerL3Off: 28, innerL4Off: -1, innerSrcPort: 0 })
  const e6 = Buffer.from(fx('icmp6_port_unreachable'))
  e6.writeUInt16BE(8 + 39, 4)
  t.equal(parse(e6.subarray(0, 40 + 8 + 39)), Drop.BAD_ICMP_ERROR, 'quoted IPv6 header cut short')
  e6.writeUInt16BE(8 + 40 + 7, 4)
  t.equal(parse(e6.subarray(0, 40 + 8 + 47)), Drop.BAD_ICMP_ERROR, 'quoted UDP cut short')
  // Errors about echo requests expose the echo id as both inner ports.
  const aboutEcho = Buffer.from(e)
  aboutEcho[28 + 9] = 1
  aboutEcho[48] = 8
  aboutEcho.writeUInt16BE(4242, 52)
  t.equal(parse(aboutEcho), PASS)
  t.match({ ...info }, { innerL4Proto: 1, innerSrcPort: 4242, innerDstPort: 4242 })
})

t.test('IPv6 length and extension header rules', async t => {
  const syn = fx('tcp6_syn_partial')
  t.equal(parse(syn.subarray(0, 39)), Drop.TRUNCATED)
  t.equal(parse(syn.subarray(0, 79)), Drop.TRUNCATED, '40 + payload length > buffer')
  const tcp = tcpHeader()
  t.equal(
    parse(
      build6(
        [
          [0, ext(8)],
          [60, ext(16)],
          [43, ext(24)],
        ],
        6,
        tcp,
      ),
    ),
    PASS,
  )
  t.match({ ...info }, { l4Proto: 6, l4Off: 88, l3HdrLen: 88, l4Len: 20, dstPort: 80 })
  t.equal(
    parse(
      build6(
        [
          [60, ext(8)],
          [0, ext(8)],
        ],
        6,
        tcp,
      ),
    ),
    Drop.BAD_EXT_HEADER,
    'hop-by-hop not first',
  )
  const runsOff = build6([[60, ext(8)]], 6, tcp)
  runsOff[41] = 10 // 88 bytes claimed, 28 left
  t.equal(parse(runsOff), Drop.BAD_EXT_HEADER)
  t.equal(parse(build6([[60, ext(8)]], 60, Buffer.alloc(0))), Drop.BAD_EXT_HEADER, 'chain points at a header past the end')
  t.equal(parse(build6([[60, ext(8)]], 60, Buffer.alloc(4))), Drop.BAD_EXT_HEADER, 'next header starts but does not fit')
  const many = Array.from({ length: MAX_EXT_HEADERS }, () => [60, ext(8)] as const)
  t.equal(parse(build6(many, 6, tcp)), PASS, `${MAX_EXT_HEADERS} headers are fine`)
  t.equal(parse(build6([...many, [60, ext(8)]], 6, tcp)), Drop.TOO_MANY_EXT_HEADERS)
  // Self-pointing chain ("loop"): each destination options header names another one until the payload ends.
  const loop = build6(
    Array.from({ length: 4 }, () => [60, ext(8)] as const),
    60,
    Buffer.alloc(0),
  )
  t.equal(parse(loop), Drop.BAD_EXT_HEADER)
  for (const unsupported of [135, 139, 140, 253, 254]) {
    t.equal(parse(build6([[unsupported, ext(8)]], 6, tcp)), Drop.UNSUPPORTED_EXT_HEADER, `next header ${unsupported}`)
  }
  // AH counts 4-byte units minus 2: length byte 4 -> 24 bytes.
  const ah = Buffer.alloc(24)
  ah[1] = 4
  t.equal(parse(build6([[51, ah]], 6, tcp)), PASS)
  t.equal(info.l4Off, 64)
  t.equal(
    parse(
      build6(
        [
          [44, frag6(0, true)],
          [44, frag6(0, true)],
        ],
        6,
        Buffer.concat([tcp, Buffer.alloc(4)]),
      ),
    ),
    Drop.BAD_EXT_HEADER,
    'two fragment headers',
  )
  t.equal(parse(build6([], 59, Buffer.alloc(3))), PASS, 'no next header')
  t.match({ ...info }, { l4Proto: 59, l4Off: 40, l4Len: 3 })
})

t.test('IPv6 fragment rules', async t => {
  const tcp = tcpHeader()
  t.equal(parse(build6([[44, frag6(0, false)]], 6, tcp)), PASS, 'atomic fragment is a whole packet')
  t.match({ ...info }, { isFragment: 0, l4Off: 48, dstPort: 80 })
  t.equal(parse(build6([[44, frag6(0, true)]], 6, Buffer.concat([tcp, Buffer.alloc(4)]))), PASS)
  t.match({ ...info }, { isFragment: 1, moreFragments: 1, l4Off: 48 })
  t.equal(parse(build6([[44, frag6(0, true)]], 6, tcp)), Drop.BAD_FRAGMENT, '20 bytes is not a multiple of 8')
  t.equal(parse(build6([[44, frag6(64, false)]], 6, Buffer.alloc(5))), PASS, 'the last fragment may be any length')
  t.match({ ...info }, { l4Off: -1, fragOffset: 64, l3HdrLen: 48 })
  t.equal(parse(build6([[44, frag6(65528, false)]], 6, Buffer.alloc(16))), Drop.BAD_FRAGMENT, 'reassembles past 65535')
  t.equal(parse(build6([[44, frag6(0, true)]], 6, Buffer.alloc(8))), Drop.BAD_L4_HEADER, 'first fragment must hold the TCP header')
})

t.test('drop names', async t => {
  const values = Object.values(Drop)
  t.same(
    values,
    values.map((_, i) => i + 1),
    'reasons are 1..N with no gaps',
  )
  t.equal(DROP_NAMES.length, values.length + 1)
  t.equal(DROP_NAMES[PASS], 'pass')
  for (const [k, v] of Object.entries(Drop)) t.equal(DROP_NAMES[v], k.toLowerCase(), k)
})

// The names other modules (NAT, DNS, dataplane) code against: a rename here breaks them, so it must break this first.
import t from 'tap'
import * as wire from '../../src/wire'
import * as checksum from '../../src/wire/checksum'
import * as ipv4 from '../../src/wire/ipv4'
import * as ipv6 from '../../src/wire/ipv6'
import * as tcp from '../../src/wire/tcp'
import * as l4rewrite from '../../src/wire/l4rewrite'
import * as packet from '../../src/wire/packet'
import * as build from '../../src/wire/build'

const contract: [string, Record<string, unknown>, string[]][] = [
  ['checksum', checksum, ['sum16', 'fold', 'checksum', 'pseudoHeaderSum4', 'pseudoHeaderSum6', 'csumUpdate16', 'csumUpdate32']],
  ['ipv4', ipv4, ['ipv4Version', 'ipv4Ihl', 'fillIpv4Checksum', 'ipv4ToString', 'parseIpv4']],
  ['ipv6', ipv6, ['walkIpv6Headers', 'ipv6ToString', 'parseIpv6']],
  ['tcp', tcp, ['tcpDataOffset']],
  ['l4rewrite', l4rewrite, ['natIpv4', 'natIpv6']],
  ['packet', packet, ['parsePacket']],
  ['build', build, ['buildIcmp4Error', 'buildIcmp6Error', 'icmp4EchoToReply', 'icmp6EchoToReply']],
]

t.test('contract functions exist, in their module and in the wire index', async t => {
  for (const [mod, exports, names] of contract) {
    for (const n of names) {
      t.type(exports[n], 'function', `${mod}.${n}`)
      t.equal((wire as Record<string, unknown>)[n], exports[n], `wire.${n}`)
    }
  }
})

t.test('contract constants', async t => {
  t.equal(wire.IPV4_MIN_HEADER, 20)
  t.same([wire.TCP_FIN, wire.TCP_SYN, wire.TCP_RST, wire.TCP_PSH, wire.TCP_ACK, wire.TCP_URG], [1, 2, 4, 8, 16, 32])
  t.equal(wire.SRC, 0)
  t.equal(wire.DST, 1)
  t.equal(wire.PASS, 0)
  for (const k of ['TRUNCATED', 'BAD_VERSION', 'BAD_IHL', 'BAD_TOTAL_LENGTH', 'BAD_L4_HEADER', 'BAD_TCP_DATA_OFFSET', 'UNSUPPORTED_EXT_HEADER']) {
    t.type((wire.Drop as Record<string, number>)[k], 'number', `Drop.${k}`)
  }
  const info = new wire.PacketInfo()
  for (const f of [
    'family',
    'l3Off',
    'l3Len',
    'l4Proto',
    'l4Off',
    'l4Len',
    'src',
    'dst',
    'srcOff',
    'dstOff',
    'srcPort',
    'dstPort',
    'tcpFlags',
    'icmpType',
    'icmpCode',
    'fragOffset',
    'moreFragments',
    'isFragment',
    'ttl',
  ]) {
    t.type((info as unknown as Record<string, unknown>)[f], 'number', `PacketInfo.${f}`)
  }
})

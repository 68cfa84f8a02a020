// virtio_net_hdr helpers: byte layout, the reusable view, and headers captured from a real TUN.
import t from 'tap'
import {
  clearVnetHdr, formatVnetHdr, GsoType, readVnetHdr, VNET_HDR_LEN, VnetFlags, VnetHdr, VnetOff, writeVnetHdr,
} from '../../src/device/vnet'

// Read from a TUN (IFF_VNET_HDR, TUNSETOFFLOAD csum|tso4|tso6|uso4|uso6) on Linux 6.18 by
// test/netns/fixtures/tun-probe.ts: a UDP datagram, and a TCP super-packet of a local stream (MSS 1448).
const UDP_FROM_TUN = Buffer.from('01000000000014000600', 'hex')
const TCP_GSO_FROM_TUN = Buffer.from('01013400a80514001000', 'hex')

t.test('layout: offsets and little-endian fields', async t => {
  t.equal(VNET_HDR_LEN, 10)
  t.same(VnetOff, { FLAGS: 0, GSO_TYPE: 1, HDR_LEN: 2, GSO_SIZE: 4, CSUM_START: 6, CSUM_OFFSET: 8 })
  const buf = Buffer.alloc(12, 0xff)
  const end = writeVnetHdr(buf, 1, { flags: VnetFlags.NEEDS_CSUM, gsoType: GsoType.TCPV4, hdrLen: 0x0134, gsoSize: 1448, csumStart: 20, csumOffset: 16 })
  t.equal(end, 11, 'returns the offset of the IP header')
  t.equal(buf.toString('hex'), 'ff' + '0101' + '3401' + 'a805' + '1400' + '1000' + 'ff', 'bytes as the kernel lays them out')
})

t.test('headers read from a real TUN', async t => {
  t.same(readVnetHdr(UDP_FROM_TUN, 0), { flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: 6 },
    'UDP: checksum partial, field at 20+6 (udp.check)')
  t.same(readVnetHdr(TCP_GSO_FROM_TUN, 0), { flags: 1, gsoType: GsoType.TCPV4, hdrLen: 52, gsoSize: 1448, csumStart: 20, csumOffset: 16 },
    'TCP super-packet: TSO v4, MSS 1448, field at 20+16 (tcp.check)')
  t.equal(formatVnetHdr(readVnetHdr(TCP_GSO_FROM_TUN, 0)), 'needs_csum gso=tcpv4 gso_size=1448 hdr_len=52 csum=20+16')
  t.equal(formatVnetHdr(readVnetHdr(UDP_FROM_TUN, 0)), 'needs_csum gso=none csum=20+6')
  t.equal(formatVnetHdr({ flags: 2, gsoType: GsoType.TCPV6 | GsoType.ECN, hdrLen: 72, gsoSize: 1428, csumStart: 0, csumOffset: 0 }),
    'data_valid gso=tcpv6|ecn gso_size=1428 hdr_len=72')
})

t.test('round trip through write and read', async t => {
  const buf = Buffer.alloc(64)
  for (const h of [
    { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 },
    { flags: 1, gsoType: GsoType.UDP_L4, hdrLen: 28, gsoSize: 1472, csumStart: 20, csumOffset: 6 },
    { flags: 3, gsoType: GsoType.TCPV6 | GsoType.ECN, hdrLen: 0xffff, gsoSize: 0xffff, csumStart: 40, csumOffset: 16 },
  ]) {
    writeVnetHdr(buf, 7, h)
    t.same(readVnetHdr(buf, 7), h, formatVnetHdr(h))
  }
  writeVnetHdr(buf, 0, { gsoSize: 9 })
  t.same(readVnetHdr(buf, 0), { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 9, csumStart: 0, csumOffset: 0 }, 'missing fields are zero')
})

t.test('VnetHdr view: getters, setters, rebinding', async t => {
  const a = Buffer.concat([TCP_GSO_FROM_TUN, Buffer.alloc(20)])
  const b = Buffer.concat([Buffer.alloc(4), UDP_FROM_TUN, Buffer.alloc(20)])
  const v = VnetHdr.forPacket(a, VNET_HDR_LEN)
  t.equal(v.off, 0)
  t.ok(v.isGso())
  t.ok(v.needsCsum())
  t.equal(v.gsoSize(), 1448)
  t.equal(v.hdrLen(), 52)
  t.equal(v.csumStart(), 20)
  t.equal(v.csumOffset(), 16)
  t.equal(v.bindPacket(b, 4 + VNET_HDR_LEN), v, 'bind returns the same view')
  t.notOk(v.isGso())
  t.equal(v.csumOffset(), 6)
  v.setGsoType(GsoType.ECN)
  t.notOk(v.isGso(), 'the ECN bit alone is not a GSO type')
  v.setFlags(VnetFlags.DATA_VALID)
  v.setGsoType(GsoType.UDP_L4)
  v.setHdrLen(28)
  v.setGsoSize(1400)
  v.setCsumStart(40)
  v.setCsumOffset(6)
  t.same(readVnetHdr(b, 4), { flags: 2, gsoType: 5, hdrLen: 28, gsoSize: 1400, csumStart: 40, csumOffset: 6 }, 'setters write through')
  t.notOk(v.needsCsum())
  v.clear()
  t.same(b.subarray(4, 14), Buffer.alloc(10), 'clear zeroes the header')
  t.same(b.subarray(0, 4), Buffer.alloc(4), 'and nothing before it')
  v.bind(a, 0)
  t.equal(v.gsoType(), GsoType.TCPV4)
  t.equal(v.flags(), VnetFlags.NEEDS_CSUM)
})

t.test('clearVnetHdr zeroes only the header in front of the packet', async t => {
  const buf = Buffer.alloc(30, 0xab)
  clearVnetHdr(buf, 12)
  t.equal(buf.toString('hex'), 'abab' + '00'.repeat(10) + 'ab'.repeat(18))
})

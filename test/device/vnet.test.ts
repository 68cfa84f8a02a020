// virtio_net_hdr helpers: byte layout, and headers captured from a real TUN.
import t from 'tap'
import { GsoType, readVnetHdr, VnetFlags, VnetOff, writeVnetHdr } from '../../src/device/vnet'
import { VNET_HDR_LEN } from '../../src/device/device'

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
  t.same(
    readVnetHdr(UDP_FROM_TUN, 0),
    { flags: 1, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 20, csumOffset: 6 },
    'UDP: checksum partial, field at 20+6 (udp.check)',
  )
  t.same(
    readVnetHdr(TCP_GSO_FROM_TUN, 0),
    { flags: 1, gsoType: GsoType.TCPV4, hdrLen: 52, gsoSize: 1448, csumStart: 20, csumOffset: 16 },
    'TCP super-packet: TSO v4, MSS 1448, field at 20+16 (tcp.check)',
  )
})

t.test('round trip through write and read', async t => {
  const buf = Buffer.alloc(64)
  for (const h of [
    { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 },
    { flags: 1, gsoType: GsoType.UDP_L4, hdrLen: 28, gsoSize: 1472, csumStart: 20, csumOffset: 6 },
    { flags: 3, gsoType: GsoType.TCPV6 | GsoType.ECN, hdrLen: 0xffff, gsoSize: 0xffff, csumStart: 40, csumOffset: 16 },
  ]) {
    writeVnetHdr(buf, 7, h)
    t.same(readVnetHdr(buf, 7), h, JSON.stringify(h))
  }
  writeVnetHdr(buf, 0, { gsoSize: 9 })
  t.same(readVnetHdr(buf, 0), { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 9, csumStart: 0, csumOffset: 0 }, 'missing fields are zero')
})

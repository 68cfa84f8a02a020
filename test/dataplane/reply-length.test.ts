// An answer written in place by the NAT step (echo reply from a ClusterIP) leaves the loop with the length its own IP
// header states: a request with IPv4 options gets a shorter reply (options dropped), with no stale bytes after it.
import t from 'tap'
import { loopOptions, startLoop } from '../helpers/loop'
import { MemoryDevice } from '../../src/device/memory'
import { type PacketNat } from '../../src/dataplane/loop'
import { NatAction } from '../../src/nat/verdict'
import { icmp4EchoToReply } from '../../src/wire/build'
import { fillIpv4Checksum } from '../../src/wire/ipv4'
import { checksumProblems, echo4, echo6, ip4 } from '../nat/packets'
import { ipPacketLength } from '../../src/wire/packet'

const NODE = '172.18.0.11'
const POD = '10.100.85.50'
const VIP = '10.96.0.20'

/** NAT that answers every echo request in place, as NatEngine does for a ClusterIP. */
const nat: PacketNat = {
  process: (buf, _o, _l, info) => {
    icmp4EchoToReply(buf, info.l3Off)
    return NatAction.REPLY
  },
  writeReject: () => 0,
}

/** An echo request with `opt` bytes of IPv4 options (NOPs) between the header and the ICMP message. */
function echoWithOptions(opt: number): Buffer {
  const plain = echo4(POD, VIP, 0x1234, 7)
  const p = Buffer.alloc(plain.length + opt, 1) // 1 = NOP
  plain.copy(p, 0, 0, 20)
  plain.copy(p, 20 + opt, 20)
  p[0] = 0x40 | ((20 + opt) >> 2)
  p.writeUInt16BE(p.length, 2)
  fillIpv4Checksum(p, 0)
  return p
}

t.test('an echo reply that drops IPv4 options is written at its own length', async t => {
  const dev = new MemoryDevice({ autoFlush: false })
  const dp = startLoop(
    dev,
    nat,
    loopOptions(NODE, {
      podNet: { net: ip4('10.100.85.0'), mask: 0xffffff00 },
      clusterNet: { net: ip4('10.100.0.0'), mask: 0xffff0000 },
      serviceNet: { net: ip4('10.96.0.0'), mask: 0xfff00000 },
    }),
  )
  const req = echoWithOptions(8)
  dev.inject(req)
  dev.flush()
  t.equal(dev.written.length, 1)
  const out = dev.written[0]!.data
  t.equal(out.length, req.length - 8, 'the 8 option bytes are gone from what is written')
  t.equal(out.readUInt16BE(2), out.length, 'IPv4 total length equals the written length')
  t.equal(out[20], 0, 'echo reply')
  t.same(checksumProblems(out), [])
  t.equal(dp.counters.replied, 1)
})

t.test('ipPacketLength reads the length from the IP header, not the buffer', async t => {
  const v4 = Buffer.concat([echo4(POD, VIP, 1, 1), Buffer.alloc(6)]) // link padding after the packet
  t.equal(ipPacketLength(v4, 0), v4.length - 6)
  const v6 = echo6('fd00:100::50', 'fd00:96::3', 9, 1)
  const at = Buffer.concat([Buffer.alloc(10), v6])
  t.equal(ipPacketLength(at, 10), v6.length)
})

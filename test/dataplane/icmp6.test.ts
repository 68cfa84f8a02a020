// ICMPv6 errors tundra sends (issue 14): hop limit exceeded where it routes, a service address with no ClusterIP, a
// ClusterIP port it does not serve. RFC 4443: from an address of the node (the ClusterIP for a closed port), as much
// of the invoking packet as fits in 1280 bytes, checksum over the pseudo-header, and one rate limit with IPv4's.
import t from 'tap'
import { loopOptions, startLoop } from '../helpers/loop'
import { MemoryDevice } from '../../src/device/memory'
import { Dataplane, dropNames, type LoopOptions } from '../../src/dataplane/loop'
import { NatEngine } from '../../src/nat/engine'
import { compileNat } from '../../src/nat/compile'
import { parseIpv6, ipv6ToString } from '../../src/wire/ipv6'
import { BASE_CONFIG, NODE_IP, NODE_IP6, checksumProblems, ep, icmpError6, port, svc, tcp6, udp4, udp6 } from '../nat/packets'

const POD6 = 'fd00:100::7'
const VIP6 = 'fd00:96::20'
const cluster = {
  services: [
    svc('v6', {
      clusterIPs: [VIP6],
      ipFamilies: [6],
      ports: [port('u', 53, 5353, 'UDP')],
      endpoints: [ep('fd00:100::2', [{ name: 'u', protocol: 'UDP', port: 5353 }])],
    }),
  ],
  nodes: [],
  pods: [],
}

function v6(s: string): Uint8Array {
  const b = new Uint8Array(16)
  if (parseIpv6(s, b, 0) === undefined) throw new Error(s)
  return b
}

function setup(o: Partial<LoopOptions> = {}, withNode6 = true): { dev: MemoryDevice; dp: Dataplane } {
  const dev = new MemoryDevice({ autoFlush: false })
  const engine = new NatEngine(compileNat(cluster, BASE_CONFIG), { seed: 1 })
  const opts = loopOptions(NODE_IP, {
    serviceNet6: { bytes: v6('fd00:96::'), prefix: 112 },
    ...(withNode6 ? { nodeIp6: v6(NODE_IP6) } : {}),
    ...o,
  })
  return { dev, dp: startLoop(dev, engine, opts) }
}

function hops(p: Buffer, n: number): Buffer {
  p[7] = n
  return p
}

t.test('hop limit 1 where tundra routes: time exceeded from the node, the packet quoted', async t => {
  const { dev, dp } = setup()
  const sent = hops(udp6(POD6, 'fd00:100::9', 1000, 2000, 40), 1)
  dev.inject(sent)
  dev.inject(hops(udp6(POD6, 'fd00:100::9', 1000, 2001, 40), 2))
  dev.flush()
  const err = dev.written.find(w => w.data[6] === 58)?.data
  const fwd = dev.written.find(w => w.data[6] === 17)?.data
  t.equal(dev.written.length, 2)
  t.equal(err![40], 3, 'time exceeded')
  t.equal(err![41], 0, 'hop limit exceeded in transit')
  t.equal(ipv6ToString(err!, 8), NODE_IP6, 'from the node')
  t.equal(ipv6ToString(err!, 24), POD6, 'to the sender')
  t.same(err!.subarray(48), sent, 'the whole packet quoted, as the client sent it')
  t.same(checksumProblems(err!), [], 'checksum over the pseudo-header')
  t.equal(fwd![7], 1, 'hop limit 2 forwarded with 1')
  t.same(dropNames(dp.counters), { ttl_exceeded: 1 })
  t.equal(dp.counters.icmpErrors, 1)
})

t.test('an error quotes as much as fits in 1280 bytes', async t => {
  const { dev } = setup()
  const big = hops(tcp6(POD6, 'fd00:100::9', 1000, 80, 0x10, { payload: 1400 }), 1)
  dev.inject(big)
  dev.flush()
  const err = dev.written[0]!.data
  t.equal(err.length, 1280)
  t.equal(err.readUInt16BE(4), 1240, 'payload length')
  t.same(err.subarray(48), big.subarray(0, 1232))
  t.same(checksumProblems(err), [])
})

t.test('a ClusterIP port not served: port unreachable from the ClusterIP', async t => {
  const { dev, dp } = setup()
  const sent = udp6(POD6, VIP6, 1000, 54)
  dev.inject(sent)
  dev.flush()
  const err = dev.written[0]!.data
  t.equal(err[40], 1, 'destination unreachable')
  t.equal(err[41], 4, 'port unreachable')
  t.equal(ipv6ToString(err, 8), VIP6)
  t.equal(ipv6ToString(err, 24), POD6)
  const quoted = Buffer.from(sent)
  quoted[7]!-- // tundra is a hop before NAT: the hop limit went down, as the TTL does in the ICMPv4 reject
  t.same(err.subarray(48), quoted)
  t.same(checksumProblems(err), [])
  t.equal(dp.counters.rejected, 1)
})

t.test('a service address with no ClusterIP: address unreachable from the node, counted as no_service', async t => {
  const { dev, dp } = setup()
  dev.inject(udp6(POD6, 'fd00:96::99', 1000, 53))
  dev.flush()
  const err = dev.written[0]!.data
  t.equal(err[40], 1, 'destination unreachable')
  t.equal(err[41], 3, 'address unreachable')
  t.equal(ipv6ToString(err, 8), NODE_IP6)
  t.same(checksumProblems(err), [])
  t.same(dropNames(dp.counters), { no_service: 1 })
})

t.test('no node IPv6 address: dropped and counted, nothing sent', async t => {
  const { dev, dp } = setup({}, false)
  dev.inject(hops(udp6(POD6, 'fd00:100::9', 1000, 2000), 1))
  dev.inject(udp6(POD6, 'fd00:96::99', 1000, 53))
  dev.flush()
  t.equal(dev.written.length, 0)
  t.same(dropNames(dp.counters), { ttl_exceeded: 1, no_service: 1 })
})

t.test('never an error about an error, nor to a multicast or unspecified source', async t => {
  const { dev, dp } = setup()
  dev.inject(hops(icmpError6(POD6, udp6('fd00:100::9', POD6, 53, 1000), 1, 4), 1))
  dev.inject(hops(udp6('::', 'fd00:100::9', 1000, 2000), 1))
  dev.inject(hops(udp6('ff02::1', 'fd00:100::9', 1000, 2000), 1))
  dev.flush()
  t.equal(dev.written.length, 0)
  t.equal(
    dp.counters.drops.reduce((a, b) => a + b, 0),
    3,
  )
})

t.test('one rate limit for ICMPv4 and ICMPv6 errors', async t => {
  const { dev, dp } = setup({ icmpRate: { perSecond: 0.001, burst: 4 } })
  for (let i = 0; i < 5; i++) dev.inject(hops(udp6(POD6, 'fd00:100::9', 1000 + i, 2000), 1))
  for (let i = 0; i < 5; i++) {
    const p = udp4('10.100.0.7', '10.100.0.9', 1000 + i, 2000)
    p[8] = 1
    p.writeUInt16BE(0, 10)
    let s = 0
    for (let j = 0; j < 20; j += 2) s += p.readUInt16BE(j)
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16)
    p.writeUInt16BE(~s & 0xffff, 10)
    dev.inject(p)
  }
  dev.flush()
  t.equal(dev.written.length, 4, 'the burst')
  t.equal(dp.counters.icmpErrors, 4)
  t.equal(dp.counters.icmpRateLimited, 6)
  t.same(dropNames(dp.counters), { ttl_exceeded: 10 })
})

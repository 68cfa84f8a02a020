// The packet loop's guards against untrusted pods (issue 14), on the in-memory device: VXLAN only from configured
// peers with their own inner sources, sources no local pod may use, TTL decremented (time exceeded from the node),
// untranslated service addresses refused, ICMP errors rate-limited, and batch overflow counted as a drop.
import t from 'tap'
import { loopOptions, startLoop } from '../helpers/loop'
import { MemoryDevice } from '../../src/device/memory'
import { Dataplane, dropNames, LOOP_DROP_NAMES, LoopDrop, type LoopOptions, type PacketNat } from '../../src/dataplane/loop'
import { encapsulate, vxlanMac } from '../../src/dataplane/vxlan'
import { DROP_NAMES } from '../../src/wire/drop'
import { NatAction } from '../../src/nat/verdict'
import { buildIcmp4Error } from '../../src/wire/build'
import type { PacketInfo } from '../../src/wire/packet'
import { checksumProblems, ip4, udp4 } from '../nat/packets'

const NODE = '172.18.0.11'
const PEER = '172.18.0.12'
const POD = '10.100.85.50'
const POD2 = '10.100.85.31'
const REMOTE_POD = '10.100.86.31'
const SVC_UNUSED = '10.96.99.99'
const REJECTED = '10.96.3.10'

/** NAT that rejects REJECTED and leaves everything else alone. */
const nat: PacketNat = {
  process: (_b, _o, _l, info) => (info.dst === ip4(REJECTED) ? NatAction.REJECT : NatAction.PASS),
  writeReject: (buf: Buffer, off: number, len: number, info: PacketInfo, out: Buffer, outOff: number) =>
    buildIcmp4Error(out, outOff, buf, off, len, info.dst, 3, 3),
}

function setup(o: Partial<LoopOptions> = {}, dev = new MemoryDevice({ autoFlush: false })): { dev: MemoryDevice; dp: Dataplane } {
  const opts = loopOptions(NODE, {
    peers: [{ net: ip4('10.100.86.0'), mask: 0xffffff00, ip: ip4(PEER), mac: vxlanMac(ip4(PEER)) }],
    podNet: { net: ip4('10.100.85.0'), mask: 0xffffff00 },
    clusterNet: { net: ip4('10.100.0.0'), mask: 0xffff0000 },
    serviceNet: { net: ip4('10.96.0.0'), mask: 0xfff00000 },
    ...o,
  })
  return { dev, dp: startLoop(dev, nat, opts) }
}

function vxlanFrom(outerSrc: string, inner: Buffer): Buffer {
  const out = Buffer.alloc(inner.length + 50)
  const n = encapsulate(out, 0, inner, 0, inner.length, ip4(outerSrc), ip4(NODE), 4096, vxlanMac(ip4(outerSrc)), vxlanMac(ip4(NODE)), 7)
  return out.subarray(0, n)
}

function withTtl(p: Buffer, ttl: number): Buffer {
  p[8] = ttl
  p.writeUInt16BE(0, 10)
  let s = 0
  for (let i = 0; i < 20; i += 2) s += p.readUInt16BE(i)
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16)
  p.writeUInt16BE(~s & 0xffff, 10)
  return p
}

t.test("drop names: the loop's reasons follow the wire layer's, one name each", async t => {
  t.same(LOOP_DROP_NAMES.slice(0, DROP_NAMES.length), DROP_NAMES)
  for (const [k, v] of Object.entries(LoopDrop)) t.equal(LOOP_DROP_NAMES[v], k.toLowerCase())
})

t.test('VXLAN only from a configured peer, with inner sources of its own', async t => {
  const { dev, dp } = setup()
  dev.inject(vxlanFrom('172.18.0.99', udp4(REMOTE_POD, POD, 1000, 2000)))
  dev.inject(vxlanFrom(POD2, udp4(REMOTE_POD, POD, 1000, 2000)))
  dev.inject(vxlanFrom(PEER, udp4(POD2, POD, 1000, 2000)))
  dev.inject(vxlanFrom(PEER, udp4(REMOTE_POD, POD, 1000, 2001)))
  dev.inject(vxlanFrom(PEER, udp4(PEER, POD, 1000, 2002)))
  dev.flush()
  t.same(dropNames(dp.counters), { vxlan_not_peer: 2, vxlan_spoofed_inner: 1 })
  t.equal(dp.counters.vxlanIn, 2)
  t.same(
    dev.written.map(w => w.data.readUInt16BE(22)),
    [2001, 2002],
    "the peer's own pod and node address get through",
  )
})

t.test("a peer's VXLAN: reserved flag bits ignored, a bad inner IPv4 header checksum dropped", async t => {
  const { dev, dp } = setup()
  const reserved = vxlanFrom(PEER, udp4(REMOTE_POD, POD, 1000, 2003))
  reserved[36] = 0xff // every flag bit set: RFC 7348 §5 says receivers ignore all but I
  dev.inject(reserved)
  const inner = udp4(REMOTE_POD, POD, 1000, 2004)
  inner[10] = inner[10]! ^ 0x01
  dev.inject(vxlanFrom(PEER, inner))
  dev.flush()
  t.same(dropNames(dp.counters), { vxlan_inner_checksum: 1 })
  t.same(
    dev.written.map(w => w.data.readUInt16BE(22)),
    [2003],
  )
})

t.test('sources no pod of this node may use are dropped; NodePorts from remote pods pass', async t => {
  const { dev, dp } = setup()
  dev.inject(udp4(REMOTE_POD, POD, 1, 2)) // another node's block, not over VXLAN
  dev.inject(udp4('10.100.200.1', POD, 1, 2)) // in no node's block
  dev.inject(udp4(REJECTED, POD, 1, 2)) // a ClusterIP
  dev.inject(udp4('10.96.0.10', POD, 1, 3)) // the DNS address (the kernel's ICMP may come from it)
  dev.inject(udp4(REMOTE_POD, NODE, 1, 30080)) // a remote pod reaching this node's NodePort over the node network
  dev.inject(udp4(POD2, POD, 1, 4))
  dev.flush()
  t.same(dropNames(dp.counters), { spoofed_source: 3 })
  t.same(
    dev.written.map(w => w.data.readUInt16BE(22)),
    [3, 30080, 4],
  )
})

t.test('the TTL goes down where tundra routes; at 1 the node answers time exceeded', async t => {
  const { dev, dp } = setup()
  dev.inject(withTtl(udp4(POD, POD2, 1, 2), 64))
  dev.inject(withTtl(udp4(POD, POD2, 1, 2), 1))
  dev.flush()
  const [fwd, err] = dev.written
  t.equal(fwd!.data[8], 63, 'decremented')
  t.same(checksumProblems(fwd!.data), [], 'header checksum updated')
  t.equal(err!.data[20], 11, 'ICMP time exceeded')
  t.equal(err!.data.readUInt32BE(12), ip4(NODE), 'from the node address')
  t.equal(err!.data.readUInt32BE(16), ip4(POD), 'to the sender')
  t.same(dropNames(dp.counters), { ttl_exceeded: 1 })
  t.equal(dp.counters.icmpErrors, 1)
})

t.test('a service address that is no ClusterIP is dropped, not routed back to the kernel', async t => {
  const { dev, dp } = setup()
  dev.inject(udp4(POD, SVC_UNUSED, 1, 2))
  dev.inject(udp4(POD, '10.96.0.10', 1, 53 + 1)) // the DNS address (TCP DNS lives on lo): passes
  dev.flush()
  t.equal(dev.written.length, 1, 'no ICMP answer (kube-proxy nftables: "Drop traffic to unallocated ClusterIPs")')
  const [fwd] = dev.written
  t.equal(fwd!.data.readUInt32BE(16), ip4('10.96.0.10'), 'the DNS address is routed')
  t.same(dropNames(dp.counters), { no_service: 1 })
})

t.test('ICMP errors are rate-limited by a token bucket', async t => {
  const { dev, dp } = setup({ icmpRate: { perSecond: 0, burst: 5 } })
  for (let i = 0; i < 20; i++) dev.inject(udp4(POD, REJECTED, 1000 + i, 9))
  dev.flush()
  t.equal(dp.counters.rejected, 20)
  t.equal(dp.counters.icmpErrors, 5, 'the burst')
  t.equal(dp.counters.icmpRateLimited, 15, 'the rest suppressed and counted')
  t.equal(dev.written.length, 5)
})

t.test('a batch larger than the output arrays: the overflow is a counted drop, not forwarded', async t => {
  const dev = new MemoryDevice({ autoFlush: false, maxBatch: 8200, slabBytes: 8 << 20, capture: false })
  const { dp } = setup({}, dev)
  for (let i = 0; i < 8200; i++) dev.inject(udp4(POD, POD2, 1, 2))
  dev.flush()
  t.equal(dp.counters.forwarded, 8192)
  t.same(dropNames(dp.counters), { tx_overflow: 8 })
})

t.test('the incremental TTL checksum update is right for every checksum value', async t => {
  // The IPv4 ID field moves the header checksum through all 65536 values (the 0xfeff -> 0xffff corner included).
  const { dev } = setup()
  for (let id = 0; id < 65536; id++) {
    const p = withTtl(udp4(POD, POD2, 1, 2), 9)
    p.writeUInt16BE(id, 4)
    dev.inject(withTtl(p, 9))
  }
  dev.flush()
  let bad = 0
  for (const w of dev.written) if (checksumProblems(w.data).includes('ipv4 header') || w.data[8] !== 8) bad++
  t.equal(dev.written.length, 65536)
  t.equal(bad, 0, 'every header checksum verifies after the decrement')
})

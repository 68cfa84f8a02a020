// Whole-path fuzz (issue 14): seeded random packets, valid and malformed (IPv4/IPv6, TCP/UDP/SCTP/ICMP/ICMPv6,
// fragments, VXLAN from peers and strangers, DNS queries, bogus vnet/GSO headers), through the packet path as
// src/agent/packet-path.ts wires it (Dataplane + NatEngine + DnsServer on the in-memory device), with random table
// installs and clock jumps in between. Replay a failure with TUNDRA_FUZZ_SEED=<seed>; TUNDRA_FUZZ_CASES sets the count.
//
// Asserted per case: nothing throws; the packet has exactly one outcome (forwarded, sent to a peer, answered, rejected,
// handed upstream, or dropped) and every drop has a reason (a loop reason or a NAT drop counter); every packet written
// has IPv4/IPv6/UDP length fields that match its bytes, and no checksum problem the input did not already have.
import t from 'tap'
import { MemoryDevice, type CapturedPacket } from '../../src/device/memory'
import { Dataplane, type LoopOptions, type PacketDns } from '../../src/dataplane/loop'
import { encapsulate, vxlanMac } from '../../src/dataplane/vxlan'
import { NatEngine } from '../../src/nat/engine'
import { compileNat, type NatTable } from '../../src/nat/compile'
import { updateNat } from '../../src/nat/update'
import { natImage } from '../../src/nat/image'
import { NAT_STAT_NAMES } from '../../src/nat/verdict'
import { DnsServer } from '../../src/dns/server'
import { ZoneCompiler } from '../../src/dns/image'
import { monoSeconds } from '../../src/nat/clock'
import { GsoType, VnetFlags } from '../../src/device/vnet'
import { fillIpv4Checksum } from '../../src/wire/ipv4'
import type { Cluster, Service } from '../../src/model/cluster'
import { mulberry32, testSeed } from '../helpers/seed'
import { query } from '../dns/fixtures/dnsq'
import {
  ACK,
  BASE_CONFIG,
  FIN,
  NODE,
  NODE_IP,
  PSH,
  RST,
  SYN,
  checksumProblems,
  echo4,
  echo6,
  ep,
  fragment4,
  fragment6,
  icmpError4,
  icmpError6,
  ip4,
  port,
  sctp4,
  svc,
  tcp4,
  tcp6,
  udp4,
  udp6,
} from '../nat/packets'

const CASES = Number(process.env['TUNDRA_FUZZ_CASES'] ?? 200_000)
const PEER_IP = '192.168.1.11'
const DNS_IP = '10.96.0.10'

// ---------------------------------------------------------------------------------------------------------------
// The cluster: local and remote endpoints, TCP/UDP/SCTP, IPv6, a NodePort, affinity, a service without endpoints.

function services(rnd: () => number): Service[] {
  const some = <T>(xs: T[]): T[] => xs.filter(() => rnd() < 0.8)
  const all: Service[] = [
    svc('web', {
      clusterIPs: ['10.96.0.20'],
      ports: [port('http', 80, 8080), port('dns', 53, 5353, 'UDP')],
      endpoints: some([
        ep('10.100.1.2', [
          { name: 'http', protocol: 'TCP', port: 8080 },
          { name: 'dns', protocol: 'UDP', port: 5353 },
        ]),
        ep(
          '10.100.2.3',
          [
            { name: 'http', protocol: 'TCP', port: 8080 },
            { name: 'dns', protocol: 'UDP', port: 5353 },
          ],
          { node: 'node-b' },
        ),
      ]),
    }),
    svc('np', {
      type: 'NodePort',
      clusterIPs: ['10.96.0.30'],
      ports: [port('http', 80, 80, 'TCP', 30080)],
      endpoints: some([ep('10.100.1.4', 80, { node: NODE }), ep('10.100.2.5', 80, { node: 'node-b' })]),
      affinityTimeout: rnd() < 0.5 ? 10800 : 0,
    }),
    svc('sctp', {
      clusterIPs: ['10.96.0.40'],
      ports: [port('s', 9000, 9000, 'SCTP')],
      endpoints: [ep('10.100.1.6', [{ name: 's', protocol: 'SCTP', port: 9000 }])],
    }),
    svc('empty', { clusterIPs: ['10.96.0.50'], ports: [port('http', 80, 8080)], endpoints: [] }),
    svc('v6', {
      clusterIPs: ['fd00:96::20'],
      ipFamilies: [6],
      ports: [port('http', 80, 8080), port('u', 53, 5353, 'UDP')],
      endpoints: some([
        ep('fd00:100::2', [
          { name: 'http', protocol: 'TCP', port: 8080 },
          { name: 'u', protocol: 'UDP', port: 5353 },
        ]),
      ]),
    }),
  ]
  return some(all)
}

// ---------------------------------------------------------------------------------------------------------------
// Addresses a packet may come from or go to.

const SRC4 = [
  '10.100.1.7',
  '10.100.1.2',
  '10.100.1.4',
  '10.100.2.9',
  '10.100.200.1',
  NODE_IP,
  '10.96.0.20',
  DNS_IP,
  '8.8.8.8',
  '127.0.0.1',
  '0.0.0.0',
  '255.255.255.255',
]
const DST4 = [
  '10.96.0.20',
  '10.96.0.30',
  '10.96.0.40',
  '10.96.0.50',
  '10.96.9.9',
  DNS_IP,
  '10.100.1.2',
  '10.100.2.3',
  '10.100.9.9',
  NODE_IP,
  PEER_IP,
  '1.2.3.4',
  '224.0.0.1',
]
const SRC6 = ['fd00:100::7', 'fd00:100::2', 'fd00:96::20', 'fe80::1', '::1', '2001:db8::1']
const DST6 = ['fd00:96::20', 'fd00:96::99', 'fd00:100::2', 'fd00:1::10', '2001:db8::2', 'ff02::1']
const PORTS = [80, 53, 5353, 8080, 9000, 30080, 4789, 0, 1, 65535]

interface Case {
  readonly data: Buffer
  readonly vnet?: { flags: number; gsoType: number; gsoSize: number; hdrLen: number; csumStart: number; csumOffset: number }
}

class Gen {
  private readonly dnsQueries: Buffer[]
  constructor(private readonly rnd: () => number) {
    this.dnsQueries = [
      query('web.default.svc.cluster.local', 'A'),
      query('web.default.svc.cluster.local', 'AAAA', { edns: 4096 }),
      query('v6.default.svc.cluster.local', 'AAAA'),
      query('_http._tcp.web.default.svc.cluster.local', 'SRV'),
      query('nope.default.svc.cluster.local', 'A'),
      query('example.com', 'A'),
      query('10-100-1-2.default.pod.cluster.local', 'A'),
      query('version.bind', 'TXT', { class: 'CH' }),
      query('cluster.local', 'SOA', { edns: 512 }),
      query('web', 'A'),
    ]
  }
  int(n: number): number {
    return Math.floor(this.rnd() * n)
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!
  }
  chance(p: number): boolean {
    return this.rnd() < p
  }

  private l4v4(src: string, dst: string): Buffer {
    const sp = this.chance(0.5) ? 1024 + this.int(60000) : this.pick(PORTS)
    const dp = this.pick(PORTS)
    switch (this.int(7)) {
      case 0:
      case 1:
        return tcp4(src, dst, sp, dp, this.pick([SYN, SYN, ACK, SYN | ACK, FIN | ACK, RST, PSH | ACK, 0, this.int(256)]), {
          seq: this.int(0x100000000),
          ack: this.int(0x100000000),
          payload: this.chance(0.3) ? this.int(1400) : 0,
        })
      case 2:
        return udp4(src, dst, sp, dp, this.int(600), this.chance(0.9))
      case 3:
        return echo4(src, dst, this.int(65536), this.int(65536), this.int(64))
      case 4:
        return sctp4(src, dst, sp, dp)
      case 5: {
        const inner = this.chance(0.5) ? tcp4(dst, src, dp, sp, SYN | ACK) : udp4(dst, src, dp, sp, 8)
        return icmpError4(this.pick(SRC4), inner, this.pick([3, 11, 12, 5, 0]), this.int(16), this.pick([8, 20, 64]))
      }
      default:
        return this.dns4(src)
    }
  }

  private dns4(src: string): Buffer {
    const q = Buffer.from(this.pick(this.dnsQueries))
    if (this.chance(0.3)) q[this.int(q.length)] = this.int(256)
    const b = udp4(src, DNS_IP, 1024 + this.int(60000), 53, q.length)
    q.copy(b, 28)
    b.writeUInt16BE(0, 26)
    return b
  }

  private l4v6(src: string, dst: string): Buffer {
    const sp = 1024 + this.int(60000)
    const dp = this.pick(PORTS)
    switch (this.int(4)) {
      case 0:
        return tcp6(src, dst, sp, dp, this.pick([SYN, ACK, SYN | ACK, RST, FIN | ACK]), { payload: this.chance(0.2) ? this.int(1200) : 0 })
      case 1:
        return udp6(src, dst, sp, dp, this.int(300))
      case 2:
        return echo6(src, dst, this.int(65536), this.int(65536))
      default:
        return icmpError6(this.pick(SRC6), tcp6(dst, src, dp, sp, SYN | ACK), this.pick([1, 2, 3, 4, 128]), this.int(8))
    }
  }

  /** One case: a packet (or one fragment of one), maybe mangled, maybe in VXLAN, maybe with a vnet header. */
  next(vnetDev: boolean): Case[] {
    let pkts: Buffer[]
    const v6 = this.chance(0.25)
    const p = v6 ? this.l4v6(this.pick(SRC6), this.pick(DST6)) : this.l4v4(this.pick(SRC4), this.pick(DST4))
    pkts = [p]
    if (this.chance(0.08) && p.length > 96) {
      const chunk = 8 * (1 + this.int(Math.min(64, (p.length - 40) >> 3)))
      try {
        pkts = v6 ? fragment6(p, chunk, this.int(0x100000000)) : fragment4(p, chunk, this.int(65536))
      } catch {
        pkts = [p]
      }
      if (this.chance(0.3)) pkts.reverse()
      if (this.chance(0.3)) pkts = pkts.slice(1)
    }
    const out: Case[] = []
    for (let pkt of pkts) {
      if (this.chance(0.1) && !v6) {
        const outerSrc = this.chance(0.7) ? PEER_IP : this.pick(SRC4)
        const o = Buffer.alloc(pkt.length + 50)
        const n = encapsulate(
          o,
          0,
          pkt,
          0,
          pkt.length,
          ip4(outerSrc),
          ip4(NODE_IP),
          this.chance(0.9) ? 4096 : this.int(1 << 24),
          vxlanMac(ip4(outerSrc)),
          vxlanMac(ip4(NODE_IP)),
          this.int(65536),
        )
        pkt = o.subarray(0, n)
      }
      if (this.chance(0.25)) pkt = this.mangle(pkt)
      if (pkt.length === 0) pkt = Buffer.from([this.int(256)])
      const c: Case = vnetDev && this.chance(0.5) ? { data: pkt, vnet: this.vnetHeader(pkt) } : { data: pkt }
      out.push(c)
    }
    return out
  }

  private mangle(p: Buffer): Buffer {
    let b = Buffer.from(p)
    const n = 1 + this.int(3)
    for (let i = 0; i < n; i++) {
      switch (this.int(7)) {
        case 0:
          b[this.int(b.length)] = this.int(256)
          break
        case 1:
          b = b.subarray(0, this.int(b.length + 1))
          break
        case 2:
          b = Buffer.concat([b, Buffer.alloc(this.int(64), this.int(256))])
          break
        case 3:
          if (b.length >= 6) b.writeUInt16BE(this.int(65536), this.pick([2, 4]))
          break
        case 4:
          if (b.length >= 1) b[0] = (b[0]! & 0xf0) | this.int(16)
          break
        case 5:
          if (b.length >= 1) b[0] = (this.int(16) << 4) | (b[0]! & 0x0f)
          break
        default: {
          // a field of the L4 header (ports, lengths, offsets, ICMP type), checksum left as it was
          const o = this.int(Math.max(1, Math.min(b.length, 80)))
          if (o < b.length) b[o] = this.int(256)
        }
      }
    }
    // The kernel checks the IPv4 header checksum before the TUN sees a packet: keep it right half the time.
    if (this.chance(0.5) && b.length >= 20 && b[0]! >> 4 === 4 && (b[0]! & 0x0f) * 4 <= b.length) fillIpv4Checksum(b, 0)
    return b
  }

  private vnetHeader(p: Buffer): NonNullable<Case['vnet']> {
    const bogus = this.chance(0.5)
    return {
      flags: bogus ? this.int(256) : this.pick([0, VnetFlags.NEEDS_CSUM, VnetFlags.DATA_VALID]),
      gsoType: bogus ? this.int(256) : this.pick([GsoType.NONE, GsoType.NONE, GsoType.TCPV4, GsoType.TCPV6, GsoType.UDP_L4]),
      gsoSize: bogus ? this.int(65536) : this.pick([0, 1, 536, 1400, 1448]),
      hdrLen: this.int(128),
      csumStart: bogus ? this.int(65536) : this.pick([20, 40, 0, p.length]),
      csumOffset: bogus ? this.int(65536) : this.pick([16, 6, 2]),
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Checks on what was written.

const IPV4_VXLAN_INNER = 20 + 8 + 8 + 14

/** Whether p looks like VXLAN (UDP 4789, unfragmented, the I flag) carrying an inner IPv4 header. */
function isVxlan(p: Buffer): boolean {
  // RFC 7348 §5: only the I flag counts; the reserved bits are ignored on receipt
  return (
    p.length >= IPV4_VXLAN_INNER + 20 &&
    p[0] === 0x45 &&
    p[9] === 17 &&
    (p.readUInt16BE(6) & 0x3fff) === 0 &&
    p.readUInt16BE(22) === 4789 &&
    (p[28]! & 0x08) !== 0 &&
    p.readUInt16BE(IPV4_VXLAN_INNER - 2) === 0x0800
  )
}

/** Whether p is VXLAN that tundra encapsulated (from the node address). */
function ourVxlan(p: Buffer): boolean {
  return isVxlan(p) && p.readUInt32BE(12) === ip4(NODE_IP)
}

/**
 * Length fields that disagree with the bytes, or '' (recurses into VXLAN when `encapsulated`: tundra built it, rather
 * than passing on what the node itself sent to a peer). A UDP length short of the payload is legal on input (the
 * kernel trims) and passes through: checked only when `udp` is set.
 */
function lengthProblem(p: Buffer, udp = true, gso = false, encapsulated = false): string {
  if (p.length < 1) return 'empty packet'
  const v = p[0]! >> 4
  if (v === 4) {
    if (p.length < 20) return `IPv4 packet of ${p.length} bytes`
    const ihl = (p[0]! & 0x0f) * 4
    let tl = p.readUInt16BE(2)
    // a TCP GSO packet may leave the total length 0 (the kernel's iph_totlen then takes the buffer's)
    if (tl === 0 && gso) tl = p.length
    if (tl !== p.length) return `IPv4 total length ${tl}, ${p.length} bytes`
    if (ihl < 20 || ihl > tl) return `IPv4 header length ${ihl}`
    const frag = (p.readUInt16BE(6) & 0x3fff) !== 0
    if (encapsulated && ourVxlan(p)) return lengthProblem(p.subarray(IPV4_VXLAN_INNER), udp)
    if (p[9] === 17 && !frag && udp) {
      if (tl - ihl < 8) return 'UDP header cut short'
      const ul = p.readUInt16BE(ihl + 4)
      if (ul !== tl - ihl) return `UDP length ${ul}, ${tl - ihl} bytes`
    }
    return ''
  }
  if (v === 6) {
    if (p.length < 40) return `IPv6 packet of ${p.length} bytes`
    let pl = p.readUInt16BE(4)
    if (pl === 0 && gso) pl = p.length - 40
    if (pl + 40 !== p.length) return `IPv6 payload length ${pl}, ${p.length - 40} bytes`
    if (p[6] === 17 && udp) {
      const ul = p.readUInt16BE(44)
      if (ul !== pl) return `UDP length ${ul}, ${pl} bytes`
    }
    return ''
  }
  return `IP version ${v}`
}

/** Checksum problems of a packet (of the inner one for VXLAN); undefined when it cannot be read far enough. */
function csumProblems(p: Buffer): string[] | undefined {
  try {
    if (isVxlan(p)) {
      const outer = checksumProblems(p.subarray(0, 28)).filter(x => x === 'ipv4 header')
      const inner = csumProblems(p.subarray(IPV4_VXLAN_INNER))
      return inner === undefined ? undefined : [...outer, ...inner]
    }
    return checksumProblems(p)
  } catch {
    return undefined
  }
}

/** Problems of the input itself, and those an output quoting or forwarding it may inherit. */
function inherited(data: Buffer, input: readonly string[] | undefined): Set<string> | undefined {
  if (input === undefined) return undefined
  const s = new Set(input)
  // a fragment's L4 checksum covers bytes it does not hold: a quote of one cannot be checked
  if (data.length >= 20 && data[0]! >> 4 === 4 && (data.readUInt16BE(6) & 0x3fff) !== 0) s.add('quoted l4')
  if (data.length >= 40 && data[0]! >> 4 === 6 && data[6] === 44) s.add('quoted l4')
  // nor a UDP datagram sent without a checksum (0)
  if (data.length >= 28 && data[0] === 0x45 && data[9] === 17 && data.readUInt16BE(26) === 0) s.add('quoted l4')
  for (const x of input) {
    if (x === 'ipv4 header') s.add('quoted ipv4 header')
    if (x === 'tcp' || x === 'udp' || x === 'icmp' || x === 'icmpv6') s.add('quoted l4')
    if (x.startsWith('quoted')) s.add(x)
  }
  return s
}

// ---------------------------------------------------------------------------------------------------------------

interface Rig {
  readonly dev: MemoryDevice
  readonly dp: Dataplane
  readonly engine: NatEngine
  readonly dns: DnsServer
  readonly zc: ZoneCompiler
  /** the NAT table installed last (a delta is made against it) */
  table: NatTable
  upstream: number
}

function rig(vnetHdr: boolean, seed: number, cluster: Cluster, rnd: () => number): Rig {
  const table = compileNat(cluster, BASE_CONFIG)
  const engine = new NatEngine(table, { seed, conntrackMax: 2048, conntrackMax6: 512 })
  const dns = new DnsServer({ dnsIP: DNS_IP, upstream: ['127.0.0.1:9'] })
  const zc = new ZoneCompiler({ dnsIP: DNS_IP })
  dns.install(zc.full(cluster))
  const dev = new MemoryDevice({ vnetHdr, autoFlush: false, poison: true })
  const r: Rig = { dev, dp: undefined as unknown as Dataplane, engine, dns, zc, table, upstream: 0 }
  // The upstream leg is a socket: here it answers at once with junk or nothing, so the reply writer runs too.
  const pdns: PacketDns = {
    answerInPlace: (b, o, l, out, oo, max, tr) => dns.answerInPlace(b, o, l, out, oo, max, tr),
    forward: (_q, cb) => {
      r.upstream++
      if (rnd() < 0.5) cb(Buffer.alloc(12 + Math.floor(rnd() * 600), Math.floor(rnd() * 256)))
    },
  }
  const opts: LoopOptions = {
    nodeIp: ip4(NODE_IP),
    dnsIp: ip4(DNS_IP),
    dnsPort: 53,
    vni: 4096,
    localMac: vxlanMac(ip4(NODE_IP)),
    peers: [{ net: ip4('10.100.2.0'), mask: 0xffffff00, ip: ip4(PEER_IP), mac: vxlanMac(ip4(PEER_IP)) }],
    podNet: { net: ip4('10.100.1.0'), mask: 0xffffff00 },
    clusterNet: { net: ip4('10.100.0.0'), mask: 0xffff0000 },
    serviceNet: { net: ip4('10.96.0.0'), mask: 0xfff00000 },
    serviceNet6: { bytes: Uint8Array.from([0xfd, 0, 0, 0x96, ...new Array<number>(12).fill(0)]), prefix: 64 },
    icmpRate: { perSecond: 1e9, burst: 1e9 },
    nodeIp6: Uint8Array.from([0xfd, 0, 0, 1, ...new Array<number>(11).fill(0), 0x10]),
  }
  const dp = new Dataplane(r.dev, engine, pdns, opts)
  ;(r as { dp: Dataplane }).dp = dp
  r.dev.start(dp.onBatch)
  return r
}

const NAT_DROPS = NAT_STAT_NAMES.map((n, i) => (n.startsWith('drop_') ? i : -1)).filter(i => i >= 0)

function natDrops(e: NatEngine): number {
  let s = 0
  for (const i of NAT_DROPS) s += e.counters[i]!
  return s
}

function loopDrops(dp: Dataplane): number {
  let s = 0
  for (const v of dp.counters.drops) s += v
  return s
}

interface Tally {
  packets: number
  outcomes: number
  dropped: number
  reasons: number
}

function outcomes(r: Rig): Tally {
  const c = r.dp.counters
  return {
    packets: c.packets,
    outcomes: c.forwarded + c.dropped + c.rejected + c.dnsAnswered + c.dnsForwarded + c.vxlanOut,
    dropped: c.dropped,
    reasons: loopDrops(r.dp) + natDrops(r.engine),
  }
}

t.test(`${CASES} random packets through the whole packet path`, async t => {
  const seed = testSeed(t, 'TUNDRA_FUZZ_SEED')
  const rnd = mulberry32(seed)
  const gen = new Gen(rnd)
  let cluster: Cluster = { services: services(rnd), nodes: [], pods: [] }
  const rigs = [rig(false, seed, cluster, rnd), rig(true, seed ^ 1, cluster, rnd)]
  const failures: string[] = []
  const fail = (k: number, msg: string): void => {
    if (failures.length < 20) failures.push(`case ${k}: ${msg}`)
  }
  let installs = 0
  let written = 0
  const t0 = performance.now()
  for (let k = 0; k < CASES; ) {
    // Between batches, now and then: a new table (a full image, or a delta of the changed services as the control
    // thread sends), a clock jump for the reaper, queued resets sent.
    if (k > 0 && k % 997 === 0) {
      const prev = cluster
      cluster = { services: services(rnd), nodes: [], pods: [] }
      const delta = gen.chance(0.5)
      const names = new Set(cluster.services.map(x => `${x.namespace}/${x.name}`))
      const deleted = prev.services.filter(x => !names.has(`${x.namespace}/${x.name}`)).map(x => ({ namespace: x.namespace, name: x.name }))
      for (const r of rigs) {
        try {
          const next = delta ? updateNat(r.table, cluster.services, deleted) : compileNat(cluster, BASE_CONFIG)
          r.engine.install(delta ? natImage(next, r.table) : natImage(next), next)
          r.table = next
          r.dns.install(delta ? r.zc.update(cluster, cluster.services, deleted) : r.zc.full(cluster))
          r.engine.tick(monoSeconds() + gen.int(400))
          while (r.engine.flushPending) r.engine.step()
          r.dp.sendResets(r.engine)
        } catch (err) {
          fail(k, `install: ${(err as Error).stack}`)
        }
      }
      installs++
    }
    const r = rigs[k & 1]!
    for (const c of gen.next(r.dev.vnetHdr)) {
      k++
      const before = outcomes(r)
      const w0 = r.dev.written.length
      const vxOut0 = r.dp.counters.vxlanOut
      try {
        r.dev.inject(c.data, c.vnet)
        r.dev.flush()
      } catch (err) {
        fail(k, `threw ${(err as Error).stack} on ${c.data.toString('hex')}`)
        continue
      }
      const after = outcomes(r)
      // vxlanOut counts segments: a super-packet to a peer is one outcome however many it was cut into
      const segs = r.dp.counters.vxlanOut - vxOut0
      const n = after.outcomes - before.outcomes - (segs > 1 ? segs - 1 : 0)
      if (after.packets - before.packets !== 1 || n !== 1) fail(k, `${n} outcomes for one packet (${c.data.toString('hex')})`)
      if (after.dropped - before.dropped !== after.reasons - before.reasons) fail(k, `a drop without a reason (${c.data.toString('hex')})`)
      const wrote = r.dev.written.slice(w0)
      written += wrote.length
      if (wrote.length === 0) continue
      const allowed = inherited(c.data, csumProblems(c.data))
      const udpLenOk = lengthProblem(c.data) === ''
      // A vnet header that claims checksum offload or GSO on a packet whose checksum field holds a full sum (never
      // from a kernel): the L4 sums tundra completes from it are as wrong as the claim.
      if (allowed !== undefined && c.vnet !== undefined && ((c.vnet.flags & VnetFlags.NEEDS_CSUM) !== 0 || c.vnet.gsoType !== GsoType.NONE))
        for (const x of ['tcp', 'udp', 'icmp', 'icmpv6', 'quoted l4']) allowed.add(x)
      for (const w of wrote) checkOut(k, w, allowed, udpLenOk, segs > 0, c, fail)
    }
    if (r.dev.written.length > 4096) r.dev.written.length = 0
  }
  const ms = performance.now() - t0
  t.comment(`${CASES} cases, ${installs} installs, ${written} packets written, ${Math.round(ms)} ms`)
  t.same(failures, [], `no failures (replay with TUNDRA_FUZZ_SEED=${seed})`)
  for (const r of rigs) await r.dns.close()
})

function checkOut(
  k: number,
  w: CapturedPacket,
  allowed: Set<string> | undefined,
  udpLenOk: boolean,
  encapsulated: boolean,
  c: Case,
  fail: (k: number, m: string) => void,
): void {
  const lp = lengthProblem(w.data, udpLenOk, w.vnet !== null && (w.vnet.gsoType & 0x7f) !== GsoType.NONE, encapsulated)
  if (lp !== '') fail(k, `wrote a packet whose ${lp} (in ${c.data.toString('hex')}, out ${w.data.toString('hex')})`)
  const offloaded = w.vnet !== null && (w.vnet.flags & VnetFlags.NEEDS_CSUM) !== 0
  const out = csumProblems(w.data)
  // an input too broken to read its checksums: what it may pass on is unknown (lengths are still checked)
  if (out === undefined || allowed === undefined) return
  for (const x of out) {
    if (offloaded && x !== 'ipv4 header') continue
    if (!allowed.has(x)) fail(k, `wrote a packet with a bad ${x} checksum (in ${c.data.toString('hex')}, out ${w.data.toString('hex')})`)
  }
}

t.test('regressions the fuzz found', async t => {
  const all = (): number => 0
  const cluster: Cluster = { services: services(all), nodes: [], pods: [] }
  const r = rig(true, 5, cluster, all)
  // 1. A vnet header claiming a partial checksum at the start of the IP header (csum_start 0, csum_offset 6), on a
  //    packet for another node: the "completed" sum was written over the IPv4 flags and fragment offset.
  const p = tcp4('10.100.1.2', '10.100.2.3', 55978, 1, ACK)
  r.dev.inject(p, { flags: VnetFlags.NEEDS_CSUM, csumStart: 0, csumOffset: 6 })
  r.dev.flush()
  const out = r.dev.written.at(-1)!.data
  t.ok(ourVxlan(out), 'sent to the peer')
  const inner = out.subarray(IPV4_VXLAN_INNER)
  t.equal(inner.readUInt16BE(6), 0x4000, 'IPv4 flags and fragment offset as sent')
  t.same(checksumProblems(inner), [], 'checksums intact')
  // 2. An echo request to a ClusterIP with IP options: the reply drops them, and was written at the request's length.
  const req = Buffer.from(
    '4b0000440009000040016019080808080a6000280c0f0ea3000000004500002800014000400620380a600028080808080050a1a0000003e8000000005012ffffef629500',
    'hex',
  )
  fillIpv4Checksum(req, 0)
  r.dev.inject(req)
  r.dev.flush()
  const reply = r.dev.written.at(-1)!.data
  t.equal(reply[20], 0, 'an echo reply')
  t.equal(reply.length, reply.readUInt16BE(2), 'written at the length its header says')
  t.equal(lengthProblem(reply), '')
  await r.dns.close()
})

// NatEngine.process on real packet bytes: every rewritten packet's checksums are recomputed from scratch.
import t from 'tap'
import type { Cluster, Service } from '../../src/model/cluster'
import { compileNat } from '../../src/nat/compile'
import { updateNat } from '../../src/nat/update'
import type { NatConfig, SvcPort } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { NatAction, NatStat } from '../../src/nat/verdict'
import type { NatEngineOptions } from '../../src/nat/engine'
import { endpointChain, explain, serviceChains } from '../../src/inspect/explain'
import { fold, pseudoHeaderSum4 } from '../../src/wire/checksum'
import { ipv4ToString } from '../../src/wire/ipv4'
import { get16, get32 } from '../../src/wire/bytes'
import {
  ACK,
  BASE_CONFIG,
  FIN,
  NODE,
  NODE_IP,
  PSH,
  RST,
  SYN,
  addrs,
  checksumProblems,
  echo4,
  echo6,
  ep,
  flow,
  fragment4,
  fragment6,
  icmpError4,
  icmpError6,
  info,
  ip4,
  parse,
  port,
  reassemble4,
  reassemble6,
  sctp4,
  svc,
  tcp4,
  tcp6,
  udp4,
  udp6,
} from './packets'
import { sctpChecksumOk } from '../../src/wire/sctp'
import { ipPacketLength } from '../../src/wire/packet'

const CONFIG: NatConfig = { ...BASE_CONFIG, nodeIPs: [...BASE_CONFIG.nodeIPs], clusterCIDRs: [...BASE_CONFIG.clusterCIDRs] }
const NOW = 100000

const web = svc('web', {
  type: 'NodePort',
  clusterIPs: ['10.96.0.10'],
  ports: [port('', 80, 8080, 'TCP', 30080)],
  endpoints: [ep('10.100.1.2', 8080, { node: NODE })],
})
const two = svc('two', {
  clusterIPs: ['10.96.0.20'],
  ports: [port('', 80, 8080)],
  endpoints: [ep('10.100.1.2', 8080, { node: NODE }), ep('10.100.2.3', 8080, { node: 'node-b' })],
})
const dns = svc('dns', {
  clusterIPs: ['10.96.0.53'],
  ports: [port('', 53, 53, 'UDP')],
  endpoints: [ep('10.100.1.9', [{ name: '', protocol: 'UDP', port: 53 }], { node: NODE })],
})
const dns2 = svc('dns2', {
  clusterIPs: ['10.96.0.54'],
  ports: [port('', 53, 53, 'UDP')],
  endpoints: [
    ep('10.100.1.9', [{ name: '', protocol: 'UDP', port: 53 }], { node: NODE }),
    ep('10.100.2.9', [{ name: '', protocol: 'UDP', port: 53 }], { node: 'node-b' }),
  ],
})
const shop = svc('shop', {
  type: 'LoadBalancer',
  clusterIPs: ['10.96.1.1'],
  externalTrafficPolicy: 'Local',
  loadBalancerIngress: [{ ip: '203.0.113.7', ipMode: 'VIP' }],
  loadBalancerSourceRanges: ['198.51.100.0/24'],
  ports: [port('', 443, 8443, 'TCP', 31443)],
  endpoints: [ep('10.100.1.20', 8443, { node: NODE }), ep('10.100.3.5', 8443, { node: 'node-c' })],
})
const remote = svc('remote', {
  type: 'NodePort',
  clusterIPs: ['10.96.1.2'],
  externalTrafficPolicy: 'Local',
  ports: [port('', 80, 80, 'TCP', 31000)],
  endpoints: [ep('10.100.3.6', 80, { node: 'node-c' })],
})
const empty = svc('empty', { clusterIPs: ['10.96.4.4'], ports: [port('', 80, 80)] })
const dual = svc('dual', {
  clusterIPs: ['10.96.3.3', 'fd00:96::3'],
  ipFamilies: [4, 6],
  ports: [port('', 80, 8080)],
  endpoints: [ep('10.100.1.30', 8080, { node: NODE }), ep('fd00:100::1e', 8080, { node: NODE })],
})
const ALL = [web, two, dns, dns2, shop, remote, empty, dual]

function cluster(services: Service[]): Cluster {
  return { services, nodes: [], pods: [] }
}

function setup(services: Service[] = ALL, cfg: Partial<NatConfig> = {}, opts: NatEngineOptions = {}): NatEngine {
  return new NatEngine(compileNat(cluster(services), { ...CONFIG, ...cfg }), { seed: 7, ...opts })
}

function run(eng: NatEngine, p: Buffer, now = NOW, partial = false): number {
  parse(p)
  return eng.process(p, 0, p.length, info, partial, now)
}

function clean(tt: tap.Test, p: Buffer, what: string): void {
  tt.same(checksumProblems(p), [], `${what}: checksums verify`)
}

t.test('pod -> ClusterIP: DNAT, no masquerade, reverse NAT of the reply, TCP states', async tt => {
  const eng = setup()
  const syn = tcp4('10.100.1.50', '10.96.0.10', 40000, 80, SYN, { seq: 1000 })
  tt.equal(run(eng, syn), NatAction.FORWARD)
  tt.equal(flow(syn), '10.100.1.50:40000 > 10.100.1.2:8080')
  clean(tt, syn, 'SYN')
  const synack = tcp4('10.100.1.2', '10.100.1.50', 8080, 40000, SYN | ACK, { seq: 7000, ack: 1001 })
  tt.equal(run(eng, synack), NatAction.FORWARD)
  tt.equal(flow(synack), '10.96.0.10:80 > 10.100.1.50:40000')
  clean(tt, synack, 'SYN|ACK')
  const ack = tcp4('10.100.1.50', '10.96.0.10', 40000, 80, ACK | PSH, { seq: 1001, ack: 7001, payload: 100 })
  tt.equal(run(eng, ack), NatAction.FORWARD)
  tt.equal(flow(ack), '10.100.1.50:40000 > 10.100.1.2:8080')
  clean(tt, ack, 'data')
  const [e] = eng.conntrackEntries(NOW)
  tt.equal(e?.state, 'ESTABLISHED')
  tt.equal(e?.expiresIn, 86400, 'kube-proxy established timeout')
  tt.same(e?.flags, ['replied', 'assured', 'dnat'])
  tt.equal(e?.service, 'default/web')
  tt.same(e?.packets, [2, 1])
  tt.equal(eng.counters[NatStat.NEW], 1)
  tt.equal(eng.counters[NatStat.MASQUERADE], 0)
})

t.test('non-service traffic passes untouched', async tt => {
  const eng = setup()
  const p = tcp4('10.100.1.50', '10.100.2.3', 40000, 8080, SYN)
  const copy = Buffer.from(p)
  tt.equal(run(eng, p), NatAction.PASS)
  tt.same(p, copy)
  const node = tcp4('198.51.100.1', NODE_IP, 40000, 22, SYN)
  tt.equal(run(eng, node), NatAction.PASS, "the node's own ports are not services")
})

t.test('masquerade: off-cluster source to a ClusterIP, reply back', async tt => {
  const eng = setup()
  const syn = tcp4('172.16.0.5', '10.96.0.10', 50000, 80, SYN)
  tt.equal(run(eng, syn), NatAction.FORWARD)
  const sport = get16(syn, 20)
  tt.equal(addrs(syn), `${NODE_IP} > 10.100.1.2`)
  tt.ok(sport >= 1024 && sport <= 29999, `masquerade port ${sport} in range`)
  clean(tt, syn, 'masqueraded SYN')
  const reply = tcp4('10.100.1.2', NODE_IP, 8080, sport, SYN | ACK, { ack: 1001 })
  tt.equal(run(eng, reply), NatAction.FORWARD)
  tt.equal(flow(reply), '10.96.0.10:80 > 172.16.0.5:50000')
  clean(tt, reply, 'reply')
  tt.equal(eng.counters[NatStat.MASQUERADE], 1)
})

t.test('masquerade: hairpin (client is the chosen endpoint)', async tt => {
  const eng = setup()
  const syn = tcp4('10.100.1.2', '10.96.0.10', 40001, 80, SYN)
  tt.equal(run(eng, syn), NatAction.FORWARD)
  tt.equal(addrs(syn), `${NODE_IP} > 10.100.1.2`)
  tt.equal(eng.counters[NatStat.HAIRPIN], 1)
  const reply = tcp4('10.100.1.2', NODE_IP, 8080, get16(syn, 20), SYN | ACK)
  tt.equal(run(eng, reply), NatAction.FORWARD)
  tt.equal(flow(reply), '10.96.0.10:80 > 10.100.1.2:40001')
  clean(tt, reply, 'hairpin reply')
})

t.test('masquerade: NodePort with externalTrafficPolicy Cluster vs Local', async tt => {
  const eng = setup()
  const a = tcp4('198.51.100.1', NODE_IP, 40000, 30080, SYN)
  tt.equal(run(eng, a), NatAction.FORWARD)
  tt.equal(addrs(a), `${NODE_IP} > 10.100.1.2`, 'Cluster: masqueraded')
  const b = tcp4('198.51.100.1', NODE_IP, 40000, 31443, SYN)
  tt.equal(run(eng, b), NatAction.FORWARD)
  tt.equal(flow(b), '198.51.100.1:40000 > 10.100.1.20:8443', 'Local: client address kept, local endpoint only')
  clean(tt, b, 'Local NodePort')
  // Only remote endpoints: external clients are dropped, pods and the node itself short-circuit to the cluster set.
  tt.equal(run(eng, tcp4('198.51.100.1', NODE_IP, 40000, 31000, SYN)), NatAction.DROP)
  tt.equal(eng.counters[NatStat.DROP_NO_LOCAL_ENDPOINTS], 1)
  const pod = tcp4('10.100.1.50', NODE_IP, 40000, 31000, SYN)
  tt.equal(run(eng, pod), NatAction.FORWARD)
  tt.equal(flow(pod), '10.100.1.50:40000 > 10.100.3.6:80', 'pod: no masquerade')
  const host = tcp4(NODE_IP, NODE_IP, 40002, 31000, SYN)
  tt.equal(run(eng, host), NatAction.FORWARD)
  tt.equal(addrs(host), `${NODE_IP} > 10.100.3.6`)
  tt.not(get16(host, 20), 40002, 'node source: masqueraded with a fresh port')
})

t.test('masqueradeAll masquerades pod -> ClusterIP too', async tt => {
  const eng = setup(ALL, { masqueradeAll: true })
  const syn = tcp4('10.100.1.50', '10.96.0.10', 40000, 80, SYN)
  run(eng, syn)
  tt.equal(addrs(syn), `${NODE_IP} > 10.100.1.2`)
})

t.test('LoadBalancer source ranges', async tt => {
  const eng = setup()
  const ok = tcp4('198.51.100.9', '203.0.113.7', 40000, 443, SYN)
  tt.equal(run(eng, ok), NatAction.FORWARD)
  tt.equal(flow(ok), '198.51.100.9:40000 > 10.100.1.20:8443')
  tt.equal(run(eng, tcp4('8.8.8.8', '203.0.113.7', 40000, 443, SYN)), NatAction.DROP)
  tt.equal(eng.counters[NatStat.DROP_SOURCE_RANGE], 1)
  tt.equal(run(eng, tcp4('8.8.8.8', NODE_IP, 40000, 31443, SYN)), NatAction.FORWARD, 'ranges do not apply to the NodePort')
})

t.test('reject: no endpoints, or a ClusterIP port that does not exist; writeReject builds the ICMP', async tt => {
  const eng = setup()
  const p = tcp4('10.100.1.50', '10.96.4.4', 40000, 80, SYN)
  const copy = Buffer.from(p)
  tt.equal(run(eng, p), NatAction.REJECT)
  tt.same(p, copy, 'rejected packet untouched')
  const out = Buffer.alloc(1600)
  const n = eng.writeReject(p, 0, p.length, info, out, 100)
  tt.equal(n, 20 + 8 + 20 + 8)
  const icmp = out.subarray(100, 100 + n)
  tt.equal(addrs(icmp), '10.96.4.4 > 10.100.1.50', 'from the address the client used')
  tt.equal(icmp[20], 3)
  tt.equal(icmp[21], 3, 'port unreachable')
  tt.same(icmp.subarray(28, 48), p.subarray(0, 20), 'quotes the offending header')
  clean(tt, icmp, 'ICMP error')
  tt.equal(run(eng, udp4('10.100.1.50', '10.96.0.10', 40000, 81)), NatAction.REJECT, 'undefined port on a VIP')
  tt.equal(run(eng, udp4('10.100.1.50', '10.96.0.10', 40000, 80)), NatAction.REJECT, 'defined port, other protocol')
  tt.equal(eng.counters[NatStat.REJECT_NO_ENDPOINTS], 1)
  tt.equal(eng.counters[NatStat.REJECT_NO_PORT], 2)
})

t.test('ping a ClusterIP: reply in place, or reject/drop per icmpMode', async tt => {
  const eng = setup()
  const p = echo4('10.100.1.50', '10.96.0.10', 0x1234, 1)
  tt.equal(run(eng, p), NatAction.REPLY)
  tt.equal(addrs(p), '10.96.0.10 > 10.100.1.50')
  tt.equal(p[20], 0, 'echo reply')
  tt.equal(get16(p, 24), 0x1234)
  tt.equal(ipPacketLength(p, 0), p.length)
  clean(tt, p, 'echo reply')
  tt.equal(run(eng, echo4('10.100.1.50', '10.100.2.3', 1, 1)), NatAction.PASS, 'pod ping untouched')
  tt.equal(run(setup(ALL, { icmpMode: 'reject' }), echo4('10.100.1.50', '10.96.0.10', 1, 1)), NatAction.REJECT)
  tt.equal(run(setup(ALL, { icmpMode: 'drop' }), echo4('10.100.1.50', '10.96.0.10', 1, 1)), NatAction.DROP)
  const p6 = echo6('fd00:100::50', 'fd00:96::3', 9, 1)
  tt.equal(run(eng, p6), NatAction.REPLY)
  tt.equal(addrs(p6), 'fd00:96::3 > fd00:100::50')
  tt.equal(p6[40], 129)
  clean(tt, p6, 'echo6 reply')
})

t.test('ICMP errors from the endpoint side are translated back (quote, outer, all checksums)', async tt => {
  const eng = setup()
  // UDP: the endpoint answers port unreachable about the DNATed datagram, quoting all of it.
  const q = udp4('10.100.1.50', '10.96.0.53', 41000, 53, 24)
  tt.equal(run(eng, q), NatAction.FORWARD)
  tt.equal(flow(q), '10.100.1.50:41000 > 10.100.1.9:53')
  const err = icmpError4('10.100.1.9', q, 3, 3, 8 + 24)
  tt.equal(run(eng, err), NatAction.FORWARD)
  tt.equal(addrs(err), '10.96.0.53 > 10.100.1.50', 'outer from the VIP')
  tt.equal(flow(err.subarray(28)), '10.100.1.50:41000 > 10.96.0.53:53', 'quote as the client sent it')
  clean(tt, err, 'translated port unreachable')
  tt.equal(eng.counters[NatStat.ICMP_ERROR], 1)

  // TCP, masqueraded: a router says fragmentation needed about the masqueraded segment (8 bytes quoted).
  const syn = tcp4('172.16.0.5', '10.96.0.10', 50000, 80, SYN)
  run(eng, syn)
  const sport = get16(syn, 20)
  const data = tcp4('172.16.0.5', '10.96.0.10', 50000, 80, ACK, { payload: 1400 })
  const fromEp = tcp4('10.100.1.2', NODE_IP, 8080, sport, SYN | ACK)
  run(eng, fromEp)
  run(eng, data)
  tt.equal(flow(data), `${NODE_IP}:${sport} > 10.100.1.2:8080`)
  const frag = icmpError4('10.0.0.1', data, 3, 4, 8, 1300)
  tt.equal(run(eng, frag), NatAction.FORWARD)
  tt.equal(addrs(frag), '10.96.0.10 > 172.16.0.5', 'outer goes back to the real client')
  tt.equal(flow(frag.subarray(28)), '172.16.0.5:50000 > 10.96.0.10:80')
  tt.equal(get16(frag, 26), 1300, 'MTU kept')
  clean(tt, frag, 'translated frag-needed')
})

t.test('ICMP errors from the client side go to the endpoint', async tt => {
  const eng = setup()
  const q = udp4('172.16.0.5', '10.96.0.53', 41000, 53)
  run(eng, q)
  const sport = get16(q, 20)
  const reply = udp4('10.100.1.9', NODE_IP, 53, sport, 12)
  tt.equal(run(eng, reply), NatAction.FORWARD)
  tt.equal(flow(reply), '10.96.0.53:53 > 172.16.0.5:41000')
  const err = icmpError4('172.16.0.5', reply, 3, 3, 8 + 12)
  tt.equal(run(eng, err), NatAction.FORWARD)
  tt.equal(addrs(err), `${NODE_IP} > 10.100.1.9`)
  tt.equal(flow(err.subarray(28)), `10.100.1.9:53 > ${NODE_IP}:${sport}`, 'quote as the endpoint sent it')
  clean(tt, err, 'client-side error')
  tt.equal(run(eng, icmpError4('10.0.0.1', udp4('1.2.3.4', '5.6.7.8', 1, 2), 3, 3)), NatAction.PASS, 'unrelated error')
})

t.test('IPv4 fragments of a NATed UDP datagram follow the first fragment', async tt => {
  const eng = setup()
  const whole = udp4('10.100.1.50', '10.96.0.53', 42000, 53, 3000)
  const frags = fragment4(whole, 1480)
  tt.equal(frags.length, 3)
  // Later fragments before the first to a VIP: no mapping yet, dropped.
  const early = Buffer.from(frags[2]!)
  tt.equal(run(eng, early), NatAction.DROP)
  for (const [i, f] of frags.entries()) {
    tt.equal(run(eng, f), NatAction.FORWARD, `fragment ${i}`)
    tt.equal(addrs(f), '10.100.1.50 > 10.100.1.9')
    clean(tt, f, `fragment ${i} header`)
  }
  const rebuilt = reassemble4(frags)
  tt.equal(flow(rebuilt), '10.100.1.50:42000 > 10.100.1.9:53')
  clean(tt, rebuilt, 'reassembled datagram (UDP checksum over all fragments)')
  tt.equal(eng.counters[NatStat.FRAGMENT], 2)
  const stray = fragment4(udp4('10.100.1.50', '10.100.2.3', 1, 2, 3000), 1480, 0x999)[1]!
  tt.equal(run(eng, stray), NatAction.PASS, 'fragments of non-service traffic pass')
})

t.test('endpoint removed: TCP client gets a RST, UDP flows re-balance', async tt => {
  const eng = setup()
  const syn = tcp4('10.100.1.50', '10.96.0.20', 40000, 80, SYN, { seq: 1000 })
  run(eng, syn)
  const chosen = ipv4ToString(get32(syn, 16))
  run(eng, tcp4(chosen, '10.100.1.50', 8080, 40000, SYN | ACK, { seq: 5000, ack: 1001 }))
  run(eng, tcp4('10.100.1.50', '10.96.0.20', 40000, 80, ACK, { seq: 1001, ack: 5001, payload: 10 }))
  run(eng, tcp4(chosen, '10.100.1.50', 8080, 40000, ACK | PSH, { seq: 5001, ack: 1011, payload: 30 }))
  const u = udp4('10.100.1.50', '10.96.0.54', 43000, 53)
  run(eng, u)
  const uChosen = ipv4ToString(get32(u, 16))

  const two2 = { ...two, endpoints: two.endpoints.filter(e => e.ip !== chosen) }
  const dns22 = { ...dns2, endpoints: dns2.endpoints.filter(e => e.ip !== uChosen) }
  const r = eng.swap(updateNat(eng.table, [two2, dns22]))
  tt.same(r, { flushed: 2, resets: 1 })
  tt.equal(eng.pendingResets, 1)
  const out = Buffer.alloc(256)
  const offs = new Uint32Array(4)
  const lens = new Uint32Array(4)
  tt.equal(eng.writeResets(out, 0, offs, lens, 4, 10), 1)
  tt.equal(offs[0], 10, 'gap for a virtio header')
  const rst = out.subarray(offs[0]!, offs[0]! + lens[0]!)
  tt.equal(flow(rst), '10.96.0.20:80 > 10.100.1.50:40000', 'from the service the client connected to')
  tt.equal(rst[33], RST | ACK)
  tt.equal(get32(rst, 24), 5031, 'seq: what the client expects next from the server')
  tt.equal(get32(rst, 28), 1011, "ack: the client's next sequence number")
  clean(tt, rst, 'RST')
  tt.equal(eng.pendingResets, 0)
  // The TCP flow is gone: a late bare ACK is picked up loosely like a new flow (its endpoint, having no socket for
  // it, answers RST); a late FIN is invalid; the UDP flow re-balances to the remaining endpoint.
  tt.equal(run(eng, tcp4('10.100.1.50', '10.96.0.20', 40000, 80, FIN | ACK, { seq: 1011 })), NatAction.DROP)
  tt.equal(run(eng, tcp4('10.100.1.50', '10.96.0.20', 40000, 80, ACK, { seq: 1011 })), NatAction.FORWARD)
  const u2 = udp4('10.100.1.50', '10.96.0.54', 43000, 53)
  tt.equal(run(eng, u2), NatAction.FORWARD)
  tt.not(ipv4ToString(get32(u2, 16)), uChosen)
  // A swap that removes nothing touches no connection.
  const keep = tcp4('10.100.1.50', '10.96.0.10', 40100, 80, SYN)
  run(eng, keep)
  tt.same(eng.swap(updateNat(eng.table, [{ ...web, labels: { a: 'b' } }])), { flushed: 0, resets: 0 })
  // A connection still in SYN_SENT gets RST|ACK with seq 0 acknowledging its SYN (what SYN_SENT accepts).
  tt.same(eng.swap(updateNat(eng.table, [], [{ namespace: 'default', name: 'web' }])), { flushed: 1, resets: 1 })
  tt.equal(eng.writeResets(out, 0, offs, lens, 4), 1)
  const rst2 = out.subarray(offs[0]!, offs[0]! + lens[0]!)
  tt.equal(flow(rst2), '10.96.0.10:80 > 10.100.1.50:40100')
  tt.equal(get32(rst2, 24), 0)
  tt.equal(get32(rst2, 28), 1001)
})

t.test('reply tuple clash: same client port to two services on one endpoint', async tt => {
  const a = svc('a', { clusterIPs: ['10.96.7.1'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080)] })
  const b = svc('b', { clusterIPs: ['10.96.7.2'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080)] })
  const eng = setup([a, b])
  const p1 = tcp4('10.100.1.50', '10.96.7.1', 40000, 80, SYN)
  const p2 = tcp4('10.100.1.50', '10.96.7.2', 40000, 80, SYN)
  run(eng, p1)
  run(eng, p2)
  tt.equal(flow(p1), '10.100.1.50:40000 > 10.100.1.2:8080')
  const moved = get16(p2, 20)
  tt.not(moved, 40000, 'second flow got another source port')
  tt.equal(addrs(p2), '10.100.1.50 > 10.100.1.2', 'address kept')
  tt.equal(eng.counters[NatStat.PORT_CLASH], 1)
  const r2 = tcp4('10.100.1.2', '10.100.1.50', 8080, moved, SYN | ACK)
  run(eng, r2)
  tt.equal(flow(r2), '10.96.7.2:80 > 10.100.1.50:40000')
  const r1 = tcp4('10.100.1.2', '10.100.1.50', 8080, 40000, SYN | ACK)
  run(eng, r1)
  tt.equal(flow(r1), '10.96.7.1:80 > 10.100.1.50:40000')
  clean(tt, r2, 'clash reply')
})

t.test('a direct connection that reuses the reply tuple of a Service connection', async tt => {
  const eng = setup()
  // Through the Service from port 40000, closed by the server first: the entry lingers in TIME_WAIT.
  const close = (c: string, vip: string, e: string, sport: number, tcp: typeof tcp4): void => {
    run(eng, tcp(c, vip, sport, 80, SYN))
    run(eng, tcp(e, c, 8080, sport, SYN | ACK))
    run(eng, tcp(c, vip, sport, 80, ACK))
    run(eng, tcp(e, c, 8080, sport, FIN | ACK))
    run(eng, tcp(c, vip, sport, 80, FIN | ACK))
    run(eng, tcp(e, c, 8080, sport, ACK))
  }
  close('10.100.1.50', '10.96.0.10', '10.100.1.2', 40000, tcp4)
  // The client's kernel may pick 40000 again toward the endpoint itself: a 4-tuple it has not used.
  tt.equal(run(eng, tcp4('10.100.1.50', '10.100.1.2', 40000, 8080, SYN)), NatAction.PASS)
  tt.equal(eng.counters[NatStat.CLASH_EVICTED], 1, 'the closed entry is removed')
  const reply = tcp4('10.100.1.2', '10.100.1.50', 8080, 40000, SYN | ACK)
  tt.equal(run(eng, reply), NatAction.PASS)
  tt.equal(flow(reply), '10.100.1.2:8080 > 10.100.1.50:40000', 'the reply reaches the client untranslated')

  close('fd00:100::50', 'fd00:96::3', 'fd00:100::1e', 40000, tcp6)
  tt.equal(run(eng, tcp6('fd00:100::50', 'fd00:100::1e', 40000, 8080, SYN)), NatAction.PASS)
  tt.equal(eng.counters[NatStat.CLASH_EVICTED], 2, 'IPv6 too')
  const reply6 = tcp6('fd00:100::1e', 'fd00:100::50', 8080, 40000, SYN | ACK)
  tt.equal(run(eng, reply6), NatAction.PASS)
  tt.equal(flow(reply6), '[fd00:100::1e]:8080 > [fd00:100::50]:40000')

  // An open Service connection keeps its entry: its own replies still reach the client from the ClusterIP.
  run(eng, tcp4('10.100.1.50', '10.96.0.10', 40001, 80, SYN))
  run(eng, tcp4('10.100.1.2', '10.100.1.50', 8080, 40001, SYN | ACK))
  run(eng, tcp4('10.100.1.50', '10.96.0.10', 40001, 80, ACK))
  tt.equal(run(eng, tcp4('10.100.1.50', '10.100.1.2', 40001, 8080, SYN)), NatAction.PASS)
  tt.same([eng.counters[NatStat.CLASH_EVICTED], eng.counters[NatStat.CLASH_OPEN]], [2, 1])
  const data = tcp4('10.100.1.2', '10.100.1.50', 8080, 40001, ACK, { payload: 10 })
  tt.equal(run(eng, data), NatAction.FORWARD)
  tt.equal(flow(data), '10.96.0.10:80 > 10.100.1.50:40001')
  // A SYN-ACK or a packet of another direct flow does not look for a clash.
  run(eng, tcp4('10.100.1.50', '10.100.1.2', 40002, 8080, SYN))
  tt.same([eng.counters[NatStat.CLASH_EVICTED], eng.counters[NatStat.CLASH_OPEN]], [2, 1])
})

t.test('invalid TCP: drop by default, loose pickup with invalid=pass', async tt => {
  const eng = setup()
  // A bare ACK with no entry is picked up (nf_conntrack_tcp_loose) in either mode; FIN or RST without one is not.
  const bare = tcp4('10.100.1.50', '10.96.0.10', 40000, 80, ACK)
  tt.equal(run(eng, bare), NatAction.FORWARD)
  tt.equal(flow(bare), '10.100.1.50:40000 > 10.100.1.2:8080')
  tt.equal(eng.counters[NatStat.LOOSE_PICKUP], 1)
  tt.equal(run(eng, tcp4('10.100.1.50', '10.96.0.10', 40009, 80, FIN | ACK)), NatAction.DROP)
  tt.equal(run(eng, tcp4('10.100.1.50', '10.96.0.10', 40010, 80, RST)), NatAction.DROP)
  tt.equal(eng.counters[NatStat.DROP_INVALID], 2)
  tt.equal(eng.counters[NatStat.INVALID], 2)
  const loose = setup(ALL, {}, { invalid: 'pass' })
  const p = tcp4('10.100.1.50', '10.96.0.10', 40000, 80, ACK)
  tt.equal(run(loose, p), NatAction.FORWARD)
  tt.equal(flow(p), '10.100.1.50:40000 > 10.100.1.2:8080')
  tt.equal(loose.conntrackEntries(NOW)[0]?.state, 'ESTABLISHED')
  tt.equal(run(loose, tcp4('10.100.1.50', '10.96.0.10', 40001, 80, RST)), NatAction.PASS)
  // In-connection invalid: ACK from the client before the SYN|ACK.
  run(eng, tcp4('10.100.1.50', '10.96.0.10', 40002, 80, SYN))
  tt.equal(run(eng, tcp4('10.100.1.50', '10.96.0.10', 40002, 80, ACK)), NatAction.DROP)
})

t.test('TIME_WAIT then a new SYN on the same tuple reopens the connection', async tt => {
  const eng = setup()
  const c = (f: number): Buffer => tcp4('10.100.1.50', '10.96.0.10', 40000, 80, f)
  const s = (f: number): Buffer => tcp4('10.100.1.2', '10.100.1.50', 8080, 40000, f)
  for (const [p, state] of [
    [c(SYN), 'SYN_SENT'],
    [s(SYN | ACK), 'SYN_RECV'],
    [c(ACK), 'ESTABLISHED'],
    [c(FIN | ACK), 'FIN_WAIT'],
    [s(ACK), 'CLOSE_WAIT'],
    [s(FIN | ACK), 'LAST_ACK'],
    [c(ACK), 'TIME_WAIT'],
  ] as const) {
    tt.equal(run(eng, p), NatAction.FORWARD)
    tt.equal(eng.conntrackEntries(NOW)[0]?.state, state)
  }
  tt.equal(eng.conntrackEntries(NOW)[0]?.expiresIn, 120)
  tt.equal(run(eng, c(SYN)), NatAction.FORWARD)
  const es = eng.conntrackEntries(NOW)
  tt.equal(es.length, 1)
  tt.equal(es[0]?.state, 'SYN_SENT')
  tt.equal(eng.counters[NatStat.NEW], 2)
})

t.test('expired entries are not used; tick reaps them', async tt => {
  const eng = setup()
  run(eng, udp4('10.100.1.50', '10.96.0.53', 44000, 53))
  tt.equal(eng.conntrackEntries(NOW)[0]?.expiresIn, 30)
  // A reply after 31 s finds no connection: it is not translated.
  const late = udp4('10.100.1.9', '10.100.1.50', 53, 44000)
  tt.equal(run(eng, late, NOW + 31), NatAction.PASS)
  run(eng, udp4('10.100.1.50', '10.96.0.53', 44001, 53), NOW)
  run(eng, udp4('10.100.1.9', '10.100.1.50', 53, 44001), NOW)
  tt.equal(eng.conntrackEntries(NOW)[0]?.expiresIn, 120, 'replied UDP: stream timeout')
  for (let i = 0; i < 300; i++) eng.tick(NOW + 121)
  tt.equal(eng.conntrackEntries(NOW + 121).length, 0)
})

t.test('partial checksums (NEEDS_CSUM): only the pseudo-header part changes', async tt => {
  const eng = setup()
  const p = tcp4('10.100.1.50', '10.96.0.10', 40000, 80, SYN)
  const len = p.length - 20
  p.writeUInt16BE(fold(pseudoHeaderSum4(ip4('10.100.1.50'), ip4('10.96.0.10'), 6, len)), 36)
  tt.equal(run(eng, p, NOW, true), NatAction.FORWARD)
  tt.equal(p.readUInt16BE(36), fold(pseudoHeaderSum4(ip4('10.100.1.50'), ip4('10.100.1.2'), 6, len)))
})

t.test('IPv6: DNAT, reverse NAT and ICMPv6 error translation', async tt => {
  const eng = setup()
  const syn = tcp6('fd00:100::50', 'fd00:96::3', 40000, 80, SYN)
  tt.equal(run(eng, syn), NatAction.FORWARD)
  tt.equal(flow(syn), '[fd00:100::50]:40000 > [fd00:100::1e]:8080')
  clean(tt, syn, 'v6 SYN')
  const synack = tcp6('fd00:100::1e', 'fd00:100::50', 8080, 40000, SYN | ACK)
  tt.equal(run(eng, synack), NatAction.FORWARD)
  tt.equal(flow(synack), '[fd00:96::3]:80 > [fd00:100::50]:40000')
  clean(tt, synack, 'v6 reply')
  // Off-cluster v6 client: masqueraded to the node's v6 address.
  const ext = udp6('2001:db8::5', 'fd00:96::3', 1234, 80)
  tt.equal(run(eng, ext), NatAction.REJECT, 'UDP/80 is not a port of dual')
  const ext2 = tcp6('2001:db8::5', 'fd00:96::3', 1234, 80, SYN)
  tt.equal(run(eng, ext2), NatAction.FORWARD)
  tt.equal(addrs(ext2), 'fd00:1::10 > fd00:100::1e')
  // Packet too big from the endpoint about a segment of the first flow.
  const data = tcp6('fd00:100::50', 'fd00:96::3', 40000, 80, ACK, { payload: 200 })
  run(eng, data)
  const ptb = icmpError6('fd00:100::1e', data, 2, 0, 1280)
  tt.equal(run(eng, ptb), NatAction.FORWARD)
  tt.equal(addrs(ptb), 'fd00:96::3 > fd00:100::50')
  tt.equal(flow(ptb.subarray(48)), '[fd00:100::50]:40000 > [fd00:96::3]:80')
  clean(tt, ptb, 'translated packet too big')
})

t.test('snapshot and restore across a restart', async tt => {
  const eng = setup()
  const syn = tcp4('172.16.0.5', '10.96.0.10', 50000, 80, SYN)
  run(eng, syn)
  const sport = get16(syn, 20)
  run(eng, udp4('10.100.1.50', '10.96.0.53', 44000, 53))
  const snap = eng.snapshot()
  // The new process compiles the table from scratch (other ids are possible) and restores.
  const fresh = new NatEngine(compileNat(cluster([dual, dns, web]), CONFIG), { seed: 3 })
  tt.equal(fresh.restore(snap, NOW + 1), 2)
  const reply = tcp4('10.100.1.2', NODE_IP, 8080, sport, SYN | ACK)
  tt.equal(run(fresh, reply, NOW + 1), NatAction.FORWARD)
  tt.equal(flow(reply), '10.96.0.10:80 > 172.16.0.5:50000')
  tt.equal(fresh.conntrackEntries(NOW + 1).find(e => e.protocol === 'tcp')?.service, 'default/web')
  // Entries of services that no longer exist are not restored; stopped endpoints are flushed with a reset.
  const gone = new NatEngine(compileNat(cluster([{ ...web, endpoints: [] }]), CONFIG), { seed: 3 })
  tt.equal(gone.restore(snap, NOW + 1), 0)
  tt.equal(gone.pendingResets, 1)
  tt.throws(() => fresh.restore(Buffer.from('nope'), NOW), RangeError)
})

t.test('flush by filter and conntrack listing', async tt => {
  const eng = setup()
  run(eng, tcp4('10.100.1.50', '10.96.0.10', 40000, 80, SYN))
  run(eng, udp4('10.100.1.50', '10.96.0.53', 44000, 53))
  run(eng, udp4('10.100.1.51', '10.96.0.53', 44000, 53))
  tt.equal(eng.conntrackEntries(NOW).length, 3)
  tt.equal(eng.flush({ protocol: 'udp', address: '10.100.1.51' }), 1)
  tt.equal(eng.flush({ service: 'default/web' }), 1)
  tt.equal(eng.flush({ port: 53 }), 1)
  tt.equal(eng.conntrackEntries(NOW).length, 0)
})

t.test('explain: verdicts, kube-proxy probabilities and chain names', async tt => {
  const eng = setup()
  const table = eng.table
  const x = explain(table, { src: '10.100.1.50', dst: '10.96.0.20', protocol: 'TCP', sport: 1, dport: 80 })
  tt.equal(x.verdict, 'dnat')
  tt.same(
    x.endpoints?.map(e => e.ruleProbability),
    [0.5, 1],
  )
  tt.same(
    x.endpoints?.map(e => e.share),
    [0.5, 0.5],
  )
  tt.match(x.service?.chains.service, /^KUBE-SVC-[A-Z2-7]{16}$/)
  tt.match(x.endpoints?.[0]?.chain, /^KUBE-SEP-[A-Z2-7]{16}$/)
  tt.equal(x.masquerade?.always, false)
  tt.equal(
    explain(table, { src: '172.16.0.5', dst: '10.96.0.20', protocol: 'TCP', sport: 1, dport: 80 }).masquerade?.reason,
    'source outside the cluster CIDRs',
  )
  tt.equal(explain(table, { src: '10.100.1.2', dst: '10.96.0.20', protocol: 'TCP', sport: 1, dport: 80 }).endpoints?.[0]?.hairpin, true)
  tt.equal(explain(table, { src: '10.100.1.50', dst: '10.96.4.4', protocol: 'TCP', sport: 1, dport: 80 }).verdict, 'reject')
  tt.equal(explain(table, { src: '10.100.1.50', dst: '10.96.0.20', protocol: 'TCP', sport: 1, dport: 81 }).verdict, 'reject')
  tt.equal(explain(table, { src: '198.51.100.1', dst: NODE_IP, protocol: 'TCP', sport: 1, dport: 31000 }).verdict, 'drop')
  tt.equal(explain(table, { src: '8.8.8.8', dst: '203.0.113.7', protocol: 'TCP', sport: 1, dport: 443 }).verdict, 'drop')
  tt.equal(explain(table, { src: '10.100.1.50', dst: '10.96.0.20', protocol: 'ICMP' }).verdict, 'reply')
  tt.equal(explain(table, { src: '10.100.1.50', dst: '10.100.2.3', protocol: 'TCP', sport: 1, dport: 80 }).verdict, 'pass')
  // With the engine: an existing connection is reported as tracked.
  const syn = tcp4('10.100.1.50', '10.96.0.20', 40000, 80, SYN)
  run(eng, syn)
  const tr = explain(table, { src: '10.100.1.50', dst: '10.96.0.20', protocol: 'TCP', sport: 40000, dport: 80 }, { engine: eng, now: NOW })
  tt.equal(tr.verdict, 'tracked')
  tt.equal(tr.conntrack?.direction, 'original')
})

t.test("chain names equal kube-proxy's (values from pkg/proxy/iptables/proxier_test.go)", async tt => {
  const sp = { servicePortName: 'ns1/svc1:p80', protocol: 'TCP' } as unknown as SvcPort
  tt.equal(serviceChains(sp).service, 'KUBE-SVC-XPGD46QRK7WJZT7O')
  tt.equal(serviceChains(sp).external, 'KUBE-EXT-XPGD46QRK7WJZT7O')
  tt.equal(endpointChain(sp, '10.180.0.1:80'), 'KUBE-SEP-SXIVWICOYRO3J4NJ')
})

t.test('IPv6 fragments follow the first fragment', async tt => {
  const eng = setup()
  const v6dns = svc('dns6', {
    clusterIPs: ['fd00:96::53'],
    ports: [port('', 53, 53, 'UDP')],
    endpoints: [ep('fd00:100::9', [{ name: '', protocol: 'UDP', port: 53 }])],
  })
  eng.swap(updateNat(eng.table, [v6dns]))
  const whole = udp6('fd00:100::50', 'fd00:96::53', 42000, 53, 2000)
  const frags = fragment6(whole, 1232)
  tt.equal(frags.length, 2)
  for (const [i, f] of frags.entries()) {
    tt.equal(run(eng, f), NatAction.FORWARD, `fragment ${i}`)
    tt.equal(addrs(f), 'fd00:100::50 > fd00:100::9')
  }
  const rebuilt = reassemble6(frags)
  tt.equal(flow(rebuilt), '[fd00:100::50]:42000 > [fd00:100::9]:53')
  clean(tt, rebuilt, 'reassembled IPv6 datagram')
})

t.test('SCTP: ports rewritten with the CRC32c recomputed', async tt => {
  const s = svc('sctp', {
    clusterIPs: ['10.96.9.1'],
    ports: [port('', 3868, 3869, 'SCTP')],
    endpoints: [ep('10.100.1.5', [{ name: '', protocol: 'SCTP', port: 3869 }])],
  })
  const eng = setup([s])
  const p = sctp4('10.100.1.50', '10.96.9.1', 5000, 3868)
  tt.equal(run(eng, p), NatAction.FORWARD)
  tt.equal(flow(p), '10.100.1.50:5000 > 10.100.1.5:3869')
  tt.ok(sctpChecksumOk(p, 20, p.length - 20), 'CRC32c valid')
  const r = sctp4('10.100.1.5', '10.100.1.50', 3869, 5000)
  tt.equal(run(eng, r), NatAction.FORWARD)
  tt.equal(flow(r), '10.96.9.1:3868 > 10.100.1.50:5000')
  tt.ok(sctpChecksumOk(r, 20, r.length - 20))
  tt.equal(eng.conntrackEntries(NOW)[0]?.expiresIn, 210, 'replied SCTP')
})

t.test('conntrack full: new connections dropped and counted', async tt => {
  const eng = setup(ALL, {}, { conntrackMax: 16 })
  for (let i = 0; i < 16; i++) {
    const p = udp4('10.100.1.50', '10.96.0.53', 1000 + i, 53)
    run(eng, p)
    run(eng, udp4('10.100.1.9', '10.100.1.50', 53, 1000 + i))
  }
  tt.equal(run(eng, udp4('10.100.1.50', '10.96.0.53', 2000, 53)), NatAction.DROP, 'all entries assured: no room')
  tt.equal(eng.counters[NatStat.DROP_CONNTRACK_FULL], 1)
  tt.equal(run(eng, udp4('10.100.1.9', '10.100.1.50', 53, 1000)), NatAction.FORWARD, 'existing flows unaffected')
})

t.test('crash recovery: a reply from a serving endpoint with no entry is re-adopted through the reverse index', async tt => {
  const eng = setup()
  // Outside a restart window such a packet may be a direct pod-to-pod connection's: it passes untouched.
  const direct = tcp4('10.100.1.30', '10.100.1.50', 8080, 39999, ACK | PSH, { seq: 5000, ack: 77, payload: 1000 })
  tt.equal(run(eng, direct), NatAction.PASS)
  tt.equal(flow(direct), '10.100.1.30:8080 > 10.100.1.50:39999', 'a direct connection to the pod is left alone')
  eng.replyPickupUntil = NOW + 30 // the agent restarted: connections it lost may be re-adopted for a while
  // dual's 10.100.1.30:8080 serves one service port: the download continues from the ClusterIP.
  const data = tcp4('10.100.1.30', '10.100.1.50', 8080, 40000, ACK | PSH, { seq: 5000, ack: 77, payload: 1000 })
  tt.equal(run(eng, data), NatAction.FORWARD)
  tt.equal(flow(data), '10.96.3.3:80 > 10.100.1.50:40000')
  clean(tt, data, 'picked-up reply')
  tt.equal(eng.counters[NatStat.REPLY_PICKUP], 1)
  const ack = tcp4('10.100.1.50', '10.96.3.3', 40000, 80, ACK, { seq: 77, ack: 6000 })
  tt.equal(run(eng, ack), NatAction.FORWARD)
  tt.equal(flow(ack), '10.100.1.50:40000 > 10.100.1.30:8080')
  tt.equal(eng.counters[NatStat.TRACKED], 1)
  tt.equal(eng.conntrackEntries(NOW)[0]?.state, 'ESTABLISHED')
  // IPv6 too.
  tt.equal(run(eng, tcp6('fd00:100::1e', 'fd00:100::50', 8080, 40000, ACK)), NatAction.FORWARD)
  tt.equal(eng.counters[NatStat.REPLY_PICKUP], 2)
  // 10.100.1.2:8080 serves web and two: which ClusterIP is unknown, so it passes untouched.
  const shared = tcp4('10.100.1.2', '10.100.1.50', 8080, 40001, ACK)
  tt.equal(run(eng, shared), NatAction.PASS)
  tt.equal(flow(shared), '10.100.1.2:8080 > 10.100.1.50:40001')
  // A reply to this node (a masqueraded flow: the client is unknown) and a SYN|ACK pass too.
  tt.equal(run(eng, tcp4('10.100.1.30', NODE_IP, 8080, 40002, ACK)), NatAction.PASS)
  tt.equal(run(eng, tcp4('10.100.1.30', '10.100.1.50', 8080, 40003, SYN | ACK)), NatAction.PASS)
  tt.equal(eng.counters[NatStat.REPLY_PICKUP], 2)
  // The index follows deltas: without `two`, 10.100.1.2:8080 serves web alone.
  eng.swap(updateNat(eng.table, [], [{ namespace: 'default', name: 'two' }]))
  const alone = tcp4('10.100.1.2', '10.100.1.50', 8080, 40004, ACK)
  tt.equal(run(eng, alone), NatAction.FORWARD)
  tt.equal(flow(alone), '10.96.0.10:80 > 10.100.1.50:40004')
  // ... and dual's endpoint leaves with dual.
  eng.swap(updateNat(eng.table, [], [{ namespace: 'default', name: 'dual' }]))
  tt.equal(run(eng, tcp4('10.100.1.30', '10.100.1.50', 8080, 40005, ACK)), NatAction.PASS)
  tt.equal(eng.counters[NatStat.REPLY_PICKUP], 3)
})

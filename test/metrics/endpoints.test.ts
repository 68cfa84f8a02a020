// tundra_endpoint_*: packets and new connections per (service port, endpoint), counted by the engine on real packet
// bytes, read with the same live request `tundra run` scrapes with, named with the table, and freed when an
// endpoint leaves the table (its series goes, its slot is reused without inheriting counts).
import t from 'tap'
import type { Cluster, Service } from '../../src/model/cluster'
import { compileNat, type NatConfig } from '../../src/nat/compile'
import { updateNat } from '../../src/nat/update'
import { NatEngine } from '../../src/nat/engine'
import { NatAction } from '../../src/nat/verdict'
import { engineLive } from '../../src/agent/live'
import { natEndpointCounters } from '../../src/metrics/endpoints'
import { connectOptions } from '../../src/nat/failover'
import { signalRows } from '../../src/nat/signals'
import { TundraMetrics } from '../../src/metrics/registry'
import { ACK, BASE_CONFIG, NODE, SYN, ep, info, parse, port, svc, tcp4, udp4, tcp6 } from '../nat/packets'

const CONFIG: NatConfig = { ...BASE_CONFIG, nodeIPs: [...BASE_CONFIG.nodeIPs], clusterCIDRs: [...BASE_CONFIG.clusterCIDRs] }
const NOW = 100000

const two = svc('two', {
  clusterIPs: ['10.96.0.20'],
  ports: [port('', 80, 8080)],
  endpoints: [ep('10.100.1.2', 8080, { node: NODE }), ep('10.100.2.3', 8080, { node: 'node-b' })],
})
const dns = svc('dns', {
  namespace: 'kube-system',
  clusterIPs: ['10.96.0.53'],
  ports: [port('', 53, 53, 'UDP')],
  endpoints: [ep('10.100.1.9', [{ name: '', protocol: 'UDP', port: 53 }], { node: NODE })],
})
const v6 = svc('six', {
  clusterIPs: ['fd00:96::6'],
  ipFamilies: [6],
  ports: [port('', 443, 8443)],
  endpoints: [ep('fd00:100::7', 8443, { node: NODE })],
})

function cluster(services: Service[]): Cluster {
  return { services, nodes: [], pods: [] }
}

function run(eng: NatEngine, p: Buffer): number {
  parse(p)
  return eng.process(p, 0, p.length, info, false, NOW)
}

t.test('packets and new connections land on the endpoint each connection was sent to', async t => {
  const table = compileNat(cluster([two, dns, v6]), CONFIG)
  const eng = new NatEngine(table, { seed: 7 })
  const live = engineLive(eng, () => NOW)
  // 20 TCP handshakes through two's ClusterIP (3 packets, both directions); 4 UDP queries from one source port (one flow)
  const sent = new Map<string, number>()
  for (let i = 0; i < 20; i++) {
    const syn = tcp4('10.100.1.50', '10.96.0.20', 40000 + i, 80, SYN)
    t.equal(run(eng, syn), NatAction.FORWARD)
    const ip = `${syn[16]}.${syn[17]}.${syn[18]}.${syn[19]}`
    sent.set(`${ip}:8080`, (sent.get(`${ip}:8080`) ?? 0) + 1)
    // the endpoint's SYN-ACK (reply direction) and the client's ACK
    t.equal(run(eng, tcp4(ip, '10.100.1.50', 8080, 40000 + i, SYN | ACK)), NatAction.FORWARD)
    t.equal(run(eng, tcp4('10.100.1.50', '10.96.0.20', 40000 + i, 80, ACK)), NatAction.FORWARD)
  }
  for (let i = 0; i < 4; i++) t.equal(run(eng, udp4('10.100.1.50', '10.96.0.53', 5353, 53)), NatAction.FORWARD)
  t.equal(run(eng, tcp6('fd00:100::50', 'fd00:96::6', 1234, 443, SYN)), NatAction.FORWARD)
  t.equal(sent.size, 2, 'both endpoints of two were chosen')

  const { rows, release } = natEndpointCounters(table, await live.endpointCounters())
  t.same(release, [])
  const by = new Map(rows.map(r => [`${r.namespace}/${r.service}/${r.port}/${r.endpoint}`, r]))
  for (const [to, n] of sent) {
    t.match(by.get(`default/two/80/${to}`), { newConnections: n, packets: 3 * n }, to)
  }
  t.match(by.get('kube-system/dns/53/10.100.1.9:53'), { newConnections: 1, packets: 4 })
  t.match(by.get('default/six/443/[fd00:100::7]:8443'), { newConnections: 1, packets: 1 })
  t.equal(rows.length, 4)

  // the rows render as tundra_endpoint_* series with the four labels
  const m = new TundraMetrics({ defaultMetrics: false, dataplane: () => ({ endpoints: rows }) })
  const text = (await m.render()).body
  t.match(text, 'tundra_endpoint_new_connections_total{namespace="kube-system",service="dns",port="53",endpoint="10.100.1.9:53"} 1')
  t.match(text, 'tundra_endpoint_packets_total{namespace="default",service="six",port="443",endpoint="[fd00:100::7]:8443"} 1')
})

t.test('an endpoint that leaves the table is released; its slot is reused without its counts', async t => {
  const one = svc('one', {
    clusterIPs: ['10.96.0.30'],
    ports: [port('', 80, 8080)],
    endpoints: [ep('10.100.1.2', 8080, { node: NODE })],
  })
  const t0 = compileNat(cluster([one]), CONFIG)
  const eng = new NatEngine(t0, { seed: 7 })
  const live = engineLive(eng, () => NOW)
  t.equal(run(eng, tcp4('10.100.1.50', '10.96.0.30', 40000, 80, SYN)), NatAction.FORWARD)
  t.equal(run(eng, tcp4('10.100.1.2', '10.100.1.50', 8080, 40000, SYN | ACK)), NatAction.FORWARD)

  const moved = svc('one', { ...one, endpoints: [ep('10.100.1.3', 8080, { node: NODE })] })
  const t1 = updateNat(t0, [moved])
  eng.swap(t1)
  const first = natEndpointCounters(t1, await live.endpointCounters())
  t.same(first.rows, [], 'the old endpoint is not reported')
  t.equal(first.release.length, 1, 'its slot is to be released')

  t.equal(run(eng, tcp4('10.100.1.50', '10.96.0.30', 40001, 80, SYN)), NatAction.FORWARD)
  // the release goes with the next request; the new endpoint's slot starts from zero
  const second = natEndpointCounters(t1, await live.endpointCounters(first.release))
  t.same(second.release, [])
  t.same(second.rows, [{ namespace: 'default', service: 'one', port: '80', endpoint: '10.100.1.3:8080', packets: 1, newConnections: 1 }])
  t.equal(run(eng, tcp4('10.100.1.3', '10.100.1.50', 8080, 40001, SYN | ACK)), NatAction.FORWARD)
  const third = natEndpointCounters(t1, await live.endpointCounters())
  t.match(third.rows, [{ endpoint: '10.100.1.3:8080', packets: 2, newConnections: 1 }])
})

t.test('a service port that takes a freed id does not inherit the counts of the one before', async t => {
  const a = svc('a', { clusterIPs: ['10.96.0.40'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080, { node: NODE })] })
  const b = svc('b', { clusterIPs: ['10.96.0.41'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080, { node: NODE })] })
  const t0 = compileNat(cluster([a]), CONFIG)
  const eng = new NatEngine(t0, { seed: 7 })
  const live = engineLive(eng, () => NOW)
  t.equal(run(eng, tcp4('10.100.1.50', '10.96.0.40', 40000, 80, SYN)), NatAction.FORWARD)
  // a goes, b comes (same pod, same port) before the next scrape: b gets a's id
  const gone = updateNat(t0, [], [{ namespace: 'default', name: 'a' }])
  eng.swap(gone)
  const t1 = updateNat(gone, [b])
  eng.swap(t1)
  const idA = t0.svcPorts.findIndex(sp => sp?.name === 'a')
  t.equal(
    t1.svcPorts.findIndex(sp => sp?.name === 'b'),
    idA,
    'b took the id a had',
  )
  t.equal(run(eng, tcp4('10.100.1.50', '10.96.0.41', 40001, 80, SYN)), NatAction.FORWARD)
  const { rows, release } = natEndpointCounters(t1, await live.endpointCounters())
  t.same(rows, [{ namespace: 'default', service: 'b', port: '80', endpoint: '10.100.1.2:8080', packets: 1, newConnections: 1 }])
  t.equal(release.length, 1, "a's slot is released")
})

t.test('one book: a released slot taken by another endpoint starts from zero, signals included', async t => {
  const one = svc('one', { clusterIPs: ['10.96.0.30'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080, { node: NODE })] })
  const t0 = compileNat(cluster([one]), CONFIG)
  const eng = new NatEngine(t0, { seed: 7, connect: connectOptions({}) })
  const live = engineLive(eng, () => NOW)
  t.equal(run(eng, tcp4('10.100.1.50', '10.96.0.30', 40000, 80, SYN)), NatAction.FORWARD)
  t.equal(run(eng, tcp4('10.100.1.2', '10.100.1.50', 8080, 40000, SYN | ACK)), NatAction.FORWARD)
  const t1 = updateNat(t0, [svc('one', { ...one, endpoints: [ep('10.100.1.3', 8080, { node: NODE })] })])
  eng.swap(t1)
  const first = natEndpointCounters(t1, await live.endpointCounters())
  t.equal(first.release.length, 1)
  await live.endpointCounters(first.release)
  t.equal(run(eng, tcp4('10.100.1.50', '10.96.0.30', 40001, 80, SYN)), NatAction.FORWARD, 'the new endpoint takes the freed slot')
  const snap = await live.endpointCounters()
  t.same(natEndpointCounters(t1, snap).rows, [{ namespace: 'default', service: 'one', port: '80', endpoint: '10.100.1.3:8080', packets: 1, newConnections: 1 }])
  const sig = signalRows(t1, snap)
  t.match(sig, [{ endpoint: '10.100.1.3:8080', opened: 1, active: 1, bytesTo: 40, bytesFrom: 0 }], 'signals of the new endpoint only')
  t.equal(sig.length, 1)
})

t.test('signals.enabled false: packets and new connections are still counted, signal rows are empty', async t => {
  const eng = new NatEngine(compileNat(cluster([two]), CONFIG), { seed: 7, connect: connectOptions({ signals: { enabled: false } }) })
  t.equal(eng.tracking, false, 'connect tracking off')
  const live = engineLive(eng, () => NOW)
  t.equal(run(eng, tcp4('10.100.1.50', '10.96.0.20', 40000, 80, SYN)), NatAction.FORWARD)
  const snap = await live.endpointCounters()
  t.match(natEndpointCounters(eng.table, snap).rows, [{ packets: 1, newConnections: 1 }])
  t.same(signalRows(eng.table, snap), [])
  t.same(await live.endpointSignals?.(), [])
})

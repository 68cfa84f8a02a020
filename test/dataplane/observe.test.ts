// The observe ring on real packets through a NAT engine: new flows with their endpoint, rejects and drops with the
// counter that moved, closes, DNS names, failed connects and ejections; drop-oldest when full, counted.
import t from 'tap'
import { FlowRing, decodeFlows } from '../../src/dataplane/observe'
import { LOOP_DROP_NAMES } from '../../src/dataplane/loop'
import { compileNat } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { connectOptions } from '../../src/nat/failover'
import { DEFAULT_OUTLIER } from '../../src/nat/outlier'
import { ACK, BASE_CONFIG, FIN, RST, SYN, ep, info, parse, port, svc, tcp4, udp4 } from '../nat/packets'

const VIP = '10.96.0.30'
const CLIENT = '10.100.1.50'
const web = svc('web', { clusterIPs: [VIP], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080, { node: 'node-a' })] })
const empty = svc('empty', { clusterIPs: ['10.96.0.31'], ports: [port('', 80, 8080)], endpoints: [] })

function setup(): { eng: NatEngine; ring: FlowRing } {
  const cfg = { ...BASE_CONFIG, nodeIPs: [...BASE_CONFIG.nodeIPs], clusterCIDRs: [...BASE_CONFIG.clusterCIDRs] }
  const connect = { ...connectOptions({}), outlier: { ...DEFAULT_OUTLIER, consecutiveFailures: 1 } }
  const eng = new NatEngine(compileNat({ services: [web, empty], nodes: [], pods: [] }, cfg), { seed: 1, connect })
  const ring = new FlowRing(4, eng)
  eng.onConnectEvent = (kind, family, e, b, why) => ring.connectEvent(kind, family, e, b, why)
  return { eng, ring }
}

function through(eng: NatEngine, ring: FlowRing, p: Buffer): number {
  parse(p)
  ring.beforeNat(p, info)
  const act = eng.process(p, 0, p.length, info, false, 1000)
  ring.afterNat(p, 0, info, act)
  return act
}

const drain = (ring: FlowRing): ReturnType<typeof decodeFlows> => decodeFlows(ring.drain(100), LOOP_DROP_NAMES)

t.test('new, closed and rejected flows', async tt => {
  const { eng, ring } = setup()
  through(eng, ring, tcp4(CLIENT, VIP, 40000, 80, SYN))
  through(eng, ring, tcp4('10.100.1.2', CLIENT, 8080, 40000, SYN | ACK, { ack: 1001 }))
  through(eng, ring, tcp4(CLIENT, VIP, 40000, 80, FIN | ACK, { seq: 1001 }))
  through(eng, ring, tcp4(CLIENT, '10.96.0.31', 40001, 80, SYN))
  const f = drain(ring)
  tt.match(f, [
    { kind: 'new', protocol: 'tcp', src: CLIENT, sport: 40000, dst: VIP, dport: 80, endpoint: '10.100.1.2:8080' },
    { kind: 'closed', reason: 'fin' },
    { kind: 'rejected', dst: '10.96.0.31', reason: 'reject_no_endpoints' },
  ])
  tt.equal(f.length, 3)
  tt.same(drain(ring), [], 'drained')
})

t.test('a failed connect and the ejection it causes', async tt => {
  const { eng, ring } = setup()
  through(eng, ring, tcp4(CLIENT, VIP, 40002, 80, SYN))
  drain(ring)
  through(eng, ring, tcp4('10.100.1.2', CLIENT, 8080, 40002, RST | ACK, { ack: 1001 }))
  const f = drain(ring)
  tt.match(f, [
    { kind: 'ejected', endpoint: '10.100.1.2:8080', reason: 'rst' },
    { kind: 'connect-failed', src: CLIENT, sport: 40002, dst: VIP, dport: 80, endpoint: '10.100.1.2:8080', reason: 'rst' },
    { kind: 'closed', reason: 'rst' },
  ])
})

t.test('DNS queries carry the name and type', async tt => {
  const { ring } = setup()
  // a query for web.default.svc.cluster.local A, after the UDP header
  const name = 'web.default.svc.cluster.local'
  const q = Buffer.concat([
    Buffer.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...name.split('.').map(l => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])),
    Buffer.from([0, 0, 1, 0, 1]),
  ])
  const p = udp4(CLIENT, '10.96.0.10', 5353, 53, q.length)
  q.copy(p, 28)
  parse(p)
  ring.dns(p, info, 28, q.length, -1)
  ring.dns(p, info, 28, q.length, 3)
  tt.match(drain(ring), [
    { kind: 'dns-query', src: CLIENT, dst: '10.96.0.10', dport: 53, dns: { name, qtype: 1 } },
    { kind: 'dns-answer', dns: { name, qtype: 1, rcode: 3 } },
  ])
})

t.test('full: the oldest records go, counted', async tt => {
  const { eng, ring } = setup()
  for (let i = 0; i < 6; i++) through(eng, ring, tcp4(CLIENT, '10.96.0.31', 41000 + i, 80, SYN))
  const d = ring.drain(100)
  tt.equal(d.n, 4)
  tt.equal(d.overwritten, 2)
  tt.same(
    decodeFlows(d, LOOP_DROP_NAMES).map(f => f.sport),
    [41002, 41003, 41004, 41005],
  )
})

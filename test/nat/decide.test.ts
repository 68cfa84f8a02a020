// Differential property test: random compiled tables x random new-connection tuples; what the engine does to the
// packet (verdict, endpoint, masquerade) must be what explain says it does. Replay a failure with
// TUNDRA_SEED=<seed printed below>.
import t from 'tap'
import type { Endpoint, Service } from '../../src/model/cluster'
import { compileNat } from '../../src/nat/compile'
import type { NatConfig } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { NatAction } from '../../src/nat/verdict'
import { explain } from '../../src/inspect/explain'
import type { Explanation } from '../../src/inspect/explain'
import { Rng } from '../../src/nat/select'
import { endpointNames } from '../../src/nat/endpoints'
import { proxyServicePorts } from '../../src/kubeproxy/serviceports'
import { BASE_CONFIG, NODE, NODE_IP, SYN, ep, flow, info, parse, port, svc, tcp4, udp4 } from './packets'

const SEED = Number(process.env.TUNDRA_SEED ?? (Math.random() * 0x100000000) >>> 0)
const TABLES = 500
const TUPLES = 24
const NOW = 100000

const rng = new Rng(SEED)
const below = (n: number): number => rng.below(n)
const pick = <T>(xs: readonly T[]): T => xs[below(xs.length)]!
const chance = (p: number): boolean => below(1000) < p * 1000

const NODES = [NODE, 'node-b', 'node-c']
const EXTERNAL = ['198.51.100.7', '203.0.113.99', '192.0.2.1']
const RANGES = ['198.51.100.0/24', '192.168.1.0/24', '203.0.113.0/25']

interface Built {
  services: Service[]
  cfg: NatConfig
  srcs: string[]
  dsts: string[]
  ports: number[]
  frontends: [string, number][]
}

function randomCluster(): Built {
  const services: Service[] = []
  const srcs = [NODE_IP, ...EXTERNAL, '10.100.7.7']
  const dsts = [NODE_IP, '10.96.9.9', ...EXTERNAL]
  const ports = [80, 81, 443]
  const frontends: [string, number][] = []
  const n = 1 + below(4)
  for (let s = 0; s < n; s++) {
    const type = pick(['ClusterIP', 'NodePort', 'LoadBalancer'] as const)
    const clusterIP = `10.96.0.${10 + s}`
    const sp = 80 + below(2)
    const nodePort = type === 'ClusterIP' ? 0 : 30000 + s
    const lbIP = `203.0.113.${10 + s}`
    const externalIPs = chance(0.2) ? [`192.0.2.${50 + s}`] : []
    const endpoints: Endpoint[] = []
    const ne = below(5)
    for (let e = 0; e < ne; e++) {
      const ip = `10.100.${s}.${e + 2}`
      const ready = chance(0.75)
      endpoints.push(
        ep(ip, 8080, {
          ready,
          serving: ready || chance(0.5),
          terminating: !ready && chance(0.6),
          node: pick(NODES),
        }),
      )
      srcs.push(ip)
    }
    services.push(
      svc(`s${s}`, {
        type,
        clusterIPs: [clusterIP],
        externalIPs,
        ports: [port('', sp, 8080, chance(0.5) ? 'TCP' : 'UDP', nodePort)],
        endpoints,
        externalTrafficPolicy: chance(0.5) ? 'Local' : 'Cluster',
        internalTrafficPolicy: chance(0.3) ? 'Local' : 'Cluster',
        affinityTimeout: chance(0.2) ? 60 : 0,
        ...(type === 'LoadBalancer'
          ? {
              loadBalancerIngress: [{ ip: lbIP, ipMode: 'VIP' as const }],
              loadBalancerSourceRanges: chance(0.5) ? [pick(RANGES)] : [],
            }
          : {}),
      }),
    )
    dsts.push(clusterIP, lbIP, ...externalIPs)
    ports.push(sp, nodePort)
    frontends.push([clusterIP, sp], ...externalIPs.map(ip => [ip, sp] as [string, number]))
    if (nodePort > 0) frontends.push([NODE_IP, nodePort])
    if (type === 'LoadBalancer') frontends.push([lbIP, sp])
  }
  const cfg: NatConfig = {
    ...BASE_CONFIG,
    masqueradeAll: chance(0.2),
    lb: chance(0.3) ? 'maglev' : 'random',
    maglevTableSize: 251,
    clusterCIDRs: chance(0.8) ? [...BASE_CONFIG.clusterCIDRs] : [],
  }
  return { services, cfg, srcs, dsts, ports, frontends }
}

const ACTION: Record<Explanation['verdict'], number> = {
  pass: NatAction.PASS,
  dnat: NatAction.FORWARD,
  reject: NatAction.REJECT,
  drop: NatAction.DROP,
  tracked: NatAction.FORWARD,
  reply: NatAction.REPLY,
}

t.test(`engine and explain agree on ${TABLES * TUPLES} new connections (seed ${SEED})`, async tt => {
  tt.comment(`seed ${SEED} (replay: TUNDRA_SEED=${SEED})`)
  let cases = 0
  const seen = new Map<string, number>()
  let sport = 1024
  for (let ti = 0; ti < TABLES; ti++) {
    const b = randomCluster()
    const table = compileNat({ services: b.services, nodes: [], pods: [] }, b.cfg)
    const eng = new NatEngine(table, { seed: SEED ^ ti, conntrackMax: 4096 })
    for (let q = 0; q < TUPLES; q++) {
      const src = pick(b.srcs)
      // Mostly a real frontend (so every branch of the decision is reached), sometimes any address and port.
      const [dst, dport] = chance(0.75) ? pick(b.frontends) : [pick(b.dsts), pick(b.ports)]
      const udp = chance(0.4)
      sport = sport >= 65000 ? 1024 : sport + 1
      const p = udp ? udp4(src, dst, sport, dport) : tcp4(src, dst, sport, dport, SYN)
      const ex = explain(table, { src, dst, protocol: udp ? 'UDP' : 'TCP', sport, dport }, { now: NOW })
      parse(p)
      const action = eng.process(p, 0, p.length, info, false, NOW)
      cases++
      const what = `seed ${SEED} table ${ti} tuple ${q}: ${udp ? 'udp' : 'tcp'} ${src}:${sport} > ${dst}:${dport}`
      seen.set(ex.verdict, (seen.get(ex.verdict) ?? 0) + 1)
      if (action !== ACTION[ex.verdict]) {
        tt.fail(`${what}: engine action ${action}, explain ${ex.verdict} (${ex.reason})`)
        return
      }
      if (ex.verdict !== 'dnat') continue
      const [from, to] = flow(p).split(' > ') as [string, string]
      const chosen = ex.endpoints!.find(e => e.endpoint === to)
      if (chosen === undefined) {
        tt.fail(`${what}: engine chose ${to}, explain allows ${ex.endpoints!.map(e => e.endpoint).join(' ')}`)
        return
      }
      const masqueraded = from.startsWith(`${NODE_IP}:`) && src !== NODE_IP
      const expectMasq = ex.masquerade!.always || chosen.hairpin
      if (src !== NODE_IP && masqueraded !== expectMasq) {
        tt.fail(`${what}: engine masquerade ${masqueraded}, explain ${expectMasq} (${ex.masquerade!.reason})`)
        return
      }
      if (ex.maglevPick !== undefined && ex.affinity === undefined && to !== ex.maglevPick) {
        tt.fail(`${what}: engine chose ${to}, Maglev pick per explain ${ex.maglevPick}`)
        return
      }
    }
  }
  tt.ok(cases >= 10000, `${cases} cases`)
  // The generator must reach every verdict, or the agreement proves little.
  for (const v of ['pass', 'dnat', 'reject', 'drop']) tt.ok((seen.get(v) ?? 0) > 100, `${v}: ${seen.get(v) ?? 0} cases`)
  tt.comment([...seen].map(([k, v]) => `${k} ${v}`).join(', '))
})

t.test(`compile and the kube-proxy renderers categorise endpoints alike (seed ${SEED})`, async tt => {
  for (let c = 0; c < 2000; c++) {
    const b = randomCluster()
    const table = compileNat({ services: b.services, nodes: [], pods: [] }, b.cfg)
    const kp = proxyServicePorts({ services: b.services, nodes: [], pods: [] }, 4, { nodeName: NODE })
    for (const p of kp) {
      const sp = table.svcPorts.find(s => s !== undefined && s.servicePortName === p.name)!
      const what = `seed ${SEED} cluster ${c} ${p.name}`
      if (p.usesClusterEndpoints && endpointNames(sp.cluster).join(' ') !== p.clusterEndpoints.map(e => e.str).join(' ')) {
        tt.fail(`${what}: cluster endpoints ${endpointNames(sp.cluster).join(' ')} vs ${p.clusterEndpoints.map(e => e.str).join(' ')}`)
        return
      }
      if (p.usesLocalEndpoints && endpointNames(sp.local).join(' ') !== p.localEndpoints.map(e => e.str).join(' ')) {
        tt.fail(`${what}: local endpoints ${endpointNames(sp.local).join(' ')} vs ${p.localEndpoints.map(e => e.str).join(' ')}`)
        return
      }
    }
  }
  tt.pass('2000 clusters')
})

t.test('a ready endpoint that is not serving is used, as kube-proxy does (publishNotReadyAddresses)', async tt => {
  const s = svc('pnr', {
    clusterIPs: ['10.96.0.10'],
    publishNotReadyAddresses: true,
    ports: [port('', 80, 8080)],
    endpoints: [ep('10.100.0.2', 8080, { ready: true, serving: false, node: NODE })],
  })
  const table = compileNat({ services: [s], nodes: [], pods: [] }, BASE_CONFIG)
  tt.same(endpointNames(table.svcPorts[0]!.cluster), ['10.100.0.2:8080'])
})

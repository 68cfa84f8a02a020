// compileNat / updateNat: golden dumps of whole tables, and updates that must equal a full compile.
//
// Goldens live in test/nat/golden/<name>.txt. After an intended change to the compiler or the dump format,
// regenerate them with:   TUNDRA_UPDATE_GOLDEN=1 npx tap test/nat/compile.test.ts
// and review the diff; without the variable a missing or different golden fails the test.
import t from 'tap'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Cluster, Service } from '../../src/model/cluster'
import { compileNat, endpointPort, FrontendKind } from '../../src/nat/compile'
import { formatNatTable } from '../../src/nat/format'
import { updateNat } from '../../src/nat/update'
import type { NatConfig, NatTable } from '../../src/nat/compile'
import { healthCheckByPort, healthCheckResponse } from '../../src/metrics/health'
import { endpointNames } from '../../src/nat/endpoints'
import { BASE_CONFIG, NODE, ep, ip4, port, svc } from './packets'

const GOLDEN = join(__dirname, 'golden')
const UPDATE = process.env.TUNDRA_UPDATE_GOLDEN === '1'

function golden(tt: tap.Test, name: string, text: string): void {
  const file = join(GOLDEN, `${name}.txt`)
  if (UPDATE) {
    mkdirSync(GOLDEN, { recursive: true })
    writeFileSync(file, text)
    tt.pass(`wrote ${file}`)
    return
  }
  tt.ok(existsSync(file), `golden ${name}.txt exists (TUNDRA_UPDATE_GOLDEN=1 to create it)`)
  if (existsSync(file)) tt.equal(text, readFileSync(file, 'utf8'), `${name} matches its golden`)
}

const web = svc('web', {
  type: 'NodePort',
  clusterIPs: ['10.96.0.10'],
  ports: [port('http', 80, 'http-web', 'TCP', 30080), port('metrics', 9090, 9090, 'TCP', 30090)],
  endpoints: [
    // slice ports carry the service port names (the controller resolved targetPort per pod)
    ep(
      '10.100.1.2',
      [
        { name: 'http', protocol: 'TCP', port: 8080 },
        { name: 'metrics', protocol: 'TCP', port: 9100 },
      ],
      { node: NODE },
    ),
    ep(
      '10.100.2.3',
      [
        { name: 'http', protocol: 'TCP', port: 8081 },
        { name: 'metrics', protocol: 'TCP', port: 9100 },
      ],
      { node: 'node-b' },
    ),
    ep('10.100.2.4', [{ name: 'http', protocol: 'TCP', port: 8080 }], { node: 'node-b', ready: false, serving: false }),
  ],
})

const dns = svc('kube-dns', {
  namespace: 'kube-system',
  clusterIPs: ['10.96.0.53'],
  ports: [port('dns', 53, 53, 'UDP'), port('dns-tcp', 53, 53, 'TCP')],
  endpoints: [
    ep(
      '10.100.1.9',
      [
        { name: 'dns', protocol: 'UDP', port: 53 },
        { name: 'dns-tcp', protocol: 'TCP', port: 53 },
      ],
      { node: NODE },
    ),
  ],
})

const lb = svc('shop', {
  type: 'LoadBalancer',
  clusterIPs: ['10.96.1.1'],
  externalTrafficPolicy: 'Local',
  healthCheckNodePort: 32000,
  loadBalancerIngress: [
    { ip: '203.0.113.7', ipMode: 'VIP' },
    { ip: '203.0.113.8', ipMode: 'Proxy' },
  ],
  loadBalancerSourceRanges: ['198.51.100.0/24', '192.168.1.0/24'],
  externalIPs: ['198.51.100.99'],
  ports: [port('', 443, 8443, 'TCP', 31443)],
  endpoints: [
    ep('10.100.1.20', [{ name: '', protocol: 'TCP', port: 8443 }], { node: NODE }),
    ep('10.100.1.21', [{ name: '', protocol: 'TCP', port: 8443 }], { node: NODE, ready: false, serving: true, terminating: true }),
    ep('10.100.3.5', [{ name: '', protocol: 'TCP', port: 8443 }], { node: 'node-c' }),
  ],
})

const draining = svc('draining', {
  clusterIPs: ['10.96.2.2'],
  affinityTimeout: 10800,
  internalTrafficPolicy: 'Local',
  ports: [port('', 80, 80)],
  endpoints: [
    ep('10.100.3.7', 80, { node: 'node-c', ready: false, serving: true, terminating: true }),
    ep('10.100.1.7', 80, { node: NODE, ready: false, serving: true, terminating: true }),
    ep('10.100.1.8', 80, { node: NODE, ready: false, serving: false, terminating: true }),
  ],
})

const dual = svc('dual', {
  clusterIPs: ['10.96.3.3', 'fd00:96::3'],
  ipFamilies: [4, 6],
  ports: [port('', 80, 8080)],
  endpoints: [ep('10.100.1.30', 8080, { node: NODE }), ep('fd00:100::1e', [{ name: '', protocol: 'TCP', port: 8080 }], { node: NODE })],
})

const others = [
  svc('headless', { headless: true, ports: [port('', 80, 80)], endpoints: [ep('10.100.1.40', 80)] }),
  svc('external', { type: 'ExternalName', externalName: 'example.com' }),
  svc('empty', { clusterIPs: ['10.96.4.4'], ports: [port('', 80, 80)] }),
  // claims web's ClusterIP:80 as an externalIP: a frontend conflict, reported and not installed
  svc('zz-conflict', { clusterIPs: ['10.96.5.5'], externalIPs: ['10.96.0.10'], ports: [port('', 80, 80)], endpoints: [ep('10.100.2.50', 80)] }),
]

function cluster(services: Service[]): Cluster {
  return { services, nodes: [], pods: [] }
}

const CONFIG: NatConfig = { ...BASE_CONFIG, nodeIPs: [...BASE_CONFIG.nodeIPs], clusterCIDRs: [...BASE_CONFIG.clusterCIDRs] }

t.test('golden: mixed cluster, random', async tt => {
  const table = compileNat(cluster([web, dns, lb, draining, dual, ...others]), CONFIG)
  golden(tt, 'mixed', formatNatTable(table))
})

t.test('golden: same cluster, maglev, nodePortAddresses and masquerade-all', async tt => {
  const table = compileNat(cluster([web, dns, lb, draining, dual, ...others]), {
    ...CONFIG,
    lb: 'maglev',
    maglevTableSize: 251,
    masqueradeAll: true,
    icmpMode: 'reject',
    nodeIPs: ['192.168.1.10', '10.0.0.10'],
    nodePortAddresses: ['10.0.0.0/8'],
  })
  golden(tt, 'maglev-nodeport-addresses', formatNatTable(table))
})

t.test('golden: input order does not matter', async tt => {
  const a = compileNat(cluster([web, dns, lb, draining, dual, ...others]), CONFIG)
  const b = compileNat(cluster([...others].reverse().concat([dual, draining, lb, dns, web])), CONFIG)
  tt.equal(formatNatTable(b), formatNatTable(a))
})

t.test('frontends: ClusterIP, NodePort, externalIP, LB; Proxy ingress and other node IPs are not', async tt => {
  const table = compileNat(cluster([web, lb]), CONFIG)
  const fe = table.v4.fe
  const look = (addr: string, proto: number, p: number): number => {
    fe.key[0] = ip4(addr)
    fe.key[1] = ((proto << 16) | p) >>> 0
    return fe.get(-1 >>> 0)
  }
  const kindOf = (v: number): number => v & 3
  tt.equal(kindOf(look('10.96.0.10', 6, 80)), FrontendKind.CLUSTER_IP)
  tt.equal(kindOf(look('192.168.1.10', 6, 30080)), FrontendKind.NODE_PORT)
  tt.equal(kindOf(look('198.51.100.99', 6, 443)), FrontendKind.EXTERNAL_IP)
  tt.equal(kindOf(look('203.0.113.7', 6, 443)), FrontendKind.LOAD_BALANCER)
  tt.equal(look('203.0.113.8', 6, 443), -1 >>> 0, 'ipMode Proxy ingress is not short-circuited')
  tt.equal(look('10.96.0.10', 17, 80), -1 >>> 0, 'protocol is part of the key')
  tt.equal(look('10.96.0.10', 6, 81), -1 >>> 0)
  // Both ports of web resolve their named targetPort per endpoint.
  const http = table.svcPorts[look('10.96.0.10', 6, 80) >>> 2]!
  tt.same(endpointNames(http.cluster), ['10.100.1.2:8080', '10.100.2.3:8081'])
  const metrics = table.svcPorts[look('10.96.0.10', 6, 9090) >>> 2]!
  tt.same(endpointNames(metrics.cluster), ['10.100.1.2:9100', '10.100.2.3:9100'])
})

t.test('endpointPort: slice port by service port name, then container port name, then numeric targetPort', async tt => {
  const sp = port('web', 80, 'http')
  tt.equal(endpointPort(ep('10.0.0.1', [{ name: 'web', protocol: 'TCP', port: 8080 }]), sp), 8080)
  tt.equal(endpointPort(ep('10.0.0.1', [{ name: 'http', protocol: 'TCP', port: 8081 }]), sp), 8081)
  tt.equal(endpointPort(ep('10.0.0.1', [{ name: 'web', protocol: 'UDP', port: 8080 }]), sp), -1, 'protocol must match')
  tt.equal(endpointPort(ep('10.0.0.1', []), port('', 80, 8080)), 8080)
  tt.equal(endpointPort(ep('10.0.0.1', []), port('', 80, 0)), 80)
  tt.equal(endpointPort(ep('10.0.0.1', []), sp), -1)
})

t.test('usable endpoints: ready, else serving+terminating, never serving=false; Local policies', async tt => {
  const table = compileNat(cluster([lb, draining]), CONFIG)
  const byName = (n: string): NatTable['svcPorts'][number][] => table.svcPorts.filter(sp => sp?.name === n)
  const shop = byName('shop')[0]!
  tt.same(endpointNames(shop.cluster), ['10.100.1.20:8443', '10.100.3.5:8443'], 'terminating not used while a ready one exists')
  tt.same(endpointNames(shop.local), ['10.100.1.20:8443'])
  tt.equal(shop.external, shop.local)
  tt.equal(shop.internal, shop.cluster)
  const dr = byName('draining')[0]!
  tt.same(endpointNames(dr.cluster), ['10.100.1.7:80', '10.100.3.7:80'], 'no ready endpoint: serving+terminating ones')
  tt.same(endpointNames(dr.local), ['10.100.1.7:80'])
  tt.equal(dr.internal, dr.local, 'internalTrafficPolicy Local')
  tt.notOk(endpointNames(dr.serving).includes('10.100.1.8:80'), 'serving=false is never a target')
})

t.test('health checks: kube-proxy body and status', async tt => {
  const table = compileNat(cluster([lb]), CONFIG)
  const hc = healthCheckByPort(table, 32000)!
  tt.equal(hc.localEndpoints, 1, 'terminating local endpoint is not counted')
  const r = healthCheckResponse(hc)
  tt.equal(r.status, 200)
  tt.same(JSON.parse(r.body), { service: { namespace: 'default', name: 'shop' }, localEndpoints: 1, serviceProxyHealthy: true })
  const none = compileNat(cluster([{ ...lb, endpoints: lb.endpoints.filter(e => e.nodeName !== NODE) }]), CONFIG)
  tt.equal(healthCheckResponse(healthCheckByPort(none, 32000)!).status, 503)
  tt.equal(healthCheckByPort(compileNat(cluster([web]), CONFIG), 32000), undefined)
})

t.test('updateNat equals a full compile of the new state, keeps ids and leaves the old table alone', async tt => {
  const before = [web, dns, lb, draining, dual, ...others]
  const t1 = compileNat(cluster(before), CONFIG)
  const dump1 = formatNatTable(t1)
  const web2: Service = { ...web, endpoints: web.endpoints.slice(0, 1) }
  const added = svc('new-one', { clusterIPs: ['10.96.9.9'], ports: [port('', 8080, 80)], endpoints: [ep('10.100.2.77', 80)] })
  const t2 = updateNat(t1, [web2, added], [{ namespace: 'default', name: 'draining' }])
  const after = [web2, dns, lb, dual, ...others, added]
  tt.equal(formatNatTable(t2), formatNatTable(compileNat(cluster(after), CONFIG)))
  tt.equal(formatNatTable(t1), dump1, 'old table unchanged')
  tt.equal(t2.generation, t1.generation + 1)
  // Ids: unchanged service ports keep theirs; the web ports keep theirs though the service changed.
  const idOf = (table: NatTable, key: string): number => table.svcPorts.find(sp => sp?.key === key)?.id ?? -1
  for (const key of ['default/web:http/TCP/4', 'default/web:metrics/TCP/4', 'kube-system/kube-dns:dns/UDP/4']) {
    tt.equal(idOf(t2, key), idOf(t1, key), `${key} keeps its id`)
  }
  const dnsId = idOf(t1, 'kube-system/kube-dns:dns/UDP/4')
  tt.equal(t2.svcPorts[dnsId], t1.svcPorts[dnsId], 'untouched service ports are shared, not copied')
  // The deleted service's ClusterIP is gone from the VIP set; its id is free now.
  const dId = idOf(t1, 'default/draining::/TCP/4'.replace('::', ':'))
  tt.ok(dId >= 0)
  tt.equal(t2.svcPorts[dId], undefined)
  tt.ok(t2.freeIds.includes(dId))
  t2.v4.vip.key[0] = ip4('10.96.2.2')
  tt.equal(t2.v4.vip.find(), -1)
  t1.v4.vip.key[0] = ip4('10.96.2.2')
  tt.ok(t1.v4.vip.find() >= 0, 'still in the old table')
})

t.test('updateNat: an endpoint change writes nothing to the frontend maps; a port rename or clusterIP move does', async tt => {
  // (without `others`: its conflict's message names web's port as compiled, which updateNat does not redo)
  const t1 = compileNat(cluster([web, dns, lb, dual]), CONFIG)
  const t2 = updateNat(t1, [{ ...web, endpoints: web.endpoints.slice(1) }])
  tt.ok(t2.v4.fe.isShared && t2.v4.vip.isShared, 'maps still shared with the old table')
  tt.ok(t2.delta !== undefined && t2.delta.from === t1.generation, 'the update says which ids it changed')
  const webIds = t1.svcPorts
    .filter(sp => sp?.name === 'web')
    .map(sp => sp!.id)
    .sort((a, b) => a - b)
  tt.same(t2.delta?.ids, webIds)
  // Same port number under a new name: a new service port takes the frontend over; the old one is gone.
  const renamed: Service = { ...web, ports: [port('web', 80, 'http-web', 'TCP', 30080), web.ports[1]!] }
  const t3 = updateNat(t2, [renamed])
  tt.equal(formatNatTable(t3), formatNatTable(compileNat(cluster([renamed, dns, lb, dual]), CONFIG)))
  tt.notOk(t3.v4.fe.isShared, 'a changed frontend copies the map')
  tt.equal(
    formatNatTable(t2),
    formatNatTable(compileNat(cluster([{ ...web, endpoints: web.endpoints.slice(1) }, dns, lb, dual]), CONFIG)),
    'the old table is left alone',
  )
  tt.notOk(
    t3.problems.some(p => p.object === 'Service default/web'),
    'not reported as a conflict with its old self',
  )
  // Moving the ClusterIP: the old VIP goes, the new one answers.
  const moved: Service = { ...renamed, clusterIPs: ['10.96.0.99'] }
  const t4 = updateNat(t3, [moved])
  tt.equal(formatNatTable(t4), formatNatTable(compileNat(cluster([moved, dns, lb, dual]), CONFIG)))
  t4.v4.vip.key[0] = ip4('10.96.0.10')
  tt.equal(t4.v4.vip.find(), -1, 'old ClusterIP no longer a VIP')
  t3.v4.vip.key[0] = ip4('10.96.0.10')
  tt.ok(t3.v4.vip.find() >= 0, 'but still in the table before')
})

t.test('compileNat with prev keeps ids; a new key may reuse a freed slot but gets a new uid', async tt => {
  const t1 = compileNat(cluster([web, dns]), CONFIG)
  const t2 = compileNat(cluster([dns, svc('other', { clusterIPs: ['10.96.7.7'], ports: [port('', 1, 1)] })]), CONFIG, t1)
  const d1 = t1.svcPorts.find(sp => sp?.name === 'kube-dns' && sp.protocol === 'UDP')!
  const d2 = t2.svcPorts.find(sp => sp?.name === 'kube-dns' && sp.protocol === 'UDP')!
  tt.equal(d2.id, d1.id)
  tt.equal(d2.uid, d1.uid)
  tt.equal(d2.cluster, d1.cluster, 'identical endpoint set object reused')
  const o = t2.svcPorts.find(sp => sp?.name === 'other')!
  const prevAtSlot = t1.svcPorts[o.id]
  if (prevAtSlot !== undefined) tt.not(o.uid, prevAtSlot.uid)
})

t.test('update of a service keeps working after many rounds (no id leak)', async tt => {
  let table = compileNat(cluster([web, dns]), CONFIG)
  const size = table.svcPorts.length
  for (let i = 0; i < 50; i++) {
    const extra = svc(`tmp${i}`, { clusterIPs: [`10.96.8.${i + 1}`], ports: [port('', 80, 80)] })
    table = updateNat(table, [extra])
    table = updateNat(table, [], [{ namespace: 'default', name: `tmp${i}` }])
  }
  tt.ok(table.svcPorts.length <= size + 2, `svcPorts did not grow without bound (${table.svcPorts.length})`)
})

t.test('bad input is reported, not thrown', async tt => {
  const table = compileNat(
    cluster([
      svc('bad', { clusterIPs: ['10.96.0.300'], ports: [port('', 80, 80)] }),
      svc('bad-ep', { clusterIPs: ['10.96.6.6'], ports: [port('', 80, 80)], endpoints: [ep('fd00::1', 80), ep('10.100.9.9', 80)] }),
    ]),
    { ...CONFIG, clusterCIDRs: ['10.100.0.0/16', 'nonsense'] },
  )
  tt.ok(table.problems.some(p => p.object === 'Service default/bad'))
  tt.ok(table.problems.some(p => p.object === 'config' && p.field === 'clusterCIDRs'))
  const sp = table.svcPorts.find(s => s?.name === 'bad-ep')!
  tt.same(endpointNames(sp.cluster), ['10.100.9.9:80'], 'endpoints of the other family are ignored')
  tt.throws(() => compileNat(cluster([]), { ...CONFIG, lb: 'maglev', maglevTableSize: 1000 }), RangeError)
})

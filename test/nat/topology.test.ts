// Topology-aware routing: EndpointSlice hints (forZones / forNodes) narrowing kube-proxy's cluster-wide endpoint
// choice, as pkg/proxy/topology.go does (CategorizeEndpoints / topologyModeFromHints), in the NAT table and in the
// iptables rules tundra renders from the same function; the lab's EndpointSlice controller writing the hints for
// spec.trafficDistribution; the API's check of that field.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { tempDir } from '../helpers/tmp'
import { inspectHandlers } from '../../src/inspect/handlers'
import { offlineView } from '../../src/inspect/offline'
import { formatServices, type ServicesReport } from '../../src/inspect/services'
import type { Cluster, Endpoint, Node, Service } from '../../src/model/cluster'
import { compileNat } from '../../src/nat/compile'
import { updateNat } from '../../src/nat/update'
import { endpointNames } from '../../src/nat/endpoints'
import { formatNatTable } from '../../src/nat/format'
import { explain } from '../../src/inspect/explain'
import { tableJson } from '../../src/inspect/dump'
import { proxyServicePorts } from '../../src/kubeproxy/serviceports'
import { renderIptablesSave } from '../../src/kubeproxy/iptables'
import { parseManifests } from '../../src/k8s/load'
import { normalize } from '../../src/k8s/normalize'
import { validateAll } from '../../src/k8s/validate'
import { endpointSlicesForService } from '../../src/k8s/endpointslice-controller'
import type { Pod, Service as K8sService } from '../../src/k8s/types'
import { BASE_CONFIG, NODE, ep, port, svc } from './packets'

const ZONE = 'zone-a'
const nodeA: Node = { name: NODE, addresses: ['192.168.1.10'], podCIDRs: ['10.100.1.0/24'], zone: ZONE }

function hinted(ip: string, zones: string[] | undefined, nodes?: string[], o: Parameters<typeof ep>[2] = {}): Endpoint {
  return { ...ep(ip, 80, o), ...(zones ? { zoneHints: zones } : {}), ...(nodes ? { nodeHints: nodes } : {}) }
}

function web(endpoints: Endpoint[], o: Partial<Service> = {}): Service {
  return svc('web', { clusterIPs: ['10.96.0.20'], ports: [port('', 80, 80)], endpoints, ...o })
}

const cl = (services: Service[], nodes: Node[] = [nodeA]): Cluster => ({ services, nodes, pods: [] })

/** The cluster-wide endpoints of web's port in the NAT table and in the iptables renderer's choice. */
function chosen(c: Cluster): { nat: readonly string[]; rendered: string[] } {
  const sp = compileNat(c, BASE_CONFIG).svcPorts.find(s => s?.name === 'web')!
  const kp = proxyServicePorts(c, 4, { nodeName: NODE }).find(p => p.service.name === 'web')!
  return { nat: endpointNames(sp.cluster), rendered: kp.clusterEndpoints.map(e => e.str) }
}

function same(tt: Test, c: Cluster, want: string[], msg: string): void {
  const got = chosen(c)
  tt.same(got.nat, want, `${msg} (NAT table)`)
  tt.same(got.rendered, want, `${msg} (rendered rules)`)
}

t.test('zone hints: the cluster-wide choice keeps the endpoints hinted for this node zone', async tt => {
  const eps = [hinted('10.100.1.5', [ZONE]), hinted('10.100.2.5', ['zone-b']), hinted('10.100.3.5', [ZONE, 'zone-c'])]
  same(tt, cl([web(eps)]), ['10.100.1.5:80', '10.100.3.5:80'], 'only zone-a hinted endpoints')
  same(tt, cl([web(eps)], [{ ...nodeA, zone: 'zone-b' }]), ['10.100.2.5:80'], 'a node in zone-b')
  // what a user reading `tundra dump` sees: the mode, and the endpoints left out as serving but not used
  const table = compileNat(cl([web(eps)]), BASE_CONFIG)
  tt.equal(table.svcPorts.find(s => s?.name === 'web')!.topology, 'PreferSameZone')
  const text = formatNatTable(table)
  tt.match(text, 'cluster endpoints: 10.100.1.5:80, 10.100.3.5:80 (topology: zone zone-a)')
  tt.match(text, 'serving, not used for new connections: 10.100.2.5:80')
  tt.match(tableJson(table), { services: [{ ports: [{ endpoints: { topology: 'PreferSameZone', servingNotUsed: ['10.100.2.5:80'] } }] }] }, 'dump -o json')
  tt.equal(compileNat(cl([web([hinted('10.100.1.5', undefined)])]), BASE_CONFIG).svcPorts.find(s => s?.name === 'web')!.topology, '')
  // `tundra trace`: the policy line says the choice was narrowed, and the endpoints offered are the zone's
  const ex = explain(table, { src: '10.100.1.9', dst: '10.96.0.20', protocol: 'TCP', sport: 40000, dport: 80 })
  tt.equal(ex.trafficPolicy?.why, 'internalTrafficPolicy Cluster, narrowed by topology hints to zone zone-a')
  tt.same(
    ex.endpoints?.map(e => e.endpoint),
    ['10.100.1.5:80', '10.100.3.5:80'],
  )
})

t.test('zone hints are ignored unless every ready endpoint has one and one is for this zone', async tt => {
  const all = ['10.100.1.5:80', '10.100.2.5:80', '10.100.3.5:80']
  same(tt, cl([web([hinted('10.100.1.5', [ZONE]), hinted('10.100.2.5', ['zone-b']), hinted('10.100.3.5', undefined)])]), all, 'one endpoint without hints')
  same(tt, cl([web([hinted('10.100.1.5', ['zone-c']), hinted('10.100.2.5', ['zone-b']), hinted('10.100.3.5', ['zone-b'])])]), all, 'none for this zone')
  same(
    tt,
    cl(
      [web([hinted('10.100.1.5', [ZONE]), hinted('10.100.2.5', ['zone-b']), hinted('10.100.3.5', ['zone-b'])])],
      [{ name: NODE, addresses: nodeA.addresses, podCIDRs: nodeA.podCIDRs }],
    ),
    all,
    'the node has no zone label',
  )
  same(tt, cl([web([hinted('10.100.1.5', [ZONE]), hinted('10.100.2.5', ['zone-b']), hinted('10.100.3.5', ['zone-b'])])], []), all, 'this node is not known')
  // a not-ready endpoint without hints does not switch topology off (only ready ones are looked at)
  same(
    tt,
    cl([web([hinted('10.100.1.5', [ZONE]), hinted('10.100.2.5', ['zone-b']), hinted('10.100.3.5', undefined, undefined, { ready: false })])]),
    ['10.100.1.5:80'],
    'not-ready endpoints are not counted',
  )
})

t.test('node hints (PreferSameNode) win over zone hints when one is for this node', async tt => {
  const eps = [hinted('10.100.1.5', [ZONE], [NODE]), hinted('10.100.1.6', [ZONE], ['node-b']), hinted('10.100.2.5', ['zone-b'], ['node-c'])]
  same(tt, cl([web(eps)]), ['10.100.1.5:80'], 'the endpoint on this node only')
  const elsewhere = [hinted('10.100.1.6', [ZONE], ['node-b']), hinted('10.100.2.5', ['zone-b'], ['node-c'])]
  same(tt, cl([web(elsewhere)]), ['10.100.1.6:80'], 'no endpoint for this node: the zone hints decide')
  tt.match(formatNatTable(compileNat(cl([web(eps)]), BASE_CONFIG)), 'cluster endpoints: 10.100.1.5:80 (topology: this node)')
})

t.test('terminating fallback and Local policies ignore hints', async tt => {
  // no ready endpoint: serving+terminating ones anywhere, whatever their hints
  const draining = [
    hinted('10.100.1.5', [ZONE], undefined, { ready: false, serving: true, terminating: true }),
    hinted('10.100.2.5', ['zone-b'], undefined, { ready: false, serving: true, terminating: true }),
  ]
  same(tt, cl([web(draining)]), ['10.100.1.5:80', '10.100.2.5:80'], 'serving-terminating endpoints of every zone')
  // internalTrafficPolicy Local: the local endpoints, hints or not
  const local = web([hinted('10.100.1.5', ['zone-b'], undefined, { node: NODE }), hinted('10.100.2.5', [ZONE], undefined, { node: 'node-b' })], {
    internalTrafficPolicy: 'Local',
  })
  const sp = compileNat(cl([local]), BASE_CONFIG).svcPorts.find(s => s?.name === 'web')!
  tt.same(endpointNames(sp.internal), ['10.100.1.5:80'], 'Local policy: the endpoint on this node although hinted for zone-b')
})

t.test('the rendered rules hold exactly the chosen endpoints; serving ones outside the zone keep their flows', async tt => {
  const c = cl([web([hinted('10.100.1.5', [ZONE]), hinted('10.100.2.5', ['zone-b'])])])
  const rules = renderIptablesSave(c, { nodeName: NODE })
  tt.match(rules, /-j DNAT --to-destination 10\.100\.1\.5:80/, 'the zone-a endpoint has its KUBE-SEP chain')
  tt.notMatch(rules, /10\.100\.2\.5/, 'the zone-b endpoint is not programmed')
  const sp = compileNat(c, BASE_CONFIG).svcPorts.find(s => s?.name === 'web')!
  tt.same(endpointNames(sp.serving), ['10.100.1.5:80', '10.100.2.5:80'], 'both still serve (their conntrack entries are not flushed)')
})

t.test('updateNat keeps the node zone of the full compile', async tt => {
  const t1 = compileNat(cl([web([hinted('10.100.1.5', [ZONE]), hinted('10.100.2.5', ['zone-b'])])]), BASE_CONFIG)
  tt.equal(t1.nodeZone, ZONE)
  const t2 = updateNat(t1, [web([hinted('10.100.1.5', [ZONE]), hinted('10.100.1.9', [ZONE]), hinted('10.100.2.5', ['zone-b'])])])
  tt.equal(t2.nodeZone, ZONE)
  tt.same(endpointNames(t2.svcPorts.find(s => s?.name === 'web')!.cluster), ['10.100.1.5:80', '10.100.1.9:80'])
})

/** A Node in zone-a, Service web (10.96.0.20:80) and one EndpointSlice of it with `endpoints` (YAML list items). */
function zoneManifests(node: string, nodeIP: string, endpoints: string): string {
  return `apiVersion: v1
kind: Node
metadata: {name: ${node}, labels: {topology.kubernetes.io/zone: zone-a}}
status: {addresses: [{type: InternalIP, address: ${nodeIP}}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.20, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 80, protocol: TCP, name: ""}]
endpoints:
${endpoints}`
}

t.test('normalize reads hints from EndpointSlices and the zone from Node labels', async tt => {
  const yaml = zoneManifests(
    'node-a',
    '192.168.1.10',
    `- addresses: [10.100.1.5]
  hints: {forZones: [{name: zone-a}], forNodes: [{name: node-a}]}
- addresses: [10.100.2.5]
  hints: {forZones: [{name: zone-b}, {name: zone-c}]}
- addresses: [10.100.3.5]
`,
  )
  const r = normalize(parseManifests(yaml, 'topo.yaml').objects)
  tt.same(r.problems, [])
  tt.equal(r.cluster.nodes[0]!.zone, 'zone-a')
  const eps = r.cluster.services[0]!.endpoints
  tt.same(eps[0]!.zoneHints, ['zone-a'])
  tt.same(eps[0]!.nodeHints, ['node-a'])
  tt.same(eps[1]!.zoneHints, ['zone-b', 'zone-c'])
  tt.equal(eps[2]!.zoneHints, undefined)
})

function pod(name: string, ip: string, node: string, ready = true): Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default', labels: { app: 'web' } },
    spec: { nodeName: node, containers: [{ name: 'c', ports: [{ containerPort: 80 }] }] },
    status: { podIP: ip, podIPs: [{ ip }], phase: 'Running', conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  }
}

t.test('the EndpointSlice controller hints ready endpoints for spec.trafficDistribution', async tt => {
  const k8sSvc = (trafficDistribution?: string): K8sService => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'default' },
    spec: { selector: { app: 'web' }, ports: [{ port: 80 }], ...(trafficDistribution ? { trafficDistribution } : {}) },
  })
  const nodes = [
    { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-a', labels: { 'topology.kubernetes.io/zone': 'zone-a' } } },
    { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-b' } },
  ] as const
  const pods = [pod('a', '10.100.1.5', 'node-a'), pod('b', '10.100.2.5', 'node-b'), pod('c', '10.100.1.6', 'node-a', false)]
  const hints = (d?: string) =>
    endpointSlicesForService(k8sSvc(d), pods, { nodes: [...nodes] })
      .flatMap(s => s.endpoints ?? [])
      .map(e => [e.addresses?.[0], e.hints ?? null])
  tt.same(hints(), [
    ['10.100.1.5', null],
    ['10.100.1.6', null],
    ['10.100.2.5', null],
  ])
  for (const d of ['PreferClose', 'PreferSameZone']) {
    tt.same(
      hints(d),
      [
        ['10.100.1.5', { forZones: [{ name: 'zone-a' }] }],
        ['10.100.1.6', null],
        ['10.100.2.5', null],
      ],
      `${d}: the endpoint's zone, when its node has one; not-ready endpoints get none`,
    )
  }
  tt.same(hints('PreferSameNode'), [
    ['10.100.1.5', { forZones: [{ name: 'zone-a' }], forNodes: [{ name: 'node-a' }] }],
    ['10.100.1.6', null],
    ['10.100.2.5', { forNodes: [{ name: 'node-b' }] }],
  ])
})

t.test('spec.trafficDistribution outside the API values is refused', async tt => {
  const yaml = (v: string): string => `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.96.0.20, ports: [{port: 80}], trafficDistribution: ${v}}
`
  tt.same(validateAll(parseManifests(yaml('PreferSameNode'), 'ok.yaml').objects).problems, [])
  const bad = validateAll(parseManifests(yaml('Nearby'), 'bad.yaml').objects).problems
  tt.equal(bad.length, 1)
  tt.match(bad[0], { file: 'bad.yaml', field: 'spec.trafficDistribution', reason: /Unsupported value "Nearby"/ })
})

t.test('EndpointSlice hints are checked as the API server checks them; a bad slice is refused, not a crash', async tt => {
  const slice = (hints: string): string => `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [10.100.1.5], hints: ${hints}}]
`
  const problems = (hints: string): string[] => validateAll(parseManifests(slice(hints), 'es.yaml').objects).problems.map(p => `${p.field}: ${p.reason}`)
  tt.same(problems('{forZones: [{name: zone-a}], forNodes: [{name: node-a}]}'), [])
  tt.same(problems('{forZones: 5}'), ['endpoints[0].hints.forZones: must be a list'])
  tt.same(problems('{forZones: [{}]}'), ['endpoints[0].hints.forZones[0].name: Required value: a string'])
  tt.same(problems('{forZones: [{name: a}, {name: a}]}'), ['endpoints[0].hints.forZones[1].name: Duplicate value: "a"'])
  tt.same(problems('{forNodes: [{name: Node_A}]}').length, 1, 'a node name must be a DNS subdomain')
  tt.same(problems(`{forZones: [${[...Array(9).keys()].map(i => `{name: z${i}}`).join(', ')}]}`), ['endpoints[0].hints.forZones: must have at most 8 items'])
  const r = normalize(parseManifests(slice('{forZones: 5}'), 'es.yaml').objects)
  tt.same(
    r.problems.map(p => p.field),
    ['endpoints[0].hints.forZones'],
    'normalize drops the slice with its reason',
  )
})

t.test('tundra services names topology as the reason a serving backend is not used', async tt => {
  const file = join(
    tempDir(tt, {
      'm.yaml': zoneManifests(
        'node1',
        '172.18.0.11',
        `- {addresses: [10.100.1.5], hints: {forZones: [{name: zone-a}]}}
- {addresses: [10.100.2.5], hints: {forZones: [{name: zone-b}]}}
`,
      ),
    }),
    'm.yaml',
  )
  const r = (await inspectHandlers(offlineView([file], { report: () => {} })).services({})) as ServicesReport
  tt.equal(r.services[0]!.topology, 'PreferSameZone')
  const text = formatServices(r)
  tt.match(text, '10.100.1.5:80/TCP (ready, remote)')
  tt.match(text, '10.100.2.5:80/TCP (ready, remote, not used: topology PreferSameZone)')
})

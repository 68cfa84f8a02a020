// From manifests to a lab plan: placement, addresses, computed EndpointSlices, and errors that name file/object/field.
import t from 'tap'
import type {} from 'tap'
import { join } from 'node:path'
import { tempDir } from '../helpers/tmp'
import type { EndpointSlice, Node, Pod, Service } from '../../src/k8s/types'
import { compileLab, LabManifestError } from '../../src/lab/compile'
import { agentConfig } from '../../src/lab/up'
import { probesOf } from '../../src/lab/pods'

const root = join(__dirname, '..', '..')
const SEED = join(root, 'examples/seed/seed.yaml')
const PINNED = join(root, 'examples/seed-as-documented/seed.yaml')
const NETEXEC = join(root, 'test/fixtures/lab/netexec.yaml')

function scratch(t: tap.Test, text: string): string {
  return join(tempDir(t, { 'm.yaml': text }), 'm.yaml')
}

t.test('the seed: three pods on node 1, the Service at 10.96.125.237, a slice of the two nginx pods', async t => {
  const plan = compileLab({ name: 'seed', files: [SEED], nodes: 1, dataplane: 'none' })
  t.same(plan.warnings, [])
  t.equal(plan.pods.length, 3)
  const ips = plan.pods.map(p => p.ip)
  t.equal(new Set(ips).size, 3, 'distinct')
  for (const p of plan.pods) {
    t.match(p.ip, /^10\.100\.85\.\d+$/)
    t.equal(p.node, 'node1')
    t.equal(p.ns, `tundra-seed-default.${p.name}`)
  }
  const nginx = plan.pods.filter(p => p.name.startsWith('nginx-dep08-'))
  t.equal(nginx.length, 2)
  for (const p of nginx)
    t.same(
      p.containers.map(c => [c.runtime, c.tcpPorts]),
      [['nginx', [80]]],
    )
  t.same(
    plan.pods.find(p => p.name === 'pod-client')!.containers.map(c => c.runtime),
    ['none'],
  )
  t.same(
    plan.cluster.services.map(s => [s.name, s.clusterIPs]),
    [['nginx-pod08', ['10.96.125.237']]],
  )

  const slices = plan.manifests.filter((o): o is EndpointSlice => o.kind === 'EndpointSlice')
  t.equal(slices.length, 1)
  t.same(slices[0]!.endpoints!.map(e => e.addresses![0]).sort(), nginx.map(p => p.ip).sort())
  t.same(slices[0]!.ports, [{ name: '', protocol: 'TCP', port: 80 }])
  t.ok(slices[0]!.endpoints!.every(e => e.nodeName === 'node1' && e.conditions?.ready === true))

  const kinds = plan.manifests.map(o => o.kind)
  t.same([...new Set(kinds)], ['Namespace', 'Node', 'Pod', 'Service', 'EndpointSlice'], 'no Deployment: its pods are there')
  const node = plan.manifests.find((o): o is Node => o.kind === 'Node')!
  t.same([node.metadata?.name, node.spec?.podCIDR, node.status?.addresses?.[0]], ['node1', '10.100.85.0/24', { type: 'InternalIP', address: '172.18.0.11' }])
  for (const p of plan.manifests.filter((o): o is Pod => o.kind === 'Pod')) {
    t.equal(p.spec?.nodeName, 'node1')
    t.equal(p.status?.podIP, plan.pods.find(x => x.name === p.metadata?.name)!.ip)
    t.same(
      p.status?.conditions?.find(c => c.type === 'Ready'),
      { type: 'Ready', status: 'True' },
    )
  }
  t.same(compileLab({ name: 'seed', files: [SEED], nodes: 1, dataplane: 'none' }).manifests, plan.manifests, 'deterministic')
})

t.test('the pinned seed reproduces the document: .246 and .253 for nginx, .247 for pod-client', async t => {
  const plan = compileLab({ name: 'seed', files: [PINNED], nodes: 1, dataplane: 'none' })
  t.same(
    plan.pods.filter(p => p.name.startsWith('nginx-dep08-')).map(p => p.ip),
    ['10.100.85.246', '10.100.85.253'],
  )
  t.equal(plan.pods.find(p => p.name === 'pod-client')!.ip, '10.100.85.247')
  t.same(plan.cluster.services[0]!.clusterIPs, ['10.96.125.237'])
  t.same(
    plan.cluster.services[0]!.endpoints.map(e => e.ip),
    ['10.100.85.246', '10.100.85.253'],
  )
})

t.test('two nodes: round-robin, NodePorts and cluster IP made explicit, never inside a pod block', async t => {
  const plan = compileLab({ name: 'ne', files: [NETEXEC], nodes: 2, dataplane: 'iptables' })
  t.same(
    plan.pods.map(p => p.node),
    ['node1', 'node2', 'node1', 'node2'],
  )
  t.same(
    plan.pods.map(p => p.namespace),
    ['shop', 'shop', 'shop', 'shop'],
  )
  const backend = plan.pods.filter(p => p.name.startsWith('backend-'))
  for (const p of backend) {
    t.same(
      p.containers.map(c => [c.runtime, c.tcpPorts, c.udpPorts]),
      [['netexec', [8080], [8081]]],
    )
    t.same(probesOf(p), [
      { kind: 'tcp', ip: p.ip, port: 8080 },
      { kind: 'udp', ip: p.ip, port: 8081 },
    ])
  }
  const svc = plan.manifests.find((o): o is Service => o.kind === 'Service')!
  const n = plan.cluster.services[0]!
  t.equal(svc.spec?.clusterIP, n.clusterIPs[0])
  t.notMatch(n.clusterIPs[0], /^10\.100\.8[56]\./)
  t.same(
    svc.spec?.ports?.map(p => p.nodePort),
    n.ports.map(p => p.nodePort),
  )
  t.ok(n.ports.every(p => p.nodePort >= 30000 && p.nodePort <= 32767))
  t.same(n.endpoints.map(e => e.nodeName).sort(), ['node1', 'node1', 'node2'])
})

t.test('the agent config of a node lists every other node as a VXLAN peer', async t => {
  const plan = compileLab({ name: 'ne', files: [NETEXEC], nodes: 3, dataplane: 'tundra' })
  const cfg = agentConfig(plan, 'node2', '/run/tundra/labs/ne/cluster.yaml', '/run/tundra/labs/ne/node2.sock')
  t.same(cfg.node, { name: 'node2', ip: '172.18.0.12', podCIDR: '10.100.86.0/24', uplink: 'eth0' })
  t.same(cfg.vxlan.peers, [
    { node: 'node1', ip: '172.18.0.11', podCIDR: '10.100.85.0/24' },
    { node: 'node3', ip: '172.18.0.13', podCIDR: '10.100.87.0/24' },
  ])
  t.same(
    [cfg.clusterCIDR, cfg.serviceCIDR, cfg.dns],
    ['10.100.0.0/16', '10.96.0.0/12', { ip: '10.96.0.10', zone: 'cluster.local', upstreams: ['172.18.0.53'] }],
  )
  t.same(cfg.manifests, ['/run/tundra/labs/ne/cluster.yaml'])
  t.equal(cfg.control, '/run/tundra/labs/ne/node2.sock')
})

t.test('an invalid object stops the lab with file, object and field', async t => {
  const file = scratch(t, 'apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 99999}]\n')
  const err = (() => {
    try {
      compileLab({ name: 'x', files: [file], nodes: 1, dataplane: 'none' })
    } catch (e) {
      return e
    }
    return undefined
  })()
  t.type(err, LabManifestError)
  const e = err as LabManifestError
  t.match(e.problems, [{ file, object: 'Service default/web', field: 'spec.ports[0].port' }])
  t.match(e.message, `${file}: Service default/web: spec.ports[0].port: `)
})

t.test('unknown kinds are a warning; a Deployment lists more IPs than replicas is an error', async t => {
  const warned: string[] = []
  const ok = scratch(
    t,
    'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox}]}\n',
  )
  const plan = compileLab({ name: 'x', files: [ok], nodes: 1, dataplane: 'none', onWarning: w => warned.push(w) })
  t.equal(plan.pods.length, 1)
  t.match(warned, [/ConfigMap/])
  const bad = scratch(
    t,
    [
      'apiVersion: apps/v1',
      'kind: Deployment',
      'metadata: {name: d, annotations: {tundra.dev/pod-ips: "10.100.85.5,10.100.85.6"}}',
      'spec: {replicas: 1, selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: busybox}]}}}',
    ].join('\n') + '\n',
  )
  const err = (() => {
    try {
      compileLab({ name: 'x', files: [bad], nodes: 1, dataplane: 'none' })
    } catch (e) {
      return e
    }
    return undefined
  })()
  t.match((err as LabManifestError).problems, [
    { object: 'Deployment default/d', field: 'metadata.annotations[tundra.dev/pod-ips]', reason: 'lists 2 addresses for 1 replicas' },
  ])
})

t.test('--nodes is checked', async t => {
  t.throws(() => compileLab({ name: 'x', files: [SEED], nodes: 0, dataplane: 'none' }), /--nodes must be 1-40/)
  t.throws(() => compileLab({ name: 'x', files: [], nodes: 1, dataplane: 'none' }), /at least one manifest/)
})

t.test('dual-stack: a Service asking for IPv6 gives pods IPv6 addresses and Services IPv6 cluster IPs', async t => {
  const plan = compileLab({ name: 'v6', files: [join(root, 'test/fixtures/tundra/ipv6.yaml')], nodes: 1, dataplane: 'none' })
  t.equal(plan.dualStack, true)
  t.same(plan.warnings, [])
  t.same(
    plan.nodes.map(n => [n.podCIDR, n.podCIDR6]),
    [['10.100.85.0/24', 'fd00:10:100:1::/64']],
  )
  const client = plan.pods.find(p => p.name === 'client')!
  t.same([client.ip, client.ip6], ['10.100.85.50', 'fd00:10:100:1::50'], 'the IPv4 host number, as an IPv6 host part')
  const pod = plan.manifests.find((o): o is Pod => o.kind === 'Pod' && o.metadata?.name === 'client')!
  t.same(pod.status?.podIPs, [{ ip: '10.100.85.50' }, { ip: 'fd00:10:100:1::50' }])
  const node = plan.manifests.find((o): o is Node => o.kind === 'Node')!
  t.same(node.spec?.podCIDRs, ['10.100.85.0/24', 'fd00:10:100:1::/64'])
  const svc = (name: string): Service => plan.manifests.find((o): o is Service => o.kind === 'Service' && o.metadata?.name === name)!
  t.same([svc('web6').spec?.clusterIPs, svc('web6').spec?.ipFamilies], [['fd00:10:96::100'], ['IPv6']])
  const dual = svc('dual').spec!
  t.equal(dual.clusterIPs?.length, 2)
  t.equal(dual.clusterIPs?.[0], '10.96.3.10')
  t.match(dual.clusterIPs?.[1], /^fd00:10:96::[0-9a-f]+$/)
  t.same(dual.ipFamilies, ['IPv4', 'IPv6'])
  const slices = plan.manifests.filter((o): o is EndpointSlice => o.kind === 'EndpointSlice')
  t.same(slices.map(s => [s.metadata?.labels?.['kubernetes.io/service-name'], s.addressType]).sort(), [
    ['dual', 'IPv4'],
    ['dual', 'IPv6'],
    ['web6', 'IPv6'],
  ])
  const cfg = agentConfig(plan, 'node1', '/m', '/c')
  t.same([cfg.clusterCIDR6, cfg.serviceCIDR6], ['fd00:10:100::/56', 'fd00:10:96::/112'])
})

t.test('single-stack manifests stay single-stack', async t => {
  const plan = compileLab({ name: 'seed', files: [SEED], nodes: 1, dataplane: 'none' })
  t.equal(plan.dualStack, false)
  t.ok(plan.pods.every(p => p.ip6 === undefined))
  const cfg = agentConfig(plan, 'node1', '/m', '/c')
  t.equal(cfg.clusterCIDR6, undefined)
  t.equal(cfg.serviceCIDR6, undefined)
})

t.test("a Node object lends its labels to the lab node of its name: zones reach the slices and the agents' nodes", async t => {
  const file = scratch(
    t,
    `apiVersion: v1
kind: Node
metadata: {name: node2, labels: {topology.kubernetes.io/zone: zone-b}}
spec: {podCIDR: 10.9.0.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node7, labels: {topology.kubernetes.io/zone: zone-z}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: nginx, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, labels: {app: web}}
spec: {nodeName: node2, containers: [{name: c, image: nginx, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, trafficDistribution: PreferClose, ports: [{port: 80}]}
`,
  )
  const plan = compileLab({ name: 'zones', files: [file], nodes: 2, dataplane: 'none' })
  t.same(plan.nodes[1]!.labels, { 'topology.kubernetes.io/zone': 'zone-b' })
  t.equal(plan.nodes[0]!.labels, undefined)
  const node2 = plan.manifests.find((o): o is Node => o.kind === 'Node' && o.metadata?.name === 'node2')!
  t.same(node2.metadata?.labels, { 'topology.kubernetes.io/zone': 'zone-b', 'kubernetes.io/hostname': 'node2', 'kubernetes.io/os': 'linux' })
  t.equal(node2.spec?.podCIDR, plan.nodes[1]!.podCIDR, 'the lab keeps its own pod block')
  t.same(
    plan.cluster.nodes.map(n => [n.name, n.zone ?? null]),
    [
      ['node1', null],
      ['node2', 'zone-b'],
    ],
  )
  const slice = plan.manifests.find((o): o is EndpointSlice => o.kind === 'EndpointSlice')!
  t.same(
    (slice.endpoints ?? []).map(e => [e.nodeName, e.zone ?? null, e.hints ?? null]),
    [
      ['node1', null, null],
      ['node2', 'zone-b', { forZones: [{ name: 'zone-b' }] }],
    ],
    'the pod on node2 gets its zone and, for PreferClose, a hint for it',
  )
  t.match(plan.warnings, [
    /Node node2: spec ignored, the lab makes its own nodes \(only metadata.labels are taken\)/,
    /Node node7: ignored, the lab makes its own nodes \(--nodes: node1, node2\)/,
  ])
})

t.test('topology-aware-hints auto on a Service: a warning at lab up, the Service kept', async t => {
  const file = scratch(
    t,
    `apiVersion: v1
kind: Service
metadata: {name: web, annotations: {service.kubernetes.io/topology-aware-hints: auto}}
spec: {selector: {app: web}, ports: [{port: 80}]}
`,
  )
  const plan = compileLab({ name: 'auto', files: [file], nodes: 1, dataplane: 'none' })
  t.equal(plan.cluster.services.filter(s => s.name === 'web').length, 1)
  t.match(plan.warnings, [
    /Service default\/web: metadata\.annotations\[service\.kubernetes\.io\/topology-aware-hints\]: the lab's EndpointSlice controller writes no zone hints/,
  ])
})

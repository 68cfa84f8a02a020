// The lab's address plan, naming and pod placement (pure: no namespaces needed).
import t from 'tap'
import type { Pod } from '../../src/k8s/types'
import {
  caliName,
  labNameError,
  LAB,
  placePods,
  planContainer,
  planNodes,
  podHostsFile,
  podNsName,
  podResolvConf,
  preferredHost,
  type PodInput,
} from '../../src/lab/plan'
import { isNginxImage } from '../../src/lab/nginx'

const pod = (name: string, extra: { namespace?: string; nodeName?: string } = {}): Pod => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, ...(extra.namespace ? { namespace: extra.namespace } : {}) },
  spec: { containers: [{ name: 'c', image: 'busybox' }], ...(extra.nodeName ? { nodeName: extra.nodeName } : {}) },
})
const input = (p: Pod, ip?: string): PodInput =>
  ip === undefined
    ? { pod: p }
    : { pod: p, wantIP: { ip, field: 'metadata.annotations[tundra.dev/pod-ip]', object: `Pod default/${p.metadata?.name}`, file: 'x.yaml' } }

t.test('lab names: short, lowercase, no dash, leading letter', async t => {
  for (const ok of ['lab', 'seed', 'a', 'lt123abc', 'abcdefghijklmnop']) t.equal(labNameError(ok), undefined, ok)
  for (const bad of ['', '1lab', 'my-lab', 'Lab', 'abcdefghijklmnopq', 'a.b', 'a_b']) t.match(labNameError(bad), /lowercase letters and digits/, bad)
})

t.test('names fit the kernel and do not collide', async t => {
  const a = caliName('default', 'pod-client')
  t.match(a, /^cali[0-9a-f]{11}$/)
  t.ok(a.length <= 15, 'IFNAMSIZ')
  t.equal(caliName('default', 'pod-client'), a, 'deterministic')
  t.not(caliName('default', 'pod-clienT'), a)
  t.not(caliName('a-b', 'c'), caliName('a', 'b-c'), 'namespace and name are kept apart')
  t.equal(podNsName('seed', 'default', 'pod-client'), 'tundra-seed-default.pod-client')
  const long = podNsName('seed', 'default', 'a'.repeat(253))
  t.equal(long.length, 128)
  t.not(podNsName('seed', 'default', `${'a'.repeat(252)}b`), long, 'cut names stay unique')
})

t.test('node k: 172.18.0.(10+k), pod block 10.100.(84+k).0/24', async t => {
  t.same(
    planNodes('seed', 3).map(n => [n.name, n.ns, n.ip, n.podCIDR]),
    [
      ['node1', 'tundra-seed-node1', '172.18.0.11', '10.100.85.0/24'],
      ['node2', 'tundra-seed-node2', '172.18.0.12', '10.100.86.0/24'],
      ['node3', 'tundra-seed-node3', '172.18.0.13', '10.100.87.0/24'],
    ],
  )
})

t.test('round-robin in creation order; spec.nodeName is honoured and not counted', async t => {
  const nodes = planNodes('x', 2)
  const r = placePods('x', nodes, [input(pod('a')), input(pod('b', { nodeName: 'node1' })), input(pod('c')), input(pod('d'))])
  t.same(r.problems, [])
  t.same(
    r.pods.map(p => [p.name, p.node]),
    [
      ['a', 'node1'],
      ['b', 'node1'],
      ['c', 'node2'],
      ['d', 'node1'],
    ],
  )
  for (const p of r.pods) {
    const n = nodes.find(x => x.name === p.node)!
    t.ok(p.ip.startsWith(n.podCIDR.replace('0/24', '')), `${p.name} ${p.ip} is in ${n.podCIDR}`)
  }
})

t.test('pod IPs come from a hash of namespace/name: other pods do not move them', async t => {
  const nodes = planNodes('x', 1)
  const alone = placePods('x', nodes, [input(pod('web'))]).pods[0]!
  t.equal(alone.ip, `10.100.85.${preferredHost('default', 'web')}`)
  const crowd = placePods('x', nodes, [input(pod('zz')), input(pod('aa')), input(pod('web'))]).pods
  t.equal(crowd.find(p => p.name === 'web')!.ip, alone.ip)
  t.not(placePods('x', nodes, [input(pod('web', { namespace: 'other' }))]).pods[0]!.ip, alone.ip, 'the namespace is part of the key')
})

t.test('collisions probe upward; every address .2-.254 is used once; the 254th pod is refused', async t => {
  const nodes = planNodes('x', 1)
  const many = Array.from({ length: 253 }, (_, i) => input(pod(`p${i}`)))
  const r = placePods('x', nodes, many)
  t.same(r.problems, [])
  const hosts = r.pods.map(p => Number(p.ip.split('.')[3])).sort((a, b) => a - b)
  t.same(
    hosts,
    Array.from({ length: 253 }, (_, i) => i + 2),
  )
  const over = placePods('x', nodes, [...many, input(pod('one-too-many'))])
  t.equal(over.problems.length, 1)
  t.match(over.problems[0], { object: 'Pod default/one-too-many', field: 'spec.nodeName', reason: /no free pod address/ })
})

t.test('a requested IP is reserved first and picks the node that owns it', async t => {
  const nodes = planNodes('x', 2)
  const r = placePods('x', nodes, [input(pod('a')), input(pod('b'), '10.100.86.9')])
  t.same(r.problems, [])
  t.same(
    r.pods.map(p => [p.name, p.node, p.ip]).find(x => x[0] === 'b'),
    ['b', 'node2', '10.100.86.9'],
  )
  t.equal(r.pods.find(p => p.name === 'a')!.node, 'node1', 'round-robin is not advanced by a pinned pod')
})

t.test('bad requests name the file, object and field', async t => {
  const nodes = planNodes('x', 1)
  const cases: [PodInput[], RegExp][] = [
    [[input(pod('a'), '10.100.99.3')], /in no node's pod CIDR/],
    [[input(pod('a'), 'nope')], /not an IPv4 address/],
    [[input(pod('a'), '10.100.85.1')], /pods get \.2-\.254/],
    [[input(pod('a'), '10.100.85.7'), input(pod('b'), '10.100.85.7')], /already requested by Pod default\/a/],
    [[input(pod('a', { nodeName: 'node9' }))], /no node "node9"/],
  ]
  for (const [inputs, reason] of cases) {
    const r = placePods('x', nodes, inputs)
    t.equal(r.problems.length, 1, String(reason))
    t.match(r.problems[0]!.reason, reason)
    t.match(r.problems[0]!.field, /^(metadata\.annotations\[tundra\.dev\/pod-ip\]|spec\.nodeName)$/)
  }
  const two = planNodes('x', 2)
  const r = placePods('x', two, [input(pod('a', { nodeName: 'node1' }), '10.100.86.4')])
  t.match(r.problems[0], { file: 'x.yaml', reason: /belongs to node2 .* spec.nodeName is node1/ })
})

t.test('what a container runs', async t => {
  for (const img of ['nginx', 'nginx:1.8', 'docker.io/library/nginx:1.25', 'nginx@sha256:abcd', 'bitnami/nginx:latest', 'registry:5000/nginx-unprivileged:1']) {
    t.ok(isNginxImage(img), img)
  }
  for (const img of ['busybox', 'registry.k8s.io/e2e-test-images/agnhost:2.47', 'my-nginx', 'nginx/agnhost']) t.notOk(isNginxImage(img), img)
  const w: string[] = []
  t.same(planContainer({ name: 'n', image: 'nginx:1.8' }, w, 'x'), { name: 'n', image: 'nginx:1.8', runtime: 'nginx', tcpPorts: [80], udpPorts: [] })
  t.same(planContainer({ name: 'n', image: 'nginx', ports: [{ containerPort: 8080 }] }, w, 'x').tcpPorts, [8080])
  t.same(
    planContainer(
      { name: 'a', image: 'agnhost', ports: [{ containerPort: 8080 }, { containerPort: 8081, protocol: 'UDP' }, { containerPort: 9, protocol: 'SCTP' }] },
      w,
      'x',
    ),
    { name: 'a', image: 'agnhost', runtime: 'netexec', tcpPorts: [8080], udpPorts: [8081] },
  )
  t.equal(planContainer({ name: 'c', image: 'busybox', ports: null }, w, 'x').runtime, 'none')
  t.same(w, ['x: container a: SCTP port 9 is not served in the lab'])
})

t.test("a pod's resolv.conf and hosts file, as kubelet writes them", async t => {
  t.equal(podResolvConf('default'), 'search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n')
  const hosts = podHostsFile({ ip: '10.100.85.247', hostname: 'pod-client', namespace: 'default' })
  t.match(hosts, /^# Kubernetes-managed hosts file\.\n127\.0\.0\.1\tlocalhost\n/)
  t.ok(hosts.endsWith('\n10.100.85.247\tpod-client\n'))
  t.ok(
    podHostsFile({ ip: '10.100.85.9', hostname: 'web-0', namespace: 'shop', subdomain: 'web' }).endsWith(
      '\n10.100.85.9\tweb-0.web.shop.svc.cluster.local\tweb-0\n',
    ),
  )
  t.equal(LAB.dnsIP, '10.96.0.10')
})

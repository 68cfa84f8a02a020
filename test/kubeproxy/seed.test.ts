// The seed document's iptables-save lines (node k8s-node01), reproduced from examples/seed + its EndpointSlice.
import t from 'tap'
import { join } from 'node:path'
import { loadCluster } from '../../src/k8s/index'
import { renderIptablesSave } from '../../src/kubeproxy/iptables'

const root = join(__dirname, '..', '..')

// Copied from the seed document (grep output on the node); the KUBE-SEP-ATSP76LQOJHSORE7 DNAT line is not in the
// document (its grep shows the KUBE-SVC line twice), so it is built the same way as its twin's.
const SEED_LINES = [
  '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
  '-A KUBE-SERVICES -d 10.96.125.237/32 -p tcp -m comment --comment "default/nginx-pod08 cluster IP" -m tcp --dport 8080 -j KUBE-SVC-DDZHMK5AO3JF6KIZ',
  '-A KUBE-SVC-DDZHMK5AO3JF6KIZ -m comment --comment "default/nginx-pod08" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-ATSP76LQOJHSORE7',
  '-A KUBE-SVC-DDZHMK5AO3JF6KIZ -m comment --comment "default/nginx-pod08" -j KUBE-SEP-FXZXKRS4RXLGILD5',
  '-A KUBE-SEP-FXZXKRS4RXLGILD5 -s 10.100.85.253/32 -m comment --comment "default/nginx-pod08" -j KUBE-MARK-MASQ',
  '-A KUBE-SEP-FXZXKRS4RXLGILD5 -p tcp -m comment --comment "default/nginx-pod08" -m tcp -j DNAT --to-destination 10.100.85.253:80',
  '-A KUBE-SEP-ATSP76LQOJHSORE7 -s 10.100.85.246/32 -m comment --comment "default/nginx-pod08" -j KUBE-MARK-MASQ',
  '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
]

t.test("seed manifests + their EndpointSlice give the seed node's rules", async t => {
  const r = loadCluster([join(root, 'examples/seed/seed.yaml'), join(root, 'test/fixtures/k8s/seed-endpointslice.yaml')])
  t.same(r.problems, [])
  t.same(r.warnings, [])
  const dump = renderIptablesSave(r.cluster)
  const lines = dump.split('\n')
  for (const want of SEED_LINES) t.ok(lines.includes(want), `has: ${want}`)
  t.ok(lines.includes('-A KUBE-SEP-ATSP76LQOJHSORE7 -p tcp -m comment --comment "default/nginx-pod08" -m tcp -j DNAT --to-destination 10.100.85.246:80'))
  // exactly the two endpoint chains and one service chain, and the grep the document did finds one line
  t.same(lines.filter(l => l.startsWith(':KUBE-SEP-') || l.startsWith(':KUBE-SVC-')).sort(), [
    ':KUBE-SEP-ATSP76LQOJHSORE7 - [0:0]',
    ':KUBE-SEP-FXZXKRS4RXLGILD5 - [0:0]',
    ':KUBE-SVC-DDZHMK5AO3JF6KIZ - [0:0]',
  ])
  t.equal(lines.filter(l => l.includes('10.96.125.237')).length, 1, 'grep 10.96.125.237 finds one rule, as on the node')
  t.equal(lines.filter(l => l.startsWith('-A KUBE-SVC-DDZHMK5AO3JF6KIZ')).length, 2, 'no masquerade rule without --cluster-cidr')
})

t.test('the seed Service gets its clusterIP; the Deployment and client Pod are accepted', async t => {
  const r = loadCluster([join(root, 'examples/seed/seed.yaml')], { expandDeployments: true })
  t.same(r.problems, [])
  const svc = r.cluster.services.find(s => s.name === 'nginx-pod08')
  t.same(svc?.clusterIPs, ['10.96.125.237'])
  t.same(svc?.ports, [{ name: '', protocol: 'TCP', port: 8080, targetPort: 80, nodePort: 0 }])
  const pods = r.cluster.pods.map(p => p.name)
  t.equal(pods.length, 3)
  t.ok(pods.includes('pod-client'))
  t.equal(pods.filter(n => /^nginx-dep08-[4-9bcdf]{1,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$/.test(n)).length, 2)
})

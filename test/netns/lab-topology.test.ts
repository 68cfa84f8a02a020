// Topology-aware routing on a running two-node tundra lab whose nodes are in two zones (Node objects in the
// manifests lend their labels): Services with `trafficDistribution: PreferSameNode` or `PreferClose` get node or zone
// hints from the lab's EndpointSlice controller, and each node's agent then sends its clients' new connections to
// the endpoint on its node / in its zone only; the same pods behind a Service without it are reached from either node.
// The same lab on kube-proxy's rules as tundra renders them (--dataplane iptables, each node its own rules) must
// behave the same: the kernel check of the rendered topology.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { labDown, labExec, labUp } from '../../src/lab/index'

const skip = netnsSkip('curl', 'dnsmasq', 'unshare', 'iptables-restore')
let seq = 0
const dir = mkdtempSync(join(tmpdir(), 'tundra-lab-topology-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

const pod = (podName: string, node: string, labels: string, image: string, port = ''): string => `apiVersion: v1
kind: Pod
metadata: {name: ${podName}, labels: {${labels}}}
spec:
  nodeName: ${node}
  containers: [{name: c, image: ${image}${port}}]
`
const AGNHOST = 'registry.k8s.io/e2e-test-images/agnhost:2.47'
const node = (nodeName: string, zone: string): string => `apiVersion: v1
kind: Node
metadata: {name: ${nodeName}, labels: {topology.kubernetes.io/zone: ${zone}}}
`
const MANIFESTS = [
  node('node1', 'zone-a'),
  node('node2', 'zone-b'),
  pod('web-1', 'node1', 'app: web', AGNHOST, ', ports: [{containerPort: 8080}]'),
  pod('web-2', 'node2', 'app: web', AGNHOST, ', ports: [{containerPort: 8080}]'),
  pod('client-1', 'node1', 'role: client', 'curlimages/curl'),
  pod('client-2', 'node2', 'role: client', 'curlimages/curl'),
  `apiVersion: v1
kind: Service
metadata: {name: near}
spec:
  selector: {app: web}
  trafficDistribution: PreferSameNode
  ports: [{port: 80, targetPort: 8080}]
`,
  `apiVersion: v1
kind: Service
metadata: {name: close}
spec:
  selector: {app: web}
  trafficDistribution: PreferClose
  ports: [{port: 80, targetPort: 8080}]
`,
  `apiVersion: v1
kind: Service
metadata: {name: any}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`,
].join('---\n')

/** The pod names `n` new connections from `client` to the ClusterIP `vip` reach (one curl each). */
async function reachedIn(name: string, client: string, vip: string, n: number): Promise<string[]> {
  const r = await labExec({
    name,
    target: { pod: client },
    cmd: ['sh', '-c', `for i in $(seq ${n}); do curl -sS -m 2 http://${vip}/hostname; echo; done`],
    timeoutMs: 60_000,
  })
  return r.stdout.split('\n').filter(Boolean)
}

for (const dataplane of ['tundra', 'iptables'] as const) {
  t.test(`${dataplane}: PreferSameNode and PreferClose keep each node's clients on its endpoint / zone`, { ...skip, timeout: 300_000 }, async t => {
    const name = `tp${process.pid.toString(36)}${seq++}`
    t.teardown(() => labDown(name, { log: () => {} }))
    const file = join(dir, 'topology.yaml')
    writeFileSync(file, MANIFESTS)
    const status = await labUp({ files: [file], name, nodes: 2, dataplane, log: () => {}, readyTimeoutMs: 90_000 })
    // by ClusterIP: an iptables lab has no cluster DNS unless its manifests bring one
    const vip = (service: string): string => status.services.find(s => s.name === service)!.clusterIP
    const reached = (client: string, service: string, n: number): Promise<string[]> => reachedIn(name, client, vip(service), n)

    const fromNode1 = await reached('client-1', 'near', 16)
    t.equal(fromNode1.length, 16, 'every connection answered')
    t.same([...new Set(fromNode1)], ['web-1'], 'node1: only the endpoint on node1')
    const fromNode2 = await reached('client-2', 'near', 16)
    t.same([...new Set(fromNode2)], ['web-2'], 'node2: only the endpoint on node2')
    t.same([...new Set(await reached('client-1', 'close', 16))], ['web-1'], 'PreferClose, zone-a: only the endpoint in zone-a')
    t.same([...new Set(await reached('client-2', 'close', 16))], ['web-2'], 'PreferClose, zone-b: only the endpoint in zone-b')

    // the same endpoints without hints: kube-proxy picks among all of them (24 connections; both answer)
    const spread = await reached('client-1', 'any', 24)
    t.same([...new Set(spread)].sort(), ['web-1', 'web-2'], 'no trafficDistribution: both endpoints')
  })
}

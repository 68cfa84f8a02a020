// `tundra run` with detectLocalMode (issue 15: it was tested at config level only). Which sources count as local
// decides whether traffic to a ClusterIP is masqueraded (kube-proxy's KUBE-SERVICES "! -s <local> -j KUBE-MARK-MASQ");
// the endpoint's netexec /clientip shows the source it saw. node1's pod CIDR is 10.100.85.0/24 (spec.podCIDRs of its
// Node object), the cluster CIDR 10.100.0.0/16. A pod of another node (OTHER, in the cluster CIDR, outside node1's
// block) is played by the lab's outside host as node2: a kernel vxlan device and a Node object, so its packets come
// in over VXLAN from a peer, as a real remote pod's do.
//   ClusterCIDR  a local pod keeps its address; OTHER keeps its address too (in the cluster CIDR)
//   NodeCIDR     a local pod keeps its address; OTHER is masqueraded to the node IP
//   both         the outside host's own address (outside both) to a NodePort is masqueraded to the node IP
import t from 'tap'
import type { ChildProcess } from 'node:child_process'
import { netnsSkip } from '../helpers/netns'
import { labExec } from '../../src/lab/index'
import { restartRun, runLab, until } from './fixtures/run-lab'
import { writeObject } from '../../src/lab/objects'
import type { KubeObject } from '../../src/k8s/types'
import { vxlanMac } from '../../src/dataplane/vxlan'
import { parseIpv4 } from '../../src/wire/ipv4'

const mac = (ip: string): string => [...vxlanMac(parseIpv4(ip)!)].map(b => b.toString(16).padStart(2, '0')).join(':')

const skip = netnsSkip('curl', 'unshare')

/** In the cluster CIDR 10.100.0.0/16, outside node1's pod CIDR 10.100.85.0/24: a pod of node2 (below). */
const OTHER = '10.100.200.5'
const OTHER_BLOCK = '10.100.200.0/24'
const CLUSTER_IP = '10.96.0.50'

t.test('tundra run: detectLocalMode ClusterCIDR and NodeCIDR decide what is masqueraded', { ...skip, timeout: 240_000 }, async t => {
  let log = ''
  const lab = await runLab(t, 'tl', () => log.slice(-4000))
  const { state, pod } = lab
  const external = (cmd: string[]) => labExec({ name: lab.name, target: { external: true }, cmd, timeoutMs: 20_000 })
  const nodeIP = state.nodes[0]!.ip
  const cli = state.pods.find(p => p.name === 'cli')!
  t.match(cli.ip, /^10\.100\.85\./, 'the client pod is in node1 pod CIDR')

  // node2: the outside host as a node of the cluster, its pod block reached over a kernel vxlan device (as in
  // tundra-routing.test.ts), so OTHER's packets come in as another node's pod's do: from a VXLAN peer.
  const extIP = state.external.ip
  writeObject(state.manifests!, {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: 'node2', labels: { 'kubernetes.io/hostname': 'node2' } },
    spec: { podCIDR: OTHER_BLOCK, podCIDRs: [OTHER_BLOCK] },
    status: { addresses: [{ type: 'InternalIP', address: extIP }] },
  } as KubeObject)
  const dev = /^\d+:\s+(\S+)\s+inet /m.exec(
    (await external(['ip', '-o', '-4', 'addr', 'show'])).stdout.split('\n').find(l => l.includes(` ${extIP}/`)) ?? '',
  )?.[1]
  t.ok(dev, `the outside host's uplink (${dev})`)
  const gw = '10.100.85.0' // node1's block, flannel-style: a next hop whose neighbour entry is node1's VXLAN MAC
  for (const cmd of [
    ['ip', 'link', 'add', 'vxlan0', 'type', 'vxlan', 'id', '4096', 'dstport', '4789', 'local', extIP, 'dev', dev!, 'nolearning'],
    ['ip', 'link', 'set', 'vxlan0', 'address', mac(extIP), 'mtu', '1450', 'up'],
    ['ip', 'addr', 'add', `${OTHER}/32`, 'dev', 'vxlan0'],
    ['ip', 'route', 'add', `${CLUSTER_IP}/32`, 'via', gw, 'dev', 'vxlan0', 'onlink', 'src', OTHER],
    ['ip', 'neigh', 'add', gw, 'lladdr', mac(nodeIP), 'dev', 'vxlan0', 'nud', 'permanent'],
    ['bridge', 'fdb', 'add', mac(nodeIP), 'dev', 'vxlan0', 'dst', nodeIP],
  ]) {
    const r = await external(cmd)
    t.equal(r.code, 0, `${cmd.join(' ')} (${r.stderr.trim()})`)
  }

  let run: ChildProcess | undefined
  const start = async (extra: string[]): Promise<void> => {
    log = ''
    run = await restartRun(lab, run, extra, d => {
      log += d
    })
    await until(
      'tundra run to answer on the ClusterIP',
      async () => (await pod('cli', ['curl', '-sS', '-m', '3', `http://${CLUSTER_IP}:5003/hostname`])).stdout === 'srv',
      60_000,
    )
  }
  const host = (ip: string): string => ip.split(':')[0]!
  /** the source the endpoint saw for a connection from the local pod to the ClusterIP */
  const fromPod = async (): Promise<string> => host((await pod('cli', ['curl', '-sS', '-m', '5', `http://${CLUSTER_IP}:5003/clientip`])).stdout)
  /** the same from the outside host to addr:port: to the ClusterIP from OTHER over VXLAN, to the node IP from its own */
  const fromOutside = async (addr: string, port: number): Promise<string> => {
    const r = await external(['curl', '-sS', '-m', '5', `http://${addr}:${port}/clientip`])
    return r.code === 0 ? host(r.stdout) : `curl exit ${r.code}: ${r.stderr.trim()}`
  }

  await t.test('ClusterCIDR (the default): sources in the cluster CIDR are local', async t => {
    await start([])
    t.equal(await fromPod(), cli.ip, 'local pod -> ClusterIP: not masqueraded')
    t.equal(await fromOutside(CLUSTER_IP, 5003), OTHER, 'a node2 pod (in the cluster CIDR) -> ClusterIP: not masqueraded')
    t.equal(await fromOutside(nodeIP, 30050), nodeIP, 'outside the cluster CIDR -> NodePort: masqueraded to the node IP')
  })

  await t.test('NodeCIDR: only the node pod CIDR is local', async t => {
    await start(['--detect-local-mode', 'NodeCIDR'])
    t.equal(await fromPod(), cli.ip, 'local pod -> ClusterIP: not masqueraded')
    t.equal(await fromOutside(CLUSTER_IP, 5003), nodeIP, 'a node2 pod (outside the node pod CIDR) -> ClusterIP: masqueraded to the node IP')
    t.equal(await fromOutside(nodeIP, 30050), nodeIP, 'outside the cluster CIDR -> NodePort: masqueraded to the node IP')
  })
  if (run !== undefined) run.kill('SIGTERM')
})

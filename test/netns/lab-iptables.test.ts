// `tundra lab up --dataplane iptables`: the kernel baseline on the same topology — kube-proxy's rules restored into each
// node, kernel routes between nodes' pod CIDRs, Calico-style NAT for traffic leaving the pod network.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { haveCommand, netnsSkip, type RunResult } from '../helpers/netns'
import { labDown, labExec, labUp, loadLabState, type LabStatus } from '../../src/lab/index'

const root = join(__dirname, '..', '..')
// the seed with the document's addresses pinned (pods .246/.253, pod-client .247, service 10.96.125.237)
const PINNED = join(root, 'examples/seed-as-documented/seed.yaml')
const NETEXEC = join(root, 'test/fixtures/lab/netexec.yaml')
const skip = netnsSkip('nginx', 'curl', 'dnsmasq', 'unshare', 'iptables-restore', 'bash')

let seq = 0
const uniqueName = (): string => `li${process.pid.toString(36)}${(seq++).toString(36)}`

async function up(
  tt: tap.Test,
  files: string[],
  opts: { nodes?: number; iptablesBackend?: 'nft' | 'legacy' } = {},
): Promise<{ name: string; status: LabStatus }> {
  const name = uniqueName()
  tt.teardown(() => labDown(name, { log: () => {} }))
  const status = await labUp({
    files,
    name,
    nodes: opts.nodes ?? 1,
    dataplane: 'iptables',
    iptablesBackend: opts.iptablesBackend ?? 'nft',
    log: () => {},
    readyTimeoutMs: 30_000,
  })
  return { name, status }
}

const accessLog = (lab: string, pod: string): string[] =>
  readFileSync(join(loadLabState(lab).dir, 'pods', `default.${pod}`, 'nginx', 'access.log'), 'utf8')
    .split('\n')
    .filter(Boolean)

for (const backend of ['nft', 'legacy'] as const) {
  const noLegacy = backend === 'legacy' && skip.skip === false && !haveCommand('iptables-legacy-restore')
  t.test(
    `seed: pod-client reaches 10.96.125.237:8080 through kernel DNAT (iptables ${backend})`,
    { ...(noLegacy ? { skip: 'needs iptables-legacy-restore' } : skip), timeout: 120_000 },
    async t => {
      const { name, status } = await up(t, [PINNED], { iptablesBackend: backend })
      const nginx = status.pods.filter(p => p.name.startsWith('nginx-dep08-'))
      t.same(
        nginx.map(p => p.ip),
        ['10.100.85.246', '10.100.85.253'],
      )
      const before = nginx.map(p => accessLog(name, p.name).length)
      const r = await labExec({
        name,
        target: { pod: 'pod-client' },
        cmd: ['sh', '-c', 'for i in $(seq 20); do curl -sS -m 5 http://10.96.125.237:8080/ || exit 1; done'],
      })
      t.equal(r.code, 0, r.stderr)
      t.equal(r.stdout.split('<h1>Welcome to nginx!</h1>').length - 1, 20, 'twenty welcome pages')
      const logs = nginx.map(p => accessLog(name, p.name).slice(before[nginx.indexOf(p)]))
      t.equal(logs[0]!.length + logs[1]!.length, 20, 'every request reached an nginx pod')
      t.ok(
        logs.every(l => l.length > 0),
        'both backends served (random DNAT; 2 in a million to fail by chance)',
      )
      t.ok(
        logs.flat().every(l => l.startsWith('10.100.85.247 ')),
        "nginx sees pod-client's own address: DNAT only, no SNAT",
      )
      const rules = await labExec({ name, target: { node: 'node1' }, cmd: [backend === 'legacy' ? 'iptables-legacy-save' : 'iptables-save', '-t', 'nat'] })
      t.match(
        rules.stdout,
        '-A KUBE-SERVICES -d 10.96.125.237/32 -p tcp -m comment --comment "default/nginx-pod08 cluster IP" -m tcp --dport 8080 -j KUBE-SVC-',
      )
      // ClusterIPs are only rules: a ping to one gets no answer (the seed document's point)
      const ping = await labExec({ name, target: { pod: 'pod-client' }, cmd: ['ping', '-c', '1', '-W', '1', '10.96.125.237'] })
      t.not(ping.code, 0)
    },
  )
}

t.test('two nodes: cross-node pod traffic, NodePorts from outside, NAT for traffic leaving the pod network', { ...skip, timeout: 120_000 }, async t => {
  const { name, status } = await up(t, [NETEXEC], { nodes: 2 })
  const exec = (cmd: string[]): Promise<RunResult> => labExec({ name, target: { pod: 'client', namespace: 'shop' }, cmd })
  const client = status.pods.find(p => p.name === 'client')!
  const remote = status.pods.find(p => p.name.startsWith('backend-') && p.node !== client.node)!
  const direct = await exec(['curl', '-sS', '-m', '5', `http://${remote.ip}:8080/clientip`])
  t.match(direct.stdout, new RegExp(`^${client.ip.replace(/\./g, '\\.')}:\\d+$`), 'pod to pod across nodes, source kept')

  const svc = status.services.find(s => s.name === 'backend')!
  const names = new Set<string>()
  for (let i = 0; i < 12; i++) names.add((await exec(['curl', '-sS', '-m', '5', `http://${svc.clusterIP}/hostname`])).stdout)
  const backends = status.pods.filter(p => p.name.startsWith('backend-')).map(p => p.name)
  t.ok(
    [...names].every(n => backends.includes(n)),
    `only backends answered: ${[...names].join(', ')}`,
  )
  t.ok(names.size >= 2, `several backends answered: ${[...names].join(', ')}`)
  const udpPort = svc.ports.find(p => p.protocol === 'UDP')!
  const udp = await exec([
    'bash',
    '-c',
    `exec 3<>/dev/udp/${svc.clusterIP}/${udpPort.port}; printf 'echo via-dnat' >&3; timeout 5 dd bs=512 count=1 status=none <&3`,
  ])
  t.equal(udp.stdout, 'via-dnat', 'UDP through the service')

  const http = svc.ports.find(p => p.protocol === 'TCP')!
  for (const node of status.nodes) {
    const r = await labExec({ name, target: { external: true }, cmd: ['curl', '-sS', '-m', '5', `http://${node.ip}:${http.nodePort}/clientip`] })
    t.match(r.stdout, /^172\.18\.0\.1[12]:\d+$/, `NodePort on ${node.name} answers the outside host (masqueraded to a node address)`)
  }
  const out = await exec(['curl', '-sS', '-m', '5', 'http://172.18.0.100/clientip'])
  t.match(out.stdout, new RegExp(`^172\\.18\\.0\\.${10 + Number(client.node.slice(4))}:\\d+$`), "pod to outside leaves with its node's address")
})

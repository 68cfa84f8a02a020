// `tundra lab` end to end with kernel routing only (--dataplane none): the seed comes up, pods are wired like Calico's,
// exec lands in the pod (network, resolv.conf, hosts, hostname), netexec answers, and `lab down` leaves nothing.
import t from 'tap'
import { existsSync, readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { netnsSkip, listNamespaces, run, type RunResult } from '../helpers/netns'
import { compileLab } from '../../src/lab/compile'
import { labDown, labExec, labUp, loadLabState, type LabStatus } from '../../src/lab/index'
import { isOurs, procStartTime } from '../../src/lab/proc'

const root = join(__dirname, '..', '..')
const SEED = join(root, 'examples/seed/seed.yaml')
const NETEXEC = join(root, 'test/fixtures/lab/netexec.yaml')
const CLI = join(root, 'dist/src/cli/main.js')
const skip = netnsSkip('nginx', 'curl', 'dnsmasq', 'unshare', 'dig', 'bash')

let seq = 0
/** A lab name of our own: `lt<pid><n>` (letters and digits only, at most 16). */
const uniqueName = (): string => `lt${process.pid.toString(36)}${(seq++).toString(36)}`

const cli = (args: readonly string[]): Promise<RunResult> => run([process.execPath, CLI, ...args], { timeoutMs: 120_000 })

/** Brings a lab up for one test and always takes it down again. */
async function up(
  tt: tap.Test,
  files: string[],
  opts: { nodes?: number; dataplane?: 'none' | 'iptables' } = {},
): Promise<{ name: string; status: LabStatus; log: string[] }> {
  const name = uniqueName()
  const log: string[] = []
  tt.teardown(() => labDown(name, { log: () => {} }))
  const status = await labUp({ files, name, nodes: opts.nodes ?? 1, dataplane: opts.dataplane ?? 'none', log: l => log.push(l), readyTimeoutMs: 30_000 })
  return { name, status, log }
}

/** What a finished `lab down` must leave: no namespace, no /etc/netns dir, no state, none of the recorded processes. */
function assertGone(tt: tap.Test, name: string, pids: readonly { pid: number; startTime: number }[]): void {
  tt.same(
    listNamespaces().filter(ns => ns.startsWith(`tundra-${name}-`)),
    [],
    'no namespaces left',
  )
  tt.same(existsSync('/etc/netns') ? readdirSync('/etc/netns').filter(d => d.startsWith(`tundra-${name}-`)) : [], [], 'no /etc/netns dirs left')
  tt.notOk(existsSync(`/run/tundra/labs/${name}`), 'state dir removed')
  tt.same(
    pids.filter(isOurs).map(p => p.pid),
    [],
    'no recorded process alive',
  )
}

t.test('the seed lab, built and used through the CLI', { ...skip, timeout: 120_000 }, async t => {
  t.ok(existsSync(CLI), `${CLI} exists (run npx tsc -p tsconfig.json)`)
  const name = uniqueName()
  t.teardown(() => labDown(name, { log: () => {} }))
  const upRun = await cli(['lab', 'up', '-f', SEED, '--name', name, '--dataplane', 'none'])
  t.equal(upRun.code, 0, upRun.stderr)
  t.match(upRun.stderr, /\[lab\] creating namespaces… 7\/7/)
  t.match(upRun.stderr, /\[lab\] waiting for pods… 3\/3 ready/)
  t.match(upRun.stdout, /service\/nginx-pod08\s+ClusterIP\s+10\.96\.125\.237/)

  // status -o json: the contract's shape, and the addresses the (deterministic) plan gives
  const st = await cli(['lab', 'status', '--name', name, '-o', 'json'])
  t.equal(st.code, 0, st.stderr)
  const status = JSON.parse(st.stdout) as LabStatus
  const plan = compileLab({ name, files: [SEED], nodes: 1, dataplane: 'none' })
  t.match(status, {
    name,
    nodes: [{ name: 'node1', ip: '172.18.0.11', podCIDR: '10.100.85.0/24' }],
    external: { ip: '172.18.0.100' },
    services: [
      {
        namespace: 'default',
        name: 'nginx-pod08',
        type: 'ClusterIP',
        clusterIP: '10.96.125.237',
        ports: [{ name: '', port: 8080, targetPort: 80, nodePort: 0, protocol: 'TCP' }],
      },
    ],
  })
  t.same(
    status.pods.map(p => ({ ...p })),
    plan.pods.map(p => ({ namespace: 'default', name: p.name, ip: p.ip, node: 'node1', ready: true })),
  )
  const nginx = status.pods.filter(p => p.name.startsWith('nginx-dep08-'))
  const client = status.pods.find(p => p.name === 'pod-client')!
  t.equal(nginx.length, 2)

  // exec: stdout/stderr and the exit code pass through
  for (const n of nginx) {
    const r = await cli(['lab', 'exec', '--name', name, 'pod-client', '--', 'curl', '-sS', '-m', '5', `http://${n.ip}:80/`])
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /<h1>Welcome to nginx!<\/h1>/, `nginx at ${n.ip} answers pod-client`)
  }
  const codes = await cli(['lab', 'exec', '--name', name, 'pod-client', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3'])
  t.same([codes.code, codes.stdout, codes.stderr.trim()], [3, 'out\n', 'err'])
  const noDash = await cli(['lab', 'exec', '--name', name, 'pod-client', 'true'])
  t.equal(noDash.code, 1)
  t.match(noDash.stderr, /put the command after --/)
  const noPod = await cli(['lab', 'exec', '--name', name, 'pod-nope', '--', 'true'])
  t.match([noPod.code, noPod.stderr], [1, /no pod default\/pod-nope .*pods: default\/nginx-dep08-/])

  // inside the pod: its hostname, resolv.conf, hosts file, /32 address and Calico's gateway
  const inside = await labExec({
    name,
    target: { pod: 'pod-client' },
    cmd: ['sh', '-c', 'hostname; echo ---; cat /etc/resolv.conf; echo ---; tail -n1 /etc/hosts; echo ---; ip -o -4 addr show dev eth0; ip route'],
  })
  t.equal(inside.code, 0, inside.stderr)
  const [host, resolv, hosts, net] = inside.stdout.split('---\n')
  t.equal(host, 'pod-client\n')
  t.equal(resolv, 'search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n')
  t.equal(hosts, `${client.ip}\tpod-client\n`)
  t.match(net, new RegExp(`inet ${client.ip.replace(/\./g, '\\.')}/32 `))
  t.match(net, /^default via 169\.254\.1\.1 dev eth0/m)
  t.match(net, /^169\.254\.1\.1 dev eth0 scope link/m)

  // the node: a /32 route per pod over its cali interface, proxy ARP on it, forwarding on
  const state = loadLabState(name)
  const nodeRoutes = await labExec({ name, target: { node: 'node1' }, cmd: ['ip', 'route'] })
  for (const p of state.pods) t.match(nodeRoutes.stdout, `${p.ip} dev ${p.hostVeth} scope link`)
  t.notMatch(nodeRoutes.stdout, /^10\.100\.\d+\.0\/24/m, 'no pod-CIDR routes of other nodes')
  const veth = state.pods[0]!.hostVeth
  const sys = await labExec({
    name,
    target: { node: 'node1' },
    cmd: ['sysctl', '-n', `net.ipv4.conf.${veth}.proxy_arp`, 'net.ipv4.ip_forward', 'net.ipv4.conf.all.rp_filter'],
  })
  t.equal(sys.stdout, '1\n1\n0\n')
  t.equal((await labExec({ name, target: { node: 'node1' }, cmd: ['hostname'] })).stdout, 'node1\n')

  // outside the cluster: netexec on :80 and the upstream resolver
  const ext = await cli(['lab', 'exec', '--name', name, '--external', '--', 'curl', '-sS', '-m', '5', 'http://172.18.0.100/hostname'])
  t.equal(ext.stdout, 'external')
  const dig = await labExec({ name, target: { external: true }, cmd: ['dig', '+short', '+time=2', '@172.18.0.53', 'www.example.test'] })
  t.equal(dig.stdout, '172.18.0.100\n')
  const nx = await labExec({ name, target: { external: true }, cmd: ['dig', '+time=2', '@172.18.0.53', 'nowhere.invalid'] })
  t.match(nx.stdout, /status: NXDOMAIN/)

  // the root namespace got nothing
  const rootRoutes = await run(['ip', 'route'])
  t.notMatch(rootRoutes.stdout, /10\.100\.|10\.96\.|172\.18\.0\./)

  const pids = state.processes
  t.equal(pids.filter(isOurs).length, 4, 'dnsmasq, outside netexec, two nginx masters')
  const down = await cli(['lab', 'down', '--name', name])
  t.equal(down.code, 0, down.stderr)
  t.match(down.stderr, /\[lab\] lab .* is down/)
  assertGone(t, name, pids)
  const again = await cli(['lab', 'down', '--name', name])
  t.match([again.code, again.stderr], [1, /no lab named/])
})

t.test('netexec backends in another namespace on two nodes', { ...skip, timeout: 120_000 }, async t => {
  const { name, status } = await up(t, [NETEXEC], { nodes: 2 })
  t.same(
    status.nodes.map(n => [n.name, n.ip, n.podCIDR]),
    [
      ['node1', '172.18.0.11', '10.100.85.0/24'],
      ['node2', '172.18.0.12', '10.100.86.0/24'],
    ],
  )
  t.ok(
    status.pods.every(p => p.ready),
    'all ready',
  )
  const client = status.pods.find(p => p.name === 'client')!
  t.equal(client.node, 'node2')
  const local = status.pods.find(p => p.name.startsWith('backend-') && p.node === 'node2')!
  const exec = (cmd: string[]): Promise<RunResult> => labExec({ name, target: { pod: 'client', namespace: 'shop' }, cmd })

  const hn = await exec(['curl', '-sS', '-m', '5', `http://${local.ip}:8080/hostname`])
  t.equal(hn.stdout, local.name, '/hostname is the pod name')
  const ip = await exec(['curl', '-sS', '-m', '5', `http://${local.ip}:8080/clientip`])
  t.match(ip.stdout, new RegExp(`^${client.ip.replace(/\./g, '\\.')}:\\d+$`), '/clientip is the caller')
  const echo = await exec(['curl', '-sS', '-m', '5', `http://${local.ip}:8080/echo?msg=tundra`])
  t.equal(echo.stdout, 'tundra')
  const udp = await exec(['bash', '-c', `exec 3<>/dev/udp/${local.ip}/8081; printf 'echo over-udp' >&3; timeout 5 dd bs=512 count=1 status=none <&3`])
  t.equal(udp.stdout, 'over-udp', 'UDP echo')
  const udpName = await exec(['bash', '-c', `exec 3<>/dev/udp/${local.ip}/8081; printf hostname >&3; timeout 5 dd bs=512 count=1 status=none <&3`])
  t.equal(udpName.stdout, local.name, 'UDP hostname')
  t.equal((await exec(['cat', '/etc/resolv.conf'])).stdout.split('\n')[0], 'search shop.svc.cluster.local svc.cluster.local cluster.local')

  // without a dataplane there is no route between nodes' pod CIDRs (that is the agent's job, or iptables mode's)
  const routes = await labExec({ name, target: { node: 'node2' }, cmd: ['ip', 'route', 'show', '10.100.85.0/24'] })
  t.equal(routes.stdout, '')
})

t.test('lab up with a name in use fails clearly and leaves the first lab alone', { ...skip, timeout: 120_000 }, async t => {
  const { name, status } = await up(t, [SEED])
  const second = await cli(['lab', 'up', '-f', SEED, '--name', name, '--dataplane', 'none'])
  t.equal(second.code, 1)
  t.match(second.stderr, new RegExp(`lab "${name}" is already up .*tundra lab down --name ${name}`))
  const st = loadLabState(name)
  t.equal(st.phase, 'up')
  t.ok(st.processes.every(isOurs), 'its processes still run')
  const nginx = status.pods.find(p => p.name.startsWith('nginx-'))!
  const r = await labExec({ name, target: { pod: 'pod-client' }, cmd: ['curl', '-sS', '-m', '5', `http://${nginx.ip}/`] })
  t.match(r.stdout, /Welcome to nginx!/)
})

t.test('killed processes, strays and a lost state file do not stop lab down', { ...skip, timeout: 120_000 }, async t => {
  const { name } = await up(t, [SEED])
  const state = loadLabState(name)
  const nginx = state.processes.find(p => p.role === 'nginx')!
  process.kill(nginx.pid, 'SIGKILL')
  // a process lab up did not start, inside a pod's namespace
  const podNs = state.pods[0]!.ns
  const stray = await run(['sh', '-c', `setsid ip netns exec ${podNs} sleep 300 >/dev/null 2>&1 & echo $!`])
  const strayPid = Number(stray.stdout.trim())
  t.not(procStartTime(strayPid), undefined, 'the stray runs')
  const deadline = Date.now() + 5000
  while (isOurs(nginx) && Date.now() < deadline) await new Promise(r => setTimeout(r, 20))
  const st = await cli(['lab', 'status', '--name', name, '-o', 'json'])
  const owner = nginx.owner.split('/')[1]
  t.equal((JSON.parse(st.stdout) as LabStatus).pods.find(p => p.name === owner)!.ready, false, 'the pod whose nginx died is not ready')

  const r = await labDown(name, { log: () => {} })
  t.equal(r.found, true)
  assertGone(t, name, state.processes)
  t.equal(procStartTime(strayPid), undefined, 'the stray process in the pod namespace is gone too (dead or a zombie)')

  // state lost (as after a crash mid-`lab up`): the namespaces are still found by name
  const second = await up(t, [SEED])
  const st2 = loadLabState(second.name)
  rmSync(`/run/tundra/labs/${second.name}`, { recursive: true })
  const r2 = await labDown(second.name, { log: () => {} })
  t.equal(r2.found, true)
  t.equal(r2.namespaces.length, st2.namespaces.length)
  assertGone(t, second.name, st2.processes)
})

t.test('an invalid manifest fails before anything is built, naming file, object and field', { ...skip, timeout: 60_000 }, async t => {
  const name = uniqueName()
  const dir = join(root, 'test/fixtures/lab/invalid')
  const r = await cli(['lab', 'up', '-f', dir, '--name', name, '--dataplane', 'none'])
  t.equal(r.code, 1)
  t.match(r.stderr, `${join(dir, 'service.yaml')}: Service default/web: spec.ports[0].targetPort: `)
  t.match(r.stderr, /warning: .*kind ConfigMap is not used/)
  assertGone(t, name, [])
})

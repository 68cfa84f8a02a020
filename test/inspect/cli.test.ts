// `tundra dump|trace|services|conntrack` as commands: offline with -f, online through --socket or a lab's state,
// and the errors (a clear message, exit 1, no stack trace).
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { serveControl } from '../../src/agent/control'
import { inspectHandlers } from '../../src/inspect/handlers'
import { resolveSocket, NO_AGENT } from '../../src/inspect/socket'
import { saveState, type LabState } from '../../src/lab/state'
import { dumpRules } from '../../src/kubeproxy/dump'
import { dumpOptions } from '../../src/inspect/model'
import type { Trace } from '../../src/inspect/trace'
import { CLIENT, PINNED, SVC_CHAIN, VIP, cliChild, cliInProcess, handshake, liveView, quietView } from './helpers/inspect'

const scratch = mkdtempSync(join(tmpdir(), 'tundra-inspect-cli-'))
const labs = join(scratch, 'labs')
mkdirSync(labs)
process.env['TUNDRA_LAB_ROOT'] = labs
t.teardown(() => rmSync(scratch, { recursive: true, force: true }))

function fakeLab(name: string, nodes: { name: string; control?: string }[]): void {
  const dir = join(labs, name)
  mkdirSync(dir, { recursive: true })
  const s: LabState = {
    version: 1,
    name,
    phase: 'up',
    createdAt: '2024-01-01T00:00:00.000Z',
    dataplane: 'tundra',
    dir,
    repo: '/repo',
    namespaces: [],
    files: [],
    processes: [],
    net: { ns: `tundra-${name}-net`, bridge: 'br0' },
    nodes: nodes.map((n, i) => ({
      name: n.name,
      ns: `tundra-${name}-${n.name}`,
      ip: `172.18.0.${11 + i}`,
      podCIDR: `10.100.${85 + i}.0/24`,
      ...(n.control !== undefined ? { control: n.control } : {}),
    })),
    external: { ns: `tundra-${name}-ext`, ip: '172.18.0.100' },
    upstreamDns: { ns: `tundra-${name}-dns`, ip: '172.18.0.53' },
    pods: [],
    services: [],
    endpointSlices: [],
    warnings: [],
  }
  saveState(s)
}

t.test("dump --detect-local-mode NodeCIDR: local traffic is what comes from the node's podCIDRs", async t => {
  const { view } = quietView([PINNED])
  const node = view.cluster().nodes.find(n => n.name === view.natConfig().nodeName)!
  const dump = await cliInProcess(['dump', '-f', PINNED, '--detect-local-mode', 'NodeCIDR'])
  t.equal(dump.code, 0, dump.error ?? '')
  const masq = dump.stdout.split('\n').find(l => l.startsWith(`-A ${SVC_CHAIN} !`))
  t.match(masq, `! -s ${node.podCIDRs[0]} `, "the service chain masquerades what does not come from this node's pods")
  const cluster = await cliInProcess(['dump', '-f', PINNED])
  t.not(
    cluster.stdout.split('\n').find(l => l.startsWith(`-A ${SVC_CHAIN} !`)),
    masq,
    'unlike ClusterCIDR (the default)',
  )
})

t.test('offline: dump, trace and services print what the handlers return', async t => {
  const { view } = quietView([PINNED])
  const dump = await cliInProcess(['dump', '-f', PINNED])
  t.equal(dump.code, 0, dump.error ?? '')
  t.equal(dump.stdout, dumpRules(view.cluster(), dumpOptions(view.natConfig())).iptables)
  t.ok(dump.stdout.includes(SVC_CHAIN))

  const json = await cliInProcess(['dump', '-f', PINNED, '--format', 'json'])
  t.equal((JSON.parse(json.stdout) as { services: unknown[] }).services.length, 1)

  const tr = await cliInProcess(['trace', '-f', PINNED, '--src', `${CLIENT}:40000`, '--dst', `${VIP}:8080`])
  t.equal(tr.code, 0, tr.error ?? '')
  t.match(tr.stdout, new RegExp(`^path: PREROUTING → KUBE-SERVICES → ${SVC_CHAIN} → KUBE-SEP-`, 'm'))
  const trj = await cliInProcess([
    'trace',
    '-f',
    PINNED,
    '--src',
    CLIENT,
    '--sport',
    '40000',
    '--dst',
    'nginx-pod08.default.svc.cluster.local',
    '--dport',
    '8080',
    '-o',
    'json',
  ])
  const parsed = JSON.parse(trj.stdout) as Trace
  t.equal(parsed.dns!.address, VIP)
  t.equal(parsed.rewritten!.dport, 80)
  t.equal(parsed.query.sport, 40000)

  const svc = await cliInProcess(['services', '-f', PINNED])
  t.match(svc.stdout, /default\/nginx-pod08 +1 => 10\.100\.85\.246:80\/TCP/)
  const svcj = await cliInProcess(['services', '-f', PINNED, '-o', 'json'])
  t.equal((JSON.parse(svcj.stdout) as { services: unknown[] }).services.length, 1)
})

t.test('errors name the problem', async t => {
  const cases: [string[], RegExp][] = [
    [['dump', '-f', join(scratch, 'missing.yaml')], /missing\.yaml: no such file or directory/],
    [['trace', '-f', PINNED, '--src', CLIENT, '--dst', 'a b'], /--dst: "a b" is not an address, address:port or DNS name/],
    [['trace', '-f', PINNED, '--src', CLIENT, '--dst', VIP], /give the destination port for tcp/],
    [['trace', '-f', PINNED, '--src', CLIENT], /give the destination/],
    [['trace', '-f', PINNED, '--src', CLIENT, '--dst', `${VIP}:8080`, '--socket', '/x'], /not both/],
    [['conntrack', 'list', '-f', PINNED], /conntrack needs a running agent/],
    [['conntrack', 'drop', '--socket', '/x'], /unknown operation "drop"/],
    [['services'], /no running tundra found: use -f manifests or --socket/],
    [['services', '--node-ip', '1.2.3.4', '--socket', '/x'], /--node-ip only applies with -f/],
    [['services', '--socket', join(scratch, 'nobody.sock')], /cannot reach the agent at .*nobody\.sock/],
  ]
  for (const [args, re] of cases) {
    const r = await cliInProcess(args)
    t.equal(r.code, 1, args.join(' '))
    t.match(r.error, re, args.join(' '))
  }
})

t.test("which agent: --socket, or a lab node's control socket", async t => {
  t.throws(() => resolveSocket({}), { message: NO_AGENT })
  t.equal(resolveSocket({ socket: '/run/x.sock' }), '/run/x.sock')
  fakeLab('one', [
    { name: 'node1', control: '/run/one-1.sock' },
    { name: 'node2', control: '/run/one-2.sock' },
  ])
  t.equal(resolveSocket({}), '/run/one-1.sock', 'the only lab, its first node')
  t.equal(resolveSocket({ node: 'node2' }), '/run/one-2.sock')
  t.throws(() => resolveSocket({ node: 'node9' }), /lab one has no node "node9" \(nodes: node1, node2\)/)
  fakeLab('two', [{ name: 'node1' }])
  t.throws(() => resolveSocket({}), /several labs are up \(one, two\): say which with --lab/)
  t.throws(() => resolveSocket({ lab: 'two' }), /runs no tundra agent on node1/)
  t.throws(() => resolveSocket({ lab: 'nope' }), /no lab named "nope" is up/)
  t.equal(resolveSocket({ lab: 'one' }), '/run/one-1.sock')
  rmSync(join(labs, 'one'), { recursive: true })
  rmSync(join(labs, 'two'), { recursive: true })
})

t.test('online: the CLI asks a running agent (via --socket and via --lab)', async t => {
  const sock = join(scratch, 'agent.sock')
  const { view, engine } = liveView()
  const server = await serveControl(sock, inspectHandlers(view))
  t.teardown(() => server.close())
  const ep = handshake(engine, 45000)

  const list = await cliInProcess(['conntrack', 'list', '--socket', sock, '--src', CLIENT])
  t.equal(list.code, 0, list.error ?? '')
  t.match(
    list.stdout,
    new RegExp(`^tcp {6}6 86400 ESTABLISHED src=${CLIENT} dst=${VIP} sport=45000 dport=8080 .* \\[ASSURED\\] service=default/nginx-pod08 endpoint=${ep}$`, 'm'),
  )
  t.equal(list.stderr, 'tundra conntrack: 1 flow entries have been shown.\n')
  const count = await cliInProcess(['conntrack', 'count', '--socket', sock, '--service', 'default/nginx-pod08', '--port', '8080'])
  t.equal(count.stdout, '1\n')

  fakeLab('live', [{ name: 'node1', control: sock }])
  t.teardown(() => rmSync(join(labs, 'live'), { recursive: true, force: true }))
  const tr = await cliInProcess(['trace', '--src', `${CLIENT}:45000`, '--dst', `${VIP}:8080`])
  t.equal(tr.code, 0, tr.error ?? '')
  t.match(tr.stdout, /\(live agent\)/)
  t.match(tr.stdout, new RegExp(`endpoint: +${ep.replace(/\./g, '\\.')} .*conntrack sends it`))
  const svc = await cliInProcess(['services', '--lab', 'live', '--node', 'node1'])
  t.match(svc.stdout, /PACKETS +NEW/)
  const flush = await cliInProcess(['conntrack', 'flush'])
  t.equal(flush.stderr, 'tundra conntrack: 1 flow entries have been deleted.\n')
  t.equal(engine.conntrackEntries(0).length, 0)
})

t.test('the real command: exit 1 with one line on stderr, no stack trace', async t => {
  // (each child loads the TypeScript sources afresh: a few seconds apiece, so only two)
  const [badDst, ok] = await Promise.all([
    cliChild(['trace', '-f', join(scratch, 'missing.yaml'), '--src', CLIENT, '--dst', '10.96.125:8080']),
    cliChild(['trace', '-f', PINNED, '--src', `${CLIENT}:40000`, '--dst', `${VIP}:8080`]),
  ])
  t.equal(badDst.code, 1)
  t.equal(badDst.stdout, '')
  t.equal(badDst.stderr, `tundra: ${join(scratch, 'missing.yaml')}: no such file or directory\n`)
  t.notMatch(badDst.stderr, /\n\s+at /)
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stdout, new RegExp(`path: PREROUTING → KUBE-SERVICES → ${SVC_CHAIN} → KUBE-SEP-`))
})

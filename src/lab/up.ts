// `tundra lab up`: builds a cluster of network namespaces from manifests and starts its servers and dataplane.
//
//   tundra-<lab>-net           bridge br0: the node network 172.18.0.0/24
//   tundra-<lab>-node<k>       eth0 172.18.0.(10+k); a cali<hash> veth and a /32 route per pod (Calico's wiring)
//   tundra-<lab>-<ns>.<pod>    eth0 <pod ip>/32, default via 169.254.1.1 (proxy-ARPed by the node)
//                              dual-stack: also <pod ip6>/128, default via fe80::1 (set on the node's cali interface)
//   tundra-<lab>-ext           a host outside the cluster, 172.18.0.100, netexec on :80
//   tundra-<lab>-dns           upstream DNS (dnsmasq), 172.18.0.53
// Nothing goes into the root namespace. Everything is recorded in state.json before it is made.
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs'
import { connect } from 'node:net'
import { dirname, join } from 'node:path'
import { stringify } from 'yaml'
import type { AgentConfig } from '../agent/config'
import { haveCommand, isRoot, listNamespaces, must, waitFor } from '../netns/netns'
import { compileLab, type LabPlan } from './compile'
import { labDown } from './down'
import { renderNginxConf, WELCOME_HTML } from './nginx'
import { LAB, labNameError, labPrefix, podHostsFile, podResolvConf, roleNsName, type Dataplane, type PlannedPod } from './plan'
import { formatTarget, type ProbeTarget } from './probe'
import { inNamespace, isOurs, logTail, startDetached } from './proc'
import { ensureLabsRoot, LabError, labDir, readState, saveState, type LabProcess, type LabState, type ProcessRole } from './state'
import { labStatus, type LabStatus } from './status'
import { loadIptables } from './iptables'

export interface LabUpOptions {
  /** manifest files or directories */
  readonly files: readonly string[]
  /** default `lab` */
  readonly name?: string
  /** default 1 */
  readonly nodes?: number
  /** default `tundra` */
  readonly dataplane?: Dataplane
  /** for `--dataplane iptables`: the nf_tables backend (Debian's default) or iptables-legacy */
  readonly iptablesBackend?: 'nft' | 'legacy'
  /**
   * How to start a node's agent; the lab appends `agent --config <file>`. Default: this node binary and
   * dist/src/cli/main.js. Lets benchmarks pin it (`taskset -c 0 node …`) and tests stand in a fake.
   */
  readonly agentCommand?: readonly string[]
  /** MTU of pod interfaces (default 1450: room for VXLAN between nodes, as Calico configures) */
  readonly podMTU?: number
  /** how long pods, agents and helpers may take to answer (default 60 s) */
  readonly readyTimeoutMs?: number
  /** progress lines (default: stderr) */
  readonly log?: (line: string) => void
  /** leave a failed lab in place for a look (state phase `failed`; `lab down` removes it) */
  readonly keepOnFailure?: boolean
  /** abort (e.g. on SIGINT): `lab up` stops at the next step and removes what it made */
  readonly signal?: AbortSignal
}

export const DEFAULT_LAB_NAME = 'lab'

/** The repository whose compiled JS the lab runs (netexec, probes, the agent). */
export function repoRoot(): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json')
    if (existsSync(pkg)) {
      try { if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'tundra') return dir } catch { /* keep looking */ }
    }
    if (dirname(dir) === dir) throw new LabError(`cannot find tundra's package.json above ${__dirname}`)
  }
}

export function distScript(rel: string): string {
  const p = join(repoRoot(), 'dist', rel)
  if (!existsSync(p)) throw new LabError(`${p} is missing: build first (npx tsc -p tsconfig.json, or npm run build)`)
  return p
}

const DNS_NAMES: readonly (readonly [string, string])[] = [
  ['example.test', LAB.externalIP],
  ['external.test', LAB.externalIP],
  ['upstream.test', LAB.upstreamDnsIP],
]

export async function labUp(opts: LabUpOptions): Promise<LabStatus> {
  const name = opts.name ?? DEFAULT_LAB_NAME
  const bad = labNameError(name)
  if (bad) throw new LabError(bad)
  const dataplane = opts.dataplane ?? 'tundra'
  const say = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`))
  const timeoutMs = opts.readyTimeoutMs ?? 60_000

  // Everything that can be checked without touching the system, first.
  say(`[lab] reading ${opts.files.join(', ')}`)
  const plan = compileLab({ name, files: opts.files, nodes: opts.nodes ?? 1, dataplane, onWarning: w => say(`[lab] warning: ${w}`) })
  if (!isRoot()) throw new LabError('lab up needs root: it creates network namespaces')
  const node = process.execPath
  const scripts = { netexec: distScript('src/lab/netexec-main.js'), probe: distScript('src/lab/probe-main.js') }
  const agentCommand = dataplane !== 'tundra' ? [] : opts.agentCommand ?? [node, distScript('src/cli/main.js')]
  const needs = ['ip', 'unshare', 'hostname', 'dnsmasq']
  if (plan.pods.some(p => p.containers.some(c => c.runtime === 'nginx'))) needs.push('nginx')
  if (dataplane === 'iptables') needs.push(opts.iptablesBackend === 'legacy' ? 'iptables-legacy-restore' : 'iptables-restore')
  const missing = needs.filter(c => !haveCommand(c))
  if (missing.length > 0) throw new LabError(`the lab needs ${missing.join(', ')} (scripts/bootstrap installs them)`)

  const state = claim(name, dataplane, plan)
  try {
    await build(state, plan, { ...opts, say, timeoutMs, node, scripts, agentCommand })
    state.phase = 'up'
    saveState(state)
  } catch (err) {
    state.phase = 'failed'
    saveState(state)
    if (opts.keepOnFailure === true && !opts.signal?.aborted) {
      say(`[lab] failed; kept for a look (state ${state.dir}); remove it with \`tundra lab down --name ${name}\``)
    } else {
      say(`[lab] failed: ${(err as Error).message.split('\n')[0]}; removing what was made`)
      try { await labDown(name, { log: say }) } catch (downErr) { say(`[lab] warning: cleanup incomplete: ${(downErr as Error).message}`) }
    }
    throw err
  }
  const n = plan.nodes.length
  const count = (k: number, what: string): string => `${k} ${what}${k === 1 ? '' : 's'}`
  say(`[lab] lab ${name} is up: ${count(n, 'node')}, ${count(plan.pods.length, 'pod')}, ${count(plan.cluster.services.length, 'service')}, dataplane ${dataplane}`)
  return labStatus(name)
}

/** Takes the name: the state dir is made with a plain mkdir, so two `lab up` with one name cannot both succeed. */
function claim(name: string, dataplane: Dataplane, plan: LabPlan): LabState {
  ensureLabsRoot()
  const dir = labDir(name)
  const leftovers = listNamespaces().filter(ns => ns.startsWith(labPrefix(name)))
  if (existsSync(dir) || leftovers.length > 0) {
    const phase = readState(name)?.phase
    throw new LabError(`lab ${JSON.stringify(name)} is already ${phase === 'up' ? 'up' : 'in use'} ` +
      `(${existsSync(dir) ? dir : `namespaces ${leftovers.slice(0, 3).join(', ')}`}): take it down first with \`tundra lab down --name ${name}\``)
  }
  try {
    mkdirSync(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new LabError(`lab ${JSON.stringify(name)} is being created by another \`lab up\``)
    throw err
  }
  const state: LabState = {
    version: 1, name, phase: 'creating', createdAt: new Date().toISOString(), dataplane, dir, repo: repoRoot(),
    namespaces: [], files: [], processes: [],
    net: { ns: roleNsName(name, 'net'), bridge: LAB.bridge },
    nodes: plan.nodes.map(n => ({ name: n.name, ns: n.ns, ip: n.ip, podCIDR: n.podCIDR, ...(n.podCIDR6 === undefined ? {} : { podCIDR6: n.podCIDR6 }) })),
    external: { ns: roleNsName(name, 'ext'), ip: LAB.externalIP },
    upstreamDns: { ns: roleNsName(name, 'dns'), ip: LAB.upstreamDnsIP },
    pods: plan.pods.map(p => ({
      namespace: p.namespace, name: p.name, ns: p.ns, ip: p.ip, ...(p.ip6 === undefined ? {} : { ip6: p.ip6 }), node: p.node, hostVeth: p.hostVeth, hostname: p.hostname,
      ready: false, probes: probesOf(p).map(formatTarget),
    })),
    services: [], endpointSlices: [], warnings: [...plan.warnings],
  }
  fillServices(state, plan)
  saveState(state)
  return state
}

function fillServices(state: LabState, plan: LabPlan): void {
  state.services = plan.cluster.services.map(s => ({
    namespace: s.namespace, name: s.name, type: s.type,
    clusterIP: s.type === 'ExternalName' ? '' : s.headless ? 'None' : s.clusterIPs[0] ?? '',
    ...(s.clusterIPs.length > 1 ? { clusterIPs: [...s.clusterIPs] } : {}),
    externalIPs: [...s.externalIPs],
    ports: s.ports.map(p => ({ name: p.name, port: p.port, targetPort: p.targetPort, nodePort: p.nodePort, protocol: p.protocol })),
  }))
  state.endpointSlices = plan.manifests.flatMap(o => o.kind !== 'EndpointSlice' ? [] : [{
    namespace: o.metadata?.namespace ?? 'default',
    name: o.metadata?.name ?? '',
    service: o.metadata?.labels?.['kubernetes.io/service-name'] ?? '',
    addressType: o.addressType ?? 'IPv4',
    ports: (o.ports ?? []).map(p => `${p.port ?? ''}/${p.protocol ?? 'TCP'}`),
    endpoints: (o.endpoints ?? []).flatMap(e => e.addresses ?? []),
  }])
}

/** What must answer before a pod counts as ready: each TCP port by connect, each netexec UDP port by a round trip. */
export function probesOf(p: PlannedPod): ProbeTarget[] {
  const out: ProbeTarget[] = []
  for (const c of p.containers) {
    for (const port of c.tcpPorts) out.push({ kind: 'tcp', ip: p.ip, port })
    if (c.runtime === 'netexec') for (const port of c.udpPorts) out.push({ kind: 'udp', ip: p.ip, port })
  }
  return out
}

interface BuildContext extends LabUpOptions {
  readonly say: (line: string) => void
  readonly timeoutMs: number
  readonly node: string
  readonly scripts: { readonly netexec: string; readonly probe: string }
  readonly agentCommand: readonly string[]
}

async function build(state: LabState, plan: LabPlan, ctx: BuildContext): Promise<void> {
  const { say } = ctx
  const check = (): void => { if (ctx.signal?.aborted) throw new LabError('interrupted') }
  const mtu = String(ctx.podMTU ?? 1450)
  const ipn = (ns: string, ...args: string[]): Promise<string> => must(['ip', '-n', ns, ...args])
  const batch = (ns: string, lines: readonly string[]): Promise<string> => must(['ip', '-n', ns, '-batch', '-'], { input: lines.join('\n') + '\n' })
  const sysctls = (ns: string, kv: Readonly<Record<string, string>>): Promise<string> =>
    must(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', ...Object.entries(kv).map(([k, v]) => `${k}=${v}`)])
  const etcFile = (ns: string, file: string, text: string): void => {
    const dir = join('/etc/netns', ns)
    if (!state.files.includes(dir)) { state.files.push(dir); saveState(state) }
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, file), text)
  }

  // 1. namespaces (each recorded before it exists)
  const all = [state.net.ns, state.upstreamDns.ns, state.external.ns, ...plan.nodes.map(n => n.ns), ...plan.pods.map(p => p.ns)]
  for (const [i, ns] of all.entries()) {
    check()
    state.namespaces.push(ns)
    saveState(state)
    await must(['ip', 'netns', 'add', ns])
    await ipn(ns, 'link', 'set', 'lo', 'up')
    if ((i + 1) % 10 === 0 || i + 1 === all.length) say(`[lab] creating namespaces… ${i + 1}/${all.length}`)
  }

  // 2. the node network: a bridge in the net namespace, one veth per host
  say('[lab] wiring the node network 172.18.0.0/24')
  await batch(state.net.ns, [`link add ${LAB.bridge} type bridge`, `link set ${LAB.bridge} up`])
  const hosts = [
    ...plan.nodes.map(n => ({ ns: n.ns, ip: n.ip, port: n.bridgePort })),
    { ns: state.external.ns, ip: LAB.externalIP, port: 'p-ext' },
    { ns: state.upstreamDns.ns, ip: LAB.upstreamDnsIP, port: 'p-dns' },
  ]
  for (const h of hosts) {
    check()
    await batch(state.net.ns, [`link add ${h.port} type veth peer name ${LAB.uplink} netns ${h.ns}`, `link set ${h.port} master ${LAB.bridge}`, `link set ${h.port} up`])
    await batch(h.ns, [`addr add ${h.ip}/${LAB.nodeNetworkPrefix} dev ${LAB.uplink}`, `link set ${LAB.uplink} up`])
  }
  // The outside host reaches LoadBalancer IPs and externalIPs in the service range through node 1.
  await ipn(state.external.ns, 'route', 'add', LAB.serviceCIDR, 'via', plan.nodes[0]!.ip)
  // Nodes need a default route, as real ones have: proxy ARP only answers for 169.254.1.1 when the node has a route
  // to it through another interface. The outside host plays the gateway; it does not forward, so nothing leaks.
  for (const n of plan.nodes) await ipn(n.ns, 'route', 'add', 'default', 'via', LAB.externalIP, 'dev', LAB.uplink)
  for (const ns of [state.external.ns, ...plan.nodes.map(n => n.ns)]) etcFile(ns, 'resolv.conf', `nameserver ${LAB.upstreamDnsIP}\n`)

  // 3. nodes are routers: forwarding on, reverse-path filtering off (pod sources arrive on many interfaces)
  for (const n of plan.nodes) {
    await sysctls(n.ns, {
      'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.rp_filter': '0', 'net.ipv4.conf.default.rp_filter': '0',
      [`net.ipv4.conf.${LAB.uplink}.rp_filter`]: '0',
      // IPv6: on (a namespace's defaults come from the kernel, not the host) and forwarding; no DAD on new links,
      // so the gateway address on a cali interface works at once
      ...(plan.dualStack ? {
        'net.ipv6.conf.all.disable_ipv6': '0', 'net.ipv6.conf.default.disable_ipv6': '0',
        'net.ipv6.conf.all.forwarding': '1', 'net.ipv6.conf.default.forwarding': '1', 'net.ipv6.conf.default.accept_dad': '0',
      } : {}),
    })
  }
  if (plan.dualStack) {
    // IPv6 pods of other nodes are out of reach (tundra carries only IPv4 between nodes): refuse at once with an
    // ICMPv6 unreachable instead of bouncing between the kernel and the TUN; a node's own pods have /128 routes.
    for (const n of plan.nodes) await ipn(n.ns, '-6', 'route', 'add', 'unreachable', LAB.clusterCIDR6)
    for (const p of plan.pods) {
      await sysctls(p.ns, { 'net.ipv6.conf.all.disable_ipv6': '0', 'net.ipv6.conf.default.disable_ipv6': '0', 'net.ipv6.conf.default.accept_dad': '0' })
    }
  }

  // 4. pods, wired as Calico does it
  for (const [i, p] of plan.pods.entries()) {
    check()
    const node = plan.nodes.find(n => n.name === p.node)!
    await batch(node.ns, [
      `link add ${p.hostVeth} mtu ${mtu} type veth peer name eth0 mtu ${mtu} netns ${p.ns}`,
      `link set ${p.hostVeth} address ee:ee:ee:ee:ee:ee`,
      `link set ${p.hostVeth} up`,
      `route add ${p.ip}/32 dev ${p.hostVeth} scope link`,
      ...(p.ip6 === undefined ? [] : [
        `addr add ${LAB.podGateway6}/64 dev ${p.hostVeth} nodad`,
        `route add ${p.ip6}/128 dev ${p.hostVeth}`,
      ]),
    ])
    await batch(p.ns, [
      'link set eth0 up',
      `addr add ${p.ip}/32 dev eth0`,
      `route add ${LAB.podGateway} dev eth0 scope link`,
      `route add default via ${LAB.podGateway} dev eth0`,
      ...(p.ip6 === undefined ? [] : [
        `addr add ${p.ip6}/128 dev eth0 nodad`,
        `route add default via ${LAB.podGateway6} dev eth0`,
      ]),
    ])
    etcFile(p.ns, 'resolv.conf', podResolvConf(p.namespace))
    etcFile(p.ns, 'hosts', podHostsFile(p))
    if ((i + 1) % 10 === 0 || i + 1 === plan.pods.length) say(`[lab] wiring pods… ${i + 1}/${plan.pods.length}`)
  }
  for (const n of plan.nodes) {
    const vs = plan.pods.filter(p => p.node === n.name).map(p => p.hostVeth)
    const kv: Record<string, string> = {}
    // proxy_delay 0: answer ARP for 169.254.1.1 at once (the default waits up to 0.8 s), as Calico sets it
    for (const v of vs) { kv[`net.ipv4.conf.${v}.proxy_arp`] = '1'; kv[`net.ipv4.neigh.${v}.proxy_delay`] = '0' }
    if (vs.length > 0) await sysctls(n.ns, kv)
  }

  // 5. servers: upstream DNS, the outside host's netexec, every pod's containers
  const start = async (role: ProcessRole, ns: string, owner: string, hostname: string, argv: readonly string[], log: string): Promise<void> => {
    check()
    const full = inNamespace(ns, hostname, argv)
    const d = await startDetached(full, log)
    const proc: LabProcess = { pid: d.pid, startTime: d.startTime, role, ns, owner, argv: full, log }
    state.processes.push(proc)
    saveState(state)
  }
  say('[lab] starting upstream DNS (dnsmasq) and the outside host')
  const dnsDir = join(state.dir, 'dns')
  mkdirSync(dnsDir, { recursive: true })
  await start('dnsmasq', state.upstreamDns.ns, 'dns', 'upstream-dns', [
    'dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--bind-interfaces',
    `--listen-address=${LAB.upstreamDnsIP}`, `--pid-file=${join(dnsDir, 'dnsmasq.pid')}`,
    '--log-queries', `--log-facility=${join(dnsDir, 'dnsmasq.log')}`,
    ...DNS_NAMES.map(([n, ip]) => `--address=/${n}/${ip}`),
    '--address=/#/', // every other name: NXDOMAIN at once instead of REFUSED
  ], join(dnsDir, 'dnsmasq.out'))
  await start('netexec', state.external.ns, 'external', 'external',
    [ctx.node, ctx.scripts.netexec, '--http-port', '80', '--udp-port', '80'], join(state.dir, 'external.log'))

  const withServers = plan.pods.filter(p => p.containers.some(c => c.runtime !== 'none'))
  for (const [i, p] of withServers.entries()) {
    const podDir = join(state.dir, 'pods', `${p.namespace}.${p.name}`)
    mkdirSync(podDir, { recursive: true })
    for (const c of p.containers) {
      if (c.runtime === 'nginx') {
        const dir = join(podDir, c.name)
        for (const d of ['html', 'tmp']) mkdirSync(join(dir, d), { recursive: true })
        chmodSync(join(dir, 'tmp'), 0o1777) // workers run as nobody
        writeFileSync(join(dir, 'html', 'index.html'), WELCOME_HTML)
        writeFileSync(join(dir, 'nginx.conf'), renderNginxConf(dir, c.tcpPorts, p.ip6 !== undefined))
        await start('nginx', p.ns, `${p.namespace}/${p.name}`, p.hostname,
          ['nginx', '-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], join(dir, 'nginx.out'))
      } else if (c.runtime === 'netexec') {
        await start('netexec', p.ns, `${p.namespace}/${p.name}`, p.hostname, [
          ctx.node, ctx.scripts.netexec,
          ...c.tcpPorts.flatMap(port => ['--http-port', String(port)]),
          ...c.udpPorts.flatMap(port => ['--udp-port', String(port)]),
          ...(p.ip6 === undefined ? [] : ['--ipv6']),
        ], join(podDir, `${c.name}.log`))
      }
    }
    if ((i + 1) % 10 === 0 || i + 1 === withServers.length) say(`[lab] starting containers… ${i + 1}/${withServers.length} pods`)
  }

  // 6. readiness, probed from each node like kubelet does
  await waitReady(state, plan, ctx)

  // 7. what the dataplane reads
  const manifests = join(state.dir, 'cluster.yaml')
  writeFileSync(manifests, `# tundra lab ${state.name}: the cluster as the API server would hold it (computed by \`lab up\`)\n` +
    plan.manifests.map(o => stringify(o, { lineWidth: 0, version: '1.1' })).join('---\n'))
  state.manifests = manifests
  saveState(state)

  if (plan.dataplane === 'tundra') await startAgents(state, plan, ctx, manifests, start)
  else if (plan.dataplane === 'iptables') {
    say(`[lab] loading kube-proxy iptables rules (${ctx.iptablesBackend ?? 'nft'}) into ${plan.nodes.length} node(s)`)
    await loadIptables(state, plan, ctx.iptablesBackend ?? 'nft')
  }
}

async function waitReady(state: LabState, plan: LabPlan, ctx: BuildContext): Promise<void> {
  const total = state.pods.length
  const readyPods = (): number => state.pods.filter(p => p.ready).length
  const seen = new Set<string>()
  const markReady = (): void => {
    state.pods = state.pods.map(p => (p.ready || !p.probes.every(t => seen.has(t)) ? p : { ...p, ready: true }))
    saveState(state)
  }
  markReady() // pods without servers
  ctx.say(`[lab] waiting for pods… ${readyPods()}/${total} ready`)
  const jobs = plan.nodes.map(n => {
    const targets = [
      ...state.pods.filter(p => p.node === n.name).flatMap(p => p.probes),
      ...(n.index === 1 ? [`tcp:${LAB.externalIP}:80`, `dns:${LAB.upstreamDnsIP}:53`] : []),
    ]
    return targets.length === 0 ? undefined : { node: n, targets }
  }).filter(j => j !== undefined)
  const children = jobs.map(j => spawn('ip', ['netns', 'exec', j.node.ns, ctx.node, ctx.scripts.probe, '--timeout', String(ctx.timeoutMs), ...j.targets], { stdio: ['ignore', 'pipe', 'pipe'] }))
  let failure: Error | undefined
  const fail = (e: Error): void => { if (!failure) { failure = e; for (const c of children) c.kill('SIGKILL') } }
  const done = children.map((child, i) => new Promise<void>(resolve => {
    let out = ''
    let err = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d
      let nl: number
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl)
        out = out.slice(nl + 1)
        const m = /^ready (\S+)$/.exec(line)
        if (!m) continue
        seen.add(m[1]!)
        const before = readyPods()
        markReady()
        if (readyPods() !== before) ctx.say(`[lab] waiting for pods… ${readyPods()}/${total} ready`)
      }
    })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d })
    child.on('close', code => {
      if (code !== 0 && !failure) {
        const rest = jobs[i]!.targets.filter(t => !seen.has(t))
        fail(new LabError(`not ready after ${ctx.timeoutMs} ms on ${jobs[i]!.node.name}: ${rest.join(', ')}${err ? ` (${err.trim()})` : ''}`))
      }
      resolve()
    })
  }))
  // A server that exits while we wait is a failure now, with its log, not a timeout later.
  const watch = setInterval(() => {
    if (ctx.signal?.aborted) return fail(new LabError('interrupted'))
    const dead = state.processes.find(p => !isOurs(p))
    if (dead) fail(new LabError(`${dead.role} of ${dead.owner} exited (log ${dead.log}):\n${logTail(dead.log)}`))
  }, 100)
  try { await Promise.all(done) } finally { clearInterval(watch) }
  if (failure) throw failure
}

async function startAgents(state: LabState, plan: LabPlan, ctx: BuildContext,
  manifests: string, start: (role: ProcessRole, ns: string, owner: string, hostname: string, argv: readonly string[], log: string) => Promise<void>): Promise<void> {
  ctx.say(`[lab] starting tundra on ${plan.nodes.length} node(s)`)
  for (const n of plan.nodes) {
    const cfg = agentConfig(plan, n.name, manifests, join(state.dir, `${n.name}.sock`))
    const path = join(state.dir, `${n.name}.agent.json`)
    writeFileSync(path, JSON.stringify(cfg, null, 2) + '\n')
    state.nodes = state.nodes.map(s => (s.name === n.name ? { ...s, agentConfig: path, control: cfg.control } : s))
    await start('agent', n.ns, n.name, n.name, [...ctx.agentCommand, 'agent', '--config', path], join(state.dir, `${n.name}.agent.log`))
  }
  for (const n of state.nodes) {
    const proc = state.processes.find(p => p.role === 'agent' && p.owner === n.name)!
    await waitFor(`the tundra agent on ${n.name} to answer on ${n.control}`, async () => {
      if (ctx.signal?.aborted) throw new LabError('interrupted')
      if (!isOurs(proc)) throw new LabError(`the tundra agent on ${n.name} exited (log ${proc.log}):\n${logTail(proc.log)}`)
      return existsSync(n.control!) && (await canConnect(n.control!))
    }, ctx.timeoutMs, 50)
    ctx.say(`[lab] tundra is up on ${n.name}`)
  }
}

/** Whether a unix socket at `path` accepts a connection (an agent's control socket is up). */
export function canConnect(path: string): Promise<boolean> {
  return new Promise(resolve => {
    const s = connect(path)
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

/** The config `tundra agent` gets on one node of the lab. */
export function agentConfig(plan: Pick<LabPlan, 'nodes'>, nodeName: string, manifests: string, control: string): AgentConfig {
  const n = plan.nodes.find(x => x.name === nodeName)
  if (!n) throw new LabError(`no node ${nodeName}`)
  return {
    node: { name: n.name, ip: n.ip, podCIDR: n.podCIDR, uplink: LAB.uplink },
    clusterCIDR: LAB.clusterCIDR,
    serviceCIDR: LAB.serviceCIDR,
    // a dual-stack lab (its nodes have IPv6 pod blocks): the agent wires IPv6 too
    ...(n.podCIDR6 === undefined ? {} : { clusterCIDR6: LAB.clusterCIDR6, serviceCIDR6: LAB.serviceCIDR6 }),
    manifests: [manifests],
    dns: { ip: LAB.dnsIP, zone: LAB.zone, upstreams: [LAB.upstreamDnsIP] },
    tun: { name: LAB.tunName, vnetHdr: true },
    vxlan: {
      vni: LAB.vxlan.vni,
      port: LAB.vxlan.port,
      peers: plan.nodes.filter(x => x.name !== n.name).map(x => ({ node: x.name, ip: x.ip, podCIDR: x.podCIDR })),
    },
    control,
  }
}

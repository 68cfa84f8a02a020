// `tundra lab up`: builds a cluster of network namespaces from manifests and starts its servers and dataplane.
//
//   tundra-<lab>-net           bridge br0: the node network 172.18.0.0/24
//   tundra-<lab>-node<k>       eth0 172.18.0.(10+k); a cali<hash> veth and a /32 route per pod (Calico's wiring)
//   tundra-<lab>-<ns>.<pod>    eth0 <pod ip>/32, default via 169.254.1.1 (proxy-ARPed by the node)
//                              dual-stack: also <pod ip6>/128, default via fe80::1 (set on the node's cali interface)
//   tundra-<lab>-ext           a host outside the cluster, 172.18.0.100, netexec on :80
//   tundra-<lab>-dns           upstream DNS (dnsmasq), 172.18.0.53
// Nothing goes into the root namespace. Everything is recorded in state.json before it is made.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { dirname, join } from 'node:path'
import type { AgentConfig } from '../agent/config'
import { haveCommand, isRoot, listNamespaces, must, waitFor } from '../netns/netns'
import { compileLab, type LabPlan } from './compile'
import { labDown } from './down'
import { APPLIED_DIR, ensureDir, MANIFESTS_DIR, writeObject } from './objects'
import { LAB, labNameError, labPrefix, roleNsName, type Dataplane } from './plan'
import {
  checkAborted,
  createNamespaces,
  etcFile,
  ipBatch,
  podState,
  startContainers,
  startProcess,
  sysctls,
  waitReady,
  wirePods,
  type LabRuntime,
} from './pods'
import { isOurs, logTail } from './proc'
import { ensureLabsRoot, LabError, labDir, readState, saveState, type LabState, type ProcessRole } from './state'
import { labStatus, type LabStatus } from './status'
import { loadIptables } from './iptables'
import { checkLabAgentSettings, type LabAgentSettings } from './settings'

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
  /** what every node's agent config gets besides the lab's wiring: failover, outlier ejection (off by default) */
  readonly agentSettings?: LabAgentSettings
}

export const DEFAULT_LAB_NAME = 'lab'

/** The repository whose compiled JS the lab runs (netexec, probes, the agent). */
export function repoRoot(): string {
  for (let dir = __dirname; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json')
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'tundra') return dir
      } catch {
        /* keep looking */
      }
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
  if (opts.agentSettings !== undefined) {
    checkLabAgentSettings(opts.agentSettings)
    if (dataplane !== 'tundra') throw new LabError(`failover and outlier ejection are tundra's: not with --dataplane ${dataplane}`)
  }
  if (!isRoot()) throw new LabError('lab up needs root: it creates network namespaces')
  const node = process.execPath
  const scripts = { netexec: distScript('src/lab/netexec-main.js'), probe: distScript('src/lab/probe-main.js') }
  const agentCommand = dataplane !== 'tundra' ? [] : (opts.agentCommand ?? [node, distScript('src/cli/main.js')])
  const needs = ['ip', 'unshare', 'hostname', 'dnsmasq', 'nft']
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
      try {
        await labDown(name, { log: say })
      } catch (downErr) {
        say(`[lab] warning: cleanup incomplete: ${(downErr as Error).message}`)
      }
    }
    throw err
  }
  const n = plan.nodes.length
  const count = (k: number, what: string): string => `${k} ${what}${k === 1 ? '' : 's'}`
  say(
    `[lab] lab ${name} is up: ${count(n, 'node')}, ${count(plan.pods.length, 'pod')}, ${count(plan.cluster.services.length, 'service')}, dataplane ${dataplane}`,
  )
  return labStatus(name)
}

/** Takes the name: the state dir is made with a plain mkdir, so two `lab up` with one name cannot both succeed. */
function claim(name: string, dataplane: Dataplane, plan: LabPlan): LabState {
  ensureLabsRoot()
  const dir = labDir(name)
  const leftovers = listNamespaces().filter(ns => ns.startsWith(labPrefix(name)))
  if (existsSync(dir) || leftovers.length > 0) {
    const phase = readState(name)?.phase
    throw new LabError(
      `lab ${JSON.stringify(name)} is already ${phase === 'up' ? 'up' : 'in use'} ` +
        `(${existsSync(dir) ? dir : `namespaces ${leftovers.slice(0, 3).join(', ')}`}): take it down first with \`tundra lab down --name ${name}\``,
    )
  }
  try {
    mkdirSync(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new LabError(`lab ${JSON.stringify(name)} is being created by another \`lab up\``)
    throw err
  }
  const state: LabState = {
    version: 1,
    name,
    phase: 'creating',
    createdAt: new Date().toISOString(),
    dataplane,
    dir,
    repo: repoRoot(),
    namespaces: [],
    files: [],
    processes: [],
    net: { ns: roleNsName(name, 'net'), bridge: LAB.bridge },
    nodes: plan.nodes.map(n => ({
      name: n.name,
      ns: n.ns,
      ip: n.ip,
      podCIDR: n.podCIDR,
      ...(n.podCIDR6 === undefined ? {} : { podCIDR6: n.podCIDR6 }),
      ...(n.labels === undefined ? {} : { labels: n.labels }),
    })),
    external: { ns: roleNsName(name, 'ext'), ip: LAB.externalIP },
    upstreamDns: { ns: roleNsName(name, 'dns'), ip: LAB.upstreamDnsIP },
    pods: plan.pods.map(podState),
    warnings: [...plan.warnings],
  }
  saveState(state)
  return state
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
  const rt: LabRuntime = {
    state,
    say,
    timeoutMs: ctx.timeoutMs,
    node: ctx.node,
    scripts: ctx.scripts,
    ...(ctx.podMTU === undefined ? {} : { podMTU: ctx.podMTU }),
    ...(ctx.signal === undefined ? {} : { signal: ctx.signal }),
  }
  const ipn = (ns: string, ...args: string[]): Promise<string> => must(['ip', '-n', ns, ...args])

  // 1. namespaces (each recorded before it exists)
  await createNamespaces(rt, [state.net.ns, state.upstreamDns.ns, state.external.ns, ...plan.nodes.map(n => n.ns), ...plan.pods.map(p => p.ns)])

  // 2. the node network: a bridge in the net namespace, one veth per host
  say('[lab] wiring the node network 172.18.0.0/24')
  await ipBatch(state.net.ns, [`link add ${LAB.bridge} type bridge`, `link set ${LAB.bridge} up`])
  const hosts = [
    ...plan.nodes.map(n => ({ ns: n.ns, ip: n.ip, port: n.bridgePort })),
    { ns: state.external.ns, ip: LAB.externalIP, port: 'p-ext' },
    { ns: state.upstreamDns.ns, ip: LAB.upstreamDnsIP, port: 'p-dns' },
  ]
  for (const h of hosts) {
    checkAborted(rt)
    await ipBatch(state.net.ns, [
      `link add ${h.port} type veth peer name ${LAB.uplink} netns ${h.ns}`,
      `link set ${h.port} master ${LAB.bridge}`,
      `link set ${h.port} up`,
    ])
    await ipBatch(h.ns, [`addr add ${h.ip}/${LAB.nodeNetworkPrefix} dev ${LAB.uplink}`, `link set ${LAB.uplink} up`])
  }
  // The outside host reaches LoadBalancer IPs and externalIPs in the service range through node 1.
  await ipn(state.external.ns, 'route', 'add', LAB.serviceCIDR, 'via', plan.nodes[0]!.ip)
  // Nodes need a default route, as real ones have: proxy ARP only answers for 169.254.1.1 when the node has a route
  // to it through another interface. The outside host plays the gateway; it does not forward, so nothing leaks.
  for (const n of plan.nodes) await ipn(n.ns, 'route', 'add', 'default', 'via', LAB.externalIP, 'dev', LAB.uplink)
  for (const ns of [state.external.ns, ...plan.nodes.map(n => n.ns)]) etcFile(state, ns, 'resolv.conf', `nameserver ${LAB.upstreamDnsIP}\n`)

  // 3. nodes are routers: forwarding on, reverse-path filtering off (pod sources arrive on many interfaces)
  for (const n of plan.nodes) {
    await sysctls(n.ns, {
      'net.ipv4.ip_forward': '1',
      'net.ipv4.conf.all.rp_filter': '0',
      'net.ipv4.conf.default.rp_filter': '0',
      [`net.ipv4.conf.${LAB.uplink}.rp_filter`]: '0',
      // IPv6: on (a namespace's defaults come from the kernel, not the host) and forwarding; no DAD on new links,
      // so the gateway address on a cali interface works at once
      ...(plan.dualStack
        ? {
            'net.ipv6.conf.all.disable_ipv6': '0',
            'net.ipv6.conf.default.disable_ipv6': '0',
            'net.ipv6.conf.all.forwarding': '1',
            'net.ipv6.conf.default.forwarding': '1',
            'net.ipv6.conf.default.accept_dad': '0',
          }
        : {}),
    })
  }
  // IPv6 pods of other nodes are out of reach (tundra carries only IPv4 between nodes): refuse at once with an
  // ICMPv6 unreachable instead of bouncing between the kernel and the TUN; a node's own pods have /128 routes.
  if (plan.dualStack) for (const n of plan.nodes) await ipn(n.ns, '-6', 'route', 'add', 'unreachable', LAB.clusterCIDR6)

  // 4. pods, wired as Calico does it
  await wirePods(rt, plan.nodes, plan.pods)

  // 5. servers: upstream DNS, the outside host's netexec, every pod's containers
  say('[lab] starting upstream DNS (dnsmasq) and the outside host')
  const dnsDir = join(state.dir, 'dns')
  mkdirSync(dnsDir, { recursive: true })
  await startProcess(
    rt,
    'dnsmasq',
    state.upstreamDns.ns,
    'dns',
    'upstream-dns',
    [
      'dnsmasq',
      '--keep-in-foreground',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--bind-interfaces',
      `--listen-address=${LAB.upstreamDnsIP}`,
      `--pid-file=${join(dnsDir, 'dnsmasq.pid')}`,
      '--log-queries',
      `--log-facility=${join(dnsDir, 'dnsmasq.log')}`,
      ...DNS_NAMES.map(([n, ip]) => `--address=/${n}/${ip}`),
      '--address=/#/', // every other name: NXDOMAIN at once instead of REFUSED
    ],
    join(dnsDir, 'dnsmasq.out'),
  )
  await startProcess(
    rt,
    'netexec',
    state.external.ns,
    'external',
    'external',
    [ctx.node, ctx.scripts.netexec, '--http-port', '80', '--udp-port', '80'],
    join(state.dir, 'external.log'),
  )
  await startContainers(rt, plan.pods)

  // 6. readiness, probed from each node like kubelet does
  await waitReady(
    rt,
    plan.nodes,
    new Set(plan.pods.map(p => `${p.namespace}/${p.name}`)),
    new Map([[plan.nodes[0]!.name, [`tcp:${LAB.externalIP}:80`, `dns:${LAB.upstreamDnsIP}:53`]]]),
  )

  // 7. what the dataplane reads: one file per object, and the user's objects for a later \`lab apply\`
  const manifests = join(state.dir, MANIFESTS_DIR)
  const applied = join(state.dir, APPLIED_DIR)
  ensureDir(manifests)
  ensureDir(applied)
  for (const o of plan.manifests) writeObject(manifests, o, true)
  for (const o of plan.applied) writeObject(applied, o, true)
  state.manifests = manifests
  saveState(state)

  const start = (role: ProcessRole, ns: string, owner: string, hostname: string, argv: readonly string[], log: string): Promise<void> =>
    startProcess(rt, role, ns, owner, hostname, argv, log)
  if (plan.dataplane === 'tundra') await startAgents(state, plan, ctx, manifests, start)
  else if (plan.dataplane === 'iptables') {
    say(`[lab] loading kube-proxy iptables rules (${ctx.iptablesBackend ?? 'nft'}) into ${plan.nodes.length} node(s)`)
    await loadIptables(state, plan, ctx.iptablesBackend ?? 'nft')
  }
}

async function startAgents(
  state: LabState,
  plan: LabPlan,
  ctx: BuildContext,
  manifests: string,
  start: (role: ProcessRole, ns: string, owner: string, hostname: string, argv: readonly string[], log: string) => Promise<void>,
): Promise<void> {
  ctx.say(`[lab] starting tundra on ${plan.nodes.length} node(s)`)
  for (const n of plan.nodes) {
    const cfg = agentConfig(plan, n.name, manifests, join(state.dir, `${n.name}.sock`), ctx.agentSettings)
    const path = join(state.dir, `${n.name}.agent.json`)
    writeFileSync(path, JSON.stringify(cfg, null, 2) + '\n')
    state.nodes = state.nodes.map(s => (s.name === n.name ? { ...s, agentConfig: path, control: cfg.control } : s))
    await start('agent', n.ns, n.name, n.name, [...ctx.agentCommand, 'agent', '--config', path], join(state.dir, `${n.name}.agent.log`))
  }
  for (const n of state.nodes) {
    const proc = state.processes.find(p => p.role === 'agent' && p.owner === n.name)!
    await waitFor(
      `the tundra agent on ${n.name} to answer on ${n.control}`,
      async () => {
        if (ctx.signal?.aborted) throw new LabError('interrupted')
        if (!isOurs(proc)) throw new LabError(`the tundra agent on ${n.name} exited (log ${proc.log}):\n${logTail(proc.log)}`)
        return existsSync(n.control!) && (await canConnect(n.control!))
      },
      ctx.timeoutMs,
      50,
    )
    ctx.say(`[lab] tundra is up on ${n.name}`)
  }
}

/** Whether a unix socket at `path` accepts a connection (an agent's control socket is up). */
export function canConnect(path: string): Promise<boolean> {
  return new Promise(resolve => {
    const s = connect(path)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/** The config `tundra agent` gets on one node of the lab. */
export function agentConfig(plan: Pick<LabPlan, 'nodes'>, nodeName: string, manifests: string, control: string, settings: LabAgentSettings = {}): AgentConfig {
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
    ...(settings.failover === undefined ? {} : { failover: settings.failover }),
    ...(settings.outlierEjection === undefined ? {} : { outlierEjection: settings.outlierEjection }),
  }
}

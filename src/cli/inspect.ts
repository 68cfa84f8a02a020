// `tundra dump|trace|services|conntrack`: look inside a dataplane. With -f they build one from manifests (offline);
// without, they ask a running agent over its control socket (--socket, or a lab node's agent). Either way the
// command runs the same handler and this side renders the reply.
import { Command, Option } from 'commander'
import { askAgent } from '../agent/control'
import { InspectError } from '../inspect/common'
import { inspectHandlers, INSPECT_COMMANDS } from '../inspect/handlers'
import { offlineView, OFFLINE_DEFAULTS } from '../inspect/offline'
import { resolveSocket } from '../inspect/socket'
import { DUMP_FORMATS, type DumpFormat } from '../inspect/dump'
import type { DumpOptions } from '../kubeproxy/dump'
import { mergeFlags, readKubeProxyConfig, RUN_FLAGS } from '../run/kpconfig'
import { formatTrace, TRACE_PROTOCOLS, type Trace } from '../inspect/trace'
import { formatServices, type ServicesReport } from '../inspect/services'
import { CONNTRACK_OPS, CONNTRACK_PROTOCOLS, OFFLINE_CONNTRACK, formatConntrack, type ConntrackResult } from '../inspect/conntrack'

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value]

function positiveInt(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new InspectError(`not a positive number: ${value}`)
  return Number(value)
}

interface SourceOpts {
  filename?: string[]
  nodeName?: string
  nodeIp?: string
  clusterCidr?: string
  nodes?: number
  socket?: string
  lab?: string
  node?: string
}

function offlineOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('-f, --filename <file|dir>', 'manifests to inspect offline (YAML/JSON; repeat for more)').argParser(collect))
    .option('--node-name <name>', `with -f: the node to act as (default: the first Node of the manifests, or ${OFFLINE_DEFAULTS.nodeName})`)
    .option('--node-ip <ip>', `with -f: that node's address (default: the Node's, or ${OFFLINE_DEFAULTS.nodeIP})`)
    .option('--cluster-cidr <cidr>', `with -f: the pod network, kube-proxy's --cluster-cidr (default ${OFFLINE_DEFAULTS.clusterCIDR})`)
    .addOption(new Option('--nodes <n>', 'with -f: lab nodes to place pods without addresses on, as `lab up --nodes` (default 1)').argParser(positiveInt))
}

function onlineOptions(cmd: Command): Command {
  return cmd
    .option('--socket <path>', "a running agent's control socket")
    .option('--lab <name>', "ask this lab's agent (default: the only lab that is up)")
    .option('--node <node>', "with --lab: which node's agent (default: the first)")
}

const outputOption = (): Option => new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text')

/** Runs one inspection command offline (-f) or against an agent; returns its JSON reply. */
async function call(o: SourceOpts, cmd: (typeof INSPECT_COMMANDS)[number], args: Record<string, unknown>): Promise<unknown> {
  if (o.filename !== undefined) {
    if (o.socket !== undefined || o.lab !== undefined || o.node !== undefined) {
      throw new InspectError('give -f (manifests, offline) or --socket/--lab (a running agent), not both')
    }
    const view = offlineView(o.filename, {
      ...(o.nodeName !== undefined ? { nodeName: o.nodeName } : {}),
      ...(o.nodeIp !== undefined ? { nodeIP: o.nodeIp } : {}),
      ...(o.clusterCidr !== undefined ? { clusterCIDR: o.clusterCidr } : {}),
      ...(o.nodes !== undefined ? { nodes: o.nodes } : {}),
    })
    return await inspectHandlers(view)[cmd](args)
  }
  for (const [flag, v] of [
    ['--node-name', o.nodeName],
    ['--node-ip', o.nodeIp],
    ['--cluster-cidr', o.clusterCidr],
    ['--nodes', o.nodes],
  ] as const) {
    if (v !== undefined) throw new InspectError(`${flag} only applies with -f (a running agent knows its own node)`)
  }
  return askAgent(resolveSocket(o), cmd, args)
}

function json(v: unknown): string {
  return JSON.stringify(v, null, 2) + '\n'
}

/** kube-proxy's settings for `dump`, resolved as `run` resolves them (same file, flags and precedence). */
function dumpProxyOptions(o: DumpOpts): DumpOptions & { readonly nodeCIDRLocal: boolean } {
  const flags: Record<string, unknown> = {}
  for (const f of RUN_FLAGS) if (f.group !== 'tundra' || f.path === 'tundra.serviceCIDRs') flags[f.key] = o[f.key]
  if (o.clusterCidr !== undefined) flags['clusterCidr'] = o.clusterCidr
  const cfg = mergeFlags(o.config !== undefined ? readKubeProxyConfig(o.config) : undefined, flags)
  for (const w of cfg.warnings) process.stderr.write(`warning: ${w}\n`)
  const given = (key: string): boolean => o[key] !== undefined || o.config !== undefined
  return {
    ...(cfg.hostnameOverride !== '' ? { nodeName: cfg.hostnameOverride.toLowerCase() } : {}),
    ...(given('clusterCidr') && cfg.clusterCIDRs.length > 0 ? { clusterCIDR: cfg.clusterCIDRs } : {}),
    ...(given('nodeportAddresses')
      ? { nodePortAddresses: cfg.nodePortAddresses.flatMap(a => (a === 'all' ? ['0.0.0.0/0', '::/0'] : a === 'localhost' ? [] : [a])) }
      : {}),
    masqueradeAll: cfg.masqueradeAll,
    masqueradeBit: cfg.masqueradeBit,
    localhostNodePorts: cfg.localhostNodePorts,
    serviceCIDRs: cfg.tundra.serviceCIDRs,
    nodeCIDRLocal: cfg.detectLocalMode === 'NodeCIDR',
  }
}

type DumpOpts = SourceOpts &
  Record<string, unknown> & { format: DumpFormat; family: '4' | '6'; config?: string; skipInvalid?: boolean; serviceNodePortRange?: string }

function portRange(v: string): [number, number] {
  const m = /^(\d+)-(\d+)$/.exec(v)
  if (m === null || Number(m[1]) > Number(m[2]) || Number(m[2]) > 65535)
    throw new InspectError(`--service-node-port-range: expected a range like 30000-32767, got ${JSON.stringify(v)}`)
  return [Number(m[1]), Number(m[2])]
}

export function registerInspect(program: Command): void {
  const dump = onlineOptions(offlineOptions(program.command('dump')))
    .description("the rules kube-proxy would program on this node (iptables-save or nft), or tundra's compiled NAT table (json)")
    .addOption(new Option('--format <format>', 'output format').choices(DUMP_FORMATS).default('iptables-save'))
    .addOption(new Option('--family <n>', 'IP family of the rules').choices(['4', '6']).default('4'))
    .option('--config <file>', "with -f: the node's KubeProxyConfiguration, as `tundra run --config` reads it")
    .option('--skip-invalid', 'with -f: render the valid objects and exit 0 when some are invalid (default: exit 1)')
    .option('--service-node-port-range <a-b>', "with -f: the API server's NodePort range (default 30000-32767)")
  for (const f of RUN_FLAGS) {
    if (
      f.refused !== undefined ||
      (f.group === 'tundra' && f.path !== 'tundra.serviceCIDRs') ||
      ['--cluster-cidr', '--kubeconfig', '--cleanup', '--v', '--logging-format'].includes(f.flag)
    )
      continue
    dump.option(f.type === 'bool' ? `${f.flag} [bool]` : `${f.flag} ${f.arg ?? '<value>'}`, `with -f: ${f.help}`)
  }
  dump.action(async (o: DumpOpts) => {
    const args = { format: o.format, family: Number(o.family) }
    if (o.filename === undefined) {
      if (o.config !== undefined) throw new InspectError('--config only applies with -f (a running agent dumps its own settings)')
      process.stdout.write(String(await call(o, 'dump', args)))
      return
    }
    const proxy = dumpProxyOptions(o)
    const view = offlineView(o.filename, {
      ...(o.nodeName !== undefined ? { nodeName: o.nodeName } : proxy.nodeName !== undefined ? { nodeName: proxy.nodeName } : {}),
      ...(o.nodeIp !== undefined ? { nodeIP: o.nodeIp } : {}),
      ...(o.clusterCidr !== undefined ? { clusterCIDR: o.clusterCidr } : {}),
      ...(o.nodes !== undefined ? { nodes: o.nodes } : {}),
      ...(o.serviceNodePortRange !== undefined ? { nodePortRange: portRange(o.serviceNodePortRange) } : {}),
    })
    if (view.problems.length > 0 && o.skipInvalid !== true) {
      throw new InspectError(`${view.problems.length} invalid object(s) (listed above): nothing dumped; --skip-invalid renders the valid rest`)
    }
    let { nodeCIDRLocal, ...render } = proxy
    if (nodeCIDRLocal) {
      // detectLocalMode NodeCIDR: pod traffic is "local" when it comes from this node's podCIDRs (as run does)
      const self = view.natConfig().nodeName
      const cidrs = view.cluster().nodes.find(n => n.name === self)?.podCIDRs ?? []
      if (cidrs.length === 0) throw new InspectError(`detectLocalMode NodeCIDR: the Node ${self} in the manifests has no spec.podCIDRs`)
      render = { ...render, clusterCIDR: [...cidrs] }
    }
    process.stdout.write(String(await inspectHandlers(view).dump({ ...args, proxy: render })))
  })

  onlineOptions(offlineOptions(program.command('trace')))
    .description("follow a connection's first packet through the service rules: chains, endpoint, masquerade, rewritten tuple")
    .requiredOption('--src <ip[:port]>', 'the client: a pod, this node, or an outside address')
    .option('--dst <ip:port|name[:port]>', 'where it connects: an address or a DNS name (resolved by the cluster DNS)')
    .option('--name <name>', 'a DNS name to resolve first (instead of a name in --dst)')
    .addOption(new Option('--proto <proto>', 'protocol').choices(TRACE_PROTOCOLS).default('tcp'))
    .addOption(new Option('--sport <port>', 'source port (instead of --src IP:PORT)'))
    .addOption(new Option('--dport <port>', 'destination port (instead of --dst IP:PORT)'))
    .addOption(outputOption())
    .action(async (o: SourceOpts & { src: string; dst?: string; name?: string; proto: string; sport?: string; dport?: string; output: string }) => {
      const args: Record<string, unknown> = { src: o.src, proto: o.proto }
      if (o.dst !== undefined) args['dst'] = o.dst
      if (o.name !== undefined) args['name'] = o.name
      if (o.sport !== undefined) args['sport'] = o.sport
      if (o.dport !== undefined) args['dport'] = o.dport
      const t = (await call(o, 'trace', args)) as Trace
      process.stdout.write(o.output === 'json' ? json(t) : formatTrace(t))
    })

  onlineOptions(offlineOptions(program.command('services')))
    .description('service frontends and their backends (state, local/remote), like `cilium service list`')
    .addOption(new Option('-o, --output <format>', 'output format (wide: per-endpoint golden signals)').choices(['text', 'wide', 'json']).default('text'))
    .action(async (o: SourceOpts & { output: string }) => {
      const r = (await call(o, 'services', {})) as ServicesReport
      process.stdout.write(o.output === 'json' ? json(r) : formatServices(r, o.output === 'wide'))
    })

  onlineOptions(program.command('conntrack'))
    .description("a running agent's connection table: list, count or flush entries (filters combine)")
    .argument('[op]', `${CONNTRACK_OPS.join(' | ')}`, 'list')
    .addOption(new Option('-f, --filename <file|dir>').hideHelp().argParser(collect))
    .option('--src <ip>', 'original source (the client)')
    .option('--dst <ip>', 'the address connected to, or the endpoint it went to')
    .addOption(new Option('--proto <proto>', 'protocol').choices(CONNTRACK_PROTOCOLS))
    .option('--service <ns/name>', 'connections of this service')
    .option('--port <port>', 'any port of either direction')
    .addOption(outputOption())
    .action(async (op: string, o: SourceOpts & { src?: string; dst?: string; proto?: string; service?: string; port?: string; output: string }) => {
      if (!(CONNTRACK_OPS as readonly string[]).includes(op))
        throw new InspectError(`conntrack: unknown operation ${JSON.stringify(op)} (use ${CONNTRACK_OPS.join(', ')})`)
      if (o.filename !== undefined) throw new InspectError(OFFLINE_CONNTRACK)
      const filter: Record<string, unknown> = {}
      for (const k of ['src', 'dst', 'proto', 'service', 'port'] as const) if (o[k] !== undefined) filter[k] = o[k]
      const r = (await call(o, 'conntrack', { op, filter })) as ConntrackResult
      if (o.output === 'json') {
        process.stdout.write(json(r))
        return
      }
      const text = formatConntrack(r)
      process.stdout.write(text.stdout)
      process.stderr.write(text.stderr)
    })
}

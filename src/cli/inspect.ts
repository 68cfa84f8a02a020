// `tundra dump|trace|services|conntrack`: look inside a dataplane. With -f they build one from manifests (offline);
// without, they ask a running agent over its control socket (--socket, or a lab node's agent). Either way the
// command runs the same handler and this side renders the reply.
import { Command, Option } from 'commander'
import type { SchedulerName } from '../nat/sched'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { diffRules, formatDiff, tundraRules, type DiffReport } from '../inspect/diff'
import { RulesetParseError, type RuleMode } from '../kubeproxy/parse-model'
import type { Family } from '../model/cluster'
import { askAgent } from '../agent/control'
import { InspectError } from '../inspect/common'
import { inspectHandlers, INSPECT_COMMANDS } from '../inspect/handlers'
import { offlineView, OFFLINE_DEFAULTS } from '../inspect/offline'
import { resolveSocket } from '../inspect/socket'
import { DUMP_FORMATS, type DumpFormat } from '../inspect/dump'
import type { DumpOptions } from '../kubeproxy/dump'
import { mergeFlags, readKubeProxyConfig } from '../run/kpconfig'
import { RUN_FLAGS } from '../run/flags'
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
function dumpProxyOptions(o: DumpOpts): DumpOptions & { readonly nodeCIDRLocal: boolean; readonly scheduler: SchedulerName } {
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
    scheduler: cfg.tundra.scheduler,
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

/** `dump -f`'s cluster and kube-proxy settings (also `diff -f`): the manifests as an offline view, the settings as run resolves them. */
function offlineDump(o: DumpOpts): { view: ReturnType<typeof offlineView>; render: DumpOptions } {
  if (o.filename === undefined) throw new InspectError('offline: give -f manifests')
  const proxy = dumpProxyOptions(o)
  const view = offlineView(o.filename, {
    ...(o.nodeName !== undefined ? { nodeName: o.nodeName } : proxy.nodeName !== undefined ? { nodeName: proxy.nodeName } : {}),
    ...(o.nodeIp !== undefined ? { nodeIP: o.nodeIp } : {}),
    ...(o.clusterCidr !== undefined ? { clusterCIDR: o.clusterCidr } : {}),
    ...(o.nodes !== undefined ? { nodes: o.nodes } : {}),
    ...(o.serviceNodePortRange !== undefined ? { nodePortRange: portRange(o.serviceNodePortRange) } : {}),
    scheduler: proxy.scheduler,
  })
  if (view.problems.length > 0 && o.skipInvalid !== true) {
    throw new InspectError(`${view.problems.length} invalid object(s) (listed above): nothing dumped; --skip-invalid renders the valid rest`)
  }
  let { nodeCIDRLocal, scheduler: _scheduler, ...render } = proxy
  if (nodeCIDRLocal) {
    // detectLocalMode NodeCIDR: pod traffic is "local" when it comes from this node's podCIDRs (as run does)
    const self = view.natConfig().nodeName
    const cidrs = view.cluster().nodes.find(n => n.name === self)?.podCIDRs ?? []
    if (cidrs.length === 0) throw new InspectError(`detectLocalMode NodeCIDR: the Node ${self} in the manifests has no spec.podCIDRs`)
    render = { ...render, clusterCIDR: [...cidrs] }
  }
  return { view, render }
}

/** The node settings `dump -f` (and `diff -f`) render with: --config, kube-proxy's flags, the NodePort range. */
function proxyFlags(cmd: Command): Command {
  cmd
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
    cmd.option(f.type === 'bool' ? `${f.flag} [bool]` : `${f.flag} ${f.arg ?? '<value>'}`, `with -f: ${f.help}`)
  }
  return cmd
}

/** What `diff --from-node` reads: iptables-save (whichever variant the node's alternatives pick), a named variant, or nft. */
const FROM_NODE_MODES = ['iptables', 'iptables-legacy', 'iptables-nft', 'nft'] as const
type FromNodeMode = (typeof FROM_NODE_MODES)[number]

/** The live ruleset text for `diff`: a file, stdin, or this node's own rules. */

function readLiveRules(o: { rules?: string; fromNode?: boolean; mode?: FromNodeMode }, family: Family | undefined): { text: string; source: string } {
  if ((o.rules === undefined) === (o.fromNode !== true)) throw new InspectError('give the live rules: --rules FILE (- for stdin) or --from-node')
  if (o.rules !== undefined) {
    if (o.mode !== undefined) throw new InspectError('--mode only applies with --from-node (a file says what it is)')
    try {
      return { text: readFileSync(o.rules === '-' ? 0 : o.rules, 'utf8'), source: o.rules === '-' ? 'stdin' : o.rules }
    } catch (err) {
      throw new InspectError(`--rules ${o.rules}: ${(err as Error).message}`)
    }
  }
  const fam = family === 6 ? 'ip6' : 'ip'
  const run = (cmd: string, args: string[]): { ok: boolean; out: string; err: string } => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 30, env: { ...process.env, PATH: `${process.env['PATH'] ?? ''}:/usr/sbin:/sbin` } })
    return { ok: r.status === 0, out: r.stdout ?? '', err: r.error?.message ?? r.stderr ?? '' }
  }
  let mode = o.mode
  if (mode === undefined) {
    const tables = run('nft', ['list', 'tables'])
    mode = tables.ok && new RegExp(`^table ${fam} kube-proxy$`, 'm').test(tables.out) ? 'nft' : 'iptables'
  }
  const save = `${family === 6 ? 'ip6tables' : 'iptables'}${mode === 'iptables' ? '' : mode.slice('iptables'.length)}-save`
  const [cmd, args] = mode === 'nft' ? ['nft', ['list', 'ruleset']] : [save, []]
  const r = run(cmd, args)
  if (!r.ok) throw new InspectError(`--from-node: ${cmd} ${args.join(' ')} failed: ${r.err.trim()}`)
  return { text: r.out, source: `${cmd} ${args.join(' ')}`.trim() }
}

export function registerInspect(program: Command): void {
  const dump = proxyFlags(onlineOptions(offlineOptions(program.command('dump'))))
    .description("the rules kube-proxy would program on this node (iptables-save or nft), or tundra's compiled NAT table (json)")
    .addOption(new Option('--format <format>', 'output format').choices(DUMP_FORMATS).default('iptables-save'))
    .addOption(new Option('--family <n>', 'IP family of the rules').choices(['4', '6']).default('4'))
  dump.action(async (o: DumpOpts) => {
    const args = { format: o.format, family: Number(o.family) }
    if (o.filename === undefined) {
      if (o.config !== undefined) throw new InspectError('--config only applies with -f (a running agent dumps its own settings)')
      process.stdout.write(String(await call(o, 'dump', args)))
      return
    }
    const { view, render } = offlineDump(o)
    process.stdout.write(String(await inspectHandlers(view).dump({ ...args, proxy: render })))
  })

  proxyFlags(onlineOptions(offlineOptions(program.command('diff'))))
    .description("shadow mode: compare a node's live kube-proxy rules (iptables-save or nft) with what tundra would do; exit 0 agree, 1 differ, 2 bad input")
    .option('--rules <file>', 'the live rules: iptables-save or `nft list ruleset` output (- for stdin)')
    .option('--from-node', 'read the live rules of this node (network namespace): nft list ruleset, or iptables-save')
    .addOption(
      new Option('--mode <mode>', 'with --from-node: which rules to read (default: nft when a kube-proxy table exists, else iptables-save)').choices(
        FROM_NODE_MODES,
      ),
    )
    .addOption(new Option('--family <n>', 'IP family to compare (default: the family of the live rules)').choices(['4', '6']))
    .addOption(outputOption())
    .action(async (o: DumpOpts & { rules?: string; fromNode?: boolean; mode?: FromNodeMode; family?: string; output: string }) => {
      let report: DiffReport
      try {
        const family = o.family === undefined ? undefined : (Number(o.family) as Family)
        const live = readLiveRules(o, family)
        let ours: (mode: RuleMode, family: Family) => Promise<string> | string
        if (o.filename !== undefined) {
          const { view, render } = offlineDump(o)
          ours = (mode, fam) => tundraRules(view, mode, fam, render)
        } else {
          if (o.config !== undefined) throw new InspectError('--config only applies with -f (a running agent uses its own settings)')
          ours = async (mode, fam) => {
            try {
              return String(await call(o, 'dump', { format: mode === 'nft' ? 'nft' : 'iptables-save', family: fam }))
            } catch (err) {
              if (fam === 6 && err instanceof Error && /no IPv6 rules/.test(err.message)) return ''
              throw err
            }
          }
        }
        report = await diffRules(live.text, ours, family).catch((err: unknown) => {
          if (err instanceof RulesetParseError) throw new InspectError(`${live.source}: ${err.message}`)
          throw err
        })
      } catch (err) {
        process.stderr.write(`tundra diff: ${(err as Error).message ?? String(err)}\n`)
        process.exit(2)
      }
      process.stdout.write(o.output === 'json' ? json(report) : formatDiff(report))
      process.exitCode = report.agree ? 0 : 1
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

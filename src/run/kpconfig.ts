// `tundra run --config FILE`: kube-proxy's own configuration file (KubeProxyConfiguration,
// kubeproxy.config.k8s.io/v1alpha1), so an existing kube-proxy ConfigMap works as is, plus a `tundra:` section.
//
//   readKubeProxyConfig(path) / parseKubeProxyConfig(text, file) -> ParsedKubeProxyConfig   (strict: errors name the
//                                                                    file and the field path)
//   mergeFlags(parsed | undefined, flags, opts?) -> RunConfig       flags win over the file, then kube-proxy's defaults
//
// Every kube-proxy field and flag is honoured or refused: a field tundra cannot honour (ipvs scheduler, winkernel,
// featureGates, ...) is an error naming it when set to anything but its zero value; the few whose effect already holds
// here (ipvs.strictARP, logging.options) are accepted with a warning that says why. A field kube-proxy does not have is
// an error, as a typo must not silently become a default. Durations are Go durations ("30s", "1h0m0s").
//
// Split along its jobs: schema.ts (the fields and the walker), goduration.ts (durations), flags.ts (the flag table).
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { parseAllDocuments } from 'yaml'
import { canonicalCIDR } from '../k8s/ip'
import { ipFamily, splitHostPort } from '../wire/addr'
import { DEFAULT_TIMEOUTS } from '../nat/conntrack'
import { connectOptions, type ConnectConfig } from '../nat/failover'
import type { ConntrackTimeouts } from '../nat/conntrack'
import type { SchedulerName } from '../nat/sched'
import { formatGoDuration } from './goduration'
import { ConfigError, SCHEMA, describe, splitList, walk, type ConfigIssue, type Ctx } from './schema'
import { flagValueRefusal, parseFlag, RUN_FLAGS, type RunFlags } from './flags'

export type { ConfigIssue } from './schema'
export type { FlagSpec, FlagGroup, RunFlags } from './flags'

export const KUBE_PROXY_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1'
export const KUBE_PROXY_KIND = 'KubeProxyConfiguration'

// ---- the resolved configuration ------------------------------------------------------------------------------

export type DetectLocalMode = 'ClusterCIDR' | 'NodeCIDR'

export interface RunConfig {
  /** the config file, if one was read */
  readonly file?: string
  /** '' = in-cluster service account (clientConnection.kubeconfig / --kubeconfig) */
  readonly kubeconfig: string
  /** '' = the host name (lower-cased, as kube-proxy does): see nodeNameOf */
  readonly hostnameOverride: string
  /** overrides the node's primary IP; '0.0.0.0' / '::' = take it from the Node object */
  readonly bindAddress: string
  readonly bindAddressHardFail: boolean
  /** informational: which kube-proxy section the sync periods came from */
  readonly mode: string
  /** pod CIDRs of the cluster (clusterCIDR, comma-separated in the file) */
  readonly clusterCIDRs: readonly string[]
  readonly detectLocalMode: DetectLocalMode
  /** CIDRs and the keywords 'primary', 'all', 'localhost' (see resolveNodePortAddresses); [] = all node IPs */
  readonly nodePortAddresses: readonly string[]
  readonly masqueradeAll: boolean
  /** iptables/nftables.masqueradeBit: the mark bit of the dumped rules (default 14) */
  readonly masqueradeBit: number
  /** iptables.localhostNodePorts (default true): NodePorts also answer on 127.0.0.1 (IPv4) */
  readonly localhostNodePorts: boolean
  /** logging: text or JSON lines (src/daemon/log.ts); verbosity gates lines above level 0 */
  readonly logging: { readonly format: 'text' | 'json'; readonly verbosity: number }
  /** oomScoreAdj: written to /proc/self/oom_score_adj at start; undefined = left as it is */
  readonly oomScoreAdj?: number
  /** --cleanup: remove what tundra set up on the node and exit */
  readonly cleanup: boolean
  /** --master: the API server's address, replacing the kubeconfig's or the in-cluster one ('' = theirs) */
  readonly master: string
  /** seconds */
  readonly syncPeriod: number
  readonly minSyncPeriod: number
  readonly configSyncPeriod: number
  /** host:port */
  readonly metricsBindAddress: string
  readonly healthzBindAddress: string
  readonly conntrack: {
    readonly maxPerCore: number
    readonly min: number
    /** max(maxPerCore x CPUs, min); 0 when maxPerCore is 0 (kube-proxy: leave the limit alone -> engine default) */
    readonly max: number
    /** seconds */
    readonly tcpEstablishedTimeout: number
    readonly tcpCloseWaitTimeout: number
    readonly udpTimeout: number
    readonly udpStreamTimeout: number
    /** out-of-window TCP is not INVALID (maps to the NAT engine's invalid: 'pass') */
    readonly tcpBeLiberal: boolean
  }
  /** the ipvs section as given (seconds; 0 / '' = unset); used in mode ipvs only (ipvsEffects, conntrackTimeoutsOf) */
  readonly ipvs: {
    readonly scheduler: string
    readonly tcpTimeout: number
    readonly tcpFinTimeout: number
    readonly udpTimeout: number
    readonly excludeCIDRs: readonly string[]
  }
  readonly tundra: TundraSection
  readonly warnings: readonly string[]
}

export interface TundraSection {
  readonly tun: {
    readonly name: string
    readonly queues: number
    readonly offloads: boolean
    /** who reads the TUN (TunOptions.io) and how long the inline reader keeps polling after a packet */
    readonly io: 'thread' | 'inline'
    readonly busyPollUs: number
    /** packet threads, one TUN queue each (AgentConfig tun.packetThreads) */
    readonly packetThreads: number
  }
  readonly dns: {
    readonly zone: string
    readonly ip: string
    /** [] = the nameservers of /etc/resolv.conf */
    readonly upstreams: readonly string[]
    readonly ttl: number
  }
  readonly lb: 'random' | 'maglev'
  /** endpoint scheduler of every Service without a tundra.io/scheduler label: tundra.scheduler, else in mode ipvs
   *  ipvs.scheduler (default rr, as kube-proxy), else mh for lb maglev, else random */
  readonly scheduler: SchedulerName
  readonly icmp: 'reply' | 'reject' | 'drop'
  /** ICMP errors tundra sends: at most `burst` at once, refilled at `perSecond`; undefined = the agent's default
   *  (Linux's icmp_msgs_per_sec / icmp_msgs_burst) */
  readonly icmpRateLimit?: { readonly perSecond: number; readonly burst: number }
  /** conntrack + affinity state kept across restarts; path '' = off, intervalSeconds 0 = only at shutdown */
  readonly snapshot: { readonly path: string; readonly intervalSeconds: number }
  /** connect tracking (nat/failover.ts ConnectConfig, seconds): failover and ejection off, signals on by default */
  readonly failover?: ConnectConfig['failover']
  readonly outlierEjection?: ConnectConfig['outlierEjection']
  readonly signals?: ConnectConfig['signals']
  /** the live web view (src/web); addr '' = off; loopback only unless allowRemote */
  readonly web: { readonly addr: string; readonly allowRemote: boolean }
  /** Service CIDRs, routed into the TUN for the node's own processes */
  readonly serviceCIDRs: readonly string[]
  /** interface on the node network whose ingress (NodePorts) is steered into the TUN; '' = the default route's */
  readonly uplink: string
  /** control socket of `tundra dump|trace|conntrack` */
  readonly control: string
}

type DeepPartial<T> = {
  -readonly [K in keyof T]?: (T[K] extends readonly unknown[] ? T[K] : T[K] extends object ? DeepPartial<T[K]> : T[K]) | undefined
}

/** What a file or the flags set: only the fields given (no defaults yet). */
export type RunConfigInput = DeepPartial<Omit<RunConfig, 'warnings' | 'file'>>

export interface ParsedKubeProxyConfig {
  readonly file: string
  readonly input: RunConfigInput
  readonly warnings: readonly string[]
}

// ---- file -> input -----------------------------------------------------------------------------------------------

type Raw = Record<string, unknown>
const sub = (r: Raw | undefined, k: string): Raw | undefined => r?.[k] as Raw | undefined
const num = (r: Raw | undefined, k: string): number | undefined => r?.[k] as number | undefined
const text = (r: Raw | undefined, k: string): string | undefined => r?.[k] as string | undefined
const flag = (r: Raw | undefined, k: string): boolean | undefined => r?.[k] as boolean | undefined
/** a Go zero value means "use the default" in kube-proxy's defaulting: unset */
const nz = <T>(v: T | undefined): T | undefined => (v === 0 || v === '' ? undefined : v)

/** Drops undefined members so exactOptionalPropertyTypes holds and merges see only what was set. */
function clean<T>(v: T): T {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v
  const out: Record<string, unknown> = {}
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (x === undefined) continue
    const c = clean(x)
    if (c !== null && typeof c === 'object' && !Array.isArray(c) && Object.keys(c).length === 0) continue
    out[k] = c
  }
  return out as T
}

export function parseKubeProxyConfig(textIn: string, file = 'kube-proxy.yaml'): ParsedKubeProxyConfig {
  const issues: ConfigIssue[] = []
  const docs = parseAllDocuments(textIn, { version: '1.1' })
  const values: unknown[] = []
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new ConfigError([{ file, field: '', message: `invalid YAML: ${(doc.errors[0]?.message ?? '').split('\n')[0]}` }])
    const v: unknown = doc.toJS()
    if (v !== null && v !== undefined) values.push(v)
  }
  if (values.length !== 1) throw new ConfigError([{ file, field: '', message: `expected one ${KUBE_PROXY_KIND} document, found ${values.length}` }])
  const root = values[0]
  if (typeof root !== 'object' || root === null || Array.isArray(root))
    throw new ConfigError([{ file, field: '', message: `expected a ${KUBE_PROXY_KIND} mapping, got ${describe(root)}` }])
  const ctx: Ctx = { issues, warnings: [], file }
  const r = walk(root, SCHEMA, '', ctx) as Raw
  const rootRaw = root as Raw
  if (rootRaw['kind'] !== KUBE_PROXY_KIND)
    issues.push({ file, field: 'kind', message: `expected ${KUBE_PROXY_KIND}, got ${describe(rootRaw['kind'] ?? null)}` })
  if (rootRaw['apiVersion'] !== KUBE_PROXY_API_VERSION)
    issues.push({ file, field: 'apiVersion', message: `expected ${KUBE_PROXY_API_VERSION}, got ${describe(rootRaw['apiVersion'] ?? null)}` })

  const mode = text(r, 'mode') ?? ''
  if (mode === 'kernelspace') issues.push({ file, field: 'mode', message: 'kernelspace is the Windows proxy; tundra runs on Linux' })
  // kube-proxy reads the sync periods (and masqueradeAll) from the section of its mode
  const section = mode === 'nftables' ? 'nftables' : mode === 'ipvs' ? 'ipvs' : 'iptables'
  const syncSec = sub(r, section)
  const masqSec = mode === 'nftables' ? sub(r, 'nftables') : sub(r, 'iptables')
  const dlm = text(r, 'detectLocalMode')
  if (dlm === 'BridgeInterface' || dlm === 'InterfaceNamePrefix') {
    issues.push({
      file,
      field: 'detectLocalMode',
      message: `${dlm} is not supported: all pod traffic reaches tundra through one TUN (use ClusterCIDR or NodeCIDR)`,
    })
  }
  const logging = sub(r, 'logging')
  const ct = sub(r, 'conntrack')
  const t = sub(r, 'tundra')
  const cidr = text(r, 'clusterCIDR')
  const scidr = text(t, 'serviceCIDR')
  const input: RunConfigInput = {
    kubeconfig: nz(text(sub(r, 'clientConnection'), 'kubeconfig')),
    hostnameOverride: nz(text(r, 'hostnameOverride')),
    bindAddress: nz(text(r, 'bindAddress')),
    bindAddressHardFail: flag(r, 'bindAddressHardFail'),
    mode: nz(mode),
    clusterCIDRs: cidr === undefined || cidr === '' ? undefined : splitList(cidr),
    detectLocalMode: dlm === 'ClusterCIDR' || dlm === 'NodeCIDR' ? dlm : undefined,
    nodePortAddresses: r['nodePortAddresses'] as string[] | undefined,
    masqueradeAll: flag(masqSec, 'masqueradeAll'),
    masqueradeBit: num(masqSec, 'masqueradeBit'),
    localhostNodePorts: flag(sub(r, 'iptables'), 'localhostNodePorts'),
    logging: { format: text(logging, 'format') === 'json' ? 'json' : undefined, verbosity: num(logging, 'verbosity') },
    oomScoreAdj: num(r, 'oomScoreAdj'),
    syncPeriod: nz(num(syncSec, 'syncPeriod')),
    minSyncPeriod: nz(num(syncSec, 'minSyncPeriod')),
    configSyncPeriod: nz(num(r, 'configSyncPeriod')),
    metricsBindAddress: nz(text(r, 'metricsBindAddress')),
    healthzBindAddress: nz(text(r, 'healthzBindAddress')),
    conntrack: {
      // pointers in kube-proxy: an explicit 0 is kept (maxPerCore 0 = leave the limit as it is)
      maxPerCore: num(ct, 'maxPerCore'),
      min: num(ct, 'min'),
      tcpEstablishedTimeout: nz(num(ct, 'tcpEstablishedTimeout')),
      tcpCloseWaitTimeout: nz(num(ct, 'tcpCloseWaitTimeout')),
      udpTimeout: nz(num(ct, 'udpTimeout')),
      udpStreamTimeout: nz(num(ct, 'udpStreamTimeout')),
      tcpBeLiberal: flag(ct, 'tcpBeLiberal'),
    },
    ipvs: {
      scheduler: nz(text(sub(r, 'ipvs'), 'scheduler')),
      tcpTimeout: nz(num(sub(r, 'ipvs'), 'tcpTimeout')),
      tcpFinTimeout: nz(num(sub(r, 'ipvs'), 'tcpFinTimeout')),
      udpTimeout: nz(num(sub(r, 'ipvs'), 'udpTimeout')),
      excludeCIDRs: sub(r, 'ipvs')?.['excludeCIDRs'] as string[] | undefined,
    },
    tundra: {
      tun: {
        name: nz(text(sub(t, 'tun'), 'name')),
        queues: num(sub(t, 'tun'), 'queues'),
        offloads: flag(sub(t, 'tun'), 'offloads'),
        io: text(sub(t, 'tun'), 'io') as 'thread' | 'inline' | undefined,
        busyPollUs: num(sub(t, 'tun'), 'busyPollUs'),
        packetThreads: num(sub(t, 'tun'), 'packetThreads'),
      },
      dns: {
        zone: nz(text(sub(t, 'dns'), 'zone')),
        ip: nz(text(sub(t, 'dns'), 'ip')),
        upstreams: sub(t, 'dns')?.['upstreams'] as string[] | undefined,
        ttl: num(sub(t, 'dns'), 'ttl'),
      },
      lb: text(t, 'lb') as 'random' | 'maglev' | undefined,
      scheduler: text(t, 'scheduler') as SchedulerName | undefined,
      icmp: text(t, 'icmp') as 'reply' | 'reject' | 'drop' | undefined,
      // either half may be left out (icmpRateLimitOf fills it in)
      icmpRateLimit: { perSecond: num(sub(t, 'icmpRateLimit'), 'perSecond'), burst: num(sub(t, 'icmpRateLimit'), 'burst') } as TundraSection['icmpRateLimit'],
      snapshot: { path: text(sub(t, 'snapshot'), 'path'), intervalSeconds: num(sub(t, 'snapshot'), 'intervalSeconds') },
      failover: sub(t, 'failover') as TundraSection['failover'],
      outlierEjection: sub(t, 'outlierEjection') as TundraSection['outlierEjection'],
      signals: sub(t, 'signals') as TundraSection['signals'],
      web: { addr: text(sub(t, 'web'), 'addr'), allowRemote: flag(sub(t, 'web'), 'allowRemote') },
      serviceCIDRs: scidr === undefined || scidr === '' ? undefined : splitList(scidr),
      uplink: text(t, 'uplink'),
      control: nz(text(t, 'control')),
    },
  }
  if (issues.length > 0) throw new ConfigError(issues)
  return { file, input: clean(input), warnings: ctx.warnings }
}

export function readKubeProxyConfig(path: string): ParsedKubeProxyConfig {
  let body: string
  try {
    body = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError([{ file: path, field: '', message: `cannot read: ${(err as Error).message}` }])
  }
  return parseKubeProxyConfig(body, path)
}

// ---- flags over the file ---------------------------------------------------------------------------------------

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.')
  let o = target
  for (const p of parts.slice(0, -1)) {
    const next = o[p]
    if (next === undefined || next === null || typeof next !== 'object') o[p] = {}
    o = o[p] as Record<string, unknown>
  }
  o[parts[parts.length - 1]!] = value
}

function deepMerge(a: unknown, b: unknown): unknown {
  if (b === undefined) return a
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object' || Array.isArray(a) || Array.isArray(b)) return b
  const out: Record<string, unknown> = { ...(a as Record<string, unknown>) }
  for (const [k, v] of Object.entries(b as Record<string, unknown>)) out[k] = deepMerge(out[k], v)
  return out
}

export interface ResolveOptions {
  /** CPUs for conntrack.max (default os.availableParallelism()) */
  readonly cpus?: number
}

/**
 * The configuration tundra runs with: the file (if any), overridden by the flags that were given (keys as
 * commander names them: RUN_FLAGS[].key; undefined = not given), then defaults. Throws ConfigError naming the flag.
 */
export function mergeFlags(file: ParsedKubeProxyConfig | undefined, flags: RunFlags, opts: ResolveOptions = {}): RunConfig {
  const issues: ConfigIssue[] = []
  const warnings = [...(file?.warnings ?? [])]
  const fromFlags: Record<string, unknown> = {}
  for (const spec of RUN_FLAGS) {
    const v = flags[spec.key]
    if (v === undefined) continue
    if (spec.refused !== undefined) {
      if (v !== false && v !== '') issues.push({ field: spec.flag, message: `not supported: ${spec.refused}` })
      continue
    }
    const r = parseFlag(spec, v)
    if (r.error !== undefined) {
      issues.push({ field: spec.flag, message: r.error })
      continue
    }
    if (spec.ignored !== undefined) {
      warnings.push(`${spec.flag} has no effect (${spec.ignored})`)
      continue
    }
    const refusal = flagValueRefusal(spec, r.value)
    if (refusal !== undefined) {
      issues.push({ field: spec.flag, message: refusal })
      continue
    }
    if (file !== undefined && spec.group === 'kube-proxy') {
      warnings.push(
        `${spec.flag} is ignored: with --config, kube-proxy takes ${spec.field ?? spec.path} from the file (only logging flags and --hostname-override override it); set it in ${file.file}`,
      )
      continue
    }
    setPath(fromFlags, spec.path, r.value)
  }
  if (issues.length > 0) throw new ConfigError(issues)
  const input = deepMerge(file?.input ?? {}, fromFlags) as RunConfigInput
  return resolveRunConfig(input, { ...opts, warnings, ...(file !== undefined ? { file: file.file } : {}) })
}

/** kube-proxy's AppendPortIfNeeded: a bare IP gets the default port. */
function withPort(addr: string, port: number): string {
  if (splitHostPort(addr) !== undefined) return addr
  const fam = ipFamily(addr)
  if (fam === 6) return `[${addr}]:${port}`
  if (fam === 4) return `${addr}:${port}`
  return addr
}

export function resolveRunConfig(input: RunConfigInput, opts: ResolveOptions & { warnings?: readonly string[]; file?: string } = {}): RunConfig {
  const issues: ConfigIssue[] = []
  const where = opts.file
  const bindAddress = input.bindAddress ?? '0.0.0.0'
  const v6 = ipFamily(bindAddress) === 6
  const metrics = withPort(input.metricsBindAddress ?? (v6 ? '[::1]:10249' : '127.0.0.1:10249'), 10249)
  const healthz = withPort(input.healthzBindAddress ?? (v6 ? '[::]:10256' : '0.0.0.0:10256'), 10256)
  for (const [field, v] of [
    ['metricsBindAddress', metrics],
    ['healthzBindAddress', healthz],
  ] as const) {
    if (splitHostPort(v) === undefined)
      issues.push({ ...(where !== undefined ? { file: where } : {}), field, message: `expected an address like "0.0.0.0:10256", got ${JSON.stringify(v)}` })
  }
  const syncPeriod = input.syncPeriod ?? 30
  const minSyncPeriod = input.minSyncPeriod ?? 1
  if (!(syncPeriod > 0)) issues.push({ field: 'iptables.syncPeriod', message: 'must be greater than 0' })
  if (minSyncPeriod > syncPeriod) {
    issues.push({
      ...(where !== undefined ? { file: where } : {}),
      field: 'iptables.syncPeriod',
      message: `must be greater than or equal to minSyncPeriod (${formatGoDuration(minSyncPeriod)})`,
    })
  }
  if (issues.length > 0) throw new ConfigError(issues)

  const c = input.conntrack ?? {}
  const maxPerCore = c.maxPerCore ?? 32 * 1024
  const min = c.min ?? 128 * 1024
  const cpus = opts.cpus ?? availableParallelism()
  const t = input.tundra ?? {}
  const warnings = [...(opts.warnings ?? [])]
  const npa = input.nodePortAddresses ?? []
  const mode = input.mode ?? ''
  const ipvs = {
    scheduler: input.ipvs?.scheduler ?? '',
    tcpTimeout: input.ipvs?.tcpTimeout ?? 0,
    tcpFinTimeout: input.ipvs?.tcpFinTimeout ?? 0,
    udpTimeout: input.ipvs?.udpTimeout ?? 0,
    excludeCIDRs: (input.ipvs?.excludeCIDRs ?? []).map(x => canonicalCIDR(x) ?? x),
  }
  if (mode !== 'ipvs') {
    for (const [field, set] of [
      ['scheduler', ipvs.scheduler !== ''],
      ['tcpTimeout', ipvs.tcpTimeout > 0],
      ['tcpFinTimeout', ipvs.tcpFinTimeout > 0],
      ['udpTimeout', ipvs.udpTimeout > 0],
      ['excludeCIDRs', ipvs.excludeCIDRs.length > 0],
    ] as const) {
      if (set)
        warnings.push(`ipvs.${field} has no effect (kube-proxy reads the ipvs section in mode ipvs only; tundra.scheduler and conntrack.* apply in any mode)`)
    }
  }
  const lb = t.lb ?? 'random'
  const scheduler: SchedulerName =
    t.scheduler !== undefined
      ? t.scheduler === ('maglev' as string)
        ? 'mh'
        : t.scheduler
      : mode === 'ipvs'
        ? ((ipvs.scheduler || 'rr') as SchedulerName)
        : lb === 'maglev'
          ? 'mh'
          : 'random'
  if (npa.includes('localhost')) warnings.push('nodePortAddresses: localhost is ignored: loopback traffic never reaches the TUN')
  return {
    ...(opts.file !== undefined ? { file: opts.file } : {}),
    kubeconfig: input.kubeconfig ?? '',
    hostnameOverride: (input.hostnameOverride ?? '').trim(),
    bindAddress,
    bindAddressHardFail: input.bindAddressHardFail ?? false,
    mode,
    clusterCIDRs: (input.clusterCIDRs ?? []).map(x => canonicalCIDR(x) ?? x),
    detectLocalMode: input.detectLocalMode ?? 'ClusterCIDR',
    nodePortAddresses: npa,
    masqueradeAll: input.masqueradeAll ?? false,
    masqueradeBit: input.masqueradeBit ?? 14,
    localhostNodePorts: input.localhostNodePorts ?? true,
    logging: { format: input.logging?.format ?? 'text', verbosity: input.logging?.verbosity ?? 0 },
    ...(input.oomScoreAdj !== undefined ? { oomScoreAdj: input.oomScoreAdj } : {}),
    cleanup: input.cleanup ?? false,
    master: input.master ?? '',
    syncPeriod,
    minSyncPeriod,
    configSyncPeriod: input.configSyncPeriod ?? 15 * 60,
    metricsBindAddress: metrics,
    healthzBindAddress: healthz,
    conntrack: {
      maxPerCore,
      min,
      max: maxPerCore === 0 ? 0 : Math.max(maxPerCore * cpus, min),
      tcpEstablishedTimeout: c.tcpEstablishedTimeout ?? 24 * 3600,
      tcpCloseWaitTimeout: c.tcpCloseWaitTimeout ?? 3600,
      // kube-proxy leaves these to the kernel when unset; tundra's engine defaults are the kernel's
      udpTimeout: c.udpTimeout ?? DEFAULT_TIMEOUTS.udp,
      udpStreamTimeout: c.udpStreamTimeout ?? DEFAULT_TIMEOUTS.udpStream,
      tcpBeLiberal: c.tcpBeLiberal ?? false,
    },
    ipvs,
    tundra: {
      tun: {
        name: t.tun?.name ?? 'tundra0',
        queues: t.tun?.queues ?? 1,
        offloads: t.tun?.offloads ?? true,
        io: t.tun?.io ?? 'inline',
        busyPollUs: t.tun?.busyPollUs ?? 100,
        packetThreads: t.tun?.packetThreads ?? 1,
      },
      dns: {
        zone: (t.dns?.zone ?? 'cluster.local').replace(/\.$/, ''),
        ip: t.dns?.ip ?? '10.96.0.10',
        upstreams: t.dns?.upstreams ?? [],
        ttl: t.dns?.ttl ?? 5,
      },
      lb,
      scheduler,
      // mode ipvs: kube-proxy (1.27+) REJECTs new traffic to a kube-ipvs0 address that no service port takes, echo
      // requests included (KUBE-IPVS-FILTER), so a ClusterIP answers ping with port unreachable
      icmp: t.icmp ?? (mode === 'ipvs' ? 'reject' : 'reply'),
      ...icmpRateLimitOf(t.icmpRateLimit),
      snapshot: { path: t.snapshot?.path ?? '', intervalSeconds: t.snapshot?.intervalSeconds ?? 0 },
      ...connectOf(t, t.tun?.packetThreads ?? 1),
      web: { addr: t.web?.addr ?? '', allowRemote: t.web?.allowRemote ?? false },
      serviceCIDRs: (t.serviceCIDRs ?? ['10.96.0.0/12']).map(x => canonicalCIDR(x) ?? x),
      uplink: t.uplink ?? '',
      control: t.control ?? '/run/tundra/control.sock',
    },
    warnings,
  }
}

/** The connect-tracking sections as given, checked now (a bad value is a config error, not an agent failure). */
function connectOf(t: RunConfigInput['tundra'] & object, packetThreads: number): Pick<TundraSection, 'failover' | 'outlierEjection' | 'signals'> {
  const c = {
    ...(t.failover ? { failover: t.failover } : {}),
    ...(t.outlierEjection ? { outlierEjection: t.outlierEjection } : {}),
    ...(t.signals ? { signals: t.signals } : {}),
  }
  try {
    connectOptions(c, packetThreads)
  } catch (err) {
    throw new ConfigError([{ field: 'tundra', message: (err as Error).message }])
  }
  return c
}

/** Linux's defaults (net.ipv4.icmp_msgs_per_sec, icmp_msgs_burst), for the half of icmpRateLimit a file leaves out */
const LINUX_ICMP_MSGS_PER_SEC = 1000
const LINUX_ICMP_MSGS_BURST = 50

function icmpRateLimitOf(r: { perSecond?: number | undefined; burst?: number | undefined } | undefined): Pick<TundraSection, 'icmpRateLimit'> {
  if (r?.perSecond === undefined && r?.burst === undefined) return {}
  return { icmpRateLimit: { perSecond: r.perSecond ?? LINUX_ICMP_MSGS_PER_SEC, burst: r.burst ?? LINUX_ICMP_MSGS_BURST } }
}

/**
 * The conntrack timeouts of the NAT engine: conntrack.*, and in mode ipvs the ipvs section's (ipvsadm --set tcp
 * tcpfin udp) where set, since there the IPVS connection table is what times out a Service's connections.
 */
export function conntrackTimeoutsOf(cfg: RunConfig): Partial<ConntrackTimeouts> {
  const ipvs = cfg.mode === 'ipvs' ? cfg.ipvs : { tcpTimeout: 0, tcpFinTimeout: 0, udpTimeout: 0 }
  return {
    tcpEstablished: ipvs.tcpTimeout || cfg.conntrack.tcpEstablishedTimeout,
    tcpCloseWait: cfg.conntrack.tcpCloseWaitTimeout,
    udp: ipvs.udpTimeout || cfg.conntrack.udpTimeout,
    udpStream: ipvs.udpTimeout || cfg.conntrack.udpStreamTimeout,
    ...(ipvs.tcpFinTimeout > 0 ? { tcpFinWait: ipvs.tcpFinTimeout } : {}),
  }
}

/** kube-proxy's node name: --hostname-override, else the host name, trimmed and lower-cased. */
export function nodeNameOf(cfg: RunConfig, hostname: string): string {
  return (cfg.hostnameOverride !== '' ? cfg.hostnameOverride : hostname).trim().toLowerCase()
}

/**
 * nodePortAddresses as CIDRs for NatConfig: 'primary' becomes the node's own IPs, 'all' everything; 'localhost'
 * is dropped (loopback never reaches the TUN). [] stays [] (= every node IP).
 */
export function resolveNodePortAddresses(list: readonly string[], nodeIPs: readonly string[]): string[] {
  const out: string[] = []
  for (const x of list) {
    if (x === 'primary') for (const ip of nodeIPs) out.push(ipFamily(ip) === 6 ? `${ip}/128` : `${ip}/32`)
    else if (x === 'all') out.push('0.0.0.0/0', '::/0')
    else if (x !== 'localhost') out.push(x)
  }
  return [...new Set(out)]
}

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
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { isIP } from 'node:net'
import { parseAllDocuments } from 'yaml'
import { canonicalCIDR } from '../k8s/ip'
import { DEFAULT_TIMEOUTS } from '../nat/conntrack'
import { parseServer } from '../dns/upstream'

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
  readonly tundra: TundraSection
  readonly warnings: readonly string[]
}

export interface TundraSection {
  readonly tun: {
    readonly name: string; readonly queues: number; readonly offloads: boolean
    /** who reads the TUN (TunOptions.io) and how long the inline reader keeps polling after a packet */
    readonly io: 'thread' | 'inline'; readonly busyPollUs: number
  }
  readonly dns: {
    readonly zone: string
    readonly ip: string
    /** [] = the nameservers of /etc/resolv.conf */
    readonly upstreams: readonly string[]
    readonly ttl: number
  }
  readonly lb: 'random' | 'maglev'
  readonly icmp: 'reply' | 'reject' | 'drop'
  /** conntrack + affinity state kept across restarts; path '' = off, intervalSeconds 0 = only at shutdown */
  readonly snapshot: { readonly path: string; readonly intervalSeconds: number }
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

export interface ConfigIssue {
  readonly file?: string
  readonly field: string
  readonly message: string
}

export class ConfigError extends Error {
  constructor(readonly issues: readonly ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'))
    this.name = 'ConfigError'
  }
}

function formatIssue(i: ConfigIssue): string {
  return `${i.file !== undefined ? `${i.file}: ` : ''}${i.field !== '' ? `${i.field}: ` : ''}${i.message}`
}

// ---- Go durations --------------------------------------------------------------------------------------------

const UNIT_SECONDS: Readonly<Record<string, number>> = { ns: 1e-9, us: 1e-6, 'µs': 1e-6, 'μs': 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 }

/** Go's time.ParseDuration, in seconds; undefined when it is not one. */
export function parseGoDuration(text: string): number | undefined {
  let s = text
  let sign = 1
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s[0] === '-') sign = -1
    s = s.slice(1)
  }
  if (s === '0') return 0
  if (s === '') return undefined
  const re = /(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/y
  let total = 0
  let pos = 0
  while (pos < s.length) {
    re.lastIndex = pos
    const m = re.exec(s)
    if (m === null) return undefined
    total += Number(m[1]) * UNIT_SECONDS[m[2]!]!
    pos = re.lastIndex
  }
  return sign * total
}

/** Seconds as Go prints a duration ("1h0m0s", "30s", "1.5s"). */
export function formatGoDuration(seconds: number): string {
  if (seconds === 0) return '0s'
  const neg = seconds < 0
  let s = Math.abs(seconds)
  if (s < 1) return `${neg ? '-' : ''}${+(s * 1000).toFixed(6)}ms`
  const h = Math.floor(s / 3600)
  s -= h * 3600
  const m = Math.floor(s / 60)
  s = +(s - m * 60).toFixed(9)
  const out = h > 0 ? `${h}h${m}m${s}s` : m > 0 ? `${m}m${s}s` : `${s}s`
  return (neg ? '-' : '') + out
}

// ---- schema ----------------------------------------------------------------------------------------------------

type Check = (v: string) => string | undefined

type Spec = (
  | { readonly k: 'string'; readonly enum?: readonly string[]; readonly check?: Check }
  | { readonly k: 'bool' }
  | { readonly k: 'int'; readonly min?: number; readonly max?: number }
  | { readonly k: 'float' }
  | { readonly k: 'duration' }
  | { readonly k: 'list'; readonly check?: Check }
  | { readonly k: 'boolMap' }
  | { readonly k: 'any' }
  | { readonly k: 'object'; readonly fields: Readonly<Record<string, Spec>> }
) & {
  /** known to kube-proxy, its effect already holds here: accepted, and a warning saying why when set */
  readonly ignored?: string
  /** known to kube-proxy, not implemented: an error naming the field when set to anything but its zero value */
  readonly refused?: string
}

const checkIP: Check = v => (isIP(v) === 0 ? `expected an IP address, got ${JSON.stringify(v)}` : undefined)
const checkCIDRs: Check = v => {
  for (const c of v.split(',').map(x => x.trim()).filter(x => x !== '')) {
    if (canonicalCIDR(c) === undefined) return `expected CIDRs separated by commas, got ${JSON.stringify(v)}`
  }
  return undefined
}
/** ip:port, or a bare IP (the default port is added, as kube-proxy does) */
const checkHostPort: Check = v => (splitHostPort(v) === undefined && isIP(v) === 0 ? `expected an address like "0.0.0.0:10256", got ${JSON.stringify(v)}` : undefined)
const checkNodePortAddress: Check = v =>
  (['primary', 'all', 'localhost'].includes(v) || canonicalCIDR(v) !== undefined ? undefined : `expected a CIDR or one of primary, all, localhost, got ${JSON.stringify(v)}`)
const checkUpstream: Check = v => {
  try { parseServer(v); return undefined } catch { return `expected an address like "1.1.1.1" or "10.0.0.2:53", got ${JSON.stringify(v)}` }
}
const checkIfName: Check = v => (/^[A-Za-z0-9_.-]{1,15}$/.test(v) ? undefined : `expected an interface name (1-15 letters, digits, "-", "_", "."), got ${JSON.stringify(v)}`)

const str = (extra: Partial<{ enum: readonly string[]; check: Check; refused: string }> = {}): Spec => ({ k: 'string', ...extra })
const bool = (refused?: string): Spec => (refused === undefined ? { k: 'bool' } : { k: 'bool', refused })
const int = (min?: number, max?: number, refused?: string): Spec =>
  ({ k: 'int', ...(min !== undefined ? { min } : {}), ...(max !== undefined ? { max } : {}), ...(refused !== undefined ? { refused } : {}) })
const dur = (refused?: string): Spec => (refused === undefined ? { k: 'duration' } : { k: 'duration', refused })
const obj = (fields: Record<string, Spec>): Spec => ({ k: 'object', fields })

const WINDOWS = 'Windows only; tundra runs on Linux'
const API_CLIENT = "tundra's API client always sends JSON and does not rate-limit"

const SCHEMA: Spec = obj({
  apiVersion: str(),
  kind: str(),
  featureGates: { k: 'boolMap', refused: 'tundra implements no kube-proxy feature gates (it behaves as current kube-proxy with the default gates); remove them' },
  clientConnection: obj({
    kubeconfig: str(),
    acceptContentTypes: str({ refused: API_CLIENT }),
    contentType: str({ refused: API_CLIENT }),
    qps: { k: 'float', refused: API_CLIENT },
    burst: int(undefined, undefined, API_CLIENT),
  }),
  logging: obj({
    format: str({ enum: ['text', 'json'] }),
    verbosity: int(0),
    // output buffering: tundra writes each line at once, which every value of these allows
    flushFrequency: { k: 'any' },
    options: { k: 'any' },
    vmodule: { k: 'any', refused: 'per-file verbosity is not implemented' },
  }),
  hostnameOverride: str(),
  bindAddress: str({ check: checkIP }),
  healthzBindAddress: str({ check: checkHostPort }),
  metricsBindAddress: str({ check: checkHostPort }),
  bindAddressHardFail: bool(),
  enableProfiling: bool('tundra serves no /debug/pprof'),
  showHiddenMetricsForVersion: str({ refused: 'tundra has no hidden metrics' }),
  mode: str({ enum: ['', 'iptables', 'ipvs', 'nftables', 'kernelspace'] }),
  iptables: obj({
    masqueradeBit: int(0, 31),
    masqueradeAll: bool(),
    localhostNodePorts: bool(),
    syncPeriod: dur(),
    minSyncPeriod: dur(),
  }),
  ipvs: obj({
    syncPeriod: dur(),
    minSyncPeriod: dur(),
    scheduler: str({ refused: 'tundra chooses endpoints with tundra.lb (random or maglev)' }),
    excludeCIDRs: { k: 'list', refused: 'tundra owns no IPVS table to exclude addresses from' },
    strictARP: { k: 'bool', ignored: 'tundra binds no Service IP to an interface, so the node never answers ARP for one' },
    tcpTimeout: dur('set conntrack.tcpEstablishedTimeout instead'),
    tcpFinTimeout: dur('tundra keeps the kernel conntrack timeouts for FIN_WAIT'),
    udpTimeout: dur('set conntrack.udpTimeout instead'),
  }),
  nftables: obj({
    masqueradeBit: int(0, 31),
    masqueradeAll: bool(),
    syncPeriod: dur(),
    minSyncPeriod: dur(),
  }),
  winkernel: obj({
    networkName: str({ refused: WINDOWS }),
    sourceVip: str({ refused: WINDOWS }),
    enableDSR: bool(WINDOWS),
    rootHnsEndpointName: str({ refused: WINDOWS }),
    forwardHealthCheckVip: bool(WINDOWS),
  }),
  detectLocalMode: str({ enum: ['', 'ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix'] }),
  detectLocal: obj({
    bridgeInterface: str({ refused: 'detectLocalMode BridgeInterface is not supported' }),
    interfaceNamePrefix: str({ refused: 'detectLocalMode InterfaceNamePrefix is not supported' }),
  }),
  clusterCIDR: str({ check: checkCIDRs }),
  nodePortAddresses: { k: 'list', check: checkNodePortAddress },
  oomScoreAdj: int(-1000, 1000),
  conntrack: obj({
    maxPerCore: int(0),
    min: int(0),
    tcpEstablishedTimeout: dur(),
    tcpCloseWaitTimeout: dur(),
    tcpBeLiberal: bool(),
    udpTimeout: dur(),
    udpStreamTimeout: dur(),
  }),
  configSyncPeriod: dur(),
  portRange: str({ refused: "kube-proxy's userspace mode is gone, and with it portRange" }),
  windowsRunAsService: bool(WINDOWS),
  tundra: obj({
    tun: obj({ name: str({ check: checkIfName }), queues: int(1, 256), offloads: bool(), io: str({ enum: ['thread', 'inline'] }), busyPollUs: int(0, 1000000) }),
    dns: obj({ zone: str(), ip: str({ check: checkIP }), upstreams: { k: 'list', check: checkUpstream }, ttl: int(0, 2147483647) }),
    lb: str({ enum: ['random', 'maglev'] }),
    icmp: str({ enum: ['reply', 'reject', 'drop'] }),
    snapshot: obj({ path: str(), intervalSeconds: int(0) }),
    serviceCIDR: str({ check: checkCIDRs }),
    uplink: str(),
    control: str(),
  }),
})

function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'object') return 'a mapping'
  if (typeof v === 'string') return JSON.stringify(v)
  return String(v)
}

function isSet(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === '') return false
  if (Array.isArray(v)) return v.length > 0
  if (typeof v === 'object') return Object.keys(v as object).length > 0
  return true
}

function editDistance(a: string, b: string): number {
  const d: number[] = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!
    d[0] = i
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j]!
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1))
      prev = tmp
    }
  }
  return d[b.length]!
}

interface Ctx {
  readonly issues: ConfigIssue[]
  readonly warnings: string[]
  readonly file: string
}

/** Checks `v` against `spec`; returns it with durations as seconds, or undefined when absent, null or invalid. */
function walk(v: unknown, spec: Spec, path: string, ctx: Ctx): unknown {
  if (v === undefined || v === null) return undefined // Go decodes null into the zero value
  const bad = (message: string): undefined => {
    ctx.issues.push({ file: ctx.file, field: path, message })
    return undefined
  }
  let out: unknown
  switch (spec.k) {
    case 'string': {
      if (typeof v !== 'string') return bad(`expected a string, got ${describe(v)}`)
      if (spec.enum !== undefined && !spec.enum.includes(v)) return bad(`expected one of ${spec.enum.filter(e => e !== '').join(', ')}, got ${describe(v)}`)
      if (v !== '' && spec.check !== undefined) {
        const e = spec.check(v)
        if (e !== undefined) return bad(e)
      }
      out = v
      break
    }
    case 'bool':
      if (typeof v !== 'boolean') return bad(`expected true or false, got ${describe(v)}`)
      out = v
      break
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v)) return bad(`expected an integer, got ${describe(v)}`)
      if (spec.min !== undefined && v < spec.min) return bad(`must be at least ${spec.min}, got ${v}`)
      if (spec.max !== undefined && v > spec.max) return bad(`must be at most ${spec.max}, got ${v}`)
      out = v
      break
    case 'float':
      if (typeof v !== 'number') return bad(`expected a number, got ${describe(v)}`)
      out = v
      break
    case 'duration': {
      const d = typeof v === 'string' ? parseGoDuration(v) : undefined
      if (d === undefined) return bad(`expected a duration like "30s", got ${describe(v)}`)
      if (d < 0) return bad(`must not be negative, got ${describe(v)}`)
      out = d
      break
    }
    case 'list': {
      if (!Array.isArray(v)) return bad(`expected a list of strings, got ${describe(v)}`)
      const items: string[] = []
      v.forEach((x, i) => {
        if (typeof x !== 'string') { bad(`item ${i}: expected a string, got ${describe(x)}`); return }
        const e = spec.check?.(x)
        if (e !== undefined) { bad(`item ${i}: ${e}`); return }
        items.push(x)
      })
      out = items
      break
    }
    case 'boolMap': {
      if (typeof v !== 'object' || Array.isArray(v)) return bad(`expected a mapping of names to true/false, got ${describe(v)}`)
      for (const [k, x] of Object.entries(v as object)) {
        if (typeof x !== 'boolean') bad(`${k}: expected true or false, got ${describe(x)}`)
      }
      out = v
      break
    }
    case 'any':
      out = v
      break
    case 'object': {
      if (typeof v !== 'object' || Array.isArray(v)) return bad(`expected a mapping, got ${describe(v)}`)
      const res: Record<string, unknown> = {}
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        const sub = spec.fields[k]
        const p = path === '' ? k : `${path}.${k}`
        if (sub === undefined) {
          const near = Object.keys(spec.fields).filter(f => editDistance(f, k) <= 2)
          ctx.issues.push({ file: ctx.file, field: p, message: `unknown field${near.length > 0 ? ` (did you mean ${near.join(' or ')}?)` : ''}` })
          continue
        }
        const r = walk(x, sub, p, ctx)
        if (r !== undefined) res[k] = r
      }
      return res
    }
  }
  if (spec.refused !== undefined && isSet(out)) {
    ctx.issues.push({ file: ctx.file, field: path, message: `${describe(v)} is not supported: ${spec.refused}` })
    return undefined
  }
  if (spec.ignored !== undefined && isSet(out)) ctx.warnings.push(`${ctx.file}: ${path}: ${describe(v)} has no effect (${spec.ignored})`)
  return out
}

// ---- file -> input -----------------------------------------------------------------------------------------------

type Raw = Record<string, unknown>
const sub = (r: Raw | undefined, k: string): Raw | undefined => r?.[k] as Raw | undefined
const num = (r: Raw | undefined, k: string): number | undefined => r?.[k] as number | undefined
const text = (r: Raw | undefined, k: string): string | undefined => r?.[k] as string | undefined
const flag = (r: Raw | undefined, k: string): boolean | undefined => r?.[k] as boolean | undefined
/** a Go zero value means "use the default" in kube-proxy's defaulting: unset */
const nz = <T>(v: T | undefined): T | undefined => (v === 0 || v === '' ? undefined : v)

function splitList(s: string): string[] {
  return s.split(',').map(x => x.trim()).filter(x => x !== '')
}

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
  if (typeof root !== 'object' || root === null || Array.isArray(root)) throw new ConfigError([{ file, field: '', message: `expected a ${KUBE_PROXY_KIND} mapping, got ${describe(root)}` }])
  const ctx: Ctx = { issues, warnings: [], file }
  const r = walk(root, SCHEMA, '', ctx) as Raw
  const rootRaw = root as Raw
  if (rootRaw['kind'] !== KUBE_PROXY_KIND) issues.push({ file, field: 'kind', message: `expected ${KUBE_PROXY_KIND}, got ${describe(rootRaw['kind'] ?? null)}` })
  if (rootRaw['apiVersion'] !== KUBE_PROXY_API_VERSION) issues.push({ file, field: 'apiVersion', message: `expected ${KUBE_PROXY_API_VERSION}, got ${describe(rootRaw['apiVersion'] ?? null)}` })

  const mode = text(r, 'mode') ?? ''
  if (mode === 'kernelspace') issues.push({ file, field: 'mode', message: 'kernelspace is the Windows proxy; tundra runs on Linux' })
  // kube-proxy reads the sync periods (and masqueradeAll) from the section of its mode
  const section = mode === 'nftables' ? 'nftables' : mode === 'ipvs' ? 'ipvs' : 'iptables'
  const syncSec = sub(r, section)
  const masqSec = mode === 'nftables' ? sub(r, 'nftables') : sub(r, 'iptables')
  const dlm = text(r, 'detectLocalMode')
  if (dlm === 'BridgeInterface' || dlm === 'InterfaceNamePrefix') {
    issues.push({ file, field: 'detectLocalMode', message: `${dlm} is not supported: all pod traffic reaches tundra through one TUN (use ClusterCIDR or NodeCIDR)` })
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
    tundra: {
      tun: {
        name: nz(text(sub(t, 'tun'), 'name')), queues: num(sub(t, 'tun'), 'queues'), offloads: flag(sub(t, 'tun'), 'offloads'),
        io: text(sub(t, 'tun'), 'io') as 'thread' | 'inline' | undefined, busyPollUs: num(sub(t, 'tun'), 'busyPollUs'),
      },
      dns: {
        zone: nz(text(sub(t, 'dns'), 'zone')),
        ip: nz(text(sub(t, 'dns'), 'ip')),
        upstreams: sub(t, 'dns')?.['upstreams'] as string[] | undefined,
        ttl: num(sub(t, 'dns'), 'ttl'),
      },
      lb: text(t, 'lb') as 'random' | 'maglev' | undefined,
      icmp: text(t, 'icmp') as 'reply' | 'reject' | 'drop' | undefined,
      snapshot: { path: text(sub(t, 'snapshot'), 'path'), intervalSeconds: num(sub(t, 'snapshot'), 'intervalSeconds') },
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

// ---- flags -------------------------------------------------------------------------------------------------------

type FlagType = 'string' | 'bool' | 'int' | 'signedInt' | 'duration' | 'list' | 'cidrs' | 'ip' | 'hostport' | 'enum'

/**
 * Who wins when a flag and --config both set something (kube-proxy's Options.Complete): with a config file,
 * kube-proxy takes every setting from the file except the logging flags and --hostname-override; tundra's own
 * flags always win over the file's tundra: section.
 */
export type FlagGroup = 'kube-proxy' | 'override' | 'tundra'

export interface FlagSpec {
  /** as typed: "--cluster-cidr" */
  readonly flag: string
  /** a short form ("-v") */
  readonly alias?: string
  /** commander's attribute name for it ("clusterCidr") */
  readonly key: string
  /** placeholder for help ("<cidrs>"); absent for booleans */
  readonly arg?: string
  readonly help: string
  readonly type: FlagType
  readonly values?: readonly string[]
  /** where it lands in RunConfig, dotted ('' for a refused flag) */
  readonly path: string
  readonly group: FlagGroup
  /** the KubeProxyConfiguration field it mirrors, for messages */
  readonly field?: string
  /** a kube-proxy flag tundra does not implement: giving it is an error with this reason */
  readonly refused?: string
}

interface FlagExtra { arg?: string; values?: readonly string[]; group?: FlagGroup; field?: string; alias?: string; refused?: string }

function flagSpec(flag: string, type: FlagType, path: string, help: string, extra: FlagExtra = {}): FlagSpec {
  const key = flag.replace(/^--/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())
  const { group = 'kube-proxy', ...rest } = extra
  return { flag, key, type, path, help, group, ...rest }
}
const kp = (flag: string, type: FlagType, path: string, field: string, help: string, extra: FlagExtra = {}): FlagSpec =>
  flagSpec(flag, type, path, help, { field, ...extra })
const own = (flag: string, type: FlagType, path: string, help: string, extra: FlagExtra = {}): FlagSpec =>
  flagSpec(flag, type, path, help, { group: 'tundra', ...extra })
const refused = (flag: string, reason: string, arg?: string): FlagSpec =>
  flagSpec(flag, arg === undefined ? 'bool' : 'string', '', `not supported: ${reason}`, { refused: reason, ...(arg !== undefined ? { arg } : {}) })

const IPVS = 'tundra is not IPVS: it replaces every proxy mode; see the iptables/nftables flags'

/** kube-proxy's flags (same names, same meaning), the ones tundra refuses, then tundra's own. */
export const RUN_FLAGS: readonly FlagSpec[] = [
  kp('--kubeconfig', 'string', 'kubeconfig', 'clientConnection.kubeconfig', 'kubeconfig file (default: the in-cluster service account)', { arg: '<path>' }),
  flagSpec('--hostname-override', 'string', 'hostnameOverride', 'the name of this Node (default: the host name)', { arg: '<name>', group: 'override', field: 'hostnameOverride' }),
  flagSpec('--v', 'int', 'logging.verbosity', 'log verbosity (kept for /configz: tundra logs what kube-proxy logs at 0)', { arg: '<level>', alias: '-v', group: 'override', field: 'logging.verbosity' }),
  flagSpec('--logging-format', 'enum', 'logging.format', 'log format: text or json (one JSON object per line)', { arg: '<format>', values: ['text', 'json'], group: 'override', field: 'logging.format' }),
  flagSpec('--cleanup', 'bool', 'cleanup', 'remove what tundra set up on this node, then exit', { group: 'override' }),
  kp('--proxy-mode', 'enum', 'mode', 'mode', 'which kube-proxy section the sync periods and masqueradeAll come from: iptables, nftables or ipvs', { arg: '<mode>', values: ['iptables', 'nftables', 'ipvs', 'kernelspace'] }),
  kp('--feature-gates', 'string', 'featureGates', 'featureGates', 'kube-proxy feature gates: none are implemented, so any gate is refused', { arg: '<k=v,...>' }),
  kp('--oom-score-adj', 'signedInt', 'oomScoreAdj', 'oomScoreAdj', "the process's oom_score_adj, -1000..1000 (default: left as it is)", { arg: '<n>' }),
  kp('--bind-address', 'ip', 'bindAddress', 'bindAddress', "overrides the node's primary IP", { arg: '<ip>' }),
  kp('--bind-address-hard-fail', 'bool', 'bindAddressHardFail', 'bindAddressHardFail', 'exit when the metrics or health port cannot be bound (default: log and go on without it)'),
  kp('--cluster-cidr', 'cidrs', 'clusterCIDRs', 'clusterCIDR', 'pod CIDRs of the cluster, comma-separated, one per family', { arg: '<cidrs>' }),
  kp('--detect-local-mode', 'enum', 'detectLocalMode', 'detectLocalMode', "what counts as a local (pod) source: ClusterCIDR, or NodeCIDR (the node's podCIDRs)", { arg: '<mode>', values: ['ClusterCIDR', 'NodeCIDR'] }),
  kp('--nodeport-addresses', 'list', 'nodePortAddresses', 'nodePortAddresses', "CIDRs (or 'primary') of the node IPs that serve NodePorts", { arg: '<cidrs>' }),
  kp('--masquerade-all', 'bool', 'masqueradeAll', 'iptables.masqueradeAll', 'SNAT every connection to a ClusterIP'),
  kp('--iptables-masquerade-bit', 'int', 'masqueradeBit', 'iptables.masqueradeBit', 'the mark bit of the masquerade rules tundra dump writes (0-31, default 14)', { arg: '<bit>' }),
  kp('--iptables-localhost-nodeports', 'bool', 'localhostNodePorts', 'iptables.localhostNodePorts', 'NodePorts also answer on 127.0.0.1 (default true)'),
  kp('--iptables-sync-period', 'duration', 'syncPeriod', 'iptables.syncPeriod', 'full resync at least this often (e.g. 30s)', { arg: '<duration>' }),
  kp('--iptables-min-sync-period', 'duration', 'minSyncPeriod', 'iptables.minSyncPeriod', 'apply changes at most this often (e.g. 1s; 0 = at once)', { arg: '<duration>' }),
  kp('--config-sync-period', 'duration', 'configSyncPeriod', 'configSyncPeriod', 'how often the API objects are listed again in full (default 15m)', { arg: '<duration>' }),
  kp('--conntrack-max-per-core', 'int', 'conntrack.maxPerCore', 'conntrack.maxPerCore', 'tracked connections per CPU (0 = engine default)', { arg: '<n>' }),
  kp('--conntrack-min', 'int', 'conntrack.min', 'conntrack.min', 'tracked connections at least', { arg: '<n>' }),
  kp('--conntrack-tcp-timeout-established', 'duration', 'conntrack.tcpEstablishedTimeout', 'conntrack.tcpEstablishedTimeout', 'idle timeout of established TCP', { arg: '<duration>' }),
  kp('--conntrack-tcp-timeout-close-wait', 'duration', 'conntrack.tcpCloseWaitTimeout', 'conntrack.tcpCloseWaitTimeout', 'timeout of TCP in CLOSE_WAIT', { arg: '<duration>' }),
  kp('--conntrack-tcp-be-liberal', 'bool', 'conntrack.tcpBeLiberal', 'conntrack.tcpBeLiberal', 'do not treat out-of-window TCP as invalid'),
  kp('--conntrack-udp-timeout', 'duration', 'conntrack.udpTimeout', 'conntrack.udpTimeout', 'idle timeout of unreplied UDP', { arg: '<duration>' }),
  kp('--conntrack-udp-timeout-stream', 'duration', 'conntrack.udpStreamTimeout', 'conntrack.udpStreamTimeout', 'idle timeout of replied UDP', { arg: '<duration>' }),
  kp('--metrics-bind-address', 'hostport', 'metricsBindAddress', 'metricsBindAddress', 'where /metrics is served (default 127.0.0.1:10249)', { arg: '<ip:port>' }),
  kp('--healthz-bind-address', 'hostport', 'healthzBindAddress', 'healthzBindAddress', 'where /healthz and /livez are served (default 0.0.0.0:10256)', { arg: '<ip:port>' }),
  refused('--init-only', 'tundra needs no privileged init step (its wiring is done by run itself)'),
  refused('--profiling', 'tundra serves no /debug/pprof'),
  flagSpec('--master', 'string', 'master', "the API server's address, overriding the kubeconfig's or the in-cluster one", { arg: '<url>', group: 'override' }),
  refused('--kube-api-qps', "tundra's API client does not rate-limit", '<qps>'),
  refused('--kube-api-burst', "tundra's API client does not rate-limit", '<n>'),
  refused('--kube-api-content-type', "tundra's API client always sends JSON", '<type>'),
  refused('--healthz-port', 'deprecated in kube-proxy: use --healthz-bind-address ip:port', '<port>'),
  refused('--metrics-port', 'deprecated in kube-proxy: use --metrics-bind-address ip:port', '<port>'),
  refused('--show-hidden-metrics-for-version', 'tundra has no hidden metrics', '<version>'),
  refused('--vmodule', 'per-file verbosity is not implemented', '<pattern>'),
  refused('--pod-bridge-interface', 'detectLocalMode BridgeInterface is not supported', '<name>'),
  refused('--pod-interface-name-prefix', 'detectLocalMode InterfaceNamePrefix is not supported', '<prefix>'),
  refused('--ipvs-scheduler', IPVS, '<name>'),
  refused('--ipvs-sync-period', IPVS, '<duration>'),
  refused('--ipvs-min-sync-period', IPVS, '<duration>'),
  refused('--ipvs-exclude-cidrs', IPVS, '<cidrs>'),
  refused('--ipvs-strict-arp', IPVS),
  refused('--ipvs-tcp-timeout', IPVS, '<duration>'),
  refused('--ipvs-tcpfin-timeout', IPVS, '<duration>'),
  refused('--ipvs-udp-timeout', IPVS, '<duration>'),
  own('--tun', 'string', 'tundra.tun.name', 'TUN device name (default tundra0)', { arg: '<name>' }),
  own('--tun-queues', 'int', 'tundra.tun.queues', 'TUN reader queues (default 1)', { arg: '<n>' }),
  own('--tun-io', 'enum', 'tundra.tun.io', 'who reads the TUN: inline (the JS thread polls it; default) or thread (a native reader thread per queue)', { arg: '<mode>', values: ['inline', 'thread'] }),
  own('--busy-poll-us', 'int', 'tundra.tun.busyPollUs', 'inline reader: µs to keep polling after the last packet before sleeping (default 100; 0 = never)', { arg: '<us>' }),
  own('--dns-ip', 'ip', 'tundra.dns.ip', 'the cluster DNS address tundra answers on (default 10.96.0.10)', { arg: '<ip>' }),
  own('--dns-zone', 'string', 'tundra.dns.zone', 'cluster domain (default cluster.local)', { arg: '<zone>' }),
  own('--dns-upstream', 'list', 'tundra.dns.upstreams', 'upstream resolvers, comma-separated (default: /etc/resolv.conf)', { arg: '<addrs>' }),
  own('--lb', 'enum', 'tundra.lb', 'endpoint choice: random (like kube-proxy) or maglev', { arg: '<mode>', values: ['random', 'maglev'] }),
  own('--icmp', 'enum', 'tundra.icmp', 'echo requests to a ClusterIP: reply, reject or drop', { arg: '<mode>', values: ['reply', 'reject', 'drop'] }),
  own('--service-cidr', 'cidrs', 'tundra.serviceCIDRs', 'Service CIDRs, comma-separated, one per family (default 10.96.0.0/12)', { arg: '<cidrs>' }),
  own('--snapshot', 'string', 'tundra.snapshot.path', 'file that keeps conntrack state across restarts', { arg: '<path>' }),
]

export type RunFlags = Readonly<Record<string, unknown>>

function parseBool(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v
  if (v === 'true' || v === '1') return true
  if (v === 'false' || v === '0') return false
  return undefined
}

function parseFlag(spec: FlagSpec, v: unknown): { value?: unknown; error?: string } {
  // pflag takes "-v=2"; commander hands the short form "=2"
  const s = typeof v === 'string' ? (spec.alias !== undefined ? v.replace(/^=/, '') : v) : undefined
  const list = (): string[] | undefined => (Array.isArray(v) ? v.flatMap(x => splitList(String(x))) : s !== undefined ? splitList(s) : undefined)
  switch (spec.type) {
    case 'bool': {
      const b = parseBool(v)
      return b === undefined ? { error: `expected true or false, got ${describe(v)}` } : { value: b }
    }
    case 'int': {
      const n = typeof v === 'number' ? v : s !== undefined && /^\d+$/.test(s) ? Number(s) : NaN
      return Number.isInteger(n) && n >= 0 ? { value: n } : { error: `expected a whole number, got ${describe(v)}` }
    }
    case 'signedInt': {
      const n = typeof v === 'number' ? v : s !== undefined && /^[+-]?\d+$/.test(s) ? Number(s) : NaN
      return Number.isInteger(n) && n >= -1000 && n <= 1000 ? { value: n } : { error: `expected a whole number from -1000 to 1000, got ${describe(v)}` }
    }
    case 'duration': {
      const d = s === undefined ? undefined : parseGoDuration(s)
      return d === undefined || d < 0 ? { error: `expected a duration like "30s", got ${describe(v)}` } : { value: d }
    }
    case 'cidrs': {
      const l = list()
      const bad = l?.find(c => canonicalCIDR(c) === undefined)
      return l === undefined || bad !== undefined ? { error: `expected CIDRs separated by commas, got ${describe(v)}` } : { value: l }
    }
    case 'list': {
      const l = list()
      if (l === undefined) return { error: `expected a comma-separated list, got ${describe(v)}` }
      const check = spec.path === 'nodePortAddresses' ? checkNodePortAddress : spec.path === 'tundra.dns.upstreams' ? checkUpstream : undefined
      for (const x of l) {
        const e = check?.(x)
        if (e !== undefined) return { error: e }
      }
      return { value: l }
    }
    case 'ip':
      return s !== undefined && isIP(s) !== 0 ? { value: s } : { error: `expected an IP address, got ${describe(v)}` }
    case 'hostport':
      return s !== undefined && checkHostPort(s) === undefined ? { value: s } : { error: `expected an address like "0.0.0.0:10256", got ${describe(v)}` }
    case 'enum':
      return s !== undefined && (spec.values ?? []).includes(s) ? { value: s } : { error: `expected one of ${(spec.values ?? []).join(', ')}, got ${describe(v)}` }
    case 'string':
      return s !== undefined ? { value: s } : { error: `expected a value, got ${describe(v)}` }
  }
}

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
    if (r.error !== undefined) { issues.push({ field: spec.flag, message: r.error }); continue }
    const refusal = flagValueRefusal(spec, r.value)
    if (refusal !== undefined) { issues.push({ field: spec.flag, message: refusal }); continue }
    if (file !== undefined && spec.group === 'kube-proxy') {
      warnings.push(`${spec.flag} is ignored: with --config, kube-proxy takes ${spec.field ?? spec.path} from the file (only logging flags and --hostname-override override it); set it in ${file.file}`)
      continue
    }
    setPath(fromFlags, spec.path, r.value)
  }
  if (issues.length > 0) throw new ConfigError(issues)
  const input = deepMerge(file?.input ?? {}, fromFlags) as RunConfigInput
  return resolveRunConfig(input, { ...opts, warnings, ...(file !== undefined ? { file: file.file } : {}) })
}

/** Flag values kube-proxy accepts that tundra refuses: the same reasons as the file's fields. */
function flagValueRefusal(spec: FlagSpec, value: unknown): string | undefined {
  if (spec.path === 'featureGates' && typeof value === 'string' && value.trim() !== '') {
    return `${JSON.stringify(value)} is not supported: tundra implements no kube-proxy feature gates (it behaves as current kube-proxy with the default gates)`
  }
  if (spec.path === 'mode' && value === 'kernelspace') return 'kernelspace is the Windows proxy; tundra runs on Linux'
  return undefined
}

/** host:port with an IP host ("[::]:10256" for IPv6); undefined when it is not one. */
export function splitHostPort(s: string): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:[\]]+):(\d+)$/.exec(s)
  if (m === null) return undefined
  const host = m[1]!
  const port = Number(m[2])
  if (isIP(host) === 0 || !(port >= 0 && port <= 65535)) return undefined
  return { host, port }
}

/** kube-proxy's AppendPortIfNeeded: a bare IP gets the default port. */
function withPort(addr: string, port: number): string {
  if (splitHostPort(addr) !== undefined) return addr
  const fam = isIP(addr)
  if (fam === 6) return `[${addr}]:${port}`
  if (fam === 4) return `${addr}:${port}`
  return addr
}

export function resolveRunConfig(input: RunConfigInput, opts: ResolveOptions & { warnings?: readonly string[]; file?: string } = {}): RunConfig {
  const issues: ConfigIssue[] = []
  const where = opts.file
  const bindAddress = input.bindAddress ?? '0.0.0.0'
  const v6 = isIP(bindAddress) === 6
  const metrics = withPort(input.metricsBindAddress ?? (v6 ? '[::1]:10249' : '127.0.0.1:10249'), 10249)
  const healthz = withPort(input.healthzBindAddress ?? (v6 ? '[::]:10256' : '0.0.0.0:10256'), 10256)
  for (const [field, v] of [['metricsBindAddress', metrics], ['healthzBindAddress', healthz]] as const) {
    if (splitHostPort(v) === undefined) issues.push({ ...(where !== undefined ? { file: where } : {}), field, message: `expected an address like "0.0.0.0:10256", got ${JSON.stringify(v)}` })
  }
  const syncPeriod = input.syncPeriod ?? 30
  const minSyncPeriod = input.minSyncPeriod ?? 1
  if (!(syncPeriod > 0)) issues.push({ field: 'iptables.syncPeriod', message: 'must be greater than 0' })
  if (minSyncPeriod > syncPeriod) {
    issues.push({ ...(where !== undefined ? { file: where } : {}), field: 'iptables.syncPeriod', message: `must be greater than or equal to minSyncPeriod (${formatGoDuration(minSyncPeriod)})` })
  }
  if (issues.length > 0) throw new ConfigError(issues)

  const c = input.conntrack ?? {}
  const maxPerCore = c.maxPerCore ?? 32 * 1024
  const min = c.min ?? 128 * 1024
  const cpus = opts.cpus ?? availableParallelism()
  const t = input.tundra ?? {}
  const warnings = [...(opts.warnings ?? [])]
  const npa = input.nodePortAddresses ?? []
  if (npa.includes('localhost')) warnings.push('nodePortAddresses: localhost is ignored: loopback traffic never reaches the TUN')
  return {
    ...(opts.file !== undefined ? { file: opts.file } : {}),
    kubeconfig: input.kubeconfig ?? '',
    hostnameOverride: (input.hostnameOverride ?? '').trim(),
    bindAddress,
    bindAddressHardFail: input.bindAddressHardFail ?? false,
    mode: input.mode ?? '',
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
    tundra: {
      tun: {
        name: t.tun?.name ?? 'tundra0', queues: t.tun?.queues ?? 1, offloads: t.tun?.offloads ?? true,
        io: t.tun?.io ?? 'inline', busyPollUs: t.tun?.busyPollUs ?? 100,
      },
      dns: {
        zone: (t.dns?.zone ?? 'cluster.local').replace(/\.$/, ''),
        ip: t.dns?.ip ?? '10.96.0.10',
        upstreams: t.dns?.upstreams ?? [],
        ttl: t.dns?.ttl ?? 5,
      },
      lb: t.lb ?? 'random',
      icmp: t.icmp ?? 'reply',
      snapshot: { path: t.snapshot?.path ?? '', intervalSeconds: t.snapshot?.intervalSeconds ?? 0 },
      serviceCIDRs: (t.serviceCIDRs ?? ['10.96.0.0/12']).map(x => canonicalCIDR(x) ?? x),
      uplink: t.uplink ?? '',
      control: t.control ?? '/run/tundra/control.sock',
    },
    warnings,
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
    if (x === 'primary') for (const ip of nodeIPs) out.push(isIP(ip) === 6 ? `${ip}/128` : `${ip}/32`)
    else if (x === 'all') out.push('0.0.0.0/0', '::/0')
    else if (x !== 'localhost') out.push(x)
  }
  return [...new Set(out)]
}

// The KubeProxyConfiguration schema and its walker: every field kube-proxy has (and tundra's own `tundra:` section),
// each honoured, accepted with a warning saying why it changes nothing here (`ignored`), or refused with the reason
// (`refused`, an error naming the field when set to anything but its zero value). A field kube-proxy does not have is
// an error with the nearest known names as suggestions, as a typo must not silently become a default.
import { canonicalCIDR } from '../k8s/ip'
import { ipFamily, splitHostPort } from '../wire/addr'
import { parseServer } from '../dns/upstream'
import { parseGoDuration } from './goduration'
import { SCHED_NAMES, schedulerId } from '../nat/sched'

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

export type Check = (v: string) => string | undefined

export type Spec = (
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

const checkIP: Check = v => (ipFamily(v) === undefined ? `expected an IP address, got ${JSON.stringify(v)}` : undefined)
const checkCIDRs: Check = v => {
  for (const c of v
    .split(',')
    .map(x => x.trim())
    .filter(x => x !== '')) {
    if (canonicalCIDR(c) === undefined) return `expected CIDRs separated by commas, got ${JSON.stringify(v)}`
  }
  return undefined
}
/** ip:port, or a bare IP (the default port is added, as kube-proxy does) */
export const checkHostPort: Check = v =>
  splitHostPort(v) === undefined && ipFamily(v) === undefined ? `expected an address like "0.0.0.0:10256", got ${JSON.stringify(v)}` : undefined
export const checkNodePortAddress: Check = v =>
  ['primary', 'all', 'localhost'].includes(v) || canonicalCIDR(v) !== undefined
    ? undefined
    : `expected a CIDR or one of primary, all, localhost, got ${JSON.stringify(v)}`
export const checkUpstream: Check = v => {
  try {
    parseServer(v)
    return undefined
  } catch {
    return `expected an address like "1.1.1.1" or "10.0.0.2:53", got ${JSON.stringify(v)}`
  }
}
/** IPVS schedulers tundra does not implement (ip_vs_*.c): naming one is an error, not a silent fallback. */
const IPVS_ONLY = ['dh', 'sed', 'nq', 'lblc', 'lblcr', 'fo', 'ovf', 'twos']
const checkIpvsScheduler: Check = v =>
  v === '' || (v !== 'random' && schedulerId(v) !== undefined)
    ? undefined
    : `${JSON.stringify(v)} is not supported: ${IPVS_ONLY.includes(v) ? "tundra does not implement IPVS's " + v + ' scheduler; it has ' : 'expected one of '}${SCHED_NAMES.filter(n => n !== 'random').join(', ')}`
const checkCIDR: Check = v => (canonicalCIDR(v) === undefined ? `expected a CIDR, got ${JSON.stringify(v)}` : undefined)
const checkIfName: Check = v =>
  /^[A-Za-z0-9_.-]{1,15}$/.test(v) ? undefined : `expected an interface name (1-15 letters, digits, "-", "_", "."), got ${JSON.stringify(v)}`

const str = (extra: Partial<{ enum: readonly string[]; check: Check; refused: string }> = {}): Spec => ({ k: 'string', ...extra })
const bool = (refused?: string): Spec => (refused === undefined ? { k: 'bool' } : { k: 'bool', refused })
const int = (min?: number, max?: number, refused?: string): Spec => ({
  k: 'int',
  ...(min !== undefined ? { min } : {}),
  ...(max !== undefined ? { max } : {}),
  ...(refused !== undefined ? { refused } : {}),
})
const dur = (refused?: string): Spec => (refused === undefined ? { k: 'duration' } : { k: 'duration', refused })
const obj = (fields: Record<string, Spec>): Spec => ({ k: 'object', fields })

const WINDOWS = 'Windows only; tundra runs on Linux'
const API_CLIENT = "tundra's API client always sends JSON and does not rate-limit"

export const SCHEMA: Spec = obj({
  apiVersion: str(),
  kind: str(),
  featureGates: {
    k: 'boolMap',
    refused: 'tundra implements no kube-proxy feature gates (it behaves as current kube-proxy with the default gates); remove them',
  },
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
    flushFrequency: { k: 'any', ignored: 'tundra writes each log line at once' },
    options: { k: 'any', ignored: 'tundra writes each log line at once, to one stream' },
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
    snatNodeInternalIP: bool('tundra masquerades with its own source address choice; SNAT to the InternalIP is not implemented'),
    syncPeriod: dur(),
    minSyncPeriod: dur(),
  }),
  // mode ipvs: the scheduler, timeouts and excludeCIDRs are honoured (kpconfig.ts ipvsEffects), in that mode only
  ipvs: obj({
    syncPeriod: dur(),
    minSyncPeriod: dur(),
    scheduler: str({ check: checkIpvsScheduler }),
    excludeCIDRs: { k: 'list', check: checkCIDR },
    strictARP: { k: 'bool', ignored: 'tundra binds no Service IP to an interface, so the node never answers ARP for one' },
    tcpTimeout: dur(),
    tcpFinTimeout: dur(),
    udpTimeout: dur(),
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
    tun: obj({
      name: str({ check: checkIfName }),
      queues: int(1, 64), // the bounds the agent config and the TUN device take (agent/config.ts TUN_BOUNDS)
      offloads: bool(),
      io: str({ enum: ['thread', 'inline'] }),
      busyPollUs: int(0, 1000000),
      packetThreads: int(1, 64),
    }),
    dns: obj({ zone: str(), ip: str({ check: checkIP }), upstreams: { k: 'list', check: checkUpstream }, ttl: int(0, 2147483647) }),
    lb: str({ enum: ['random', 'maglev'] }),
    scheduler: str({ enum: [...SCHED_NAMES, 'maglev'] }),
    icmp: str({ enum: ['reply', 'reject', 'drop'] }),
    icmpRateLimit: obj({ perSecond: int(0, 1000000), burst: int(0, 1000000) }),
    snapshot: obj({ path: str(), intervalSeconds: int(0) }),
    failover: obj({ enabled: bool(), synTimeout: dur(), maxRetries: int(0, 7), pool: int(1, 1048576) }),
    outlierEjection: obj({
      enabled: bool(),
      consecutiveFailures: int(1, 1000),
      baseEjectionTime: dur(),
      maxEjectionTime: dur(),
      maxEjectionPercent: int(0, 100),
    }),
    signals: obj({ enabled: bool() }),
    web: obj({ addr: str(), allowRemote: bool() }),
    serviceCIDR: str({ check: checkCIDRs }),
    uplink: str(),
    control: str(),
  }),
})

export function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'a list'
  if (typeof v === 'object') return 'a mapping'
  if (typeof v === 'string') return JSON.stringify(v)
  return String(v)
}

function isSet(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === '' || v === '0') return false
  if (Array.isArray(v)) return v.length > 0
  // a mapping is set when something in it is (kubeadm writes sections of zero values)
  if (typeof v === 'object') return Object.values(v as object).some(isSet)
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

export interface Ctx {
  readonly issues: ConfigIssue[]
  readonly warnings: string[]
  readonly file: string
}

/** Checks `v` against `spec`; returns it with durations as seconds, or undefined when absent, null or invalid. */
export function walk(v: unknown, spec: Spec, path: string, ctx: Ctx): unknown {
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
        if (typeof x !== 'string') {
          bad(`item ${i}: expected a string, got ${describe(x)}`)
          return
        }
        const e = spec.check?.(x)
        if (e !== undefined) {
          bad(`item ${i}: ${e}`)
          return
        }
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

export function splitList(s: string): string[] {
  return s
    .split(',')
    .map(x => x.trim())
    .filter(x => x !== '')
}

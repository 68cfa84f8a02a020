// kube-proxy's command-line flags (same names, same meaning), the ones tundra refuses with the reason, then tundra's
// own; each flag's type, where it lands in RunConfig and who wins against --config (FlagGroup).
import { canonicalCIDR } from '../k8s/ip'
import { ipFamily } from '../wire/addr'
import { parseGoDuration } from './goduration'
import { checkHostPort, checkNodePortAddress, checkUpstream, describe, splitList } from './schema'

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
  /** a kube-proxy flag whose effect already holds here: accepted, with a warning saying why */
  readonly ignored?: string
}

interface FlagExtra {
  arg?: string
  values?: readonly string[]
  group?: FlagGroup
  field?: string
  alias?: string
  refused?: string
  ignored?: string
}

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

const moot = (flag: string, type: FlagType, reason: string, arg?: string): FlagSpec =>
  flagSpec(flag, type, '', `accepted, no effect: ${reason}`, { ignored: reason, group: 'override', ...(arg !== undefined ? { arg } : {}) })
const LOG_LINES = 'tundra writes each log line at once, to one stream'

const IPVS_ARP = 'tundra binds no Service IP to an interface, so the node never answers ARP for one'

/** kube-proxy's flags (same names, same meaning), the ones tundra refuses, then tundra's own. */
export const RUN_FLAGS: readonly FlagSpec[] = [
  kp('--kubeconfig', 'string', 'kubeconfig', 'clientConnection.kubeconfig', 'kubeconfig file (default: the in-cluster service account)', { arg: '<path>' }),
  flagSpec('--hostname-override', 'string', 'hostnameOverride', 'the name of this Node (default: the host name)', {
    arg: '<name>',
    group: 'override',
    field: 'hostnameOverride',
  }),
  flagSpec(
    '--v',
    'int',
    'logging.verbosity',
    'log verbosity: 2 logs each sync (duration, counts), 4 each changed Service, EndpointSlice or Node, 5 each API watch event',
    {
      arg: '<level>',
      alias: '-v',
      group: 'override',
      field: 'logging.verbosity',
    },
  ),
  flagSpec('--logging-format', 'enum', 'logging.format', 'log format: text or json (one JSON object per line)', {
    arg: '<format>',
    values: ['text', 'json'],
    group: 'override',
    field: 'logging.format',
  }),
  flagSpec('--cleanup', 'bool', 'cleanup', 'remove what tundra set up on this node, then exit', { group: 'override' }),
  kp('--proxy-mode', 'enum', 'mode', 'mode', 'which kube-proxy section the sync periods and masqueradeAll come from: iptables, nftables or ipvs', {
    arg: '<mode>',
    values: ['iptables', 'nftables', 'ipvs', 'kernelspace'],
  }),
  kp('--feature-gates', 'string', 'featureGates', 'featureGates', 'kube-proxy feature gates: none are implemented, so any gate is refused', {
    arg: '<k=v,...>',
  }),
  kp('--oom-score-adj', 'signedInt', 'oomScoreAdj', 'oomScoreAdj', "the process's oom_score_adj, -1000..1000 (default: left as it is)", { arg: '<n>' }),
  kp('--bind-address', 'ip', 'bindAddress', 'bindAddress', "overrides the node's primary IP", { arg: '<ip>' }),
  kp(
    '--bind-address-hard-fail',
    'bool',
    'bindAddressHardFail',
    'bindAddressHardFail',
    'exit when the metrics or health port cannot be bound (default: log and go on without it)',
  ),
  kp('--cluster-cidr', 'cidrs', 'clusterCIDRs', 'clusterCIDR', 'pod CIDRs of the cluster, comma-separated, one per family', { arg: '<cidrs>' }),
  kp(
    '--detect-local-mode',
    'enum',
    'detectLocalMode',
    'detectLocalMode',
    "what counts as a local (pod) source: ClusterCIDR, or NodeCIDR (the node's podCIDRs)",
    { arg: '<mode>', values: ['ClusterCIDR', 'NodeCIDR'] },
  ),
  kp('--nodeport-addresses', 'list', 'nodePortAddresses', 'nodePortAddresses', "CIDRs (or 'primary') of the node IPs that serve NodePorts", { arg: '<cidrs>' }),
  kp('--masquerade-all', 'bool', 'masqueradeAll', 'iptables.masqueradeAll', 'SNAT every connection to a ClusterIP'),
  kp(
    '--iptables-masquerade-bit',
    'int',
    'masqueradeBit',
    'iptables.masqueradeBit',
    'the mark bit of the masquerade rules tundra dump writes (0-31, default 14)',
    { arg: '<bit>' },
  ),
  kp('--iptables-localhost-nodeports', 'bool', 'localhostNodePorts', 'iptables.localhostNodePorts', 'NodePorts also answer on 127.0.0.1 (default true)'),
  kp('--iptables-sync-period', 'duration', 'syncPeriod', 'iptables.syncPeriod', 'full resync at least this often (e.g. 30s)', { arg: '<duration>' }),
  kp('--iptables-min-sync-period', 'duration', 'minSyncPeriod', 'iptables.minSyncPeriod', 'apply changes at most this often (e.g. 1s; 0 = at once)', {
    arg: '<duration>',
  }),
  kp('--config-sync-period', 'duration', 'configSyncPeriod', 'configSyncPeriod', 'how often the API objects are listed again in full (default 15m)', {
    arg: '<duration>',
  }),
  kp('--conntrack-max-per-core', 'int', 'conntrack.maxPerCore', 'conntrack.maxPerCore', 'tracked connections per CPU (0 = engine default)', { arg: '<n>' }),
  kp('--conntrack-min', 'int', 'conntrack.min', 'conntrack.min', 'tracked connections at least', { arg: '<n>' }),
  kp(
    '--conntrack-tcp-timeout-established',
    'duration',
    'conntrack.tcpEstablishedTimeout',
    'conntrack.tcpEstablishedTimeout',
    'idle timeout of established TCP',
    { arg: '<duration>' },
  ),
  kp('--conntrack-tcp-timeout-close-wait', 'duration', 'conntrack.tcpCloseWaitTimeout', 'conntrack.tcpCloseWaitTimeout', 'timeout of TCP in CLOSE_WAIT', {
    arg: '<duration>',
  }),
  kp('--conntrack-tcp-be-liberal', 'bool', 'conntrack.tcpBeLiberal', 'conntrack.tcpBeLiberal', 'do not treat out-of-window TCP as invalid'),
  kp('--conntrack-udp-timeout', 'duration', 'conntrack.udpTimeout', 'conntrack.udpTimeout', 'idle timeout of unreplied UDP', { arg: '<duration>' }),
  kp('--conntrack-udp-timeout-stream', 'duration', 'conntrack.udpStreamTimeout', 'conntrack.udpStreamTimeout', 'idle timeout of replied UDP', {
    arg: '<duration>',
  }),
  kp('--metrics-bind-address', 'hostport', 'metricsBindAddress', 'metricsBindAddress', 'where /metrics is served (default 127.0.0.1:10249)', {
    arg: '<ip:port>',
  }),
  kp('--healthz-bind-address', 'hostport', 'healthzBindAddress', 'healthzBindAddress', 'where /healthz and /livez are served (default 0.0.0.0:10256)', {
    arg: '<ip:port>',
  }),
  refused('--init-only', 'tundra needs no privileged init step (its wiring is done by run itself)'),
  refused('--profiling', 'tundra serves no /debug/pprof'),
  flagSpec('--master', 'string', 'master', "the API server's address, overriding the kubeconfig's or the in-cluster one", { arg: '<url>', group: 'override' }),
  refused('--kube-api-qps', "tundra's API client does not rate-limit", '<qps>'),
  refused('--kube-api-burst', "tundra's API client does not rate-limit", '<n>'),
  refused('--kube-api-content-type', "tundra's API client always sends JSON", '<type>'),
  refused('--healthz-port', 'deprecated in kube-proxy: use --healthz-bind-address ip:port', '<port>'),
  refused('--metrics-port', 'deprecated in kube-proxy: use --metrics-bind-address ip:port', '<port>'),
  refused('--show-hidden-metrics-for-version', 'tundra has no hidden metrics', '<version>'),
  moot('--log-flush-frequency', 'duration', LOG_LINES, '<duration>'),
  moot('--log-json-info-buffer-size', 'string', LOG_LINES, '<size>'),
  moot('--log-json-split-stream', 'bool', LOG_LINES),
  moot('--log-text-info-buffer-size', 'string', LOG_LINES, '<size>'),
  moot('--log-text-split-stream', 'bool', LOG_LINES),
  refused('--vmodule', 'per-file verbosity is not implemented', '<pattern>'),
  refused('--pod-bridge-interface', 'detectLocalMode BridgeInterface is not supported', '<name>'),
  refused('--pod-interface-name-prefix', 'detectLocalMode InterfaceNamePrefix is not supported', '<prefix>'),
  kp('--ipvs-scheduler', 'enum', 'ipvs.scheduler', 'ipvs.scheduler', 'mode ipvs: endpoint scheduler (default rr)', {
    arg: '<name>',
    values: ['rr', 'wrr', 'lc', 'wlc', 'sh', 'mh'],
  }),
  kp('--ipvs-sync-period', 'duration', 'syncPeriod', 'ipvs.syncPeriod', 'mode ipvs: the longest time between two full syncs', { arg: '<duration>' }),
  kp('--ipvs-min-sync-period', 'duration', 'minSyncPeriod', 'ipvs.minSyncPeriod', 'mode ipvs: the shortest time between two syncs', {
    arg: '<duration>',
  }),
  kp('--ipvs-exclude-cidrs', 'cidrs', 'ipvs.excludeCIDRs', 'ipvs.excludeCIDRs', 'mode ipvs: endpoints in these CIDRs keep their connections when they leave', {
    arg: '<cidrs>',
  }),
  moot('--ipvs-strict-arp', 'bool', IPVS_ARP),
  kp('--ipvs-tcp-timeout', 'duration', 'ipvs.tcpTimeout', 'ipvs.tcpTimeout', 'mode ipvs: idle timeout of established TCP connections', {
    arg: '<duration>',
  }),
  kp('--ipvs-tcpfin-timeout', 'duration', 'ipvs.tcpFinTimeout', 'ipvs.tcpFinTimeout', 'mode ipvs: timeout of TCP connections after a FIN', {
    arg: '<duration>',
  }),
  kp('--ipvs-udp-timeout', 'duration', 'ipvs.udpTimeout', 'ipvs.udpTimeout', 'mode ipvs: idle timeout of UDP flows', { arg: '<duration>' }),
  own('--tun', 'string', 'tundra.tun.name', 'TUN device name (default tundra0)', { arg: '<name>' }),
  own('--tun-queues', 'int', 'tundra.tun.queues', 'TUN reader queues (default 1)', { arg: '<n>' }),
  own('--tun-io', 'enum', 'tundra.tun.io', 'who reads the TUN: inline (the JS thread polls it; default) or thread (a native reader thread per queue)', {
    arg: '<mode>',
    values: ['inline', 'thread'],
  }),
  own('--busy-poll-us', 'int', 'tundra.tun.busyPollUs', 'inline reader: µs to keep polling after the last packet before sleeping (default 100; 0 = never)', {
    arg: '<us>',
  }),
  own(
    '--packet-threads',
    'int',
    'tundra.tun.packetThreads',
    'packet threads, each reading its own TUN queue (default 1; more needs --tun-queues equal to it)',
    {
      arg: '<n>',
    },
  ),
  own('--dns-ip', 'ip', 'tundra.dns.ip', 'the cluster DNS address tundra answers on (default 10.96.0.10)', { arg: '<ip>' }),
  own('--dns-zone', 'string', 'tundra.dns.zone', 'cluster domain (default cluster.local)', { arg: '<zone>' }),
  own('--dns-upstream', 'list', 'tundra.dns.upstreams', 'upstream resolvers, comma-separated (default: /etc/resolv.conf)', { arg: '<addrs>' }),
  own('--lb', 'enum', 'tundra.lb', 'endpoint choice: random (like kube-proxy) or maglev', { arg: '<mode>', values: ['random', 'maglev'] }),
  own('--scheduler', 'enum', 'tundra.scheduler', 'endpoint scheduler in any mode: random, rr, wrr, lc, wlc, sh or mh', {
    arg: '<name>',
    values: ['random', 'rr', 'wrr', 'lc', 'wlc', 'sh', 'mh'],
  }),
  own('--icmp', 'enum', 'tundra.icmp', 'echo requests to a ClusterIP: reply, reject or drop', { arg: '<mode>', values: ['reply', 'reject', 'drop'] }),
  own('--service-cidr', 'cidrs', 'tundra.serviceCIDRs', 'Service CIDRs, comma-separated, one per family (default 10.96.0.0/12)', { arg: '<cidrs>' }),
  own('--snapshot', 'string', 'tundra.snapshot.path', 'file that keeps conntrack state across restarts', { arg: '<path>' }),
  own('--web-addr', 'hostport', 'tundra.web.addr', 'serve the live web view here, e.g. 127.0.0.1:9099 (default: off)', { arg: '<ip:port>' }),
  own('--web-allow-remote', 'bool', 'tundra.web.allowRemote', 'let --web-addr be an address other than loopback (the view shows every flow)'),
]

export type RunFlags = Readonly<Record<string, unknown>>

function parseBool(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v
  if (v === 'true' || v === '1') return true
  if (v === 'false' || v === '0') return false
  return undefined
}

export function parseFlag(spec: FlagSpec, v: unknown): { value?: unknown; error?: string } {
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
      return s !== undefined && ipFamily(s) !== undefined ? { value: s } : { error: `expected an IP address, got ${describe(v)}` }
    case 'hostport':
      return s !== undefined && checkHostPort(s) === undefined ? { value: s } : { error: `expected an address like "0.0.0.0:10256", got ${describe(v)}` }
    case 'enum':
      return s !== undefined && (spec.values ?? []).includes(s)
        ? { value: s }
        : { error: `expected one of ${(spec.values ?? []).join(', ')}, got ${describe(v)}` }
    case 'string':
      return s !== undefined ? { value: s } : { error: `expected a value, got ${describe(v)}` }
  }
}

/** Flag values kube-proxy accepts that tundra refuses: the same reasons as the file's fields. */
export function flagValueRefusal(spec: FlagSpec, value: unknown): string | undefined {
  if (spec.path === 'featureGates' && typeof value === 'string' && value.trim() !== '') {
    return `${JSON.stringify(value)} is not supported: tundra implements no kube-proxy feature gates (it behaves as current kube-proxy with the default gates)`
  }
  if (spec.path === 'mode' && value === 'kernelspace') return 'kernelspace is the Windows proxy; tundra runs on Linux'
  return undefined
}

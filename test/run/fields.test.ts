// Every KubeProxyConfiguration field and every kube-proxy flag is honoured (setting it changes the resolved RunConfig)
// or refused (an error naming it) or, where its effect already holds here, accepted with a warning naming it. Never
// accepted and ignored.
//
// The lists below are kube-proxy's, copied from kubernetes/kubernetes at commit 052d2d84 / 008b3652:
// staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go (the JSON names of KubeProxyConfiguration and its sections,
// component-base's ClientConnectionConfiguration and LoggingConfiguration) and cmd/kube-proxy/app/options.go
// (Options.AddFlags; addOSFlags adds nothing on Linux; logsapi.AddFlags adds the logging flags; verflag --version).
// When kube-proxy gains a field or flag, add it to the list: the test then fails until tundra honours or refuses it.
import t from 'tap'
import { mergeFlags, parseKubeProxyConfig, type RunConfig } from '../../src/run/kpconfig'
import { ConfigError } from '../../src/run/schema'
import { RUN_FLAGS } from '../../src/run/flags'

const KUBE_PROXY_FIELDS = [
  'apiVersion',
  'kind',
  'featureGates',
  'clientConnection.kubeconfig',
  'clientConnection.acceptContentTypes',
  'clientConnection.contentType',
  'clientConnection.qps',
  'clientConnection.burst',
  'logging.format',
  'logging.flushFrequency',
  'logging.verbosity',
  'logging.vmodule',
  'logging.options',
  'hostnameOverride',
  'bindAddress',
  'healthzBindAddress',
  'metricsBindAddress',
  'bindAddressHardFail',
  'enableProfiling',
  'showHiddenMetricsForVersion',
  'mode',
  'iptables.masqueradeBit',
  'iptables.masqueradeAll',
  'iptables.localhostNodePorts',
  'iptables.snatNodeInternalIP',
  'iptables.syncPeriod',
  'iptables.minSyncPeriod',
  'ipvs.syncPeriod',
  'ipvs.minSyncPeriod',
  'ipvs.scheduler',
  'ipvs.excludeCIDRs',
  'ipvs.strictARP',
  'ipvs.tcpTimeout',
  'ipvs.tcpFinTimeout',
  'ipvs.udpTimeout',
  'nftables.masqueradeBit',
  'nftables.masqueradeAll',
  'nftables.syncPeriod',
  'nftables.minSyncPeriod',
  'winkernel.networkName',
  'winkernel.sourceVip',
  'winkernel.enableDSR',
  'winkernel.rootHnsEndpointName',
  'winkernel.forwardHealthCheckVip',
  'detectLocalMode',
  'detectLocal.bridgeInterface',
  'detectLocal.interfaceNamePrefix',
  'clusterCIDR',
  'nodePortAddresses',
  'oomScoreAdj',
  'conntrack.maxPerCore',
  'conntrack.min',
  'conntrack.tcpEstablishedTimeout',
  'conntrack.tcpCloseWaitTimeout',
  'conntrack.tcpBeLiberal',
  'conntrack.udpTimeout',
  'conntrack.udpStreamTimeout',
  'configSyncPeriod',
  'portRange',
  'windowsRunAsService',
] as const

const KUBE_PROXY_FLAGS = [
  '--config',
  '--write-config-to',
  '--cleanup',
  '--feature-gates',
  '--kubeconfig',
  '--master',
  '--kube-api-content-type',
  '--kube-api-burst',
  '--kube-api-qps',
  '--hostname-override',
  '--bind-address',
  '--healthz-bind-address',
  '--metrics-bind-address',
  '--bind-address-hard-fail',
  '--profiling',
  '--show-hidden-metrics-for-version',
  '--init-only',
  '--proxy-mode',
  '--iptables-masquerade-bit',
  '--masquerade-all',
  '--iptables-localhost-nodeports',
  '--iptables-sync-period',
  '--iptables-min-sync-period',
  '--ipvs-sync-period',
  '--ipvs-min-sync-period',
  '--ipvs-scheduler',
  '--ipvs-exclude-cidrs',
  '--ipvs-strict-arp',
  '--ipvs-tcp-timeout',
  '--ipvs-tcpfin-timeout',
  '--ipvs-udp-timeout',
  '--detect-local-mode',
  '--pod-bridge-interface',
  '--pod-interface-name-prefix',
  '--cluster-cidr',
  '--nodeport-addresses',
  '--oom-score-adj',
  '--conntrack-max-per-core',
  '--conntrack-min',
  '--conntrack-tcp-timeout-established',
  '--conntrack-tcp-timeout-close-wait',
  '--conntrack-tcp-be-liberal',
  '--conntrack-udp-timeout',
  '--conntrack-udp-timeout-stream',
  '--config-sync-period',
  '--healthz-port',
  '--metrics-port',
  // logsapi.AddFlags
  '--logging-format',
  '--log-flush-frequency',
  '--v',
  '--vmodule',
  '--log-json-info-buffer-size',
  '--log-json-split-stream',
  '--log-text-info-buffer-size',
  '--log-text-split-stream',
  // verflag
  '--version',
] as const

type Outcome = 'honoured' | 'refused' | 'warned' | 'meta'

interface FieldCase {
  /** a non-default value */
  readonly value: unknown
  readonly outcome: Outcome
  /** other fields set in both the baseline and the case (e.g. the mode a section belongs to) */
  readonly base?: Record<string, unknown>
}

const NFT = { mode: 'nftables' }
const IPVS = { mode: 'ipvs' }
const H: Outcome = 'honoured'
const R: Outcome = 'refused'
const W: Outcome = 'warned'

/** What setting each field does in tundra. */
const FIELD_CASES: Record<(typeof KUBE_PROXY_FIELDS)[number], FieldCase> = {
  apiVersion: { value: 'kubeproxy.config.k8s.io/v1alpha1', outcome: 'meta' },
  kind: { value: 'KubeProxyConfiguration', outcome: 'meta' },
  featureGates: { value: { SomeGate: true }, outcome: R },
  'clientConnection.kubeconfig': { value: '/etc/kube-proxy/kubeconfig', outcome: H },
  'clientConnection.acceptContentTypes': { value: 'application/json', outcome: R },
  'clientConnection.contentType': { value: 'application/vnd.kubernetes.protobuf', outcome: R },
  'clientConnection.qps': { value: 5, outcome: R },
  'clientConnection.burst': { value: 10, outcome: R },
  'logging.format': { value: 'json', outcome: H },
  'logging.flushFrequency': { value: '5s', outcome: W },
  'logging.verbosity': { value: 4, outcome: H },
  'logging.vmodule': { value: [{ filePattern: 'proxier*', verbosity: 5 }], outcome: R },
  'logging.options': { value: { json: { splitStream: true } }, outcome: W },
  hostnameOverride: { value: 'node-a', outcome: H },
  bindAddress: { value: '192.168.1.10', outcome: H },
  healthzBindAddress: { value: '127.0.0.1:10256', outcome: H },
  metricsBindAddress: { value: '0.0.0.0:10249', outcome: H },
  bindAddressHardFail: { value: true, outcome: H },
  enableProfiling: { value: true, outcome: R },
  showHiddenMetricsForVersion: { value: '1.30', outcome: R },
  mode: { value: 'nftables', outcome: H },
  'iptables.masqueradeBit': { value: 15, outcome: H },
  'iptables.masqueradeAll': { value: true, outcome: H },
  'iptables.localhostNodePorts': { value: false, outcome: H },
  'iptables.snatNodeInternalIP': { value: true, outcome: R },
  'iptables.syncPeriod': { value: '45s', outcome: H },
  'iptables.minSyncPeriod': { value: '5s', outcome: H },
  'ipvs.syncPeriod': { value: '45s', outcome: H, base: IPVS },
  'ipvs.minSyncPeriod': { value: '5s', outcome: H, base: IPVS },
  'ipvs.scheduler': { value: 'lc', outcome: H, base: IPVS },
  'ipvs.excludeCIDRs': { value: ['10.0.0.0/8'], outcome: H, base: IPVS },
  'ipvs.strictARP': { value: true, outcome: W, base: IPVS },
  'ipvs.tcpTimeout': { value: '10s', outcome: H, base: IPVS },
  'ipvs.tcpFinTimeout': { value: '10s', outcome: H, base: IPVS },
  'ipvs.udpTimeout': { value: '10s', outcome: H, base: IPVS },
  'nftables.masqueradeBit': { value: 15, outcome: H, base: NFT },
  'nftables.masqueradeAll': { value: true, outcome: H, base: NFT },
  'nftables.syncPeriod': { value: '45s', outcome: H, base: NFT },
  'nftables.minSyncPeriod': { value: '5s', outcome: H, base: NFT },
  'winkernel.networkName': { value: 'net', outcome: R },
  'winkernel.sourceVip': { value: '10.0.0.1', outcome: R },
  'winkernel.enableDSR': { value: true, outcome: R },
  'winkernel.rootHnsEndpointName': { value: 'cbr0', outcome: R },
  'winkernel.forwardHealthCheckVip': { value: true, outcome: R },
  detectLocalMode: { value: 'NodeCIDR', outcome: H },
  'detectLocal.bridgeInterface': { value: 'cbr0', outcome: R },
  'detectLocal.interfaceNamePrefix': { value: 'veth', outcome: R },
  clusterCIDR: { value: '10.244.0.0/16,fd00:10:244::/56', outcome: H },
  nodePortAddresses: { value: ['primary'], outcome: H },
  oomScoreAdj: { value: -999, outcome: H },
  'conntrack.maxPerCore': { value: 0, outcome: H },
  'conntrack.min': { value: 1024, outcome: H },
  'conntrack.tcpEstablishedTimeout': { value: '2h', outcome: H },
  'conntrack.tcpCloseWaitTimeout': { value: '30m', outcome: H },
  'conntrack.tcpBeLiberal': { value: true, outcome: H },
  'conntrack.udpTimeout': { value: '45s', outcome: H },
  'conntrack.udpStreamTimeout': { value: '3m', outcome: H },
  configSyncPeriod: { value: '5m', outcome: H },
  portRange: { value: '30000-31000', outcome: R },
  windowsRunAsService: { value: true, outcome: R },
}

function setPath(o: Record<string, unknown>, path: string, v: unknown): void {
  const parts = path.split('.')
  let cur = o
  for (const p of parts.slice(0, -1)) cur = (cur[p] ??= {}) as Record<string, unknown>
  cur[parts[parts.length - 1]!] = v
}

function resolveFile(fields: Record<string, unknown>): RunConfig {
  const doc: Record<string, unknown> = { apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration' }
  for (const [k, v] of Object.entries(fields)) setPath(doc, k, v)
  return mergeFlags(parseKubeProxyConfig(JSON.stringify(doc), 'kp.yaml'), {}, { cpus: 4 })
}

/** The RunConfig without its bookkeeping, for comparing effects. */
const effect = (c: RunConfig): unknown => ({ ...c, warnings: [], file: undefined })

t.test('every KubeProxyConfiguration field has a case, and only those', async t => {
  t.same(Object.keys(FIELD_CASES).sort(), [...KUBE_PROXY_FIELDS].sort())
})

for (const field of KUBE_PROXY_FIELDS) {
  const c = FIELD_CASES[field]
  t.test(`field ${field}: ${c.outcome}`, async t => {
    const base = c.base ?? {}
    const before = resolveFile(base)
    if (c.outcome === 'refused') {
      let err: unknown
      try {
        resolveFile({ ...base, [field]: c.value })
      } catch (e) {
        err = e
      }
      t.type(err, ConfigError, 'an error')
      t.match((err as Error).message, new RegExp(`kp\\.yaml: ${field.replace(/\./g, '\\.')}: .*not supported: \\S`), 'naming the field and saying why')
      return
    }
    const after = resolveFile({ ...base, [field]: c.value })
    if (c.outcome === 'meta') {
      t.same(effect(after), effect(before))
      return
    }
    if (c.outcome === 'warned') {
      t.same(effect(after), effect(before), 'no effect')
      t.match(
        after.warnings.join('\n'),
        new RegExp(`kp\\.yaml: ${field.replace(/\./g, '\\.')}: .*has no effect \\(\\S`),
        'a warning naming the field and saying why',
      )
      return
    }
    t.notSame(effect(after), effect(before), 'the resolved configuration changes')
    t.same(after.warnings, before.warnings, 'without a warning')
  })
}

interface FlagCase {
  readonly value?: unknown
  readonly outcome: Outcome | 'command'
}

/** Flags of the `tundra run` command itself rather than of the configuration (src/cli/run.ts handles them). */
const COMMAND_FLAGS = new Set(['--config', '--write-config-to', '--version'])

/** A value for each flag RUN_FLAGS knows, by its type; refused and moot ones only need to be given. */
function sampleValue(flag: string): unknown {
  const samples: Record<string, unknown> = {
    '--kubeconfig': '/etc/kubeconfig',
    '--master': 'https://10.0.0.1:6443',
    '--hostname-override': 'node-a',
    '--bind-address': '192.168.1.10',
    '--healthz-bind-address': '127.0.0.1:10256',
    '--metrics-bind-address': '0.0.0.0:10249',
    '--bind-address-hard-fail': true,
    '--cleanup': true,
    '--proxy-mode': 'nftables',
    '--iptables-masquerade-bit': '15',
    '--masquerade-all': true,
    '--iptables-localhost-nodeports': 'false',
    '--iptables-sync-period': '45s',
    '--iptables-min-sync-period': '5s',
    '--detect-local-mode': 'NodeCIDR',
    '--cluster-cidr': '10.244.0.0/16',
    '--nodeport-addresses': 'primary',
    '--oom-score-adj': '-999',
    '--conntrack-max-per-core': '0',
    '--conntrack-min': '1024',
    '--conntrack-tcp-timeout-established': '2h',
    '--conntrack-tcp-timeout-close-wait': '30m',
    '--conntrack-tcp-be-liberal': true,
    '--conntrack-udp-timeout': '45s',
    '--conntrack-udp-timeout-stream': '3m',
    '--config-sync-period': '5m',
    '--logging-format': 'json',
    '--v': '4',
    '--feature-gates': 'SomeGate=true',
    '--ipvs-scheduler': 'lc',
    '--ipvs-sync-period': '45s',
    '--ipvs-min-sync-period': '5s',
    '--ipvs-exclude-cidrs': '10.0.0.0/8',
    '--ipvs-tcp-timeout': '10s',
    '--ipvs-tcpfin-timeout': '10s',
    '--ipvs-udp-timeout': '10s',
  }
  return samples[flag] ?? 'x'
}

function flagCase(flag: string): FlagCase {
  if (COMMAND_FLAGS.has(flag)) return { outcome: 'command' }
  const spec = RUN_FLAGS.find(f => f.flag === flag)
  if (spec === undefined) return { outcome: 'meta' } // fails below: a kube-proxy flag tundra does not know
  if (spec.refused !== undefined) return { value: spec.type === 'bool' ? true : 'x', outcome: 'refused' }
  if (spec.ignored !== undefined) return { value: spec.type === 'bool' ? true : spec.type === 'duration' ? '5s' : '100', outcome: 'warned' }
  if (flag === '--feature-gates') return { value: sampleValue(flag), outcome: 'refused' }
  return { value: sampleValue(flag), outcome: 'honoured' }
}

for (const flag of KUBE_PROXY_FLAGS) {
  t.test(`flag ${flag}`, async t => {
    const c = flagCase(flag)
    if (c.outcome === 'command') {
      const src = (await import('node:fs')).readFileSync(`${__dirname}/../../src/cli/run.ts`, 'utf8')
      t.match(src, new RegExp(`\\.option\\('${flag}[ ']`), 'an option of `tundra run` itself')
      return
    }
    const spec = RUN_FLAGS.find(f => f.flag === flag)
    t.ok(spec, `${flag} is in RUN_FLAGS (honoured, refused or moot), so a copied kube-proxy command line never fails on it`)
    if (spec === undefined) return
    const before = mergeFlags(undefined, {}, { cpus: 4 })
    if (c.outcome === 'refused') {
      t.throws(() => mergeFlags(undefined, { [spec.key]: c.value }, { cpus: 4 }), new RegExp(`${flag}: .*not supported: \\S`))
      return
    }
    const after = mergeFlags(undefined, { [spec.key]: c.value }, { cpus: 4 })
    if (c.outcome === 'warned') {
      t.same(effect(after), effect(before), 'no effect')
      t.match(after.warnings.join('\n'), new RegExp(`${flag} has no effect \\(\\S`))
      return
    }
    t.notSame(effect(after), effect(before), 'the resolved configuration changes')
  })
}

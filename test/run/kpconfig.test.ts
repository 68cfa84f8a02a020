// KubeProxyConfiguration files: kube-proxy's fields and defaults, the tundra section, strict errors naming file and
// field, and flags over the file.
import t from 'tap'
import { join } from 'node:path'
import { tempDir } from '../helpers/tmp'
import { mergeFlags, parseKubeProxyConfig, readKubeProxyConfig, resolveNodePortAddresses, nodeNameOf } from '../../src/run/kpconfig'
import { ConfigError } from '../../src/run/schema'
import { RUN_FLAGS } from '../../src/run/flags'
import { formatGoDuration, parseGoDuration } from '../../src/run/goduration'

const HEAD = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n'

function errorOf(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err.message
    throw err
  }
  throw new Error('expected a ConfigError')
}

t.test('Go durations', async t => {
  t.equal(parseGoDuration('30s'), 30)
  t.equal(parseGoDuration('1h0m0s'), 3600)
  t.equal(parseGoDuration('1.5m'), 90)
  t.equal(parseGoDuration('250ms'), 0.25)
  t.equal(parseGoDuration('0'), 0)
  t.equal(parseGoDuration('2h45m30.5s'), 9930.5)
  t.equal(parseGoDuration('-5s'), -5)
  for (const bad of ['', '30', 's', '1d', '1h 2m', '1.2.3s']) t.equal(parseGoDuration(bad), undefined, bad)
  t.equal(formatGoDuration(3600), '1h0m0s')
  t.equal(formatGoDuration(30), '30s')
  t.equal(formatGoDuration(0.25), '250ms')
})

t.test("defaults without a file are kube-proxy's", async t => {
  const c = mergeFlags(undefined, {}, { cpus: 4 })
  t.equal(c.metricsBindAddress, '127.0.0.1:10249')
  t.equal(c.healthzBindAddress, '0.0.0.0:10256')
  t.equal(c.syncPeriod, 30)
  t.equal(c.minSyncPeriod, 1)
  t.equal(c.configSyncPeriod, 900)
  t.same(c.conntrack, {
    maxPerCore: 32768,
    min: 131072,
    max: 131072,
    tcpEstablishedTimeout: 86400,
    tcpCloseWaitTimeout: 3600,
    udpTimeout: 30,
    udpStreamTimeout: 120,
    tcpBeLiberal: false,
  })
  t.equal(mergeFlags(undefined, {}, { cpus: 8 }).conntrack.max, 262144, 'maxPerCore x CPUs when above min')
  t.equal(c.detectLocalMode, 'ClusterCIDR')
  t.same(c.tundra, {
    tun: { name: 'tundra0', queues: 1, offloads: true, io: 'inline', busyPollUs: 100, packetThreads: 1 },
    dns: { zone: 'cluster.local', ip: '10.96.0.10', upstreams: [], ttl: 5 },
    lb: 'random',
    scheduler: 'random',
    icmp: 'reply',
    snapshot: { path: '', intervalSeconds: 0 },
    web: { addr: '', allowRemote: false },
    serviceCIDRs: ['10.96.0.0/12'],
    uplink: '',
    control: '/run/tundra/control.sock',
  })
  t.same(c.warnings, [])
})

t.test('a full valid file, including a kubeadm-style one with zero values everywhere', async t => {
  const p = parseKubeProxyConfig(
    HEAD +
      `
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: 2h
  tcpBeLiberal: true
  udpTimeout: 45s
  udpStreamTimeout: 0s
detectLocal: {bridgeInterface: "", interfaceNamePrefix: ""}
detectLocalMode: ""
enableProfiling: false
featureGates: {}
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: true
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs: {excludeCIDRs: null, minSyncPeriod: 0s, scheduler: "", strictARP: false, syncPeriod: 0s, tcpFinTimeout: 0s, tcpTimeout: 0s, udpTimeout: 0s}
logging: {flushFrequency: 0, options: {json: {infoBufferSize: "0"}}, verbosity: 0}
metricsBindAddress: 0.0.0.0
mode: ""
nftables: {masqueradeAll: false, masqueradeBit: null, minSyncPeriod: 0s, syncPeriod: 0s}
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel: {enableDSR: false, forwardHealthCheckVip: false, networkName: "", rootHnsEndpointName: "", sourceVip: ""}
tundra:
  tun: {name: tun7, queues: 4, offloads: false, io: thread, busyPollUs: 0}
  dns: {zone: example.local., ip: 10.96.0.53, upstreams: [1.1.1.1, "[2001:db8::1]:53"], ttl: 30}
  lb: maglev
  icmp: reject
  snapshot: {path: /var/lib/tundra/nat.snap, intervalSeconds: 60}
  serviceCIDR: 10.96.0.0/16
`,
    'kube-proxy.yaml',
  )
  t.same(p.warnings, [], 'zero values of unused fields are not worth a warning')
  const c = mergeFlags(p, {}, { cpus: 2 })
  t.equal(c.file, 'kube-proxy.yaml')
  t.equal(c.kubeconfig, '/var/lib/kube-proxy/kubeconfig.conf')
  t.same(c.clusterCIDRs, ['10.244.0.0/16', 'fd00:10:244::/56'])
  t.equal(c.masqueradeAll, true)
  t.equal(c.syncPeriod, 30, '0s means default, as in kube-proxy')
  t.equal(c.minSyncPeriod, 1)
  t.equal(c.metricsBindAddress, '0.0.0.0:10249', 'a bare IP gets the default port')
  t.equal(c.healthzBindAddress, '0.0.0.0:10256')
  t.equal(c.conntrack.tcpEstablishedTimeout, 7200)
  t.equal(c.conntrack.tcpCloseWaitTimeout, 3600)
  t.equal(c.conntrack.udpTimeout, 45)
  t.equal(c.conntrack.udpStreamTimeout, 120)
  t.equal(c.conntrack.tcpBeLiberal, true)
  t.same(c.tundra.tun, { name: 'tun7', queues: 4, offloads: false, io: 'thread', busyPollUs: 0, packetThreads: 1 })
  t.same(c.tundra.dns, { zone: 'example.local', ip: '10.96.0.53', upstreams: ['1.1.1.1', '[2001:db8::1]:53'], ttl: 30 })
  t.equal(c.tundra.lb, 'maglev')
  t.equal(c.tundra.icmp, 'reject')
  t.same(c.tundra.snapshot, { path: '/var/lib/tundra/nat.snap', intervalSeconds: 60 })
  t.same(c.tundra.serviceCIDRs, ['10.96.0.0/16'])
})

t.test('the sync periods come from the section of the mode', async t => {
  const nft = mergeFlags(
    parseKubeProxyConfig(HEAD + 'mode: nftables\niptables: {syncPeriod: 10s}\nnftables: {syncPeriod: 1m, minSyncPeriod: 2s, masqueradeAll: true}\n'),
    {},
  )
  t.same([nft.syncPeriod, nft.minSyncPeriod, nft.masqueradeAll, nft.mode], [60, 2, true, 'nftables'])
  const ipt = mergeFlags(parseKubeProxyConfig(HEAD + 'iptables: {syncPeriod: 10s, minSyncPeriod: 500ms}\n'), {})
  t.same([ipt.syncPeriod, ipt.minSyncPeriod], [10, 0.5])
})

t.test('kube-proxy fields tundra cannot honour are errors naming them; moot ones warn; masqueradeBit is honoured', async t => {
  const err = errorOf(() => parseKubeProxyConfig(HEAD + 'ipvs: {scheduler: dh}\nfeatureGates: {Foo: true}\n', 'kp.yaml'))
  t.match(err, 'kp.yaml: featureGates: a mapping is not supported: tundra implements no kube-proxy feature gates')
  t.match(err, `kp.yaml: ipvs.scheduler: "dh" is not supported: tundra does not implement IPVS's dh scheduler; it has rr, wrr, lc, wlc, sh, mh`)
  const p = parseKubeProxyConfig(HEAD + 'ipvs: {strictARP: true}\niptables: {masqueradeBit: 13}\n', 'kp.yaml')
  t.same(p.warnings, ['kp.yaml: ipvs.strictARP: true has no effect (tundra binds no Service IP to an interface, so the node never answers ARP for one)'])
  t.equal(mergeFlags(p, {}).masqueradeBit, 13)
})

t.test('unknown fields are errors naming the file and the field path', async t => {
  t.equal(
    errorOf(() => parseKubeProxyConfig(HEAD + 'conntrack:\n  udpTimout: 30s\n', 'kube-proxy.yaml')),
    'kube-proxy.yaml: conntrack.udpTimout: unknown field (did you mean udpTimeout?)',
  )
  t.equal(
    errorOf(() => parseKubeProxyConfig(HEAD + 'tundra:\n  dns: {server: 1.1.1.1}\n', 'kube-proxy.yaml')),
    'kube-proxy.yaml: tundra.dns.server: unknown field',
  )
  t.equal(
    errorOf(() => parseKubeProxyConfig(HEAD + 'frobnicate: 1\n', 'kp.yaml')),
    'kp.yaml: frobnicate: unknown field',
  )
})

t.test('invalid types and values are errors, all of them at once', async t => {
  t.equal(
    errorOf(() => parseKubeProxyConfig(HEAD + 'conntrack:\n  udpTimeout: 12\n', 'kube-proxy.yaml')),
    'kube-proxy.yaml: conntrack.udpTimeout: expected a duration like "30s", got 12',
  )
  const many = errorOf(() =>
    parseKubeProxyConfig(
      HEAD +
        `
iptables: {masqueradeAll: "yes please", syncPeriod: 30}
conntrack: {maxPerCore: -1, min: 1.5}
clusterCIDR: 10.244.0.0/33
bindAddress: not-an-ip
metricsBindAddress: "127.0.0.1:99999"
nodePortAddresses: [primary, 10.0.0.0/8, bogus]
detectLocalMode: BridgeInterface
tundra: {lb: roundrobin, tun: {queues: 0, name: this-name-is-too-long, io: fast}, dns: {upstreams: [dns.google]}}
`,
      'kp.yaml',
    ),
  )
  const lines = many.split('\n')
  t.same(lines, [
    'kp.yaml: iptables.masqueradeAll: expected true or false, got "yes please"',
    'kp.yaml: iptables.syncPeriod: expected a duration like "30s", got 30',
    'kp.yaml: conntrack.maxPerCore: must be at least 0, got -1',
    'kp.yaml: conntrack.min: expected an integer, got 1.5',
    'kp.yaml: clusterCIDR: expected CIDRs separated by commas, got "10.244.0.0/33"',
    'kp.yaml: bindAddress: expected an IP address, got "not-an-ip"',
    'kp.yaml: metricsBindAddress: expected an address like "0.0.0.0:10256", got "127.0.0.1:99999"',
    'kp.yaml: nodePortAddresses: item 2: expected a CIDR or one of primary, all, localhost, got "bogus"',
    'kp.yaml: tundra.lb: expected one of random, maglev, got "roundrobin"',
    'kp.yaml: tundra.tun.queues: must be at least 1, got 0',
    'kp.yaml: tundra.tun.name: expected an interface name (1-15 letters, digits, "-", "_", "."), got "this-name-is-too-long"',
    'kp.yaml: tundra.tun.io: expected one of thread, inline, got "fast"',
    'kp.yaml: tundra.dns.upstreams: item 0: expected an address like "1.1.1.1" or "10.0.0.2:53", got "dns.google"',
    'kp.yaml: detectLocalMode: BridgeInterface is not supported: all pod traffic reaches tundra through one TUN (use ClusterCIDR or NodeCIDR)',
  ])
})

t.test('kind, apiVersion and document shape are checked', async t => {
  t.match(
    errorOf(() => parseKubeProxyConfig('apiVersion: v1\nkind: ConfigMap\n', 'x.yaml')),
    /x\.yaml: kind: expected KubeProxyConfiguration, got "ConfigMap"/,
  )
  t.match(
    errorOf(() => parseKubeProxyConfig('kind: KubeProxyConfiguration\n', 'x.yaml')),
    /x\.yaml: apiVersion: expected kubeproxy\.config\.k8s\.io\/v1alpha1, got null/,
  )
  t.match(
    errorOf(() => parseKubeProxyConfig('- a\n- b\n', 'x.yaml')),
    /x\.yaml: expected a KubeProxyConfiguration mapping, got a list/,
  )
  t.match(
    errorOf(() => parseKubeProxyConfig(HEAD + 'mode: [\n', 'x.yaml')),
    /x\.yaml: invalid YAML/,
  )
  t.match(
    errorOf(() => parseKubeProxyConfig(HEAD + '---\n' + HEAD, 'x.yaml')),
    /expected one KubeProxyConfiguration document, found 2/,
  )
  t.match(
    errorOf(() => readKubeProxyConfig('/nonexistent/kp.yaml')),
    /\/nonexistent\/kp\.yaml: cannot read/,
  )
  t.match(
    errorOf(() => mergeFlags(parseKubeProxyConfig(HEAD + 'iptables: {syncPeriod: 1s, minSyncPeriod: 5s}\n', 'x.yaml'), {})),
    /x\.yaml: iptables\.syncPeriod: must be greater than or equal to minSyncPeriod \(5s\)/,
  )
})

t.test('JSON files work too', async t => {
  const dir = tempDir(t, {
    'kp.json': JSON.stringify({
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      clusterCIDR: '10.0.0.0/8',
      conntrack: { udpTimeout: '1m' },
    }),
  })
  const c = mergeFlags(readKubeProxyConfig(join(dir, 'kp.json')), {})
  t.same(c.clusterCIDRs, ['10.0.0.0/8'])
  t.equal(c.conntrack.udpTimeout, 60)
})

t.test("precedence: kube-proxy's flags apply without --config; with it the file wins except logging and --hostname-override", async t => {
  const file = parseKubeProxyConfig(
    HEAD +
      `
clusterCIDR: 10.244.0.0/16
metricsBindAddress: 127.0.0.1:10249
iptables: {syncPeriod: 1m, minSyncPeriod: 5s, masqueradeAll: true}
conntrack: {udpTimeout: 45s}
tundra: {lb: maglev, dns: {ip: 10.96.0.53}}
`,
    'kp.yaml',
  )
  const flags = {
    clusterCidr: '10.100.0.0/16,fd00::/48',
    metricsBindAddress: '0.0.0.0:9100',
    iptablesMinSyncPeriod: '0s',
    masqueradeAll: 'false',
    conntrackUdpTimeout: '10s',
    conntrackMaxPerCore: '0',
    lb: 'random',
    dnsUpstream: ['1.1.1.1', '8.8.8.8,9.9.9.9'],
    hostnameOverride: ' Node-A ',
    v: '=3',
    unrelatedOption: 'ignored', // other commander options of the command
  }
  const noFile = mergeFlags(undefined, flags, { cpus: 4 })
  t.same(noFile.clusterCIDRs, ['10.100.0.0/16', 'fd00::/48'])
  t.equal(noFile.metricsBindAddress, '0.0.0.0:9100')
  t.equal(noFile.minSyncPeriod, 0, 'the flag: an explicit 0 (immediate)')
  t.equal(noFile.masqueradeAll, false)
  t.equal(noFile.conntrack.udpTimeout, 10)
  t.equal(noFile.conntrack.max, 0, 'maxPerCore 0: leave the limit to the engine')
  t.equal(noFile.logging.verbosity, 3, '-v=3')

  const c = mergeFlags(file, flags, { cpus: 4 })
  t.same(c.clusterCIDRs, ['10.244.0.0/16'], 'the file wins over --cluster-cidr')
  t.equal(c.metricsBindAddress, '127.0.0.1:10249')
  t.equal(c.syncPeriod, 60, 'from the file')
  t.equal(c.minSyncPeriod, 5)
  t.equal(c.masqueradeAll, true)
  t.equal(c.conntrack.udpTimeout, 45)
  t.equal(c.logging.verbosity, 3, 'logging flags override the file')
  t.equal(nodeNameOf(c, 'ignored'), 'node-a', '--hostname-override overrides the file')
  t.equal(c.tundra.lb, 'random', "tundra's own flags override its section")
  t.equal(c.tundra.dns.ip, '10.96.0.53', 'untouched by flags')
  t.same(c.tundra.dns.upstreams, ['1.1.1.1', '8.8.8.8', '9.9.9.9'])
  t.equal(c.warnings.length, 6, 'one warning per kube-proxy flag the file overrides')
  t.match(c.warnings.join('\n'), /--masquerade-all is ignored: with --config, kube-proxy takes iptables\.masqueradeAll from the file .*set it in kp\.yaml/)
  t.equal(nodeNameOf(mergeFlags(undefined, {}), 'MyHost'), 'myhost')

  t.equal(
    errorOf(() => mergeFlags(file, { lb: 'rr', conntrackMin: 'lots' })),
    '--conntrack-min: expected a whole number, got "lots"\n--lb: expected one of random, maglev, got "rr"',
  )
  t.ok(
    RUN_FLAGS.every(f => f.key === f.flag.slice(2).replace(/-([a-z])/g, (_, x: string) => x.toUpperCase())),
    'keys are commander attribute names',
  )
  t.equal(
    errorOf(() => mergeFlags(undefined, { iptablesSyncPeriod: '30' })),
    '--iptables-sync-period: expected a duration like "30s", got "30"',
  )
})

t.test('nodePortAddresses keywords', async t => {
  t.same(resolveNodePortAddresses(['primary', '10.0.0.0/8'], ['172.18.0.10', 'fd00::10']), ['172.18.0.10/32', 'fd00::10/128', '10.0.0.0/8'])
  t.same(resolveNodePortAddresses(['all'], ['172.18.0.10']), ['0.0.0.0/0', '::/0'])
  t.same(resolveNodePortAddresses([], ['172.18.0.10']), [])
  const c = mergeFlags(parseKubeProxyConfig(HEAD + 'nodePortAddresses: [localhost, primary]\n'), {})
  t.match(c.warnings.join('\n'), /localhost is ignored/)
})

t.test('tundra.failover / outlierEjection refused with tun.packetThreads > 1', async t => {
  const err = errorOf(() => mergeFlags(parseKubeProxyConfig(HEAD + 'tundra: {tun: {packetThreads: 2}, failover: {enabled: true}}\n'), {}))
  t.match(err, /failover\.enabled: not supported with tun\.packetThreads 2/)
  const err2 = errorOf(() => mergeFlags(parseKubeProxyConfig(HEAD + 'tundra: {tun: {packetThreads: 2}, outlierEjection: {enabled: true}}\n'), {}))
  t.match(err2, /outlierEjection\.enabled/)
  t.match(mergeFlags(parseKubeProxyConfig(HEAD + 'tundra: {tun: {packetThreads: 2}, signals: {enabled: true}}\n'), {}).tundra.tun, { packetThreads: 2 })
})

t.test('tundra.tun.queues is held to what the TUN device opens (1..64)', async t => {
  t.throws(() => parseKubeProxyConfig(HEAD + 'tundra: {tun: {queues: 65}}\n'), /tundra\.tun\.queues: .*64, got 65/)
  t.equal(mergeFlags(parseKubeProxyConfig(HEAD + 'tundra: {tun: {queues: 64}}\n'), {}, { cpus: 2 }).tundra.tun.queues, 64)
})

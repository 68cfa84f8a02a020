// Metrics and health over HTTP: names and values scraped from a fake dataplane provider (read at scrape time),
// kube-proxy's sync metrics fed by a SyncRunner, and /healthz + /livez flipping with sync health and node deletion.
import t from 'tap'
import { get } from 'node:http'
import { clusterFromText } from '../../src/k8s/index'
import { compileNat, resolveNatConfig } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { NatStat } from '../../src/nat/verdict'
import { TundraMetrics, type DataplaneStats } from '../../src/metrics/registry'
import { natConntrackEntries, natCounterRecord, natDrops, natNoLocalEndpoints, natServiceCounters } from '../../src/metrics/nat'
import { startServers, healthzResponse } from '../../src/metrics/server'
import { SyncRunner } from '../../src/run/sync'
import { ObjectStore, type ChangeSet } from '../../src/run/store'
import { FakeClock } from '../run/helpers/clock'

function fetch(port: number, path: string): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', d => {
        body += d
      })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type']) }))
    }).on('error', reject)
  })
}

/** value of one sample line: name{labels} value */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    if (line.slice(0, i) === series) return Number(line.slice(i + 1))
  }
  return undefined
}

function change(endpoints: string[], trigger?: number): ChangeSet {
  return {
    services: new Set(),
    endpoints: new Set(endpoints),
    nodes: new Set(),
    other: new Set(),
    full: false,
    serviceEvents: 0,
    endpointEvents: endpoints.length,
    triggerTimes: new Map(trigger === undefined ? [] : endpoints.map(e => [e, [trigger]])),
  }
}

function setup(stats: () => DataplaneStats, block = false) {
  const clock = new FakeClock(Date.now())
  let release: (() => void) | undefined
  const runner = new SyncRunner({
    clock,
    minSyncPeriodMs: 1000,
    syncPeriodMs: 30_000,
    log: () => {},
    apply: async () => {
      if (block)
        await new Promise<void>(r => {
          release = r
        })
    },
  })
  let calls = 0
  const metrics = new TundraMetrics({
    dataplane: () => {
      calls++
      return stats()
    },
  })
  metrics.bindSync(runner)
  return { clock, runner, metrics, calls: () => calls, release: () => release?.() }
}

t.test('/metrics: tundra counters come from the provider at scrape time, once per scrape; kube-proxy sync metrics', async t => {
  let packets = 400
  let batches = 100
  const { clock, runner, metrics, calls } = setup(() => ({
    services: [
      { namespace: 'default', service: 'web', port: 'http', packets: 42, newConnections: 7 },
      { namespace: 'default', service: 'web', port: '9090', packets: 1, newConnections: 1 },
    ],
    endpoints: [{ namespace: 'default', service: 'web', port: 'http', endpoint: '10.100.1.2:8080', packets: 40, newConnections: 6 }],
    conntrackEntries: { ipv4: 5, ipv6: 1 },
    drops: { conntrack_full: 3, truncated: 2 },
    dns: {
      queries: { A: 10, AAAA: 4 },
      responses: { NOERROR: 12, NXDOMAIN: 2 },
      requests: 14,
      duration: { bounds: [0.00025, 0.0005, 0.001], counts: [11, 0, 2, 1], sum: 0.5, count: 14 },
      upstream: { requests: 3, cacheHits: 5, cacheMisses: 3, errors: 1, timeouts: 1, overflow: 2, cacheSize: 2 },
      tcp: { open: 1, rejected: 4, closedIdle: 6 },
      udpSendDropped: 3,
    },
    batch: { packets, batches },
    noLocalEndpoints: { internal: 1, external: 2 },
  }))
  const srv = await startServers({
    metricsBindAddress: '127.0.0.1:0',
    healthzBindAddress: '127.0.0.1:0',
    metrics,
    health: () => runner.health(),
    configz: () => ({ mode: 'tundra' }),
    log: () => {},
  })
  t.teardown(() => srv.close())
  runner.start()
  await clock.advance(5000)
  runner.queue(change(['default/web'], clock.now() - 2500))
  await clock.advance(0)
  await runner.whenIdle()

  const r = await fetch(srv.metrics.port, '/metrics')
  t.equal(r.status, 200)
  t.match(r.type, /^text\/plain; version=0\.0\.4/)
  const m = r.body
  t.equal(calls(), 1, 'the provider is read once per scrape, not once per metric')
  t.equal(sample(m, 'tundra_service_packets_total{namespace="default",service="web",port="http"}'), 42)
  t.equal(sample(m, 'tundra_service_new_connections_total{namespace="default",service="web",port="http"}'), 7)
  t.equal(sample(m, 'tundra_service_packets_total{namespace="default",service="web",port="9090"}'), 1)
  t.equal(sample(m, 'tundra_endpoint_new_connections_total{namespace="default",service="web",port="http",endpoint="10.100.1.2:8080"}'), 6)
  t.equal(sample(m, 'tundra_conntrack_entries{family="ipv4"}'), 5)
  t.equal(sample(m, 'tundra_conntrack_entries{family="ipv6"}'), 1)
  t.equal(sample(m, 'tundra_drops_total{reason="conntrack_full"}'), 3)
  t.equal(sample(m, 'tundra_dns_queries_total{type="AAAA"}'), 4)
  t.equal(sample(m, 'tundra_dns_responses_total{rcode="NXDOMAIN"}'), 2)
  // CoreDNS's names, so its dashboards work against tundra (issue 14)
  t.equal(sample(m, 'coredns_dns_requests_total{type="A"}'), 10)
  t.equal(sample(m, 'coredns_dns_responses_total{rcode="NOERROR"}'), 12)
  t.equal(sample(m, 'coredns_dns_request_duration_seconds_bucket{le="0.00025"}'), 11)
  t.equal(sample(m, 'coredns_dns_request_duration_seconds_bucket{le="0.001"}'), 13, 'cumulative')
  t.equal(sample(m, 'coredns_dns_request_duration_seconds_bucket{le="+Inf"}'), 14)
  t.equal(sample(m, 'coredns_dns_request_duration_seconds_count'), 14)
  t.equal(sample(m, 'coredns_dns_request_duration_seconds_sum'), 0.5)
  t.match(m, /^# TYPE coredns_dns_request_duration_seconds histogram$/m)
  t.equal(sample(m, 'coredns_cache_hits_total'), 5)
  t.equal(sample(m, 'coredns_cache_misses_total'), 3)
  t.equal(sample(m, 'coredns_forward_requests_total'), 3)
  t.equal(sample(m, 'coredns_forward_responses_errors_total'), 2)
  t.equal(sample(m, 'coredns_forward_max_concurrent_rejects_total'), 2)
  t.equal(sample(m, 'tundra_dns_tcp_rejected_total'), 4)
  t.equal(sample(m, 'tundra_dns_udp_send_dropped_total'), 3)
  t.equal(sample(m, 'tundra_batch_packets'), 4)
  t.equal(sample(m, 'tundra_tun_packets_total'), 400)
  t.equal(sample(m, 'kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="external"}'), 2)
  t.equal(sample(m, 'kubeproxy_sync_proxy_rules_duration_seconds_count'), 2, 'initial + one partial sync')
  t.equal(sample(m, 'kubeproxy_sync_full_proxy_rules_duration_seconds_count'), 1)
  t.equal(sample(m, 'kubeproxy_sync_partial_proxy_rules_duration_seconds_count'), 1)
  t.equal(sample(m, 'kubeproxy_sync_proxy_rules_last_timestamp_seconds'), clock.now() / 1000)
  t.equal(sample(m, 'kubeproxy_sync_proxy_rules_endpoint_changes_total'), 1)
  t.equal(sample(m, 'kubeproxy_sync_proxy_rules_service_changes_total'), 0)
  t.equal(sample(m, 'kubeproxy_sync_proxy_rules_endpoint_changes_pending'), 0)
  t.equal(sample(m, 'kubeproxy_network_programming_duration_seconds_count'), 1)
  t.equal(sample(m, 'kubeproxy_network_programming_duration_seconds_bucket{le="2"}'), 0)
  t.equal(sample(m, 'kubeproxy_network_programming_duration_seconds_bucket{le="3"}'), 1, '2.5 s')
  t.match(m, /^process_cpu_seconds_total /m)

  // the next scrape sees the new counter values; the batch average is over the interval between scrapes
  packets = 600
  batches = 120
  const m2 = (await fetch(srv.metrics.port, '/metrics')).body
  t.equal(calls(), 2)
  t.equal(sample(m2, 'tundra_batch_packets'), 10)
  t.equal(sample(m2, 'tundra_tun_batches_total'), 120)

  t.equal((await fetch(srv.metrics.port, '/healthz')).body, 'ok')
  t.same(JSON.parse((await fetch(srv.metrics.port, '/configz')).body), { 'kubeproxy.config.k8s.io': { mode: 'tundra' } })
  t.equal((await fetch(srv.metrics.port, '/nope')).status, 404)
})

t.test("/healthz and /livez: kube-proxy's body; 503 when a change stays unapplied for 2 x syncPeriod; node deletion fails only /healthz", async t => {
  const { clock, runner, metrics, release } = setup(() => ({}), true)
  const store = new ObjectStore()
  store.upsert({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1' } })
  runner.followNode(store, 'n1')
  const srv = await startServers({
    metricsBindAddress: '127.0.0.1:0',
    healthzBindAddress: '127.0.0.1:0',
    metrics,
    health: () => runner.health(),
    log: () => {},
  })
  t.teardown(() => srv.close())
  t.not(srv.metrics.port, srv.healthz.port)

  let h = await fetch(srv.healthz.port, '/healthz')
  t.equal(h.status, 200, 'healthy before the first sync is due')
  t.match(h.type, /application\/json/)
  t.match(h.body, /^\{"lastUpdated": "[^"]+","currentTime": "[^"]+", "nodeEligible": true\}$/)
  const body = JSON.parse(h.body) as { lastUpdated: string; currentTime: string }
  t.equal(body.lastUpdated, body.currentTime, 'healthy: lastUpdated is now, as kube-proxy reports it')

  runner.start()
  await clock.advance(0) // the initial sync starts and hangs
  await clock.advance(60_001)
  h = await fetch(srv.healthz.port, '/healthz')
  t.equal(h.status, 503)
  t.match(h.body, /"lastUpdated": "0001-01-01T00:00:00Z"/, "never synced: Go's zero time")
  t.equal((await fetch(srv.healthz.port, '/livez')).status, 503)

  release()
  await runner.whenIdle()
  h = await fetch(srv.healthz.port, '/healthz')
  t.equal(h.status, 200)
  const l = await fetch(srv.healthz.port, '/livez')
  t.equal(l.status, 200)
  t.match(l.body, /^\{"lastUpdated": "[^"]+","currentTime": "[^"]+"\}$/)

  store.upsert({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1', deletionTimestamp: new Date().toISOString() } })
  h = await fetch(srv.healthz.port, '/healthz')
  t.equal(h.status, 503)
  t.match(h.body, /"nodeEligible": false\}$/)
  t.equal((await fetch(srv.healthz.port, '/livez')).status, 200, 'livez ignores node eligibility')

  const m = (await fetch(srv.metrics.port, '/metrics')).body
  t.equal(sample(m, 'kubeproxy_proxy_healthz_total{code="503"}'), 2)
  t.equal(sample(m, 'kubeproxy_proxy_healthz_total{code="200"}'), 2)
  t.equal(sample(m, 'kubeproxy_proxy_livez_total{code="503"}'), 1)
})

t.test('one server when both addresses are the same fixed port', async t => {
  const metrics = new TundraMetrics({ defaultMetrics: false })
  // find a free port, then ask for it twice
  const probe = await startServers({
    metricsBindAddress: '127.0.0.1:0',
    healthzBindAddress: '127.0.0.1:0',
    metrics,
    health: () => ({ healthy: true, nodeEligible: true, now: Date.now() }),
  })
  const port = probe.metrics.port
  await probe.close()
  const srv = await startServers({
    metricsBindAddress: `127.0.0.1:${port}`,
    healthzBindAddress: `127.0.0.1:${port}`,
    metrics,
    health: () => ({ healthy: true, nodeEligible: true, now: Date.now() }),
  })
  t.teardown(() => srv.close())
  t.equal(srv.healthz.port, port)
  t.match((await fetch(port, '/healthz')).body, /nodeEligible/)
  t.equal((await fetch(port, '/metrics')).status, 200)
  // a port in use is an error the caller sees
  await t.rejects(
    startServers({
      metricsBindAddress: `127.0.0.1:${port}`,
      healthzBindAddress: '127.0.0.1:0',
      metrics,
      health: () => ({ healthy: true, nodeEligible: true, now: 0 }),
    }),
    /metricsBindAddress 127\.0\.0\.1:\d+: .*EADDRINUSE/,
  )
})

t.test('healthzResponse for an unhealthy node that synced before', async t => {
  const r = healthzResponse({ healthy: false, nodeEligible: true, lastUpdated: Date.UTC(2025, 0, 1), now: Date.UTC(2025, 0, 1, 0, 5) })
  t.equal(r.status, 503)
  t.equal(r.body, '{"lastUpdated": "2025-01-01T00:00:00.000Z","currentTime": "2025-01-01T00:05:00.000Z", "nodeEligible": true}')
})

t.test('NAT engine readers: per service port (families summed), drops, no-local-endpoints', async t => {
  const { cluster, problems } = clusterFromText(
    `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIPs: [10.96.0.10, fd00:96::10]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: RequireDualStack
  ports: [{name: http, port: 80, targetPort: 8080}, {port: 9090, name: metrics}]
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec: {type: NodePort, clusterIP: 10.96.0.20, externalTrafficPolicy: Local, internalTrafficPolicy: Local, ports: [{port: 80, nodePort: 30080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: lb-1, namespace: default, labels: {kubernetes.io/service-name: lb}}
addressType: IPv4
endpoints: [{addresses: [10.100.2.1], nodeName: other-node}]
ports: [{port: 80}]
`,
    'x.yaml',
    { serviceCIDRs: ['10.96.0.0/12', 'fd00:96::/112'] },
  )
  t.same(problems, [])
  const table = compileNat(cluster, resolveNatConfig({ nodeName: 'this-node', nodeIPs: ['172.18.0.10'], clusterCIDRs: ['10.100.0.0/16'] }))
  const engine = new NatEngine(table)
  table.svcPorts.forEach((sp, id) => {
    if (sp === undefined) return
    engine.svcPackets[id] = sp.name === 'web' && sp.portName === 'http' ? (sp.family === 4 ? 10 : 5) : 1
    engine.svcNew[id] = 1
  })
  engine.counters[NatStat.DROP_CONNTRACK_FULL] = 7
  const rows = natServiceCounters(table, { packets: engine.svcPackets, newConnections: engine.svcNew }).sort((a, b) =>
    `${a.service}/${a.port}` < `${b.service}/${b.port}` ? -1 : 1,
  )
  t.same(rows, [
    { namespace: 'default', service: 'lb', port: '80', packets: 1, newConnections: 1 },
    { namespace: 'default', service: 'web', port: 'http', packets: 15, newConnections: 2 },
    { namespace: 'default', service: 'web', port: 'metrics', packets: 2, newConnections: 2 },
  ])
  const drops = natDrops(natCounterRecord(engine))
  t.equal(drops['conntrack_full'], 7)
  t.equal(drops['no_local_endpoints'], 0)
  // the packet loop's reasons (drop_* in the packet thread's counters) are exported beside NAT's
  const both = natDrops({ ...natCounterRecord(engine), drop_spoofed_source: 3, drop_tx_overflow: 2, drop_truncated: 1 })
  t.same([both['conntrack_full'], both['spoofed_source'], both['tx_overflow'], both['truncated']], [7, 3, 2, 1])
  t.same(natConntrackEntries(natCounterRecord(engine)), { ipv4: 0, ipv6: 0 })
  t.same(natNoLocalEndpoints(table), { internal: 1, external: 1 })
})

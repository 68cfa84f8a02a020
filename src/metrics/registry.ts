// Prometheus metrics: kube-proxy's names where they mean the same thing (dashboards and alerts keep working after a
// switch), tundra_* for the rest.
//
// Nothing here is touched per packet. Dataplane numbers are read at scrape time from a provider (which reads the
// engine's typed-array counters), through collect() callbacks; sync numbers come from SyncRunner observer hooks,
// which fire once per sync or per change, never per packet.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { SourceStatus } from '../run/source'
import type { ChangeSet } from '../run/store'
import type { SyncObserver, SyncRecord, SyncStats } from '../run/sync'
import { registerEndpointMetrics, type BackendRow, type EndpointCounters } from './endpoints'

export interface ServicePortCounters {
  readonly namespace: string
  readonly service: string
  /** the port's name, or its number when unnamed */
  readonly port: string
  readonly packets: number
  readonly newConnections: number
}

/** What the dataplane reports at scrape time; every part optional. Counters are totals since start. */
export interface DataplaneStats {
  readonly services?: readonly ServicePortCounters[]
  readonly endpoints?: readonly EndpointCounters[]
  readonly conntrackEntries?: { readonly ipv4: number; readonly ipv6: number }
  readonly conntrackMax?: { readonly ipv4: number; readonly ipv6: number }
  /** by reason (snake_case) */
  readonly drops?: Readonly<Record<string, number>>
  /** DnsServer.metrics() fits: queries by type name, responses by rcode name, and the parts below when given */
  readonly dns?: DnsStatsData
  /** packets and batches read from the TUN; avg (if given) is used as is for tundra_batch_packets */
  readonly batch?: { readonly packets: number; readonly batches: number; readonly avg?: number; readonly udpCoalesced?: number }
  /** service ports with a Local traffic policy and no local endpoint (kube-proxy's gauge) */
  readonly noLocalEndpoints?: { readonly internal: number; readonly external: number }
  /** per-endpoint golden signals and ejection state (metrics/endpoints.ts) */
  readonly backends?: readonly BackendRow[]
}

/** The cluster DNS server's numbers as plain data (DnsServer.metrics() is one), rendered under CoreDNS's names too. */
export interface DnsStatsData {
  readonly queries: Readonly<Record<string, number>>
  readonly responses: Readonly<Record<string, number>>
  readonly requests?: number
  /** per bucket, not cumulative; counts has one more slot than bounds (+Inf) */
  readonly duration?: { readonly bounds: readonly number[]; readonly counts: readonly number[]; readonly sum: number; readonly count: number }
  readonly upstream?: {
    readonly requests: number
    readonly cacheHits: number
    readonly cacheMisses: number
    readonly errors: number
    readonly timeouts: number
    readonly overflow?: number
    readonly cacheSize: number
  }
  readonly tcp?: { readonly open: number; readonly rejected: number; readonly closedIdle: number }
  /** UDP socket front end: replies the kernel did not take */
  readonly udpSendDropped?: number
}

/** Called once per scrape; it may ask another thread (a promise). */
export type DataplaneProvider = () => DataplaneStats | Promise<DataplaneStats>

export interface MetricsOptions {
  readonly dataplane?: DataplaneProvider
  readonly sync?: () => SyncStats
  readonly source?: () => SourceStatus
  /** process_* and nodejs_* metrics (default true) */
  readonly defaultMetrics?: boolean
  readonly log?: (line: string) => void
}

/** kube-proxy's buckets: ExponentialBuckets(0.001, 2, 15) */
export const SYNC_DURATION_BUCKETS: readonly number[] = Array.from({ length: 15 }, (_, i) => 0.001 * 2 ** i)

/** kube-proxy's (pkg/proxy/metrics): 0.25, 0.5, 1..59 step 1, 60..115 step 5, 120..300 step 30 */
export const PROGRAMMING_BUCKETS: readonly number[] = [
  0.25,
  0.5,
  ...Array.from({ length: 59 }, (_, i) => 1 + i),
  ...Array.from({ length: 12 }, (_, i) => 60 + 5 * i),
  ...Array.from({ length: 7 }, (_, i) => 120 + 30 * i),
]

const SVC_LABELS = ['namespace', 'service', 'port'] as const

export class TundraMetrics {
  readonly registry = new Registry()
  private dataplane: DataplaneProvider | undefined
  private sync: (() => SyncStats) | undefined
  private source: (() => SourceStatus) | undefined
  private readonly log: (line: string) => void
  private snap: DataplaneStats | undefined
  private providerFailed = false
  private lastBatch = { packets: 0, batches: 0 }
  private lastQueuedSeconds = 0

  private readonly syncDuration: Histogram
  private readonly syncFullDuration: Histogram
  private readonly syncPartialDuration: Histogram
  private readonly lastSync: Gauge
  private readonly lastQueued: Gauge
  private readonly programming: Histogram
  private readonly endpointChanges: Counter
  private readonly serviceChanges: Counter
  private readonly healthzTotal: Counter<'code'>
  private readonly livezTotal: Counter<'code'>

  /** Hooks to give SyncRunner (runner.addObserver(metrics.syncObserver), or bindSync). */
  readonly syncObserver: SyncObserver = {
    changesQueued: (c: ChangeSet, atMs: number) => {
      if (c.endpointEvents > 0) this.endpointChanges.inc(c.endpointEvents)
      if (c.serviceEvents > 0) this.serviceChanges.inc(c.serviceEvents)
      this.lastQueuedSeconds = atMs / 1000
      this.lastQueued.set(this.lastQueuedSeconds)
    },
    synced: (r: SyncRecord) => {
      // kube-proxy queues its first sync when the informers have synced (proxier.Sync): so is this the first queue
      if (r.reason === 'initial' && r.startMs / 1000 > this.lastQueuedSeconds) {
        this.lastQueuedSeconds = r.startMs / 1000
        this.lastQueued.set(this.lastQueuedSeconds)
      }
      if (!r.ok) return
      const s = r.durationMs / 1000
      this.syncDuration.observe(s)
      ;(r.full ? this.syncFullDuration : this.syncPartialDuration).observe(s)
      this.lastSync.set((r.startMs + r.durationMs) / 1000)
    },
    programmingLatency: (seconds: number) => this.programming.observe(seconds),
  }

  constructor(opts: MetricsOptions = {}) {
    this.dataplane = opts.dataplane
    this.sync = opts.sync
    this.source = opts.source
    this.log = opts.log ?? (l => process.stderr.write(l + '\n'))
    const registers = [this.registry]
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this

    // ---- kube-proxy's -----------------------------------------------------------------------------------------
    this.syncDuration = new Histogram({
      name: 'kubeproxy_sync_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds',
      buckets: [...SYNC_DURATION_BUCKETS],
      registers,
    })
    this.syncFullDuration = new Histogram({
      name: 'kubeproxy_sync_full_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for full resyncs',
      buckets: [...SYNC_DURATION_BUCKETS],
      registers,
    })
    this.syncPartialDuration = new Histogram({
      name: 'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for partial resyncs',
      buckets: [...SYNC_DURATION_BUCKETS],
      registers,
    })
    this.lastSync = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      help: 'The last time proxy rules were successfully synced',
      registers,
    })
    this.lastQueued = new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
      help: 'The last time a sync of proxy rules was queued',
      registers,
    })
    this.programming = new Histogram({
      name: 'kubeproxy_network_programming_duration_seconds',
      help: 'In Cluster Network Programming Latency in seconds',
      buckets: [...PROGRAMMING_BUCKETS],
      registers,
    })
    this.endpointChanges = new Counter({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total',
      help: 'Cumulative proxy rules Endpoint changes',
      registers,
    })
    this.serviceChanges = new Counter({
      name: 'kubeproxy_sync_proxy_rules_service_changes_total',
      help: 'Cumulative proxy rules Service changes',
      registers,
    })
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
      help: 'Pending proxy rules Endpoint changes',
      registers,
      collect() {
        this.set(self.sync?.().pendingEndpointChanges ?? 0)
      },
    })
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_service_changes_pending',
      help: 'Pending proxy rules Service changes',
      registers,
      collect() {
        this.set(self.sync?.().pendingServiceChanges ?? 0)
      },
    })
    // a gauge despite the name, as in kube-proxy
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
      help: 'Number of services with a Local traffic policy and no endpoints',
      labelNames: ['traffic_policy'],
      registers,
      collect() {
        const n = self.stats().noLocalEndpoints
        this.reset()
        if (n === undefined) return
        this.set({ traffic_policy: 'internal' }, n.internal)
        this.set({ traffic_policy: 'external' }, n.external)
      },
    })
    this.healthzTotal = new Counter({ name: 'kubeproxy_proxy_healthz_total', help: 'Cumulative proxy healthz HTTP status', labelNames: ['code'], registers })
    this.livezTotal = new Counter({ name: 'kubeproxy_proxy_livez_total', help: 'Cumulative proxy livez HTTP status', labelNames: ['code'], registers })

    // ---- tundra's, collected at scrape time ----------------------------------------------------------------------
    const svcCounter = (name: string, help: string, pick: (r: ServicePortCounters) => number): void => {
      new Counter({
        name,
        help,
        labelNames: SVC_LABELS,
        registers,
        collect() {
          this.reset()
          for (const r of self.stats().services ?? []) this.inc({ namespace: r.namespace, service: r.service, port: r.port }, pick(r))
        },
      })
    }
    svcCounter('tundra_service_packets_total', 'Packets translated for a service port (both directions, all families)', r => r.packets)
    svcCounter('tundra_service_new_connections_total', 'New connections to a service port', r => r.newConnections)
    const familyGauge = (name: string, help: string, pick: (s: DataplaneStats) => { ipv4: number; ipv6: number } | undefined): void => {
      new Gauge({
        name,
        help,
        labelNames: ['family'],
        registers,
        collect() {
          const v = pick(self.stats())
          this.reset()
          if (v === undefined) return
          this.set({ family: 'ipv4' }, v.ipv4)
          this.set({ family: 'ipv6' }, v.ipv6)
        },
      })
    }
    familyGauge('tundra_conntrack_entries', 'Tracked connections', s => s.conntrackEntries)
    familyGauge('tundra_conntrack_max', 'Most tracked connections', s => s.conntrackMax)
    const recordCounter = (name: string, help: string, label: string, pick: (s: DataplaneStats) => Readonly<Record<string, number>> | undefined): void => {
      new Counter({
        name,
        help,
        labelNames: [label],
        registers,
        collect() {
          this.reset()
          for (const [k, v] of Object.entries(pick(self.stats()) ?? {})) this.inc({ [label]: k }, v)
        },
      })
    }
    recordCounter('tundra_drops_total', 'Packets dropped, by reason', 'reason', s => s.drops)
    recordCounter('tundra_dns_queries_total', 'DNS queries answered or forwarded, by query type', 'type', s => s.dns?.queries)
    recordCounter('tundra_dns_responses_total', 'DNS responses, by response code', 'rcode', s => s.dns?.responses)
    this.dnsMetrics(registers)
    registerEndpointMetrics(
      registers,
      () => self.stats().endpoints,
      () => self.stats().backends,
    )
    new Counter({
      name: 'tundra_tun_packets_total',
      help: 'Packets read from the TUN device',
      registers,
      collect() {
        this.reset()
        const b = self.stats().batch
        if (b !== undefined) this.inc(b.packets)
      },
    })
    new Counter({
      name: 'tundra_tun_batches_total',
      help: 'Batches read from the TUN device',
      registers,
      collect() {
        this.reset()
        const b = self.stats().batch
        if (b !== undefined) this.inc(b.batches)
      },
    })
    new Counter({
      name: 'tundra_udp_coalesced_total',
      help: 'UDP datagrams written back to the TUN inside the previous datagram of their flow (one USO super-packet: one write saved each)',
      registers,
      collect() {
        this.reset()
        const n = self.stats().batch?.udpCoalesced
        if (n !== undefined) this.inc(n)
      },
    })
    new Gauge({
      name: 'tundra_batch_packets',
      help: 'Average packets per TUN read batch since the previous scrape (rate(tundra_tun_packets_total) / rate(tundra_tun_batches_total) for any window)',
      registers,
      collect() {
        const b = self.stats().batch
        if (b === undefined) {
          this.set(0)
          return
        }
        if (b.avg !== undefined) {
          this.set(b.avg)
          return
        }
        let dp = b.packets - self.lastBatch.packets
        let db = b.batches - self.lastBatch.batches
        if (dp < 0 || db < 0) {
          dp = b.packets
          db = b.batches
        } // counters restarted
        self.lastBatch = { packets: b.packets, batches: b.batches }
        this.set(db > 0 ? dp / db : 0)
      },
    })
    new Counter({
      name: 'tundra_sync_errors_total',
      help: 'Syncs whose apply failed (they are retried as full syncs)',
      registers,
      collect() {
        this.reset()
        this.inc(self.sync?.().errors ?? 0)
      },
    })

    // ---- API watch ----------------------------------------------------------------------------------------------
    const perResource = (name: string, help: string, kind: 'gauge' | 'counter', pick: (r: SourceStatus['resources'][number]) => number): void => {
      const cfg = {
        name,
        help,
        labelNames: ['resource'] as const,
        registers,
        collect(this: Gauge<'resource'> | Counter<'resource'>) {
          this.reset()
          for (const r of self.source?.().resources ?? []) {
            if (this instanceof Gauge) this.set({ resource: r.kind }, pick(r))
            else this.inc({ resource: r.kind }, pick(r))
          }
        },
      }
      if (kind === 'gauge') new Gauge(cfg)
      else new Counter(cfg)
    }
    perResource('tundra_source_synced', '1 once the resource has been read completely', 'gauge', r => (r.synced ? 1 : 0))
    perResource('tundra_source_watch_connected', '1 while a watch stream is open', 'gauge', r => (r.connected ? 1 : 0))
    perResource('tundra_source_relists_total', 'Relists forced by 410 Gone', 'counter', r => r.relists)
    perResource('tundra_source_errors_total', 'Failed list or watch requests (the last good state is kept)', 'counter', r => r.errors)

    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry })
  }

  setDataplane(p: DataplaneProvider | undefined): void {
    this.dataplane = p
  }
  setSource(p: (() => SourceStatus) | undefined): void {
    this.source = p
  }

  /** Wires a SyncRunner in: its hooks feed the histograms, its stats the pending gauges. */
  bindSync(runner: { addObserver(o: SyncObserver): void; stats(): SyncStats }): void {
    runner.addObserver(this.syncObserver)
    this.sync = () => runner.stats()
  }

  /**
   * The objects of the first list (or of the last known state), as kube-proxy counts them: its informers' initial
   * adds go through the change trackers, so its *_changes_total start at the number of Services and EndpointSlices.
   */
  countInitialObjects(services: number, endpointSlices: number): void {
    if (services > 0) this.serviceChanges.inc(services)
    if (endpointSlices > 0) this.endpointChanges.inc(endpointSlices)
  }

  /** The health server counts its answers here. */
  countHealthz(code: number): void {
    this.healthzTotal.inc({ code: String(code) })
  }
  countLivez(code: number): void {
    this.livezTotal.inc({ code: String(code) })
  }

  /** The text exposition: one provider call per scrape, read by every collect() of that scrape. */
  async render(): Promise<{ contentType: string; body: string }> {
    let s: DataplaneStats = {}
    try {
      s = (await this.dataplane?.()) ?? {}
      this.providerFailed = false
    } catch (err) {
      if (!this.providerFailed) this.log(`[metrics] dataplane stats failed: ${(err as Error).message}`)
      this.providerFailed = true
    }
    this.snap = s
    try {
      return { contentType: this.registry.contentType, body: await this.registry.metrics() }
    } finally {
      this.snap = undefined
    }
  }

  /** CoreDNS's metric names (dashboards for CoreDNS keep working), from the same scrape snapshot as the rest. */
  private dnsMetrics(registers: Registry[]): void {
    const dns = (): DnsStatsData | undefined => this.stats().dns
    const scalar = (name: string, help: string, type: 'counter' | 'gauge', pick: (d: DnsStatsData) => number | undefined): void => {
      ;new (type === 'counter' ? Counter : Gauge)({
        name,
        help,
        registers,
        collect(this: Counter | Gauge) {
          this.reset()
          const d = dns()
          const v = d === undefined ? undefined : pick(d)
          if (v !== undefined) (this as Counter).inc(v)
        },
      })
    }
    new Counter({
      name: 'coredns_dns_requests_total',
      help: 'Counter of DNS requests made per type',
      labelNames: ['type'],
      registers,
      collect() {
        this.reset()
        for (const [k, v] of Object.entries(dns()?.queries ?? {})) this.inc({ type: k }, v)
      },
    })
    new Counter({
      name: 'coredns_dns_responses_total',
      help: 'Counter of response status codes',
      labelNames: ['rcode'],
      registers,
      collect() {
        this.reset()
        for (const [k, v] of Object.entries(dns()?.responses ?? {})) this.inc({ rcode: k }, v)
      },
    })
    // a histogram from fixed bucket counters kept on the packet thread: rendered as prom-client renders its own
    const duration = {
      name: 'coredns_dns_request_duration_seconds',
      help: 'Histogram of the time (in seconds) each request took',
      type: 'histogram',
      aggregator: 'sum',
      get: () => {
        const d = dns()?.duration
        const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = []
        if (d !== undefined) {
          let acc = 0
          d.bounds.forEach((le, i) => {
            acc += d.counts[i] ?? 0
            values.push({ metricName: 'coredns_dns_request_duration_seconds_bucket', labels: { le }, value: acc })
          })
          acc += d.counts[d.bounds.length] ?? 0
          values.push({ metricName: 'coredns_dns_request_duration_seconds_bucket', labels: { le: '+Inf' }, value: acc })
          values.push({ metricName: 'coredns_dns_request_duration_seconds_sum', labels: {}, value: d.sum })
          values.push({ metricName: 'coredns_dns_request_duration_seconds_count', labels: {}, value: acc })
        }
        return { name: duration.name, help: duration.help, type: 'histogram', values, aggregator: 'sum' }
      },
    }
    for (const r of registers) r.registerMetric(duration as unknown as Parameters<Registry['registerMetric']>[0])
    scalar('coredns_cache_hits_total', 'The count of cache hits', 'counter', d => d.upstream?.cacheHits)
    scalar('coredns_cache_misses_total', 'The count of cache misses', 'counter', d => d.upstream?.cacheMisses)
    scalar('coredns_cache_entries', 'The number of elements in the cache', 'gauge', d => d.upstream?.cacheSize)
    scalar('coredns_forward_requests_total', 'Counter of requests made per upstream', 'counter', d => d.upstream?.requests)
    scalar('coredns_forward_responses_errors_total', 'Upstream exchanges that failed (errors and timeouts)', 'counter', d =>
      d.upstream === undefined ? undefined : d.upstream.errors + d.upstream.timeouts,
    )
    scalar('coredns_forward_max_concurrent_rejects_total', 'Queries dropped because too many were waiting on upstream', 'counter', d => d.upstream?.overflow)
    scalar(
      'tundra_dns_udp_send_dropped_total',
      'DNS replies over UDP the kernel did not take (socket buffer full, send error)',
      'counter',
      d => d.udpSendDropped,
    )
    scalar('tundra_dns_tcp_connections', 'Open DNS-over-TCP connections', 'gauge', d => d.tcp?.open)
    scalar('tundra_dns_tcp_rejected_total', 'DNS-over-TCP connections closed at accept: too many open', 'counter', d => d.tcp?.rejected)
    scalar(
      'tundra_dns_tcp_idle_closed_total',
      'DNS-over-TCP connections closed for completing no query in time or not reading replies',
      'counter',
      d => d.tcp?.closedIdle,
    )
  }
  private stats(): DataplaneStats {
    return this.snap ?? {}
  }
}

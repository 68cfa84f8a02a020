// Per-backend golden signals and outlier ejection as Prometheus metrics (labels namespace, service, port, endpoint,
// node), collected at scrape time from the rows the packet thread's endpoint book gives (nat/signals.ts).
import { Counter, Gauge, type Registry } from 'prom-client'
import { CONNECT_BUCKETS_MS, type SignalRow } from '../nat/signals'

/** A signal row with the node its endpoint runs on ('' unknown). */
export interface BackendRow extends SignalRow {
  readonly node: string
}

const LABELS = ['namespace', 'service', 'port', 'endpoint', 'node'] as const

function labels(r: BackendRow): Record<(typeof LABELS)[number], string> {
  return { namespace: r.namespace, service: r.service, port: r.port, endpoint: r.endpoint, node: r.node }
}

/** Registers the tundra_endpoint_* signal metrics; `rows` is read at each scrape. */
export function registerSignalMetrics(registers: Registry[], rows: () => readonly BackendRow[] | undefined): void {
  const counter = (name: string, help: string, pick: (r: BackendRow) => number): void => {
    new Counter({
      name,
      help,
      labelNames: LABELS,
      registers,
      collect() {
        this.reset()
        for (const r of rows() ?? []) this.inc(labels(r), pick(r))
      },
    })
  }
  counter('tundra_endpoint_connections_opened_total', 'Connections opened to one endpoint of a service port', r => r.opened)
  counter('tundra_endpoint_connections_failed_total', 'TCP connects to an endpoint that failed (RST, ICMP unreachable, timeout)', r => r.failed)
  counter('tundra_endpoint_ejections_total', 'Times an endpoint was ejected by passive outlier detection', r => r.ejections)
  new Counter({
    name: 'tundra_endpoint_resets_total',
    help: 'TCP resets on connections to an endpoint, by the side that sent them',
    labelNames: [...LABELS, 'side'],
    registers,
    collect() {
      this.reset()
      for (const r of rows() ?? []) {
        this.inc({ ...labels(r), side: 'client' }, r.resetsClient)
        this.inc({ ...labels(r), side: 'endpoint' }, r.resetsEndpoint)
      }
    },
  })
  new Counter({
    name: 'tundra_endpoint_bytes_total',
    help: 'IP bytes on connections to an endpoint, by direction',
    labelNames: [...LABELS, 'direction'],
    registers,
    collect() {
      this.reset()
      for (const r of rows() ?? []) {
        this.inc({ ...labels(r), direction: 'to_endpoint' }, r.bytesTo)
        this.inc({ ...labels(r), direction: 'from_endpoint' }, r.bytesFrom)
      }
    },
  })
  const gauge = (name: string, help: string, pick: (r: BackendRow) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: LABELS,
      registers,
      collect() {
        this.reset()
        for (const r of rows() ?? []) this.set(labels(r), pick(r))
      },
    })
  }
  gauge('tundra_endpoint_connections_active', 'TCP connections to an endpoint opened and not yet closed', r => r.active)
  gauge('tundra_endpoint_ejected', '1 while the endpoint is ejected from new-connection selection', r => (r.ejectedMs > 0 ? 1 : 0))
  // a histogram from fixed bucket counters kept on the packet thread, rendered as prom-client renders its own
  const name = 'tundra_endpoint_connect_seconds'
  const hist = {
    name,
    help: 'TCP connect time to an endpoint: the SYN leaving tundra to the SYN-ACK coming back',
    type: 'histogram',
    aggregator: 'sum',
    get: () => {
      const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = []
      for (const r of rows() ?? []) {
        const lab = labels(r)
        CONNECT_BUCKETS_MS.forEach((ms, i) => {
          values.push({ metricName: `${name}_bucket`, labels: { ...lab, le: ms / 1000 }, value: r.connect.buckets[i] ?? 0 })
        })
        values.push({ metricName: `${name}_bucket`, labels: { ...lab, le: '+Inf' }, value: r.connect.count })
        values.push({ metricName: `${name}_sum`, labels: lab, value: r.connect.sum / 1000 })
        values.push({ metricName: `${name}_count`, labels: lab, value: r.connect.count })
      }
      return { name, help: hist.help, type: 'histogram', values, aggregator: 'sum' }
    },
  }
  for (const r of registers) r.registerMetric(hist as unknown as Parameters<Registry['registerMetric']>[0])
}

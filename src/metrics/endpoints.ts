// Every tundra_endpoint_* family, from the packet thread's one endpoint book (nat/signals.ts), read at scrape time:
// packets and new connections (labels namespace, service, port, endpoint; always), and the golden signals and
// outlier ejection (labels + node; with connect tracking on). natEndpointCounters also names the slots to free:
// the one release protocol (daemon/run-node.ts hands them to the next endpoints request).
import { Counter, Gauge, type Registry } from 'prom-client'
import type { NatTable } from '../nat/compile'
import { endpointNames } from '../nat/endpoints'
import { CONNECT_BUCKETS_MS, slotEndpoint, slotServicePort, slotServicePortUid, type EndpointSnapshot, type SignalRow } from '../nat/signals'
import type { ServicePortCounters } from './registry'

export interface EndpointCounters extends ServicePortCounters {
  /** "ip:port" */
  readonly endpoint: string
}

/**
 * Per (service port, endpoint) packet / new-connection rows from the packet thread's endpoint book, named with the table; `release`
 * lists the counter slots whose endpoint is no longer serving in the table (or whose service port went), for the
 * packet thread to free. A row of an endpoint that went is not reported.
 */
export function natEndpointCounters(table: NatTable, snap: EndpointSnapshot): { rows: EndpointCounters[]; release: number[] } {
  const rows: EndpointCounters[] = []
  const release: number[] = []
  const serving = new Map<number, ReadonlySet<string>>()
  for (let slot = 0; slot < snap.used.length; slot++) {
    if (snap.used[slot] !== 1) continue
    const id = slotServicePort(snap, slot)
    const sp = table.svcPorts[id]
    if (sp === undefined || sp.uid !== slotServicePortUid(snap, slot)) {
      release.push(slot)
      continue
    }
    const endpoint = slotEndpoint(snap, slot, sp.family)
    let names = serving.get(id)
    if (names === undefined) {
      names = new Set(endpointNames(sp.serving))
      serving.set(id, names)
    }
    if (!names.has(endpoint)) {
      release.push(slot)
      continue
    }
    const port = sp.portName !== '' ? sp.portName : String(sp.port)
    rows.push({ namespace: sp.namespace, service: sp.name, port, endpoint, packets: snap.packets[slot]!, newConnections: snap.connections[slot]! })
  }
  return { rows, release }
}

/** A signal row with the node its endpoint runs on ('' unknown). */
export interface BackendRow extends SignalRow {
  readonly node: string
}

const LABELS = ['namespace', 'service', 'port', 'endpoint', 'node'] as const

function labels(r: BackendRow): Record<(typeof LABELS)[number], string> {
  return { namespace: r.namespace, service: r.service, port: r.port, endpoint: r.endpoint, node: r.node }
}

const EP_LABELS = ['namespace', 'service', 'port', 'endpoint'] as const

/** Registers every tundra_endpoint_* metric; `counters` and `rows` are read at each scrape. */
export function registerEndpointMetrics(
  registers: Registry[],
  counters: () => readonly EndpointCounters[] | undefined,
  rows: () => readonly BackendRow[] | undefined,
): void {
  const epCounter = (name: string, help: string, pick: (r: EndpointCounters) => number): void => {
    new Counter({
      name,
      help,
      labelNames: EP_LABELS,
      registers,
      collect() {
        this.reset()
        for (const r of counters() ?? []) this.inc({ namespace: r.namespace, service: r.service, port: r.port, endpoint: r.endpoint }, pick(r))
      },
    })
  }
  epCounter('tundra_endpoint_packets_total', 'Packets translated to or from one endpoint of a service port', r => r.packets)
  epCounter('tundra_endpoint_new_connections_total', 'New connections sent to one endpoint of a service port', r => r.newConnections)
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
  counter('tundra_endpoint_connections_failed_total', 'TCP connects to an endpoint that failed (RST, ICMP unreachable, timeout)', r => r.failed)
  counter('tundra_endpoint_ejections_total', 'Times an endpoint was ejected by passive outlier detection', r => r.ejections)
  /** one counter family split by a second label: a sample per (endpoint, value) */
  const split = (name: string, help: string, label: string, parts: readonly (readonly [string, (r: BackendRow) => number])[]): void => {
    new Counter({
      name,
      help,
      labelNames: [...LABELS, label],
      registers,
      collect() {
        this.reset()
        for (const r of rows() ?? []) for (const [value, pick] of parts) this.inc({ ...labels(r), [label]: value }, pick(r))
      },
    })
  }
  split('tundra_endpoint_resets_total', 'TCP resets on connections to an endpoint, by the side that sent them', 'side', [
    ['client', r => r.resetsClient],
    ['endpoint', r => r.resetsEndpoint],
  ])
  split('tundra_endpoint_bytes_total', 'IP bytes on connections to an endpoint, by direction', 'direction', [
    ['to_endpoint', r => r.bytesTo],
    ['from_endpoint', r => r.bytesFrom],
  ])
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

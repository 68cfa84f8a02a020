// `tundra services`: every frontend this node answers on and the backends behind it, like `cilium service list`,
// with EndpointSlice conditions, local/remote, affinity, traffic policies and (live) per-service-port counters.
import type { DataplaneView } from '../agent/view'
import type { Family, Protocol, ServiceType, TrafficPolicy } from '../model/cluster'
import type { TopologyMode } from '../model/categorize'
import { serviceChains } from './explain'
import { endpointNames } from '../nat/endpoints'
import { textTable } from './common'
import { CONNECT_BUCKETS_MS, type SignalRow } from '../nat/signals'
import { backendsOf, frontendsOf, serviceIndex, sortedSvcPorts, type Backend, type Frontend } from './model'

export interface ServiceRow {
  /** the service port's id in the NAT table (stable while the service port exists) */
  readonly id: number
  /** "ns/name" */
  readonly service: string
  readonly servicePortName: string
  readonly portName: string
  readonly type: ServiceType
  readonly protocol: Protocol
  readonly family: Family
  readonly frontends: readonly Frontend[]
  readonly backends: readonly Backend[]
  readonly affinity: { readonly type: 'ClientIP'; readonly timeoutSeconds: number } | null
  readonly internalTrafficPolicy: TrafficPolicy
  readonly externalTrafficPolicy: TrafficPolicy
  /** backends ClusterIP connections are balanced over (internalTrafficPolicy) */
  readonly internalEndpoints: readonly string[]
  /** backends NodePort/externalIP/LoadBalancer connections from outside are balanced over (externalTrafficPolicy) */
  readonly externalEndpoints: readonly string[]
  /** set when topology hints narrowed the Cluster-policy choice (to this node, or to its zone) */
  readonly topology?: TopologyMode
  /** kube-proxy's KUBE-SVC chain */
  readonly chain: string
  /** live only: packets translated and new connections, since the agent started */
  readonly counters?: { readonly packets: number; readonly newConnections: number }
  /** live only: per-endpoint golden signals and ejection state (when the agent keeps them) */
  readonly signals?: readonly SignalRow[]
}

export interface ServicesReport {
  readonly node: string
  readonly live: boolean
  readonly services: readonly ServiceRow[]
  /** services with no NAT (headless, ExternalName, no ports) */
  readonly withoutNat: readonly { readonly service: string; readonly type: ServiceType; readonly headless: boolean }[]
}

/** The report; `counters` are the live per-service-port counters (none offline). */
export function servicesReport(
  view: DataplaneView,
  counters?: { readonly packets: Float64Array; readonly newConnections: Float64Array },
  signals: readonly SignalRow[] = [],
): ServicesReport {
  const byId = new Map<number, SignalRow[]>()
  for (const r of signals) byId.set(r.id, [...(byId.get(r.id) ?? []), r])
  const table = view.table()
  const index = serviceIndex(view.cluster())
  const node = view.natConfig().nodeName
  const services: ServiceRow[] = []
  for (const sp of sortedSvcPorts(table)) {
    const cs = table.services.get(`${sp.namespace}/${sp.name}`)
    const live = counters !== undefined ? { counters: { packets: counters.packets[sp.id] ?? 0, newConnections: counters.newConnections[sp.id] ?? 0 } } : {}
    services.push({
      id: sp.id,
      service: `${sp.namespace}/${sp.name}`,
      servicePortName: sp.servicePortName,
      portName: sp.portName,
      type: cs?.service.type ?? 'ClusterIP',
      protocol: sp.protocol,
      family: sp.family,
      frontends: frontendsOf(table, sp),
      backends: backendsOf(index, sp, node),
      affinity: sp.affinityTimeout > 0 ? { type: 'ClientIP', timeoutSeconds: sp.affinityTimeout } : null,
      internalTrafficPolicy: sp.internalPolicy,
      externalTrafficPolicy: sp.externalPolicy,
      internalEndpoints: [...endpointNames(sp.internal)].sort(),
      externalEndpoints: [...endpointNames(sp.external)].sort(),
      ...(sp.topology !== '' ? { topology: sp.topology } : {}),
      chain: serviceChains(sp).service,
      ...live,
      ...(byId.has(sp.id) ? { signals: byId.get(sp.id)! } : {}),
    })
  }
  const withoutNat = [...table.services.entries()]
    .filter(([, cs]) => cs.svcPortIds.length === 0)
    .map(([key, cs]) => ({ service: key, type: cs.service.type, headless: cs.service.headless }))
    .sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0))
  return { node, live: counters !== undefined, services, withoutNat }
}

function addr(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`
}

/**
 * `policy`: the Local traffic policy that leaves an active backend out of this frontend's choice; `topology`: the hints
 * that leave a ready backend out of the cluster-wide choice.
 */
function backendLine(b: Backend, i: number, proto: string, used: ReadonlySet<string>, policy?: string, topology?: string, sig?: SignalRow): string {
  const tags = [
    b.state,
    ...(b.state === 'terminating' && !b.serving ? ['not serving'] : []),
    b.local ? 'local' : b.node !== null ? `remote ${b.node}` : 'remote',
  ]
  if (!used.has(b.endpoint)) {
    const why = b.active ? policy : b.state === 'ready' ? topology : undefined
    tags.push(why !== undefined ? `not used: ${why}` : 'not used')
  }
  if (sig !== undefined && sig.ejectedMs > 0) tags.push(`ejected ${Math.ceil(sig.ejectedMs / 1000)}s`)
  return `${i + 1} => ${addr(b.address, b.port)}/${proto} (${tags.join(', ')})`
}

/** One row per frontend (as cilium prints them); backends listed under each. `wide`: the golden signals too. */
export function formatServices(r: ServicesReport, wide = false): string {
  const header = ['ID', 'FRONTEND', 'TYPE', 'SERVICE', 'BACKENDS', 'POLICY', 'AFFINITY']
  // the EJECTED column when the agent keeps endpoint signals
  const withSignals = r.live && r.services.some(s => s.signals !== undefined)
  if (r.live) header.push('PACKETS', 'NEW')
  if (withSignals) header.push('EJECTED')
  const rows: string[][] = []
  for (const s of r.services) {
    const internal = new Set(s.internalEndpoints)
    const external = new Set(s.externalEndpoints)
    s.frontends.forEach((f, i) => {
      const isClusterIP = f.kind === 'ClusterIP'
      const policy = isClusterIP ? `int ${s.internalTrafficPolicy}` : `ext ${s.externalTrafficPolicy}`
      const policyName = isClusterIP ? `internalTrafficPolicy ${s.internalTrafficPolicy}` : `externalTrafficPolicy ${s.externalTrafficPolicy}`
      const localPolicy = policyName.endsWith('Local') ? policyName : undefined
      const topology = s.topology !== undefined ? `topology ${s.topology}` : undefined
      const sig = new Map((s.signals ?? []).map(x => [x.endpoint, x]))
      const backends =
        s.backends.length === 0
          ? '(none)'
          : s.backends.map((b, k) => backendLine(b, k, s.protocol, isClusterIP ? internal : external, localPolicy, topology, sig.get(b.endpoint))).join('\n')
      const row = [
        String(s.id),
        `${addr(f.address, f.port)}/${f.protocol}${f.installed ? '' : ' (conflict)'}`,
        f.kind,
        s.servicePortName,
        backends,
        policy,
        s.affinity === null ? 'None' : `ClientIP ${s.affinity.timeoutSeconds}s`,
      ]
      // counters are per service port: shown once, on its first frontend
      if (r.live) {
        const ejected = (s.signals ?? []).filter(x => x.ejectedMs > 0).length
        row.push(i === 0 ? String(s.counters?.packets ?? 0) : '', i === 0 ? String(s.counters?.newConnections ?? 0) : '')
        if (withSignals) row.push(i === 0 ? String(ejected) : '')
      }
      rows.push(row)
    })
  }
  let out = `services on node ${r.node} (${r.live ? 'live agent' : 'from manifests'})\n`
  out += r.services.length === 0 ? 'no service frontends\n' : textTable(header, rows)
  if (wide && r.live) out += signalsTable(r)
  if (r.withoutNat.length > 0) {
    out += `no NAT: ${r.withoutNat.map(w => `${w.service} (${w.headless ? 'headless' : w.type})`).join(', ')}\n`
  }
  return out
}

/** Per-endpoint golden signals (`tundra services -o wide`): one row per endpoint of each live service port. */
function signalsTable(r: ServicesReport): string {
  const header = ['SERVICE', 'ENDPOINT', 'OPENED', 'ACTIVE', 'FAILED', 'RST(C/E)', 'BYTES(TO/FROM)', 'CONNECT p50/p99', 'EJECTIONS', 'EJECTED']
  const rows: string[][] = []
  for (const s of r.services)
    for (const x of s.signals ?? []) {
      rows.push([
        s.servicePortName,
        x.endpoint,
        String(x.opened),
        String(x.active),
        String(x.failed),
        `${x.resetsClient}/${x.resetsEndpoint}`,
        `${x.bytesTo}/${x.bytesFrom}`,
        x.connect.count === 0 ? '-' : `${quantileMs(x, 0.5)}/${quantileMs(x, 0.99)}`,
        String(x.ejections),
        x.ejectedMs > 0 ? `${Math.ceil(x.ejectedMs / 1000)}s` : '-',
      ])
    }
  return rows.length === 0 ? 'no endpoint signals yet\n' : `\nendpoint signals\n${textTable(header, rows)}`
}

/** The histogram bucket bound holding quantile q of the connect times ("<=Nms"). */
function quantileMs(x: SignalRow, q: number): string {
  const want = q * x.connect.count
  const b = x.connect.buckets.findIndex(c => c >= want)
  const bound = CONNECT_BUCKETS_MS[b]
  return bound === undefined ? `>${CONNECT_BUCKETS_MS[CONNECT_BUCKETS_MS.length - 1]}ms` : `<=${bound}ms`
}

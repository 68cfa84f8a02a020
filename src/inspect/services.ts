// `tundra services`: every frontend this node answers on and the backends behind it, like `cilium service list`,
// with EndpointSlice conditions, local/remote, affinity, traffic policies and (live) per-service-port counters.
import type { DataplaneView } from '../agent/view'
import type { Family, Protocol, ServiceType, TrafficPolicy } from '../model/cluster'
import { serviceChains } from './explain'
import { endpointNames } from '../nat/endpoints'
import { textTable } from './common'
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
  /** kube-proxy's KUBE-SVC chain */
  readonly chain: string
  /** live only: packets translated and new connections, since the agent started */
  readonly counters?: { readonly packets: number; readonly newConnections: number }
}

export interface ServicesReport {
  readonly node: string
  readonly live: boolean
  readonly services: readonly ServiceRow[]
  /** services with no NAT (headless, ExternalName, no ports) */
  readonly withoutNat: readonly { readonly service: string; readonly type: ServiceType; readonly headless: boolean }[]
}

/** The report; `counters` are the live per-service-port counters (none offline). */
export function servicesReport(view: DataplaneView, counters?: { readonly packets: Float64Array; readonly newConnections: Float64Array }): ServicesReport {
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
      chain: serviceChains(sp).service,
      ...live,
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

function backendLine(b: Backend, i: number, proto: string, used: ReadonlySet<string>, policy: string): string {
  const tags = [
    b.state,
    ...(b.state === 'terminating' && !b.serving ? ['not serving'] : []),
    b.local ? 'local' : b.node !== null ? `remote ${b.node}` : 'remote',
  ]
  if (!used.has(b.endpoint)) tags.push(b.active && policy.endsWith('Local') ? `not used: ${policy}` : 'not used')
  return `${i + 1} => ${addr(b.address, b.port)}/${proto} (${tags.join(', ')})`
}

/** One row per frontend (as cilium prints them); backends listed under each. */
export function formatServices(r: ServicesReport): string {
  const header = ['ID', 'FRONTEND', 'TYPE', 'SERVICE', 'BACKENDS', 'POLICY', 'AFFINITY']
  if (r.live) header.push('PACKETS', 'NEW')
  const rows: string[][] = []
  for (const s of r.services) {
    const internal = new Set(s.internalEndpoints)
    const external = new Set(s.externalEndpoints)
    s.frontends.forEach((f, i) => {
      const isClusterIP = f.kind === 'ClusterIP'
      const policy = isClusterIP ? `int ${s.internalTrafficPolicy}` : `ext ${s.externalTrafficPolicy}`
      const policyName = isClusterIP ? `internalTrafficPolicy ${s.internalTrafficPolicy}` : `externalTrafficPolicy ${s.externalTrafficPolicy}`
      const backends =
        s.backends.length === 0 ? '(none)' : s.backends.map((b, k) => backendLine(b, k, s.protocol, isClusterIP ? internal : external, policyName)).join('\n')
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
      if (r.live) row.push(i === 0 ? String(s.counters?.packets ?? 0) : '', i === 0 ? String(s.counters?.newConnections ?? 0) : '')
      rows.push(row)
    })
  }
  let out = `services on node ${r.node} (${r.live ? 'live agent' : 'from manifests'})\n`
  out += r.services.length === 0 ? 'no service frontends\n' : textTable(header, rows)
  if (r.withoutNat.length > 0) {
    out += `no NAT: ${r.withoutNat.map(w => `${w.service} (${w.headless ? 'headless' : w.type})`).join(', ')}\n`
  }
  return out
}

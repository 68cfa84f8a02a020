// What the web view shows, as one JSON document built on the control thread from the same live inspect data as
// `tundra services` and `tundra conntrack list`: services → endpoints with live counters, the top flows, drops by
// reason and DNS counters. Rates are left to the page (two polls apart), so the server keeps no history.
import type { DataplaneView } from '../agent/view'
import type { ConntrackEntry } from '../nat/ctview'
import { servicesReport, type ServiceRow } from '../inspect/services'
import { natDrops } from '../metrics/nat'
import { endpointString } from '../model/names'

/** Where the web view reads from: the agent (a DataplaneView with the packet thread's counters). */
export interface WebSource extends DataplaneView {
  counters(): Promise<Record<string, number>>
  dnsMetrics(): Promise<{ readonly requests: number; readonly responses: Readonly<Record<string, number>> }>
}

/** Flows listed: the top N by bytes (both directions) of the conntrack table. */
const WEB_TOP_FLOWS = 20

export interface WebEndpoint {
  readonly endpoint: string
  readonly state: string
  readonly local: boolean
  readonly node: string | null
  readonly pod: string | null
  /** balanced over by new connections */
  readonly active: boolean
  /** conntrack entries to this endpoint now, and their packets/bytes both ways */
  readonly connections: number
  readonly packets: number
  readonly bytes: number
  /** any further per-endpoint live fields `tundra services` reports (ejection state, signals) are passed through */
  readonly [extra: string]: unknown
}

export interface WebService {
  readonly id: number
  readonly service: string
  readonly servicePortName: string
  readonly protocol: string
  readonly chain: string
  readonly frontends: readonly string[]
  readonly affinity: string
  readonly policy: string
  readonly packets: number
  readonly newConnections: number
  readonly endpoints: readonly WebEndpoint[]
}

export interface WebFlow {
  readonly protocol: string
  readonly state: string
  readonly client: string
  readonly to: string
  readonly endpoint: string
  readonly service: string
  readonly packets: number
  readonly bytes: number
  readonly expiresIn: number
}

export interface WebState {
  readonly node: string
  /** unix ms when this document was made */
  readonly time: number
  readonly live: boolean
  readonly services: readonly WebService[]
  readonly flows: { readonly total: number; readonly top: readonly WebFlow[] }
  /** non-zero drop counters by reason */
  readonly drops: Readonly<Record<string, number>>
  readonly dns: { readonly requests: number; readonly responses: Readonly<Record<string, number>> }
  readonly conntrackEntries: number
}

function tuple(ip: string, port: number): string {
  return port === 0 ? ip : endpointString(ip, port)
}

const flowBytes = (e: ConntrackEntry): number => e.bytes[0] + e.bytes[1]

/** Keeps `out` the `n` entries with the most bytes seen so far, largest first (no full sort, nothing else kept). */
function keepTop(out: ConntrackEntry[], e: ConntrackEntry, n: number): void {
  const b = flowBytes(e)
  if (n === 0 || (out.length === n && b <= flowBytes(out[n - 1]!))) return
  let i = out.length
  while (i > 0 && flowBytes(out[i - 1]!) < b) i--
  out.splice(i, 0, e)
  if (out.length > n) out.pop()
}

/** One snapshot of everything the page shows. Cost: one conntrack walk in chunks, on this (the control) thread. */
export async function webState(src: WebSource, topFlows = WEB_TOP_FLOWS): Promise<WebState> {
  const live = src.live()
  // per endpoint of a service port: connections, packets, bytes (the reply tuple's source is the endpoint); the table
  // is streamed a chunk at a time, so a poll keeps only these sums and the top flows, never the whole table
  const perEndpoint = new Map<string, { connections: number; packets: number; bytes: number }>()
  const topEntries: ConntrackEntry[] = []
  let total = 0
  const visit = (e: ConntrackEntry): void => {
    total++
    keepTop(topEntries, e, topFlows)
    if (e.svcPortId < 0) return
    const k = `${e.svcPortId}|${endpointString(e.reply.src, e.reply.sport)}`
    const c = perEndpoint.get(k) ?? { connections: 0, packets: 0, bytes: 0 }
    c.connections++
    c.packets += e.packets[0] + e.packets[1]
    c.bytes += flowBytes(e)
    perEndpoint.set(k, c)
  }
  const [sc, , counters, dns] = await Promise.all([
    live?.serviceCounters(),
    live?.conntrack(visit),
    live === undefined ? Promise.resolve({} as Record<string, number>) : src.counters(),
    live === undefined ? Promise.resolve({ requests: 0, responses: {} }) : src.dnsMetrics(),
  ])
  const report = servicesReport(src, sc)
  const services = report.services.map(
    (s: ServiceRow): WebService => ({
      id: s.id,
      service: s.service,
      servicePortName: s.servicePortName,
      protocol: s.protocol,
      chain: s.chain,
      frontends: s.frontends.map(f => `${f.kind} ${tuple(f.address, f.port)}`),
      affinity: s.affinity === null ? 'None' : `ClientIP ${s.affinity.timeoutSeconds}s`,
      policy: `int ${s.internalTrafficPolicy}, ext ${s.externalTrafficPolicy}`,
      packets: s.counters?.packets ?? 0,
      newConnections: s.counters?.newConnections ?? 0,
      endpoints: s.backends.map(b => {
        const c = perEndpoint.get(`${s.id}|${b.endpoint}`)
        const { address: _a, port: _p, serving: _s, ...rest } = b
        return { ...rest, connections: c?.connections ?? 0, packets: c?.packets ?? 0, bytes: c?.bytes ?? 0 }
      }),
    }),
  )
  const top = topEntries.map(
    (e): WebFlow => ({
      protocol: e.protocol,
      state: e.state,
      client: tuple(e.orig.src, e.orig.sport),
      to: tuple(e.orig.dst, e.orig.dport),
      endpoint: tuple(e.reply.src, e.reply.sport),
      service: e.service,
      packets: e.packets[0] + e.packets[1],
      bytes: e.bytes[0] + e.bytes[1],
      expiresIn: e.expiresIn,
    }),
  )
  const drops: Record<string, number> = {}
  for (const [k, v] of Object.entries(natDrops(counters))) if (v > 0) drops[k] = v
  return {
    node: report.node,
    time: Date.now(),
    live: live !== undefined,
    services,
    flows: { total, top },
    drops,
    dns: { requests: dns.requests, responses: { ...dns.responses } },
    conntrackEntries: counters['conntrack_entries'] ?? total,
  }
}

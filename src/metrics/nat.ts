// Reading the NAT engine's counters into DataplaneStats parts, at scrape time (never per packet).
import type { NatTable } from '../nat/compile'
import { NAT_STAT_NAMES, type NatEngine } from '../nat/engine'
import type { ServicePortCounters } from './registry'

/** Per service port (IPv4 and IPv6 slots of one port summed), from engine.svcPackets / svcNew. */
export function natServiceCounters(engine: NatEngine): ServicePortCounters[] {
  const rows = new Map<string, { namespace: string; service: string; port: string; packets: number; newConnections: number }>()
  const ports = engine.table.svcPorts
  for (let id = 0; id < ports.length; id++) {
    const sp = ports[id]
    if (sp === undefined) continue
    const port = sp.portName !== '' ? sp.portName : String(sp.port)
    const k = `${sp.namespace}/${sp.name}/${port}`
    let r = rows.get(k)
    if (r === undefined) {
      r = { namespace: sp.namespace, service: sp.name, port, packets: 0, newConnections: 0 }
      rows.set(k, r)
    }
    r.packets += engine.svcPackets[id] ?? 0
    r.newConnections += engine.svcNew[id] ?? 0
  }
  return [...rows.values()]
}

/** The engine's drop_* counters, by reason without the prefix (no_local_endpoints, conntrack_full, ...). */
export function natDrops(engine: NatEngine): Record<string, number> {
  const out: Record<string, number> = {}
  NAT_STAT_NAMES.forEach((name, i) => {
    if (name.startsWith('drop_')) out[name.slice(5)] = engine.counters[i] ?? 0
  })
  return out
}

export function natConntrackEntries(engine: NatEngine): { ipv4: number; ipv6: number } {
  return { ipv4: engine.v4.ct.count, ipv6: engine.v6.ct.count }
}

export function natConntrackMax(engine: NatEngine): { ipv4: number; ipv6: number } {
  return { ipv4: engine.v4.ct.max, ipv6: engine.v6.ct.max }
}

/**
 * kube-proxy's no_local_endpoints gauge: service ports whose internal (or external) traffic policy is Local, that
 * have endpoints, none of them on this node. External counts only ports reachable from outside (NodePort,
 * externalIPs, LoadBalancer), as kube-proxy's ExternalPolicyLocal() does.
 */
export function natNoLocalEndpoints(table: NatTable): { internal: number; external: number } {
  let internal = 0
  let external = 0
  for (const sp of table.svcPorts) {
    if (sp === undefined) continue
    const noLocal = sp.cluster.count > 0 && sp.local.count === 0
    if (!noLocal) continue
    if (sp.internalPolicy === 'Local') internal++
    const exposed = sp.nodePort > 0 || sp.externalIPs.length > 0 || sp.loadBalancerIPs.length > 0
    if (sp.externalPolicy === 'Local' && exposed) external++
  }
  return { internal, external }
}

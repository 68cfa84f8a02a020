// Reading the NAT engine's counters into DataplaneStats parts, at scrape time (never per packet).
import type { NatTable } from '../nat/compile'
import { type NatEngine } from '../nat/engine'
import { NAT_STAT_NAMES } from '../nat/verdict'
import type { ServicePortCounters } from './registry'

/** The engine's counters by name as the packet thread reports them: nat_<stat>, conntrack_entries_ipv4/6, conntrack_max_ipv4/6. */
export function natCounterRecord(engine: NatEngine): Record<string, number> {
  const out: Record<string, number> = {}
  NAT_STAT_NAMES.forEach((name, i) => {
    out[`nat_${name}`] = engine.counters[i] ?? 0
  })
  out['conntrack_entries'] = engine.v4.ct.count + engine.v6.ct.count
  out['conntrack_entries_ipv4'] = engine.v4.ct.count
  out['conntrack_entries_ipv6'] = engine.v6.ct.count
  out['conntrack_max_ipv4'] = engine.v4.ct.max
  out['conntrack_max_ipv6'] = engine.v6.ct.max
  return out
}

/** Per service port (IPv4 and IPv6 slots of one port summed), from the engine's per-id packets / new connections. */
export function natServiceCounters(table: NatTable, c: { readonly packets: Float64Array; readonly newConnections: Float64Array }): ServicePortCounters[] {
  const rows = new Map<string, { namespace: string; service: string; port: string; packets: number; newConnections: number }>()
  const ports = table.svcPorts
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
    r.packets += c.packets[id] ?? 0
    r.newConnections += c.newConnections[id] ?? 0
  }
  return [...rows.values()]
}

/**
 * Every dropped packet by reason without the prefix: NAT's (nat_drop_*: no_local_endpoints, conntrack_full, ...) and
 * the packet loop's (drop_*: truncated, spoofed_source, vxlan_not_peer, ttl_exceeded, tx_overflow, ...). The two
 * sets of names do not overlap; a loop reason that did would be summed, not lost.
 */
export function natDrops(counters: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const name of NAT_STAT_NAMES) if (name.startsWith('drop_')) out[name.slice(5)] = counters[`nat_${name}`] ?? 0
  for (const [k, v] of Object.entries(counters)) if (k.startsWith('drop_')) out[k.slice(5)] = (out[k.slice(5)] ?? 0) + v
  return out
}

export function natConntrackEntries(counters: Readonly<Record<string, number>>): { ipv4: number; ipv6: number } {
  return { ipv4: counters['conntrack_entries_ipv4'] ?? 0, ipv6: counters['conntrack_entries_ipv6'] ?? 0 }
}

export function natConntrackMax(counters: Readonly<Record<string, number>>): { ipv4: number; ipv6: number } {
  return { ipv4: counters['conntrack_max_ipv4'] ?? 0, ipv6: counters['conntrack_max_ipv6'] ?? 0 }
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

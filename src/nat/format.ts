// formatNatTable: the NAT table as order-normalised text, for golden tests and `tundra dump`.

import type { Family } from '../model/cluster'
import type { TopologyMode } from '../model/categorize'
import type { NatTable } from './compile'
import { cmp, protoPort } from './compile'
import { addrWords, cidrListToStrings, wordsToString } from './addr'
import { parseIpWords } from '../wire/addr'
import { EP_LOCAL, EP_TERMINATING, endpointNames, epFlags } from './endpoints'
import type { EndpointSet } from './endpoints'

function setLine(set: EndpointSet): string {
  if (set.count === 0) return '(none)'
  // With Maglev, each endpoint's share of the lookup table (a fingerprint of the table itself).
  const slots = new Uint32Array(set.count)
  if (set.maglev !== null) for (const i of set.maglev) slots[i]!++
  const names = endpointNames(set)
  const parts: string[] = []
  for (let i = 0; i < set.count; i++) {
    const tags: string[] = []
    const f = epFlags(set, i)
    if (f & EP_LOCAL) tags.push('local')
    if (f & EP_TERMINATING) tags.push('terminating')
    if (set.maglev !== null) tags.push(`${slots[i]!} slots`)
    parts.push(tags.length > 0 ? `${names[i]!} (${tags.join(', ')})` : names[i]!)
  }
  return parts.join(', ')
}

/** What topology hints narrowed the cluster endpoints to ('' when they did not): for dump and trace. */
export function topologyScope(mode: TopologyMode, zone: string): string {
  return mode === 'PreferSameNode' ? 'this node' : mode === 'PreferSameZone' ? `zone ${zone}` : ''
}

/**
 * A readable, order-normalised text form of the table: services by namespace/name, their ports by family, protocol,
 * port; endpoints as compiled (sorted by address). Ids, uids and generations are left out so that the dump depends
 * only on the inputs.
 */
export function formatNatTable(table: NatTable): string {
  const c = table.config
  const out: string[] = []
  out.push(
    `# tundra NAT table: node ${c.nodeName}, lb ${c.lb}${c.lb === 'maglev' ? ` (M=${c.maglevTableSize})` : ''}, icmp ${c.icmpMode}${c.masqueradeAll ? ', masquerade-all' : ''}`,
  )
  for (const ft of [table.v4, table.v6]) {
    if (ft.nodeAddrs.length === 0 && ft.clusterCidrs.length === 0) continue
    const addrs: string[] = []
    for (let r = 0; r < ft.nodeAddrs.length; r += ft.aw) addrs.push(wordsToString(ft.nodeAddrs, r, ft.family))
    const np: string[] = []
    for (let r = 0; r < ft.nodePortAddrs.length; r += ft.aw) np.push(wordsToString(ft.nodePortAddrs, r, ft.family))
    out.push(
      `# ipv${ft.family}: node ${addrs.join(', ') || '(none)'}; nodeports on ${np.join(', ') || '(none)'}; cluster ${cidrListToStrings(ft.clusterCidrs, ft.family).join(', ') || '(none)'}; masquerade to ${ft.hasSnat ? wordsToString(ft.snat, 0, ft.family) : '(none)'}`,
    )
  }
  const keys = [...table.services.keys()].sort(cmp)
  for (const key of keys) {
    const cs = table.services.get(key)!
    const svc = cs.service
    if (cs.svcPortIds.length === 0) {
      out.push(`service ${key} ${svc.type}${svc.headless ? ' headless' : ''}: no NAT`)
      continue
    }
    const head = [`service ${key} ${svc.type}`]
    if (svc.affinityTimeout > 0) head.push(`affinity ClientIP ${svc.affinityTimeout}s`)
    head.push(`internalTrafficPolicy ${svc.internalTrafficPolicy}`, `externalTrafficPolicy ${svc.externalTrafficPolicy}`)
    out.push(head.join(', '))
    const ports = cs.svcPortIds.map(id => table.svcPorts[id]!).filter(Boolean)
    ports.sort((a, b) => a.family - b.family || cmp(a.protocol, b.protocol) || a.port - b.port || cmp(a.portName, b.portName))
    for (const sp of ports) {
      const aw = addrWords(sp.family)
      out.push(`  port ${sp.portName || '-'} ${sp.protocol} ipv${sp.family} -> targetPort ${sp.targetPort}`)
      const fes: string[] = []
      const fmt = (ip: string, port: number): string => (sp.family === 6 ? `[${ip}]:${port}` : `${ip}:${port}`)
      const ft = sp.family === 4 ? table.v4 : table.v6
      const owns = (ip: string, port: number): boolean => {
        parseIpWords(ip, sp.family, ft.fe.key, 0)
        ft.fe.key[aw] = protoPort(sp.proto, port)
        const v = ft.fe.get(0xffffffff)
        return v !== 0xffffffff && Math.floor(v / 4) === sp.id
      }
      const tag = (ip: string, port: number): string => (owns(ip, port) ? '' : ' (conflict: not installed)')
      fes.push(`    frontend ClusterIP ${fmt(sp.clusterIP, sp.port)}${tag(sp.clusterIP, sp.port)}`)
      if (sp.nodePort > 0) {
        for (let r = 0; r < ft.nodePortAddrs.length; r += aw) {
          const ip = wordsToString(ft.nodePortAddrs, r, sp.family)
          fes.push(`    frontend NodePort ${fmt(ip, sp.nodePort)}${tag(ip, sp.nodePort)}`)
        }
      }
      for (const ip of sp.externalIPs)
        fes.push(`    frontend ExternalIP ${fmt(wordsToString(parsed(ip, sp.family), 0, sp.family), sp.port)}${tag(ip, sp.port)}`)
      for (const ip of sp.loadBalancerIPs)
        fes.push(`    frontend LoadBalancer ${fmt(wordsToString(parsed(ip, sp.family), 0, sp.family), sp.port)}${tag(ip, sp.port)}`)
      for (const ip of sp.proxyModeIPs) fes.push(`    skipped LoadBalancer ${fmt(ip, sp.port)} (ipMode Proxy)`)
      out.push(...fes)
      if (sp.sourceRanges.length > 0) out.push(`    sourceRanges ${cidrListToStrings(sp.sourceRanges, sp.family).join(', ')}`)
      out.push(`    cluster endpoints: ${setLine(sp.cluster)}${sp.topology !== '' ? ` (topology: ${topologyScope(sp.topology, table.nodeZone)})` : ''}`)
      if (sp.internalPolicy === 'Local' || sp.externalPolicy === 'Local') out.push(`    local endpoints: ${setLine(sp.local)}`)
      const used = new Set(endpointNames(sp.cluster))
      const extra = endpointNames(sp.serving).filter(n => !used.has(n))
      if (extra.length > 0) out.push(`    serving, not used for new connections: ${extra.join(', ')}`)
    }
    const hc = table.healthChecks.get(key)
    if (hc !== undefined) out.push(`  healthCheckNodePort ${hc.nodePort}: localEndpoints ${hc.localEndpoints}`)
  }
  const probs = [...table.problems].map(p => `problem ${p.object} ${p.field}: ${p.reason}`).sort(cmp)
  out.push(...probs)
  return out.join('\n') + '\n'
}

function parsed(ip: string, family: Family): Uint32Array {
  const w = new Uint32Array(4)
  parseIpWords(ip, family, w, 0)
  return w
}

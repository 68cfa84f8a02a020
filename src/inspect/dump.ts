// `tundra dump`: the rules kube-proxy would program on this node (iptables-save or nft text, byte for byte what
// kubeproxy/dump.ts renders), or the compiled NAT table as readable JSON.
import type { DataplaneView } from '../agent/view'
import type { Family } from '../model/cluster'
import { dumpRules, type DumpOptions } from '../kubeproxy/dump'
import { serviceChains, endpointChain } from './explain'
import { cidrListToStrings, wordsToString } from '../nat/addr'
import { endpointNames } from '../nat/endpoints'
import type { NatTable } from '../nat/compile'
import { InspectError } from './common'
import { dumpOptions, frontendsOf, setMembers, sortedSvcPorts } from './model'

export const DUMP_FORMATS = ['iptables-save', 'nft', 'json'] as const
export type DumpFormat = (typeof DUMP_FORMATS)[number]

/** `proxy`: kube-proxy settings on top of the dataplane's own (tundra dump --config / flags). */
export function dumpText(view: DataplaneView, format: DumpFormat = 'iptables-save', family: Family = 4, proxy: DumpOptions = {}): string {
  if (format === 'json') return JSON.stringify(tableJson(view.table()), null, 2) + '\n'
  const d = dumpRules(view.cluster(), { ...dumpOptions(view.natConfig()), ...proxy })
  if (family === 4) return format === 'nft' ? d.nft : d.iptables
  const text = format === 'nft' ? d.nft6 : d.ip6tables
  if (text === undefined) throw new InspectError('no Service has an IPv6 cluster IP: there are no IPv6 rules')
  return text
}

/** The compiled table in a form a person (or jq) can read: what each service port answers on and where it sends it. */
export function tableJson(table: NatTable): unknown {
  const c = table.config
  const ports = sortedSvcPorts(table)
  const services: Record<string, unknown>[] = []
  const byKey = new Map<string, Record<string, unknown>>()
  for (const key of [...table.services.keys()].sort()) {
    const cs = table.services.get(key)!
    const s = cs.service
    const row: Record<string, unknown> = {
      service: key,
      type: s.type,
      ...(s.headless ? { headless: true } : {}),
      ...(cs.svcPortIds.length === 0 ? { nat: false } : {}),
      sessionAffinity: s.affinityTimeout > 0 ? { type: 'ClientIP', timeoutSeconds: s.affinityTimeout } : 'None',
      internalTrafficPolicy: s.internalTrafficPolicy,
      externalTrafficPolicy: s.externalTrafficPolicy,
      ports: [] as unknown[],
    }
    const hc = table.healthChecks.get(key)
    if (hc !== undefined) row['healthCheck'] = { nodePort: hc.nodePort, localEndpoints: hc.localEndpoints }
    services.push(row)
    byKey.set(key, row)
  }
  for (const sp of ports) {
    const row = byKey.get(`${sp.namespace}/${sp.name}`)
    if (row === undefined) continue
    const chains = serviceChains(sp)
    const used = new Set([...endpointNames(sp.cluster), ...endpointNames(sp.local)])
    const withChain = (set: typeof sp.cluster): unknown[] => setMembers(set).map(m => ({ ...m, chain: endpointChain(sp, m.endpoint) }))
    ;(row['ports'] as unknown[]).push({
      id: sp.id,
      servicePortName: sp.servicePortName,
      portName: sp.portName,
      protocol: sp.protocol,
      family: sp.family,
      clusterIP: sp.clusterIP,
      port: sp.port,
      targetPort: sp.targetPort,
      ...(sp.nodePort > 0 ? { nodePort: sp.nodePort } : {}),
      chains: {
        service: chains.service,
        ...(sp.internalPolicy === 'Local' || sp.externalPolicy === 'Local' ? { local: chains.local } : {}),
        ...(sp.nodePort > 0 || sp.externalIPs.length > 0 || sp.loadBalancerIPs.length > 0 ? { external: chains.external } : {}),
        ...(sp.sourceRanges.length > 0 ? { firewall: chains.firewall } : {}),
      },
      frontends: frontendsOf(table, sp),
      ...(sp.proxyModeIPs.length > 0 ? { skippedLoadBalancerIPs: sp.proxyModeIPs } : {}),
      ...(sp.sourceRanges.length > 0 ? { loadBalancerSourceRanges: cidrListToStrings(sp.sourceRanges, sp.family) } : {}),
      endpoints: {
        cluster: withChain(sp.cluster),
        ...(sp.internalPolicy === 'Local' || sp.externalPolicy === 'Local' ? { local: withChain(sp.local) } : {}),
        servingNotUsed: endpointNames(sp.serving)
          .filter(n => !used.has(n))
          .sort(),
      },
    })
  }
  const addrs = (ft: NatTable['v4']): string[] => {
    const out: string[] = []
    for (let r = 0; r < ft.nodeAddrs.length; r += ft.aw) out.push(wordsToString(ft.nodeAddrs, r, ft.family))
    return out
  }
  return {
    node: { name: c.nodeName, addresses: [...addrs(table.v4), ...addrs(table.v6)] },
    config: {
      clusterCIDRs: c.clusterCIDRs,
      nodePortAddresses: c.nodePortAddresses,
      masqueradeAll: c.masqueradeAll,
      lb: c.lb,
      icmpMode: c.icmpMode,
    },
    generation: table.generation,
    services,
    problems: table.problems,
  }
}

// `tundra dump`: the rules kube-proxy would program on this node (iptables-save or nft text, byte for byte what
// kubeproxy/dump.ts renders), or the compiled NAT table as readable JSON.
import type { DataplaneView } from '../agent/view'
import type { Family } from '../model/cluster'
import { dumpRules, type DumpOptions } from '../kubeproxy/dump'
import { serviceChains, endpointChain } from './explain'
import { cidrListToStrings, wordsToString } from '../nat/addr'
import { endpointNames, epBase, epPort } from '../nat/endpoints'
import type { ConntrackEntry } from '../nat/ctview'
import { SCHED_NAMES, Sched } from '../nat/sched'
import { endpointString } from '../model/names'
import { parseIpWords } from '../wire/addr'
import { renderIpvsadm, type IpvsRealServer, type IpvsVirtualService } from '../kubeproxy/ipvsadm'
import type { NatTable } from '../nat/compile'
import { InspectError } from './common'
import { byEndpointText, dumpOptions, frontendsOf, setMembers, sortedSvcPorts } from './model'

export const DUMP_FORMATS = ['iptables-save', 'nft', 'json', 'ipvsadm'] as const
export type DumpFormat = (typeof DUMP_FORMATS)[number]

/** `proxy`: kube-proxy settings on top of the dataplane's own (tundra dump --config / flags). */
export function dumpText(view: DataplaneView, format: DumpFormat = 'iptables-save', family: Family = 4, proxy: DumpOptions = {}): string {
  if (format === 'json') return JSON.stringify(tableJson(view.table()), null, 2) + '\n'
  if (format === 'ipvsadm') return renderIpvsadm(ipvsServices(view.table(), family, new Map()))
  const d = dumpRules(view.cluster(), { ...dumpOptions(view.natConfig()), ...proxy })
  if (family === 4) return format === 'nft' ? d.nft : d.iptables
  const text = format === 'nft' ? d.nft6 : d.ip6tables
  if (text === undefined) throw new InspectError('no Service has an IPv6 cluster IP: there are no IPv6 rules')
  return text
}

/** `ipvsadm -Ln` of the table, with ActiveConn/InActConn from the agent's conntrack when it runs. */
export async function ipvsadmDump(view: DataplaneView, family: Family): Promise<string> {
  const live = view.live()
  const counts = new Map<string, Map<string, [number, number]>>()
  // streamed a chunk at a time: the table is never held as objects
  if (live !== undefined) await live.conntrack(e => countConn(counts, e))
  return renderIpvsadm(ipvsServices(view.table(), family, counts))
}

/** Connections per virtual service ("tcp 10.96.0.10:53") and real server ("10.100.1.2:53"): [active, inactive]. */
function countConn(out: Map<string, Map<string, [number, number]>>, e: ConntrackEntry): void {
  if (e.svcPortId < 0) return
  const vs = `${e.protocol} ${endpointString(e.orig.dst, e.orig.dport)}`
  let m = out.get(vs)
  if (m === undefined) out.set(vs, (m = new Map()))
  const rs = endpointString(e.reply.src, e.reply.sport)
  const c = m.get(rs) ?? [0, 0]
  // IPVS: ActiveConn counts established TCP connections, InActConn everything else (UDP included)
  if (e.protocol === 'tcp' && e.state === 'ESTABLISHED') c[0]++
  else c[1]++
  m.set(rs, c)
}

/**
 * The virtual services kube-proxy's IPVS mode would have for this table: one per installed frontend, with the
 * endpoint set that frontend uses (weight 1), and weight 0 for a real server that left but still has connections.
 */
function ipvsServices(table: NatTable, family: Family, counts: ReadonlyMap<string, ReadonlyMap<string, [number, number]>>): IpvsVirtualService[] {
  const out: { key: [number, string, Uint32Array, number]; vs: IpvsVirtualService }[] = []
  for (const sp of sortedSvcPorts(table)) {
    if (sp.family !== family) continue
    for (const fe of frontendsOf(table, sp)) {
      if (!fe.installed) continue
      const set = fe.kind === 'ClusterIP' ? sp.internal : sp.external
      const live = counts.get(`${sp.protocol.toLowerCase()} ${endpointString(fe.address, fe.port)}`)
      const names = endpointNames(set)
      const servers: IpvsRealServer[] = []
      for (let i = 0; i < set.count; i++) {
        const c = live?.get(names[i]!) ?? [0, 0]
        servers.push({ address: wordsToString(set.data, epBase(set, i), family), port: epPort(set, i), weight: 1, activeConns: c[0], inactiveConns: c[1] })
      }
      const inSet = new Set(names)
      for (const [rs, c] of live ?? []) {
        if (inSet.has(rs)) continue
        const colon = rs.lastIndexOf(':')
        servers.push({
          address: rs.slice(0, colon).replace(/^\[|\]$/g, ''),
          port: Number(rs.slice(colon + 1)),
          weight: 0,
          activeConns: c[0],
          inactiveConns: c[1],
        })
      }
      servers.sort((a, b) => byEndpointText(endpointString(a.address, a.port), endpointString(b.address, b.port)))
      const addr = new Uint32Array(4)
      parseIpWords(fe.address, family, addr, 0)
      out.push({
        key: [PROTO_ORDER[sp.protocol] ?? 9, fe.address, addr, fe.port],
        vs: {
          protocol: sp.protocol,
          address: fe.address,
          port: fe.port,
          scheduler: SCHED_NAMES[sp.scheduler ?? Sched.RANDOM]!,
          persistent: sp.affinityTimeout,
          servers,
        },
      })
    }
  }
  out.sort((a, b) => a.key[0] - b.key[0] || compareWords(a.key[2], b.key[2]) || a.key[3] - b.key[3])
  return out.map(x => x.vs)
}

/** ipvsadm groups by protocol; within one, tundra orders by address then port (the kernel lists in hash order). */
const PROTO_ORDER: Readonly<Record<string, number>> = { TCP: 0, UDP: 1, SCTP: 2 }

function compareWords(a: Uint32Array, b: Uint32Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return (a[i]! >>> 0) - (b[i]! >>> 0)
  return 0
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
        ...(sp.topology !== '' ? { topology: sp.topology } : {}),
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
      scheduler: c.scheduler,
      icmpMode: c.icmpMode,
    },
    generation: table.generation,
    services,
    problems: table.problems,
  }
}

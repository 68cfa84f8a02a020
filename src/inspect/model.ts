// Reading the compiled NAT table back as plain data: frontends and endpoint sets of a service port, in the order
// kube-proxy would list them. Shared by `dump --format json`, `services` and `trace`.
import type { Cluster, Service, ServicePort } from '../model/cluster'
import type { NatTable, ResolvedNatConfig, SvcPort } from '../nat/compile'
import { FRONTEND_KIND_NAMES, FrontendKind, endpointPort } from '../nat/compile'
import { addrWords, wordsToString } from '../nat/addr'
import { ipFamily, parseIpWords } from '../wire/addr'
import type { EndpointSet } from '../nat/endpoints'
import { EP_LOCAL, EP_TERMINATING, endpointNames, epFlags } from '../nat/endpoints'
import { endpointString } from '../model/names'
import type { DumpOptions } from '../kubeproxy/dump'

export interface Frontend {
  readonly kind: string
  readonly address: string
  readonly port: number
  readonly protocol: string
  /** false when another service port holds the same address:port (a conflict: only one can be installed) */
  readonly installed: boolean
}

/** Which service port the frontend key (address, proto, port) leads to, and as what kind; undefined when none. */
export function frontendAt(table: NatTable, address: string, proto: number, port: number): { sp: SvcPort; kind: number } | undefined {
  const family = ipFamily(address)
  if (family === undefined) return undefined
  const ft = family === 4 ? table.v4 : table.v6
  const aw = addrWords(family)
  parseIpWords(address, family, ft.fe.key, 0)
  ft.fe.key[aw] = ((proto << 16) | port) >>> 0
  const v = ft.fe.get(0xffffffff)
  if (v === 0xffffffff) return undefined
  const sp = table.svcPorts[v >>> 2]
  return sp === undefined ? undefined : { sp, kind: v & 3 }
}

/** Every frontend of a service port, ClusterIP first. */
export function frontendsOf(table: NatTable, sp: SvcPort): Frontend[] {
  const out: Frontend[] = []
  const add = (kind: number, address: string, port: number): void => {
    const hit = frontendAt(table, address, sp.proto, port)
    out.push({ kind: FRONTEND_KIND_NAMES[kind]!, address, port, protocol: sp.protocol, installed: hit !== undefined && hit.sp.id === sp.id })
  }
  add(FrontendKind.CLUSTER_IP, sp.clusterIP, sp.port)
  if (sp.nodePort > 0) {
    const ft = sp.family === 4 ? table.v4 : table.v6
    for (let r = 0; r < ft.nodePortAddrs.length; r += ft.aw) add(FrontendKind.NODE_PORT, wordsToString(ft.nodePortAddrs, r, sp.family), sp.nodePort)
  }
  for (const ip of sp.externalIPs) add(FrontendKind.EXTERNAL_IP, ip, sp.port)
  for (const ip of sp.loadBalancerIPs) add(FrontendKind.LOAD_BALANCER, ip, sp.port)
  return out
}

export interface SetMember {
  readonly endpoint: string
  readonly local: boolean
  readonly terminating: boolean
}

/** kube-proxy sorts endpoints by their "ip:port" text (its rule order); the compiled sets are in address order. */
export function byEndpointText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

export function setMembers(set: EndpointSet): SetMember[] {
  const names = endpointNames(set)
  const out: SetMember[] = []
  for (let i = 0; i < set.count; i++) {
    const f = epFlags(set, i)
    out.push({ endpoint: names[i]!, local: (f & EP_LOCAL) !== 0, terminating: (f & EP_TERMINATING) !== 0 })
  }
  return out.sort((a, b) => byEndpointText(a.endpoint, b.endpoint))
}

/** Services by "ns/name" (one pass, so listing every service port stays linear on a large cluster). */
export function serviceIndex(cluster: Cluster): ReadonlyMap<string, Service> {
  return new Map(cluster.services.map(s => [`${s.namespace}/${s.name}`, s]))
}

export function serviceOf(services: ReadonlyMap<string, Service>, sp: SvcPort): { svc: Service; port: ServicePort } | undefined {
  const svc = services.get(`${sp.namespace}/${sp.name}`)
  const port = svc?.ports.find(p => p.name === sp.portName && p.protocol === sp.protocol)
  return svc !== undefined && port !== undefined ? { svc, port } : undefined
}

export interface Backend {
  readonly endpoint: string
  readonly address: string
  readonly port: number
  /** EndpointSlice conditions: ready; serving but terminating; serving only; not ready */
  readonly state: 'ready' | 'terminating' | 'serving' | 'not-ready'
  readonly serving: boolean
  readonly node: string | null
  /** on this node */
  readonly local: boolean
  /** in a set new connections are balanced over */
  readonly active: boolean
  readonly pod: string | null
}

/** Every endpoint the EndpointSlices list for a service port (of its family), with conditions and whether it is used. */
export function backendsOf(services: ReadonlyMap<string, Service>, sp: SvcPort, nodeName: string): Backend[] {
  const found = serviceOf(services, sp)
  if (found === undefined) return []
  const active = new Set([...endpointNames(sp.cluster), ...endpointNames(sp.local)])
  const out = new Map<string, Backend>()
  for (const ep of found.svc.endpoints) {
    if (ep.family !== sp.family) continue
    const port = endpointPort(ep, found.port)
    if (port < 0) continue
    const endpoint = endpointString(ep.ip, port)
    const state = ep.ready ? 'ready' : ep.terminating ? 'terminating' : ep.serving ? 'serving' : 'not-ready'
    out.set(endpoint, {
      endpoint,
      address: ep.ip,
      port,
      state,
      serving: ep.serving,
      node: ep.nodeName ?? null,
      local: ep.nodeName !== undefined && ep.nodeName === nodeName,
      active: active.has(endpoint),
      pod: ep.podName !== undefined ? `${found.svc.namespace}/${ep.podName}` : null,
    })
  }
  return [...out.values()].sort((a, b) => byEndpointText(a.endpoint, b.endpoint))
}

/** The kube-proxy flags that match a NAT config, so `dump` renders the rules this node's kube-proxy would have. */
export function dumpOptions(c: ResolvedNatConfig): DumpOptions {
  return {
    nodeName: c.nodeName,
    nodeIPs: c.nodeIPs,
    clusterCIDR: c.clusterCIDRs,
    ...(c.nodePortAddresses.length > 0 ? { nodePortAddresses: c.nodePortAddresses } : {}),
    masqueradeAll: c.masqueradeAll,
  }
}

/** Service ports of the table in a stable order: service, family, protocol, port. */
export function sortedSvcPorts(table: NatTable): SvcPort[] {
  const out = table.svcPorts.filter((sp): sp is SvcPort => sp !== undefined)
  return out.sort(
    (a, b) =>
      byEndpointText(`${a.namespace}/${a.name}`, `${b.namespace}/${b.name}`) ||
      a.family - b.family ||
      byEndpointText(a.protocol, b.protocol) ||
      a.port - b.port ||
      byEndpointText(a.portName, b.portName),
  )
}

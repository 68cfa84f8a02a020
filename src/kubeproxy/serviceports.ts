// What kube-proxy's per-family proxier sees of a Cluster: one entry per service port with the endpoints it may use,
// categorized as pkg/proxy/topology.go CategorizeEndpoints does. Shared by the iptables and nftables renderers.
import type { Cluster, Endpoint, Family, Protocol, Service, ServicePort } from '../model/cluster'
import { canonicalCIDR, cidrContains, parseCIDR, parseIP } from '../k8s/ip'
import { endpointString, servicePortName } from '../model/names'
import { lowerProtocol } from './names'
import { epCond, hintBits, nodeZone, usableEndpoints } from '../model/categorize'
import { localhostNodePorts, nodePortIPs as nodePortIPsOf, type ProxyMode } from '../model/nodeports'

/** Options that mirror kube-proxy flags. */
export interface ProxyOptions {
  /** --cluster-cidr: enables the "local traffic" detector (masquerade off-cluster traffic to cluster IPs); one per family */
  readonly clusterCIDR?: string | readonly string[]
  /** --hostname-override: endpoints with this nodeName are local (Local traffic policies) */
  readonly nodeName?: string
  /** this node's IPs (loadBalancerSourceRanges "allow from node", and nodePortAddresses) */
  readonly nodeIPs?: readonly string[]
  /** --nodeport-addresses: CIDRs or 'primary'; NodePorts only on node IPs inside them (see nodePortIPs) */
  readonly nodePortAddresses?: readonly string[]
  /** --iptables-localhost-nodeports (default true): iptables mode also accepts NodePorts on 127.0.0.0/8 */
  readonly localhostNodePorts?: boolean
  /** --masquerade-all */
  readonly masqueradeAll?: boolean
  /** --iptables-masquerade-bit (default 14, mark 0x4000) */
  readonly masqueradeBit?: number
}

export interface ProxyEndpoint {
  readonly ip: string
  readonly port: number
  /** `ip:port` / `[ip]:port`, kube-proxy's sort key and hash input */
  readonly str: string
  readonly ready: boolean
  readonly serving: boolean
  readonly terminating: boolean
  readonly local: boolean
  /** its topology hints as they apply to this node (model/categorize.ts hintBits) */
  readonly hints: number
}

export interface ProxyServicePort {
  readonly service: Service
  readonly port: ServicePort
  /** `ns/name` or `ns/name:port` */
  readonly name: string
  /** lowercase: tcp, udp, sctp */
  readonly protocol: string
  readonly clusterIP: string
  readonly externalIPs: readonly string[]
  /** LoadBalancer ingress IPs in VIP mode */
  readonly loadBalancerVIPs: readonly string[]
  readonly loadBalancerSourceRanges: readonly string[]
  /** seconds; 0 when sessionAffinity is None */
  readonly affinityTimeout: number
  readonly internalPolicyLocal: boolean
  readonly externalPolicyLocal: boolean
  /** nodePort, LB VIP or external IP present */
  readonly externallyAccessible: boolean
  readonly healthCheckNodePort: number
  readonly usesClusterEndpoints: boolean
  readonly usesLocalEndpoints: boolean
  /** every endpoint of this port and family, sorted by `str` */
  readonly endpoints: readonly ProxyEndpoint[]
  readonly clusterEndpoints: readonly ProxyEndpoint[]
  readonly localEndpoints: readonly ProxyEndpoint[]
  /** union of the two above: the endpoints that get a SEP chain */
  readonly allReachableEndpoints: readonly ProxyEndpoint[]
  /** usable endpoints anywhere in the cluster */
  readonly hasEndpoints: boolean
}

function byString(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function ofFamily(ips: readonly string[], family: Family): string[] {
  return ips.filter(ip => parseIP(ip)?.family === family)
}

function cidrsOfFamily(cidrs: readonly string[], family: Family): string[] {
  return cidrs.filter(c => parseCIDR(c)?.ip.family === family)
}

/** The --cluster-cidr of this family, or undefined (local traffic detection off). */
export function clusterCIDRFor(opts: ProxyOptions, family: Family): string | undefined {
  const list = opts.clusterCIDR === undefined ? [] : typeof opts.clusterCIDR === 'string' ? opts.clusterCIDR.split(',') : [...opts.clusterCIDR]
  const c = cidrsOfFamily(
    list.map(s => s.trim()),
    family,
  )[0]
  return c === undefined ? undefined : canonicalCIDR(c)
}

/** The node IP kube-proxy would use for this family (first of nodeIPs). */
export function nodeIPFor(opts: ProxyOptions, family: Family): string | undefined {
  return ofFamily(opts.nodeIPs ?? [], family)[0]
}

function cidrHolds(cidr: string, ip: string): boolean {
  const c = parseCIDR(cidr)
  const p = parseIP(ip)
  return c !== undefined && p !== undefined && cidrContains(c, p)
}

/** NodePortAddresses for this family and mode (model/nodeports.ts): undefined = every local address. */
export function nodePortIPs(opts: ProxyOptions, family: Family, mode: ProxyMode): string[] | undefined {
  return nodePortIPsOf(opts.nodePortAddresses ?? [], family, mode, ofFamily(opts.nodeIPs ?? [], family), cidrHolds)
}

/** Whether NodePorts also answer on 127.0.0.0/8 (model/nodeports.ts localhostNodePorts). */
export function localhostNodePortsOn(opts: ProxyOptions, family: Family, mode: ProxyMode): boolean {
  return localhostNodePorts(opts.localhostNodePorts !== false, opts.nodePortAddresses ?? [], family, mode, nodeIPFor(opts, family), cidrHolds)
}

export function masqueradeMark(opts: ProxyOptions): number {
  return 2 ** (opts.masqueradeBit ?? 14)
}

function isExternallyAccessibleService(svc: Service): boolean {
  return svc.type === 'NodePort' || svc.type === 'LoadBalancer' || (svc.type === 'ClusterIP' && svc.externalIPs.length > 0)
}

/** The endpoints of one service port: endpoint port with the same name and protocol, of the given family. */
function endpointsFor(svc: Service, sp: ServicePort, family: Family, nodeName: string | undefined, zone: string): ProxyEndpoint[] {
  const out = new Map<string, ProxyEndpoint>()
  for (const ep of svc.endpoints as readonly Endpoint[]) {
    if (ep.family !== family) continue
    const p = ep.ports.find(q => q.name === sp.name && q.protocol === sp.protocol)
    if (!p || p.port === 0) continue
    const str = endpointString(ep.ip, p.port)
    const e: ProxyEndpoint = {
      ip: ep.ip,
      port: p.port,
      str,
      ready: ep.ready,
      serving: ep.serving,
      terminating: ep.terminating,
      local: nodeName !== undefined && nodeName !== '' && ep.nodeName === nodeName,
      hints: hintBits(ep.zoneHints, ep.nodeHints, zone, nodeName ?? ''),
    }
    const prev = out.get(str)
    if (!prev || (prev.terminating && !e.terminating)) out.set(str, e)
  }
  return [...out.values()].sort((a, b) => byString(a.str, b.str))
}

/** All service ports of one family that kube-proxy would program, sorted by service port name then protocol. */
export function proxyServicePorts(cluster: Cluster, family: Family, opts: ProxyOptions = {}): ProxyServicePort[] {
  const out: ProxyServicePort[] = []
  const zone = nodeZone(cluster, opts.nodeName ?? '')
  for (const svc of cluster.services) {
    // proxyutil.ShouldSkipService: headless and ExternalName services are not proxied
    if (svc.headless || svc.type === 'ExternalName') continue
    const clusterIP = ofFamily(svc.clusterIPs, family)[0]
    if (clusterIP === undefined) continue
    const externalIPs = ofFamily(svc.externalIPs, family)
    const loadBalancerVIPs = ofFamily(
      svc.loadBalancerIngress.filter(i => i.ipMode === 'VIP').map(i => i.ip),
      family,
    )
    const loadBalancerSourceRanges = cidrsOfFamily(svc.loadBalancerSourceRanges, family)
    const internalPolicyLocal = svc.internalTrafficPolicy === 'Local'
    const externalPolicyLocal = isExternallyAccessibleService(svc) && svc.externalTrafficPolicy === 'Local'
    for (const sp of svc.ports) {
      const externallyAccessible = sp.nodePort !== 0 || loadBalancerVIPs.length > 0 || externalIPs.length > 0
      const usesClusterEndpoints = !internalPolicyLocal || (externallyAccessible && !externalPolicyLocal)
      const usesLocalEndpoints = internalPolicyLocal || (externallyAccessible && externalPolicyLocal)
      const endpoints = endpointsFor(svc, sp, family, opts.nodeName, zone)

      // CategorizeEndpoints (model/categorize.ts)
      const cond = (j: number): number => {
        const e = endpoints[j]!
        return epCond(e.ready, e.serving, e.terminating, e.local, e.hints)
      }
      const sel: number[] = []
      const chosen = (localOnly: boolean): ProxyEndpoint[] => {
        const k = usableEndpoints(endpoints.length, cond, localOnly, sel)
        return sel.slice(0, k).map(j => endpoints[j]!)
      }
      const clusterEndpoints: ProxyEndpoint[] = usesClusterEndpoints ? chosen(false) : []
      const localEndpoints: ProxyEndpoint[] = usesLocalEndpoints ? chosen(true) : []
      // usable endpoints anywhere (the cluster-wide choice, whether or not this port uses it)
      const hasEndpoints = (usesClusterEndpoints ? clusterEndpoints.length : usableEndpoints(endpoints.length, cond, false, sel)) > 0
      let allReachableEndpoints: ProxyEndpoint[] = clusterEndpoints
      if (usesLocalEndpoints) {
        if (!usesClusterEndpoints) allReachableEndpoints = localEndpoints
        else {
          const union = new Map<string, ProxyEndpoint>()
          for (const e of [...clusterEndpoints, ...localEndpoints]) union.set(e.str, e)
          allReachableEndpoints = [...union.values()].sort((a, b) => byString(a.str, b.str))
        }
      }

      out.push({
        service: svc,
        port: sp,
        name: servicePortName(svc.namespace, svc.name, sp.name),
        protocol: lowerProtocol(sp.protocol as Protocol),
        clusterIP,
        externalIPs,
        loadBalancerVIPs,
        loadBalancerSourceRanges,
        affinityTimeout: svc.affinityTimeout,
        internalPolicyLocal,
        externalPolicyLocal,
        externallyAccessible,
        healthCheckNodePort: svc.type === 'LoadBalancer' && externalPolicyLocal ? svc.healthCheckNodePort : 0,
        usesClusterEndpoints,
        usesLocalEndpoints,
        endpoints,
        clusterEndpoints,
        localEndpoints,
        allReachableEndpoints,
        hasEndpoints,
      })
    }
  }
  return out.sort((a, b) => byString(a.name, b.name) || byString(a.protocol, b.protocol))
}

/** Which of a service port's chains kube-proxy writes and where its traffic goes (both proxiers decide it alike). */
export interface ChainPlan<C> {
  readonly usesClusterPolicyChain: boolean
  readonly usesLocalPolicyChain: boolean
  /** the chain ClusterIP traffic jumps to, and whether it has endpoints there */
  readonly internalTrafficChain: C
  readonly hasInternalEndpoints: boolean
  /** the chain external traffic jumps to, and whether it has endpoints there */
  readonly externalPolicyChain: C
  readonly hasExternalEndpoints: boolean
  readonly usesExternalTrafficChain: boolean
}

/** The chain plan of `sp`, given its cluster- and local-policy chain names (proxier.go syncProxyRules). */
export function chainPlan<C>(sp: ProxyServicePort, clusterPolicyChain: C, localPolicyChain: C): ChainPlan<C> {
  const noLocal = sp.localEndpoints.length === 0
  return {
    usesClusterPolicyChain: sp.clusterEndpoints.length > 0 && sp.usesClusterEndpoints,
    usesLocalPolicyChain: !noLocal && sp.usesLocalEndpoints,
    internalTrafficChain: sp.internalPolicyLocal ? localPolicyChain : clusterPolicyChain,
    hasInternalEndpoints: sp.hasEndpoints && !(sp.internalPolicyLocal && noLocal),
    externalPolicyChain: sp.externalPolicyLocal ? localPolicyChain : clusterPolicyChain,
    hasExternalEndpoints: sp.hasEndpoints && !(sp.externalPolicyLocal && noLocal),
    usesExternalTrafficChain: sp.hasEndpoints && sp.externallyAccessible,
  }
}

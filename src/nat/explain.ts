// Why the NAT engine treats a 5-tuple the way it does, as a plain object for `tundra trace` (off the hot path).
//
// It walks the same decisions as engine.ts (conntrack, frontend, source ranges, traffic policy, endpoint set,
// affinity, masquerade) but over the compiled table's objects, and adds kube-proxy's iptables chain names
// (KUBE-SVC/SVL/EXT/FW/SEP-<hash>, from kubeproxy/names.ts) so a trace reads like the rules kube-proxy would have written.

import type { Family, Protocol } from '../model/cluster'
import { addrWords, cidrListToStrings, familyOf, inAddrList, inCidrList, parseAddrWords } from './addr'
import type { NatTable, SvcPort } from './compile'
import type { EndpointSet } from './endpoints'
import { EP_LOCAL, EP_TERMINATING, endpointNames, epBase, epFlags } from './endpoints'
import { FRONTEND_KIND_NAMES, FrontendKind, protoNumber } from './compile'
import type { ConntrackEntry } from './engine'
import { MASQ_REASON_NAMES, MasqReason } from './engine'
import { flowHash } from './select'
import {
  endpointString, serviceExternalChainName, serviceFirewallChainName, servicePortEndpointChainName,
  servicePortPolicyClusterChain,
  servicePortPolicyLocalChainName,
} from '../kubeproxy/names'

export interface TraceQuery {
  readonly src: string
  readonly dst: string
  readonly protocol: Protocol | 'ICMP'
  readonly sport?: number
  readonly dport?: number
}

export interface ExplainedEndpoint {
  readonly endpoint: string
  readonly local: boolean
  readonly terminating: boolean
  /** the --probability of its rule in kube-proxy's chain: 1/(N-i), 1 for the last */
  readonly ruleProbability: number
  /** the resulting chance of a new connection landing here: 1/N */
  readonly share: number
  readonly chain: string
  /** the client is this endpoint: choosing it masquerades (hairpin) */
  readonly hairpin: boolean
}

export interface Explanation {
  readonly tuple: { readonly family: Family; readonly protocol: string; readonly src: string; readonly dst: string; readonly sport: number; readonly dport: number }
  /** pass: not service traffic; tracked: an existing connection; dnat: a new connection is translated */
  readonly verdict: 'pass' | 'tracked' | 'dnat' | 'reject' | 'drop' | 'reply'
  readonly reason: string
  readonly conntrack?: { readonly direction: 'original' | 'reply'; readonly entry: ConntrackEntry }
  readonly frontend?: { readonly kind: string; readonly address: string; readonly port: number; readonly protocol: Protocol }
  readonly service?: {
    readonly namespace: string
    readonly name: string
    readonly portName: string
    readonly servicePortName: string
    readonly family: Family
    readonly chains: { readonly service: string; readonly local: string; readonly external: string; readonly firewall: string }
  }
  readonly sourceRanges?: { readonly ranges: readonly string[]; readonly allowed: boolean }
  readonly trafficPolicy?: { readonly policy: 'Cluster' | 'Local'; readonly endpointSet: 'cluster' | 'local'; readonly why: string }
  readonly endpoints?: readonly ExplainedEndpoint[]
  readonly masquerade?: { readonly always: boolean; readonly reason: string }
  readonly affinity?: { readonly timeoutSeconds: number; readonly pinned?: { readonly endpoint: string; readonly expiresIn: number } }
  readonly lb?: 'random' | 'maglev'
  /** the endpoint Maglev picks for this exact tuple (every node agrees) */
  readonly maglevPick?: string
}

/** The live state explain reports (the engine has it; a control thread asks the packet thread for it). */
export interface ExplainLive {
  findConntrack(family: Family, proto: number, src: string, dst: string, sport: number, dport: number, now: number): { entry: ConntrackEntry; direction: 'original' | 'reply' } | undefined
  findAffinity(sp: SvcPort, client: string, now: number): { endpoint: string; expiresIn: number } | undefined
}

export interface ExplainContext {
  /** live state: conntrack entries and affinity pins are reported when given */
  readonly engine?: ExplainLive
  /** coarse clock for the live state */
  readonly now?: number
}

/** kube-proxy's per-service-port chain names (iptables mode). */
export function serviceChains(sp: SvcPort): { service: string; local: string; external: string; firewall: string } {
  const proto = sp.protocol.toLowerCase()
  return {
    service: servicePortPolicyClusterChain(sp.servicePortName, proto),
    local: servicePortPolicyLocalChainName(sp.servicePortName, proto),
    external: serviceExternalChainName(sp.servicePortName, proto),
    firewall: serviceFirewallChainName(sp.servicePortName, proto),
  }
}

/** kube-proxy's KUBE-SEP chain of one endpoint ("ip:port") of a service port. */
export function endpointChain(sp: SvcPort, endpoint: string): string {
  return servicePortEndpointChainName(sp.servicePortName, sp.protocol.toLowerCase(), endpoint)
}

/** Describes what the engine does with the first packet of `q` (and, with ctx.engine, what it does now). */
export function explain(table: NatTable, q: TraceQuery, ctx: ExplainContext = {}): Explanation {
  const family = familyOf(q.src)
  if (family === 0 || familyOf(q.dst) !== family) throw new TypeError(`src and dst must be addresses of one family (got ${q.src}, ${q.dst})`)
  const sport = q.sport ?? 0
  const dport = q.dport ?? 0
  const tuple = { family, protocol: q.protocol, src: q.src, dst: q.dst, sport, dport }
  const ft = family === 4 ? table.v4 : table.v6
  const aw = addrWords(family)
  const words = new Uint32Array(2 * aw + 1)
  parseAddrWords(q.src, family, words, 0)
  parseAddrWords(q.dst, family, words, aw)
  words[2 * aw] = ((sport << 16) | dport) >>> 0
  const isVip = (): boolean => {
    for (let i = 0; i < aw; i++) ft.vip.key[i] = words[aw + i]!
    return ft.vip.find() >= 0
  }

  if (q.protocol === 'ICMP') {
    if (!isVip()) return { tuple, verdict: 'pass', reason: 'not addressed to a ClusterIP' }
    const mode = table.config.icmpMode
    return {
      tuple,
      verdict: mode === 'reply' ? 'reply' : mode,
      reason: `echo request to a ClusterIP, icmpMode ${mode}`,
    }
  }
  const proto = protoNumber(q.protocol)
  const now = ctx.now ?? Math.floor(Date.now() / 1000)

  const tracked = ctx.engine?.findConntrack(family, proto, q.src, q.dst, sport, dport, now)
  if (tracked !== undefined) {
    const e = tracked.entry
    const to = tracked.direction === 'original'
      ? `${endpointString(e.reply.dst, e.reply.dport)} -> ${endpointString(e.reply.src, e.reply.sport)}`
      : `${endpointString(e.orig.dst, e.orig.dport)} -> ${endpointString(e.orig.src, e.orig.sport)}`
    return {
      tuple,
      verdict: 'tracked',
      reason: `${tracked.direction} direction of a tracked ${e.protocol} connection (${e.state || 'stateless'}${e.service ? `, ${e.service}` : ''}): rewritten to ${to}`,
      conntrack: tracked,
    }
  }

  for (let i = 0; i < aw; i++) ft.fe.key[i] = words[aw + i]!
  ft.fe.key[aw] = ((proto << 16) | dport) >>> 0
  const v = ft.fe.get(0xffffffff)
  if (v === 0xffffffff) {
    if (isVip()) return { tuple, verdict: 'reject', reason: `a ClusterIP, but no service port ${dport}/${q.protocol.toLowerCase()}: rejected (ICMP port unreachable)` }
    return { tuple, verdict: 'pass', reason: 'no service frontend matches: not service traffic' }
  }
  const sp = table.svcPorts[v >>> 2]!
  const kind = v & 3
  const chains = serviceChains(sp)
  const base = {
    tuple,
    frontend: { kind: FRONTEND_KIND_NAMES[kind]!, address: q.dst, port: dport, protocol: sp.protocol },
    service: {
      namespace: sp.namespace, name: sp.name, portName: sp.portName, servicePortName: sp.servicePortName,
      family: sp.family, chains,
    },
    lb: table.config.lb,
  }

  const fromCluster = ft.hasClusterCidrs && inCidrList(ft.clusterCidrs, aw, words, 0)
  let set: EndpointSet
  let masq: number = MasqReason.NONE
  let policy: 'Cluster' | 'Local'
  let why: string
  let sourceRanges: Explanation['sourceRanges']
  if (kind === FrontendKind.CLUSTER_IP) {
    policy = sp.internalPolicy
    set = sp.internal
    why = `internalTrafficPolicy ${policy}`
    if (table.config.masqueradeAll) masq = MasqReason.MASQUERADE_ALL
    else if (ft.hasClusterCidrs && !fromCluster) masq = MasqReason.OFF_CLUSTER
  } else {
    if (kind === FrontendKind.LOAD_BALANCER && sp.sourceRanges.length > 0) {
      const allowed = inCidrList(sp.sourceRanges, aw, words, 0) || inAddrList(sp.allowedLbSources, aw, words, 0)
      sourceRanges = { ranges: cidrListToStrings(sp.sourceRanges, family), allowed }
      if (!allowed) {
        return { ...base, sourceRanges, verdict: 'drop', reason: `source not in loadBalancerSourceRanges (${chains.firewall} drops it)` }
      }
    }
    policy = sp.externalPolicy
    if (policy === 'Local') {
      if (fromCluster) {
        set = sp.cluster
        why = 'externalTrafficPolicy Local, but the source is a pod: short-circuited to the cluster-wide endpoints'
      } else if (inAddrList(ft.nodeAddrs, aw, words, 0)) {
        set = sp.cluster
        masq = MasqReason.LOCAL_SOURCE
        why = 'externalTrafficPolicy Local, but the source is this node: cluster-wide endpoints, masqueraded'
      } else {
        set = sp.local
        why = 'externalTrafficPolicy Local: endpoints on this node only, client address preserved'
      }
    } else {
      set = sp.cluster
      masq = MasqReason.EXTERNAL_CLUSTER_POLICY
      why = 'externalTrafficPolicy Cluster'
    }
  }
  const trafficPolicy = { policy, endpointSet: set === sp.local && set !== sp.cluster ? 'local' as const : 'cluster' as const, why }
  const endpoints: ExplainedEndpoint[] = []
  const n = set.count
  const names = endpointNames(set)
  for (let i = 0; i < n; i++) {
    let hairpin = true
    for (let j = 0; j < aw; j++) if (set.data[epBase(set, i) + j] !== words[j]) hairpin = false
    endpoints.push({
      endpoint: names[i]!,
      local: (epFlags(set, i) & EP_LOCAL) !== 0,
      terminating: (epFlags(set, i) & EP_TERMINATING) !== 0,
      ruleProbability: i === n - 1 ? 1 : 1 / (n - i),
      share: 1 / n,
      chain: endpointChain(sp, names[i]!),
      hairpin,
    })
  }
  const masquerade = { always: masq !== MasqReason.NONE && ft.hasSnat, reason: MASQ_REASON_NAMES[masq]! }
  const common = { ...base, ...(sourceRanges ? { sourceRanges } : {}), trafficPolicy, endpoints, masquerade }
  if (n === 0) {
    if (sp.cluster.count > 0) return { ...common, verdict: 'drop', reason: `${why}, and no usable endpoint on node ${table.config.nodeName}: dropped` }
    return { ...common, verdict: 'reject', reason: 'service has no usable endpoints: rejected (ICMP port unreachable)' }
  }
  let affinity: Explanation['affinity']
  if (sp.affinityTimeout > 0) {
    const pinned = ctx.engine?.findAffinity(sp, q.src, now)
    affinity = pinned !== undefined && names.includes(pinned.endpoint)
      ? { timeoutSeconds: sp.affinityTimeout, pinned }
      : { timeoutSeconds: sp.affinityTimeout }
  }
  let maglevPick: string | undefined
  if (table.config.lb === 'maglev' && set.maglev !== null) {
    maglevPick = names[set.maglev[(flowHash(words, 2 * aw + 1, proto) >>> 0) % set.maglev.length]!]
  }
  const target = affinity?.pinned ? `pinned to ${affinity.pinned.endpoint} by ClientIP affinity`
    : maglevPick !== undefined ? `Maglev picks ${maglevPick}`
      : n === 1 ? `to ${names[0]!}` : `uniformly over ${n} endpoints`
  const masqText = masquerade.always ? `, masqueraded (${masquerade.reason})` : endpoints.some(e => e.hairpin) ? ', masqueraded if it hairpins to itself' : ''
  return {
    ...common,
    ...(affinity ? { affinity } : {}),
    ...(maglevPick !== undefined ? { maglevPick } : {}),
    verdict: 'dnat',
    reason: `${FRONTEND_KIND_NAMES[kind]} of ${sp.servicePortName}: DNAT ${target}${masqText}`,
  }
}


// Why the NAT engine treats a 5-tuple the way it does, as a plain object for `tundra trace` (off the hot path).
//
// The decision itself (frontend, source ranges, traffic policy, endpoint set, masquerade, verdict) is nat/decide.ts,
// the function the engine calls per new connection, run here over the table's image; this file only presents it,
// adding the conntrack/affinity state the engine reports and kube-proxy's iptables chain names
// (KUBE-SVC/SVL/EXT/FW/SEP-<hash>, from kubeproxy/names.ts) so a trace reads like the rules kube-proxy would have written.

import type { Family, Protocol } from '../model/cluster'
import { endpointString } from '../model/names'
import { addrWords, cidrListToStrings } from '../nat/addr'
import { ipFamily, parseIpWords } from '../wire/addr'
import type { NatTable, SvcPort } from '../nat/compile'
import type { EndpointSet } from '../nat/endpoints'
import { EP_LOCAL, EP_TERMINATING, endpointNames, epFlags } from '../nat/endpoints'
import { FRONTEND_KIND_NAMES, FrontendKind, protoNumber } from '../nat/compile'
import type { ConntrackEntry } from '../nat/engine'
import { MASQ_REASON_NAMES, MasqReason } from '../nat/verdict'
import type { ExplainLive } from '../nat/decide'
import { Decided, Decision, NO_FRONTEND, SetReason, decide, decisionTables, frontendOf, isHairpin, isVip } from '../nat/decide'
import { Rec } from '../nat/image'
import { SetView } from '../nat/state'
import { flowHash } from '../nat/select'
import { SCHED_NAMES, SCHED_TEXT, Sched, shIndex } from '../nat/sched'
import { topologyScope } from '../nat/format'
import {
  serviceExternalChainName,
  serviceFirewallChainName,
  servicePortEndpointChainName,
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
  readonly tuple: {
    readonly family: Family
    readonly protocol: string
    readonly src: string
    readonly dst: string
    readonly sport: number
    readonly dport: number
  }
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
  /** the endpoint the source hash picks (scheduler sh) */
  readonly hashPick?: string
  /** the service port's endpoint scheduler (src/nat/sched.ts) */
  readonly scheduler?: string
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
  const family = ipFamily(q.src)
  if (family === undefined || ipFamily(q.dst) !== family) throw new TypeError(`src and dst must be addresses of one family (got ${q.src}, ${q.dst})`)
  const sport = q.sport ?? 0
  const dport = q.dport ?? 0
  const tuple = { family, protocol: q.protocol, src: q.src, dst: q.dst, sport, dport }
  const tb = decisionTables(table)
  const fam = family === 4 ? tb.v4 : tb.v6
  const aw = addrWords(family)
  const words = new Uint32Array(2 * aw + 1)
  parseIpWords(q.src, family, words, 0)
  parseIpWords(q.dst, family, words, aw)
  words[2 * aw] = ((sport << 16) | dport) >>> 0

  if (q.protocol === 'ICMP') {
    if (!isVip(fam, words, aw)) return { tuple, verdict: 'pass', reason: 'not addressed to a ClusterIP' }
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
    const to =
      tracked.direction === 'original'
        ? `${endpointString(e.reply.dst, e.reply.dport)} -> ${endpointString(e.reply.src, e.reply.sport)}`
        : `${endpointString(e.orig.dst, e.orig.dport)} -> ${endpointString(e.orig.src, e.orig.sport)}`
    return {
      tuple,
      verdict: 'tracked',
      reason: `${tracked.direction} direction of a tracked ${e.protocol} connection (${e.state || 'stateless'}${e.service ? `, ${e.service}` : ''}): rewritten to ${to}`,
      conntrack: tracked,
    }
  }

  const v = frontendOf(fam, words, proto, dport)
  if (v === NO_FRONTEND) {
    if (isVip(fam, words, aw))
      return { tuple, verdict: 'reject', reason: `a ClusterIP, but no service port ${dport}/${q.protocol.toLowerCase()}: rejected (ICMP port unreachable)` }
    return { tuple, verdict: 'pass', reason: 'no service frontend matches: not service traffic' }
  }
  const dec = new Decided()
  const verdict = decide(tb, fam, v, words, dec)
  const sp = table.svcPorts[dec.id]!
  const kind = dec.kind
  const chains = serviceChains(sp)
  const base = {
    tuple,
    frontend: { kind: FRONTEND_KIND_NAMES[kind]!, address: q.dst, port: dport, protocol: sp.protocol },
    service: {
      namespace: sp.namespace,
      name: sp.name,
      portName: sp.portName,
      servicePortName: sp.servicePortName,
      family: sp.family,
      chains,
    },
    lb: table.config.lb,
  }
  let sourceRanges: Explanation['sourceRanges']
  if (sp.sourceRanges.length > 0 && kind === FrontendKind.LOAD_BALANCER) {
    sourceRanges = { ranges: cidrListToStrings(sp.sourceRanges, family), allowed: verdict !== Decision.DROP_SOURCE_RANGE }
  }
  if (verdict === Decision.DROP_SOURCE_RANGE) {
    return { ...base, sourceRanges: sourceRanges!, verdict: 'drop', reason: `source not in loadBalancerSourceRanges (${chains.firewall} drops it)` }
  }
  if (verdict === Decision.DROP_LOCALHOST) {
    return { ...base, verdict: 'drop', reason: 'NodePort on 127.0.0.0/8 from a source that is not this node: dropped (localhostNodePorts)' }
  }
  const policy = kind === FrontendKind.CLUSTER_IP ? sp.internalPolicy : sp.externalPolicy
  const why = kind === FrontendKind.CLUSTER_IP ? `internalTrafficPolicy ${policy}` : SET_REASON_TEXT[dec.reason]!
  const set = setOf(sp, dec.which)
  const endpointSet = set === sp.local && set !== sp.cluster ? ('local' as const) : ('cluster' as const)
  const narrowed = endpointSet === 'cluster' && sp.topology !== '' ? `, narrowed by topology hints to ${topologyScope(sp.topology, table.nodeZone)}` : ''
  const trafficPolicy = { policy, endpointSet, why: why + narrowed }
  const endpoints: ExplainedEndpoint[] = []
  const n = set.count
  const names = endpointNames(set)
  const view = tb.view(new SetView(), dec.id, dec.which)
  for (let i = 0; i < n; i++) {
    endpoints.push({
      endpoint: names[i]!,
      local: (epFlags(set, i) & EP_LOCAL) !== 0,
      terminating: (epFlags(set, i) & EP_TERMINATING) !== 0,
      ruleProbability: i === n - 1 ? 1 : 1 / (n - i),
      share: 1 / n,
      chain: endpointChain(sp, names[i]!),
      hairpin: isHairpin(view, i, words),
    })
  }
  const masq = dec.masq
  const masquerade = { always: masq !== MasqReason.NONE && fam.hasSnat, reason: MASQ_REASON_NAMES[masq]! }
  const common = { ...base, ...(sourceRanges ? { sourceRanges } : {}), trafficPolicy, endpoints, masquerade }
  if (verdict === Decision.DROP_NO_LOCAL_ENDPOINTS)
    return { ...common, verdict: 'drop', reason: `${why}, and no usable endpoint on node ${table.config.nodeName}: dropped` }
  if (verdict === Decision.REJECT_NO_ENDPOINTS)
    return { ...common, verdict: 'reject', reason: 'service has no usable endpoints: rejected (ICMP port unreachable)' }
  let affinity: Explanation['affinity']
  if (sp.affinityTimeout > 0) {
    const pinned = ctx.engine?.findAffinity(sp, q.src, now)
    affinity = pinned !== undefined && names.includes(pinned.endpoint) ? { timeoutSeconds: sp.affinityTimeout, pinned } : { timeoutSeconds: sp.affinityTimeout }
  }
  const sched = sp.scheduler ?? Sched.RANDOM
  let maglevPick: string | undefined
  let hashPick: string | undefined
  if (sched === Sched.MH && set.maglev !== null) {
    maglevPick = names[set.maglev[(flowHash(words, 2 * aw + 1, proto) >>> 0) % set.maglev.length]!]
  } else if (sched === Sched.SH && n > 0) {
    hashPick = names[shIndex(words, aw, n)]
  }
  const target = affinity?.pinned
    ? `pinned to ${affinity.pinned.endpoint} by ClientIP affinity`
    : maglevPick !== undefined
      ? `Maglev picks ${maglevPick}`
      : hashPick !== undefined
        ? `the source hash (sh) picks ${hashPick}`
        : n === 1
          ? `to ${names[0]!}`
          : sched === Sched.RANDOM
            ? `uniformly over ${n} endpoints`
            : `${SCHED_TEXT[sched]} over ${n} endpoints`
  const masqText = masquerade.always ? `, masqueraded (${masquerade.reason})` : endpoints.some(e => e.hairpin) ? ', masqueraded if it hairpins to itself' : ''
  return {
    ...common,
    ...(affinity ? { affinity } : {}),
    ...(maglevPick !== undefined ? { maglevPick } : {}),
    ...(hashPick !== undefined ? { hashPick } : {}),
    scheduler: SCHED_NAMES[sched]!,
    verdict: 'dnat',
    reason: `${FRONTEND_KIND_NAMES[kind]} of ${sp.servicePortName}: DNAT ${target}${masqText}`,
  }
}

/** trafficPolicy.why of an external frontend, by SetReason. */
const SET_REASON_TEXT: Readonly<Record<number, string>> = {
  [SetReason.EXTERNAL_CLUSTER]: 'externalTrafficPolicy Cluster',
  [SetReason.EXTERNAL_LOCAL]: 'externalTrafficPolicy Local: endpoints on this node only, client address preserved',
  [SetReason.LOCAL_FROM_POD]: 'externalTrafficPolicy Local, but the source is a pod: short-circuited to the cluster-wide endpoints',
  [SetReason.LOCAL_FROM_NODE]: 'externalTrafficPolicy Local, but the source is this node: cluster-wide endpoints, masqueraded',
}

/** The compiled set behind a record's Rec.*_SET word (the image writes them in this correspondence). */
function setOf(sp: SvcPort, which: number): EndpointSet {
  return which === Rec.INTERNAL_SET ? sp.internal : which === Rec.LOCAL_SET ? sp.local : which === Rec.EXTERNAL_SET ? sp.external : sp.cluster
}

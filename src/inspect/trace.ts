// `tundra trace`: what happens to the first packet of a connection, told as the walk through kube-proxy's iptables
// chains it would take on this node (PREROUTING → KUBE-SERVICES → KUBE-SVC-… → KUBE-SEP-…), with the rule that
// matched at each step, the endpoint choice, masquerade and the rewritten 5-tuple. The decisions are tundra's own
// (nat/explain.ts walks the compiled table the engine uses); each rule is built by the same constructors the iptables
// renderer uses (kubeproxy/iptrules.ts), so a trace line is a line of `tundra dump` (or a real node's iptables-save).
//
// buildTrace() returns plain JSON (it runs inside the agent for an online trace); formatTrace() renders it.
import dnsPacket from 'dns-packet'
import type { DataplaneView } from '../agent/view'
import type { Family, Protocol } from '../model/cluster'
import { explain, endpointChain, type Explanation } from './explain'
import type { SvcPort } from '../nat/compile'
import { inCidrList, parseCidrList } from '../nat/addr'
import { ipFamily, parseIpWords } from '../wire/addr'
import type { ConntrackEntry } from '../nat/engine'
import type { ExplainLive } from '../nat/decide'
import { kubeProxyProbability, probabilityForRemaining } from '../kubeproxy/probability'
import * as ipt from '../kubeproxy/iptrules'
import { endpointString } from '../model/names'
import { Transport } from '../dns/server'
import { InspectError, hostPort, optChoice, optPort, optString, splitAddress } from './common'
import { byEndpointText, frontendAt } from './model'

export const TRACE_PROTOCOLS = ['tcp', 'udp', 'sctp', 'icmp'] as const
export type TraceProtocol = (typeof TRACE_PROTOCOLS)[number]

/** The `trace` request. */
export interface TraceArgs {
  /** IP or IP:PORT */
  readonly src: string
  /** IP, IP:PORT, NAME or NAME:PORT (may be left out when `name` is given) */
  readonly dst?: string
  readonly proto?: TraceProtocol
  readonly sport?: number
  readonly dport?: number
  /** a DNS name to resolve through the cluster DNS first */
  readonly name?: string
}

export interface TraceStep {
  readonly table: 'nat' | 'filter'
  readonly chain: string
  /** the matching rule as iptables-save shows it after `-A <chain>`; '' when no rule of the chain matched */
  readonly rule: string
  readonly note?: string
  /** the service chain that balances over `Trace.endpoints` */
  readonly balance?: boolean
}

export interface TraceEndpoint {
  readonly endpoint: string
  readonly chain: string
  /** kube-proxy's `--probability` (%0.10f of 1/(N-i)); null on the last rule, which takes whatever is left */
  readonly probability: string | null
  /** chance a new connection lands here */
  readonly share: number
  readonly local: boolean
  readonly terminating: boolean
  /** the client is this endpoint (picking it masquerades) */
  readonly hairpin: boolean
  readonly picked: boolean
}

export interface DnsRecord {
  readonly name: string
  readonly type: string
  readonly ttl: number
  readonly data: string
}

export interface DnsTry {
  readonly name: string
  /** NOERROR, NXDOMAIN, … or 'forwarded' (not a cluster name: tundra sends it upstream) */
  readonly result: string
  readonly answers: readonly DnsRecord[]
}

export interface DnsResolution {
  readonly query: string
  readonly qtype: 'A' | 'AAAA'
  /** the search path used: the source pod's resolv.conf (ndots:5), or none for a non-pod source */
  readonly search: readonly string[]
  readonly tries: readonly DnsTry[]
  readonly outcome: 'resolved' | 'nxdomain' | 'nodata' | 'forwarded' | 'no-answer'
  readonly address?: string
}

export interface Trace {
  readonly query: {
    readonly proto: TraceProtocol
    readonly src: string
    readonly sport: number | null
    readonly dst: string
    readonly dport: number | null
    readonly name?: string
  }
  readonly node: string
  /** traced against a running agent (conntrack and affinity state included) */
  readonly live: boolean
  readonly dns?: DnsResolution
  readonly family?: Family
  readonly verdict: Explanation['verdict'] | 'unresolved'
  readonly reason: string
  readonly frontend?: { readonly kind: string; readonly address: string; readonly port: number; readonly protocol: string }
  readonly service?: {
    readonly namespace: string
    readonly name: string
    readonly portName: string
    readonly servicePortName: string
    readonly chains: { readonly service: string; readonly local: string; readonly external: string; readonly firewall: string }
  }
  readonly trafficPolicy?: Explanation['trafficPolicy']
  /** chain names only, nat table unless prefixed `filter ` */
  readonly path: readonly string[]
  readonly steps: readonly TraceStep[]
  readonly endpoints?: readonly TraceEndpoint[]
  readonly pick?: {
    readonly endpoint: string
    readonly chain: string
    /** conntrack: an existing connection; affinity: a ClientIP pin; maglev: the table's choice; only: one endpoint;
     *  hash: not decided until the connection opens (random), the one a hash of the 5-tuple picks is shown */
    readonly how: 'conntrack' | 'affinity' | 'maglev' | 'only' | 'hash'
    readonly note: string
  }
  readonly masquerade?: { readonly masquerade: boolean; readonly reason: string; readonly to?: string }
  /** the packet as it leaves: sport null when masquerade picks a random port */
  readonly rewritten?: { readonly src: string; readonly sport: number | null; readonly dst: string; readonly dport: number }
  readonly conntrack?: { readonly direction: 'original' | 'reply'; readonly entry: ConntrackEntry }
  readonly affinity?: Explanation['affinity']
  readonly icmp?: { readonly mode: string; readonly tundra: string; readonly kubeProxy: string }
  /** live: endpoints of the service port that outlier ejection has taken out of new-connection selection */
  readonly ejected?: readonly { readonly endpoint: string; readonly seconds: number }[]
}

// ---------------------------------------------------------------------------------------------------------------
// Request parsing

const NAME_RE = /^(?=.{1,253}\.?$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/

/** A DNS name (optionally :port); undefined when the text is not a plausible name. */
function splitName(text: string, what: string): { name: string; port?: number } | undefined {
  let name = text
  let port: number | undefined
  const m = /^(.*):(\d+)$/.exec(text)
  if (m) {
    name = m[1]!
    port = Number(m[2])
    if (port > 65535) throw new InspectError(`${what}: ${m[2]} is not a port number`)
  }
  if (!NAME_RE.test(name)) return undefined
  // "10.96.1" is a typo for an address, not a host name (a TLD is never numeric)
  const labels = name.replace(/\.$/, '').split('.')
  if (/^\d+$/.test(labels[labels.length - 1]!)) return undefined
  return port === undefined ? { name } : { name, port }
}

export function parseTraceArgs(args: Record<string, unknown>): TraceArgs {
  const src = optString(args, 'src')
  const dst = optString(args, 'dst')
  const name = optString(args, 'name')
  const proto = optChoice(args, 'proto', TRACE_PROTOCOLS)
  const sport = optPort(args, 'sport')
  const dport = optPort(args, 'dport')
  if (src === undefined) throw new InspectError('give the source: --src IP[:PORT] (a pod, this node, or an outside address)')
  if (dst === undefined && name === undefined) throw new InspectError('give the destination: --dst IP:PORT or NAME:PORT (or --name NAME)')
  return {
    src,
    ...(dst !== undefined ? { dst } : {}),
    ...(name !== undefined ? { name } : {}),
    ...(proto !== undefined ? { proto } : {}),
    ...(sport !== undefined ? { sport } : {}),
    ...(dport !== undefined ? { dport } : {}),
  }
}

// ---------------------------------------------------------------------------------------------------------------
// DNS

function recordData(a: dnsPacket.Answer): string {
  const d = (a as { data?: unknown }).data
  if (typeof d === 'string') return d
  if (d !== null && typeof d === 'object' && 'target' in d) {
    const s = d as { priority?: number; weight?: number; port?: number; target: string }
    return `${s.priority ?? 0} ${s.weight ?? 0} ${s.port ?? 0} ${s.target}`
  }
  return JSON.stringify(d)
}

/** One question to the cluster DNS through the same in-path answer function the dataplane uses. */
function askDns(view: DataplaneView, name: string, qtype: 'A' | 'AAAA'): DnsTry {
  let query: Buffer
  try {
    query = dnsPacket.encode({ type: 'query', id: 0x7472, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: qtype, name, class: 'IN' }] })
  } catch {
    return { name, result: 'FORMERR', answers: [] }
  }
  const out = Buffer.alloc(65535)
  // TCP: the whole answer, never truncated
  const n = view.dns().answerInPlace(query, 0, query.length, out, 0, out.length, Transport.TCP)
  if (n < 0) return { name, result: 'forwarded', answers: [] }
  if (n === 0) return { name, result: 'no reply', answers: [] }
  const reply = dnsPacket.decode(out.subarray(0, n)) as dnsPacket.DecodedPacket & { rcode?: string }
  const answers = (reply.answers ?? []).map(a => ({ name: a.name, type: a.type, ttl: (a as { ttl?: number }).ttl ?? 0, data: recordData(a) }))
  return { name, result: reply.rcode ?? 'NOERROR', answers }
}

/** Resolves as the source would: a pod uses its resolv.conf (search <ns>.svc.<zone> svc.<zone> <zone>, ndots:5). */
export function resolveName(view: DataplaneView, name: string, src: string, family: Family): DnsResolution {
  const qtype = family === 6 ? 'AAAA' : 'A'
  const origin = view.dns().zone.origin.replace(/\.$/, '')
  const bare = name.replace(/\.$/, '')
  const pod = view.cluster().pods.find(p => p.ips.includes(src))
  const search = pod !== undefined && !name.endsWith('.') ? [`${pod.namespace}.svc.${origin}`, `svc.${origin}`, origin] : []
  const dots = bare.split('.').length - 1
  const candidates = search.length === 0 ? [bare] : dots >= 5 ? [bare, ...search.map(s => `${bare}.${s}`)] : [...search.map(s => `${bare}.${s}`), bare]
  const tries: DnsTry[] = []
  for (const cand of candidates) {
    const t = askDns(view, cand, qtype)
    tries.push(t)
    if (t.result === 'forwarded') return { query: name, qtype, search, tries, outcome: 'forwarded' }
    if (t.result === 'NOERROR') {
      const addr = t.answers.find(a => a.type === qtype)?.data
      return addr !== undefined
        ? { query: name, qtype, search, tries, outcome: 'resolved', address: addr }
        : { query: name, qtype, search, tries, outcome: 'nodata' }
    }
  }
  const last = tries[tries.length - 1]
  return { query: name, qtype, search, tries, outcome: last?.result === 'NXDOMAIN' ? 'nxdomain' : 'no-answer' }
}

// ---------------------------------------------------------------------------------------------------------------
// The walk

function fnv(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  return h >>> 0
}

interface WalkCtx {
  readonly view: DataplaneView
  readonly q: { proto: TraceProtocol; src: string; sport: number; dst: string; dport: number }
  readonly family: Family
  readonly srcLocal: boolean
  readonly dstLocal: boolean
  readonly clusterCIDR: string | undefined
  readonly fromCluster: boolean
  readonly steps: TraceStep[]
}

function hostBits(ip: string): string {
  return `${ip}/${ip.includes(':') ? 128 : 32}`
}

function natHook(c: WalkCtx): void {
  const from = c.srcLocal ? 'OUTPUT' : 'PREROUTING'
  ruleStep(
    c,
    'nat',
    ipt.jumpRuleFrom('nat', from, ipt.KUBE_SERVICES),
    c.srcLocal ? { note: `${c.q.src} is this node: locally generated traffic enters at OUTPUT` } : {},
  )
}

/** The filter-table jump that leads to `target` for this packet. */
function filterHook(c: WalkCtx, target: 'KUBE-SERVICES' | 'KUBE-EXTERNAL-SERVICES' | 'KUBE-PROXY-FIREWALL'): void {
  // kube-proxy jumps to KUBE-SERVICES from FORWARD and OUTPUT, to KUBE-EXTERNAL-SERVICES from INPUT and FORWARD,
  // to KUBE-PROXY-FIREWALL from all three
  const chain =
    target === 'KUBE-SERVICES'
      ? c.srcLocal
        ? 'OUTPUT'
        : 'FORWARD'
      : target === 'KUBE-EXTERNAL-SERVICES'
        ? c.dstLocal
          ? 'INPUT'
          : 'FORWARD'
        : c.dstLocal
          ? 'INPUT'
          : c.srcLocal
            ? 'OUTPUT'
            : 'FORWARD'
  ruleStep(c, 'filter', ipt.jumpRuleFrom('filter', chain, target))
}

/** A step that matched rule `r`: printed as iptables-save's text after `-A <chain>`, from the renderer's own rule. */
function ruleStep(c: WalkCtx, table: TraceStep['table'], r: ipt.IptablesRule, more: { note?: string; balance?: boolean } = {}): void {
  c.steps.push({ table, chain: r.chain, rule: ipt.ruleSpec(r, c.family), ...more })
}

/** The nat KUBE-SERVICES rule (and what follows from it) that leads a frontend toward its endpoints. */
function frontendRules(c: WalkCtx, ex: Explanation, sp: SvcPort): string {
  const p = c.q.proto
  const name = sp.servicePortName
  const chains = ex.service!.chains
  const kind = ex.frontend!.kind
  const d = hostBits(c.q.dst)
  if (kind === 'ClusterIP') {
    const target = sp.internalPolicy === 'Local' ? chains.local : chains.service
    ruleStep(c, 'nat', ipt.frontendRule(ipt.KUBE_SERVICES, d, p, c.q.dport, `${name} cluster IP`, target))
    const cfg = c.view.natConfig()
    if (cfg.masqueradeAll) {
      ruleStep(c, 'nat', ipt.clusterIPMasqRule(target, d, p, c.q.dport, name, undefined), { note: '--masquerade-all: marked for masquerade' })
    } else if (c.clusterCIDR !== undefined && !c.fromCluster) {
      ruleStep(c, 'nat', ipt.clusterIPMasqRule(target, d, p, c.q.dport, name, c.clusterCIDR), {
        note: `${c.q.src} is outside the cluster CIDR: marked for masquerade`,
      })
    }
    return target
  }
  let ext = chains.external
  if (kind === 'NodePort') {
    const npa = c.view.natConfig().nodePortAddresses
    ruleStep(c, 'nat', ipt.nodePortsJumpRule(npa.length > 0 ? { ip: d } : ipt.localhostNodePorts(c.family, undefined) ? undefined : { notLocalhost: c.family }))
    ruleStep(c, 'nat', ipt.nodePortRule(ipt.KUBE_NODEPORTS, p, c.q.dport, name, ext, false))
  } else if (kind === 'ExternalIP') {
    ruleStep(c, 'nat', ipt.frontendRule(ipt.KUBE_SERVICES, d, p, c.q.dport, `${name} external IP`, ext))
  } else {
    const fw = ex.sourceRanges !== undefined
    ruleStep(c, 'nat', ipt.frontendRule(ipt.KUBE_SERVICES, d, p, c.q.dport, `${name} loadbalancer IP`, fw ? chains.firewall : ext))
    if (fw) {
      const range = ex.sourceRanges!.ranges.find(r => inCidr(r, c.q.src)) ?? c.q.src
      ruleStep(c, 'nat', ipt.firewallAllowRule(chains.firewall, range, name, ext), { note: 'source allowed by loadBalancerSourceRanges' })
    }
  }
  // KUBE-EXT: masquerade and the policy chain
  if (sp.externalPolicy === 'Cluster') {
    ruleStep(c, 'nat', ipt.extMasqRule(ext, name), { note: 'externalTrafficPolicy Cluster: marked for masquerade' })
    ruleStep(c, 'nat', ipt.jumpTo(ext, chains.service))
    return chains.service
  }
  if (c.fromCluster && c.clusterCIDR !== undefined) {
    ruleStep(c, 'nat', ipt.extPodRule(ext, c.clusterCIDR, name, chains.service), { note: 'a pod: short-circuited to every endpoint, not masqueraded' })
    return chains.service
  }
  if (c.srcLocal) {
    ruleStep(c, 'nat', ipt.extLocalMasqRule(ext, name), { note: 'from this node: marked for masquerade' })
    ruleStep(c, 'nat', ipt.extLocalRouteRule(ext, name, chains.service))
    return chains.service
  }
  ext = chains.local
  ruleStep(c, 'nat', ipt.jumpTo(chains.external, ext), { note: 'externalTrafficPolicy Local: endpoints on this node only' })
  return ext
}

function inCidr(cidr: string, ip: string): boolean {
  const f = ipFamily(ip)
  if (f === undefined) return false
  const list = parseCidrList([cidr], f)
  const w = new Uint32Array(4)
  parseIpWords(ip, f, w, 0)
  return list.length > 0 && inCidrList(list, f === 4 ? 1 : 4, w, 0)
}

/** Rejects and drops happen in the filter table: kube-proxy writes no nat rule for a service it cannot serve. */
function filterVerdict(c: WalkCtx, ex: Explanation, sp: SvcPort | undefined, action: 'reject' | 'drop'): void {
  const p = c.q.proto
  const target = action === 'reject' ? ipt.rejectTarget(c.family) : 'DROP'
  if (sp === undefined || ex.frontend === undefined) return
  const name = sp.servicePortName
  const d = hostBits(c.q.dst)
  const why = action === 'reject' ? `${name} has no endpoints` : `${name} has no local endpoints`
  natHook(c)
  const kind = ex.frontend.kind
  if (ex.sourceRanges !== undefined && !ex.sourceRanges.allowed) {
    const chains = ex.service!.chains
    ruleStep(c, 'nat', ipt.frontendRule(ipt.KUBE_SERVICES, d, p, c.q.dport, `${name} loadbalancer IP`, chains.firewall))
    ruleStep(c, 'nat', ipt.firewallFallThroughRule(chains.firewall, name), { note: `${c.q.src} is in none of ${ex.sourceRanges.ranges.join(', ')}` })
    filterHook(c, 'KUBE-PROXY-FIREWALL')
    ruleStep(c, 'filter', ipt.frontendRule(ipt.KUBE_PROXY_FIREWALL, d, p, c.q.dport, `${name} traffic not accepted by ${chains.firewall}`, 'DROP'))
    return
  }
  c.steps.push({ table: 'nat', chain: 'KUBE-SERVICES', rule: '', note: `no rule sends it on: ${why}` })
  if (kind === 'ClusterIP') {
    filterHook(c, 'KUBE-SERVICES')
    ruleStep(c, 'filter', ipt.frontendRule(ipt.KUBE_SERVICES, d, p, c.q.dport, why, target))
  } else if (kind === 'NodePort') {
    filterHook(c, 'KUBE-EXTERNAL-SERVICES')
    ruleStep(c, 'filter', ipt.nodePortRule(ipt.KUBE_EXTERNAL_SERVICES, p, c.q.dport, why, target, true))
  } else {
    filterHook(c, 'KUBE-EXTERNAL-SERVICES')
    ruleStep(c, 'filter', ipt.frontendRule(ipt.KUBE_EXTERNAL_SERVICES, d, p, c.q.dport, why, target))
  }
}

function pathOf(steps: readonly TraceStep[]): string[] {
  const out: string[] = []
  for (const s of steps) {
    const label = s.table === 'nat' ? s.chain : `filter ${s.chain}`
    if (out[out.length - 1] !== label) out.push(label)
  }
  return out
}

/** Endpoints in kube-proxy's rule order with their --probability; `picked` marked later. */
function ruleEndpoints(ex: Explanation, sp: SvcPort): Omit<TraceEndpoint, 'picked'>[] {
  const list = [...(ex.endpoints ?? [])].sort((a, b) => byEndpointText(a.endpoint, b.endpoint))
  const n = list.length
  return list.map((e, i) => ({
    endpoint: e.endpoint,
    chain: endpointChain(sp, e.endpoint),
    probability: i < n - 1 ? kubeProxyProbability(n - i) : null,
    share: 1 / n,
    local: e.local,
    terminating: e.terminating,
    hairpin: e.hairpin,
  }))
}

function splitEndpoint(ep: string): { ip: string; port: number } {
  const i = ep.lastIndexOf(':')
  return { ip: ep.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(ep.slice(i + 1)) }
}

const KUBE_PROXY_ICMP =
  "kube-proxy's iptables mode only has DNAT rules for a service's TCP/UDP/SCTP ports: an echo request " +
  'to a ClusterIP matches none of them, is routed toward an address no host owns, and ping gets no answer ' +
  '(IPVS mode answers, as the address is bound to kube-ipvs0; nftables mode rejects it)'

/** What a trace request names, checked: the source, the destination (an address, or a name to resolve) and ports. */
interface TraceTarget {
  readonly proto: TraceProtocol
  readonly src: string
  readonly sport: number | undefined
  /** undefined: resolve `name` first */
  readonly dstIP: string | undefined
  readonly dport: number | undefined
  readonly name: string | undefined
}

function traceTarget(args: TraceArgs): TraceTarget {
  const proto: TraceProtocol = args.proto ?? 'tcp'
  const s = splitAddress(args.src, '--src')
  if (s === undefined) throw new InspectError(`--src: ${JSON.stringify(args.src)} is not an IP address (IP or IP:PORT)`)
  let dstIP: string | undefined
  let dstPort: number | undefined
  let name = args.name
  if (args.dst !== undefined) {
    const a = splitAddress(args.dst, '--dst')
    if (a !== undefined) {
      dstIP = a.ip
      dstPort = a.port
    } else {
      const n = splitName(args.dst, '--dst')
      if (n === undefined) throw new InspectError(`--dst: ${JSON.stringify(args.dst)} is not an address, address:port or DNS name`)
      if (name !== undefined && name !== n.name) throw new InspectError('give the DNS name once: --dst NAME[:PORT] or --name NAME')
      name = n.name
      dstPort = n.port
    }
  }
  if (name !== undefined && splitName(name, '--name')?.name !== name) throw new InspectError(`--name: ${JSON.stringify(name)} is not a DNS name`)
  const sport = args.sport ?? s.port
  const dport = args.dport ?? dstPort
  if (proto !== 'icmp' && dport === undefined) throw new InspectError(`give the destination port for ${proto}: --dst ADDRESS:PORT (or --dport)`)
  return { proto, src: s.ip, sport, dstIP, dport, name }
}

/** Why a name did not resolve to an address, with a hint when a non-pod source gave a short name. */
function unresolvedReason(view: DataplaneView, t: TraceTarget, dns: DnsResolution): string {
  const name = t.name!
  const why =
    dns.outcome === 'forwarded'
      ? `${name} is not a cluster name: tundra forwards the query upstream, so the trace stops here`
      : dns.outcome === 'nxdomain'
        ? `${name} does not exist (NXDOMAIN)`
        : `${name} has no ${dns.qtype} record`
  const origin = view.dns().zone.origin.replace(/\.$/, '')
  const hint =
    dns.search.length === 0 && !name.endsWith('.') && !name.replace(/\.$/, '').endsWith(origin)
      ? ` (${t.src} is no pod here, so no search path applies: give the full name, e.g. <service>.<namespace>.svc.${origin})`
      : ''
  return why + hint
}

/** The fields every resolved trace starts with. */
type TraceCommon = Pick<Trace, 'query' | 'node' | 'live' | 'dns' | 'family' | 'frontend' | 'service' | 'trafficPolicy'>

function traceCommon(base: Pick<Trace, 'query' | 'node' | 'live'>, dns: DnsResolution | undefined, family: Family, ex: Explanation): TraceCommon {
  return {
    ...base,
    ...(dns !== undefined ? { dns } : {}),
    family,
    ...(ex.frontend !== undefined
      ? { frontend: { kind: ex.frontend.kind, address: ex.frontend.address, port: ex.frontend.port, protocol: ex.frontend.protocol } }
      : {}),
    ...(ex.service !== undefined
      ? {
          service: {
            namespace: ex.service.namespace,
            name: ex.service.name,
            portName: ex.service.portName,
            servicePortName: ex.service.servicePortName,
            chains: ex.service.chains,
          },
        }
      : {}),
    ...(ex.trafficPolicy !== undefined ? { trafficPolicy: ex.trafficPolicy } : {}),
  }
}

/**
 * The trace of one packet. `lookups`: the live conntrack entry and affinity pins for it (see traceLive); without
 * them a live view is traced as the first packet of a new connection would be.
 */
export function buildTrace(view: DataplaneView, args: TraceArgs, lookups?: ExplainLive): Trace {
  const t = traceTarget(args)
  const { proto, sport, dport, name } = t
  const family = ipFamily(t.src) as Family
  const cfg = view.natConfig()
  const live = view.live() !== undefined
  const query = {
    proto,
    src: t.src,
    sport: proto === 'icmp' ? null : (sport ?? null),
    dst: t.dstIP ?? name!,
    dport: proto === 'icmp' ? null : (dport ?? null),
    ...(name !== undefined ? { name } : {}),
  }
  const base = { query, node: cfg.nodeName, live }

  let dstIP = t.dstIP
  let dns: DnsResolution | undefined
  if (dstIP === undefined) {
    dns = resolveName(view, name!, t.src, family)
    if (dns.outcome !== 'resolved') return { ...base, dns, verdict: 'unresolved', reason: unresolvedReason(view, t, dns), path: [], steps: [] }
    dstIP = dns.address!
  }
  if (ipFamily(dstIP) !== family) throw new InspectError(`--src ${t.src} and destination ${dstIP} are not of one IP family`)

  const protocol: Protocol | 'ICMP' = proto === 'icmp' ? 'ICMP' : (proto.toUpperCase() as Protocol)
  const tq = { src: t.src, dst: dstIP, protocol, ...(sport !== undefined ? { sport } : {}), ...(dport !== undefined ? { dport } : {}) }
  const now = view.now()
  // The first packet's walk (no live state), and what the engine would do now with this exact tuple.
  const ex = explain(view.table(), tq, { now })
  const cur = lookups !== undefined ? explain(view.table(), tq, { engine: lookups, now }) : ex
  const clusterCIDR = cfg.clusterCIDRs.find(c => ipFamily(c.split('/')[0]!) === family)
  const c: WalkCtx = {
    view,
    q: { proto, src: t.src, sport: sport ?? 0, dst: dstIP, dport: dport ?? 0 },
    family,
    srcLocal: cfg.nodeIPs.includes(t.src),
    dstLocal: cfg.nodeIPs.includes(dstIP),
    clusterCIDR,
    fromCluster: clusterCIDR !== undefined && inCidr(clusterCIDR, t.src),
    steps: [],
  }
  const common = traceCommon(base, dns, family, ex)
  const sp = ex.frontend !== undefined ? frontendAt(view.table(), dstIP, protoNum(proto), dport ?? 0)?.sp : undefined
  if (proto === 'icmp') return icmpTrace(c, common, ex)
  if (cur.verdict === 'tracked' && cur.conntrack?.direction === 'reply') return trackedReplyTrace(common, cur, cur.conntrack)
  if (sp === undefined || ex.verdict !== 'dnat') return notDnatTrace(c, common, ex, cur, sp)
  return dnatTrace(c, t, common, ex, cur, sp)
}

/** An echo request: kube-proxy has no rule for it; tundra answers as icmpMode says. */
function icmpTrace(c: WalkCtx, common: TraceCommon, ex: Explanation): Trace {
  const dstIP = c.q.dst
  natHook(c)
  c.steps.push({ table: 'nat', chain: 'KUBE-SERVICES', rule: '', note: 'kube-proxy rules match -p tcp/udp/sctp --dport only' })
  if (ex.verdict === 'pass')
    return { ...common, verdict: 'pass', reason: `${dstIP} is not a ClusterIP: not service traffic, routed normally`, path: pathOf(c.steps), steps: c.steps }
  const mode = c.view.natConfig().icmpMode
  const tundra =
    mode === 'reply'
      ? `answered by tundra itself (icmpMode reply): the echo reply comes from ${dstIP}, as with IPVS`
      : mode === 'reject'
        ? "tundra answers ICMP port unreachable (icmpMode reject, as kube-proxy's nftables mode does)"
        : 'tundra drops it (icmpMode drop)'
  return {
    ...common,
    verdict: ex.verdict,
    reason: `echo request to a ClusterIP, icmpMode ${mode}`,
    path: pathOf(c.steps),
    steps: c.steps,
    icmp: { mode, tundra, kubeProxy: KUBE_PROXY_ICMP },
  }
}

/** An existing connection's reply direction: conntrack reverses the translation, no chain is walked. */
function trackedReplyTrace(common: TraceCommon, cur: Explanation, tracked: TrackedConn): Trace {
  const e = tracked.entry
  return {
    ...common,
    verdict: 'tracked',
    reason: cur.reason,
    path: [],
    steps: [],
    conntrack: tracked,
    rewritten: { src: e.orig.dst, sport: e.orig.dport, dst: e.orig.src, dport: e.orig.sport },
  }
}

/** Every outcome but a DNAT to an endpoint or a tracked reply: no service, a reject or drop. */
function notDnatTrace(c: WalkCtx, common: TraceCommon, ex: Explanation, cur: Explanation, sp: SvcPort | undefined): Trace {
  if (ex.verdict === 'pass') {
    natHook(c)
    c.steps.push({ table: 'nat', chain: 'KUBE-SERVICES', rule: '', note: 'no rule matches: not service traffic' })
    const tracked = cur.verdict === 'tracked' ? { conntrack: cur.conntrack! } : {}
    return {
      ...common,
      ...tracked,
      verdict: cur.verdict,
      reason: cur.verdict === 'tracked' ? cur.reason : `${ex.reason}; routed normally`,
      path: pathOf(c.steps),
      steps: c.steps,
    }
  }
  if (ex.verdict === 'reject' && ex.frontend === undefined) {
    natHook(c)
    c.steps.push({ table: 'nat', chain: 'KUBE-SERVICES', rule: '', note: `no rule matches: ${c.q.dst} has no service port ${c.q.dport}/${c.q.proto}` })
    return {
      ...common,
      verdict: 'reject',
      reason: `${ex.reason}. kube-proxy's iptables mode has no rule for it either: the packet is routed toward an address no host owns and times out (its nftables mode rejects it, as tundra does)`,
      path: pathOf(c.steps),
      steps: c.steps,
    }
  }
  if (ex.verdict === 'reject' || ex.verdict === 'drop') {
    filterVerdict(c, ex, sp, ex.verdict)
    const eps = sp !== undefined ? ruleEndpoints(ex, sp).map(e => ({ ...e, picked: false })) : []
    return { ...common, verdict: ex.verdict, reason: ex.reason, path: pathOf(c.steps), steps: c.steps, ...(eps.length > 0 ? { endpoints: eps } : {}) }
  }
  return { ...common, verdict: cur.verdict, reason: cur.reason, path: [], steps: [], ...(cur.conntrack !== undefined ? { conntrack: cur.conntrack } : {}) }
}

type TracePick = NonNullable<Trace['pick']>
type TrackedConn = NonNullable<Explanation['conntrack']>

/** DNAT: the nat walk to the service chain, the endpoint choice, the KUBE-SEP chain, masquerade. */
function dnatTrace(c: WalkCtx, t: TraceTarget, common: TraceCommon, ex: Explanation, cur: Explanation, sp: SvcPort): Trace {
  natHook(c)
  const svcChain = frontendRules(c, ex, sp)
  const rules = ruleEndpoints(ex, sp)
  const tracked = cur.verdict === 'tracked' && cur.conntrack?.direction === 'original' ? cur.conntrack : undefined
  const pick = pickEndpoint(c, ex, cur, sp, rules, tracked)
  const endpoints: TraceEndpoint[] = rules.map(e => ({ ...e, picked: e.endpoint === pick.endpoint }))
  pickSteps(c, sp, svcChain, endpoints, pick)
  const ep = splitEndpoint(pick.endpoint)
  const hairpin = ep.ip === c.q.src
  const spName = sp.servicePortName
  if (hairpin) ruleStep(c, 'nat', ipt.endpointHairpinRule(pick.chain, ep.ip, spName), { note: 'hairpin: the client is this endpoint, marked for masquerade' })
  ruleStep(c, 'nat', ipt.endpointDnatRule(pick.chain, c.q.proto, spName, sp.affinityTimeout > 0 ? c.family : undefined, pick.endpoint))
  const snat = c.view.natConfig().nodeIPs.find(ip => ipFamily(ip) === c.family)
  const masquerade = masqueradeSteps(c, ex, hairpin, snat)
  const rewritten =
    tracked !== undefined
      ? { src: tracked.entry.reply.dst, sport: tracked.entry.reply.dport, dst: tracked.entry.reply.src, dport: tracked.entry.reply.sport }
      : { src: masquerade.masquerade ? (snat ?? t.src) : t.src, sport: masquerade.masquerade ? null : (t.sport ?? null), dst: ep.ip, dport: ep.port }
  return {
    ...common,
    verdict: tracked !== undefined ? 'tracked' : 'dnat',
    reason: tracked !== undefined ? cur.reason : ex.reason,
    path: pathOf(c.steps),
    steps: c.steps,
    endpoints,
    pick,
    masquerade,
    rewritten,
    ...(tracked !== undefined ? { conntrack: tracked } : {}),
    ...(cur.affinity !== undefined ? { affinity: cur.affinity } : {}),
  }
}

/** Which endpoint this packet goes to, and why: conntrack, an affinity pin, Maglev, the only one, or a hash. */
function pickEndpoint(
  c: WalkCtx,
  ex: Explanation,
  cur: Explanation,
  sp: SvcPort,
  rules: readonly Omit<TraceEndpoint, 'picked'>[],
  tracked: TrackedConn | undefined,
): TracePick {
  const n = rules.length
  const q = c.q
  const live = c.view.live() !== undefined
  const chosen = (endpoint: string, how: TracePick['how'], note: string): TracePick => ({ endpoint, chain: endpointChain(sp, endpoint), how, note })
  const pinned = cur.affinity?.pinned
  if (tracked !== undefined) {
    const ep = endpointString(tracked.entry.reply.src, tracked.entry.reply.sport)
    return chosen(
      ep,
      'conntrack',
      `an existing connection (${tracked.entry.state || tracked.entry.protocol}, expires in ${tracked.entry.expiresIn} s): conntrack sends it to ${ep} without walking the chains again; shown is the walk its first packet took`,
    )
  }
  if (pinned !== undefined) {
    return chosen(
      pinned.endpoint,
      'affinity',
      `ClientIP affinity: ${q.src} was sent to ${pinned.endpoint} within the last ${cur.affinity!.timeoutSeconds} s (pin expires in ${pinned.expiresIn} s)`,
    )
  }
  if (ex.maglevPick !== undefined) return chosen(ex.maglevPick, 'maglev', 'Maglev: the lookup table picks it from a hash of the 5-tuple (every node agrees)')
  if (ex.hashPick !== undefined) {
    return chosen(ex.hashPick, 'hash', 'source hash (sh): the client address alone picks it, the same for every connection of this client')
  }
  if (n === 1) return chosen(rules[0]!.endpoint, 'only', 'the only endpoint')
  const k = fnv(`${q.proto} ${q.src} ${q.sport} ${q.dst} ${q.dport}`) % n
  return chosen(
    rules[k]!.endpoint,
    'hash',
    ex.scheduler === undefined || ex.scheduler === 'random'
      ? `one of ${n}, each 1/${n}: a new connection picks at random${live ? '' : ' (offline)'}; shown is the one a hash of this 5-tuple picks`
      : `one of ${n}, chosen by the ${ex.scheduler} scheduler from the packet thread's state at connection time; shown is the one a hash of this 5-tuple picks`,
  )
}

/** The service chain's rule that sends the packet to the picked endpoint's chain (affinity check or probability). */
function pickSteps(c: WalkCtx, sp: SvcPort, svcChain: string, endpoints: readonly TraceEndpoint[], pick: TracePick): void {
  const n = endpoints.length
  const spName = sp.servicePortName
  const live = c.view.live() !== undefined
  const picked = endpoints.find(e => e.picked)
  const pickedRule = picked === undefined ? -1 : endpoints.indexOf(picked)
  if (pick.how === 'affinity') {
    ruleStep(c, 'nat', ipt.affinityCheckRule(svcChain, spName, sp.affinityTimeout, pick.chain, c.family), { balance: true, note: pick.note })
    return
  }
  if (sp.affinityTimeout > 0) {
    c.steps.push({
      table: 'nat',
      chain: svcChain,
      rule: '',
      note: `ClientIP affinity: no pin for ${c.q.src} yet (${live ? 'none live' : 'offline'}), so none of the ${n} "-m recent --rcheck --seconds ${sp.affinityTimeout}" rules matches`,
    })
  }
  ruleStep(
    c,
    'nat',
    ipt.endpointPickRule(svcChain, spName, pickedRule >= 0 && pickedRule < n - 1 ? probabilityForRemaining(n - pickedRule) : null, pick.chain),
    {
      balance: true,
      note:
        pickedRule < 0 || n === 1
          ? pick.note
          : pickedRule === n - 1
            ? `rule ${n} of ${n}: the last one, taken when none of the ${n - 1} before it was`
            : `rule ${pickedRule + 1} of ${n}: taken with probability ${picked!.probability}${pickedRule > 0 ? ` after ${pickedRule === 1 ? 'rule 1 was' : `rules 1-${pickedRule} were`} not` : ''}`,
    },
  )
}

/** Whether the source is masqueraded (with the POSTROUTING rules when it is), and why. */
function masqueradeSteps(c: WalkCtx, ex: Explanation, hairpin: boolean, snat: string | undefined): NonNullable<Trace['masquerade']> {
  const masqReason =
    ex.masquerade !== undefined && ex.masquerade.always ? ex.masquerade.reason : hairpin ? 'hairpin (client is the chosen endpoint)' : undefined
  if (masqReason !== undefined) {
    ruleStep(c, 'nat', ipt.jumpRuleFrom('nat', 'POSTROUTING', ipt.KUBE_POSTROUTING))
    ruleStep(c, 'nat', ipt.POSTROUTING_MASQ_RULE, { note: `source becomes ${snat ?? 'the node address'}` })
    return { masquerade: true, reason: masqReason, ...(snat !== undefined ? { to: snat } : {}) }
  }
  let why: string
  if (ex.frontend!.kind === 'ClusterIP') {
    why =
      c.clusterCIDR === undefined
        ? `no cluster CIDR of IPv${c.family} configured, so nothing counts as off-cluster`
        : `${c.q.src} is inside the cluster CIDR ${c.clusterCIDR}: the endpoint sees the client's own address`
  } else {
    why = c.fromCluster
      ? 'a pod reaching an externalTrafficPolicy Local frontend keeps its address'
      : 'externalTrafficPolicy Local: the client address is preserved'
  }
  return { masquerade: false, reason: why }
}

function protoNum(p: TraceProtocol): number {
  return p === 'tcp' ? 6 : p === 'udp' ? 17 : p === 'sctp' ? 132 : 1
}

// ---------------------------------------------------------------------------------------------------------------
// Text

function ap(ip: string, port: number | null): string {
  return port === null ? ip : hostPort(ip, port)
}

export function formatTrace(t: Trace): string {
  const q = t.query
  const out: string[] = []
  const dstText = q.name !== undefined && t.dns?.address !== undefined ? `${q.name} (${ap(t.dns.address, q.dport)})` : ap(q.dst, q.dport)
  out.push(
    `trace ${q.proto} ${q.sport === null ? q.src : ap(q.src, q.sport === 0 ? null : q.sport)} → ${q.name !== undefined && t.dns?.address === undefined ? ap(q.name, q.dport) : dstText} on node ${t.node} (${t.live ? 'live agent' : 'from manifests'})`,
  )
  out.push('')
  if (t.dns !== undefined) {
    const d = t.dns
    out.push(`dns: ${d.query} ${d.qtype}?${d.search.length > 0 ? `  (search ${d.search.join(' ')}, ndots:5)` : ''}`)
    for (const tr of d.tries) {
      if (tr.answers.length === 0)
        out.push(`  ${tr.name}  ${tr.result === 'forwarded' ? 'not a cluster name: forwarded upstream' : tr.result === 'NOERROR' ? 'NODATA' : tr.result}`)
      for (const a of tr.answers) out.push(`  ${a.name}  ${a.ttl}  ${a.type}  ${a.data}`)
    }
    if (d.address !== undefined) out.push(`  → ${d.address}`)
    out.push('')
  }
  if (t.path.length > 0) {
    out.push(`path: ${t.path.join(' → ')}${t.verdict === 'reject' ? ' → REJECT' : t.verdict === 'drop' ? ' → DROP' : ''}`)
    out.push('')
  }
  let last = ''
  for (const s of t.steps) {
    const head = `${s.table} ${s.chain}`
    if (head !== last) out.push(`  ${head}`)
    last = head
    if (s.balance && t.endpoints !== undefined && t.endpoints.length > 0) {
      const n = t.endpoints.length
      out.push(`      endpoints: ${n}${n > 1 ? `, each 1/${n}` : ''}`)
      const rows = t.endpoints.map(e => [
        e.picked ? '    → ' : '      ',
        e.probability !== null ? `--probability ${e.probability}` : '(last rule)',
        e.chain,
        e.endpoint,
        [e.local ? 'local' : 'remote', ...(e.terminating ? ['terminating'] : []), ...(e.hairpin ? ['hairpin'] : [])].join(', '),
      ])
      const w = [0, 1, 2, 3].map(i => Math.max(...rows.map(r => r[i]!.length)))
      for (const r of rows) out.push(`    ${r[0]}${r[1]!.padEnd(w[1]! + 2)}${r[2]!.padEnd(w[2]! + 2)}${r[3]!.padEnd(w[3]! + 2)}${r[4]}`.trimEnd())
    }
    if (s.rule !== '') out.push(`      -A ${s.chain} ${s.rule}`)
    if (s.note !== undefined) out.push(`      # ${s.note}`)
  }
  if (t.steps.length > 0) out.push('')
  const field = (k: string, v: string): void => {
    out.push(`${k.padEnd(12)}${v}`)
  }
  const verdictWord: Record<Trace['verdict'], string> = {
    dnat: 'DNAT',
    tracked: 'TRACKED',
    reject: 'REJECT',
    drop: 'DROP',
    reply: 'REPLY',
    pass: 'PASS',
    unresolved: 'UNRESOLVED',
  }
  field('verdict:', `${verdictWord[t.verdict]} — ${t.reason}`)
  if (t.service !== undefined && t.frontend !== undefined) {
    field('service:', `${t.service.servicePortName} (${t.frontend.kind} ${ap(t.frontend.address, t.frontend.port)}/${t.frontend.protocol})`)
  }
  if (t.trafficPolicy !== undefined) field('policy:', t.trafficPolicy.why)
  if (t.pick !== undefined) field('endpoint:', `${t.pick.endpoint} (${t.pick.chain}): ${t.pick.note}`)
  for (const e of t.ejected ?? []) field('skipped:', `${e.endpoint} is ejected (outlier detection, ${e.seconds} s left): new connections skip it`)
  if (t.masquerade !== undefined)
    field('masquerade:', `${t.masquerade.masquerade ? `yes, to ${t.masquerade.to ?? 'the node address'}` : 'no'}: ${t.masquerade.reason}`)
  if (t.rewritten !== undefined) {
    const r = t.rewritten
    // sport null: masquerade picks a random port (--random-fully), or the query gave none
    const srcText = r.sport !== null && r.sport !== 0 ? hostPort(r.src, r.sport) : t.masquerade?.masquerade === true ? `${r.src}:<random>` : r.src
    field('result:', `${q.proto} ${srcText} → ${hostPort(r.dst, r.dport)}`)
  }
  if (t.conntrack !== undefined) {
    const e = t.conntrack.entry
    field(
      'conntrack:',
      `${t.conntrack.direction} direction of ${e.protocol} ${e.state} ${hostPort(e.orig.src, e.orig.sport)} → ${hostPort(e.orig.dst, e.orig.dport)} (${e.service || 'no service'}), expires in ${e.expiresIn} s`,
    )
  }
  if (t.icmp !== undefined) {
    field('tundra:', t.icmp.tundra)
    field('kube-proxy:', t.icmp.kubeProxy)
  }
  return out.join('\n') + '\n'
}

const PROTO_OF: Readonly<Record<string, number>> = { tcp: 6, udp: 17, sctp: 132 }

/** A live trace: traced once to learn the tuple and the service, then again with the packet thread's answers. */
export async function traceLive(view: DataplaneView, args: TraceArgs): Promise<Trace> {
  const first = buildTrace(view, args)
  const live = view.live()
  if (live === undefined || first.family === undefined || first.verdict === 'unresolved') return first
  const q = first.query
  const family = first.family
  const proto = q.proto === 'icmp' ? (family === 4 ? 1 : 58) : (PROTO_OF[q.proto] ?? 0)
  const svc = first.service
  const ids = svc === undefined ? [] : (view.table().services.get(`${svc.namespace}/${svc.name}`)?.svcPortIds ?? [])
  const lookups = await live.lookups(
    {
      family,
      proto,
      src: q.src,
      dst: first.dns?.address ?? q.dst,
      sport: q.sport ?? 0,
      dport: q.dport ?? 0,
    },
    ids,
  )
  const t = buildTrace(view, args, lookups)
  // outlier ejection lives on the packet thread: which endpoints a new connection would skip
  const inSet = new Set((t.endpoints ?? []).map(e => e.endpoint))
  const idSet = new Set(ids)
  const ejected = ((await live.endpointSignals?.()) ?? [])
    .filter(r => idSet.has(r.id) && r.ejectedMs > 0 && inSet.has(r.endpoint))
    .map(r => ({ endpoint: r.endpoint, seconds: Math.ceil(r.ejectedMs / 1000) }))
  return ejected.length === 0 ? t : { ...t, ejected }
}

// kube-proxy's iptables rules as structured values, and the one place that prints them as iptables-save text.
//
// The renderer (iptables.ts) builds every rule of a dump with these constructors and `tundra trace`
// (src/inspect/trace.ts) builds the rules a packet matches with the same ones, so a trace line is the dump's line
// without `-A <chain> `. Field order is iptables-save's: -s, -d, -p, then conntrack state, the comment, other matches,
// the target.
import type { Family } from '../model/cluster'

export const KUBE_SERVICES = 'KUBE-SERVICES'
export const KUBE_EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES'
export const KUBE_NODEPORTS = 'KUBE-NODEPORTS'
export const KUBE_POSTROUTING = 'KUBE-POSTROUTING'
export const KUBE_MARK_MASQ = 'KUBE-MARK-MASQ'
export const KUBE_FORWARD = 'KUBE-FORWARD'
export const KUBE_PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL'
/** kubelet's chain, which kube-proxy also writes when it enables localhost NodePorts */
export const KUBE_FIREWALL = 'KUBE-FIREWALL'

/** One rule, held in the fields iptables-save orders by. */
export interface IptablesRule {
  readonly chain: string
  readonly src?: string
  readonly srcNeg?: boolean
  readonly dst?: string
  readonly dstNeg?: boolean
  readonly proto?: string
  /** `-m conntrack --ctstate <ctState>`, printed before the comment (kube-proxy's jump rules) */
  readonly ctState?: string
  readonly comment?: string
  /** matches after the comment, in kube-proxy's order */
  readonly matches: readonly string[]
  readonly target?: string
}

/** xtables_save_string: always double-quoted, with `"` and `\` escaped. */
function quote(s: string): string {
  return `"${s.replace(/[\\"]/g, m => `\\${m}`)}"`
}

/** An address as iptables-save prints it: always with a prefix length. */
function hostOrNet(s: string, family: Family): string {
  if (s.includes('/')) return s
  return `${s}/${family === 4 ? 32 : 128}`
}

/** The rule as iptables-save prints it after `-A <chain>`. */
export function ruleSpec(r: IptablesRule, family: Family): string {
  const parts: string[] = []
  if (r.src !== undefined) parts.push(`${r.srcNeg ? '! ' : ''}-s ${hostOrNet(r.src, family)}`)
  if (r.dst !== undefined) parts.push(`${r.dstNeg ? '! ' : ''}-d ${hostOrNet(r.dst, family)}`)
  if (r.proto !== undefined) parts.push(`-p ${r.proto}`)
  if (r.ctState !== undefined) parts.push(`-m conntrack --ctstate ${r.ctState}`)
  if (r.comment !== undefined) parts.push(`-m comment --comment ${quote(r.comment)}`)
  parts.push(...r.matches)
  if (r.target !== undefined) parts.push(`-j ${r.target}`)
  return parts.join(' ')
}

/** The iptables-save line: `-A <chain> <spec>`. */
export function ruleLine(r: IptablesRule, family: Family): string {
  const spec = ruleSpec(r, family)
  return spec === '' ? `-A ${r.chain}` : `-A ${r.chain} ${spec}`
}

export interface JumpChain {
  readonly table: 'filter' | 'nat'
  readonly dst: string
  readonly src: string
  readonly comment: string
  readonly ctNew: boolean
}

/** iptablesJumpChains, in kube-proxy's order; each is *prepended* to its built-in chain. */
export const JUMP_CHAINS: readonly JumpChain[] = [
  { table: 'filter', dst: KUBE_EXTERNAL_SERVICES, src: 'INPUT', comment: 'kubernetes externally-visible service portals', ctNew: true },
  { table: 'filter', dst: KUBE_EXTERNAL_SERVICES, src: 'FORWARD', comment: 'kubernetes externally-visible service portals', ctNew: true },
  { table: 'filter', dst: KUBE_NODEPORTS, src: 'INPUT', comment: 'kubernetes health check service ports', ctNew: false },
  { table: 'filter', dst: KUBE_SERVICES, src: 'FORWARD', comment: 'kubernetes service portals', ctNew: true },
  { table: 'filter', dst: KUBE_SERVICES, src: 'OUTPUT', comment: 'kubernetes service portals', ctNew: true },
  { table: 'filter', dst: KUBE_FORWARD, src: 'FORWARD', comment: 'kubernetes forwarding rules', ctNew: false },
  { table: 'filter', dst: KUBE_PROXY_FIREWALL, src: 'INPUT', comment: 'kubernetes load balancer firewall', ctNew: true },
  { table: 'filter', dst: KUBE_PROXY_FIREWALL, src: 'OUTPUT', comment: 'kubernetes load balancer firewall', ctNew: true },
  { table: 'filter', dst: KUBE_PROXY_FIREWALL, src: 'FORWARD', comment: 'kubernetes load balancer firewall', ctNew: true },
  { table: 'nat', dst: KUBE_SERVICES, src: 'OUTPUT', comment: 'kubernetes service portals', ctNew: false },
  { table: 'nat', dst: KUBE_SERVICES, src: 'PREROUTING', comment: 'kubernetes service portals', ctNew: false },
  { table: 'nat', dst: KUBE_POSTROUTING, src: 'POSTROUTING', comment: 'kubernetes postrouting rules', ctNew: false },
]

/** The rule of a jump chain from a built-in chain. */
export function jumpRule(j: JumpChain): IptablesRule {
  return { chain: j.src, ...(j.ctNew ? { ctState: 'NEW' } : {}), comment: j.comment, matches: [], target: j.dst }
}

/** The jump rule of `table` from built-in chain `from` to `to`; throws when kube-proxy writes no such jump. */
export function jumpRuleFrom(table: 'filter' | 'nat', from: string, to: string): IptablesRule {
  const j = JUMP_CHAINS.find(x => x.table === table && x.src === from && x.dst === to)
  if (j === undefined) throw new RangeError(`kube-proxy writes no ${table} jump from ${from} to ${to}`)
  return jumpRule(j)
}

function dport(proto: string, port: number): string {
  return `-m ${proto} --dport ${port}`
}

/** A rule for one frontend address and port: `-d ip -p proto <comment> -m proto --dport port -j target`. */
export function frontendRule(chain: string, ip: string, proto: string, port: number, comment: string | undefined, target: string): IptablesRule {
  return { chain, dst: ip, proto, ...(comment !== undefined ? { comment } : {}), matches: [dport(proto, port)], target }
}

/** The masquerade mark for cluster IP traffic from outside `clusterCIDR` (every source when it is undefined). */
export function clusterIPMasqRule(chain: string, clusterIP: string, proto: string, port: number, name: string, clusterCIDR: string | undefined): IptablesRule {
  const base = frontendRule(chain, clusterIP, proto, port, `${name} cluster IP`, KUBE_MARK_MASQ)
  return clusterCIDR === undefined ? base : { ...base, src: clusterCIDR, srcNeg: true }
}

/** A node port rule; `localOnly` adds `-m addrtype --dst-type LOCAL` (filter's reject/drop rules). */
export function nodePortRule(chain: string, proto: string, nodePort: number, comment: string, target: string, localOnly: boolean): IptablesRule {
  return { chain, proto, comment, matches: [...(localOnly ? ['-m addrtype --dst-type LOCAL'] : []), dport(proto, nodePort)], target }
}

/** Localhost NodePorts (--iptables-localhost-nodeports, default on) work only for IPv4, where route_localnet is set. */
export function localhostNodePorts(family: Family, option: boolean | undefined): boolean {
  return family === 4 && option !== false
}

const NODEPORTS_COMMENT = 'kubernetes service nodeports; NOTE: this must be the last rule in this chain'

/** The last rule of KUBE-SERVICES: to KUBE-NODEPORTS for local destinations, or for one nodePortAddresses IP. */
export function nodePortsJumpRule(dst: { readonly ip: string } | { readonly notLocalhost: Family } | undefined): IptablesRule {
  if (dst !== undefined && 'ip' in dst) return { chain: KUBE_SERVICES, dst: dst.ip, comment: NODEPORTS_COMMENT, matches: [], target: KUBE_NODEPORTS }
  return {
    chain: KUBE_SERVICES,
    ...(dst !== undefined ? { dst: dst.notLocalhost === 4 ? '127.0.0.0/8' : '::1/128', dstNeg: true } : {}),
    comment: NODEPORTS_COMMENT,
    matches: ['-m addrtype --dst-type LOCAL'],
    target: KUBE_NODEPORTS,
  }
}

/** A plain jump: `-A chain -j target`. */
export function jumpTo(chain: string, target: string): IptablesRule {
  return { chain, matches: [], target }
}

/** KUBE-EXT with externalTrafficPolicy Cluster: everything is marked for masquerade. */
export function extMasqRule(chain: string, name: string): IptablesRule {
  return { chain, comment: `masquerade traffic for ${name} external destinations`, matches: [], target: KUBE_MARK_MASQ }
}

/** KUBE-EXT with policy Local: pods short-circuit to the cluster policy chain. */
export function extPodRule(chain: string, clusterCIDR: string, name: string, target: string): IptablesRule {
  return { chain, src: clusterCIDR, comment: `pod traffic for ${name} external destinations`, matches: [], target }
}

/** KUBE-EXT with policy Local: traffic from the node itself is masqueraded ... */
export function extLocalMasqRule(chain: string, name: string): IptablesRule {
  return { chain, comment: `masquerade LOCAL traffic for ${name} external destinations`, matches: ['-m addrtype --src-type LOCAL'], target: KUBE_MARK_MASQ }
}

/** ... and routed to the cluster policy chain. */
export function extLocalRouteRule(chain: string, name: string, target: string): IptablesRule {
  return { chain, comment: `route LOCAL traffic for ${name} external destinations`, matches: ['-m addrtype --src-type LOCAL'], target }
}

/** KUBE-FW: a loadBalancerSourceRanges entry (or an LB IP, for traffic from the node) allowed on to `target`. */
export function firewallAllowRule(chain: string, src: string, name: string, target: string): IptablesRule {
  return { chain, src, comment: `${name} loadbalancer IP`, matches: [], target }
}

/** KUBE-FW's last rule: no target, so the packet falls through to KUBE-PROXY-FIREWALL's DROP. */
export function firewallFallThroughRule(chain: string, name: string): IptablesRule {
  return { chain, comment: `other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL`, matches: [] }
}

/** `-m recent` mask of one address of the family. */
function recentMask(family: Family): string {
  return family === 4 ? '255.255.255.255' : 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'
}

/** ClientIP affinity: a pinned client goes back to its endpoint chain. */
export function affinityCheckRule(chain: string, comment: string | undefined, seconds: number, sepChain: string, family: Family): IptablesRule {
  return {
    chain,
    ...(comment !== undefined ? { comment } : {}),
    matches: [`-m recent --rcheck --seconds ${seconds} --reap --name ${sepChain} --mask ${recentMask(family)} --rsource`],
    target: sepChain,
  }
}

/** One endpoint of a service chain: `--probability p` on all but the last (null). */
export function endpointPickRule(chain: string, comment: string | undefined, probability: string | null, sepChain: string): IptablesRule {
  return {
    chain,
    ...(comment !== undefined ? { comment } : {}),
    matches: probability === null ? [] : [`-m statistic --mode random --probability ${probability}`],
    target: sepChain,
  }
}

/** KUBE-SEP: hairpin traffic (the endpoint is the client) is marked for masquerade. */
export function endpointHairpinRule(sepChain: string, endpointIP: string, comment: string | undefined): IptablesRule {
  return { chain: sepChain, src: endpointIP, ...(comment !== undefined ? { comment } : {}), matches: [], target: KUBE_MARK_MASQ }
}

/** KUBE-SEP: the DNAT to the endpoint (`affinity`: also pins the client with `-m recent --set`). */
export function endpointDnatRule(sepChain: string, proto: string, comment: string | undefined, affinity: Family | undefined, endpoint: string): IptablesRule {
  return {
    chain: sepChain,
    proto,
    ...(comment !== undefined ? { comment } : {}),
    matches: [...(affinity !== undefined ? [`-m recent --set --name ${sepChain} --mask ${recentMask(affinity)} --rsource`] : []), `-m ${proto}`],
    target: `DNAT --to-destination ${endpoint}`,
  }
}

/** KUBE-POSTROUTING's masquerade of marked traffic. */
export const POSTROUTING_MASQ_RULE: IptablesRule = {
  chain: KUBE_POSTROUTING,
  comment: 'kubernetes service traffic requiring SNAT',
  matches: [],
  target: 'MASQUERADE --random-fully',
}

/** The target of filter rules for a service without endpoints. */
export function rejectTarget(family: Family): string {
  return `REJECT --reject-with ${family === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable'}`
}

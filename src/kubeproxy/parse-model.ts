// The model of a kube-proxy ruleset read back into what it means: per service port, its addresses, the endpoints each dispatch
// chain picks (with probabilities), affinity, traffic policies, masquerade and the rejects/drops for no endpoints.
//
// `tundra diff` builds this model twice with the same parser, from a node's live rules and from tundra's rendering
// of the same cluster (kubeproxy/dump.ts), and compares the two (inspect/diff.ts). The parsers (parse-iptables.ts,
// parse-nft.ts) are the only readers of kube-proxy rule text; they read what kube-proxy writes and refuse text that
// is not a ruleset with a RulesetParseError naming the line.
import type { Family } from '../model/cluster'

export type RuleMode = 'iptables' | 'nft'

/** One endpoint a dispatch chain may pick. */
export interface RuleEndpoint {
  /** `ip:port` / `[ip]:port`, from the endpoint chain's DNAT */
  readonly addr: string
  /** KUBE-SEP-… / endpoint-… */
  readonly chain: string
  /** iptables: the rule's probability as iptables-save prints it (kube-proxy's rounding), 'rest' for the last rule;
   *  nft: `1/N` of `numgen random mod N` */
  readonly probability: string
  /** the endpoint chain marks hairpin traffic (the endpoint as client) for masquerade */
  readonly hairpin: boolean
}

/** A KUBE-SVC/KUBE-SVL (service-/local-) chain: its endpoints in rule order and its ClientIP affinity. */
export interface RuleDispatch {
  readonly chain: string
  readonly endpoints: RuleEndpoint[]
  /** seconds; 0 = no affinity */
  affinitySeconds: number
}

export interface RuleServicePort {
  /** `ns/name` or `ns/name:port` */
  readonly name: string
  /** lowercase: tcp, udp, sctp */
  readonly protocol: string
  /** the service port's KUBE-SVC-… / service-… chain name (present in the rules or not) */
  readonly chain: string
  clusterIP?: string
  port?: number
  readonly externalIPs: string[]
  /** iptables only: nft does not tell load balancer IPs from external IPs, both are in externalIPs there */
  readonly loadBalancerIPs: string[]
  nodePort?: number
  healthCheckNodePort?: number
  /** the chain ClusterIP traffic goes to (KUBE-SVC = Cluster policy, KUBE-SVL = Local) */
  internalTarget?: string | undefined
  /** the chain external traffic goes on to after KUBE-EXT / external- */
  externalTarget?: string
  /** the cluster IP masquerade rule: 'all', `not from <cidr>`, or undefined (none) */
  clusterIPMasquerade?: string
  /** KUBE-EXT / external-: 'all' (policy Cluster) or 'node-local' (policy Local: only traffic from the node) */
  externalMasquerade?: string
  cluster?: RuleDispatch
  local?: RuleDispatch
  /** loadBalancerSourceRanges of KUBE-FW / firewall- (sorted) */
  readonly firewallSources: string[]
  /** rejects/drops for no (local) endpoints: `<addr:port | node port N> REJECT|DROP` */
  readonly noEndpoints: string[]
}

export interface RuleModel {
  readonly mode: RuleMode
  readonly family: Family
  /** KUBE-MARK-MASQ / mark-for-masquerade's mark, e.g. 0x4000; undefined when the chain is missing */
  masqueradeMark?: string
  /** keyed by `name/protocol` */
  readonly servicePorts: Map<string, RuleServicePort>
}

/** Bad ruleset text: `line` is 1-based (0 when the whole text is at fault). */
export class RulesetParseError extends Error {
  override readonly name = 'RulesetParseError'
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(line > 0 ? `line ${line}: ${message}` : message)
  }
}

function servicePortKey(name: string, protocol: string): string {
  return `${name}/${protocol}`
}

/** The model's entry for a service port, created empty on first use. */
export function servicePortEntry(model: RuleModel, name: string, protocol: string, chain: (name: string, protocol: string) => string): RuleServicePort {
  const key = servicePortKey(name, protocol)
  let sp = model.servicePorts.get(key)
  if (sp === undefined) {
    sp = { name, protocol, chain: chain(name, protocol), externalIPs: [], loadBalancerIPs: [], firewallSources: [], noEndpoints: [] }
    model.servicePorts.set(key, sp)
  }
  return sp
}

/** `0x4000`, whatever the width it was printed with. */
export function canonicalMark(text: string): string {
  const n = Number.parseInt(text, 16)
  return Number.isNaN(n) ? text : `0x${n.toString(16)}`
}

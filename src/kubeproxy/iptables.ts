// kube-proxy's iptables-mode rules for a Cluster, printed as `iptables-save` shows them on a node (filter and nat).
//
// Layout and matches follow pkg/proxy/iptables/proxier.go (syncProxyRules, writeServiceToEndpointRules) of the
// KUBE-SVC/KUBE-EXT/KUBE-FW/KUBE-SVL/KUBE-SEP era; text is iptables-save's canonical form (-s/-d/-p first, matches in
// the order kube-proxy gave them, comments quoted, chains sorted), so a dump diffs cleanly against a real node's.
// One deliberate difference from current kube-proxy: the KUBE-SVC -> KUBE-SEP rules carry the service port name as
// their comment (as the seed's node shows), not "svc -> ip:port"; `endpointComments: true` gives the newer form.
import type { Cluster, Family } from '../model/cluster'
import { cidrContains, parseCIDR, parseIP } from '../k8s/ip'
import {
  serviceExternalChainName,
  serviceFirewallChainName,
  servicePortEndpointChainName,
  servicePortPolicyClusterChain,
  servicePortPolicyLocalChainName,
} from './names'
import { probabilityForRemaining } from './probability'
import {
  KUBE_EXTERNAL_SERVICES,
  KUBE_FIREWALL,
  KUBE_FORWARD,
  KUBE_MARK_MASQ,
  KUBE_NODEPORTS,
  KUBE_POSTROUTING,
  KUBE_PROXY_FIREWALL,
  KUBE_SERVICES,
  JUMP_CHAINS,
  POSTROUTING_MASQ_RULE,
  affinityCheckRule,
  clusterIPMasqRule,
  endpointDnatRule,
  endpointHairpinRule,
  endpointPickRule,
  extLocalMasqRule,
  extLocalRouteRule,
  extMasqRule,
  extPodRule,
  firewallAllowRule,
  firewallFallThroughRule,
  frontendRule,
  jumpRule,
  jumpTo,
  nodePortRule,
  nodePortsJumpRule,
  rejectTarget,
  ruleLine,
  type IptablesRule,
} from './iptrules'
import {
  chainPlan,
  type ChainPlan,
  clusterCIDRFor,
  localhostNodePortsOn,
  masqueradeMark,
  nodeIPFor,
  nodePortIPs,
  proxyServicePorts,
  type ProxyEndpoint,
  type ProxyServicePort,
  type ProxyOptions,
} from './serviceports'

export interface IptablesOptions extends ProxyOptions {
  /** comment KUBE-SVC -> KUBE-SEP rules with "svc -> ip:port" as kube-proxy >= 1.24 does (default: the service port name) */
  readonly endpointComments?: boolean
  /** above this many endpoints kube-proxy drops per-endpoint comments (largeClusterEndpointsThreshold = 1000) */
  readonly largeClusterEndpointsThreshold?: number
}

class Table {
  readonly userChains = new Set<string>()
  readonly rules: IptablesRule[] = []
  constructor(
    readonly name: string,
    readonly builtins: readonly string[],
  ) {}

  chain(name: string): void {
    this.userChains.add(name)
  }

  add(r: IptablesRule): void {
    this.rules.push(r)
  }

  /** iptables-save order: built-in chains, then user chains sorted; rules grouped by chain, in insertion order. */
  render(family: Family): string {
    const user = [...this.userChains].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    const lines = [`*${this.name}`]
    for (const b of this.builtins) lines.push(`:${b} ACCEPT [0:0]`)
    for (const u of user) lines.push(`:${u} - [0:0]`)
    const byChain = new Map<string, string[]>()
    for (const r of this.rules) {
      const list = byChain.get(r.chain) ?? []
      list.push(ruleLine(r, family))
      byChain.set(r.chain, list)
    }
    for (const c of [...this.builtins, ...user]) lines.push(...(byChain.get(c) ?? []))
    lines.push('COMMIT')
    return lines.join('\n')
  }
}

function hex(n: number): string {
  return `0x${n.toString(16)}`
}

/** What every part of one family's render shares. */
interface RenderCtx {
  readonly filter: Table
  readonly nat: Table
  readonly family: Family
  readonly opts: IptablesOptions
  readonly mark: number
  /** the masquerade mark as value/mask */
  readonly markMask: string
  readonly clusterCIDR: string | undefined
  readonly nodeIP: string | undefined
  /** a rule comment, or none in large-cluster mode */
  readonly svcComment: (text: string) => string | undefined
}

/** The chains of one service port and where its filter rules send traffic without (local) endpoints. */
interface PortChains extends ChainPlan<string> {
  readonly name: string
  readonly proto: string
  readonly clusterPolicyChain: string
  readonly localPolicyChain: string
  readonly externalTrafficChain: string
  readonly fwChain: string
  readonly usesFWChain: boolean
  readonly loadBalancerTrafficChain: string
  readonly internalFilterTarget: string
  readonly internalFilterComment: string
  readonly externalFilterTarget: string
  readonly externalFilterComment: string
}

function render(cluster: Cluster, family: Family, opts: IptablesOptions): string {
  const mark = masqueradeMark(opts)
  const ports = proxyServicePorts(cluster, family, opts)
  const totalEndpoints = ports.reduce((n, p) => n + p.endpoints.length, 0)
  const largeClusterMode = totalEndpoints > (opts.largeClusterEndpointsThreshold ?? 1000)
  const r: RenderCtx = {
    filter: new Table('filter', ['INPUT', 'FORWARD', 'OUTPUT']),
    nat: new Table('nat', ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING']),
    family,
    opts,
    mark,
    markMask: `${hex(mark)}/${hex(mark)}`,
    clusterCIDR: clusterCIDRFor(opts, family),
    nodeIP: nodeIPFor(opts, family),
    svcComment: (text: string): string | undefined => (largeClusterMode ? undefined : text),
  }
  renderBaseChains(r)
  for (const sp of ports) renderServicePort(r, sp)
  renderNodePortsAndForward(r)
  const head = `# tundra: kube-proxy iptables-mode rules (IPv${family}), in iptables-save form`
  return `${head}\n${r.filter.render(family)}\n${r.nat.render(family)}\n`
}

/** Jumps from the built-in chains, kube-proxy's own chains, and the masquerade rules of KUBE-POSTROUTING. */
function renderBaseChains(r: RenderCtx): void {
  const { filter, nat, opts, family, mark, markMask } = r
  // Jumps from the built-in chains (EnsureRule Prepend: the last one listed ends up first); kubelet's KUBE-FIREWALL
  // jumps (iptablesKubeletJumpChains) come last, so first, when localhost NodePorts need that chain.
  if (localhostNodePortsOn(opts, family, 'iptables')) {
    for (const src of ['INPUT', 'OUTPUT']) filter.add({ chain: src, matches: [], target: KUBE_FIREWALL })
  }
  for (const j of [...JUMP_CHAINS].reverse()) {
    const t = j.table === 'filter' ? filter : nat
    t.add(jumpRule(j))
  }
  for (const c of [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL]) filter.chain(c)
  for (const c of [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ]) nat.chain(c)

  nat.add({ chain: KUBE_POSTROUTING, matches: [`-m mark ! --mark ${markMask}`], target: 'RETURN' })
  nat.add({ chain: KUBE_POSTROUTING, matches: [], target: `MARK --set-xmark ${hex(mark)}/0x0` }) // --xor-mark
  nat.add(POSTROUTING_MASQ_RULE)
  nat.add({ chain: KUBE_MARK_MASQ, matches: [], target: `MARK --set-xmark ${markMask}` }) // --or-mark
}

function portChains(sp: ProxyServicePort, family: Family): PortChains {
  const proto = sp.protocol
  const name = sp.name
  const clusterPolicyChain = servicePortPolicyClusterChain(name, proto)
  const localPolicyChain = servicePortPolicyLocalChainName(name, proto)
  const externalTrafficChain = serviceExternalChainName(name, proto)
  const fwChain = serviceFirewallChainName(name, proto)
  const plan = chainPlan(sp, clusterPolicyChain, localPolicyChain)
  const usesFWChain = sp.hasEndpoints && sp.loadBalancerVIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0

  let internalFilterTarget = ''
  let internalFilterComment = ''
  let externalFilterTarget = ''
  let externalFilterComment = ''
  if (!sp.hasEndpoints) {
    internalFilterTarget = externalFilterTarget = rejectTarget(family)
    internalFilterComment = externalFilterComment = `${name} has no endpoints`
  } else {
    if (!plan.hasInternalEndpoints) {
      internalFilterTarget = 'DROP'
      internalFilterComment = `${name} has no local endpoints`
    }
    if (!plan.hasExternalEndpoints) {
      externalFilterTarget = 'DROP'
      externalFilterComment = `${name} has no local endpoints`
    }
  }
  return {
    ...plan,
    name,
    proto,
    clusterPolicyChain,
    localPolicyChain,
    externalTrafficChain,
    fwChain,
    usesFWChain,
    loadBalancerTrafficChain: usesFWChain ? fwChain : externalTrafficChain,
    internalFilterTarget,
    internalFilterComment,
    externalFilterTarget,
    externalFilterComment,
  }
}

/** Everything one service port adds, in kube-proxy's order. */
function renderServicePort(r: RenderCtx, sp: ProxyServicePort): void {
  const pc = portChains(sp, r.family)
  renderFrontends(r, sp, pc)
  renderMasquerade(r, sp, pc)
  renderFirewall(r, sp, pc)
  renderEndpointRules(r, sp, pc)
}

/** The frontends: cluster IP, external IPs, load balancer IPs, node port, health check node port. */
function renderFrontends(r: RenderCtx, sp: ProxyServicePort, pc: PortChains): void {
  const { filter, nat } = r
  const { name, proto, hasInternalEndpoints, hasExternalEndpoints, externalFilterComment, externalFilterTarget } = pc
  // cluster IP
  if (hasInternalEndpoints) {
    nat.add(frontendRule(KUBE_SERVICES, sp.clusterIP, proto, sp.port.port, `${name} cluster IP`, pc.internalTrafficChain))
  } else {
    filter.add(frontendRule(KUBE_SERVICES, sp.clusterIP, proto, sp.port.port, pc.internalFilterComment, pc.internalFilterTarget))
  }
  // external IPs
  for (const ip of sp.externalIPs) {
    if (sp.hasEndpoints) {
      nat.add(frontendRule(KUBE_SERVICES, ip, proto, sp.port.port, `${name} external IP`, pc.externalTrafficChain))
    }
    if (!hasExternalEndpoints) {
      filter.add(frontendRule(KUBE_EXTERNAL_SERVICES, ip, proto, sp.port.port, externalFilterComment, externalFilterTarget))
    }
  }
  // load balancer IPs
  for (const ip of sp.loadBalancerVIPs) {
    if (sp.hasEndpoints) {
      nat.add(frontendRule(KUBE_SERVICES, ip, proto, sp.port.port, `${name} loadbalancer IP`, pc.loadBalancerTrafficChain))
    }
    if (pc.usesFWChain) {
      filter.add(frontendRule(KUBE_PROXY_FIREWALL, ip, proto, sp.port.port, `${name} traffic not accepted by ${pc.fwChain}`, 'DROP'))
    }
  }
  if (!hasExternalEndpoints) {
    for (const ip of sp.loadBalancerVIPs) {
      filter.add(frontendRule(KUBE_EXTERNAL_SERVICES, ip, proto, sp.port.port, externalFilterComment, externalFilterTarget))
    }
  }
  // node port
  if (sp.port.nodePort !== 0) {
    if (sp.hasEndpoints) {
      nat.add(nodePortRule(KUBE_NODEPORTS, proto, sp.port.nodePort, name, pc.externalTrafficChain, false))
    }
    if (!hasExternalEndpoints) {
      filter.add(nodePortRule(KUBE_EXTERNAL_SERVICES, proto, sp.port.nodePort, externalFilterComment, externalFilterTarget, true))
    }
  }
  // health check node port
  if (sp.healthCheckNodePort !== 0) {
    filter.add({
      chain: KUBE_NODEPORTS,
      proto: 'tcp',
      comment: `${name} health check node port`,
      matches: [`-m tcp --dport ${sp.healthCheckNodePort}`],
      target: 'ACCEPT',
    })
  }
}

/** Masquerade of internal traffic from outside the cluster, and the KUBE-EXT chain of external traffic. */
function renderMasquerade(r: RenderCtx, sp: ProxyServicePort, pc: PortChains): void {
  const { nat, clusterCIDR } = r
  const { name, proto, externalTrafficChain } = pc
  // internal traffic: masquerade what comes from outside the cluster (or everything with masqueradeAll)
  if (pc.hasInternalEndpoints) {
    if (r.opts.masqueradeAll === true) nat.add(clusterIPMasqRule(pc.internalTrafficChain, sp.clusterIP, proto, sp.port.port, name, undefined))
    else if (clusterCIDR !== undefined) nat.add(clusterIPMasqRule(pc.internalTrafficChain, sp.clusterIP, proto, sp.port.port, name, clusterCIDR))
  }
  // external traffic
  if (pc.usesExternalTrafficChain) {
    nat.chain(externalTrafficChain)
    if (!sp.externalPolicyLocal) {
      nat.add(extMasqRule(externalTrafficChain, name))
    } else {
      if (clusterCIDR !== undefined) nat.add(extPodRule(externalTrafficChain, clusterCIDR, name, pc.clusterPolicyChain))
      nat.add(extLocalMasqRule(externalTrafficChain, name))
      nat.add(extLocalRouteRule(externalTrafficChain, name, pc.clusterPolicyChain))
    }
    if (pc.hasExternalEndpoints) nat.add(jumpTo(externalTrafficChain, pc.externalPolicyChain))
  }
}

/** The KUBE-FW chain of loadBalancerSourceRanges (the node's own address allowed when a range covers it). */
function renderFirewall(r: RenderCtx, sp: ProxyServicePort, pc: PortChains): void {
  if (!pc.usesFWChain) return
  const { nat } = r
  const { fwChain, name, externalTrafficChain } = pc
  nat.chain(fwChain)
  let allowFromNode = false
  const nodeAddr = r.nodeIP === undefined ? undefined : parseIP(r.nodeIP)
  for (const cidr of sp.loadBalancerSourceRanges) {
    nat.add(firewallAllowRule(fwChain, cidr, name, externalTrafficChain))
    const c = parseCIDR(cidr)
    if (c && nodeAddr && cidrContains(c, nodeAddr)) allowFromNode = true
  }
  if (allowFromNode) {
    for (const ip of sp.loadBalancerVIPs) nat.add(firewallAllowRule(fwChain, ip, name, externalTrafficChain))
  }
  nat.add(firewallFallThroughRule(fwChain, name))
}

/** KUBE-SVC/KUBE-SVL → KUBE-SEP (writeServiceToEndpointRules), then each endpoint's KUBE-SEP chain. */
function renderEndpointRules(r: RenderCtx, sp: ProxyServicePort, pc: PortChains): void {
  const { nat, family, svcComment } = r
  const { name, proto } = pc
  const sepChain = (e: ProxyEndpoint): string => servicePortEndpointChainName(name, proto, e.str)
  const writeServiceToEndpointRules = (svcChain: string, endpoints: readonly ProxyEndpoint[]): void => {
    const epComment = (e: ProxyEndpoint): string | undefined => svcComment(r.opts.endpointComments === true ? `${name} -> ${e.str}` : name)
    if (sp.affinityTimeout > 0) {
      for (const e of endpoints) nat.add(affinityCheckRule(svcChain, epComment(e), sp.affinityTimeout, sepChain(e), family))
    }
    endpoints.forEach((e, i) => {
      const probability = i < endpoints.length - 1 ? probabilityForRemaining(endpoints.length - i) : null
      nat.add(endpointPickRule(svcChain, epComment(e), probability, sepChain(e)))
    })
  }
  if (pc.usesClusterPolicyChain) {
    nat.chain(pc.clusterPolicyChain)
    writeServiceToEndpointRules(pc.clusterPolicyChain, sp.clusterEndpoints)
  }
  if (pc.usesLocalPolicyChain) {
    nat.chain(pc.localPolicyChain)
    writeServiceToEndpointRules(pc.localPolicyChain, sp.localEndpoints)
  }
  for (const e of sp.allReachableEndpoints) {
    const chain = sepChain(e)
    nat.chain(chain)
    nat.add(endpointHairpinRule(chain, e.ip, svcComment(name)))
    nat.add(endpointDnatRule(chain, proto, svcComment(name), sp.affinityTimeout > 0 ? family : undefined, e.str))
  }
}

/** The NodePorts jump (the last rule of KUBE-SERVICES), the localnet guard, and KUBE-FORWARD. */
function renderNodePortsAndForward(r: RenderCtx): void {
  const { filter, nat, family, opts, markMask } = r
  // Localhost NodePorts (--iptables-localhost-nodeports, default on) work only for IPv4, where kube-proxy also sets
  // route_localnet.
  const localhostOn = localhostNodePortsOn(opts, family, 'iptables')
  const npIPs = nodePortIPs(opts, family, 'iptables')
  if (npIPs === undefined) {
    nat.add(nodePortsJumpRule(localhostOn ? undefined : { notLocalhost: family }))
  } else {
    for (const ip of npIPs) {
      const p = parseIP(ip)
      const loopback = p !== undefined && ((family === 4 && p.bytes[0] === 127) || (family === 6 && ip === '::1'))
      if (loopback && !localhostOn) continue
      nat.add(nodePortsJumpRule({ ip }))
    }
  }
  if (localhostOn) {
    // route_localnet lets packets from outside reach 127.0.0.0/8: kube-proxy (and kubelet) close that hole
    const localhost = family === 4 ? '127.0.0.0/8' : '::1/128'
    filter.chain(KUBE_FIREWALL)
    filter.add({
      chain: KUBE_FIREWALL,
      src: localhost,
      srcNeg: true,
      dst: localhost,
      comment: 'block incoming localnet connections',
      matches: ['-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT'],
      target: 'DROP',
    })
  }

  filter.add({ chain: KUBE_FORWARD, ctState: 'INVALID', matches: [], target: 'DROP' })
  filter.add({ chain: KUBE_FORWARD, comment: 'kubernetes forwarding rules', matches: [`-m mark --mark ${markMask}`], target: 'ACCEPT' })
  filter.add({
    chain: KUBE_FORWARD,
    comment: 'kubernetes forwarding conntrack rule',
    matches: ['-m conntrack --ctstate RELATED,ESTABLISHED'],
    target: 'ACCEPT',
  })
}

/** IPv4 rules (`iptables-restore` input; what `iptables-save` would print back). */
export function renderIptablesSave(cluster: Cluster, opts: IptablesOptions = {}): string {
  return render(cluster, 4, opts)
}

/** IPv6 rules (`ip6tables-restore` input). */
export function renderIp6tablesSave(cluster: Cluster, opts: IptablesOptions = {}): string {
  return render(cluster, 6, opts)
}

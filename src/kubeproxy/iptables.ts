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
  chainPlan,
  clusterCIDRFor,
  masqueradeMark,
  localhostNodePortsOn,
  nodeIPFor,
  nodePortIPs,
  proxyServicePorts,
  type ProxyEndpoint,
  type ProxyOptions,
} from './serviceports'

export interface IptablesOptions extends ProxyOptions {
  /** comment KUBE-SVC -> KUBE-SEP rules with "svc -> ip:port" as kube-proxy >= 1.24 does (default: the service port name) */
  readonly endpointComments?: boolean
  /** above this many endpoints kube-proxy drops per-endpoint comments (largeClusterEndpointsThreshold = 1000) */
  readonly largeClusterEndpointsThreshold?: number
}

const KUBE_SERVICES = 'KUBE-SERVICES'
const KUBE_EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES'
const KUBE_NODEPORTS = 'KUBE-NODEPORTS'
const KUBE_POSTROUTING = 'KUBE-POSTROUTING'
const KUBE_MARK_MASQ = 'KUBE-MARK-MASQ'
const KUBE_FORWARD = 'KUBE-FORWARD'
const KUBE_PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL'
/** kubelet's chain, which kube-proxy also writes when it enables localhost NodePorts */
const KUBE_FIREWALL = 'KUBE-FIREWALL'

/** One rule, held in the fields iptables-save orders by: addresses, protocol, then matches, then the target. */
interface Rule {
  chain: string
  src?: string
  srcNeg?: boolean
  dst?: string
  dstNeg?: boolean
  proto?: string
  matches: string[]
  target?: string
}

/** xtables_save_string: always double-quoted, with `"` and `\` escaped. */
function quote(s: string): string {
  return `"${s.replace(/[\\"]/g, m => `\\${m}`)}"`
}

function comment(text: string): string {
  return `-m comment --comment ${quote(text)}`
}

/** An address as iptables-save prints it: always with a prefix length. */
function hostOrNet(s: string, family: Family): string {
  if (s.includes('/')) return s
  return `${s}/${family === 4 ? 32 : 128}`
}

function renderRule(r: Rule, family: Family): string {
  let out = `-A ${r.chain}`
  if (r.src !== undefined) out += `${r.srcNeg ? ' !' : ''} -s ${hostOrNet(r.src, family)}`
  if (r.dst !== undefined) out += `${r.dstNeg ? ' !' : ''} -d ${hostOrNet(r.dst, family)}`
  if (r.proto !== undefined) out += ` -p ${r.proto}`
  for (const m of r.matches) out += ` ${m}`
  if (r.target !== undefined) out += ` -j ${r.target}`
  return out
}

class Table {
  readonly userChains = new Set<string>()
  readonly rules: Rule[] = []
  constructor(
    readonly name: string,
    readonly builtins: readonly string[],
  ) {}

  chain(name: string): void {
    this.userChains.add(name)
  }

  add(r: Rule): void {
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
      list.push(renderRule(r, family))
      byChain.set(r.chain, list)
    }
    for (const c of [...this.builtins, ...user]) lines.push(...(byChain.get(c) ?? []))
    lines.push('COMMIT')
    return lines.join('\n')
  }
}

interface JumpChain {
  table: 'filter' | 'nat'
  dst: string
  src: string
  comment: string
  ctNew: boolean
}

/** iptablesJumpChains, in kube-proxy's order; each is *prepended* to its built-in chain. */
const JUMP_CHAINS: readonly JumpChain[] = [
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

function hex(n: number): string {
  return `0x${n.toString(16)}`
}

function render(cluster: Cluster, family: Family, opts: IptablesOptions): string {
  const filter = new Table('filter', ['INPUT', 'FORWARD', 'OUTPUT'])
  const nat = new Table('nat', ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'])
  const mark = masqueradeMark(opts)
  const markMask = `${hex(mark)}/${hex(mark)}`
  const clusterCIDR = clusterCIDRFor(opts, family)
  const nodeIP = nodeIPFor(opts, family)
  const localhost = family === 4 ? '127.0.0.0/8' : '::1/128'
  const rejectWith = family === 4 ? 'icmp-port-unreachable' : 'icmp6-port-unreachable'
  const recentMask = family === 4 ? '255.255.255.255' : 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'

  // Jumps from the built-in chains (EnsureRule Prepend: the last one listed ends up first); kubelet's KUBE-FIREWALL
  // jumps (iptablesKubeletJumpChains) come last, so first, when localhost NodePorts need that chain.
  if (localhostNodePortsOn(opts, family, 'iptables')) {
    for (const src of ['INPUT', 'OUTPUT']) filter.add({ chain: src, matches: [], target: KUBE_FIREWALL })
  }
  for (const j of [...JUMP_CHAINS].reverse()) {
    const t = j.table === 'filter' ? filter : nat
    t.add({ chain: j.src, matches: [...(j.ctNew ? ['-m conntrack --ctstate NEW'] : []), comment(j.comment)], target: j.dst })
  }
  for (const c of [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL]) filter.chain(c)
  for (const c of [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ]) nat.chain(c)

  nat.add({ chain: KUBE_POSTROUTING, matches: [`-m mark ! --mark ${markMask}`], target: 'RETURN' })
  nat.add({ chain: KUBE_POSTROUTING, matches: [], target: `MARK --set-xmark ${hex(mark)}/0x0` }) // --xor-mark
  nat.add({ chain: KUBE_POSTROUTING, matches: [comment('kubernetes service traffic requiring SNAT')], target: 'MASQUERADE --random-fully' })
  nat.add({ chain: KUBE_MARK_MASQ, matches: [], target: `MARK --set-xmark ${markMask}` }) // --or-mark

  const ports = proxyServicePorts(cluster, family, opts)
  const totalEndpoints = ports.reduce((n, p) => n + p.endpoints.length, 0)
  const largeClusterMode = totalEndpoints > (opts.largeClusterEndpointsThreshold ?? 1000)
  const svcComment = (text: string): string[] => (largeClusterMode ? [] : [comment(text)])

  for (const sp of ports) {
    const proto = sp.protocol
    const name = sp.name
    const dport = (port: number): string => `-m ${proto} --dport ${port}`
    const clusterPolicyChain = servicePortPolicyClusterChain(name, proto)
    const localPolicyChain = servicePortPolicyLocalChainName(name, proto)
    const externalTrafficChain = serviceExternalChainName(name, proto)
    const fwChain = serviceFirewallChainName(name, proto)
    const sepChain = (e: ProxyEndpoint): string => servicePortEndpointChainName(name, proto, e.str)

    const {
      usesClusterPolicyChain,
      usesLocalPolicyChain,
      internalTrafficChain,
      hasInternalEndpoints,
      externalPolicyChain,
      hasExternalEndpoints,
      usesExternalTrafficChain,
    } = chainPlan(sp, clusterPolicyChain, localPolicyChain)
    const usesFWChain = sp.hasEndpoints && sp.loadBalancerVIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0
    const loadBalancerTrafficChain = usesFWChain ? fwChain : externalTrafficChain

    let internalFilterTarget = ''
    let internalFilterComment = ''
    let externalFilterTarget = ''
    let externalFilterComment = ''
    if (!sp.hasEndpoints) {
      internalFilterTarget = externalFilterTarget = `REJECT --reject-with ${rejectWith}`
      internalFilterComment = externalFilterComment = `${name} has no endpoints`
    } else {
      if (!hasInternalEndpoints) {
        internalFilterTarget = 'DROP'
        internalFilterComment = `${name} has no local endpoints`
      }
      if (!hasExternalEndpoints) {
        externalFilterTarget = 'DROP'
        externalFilterComment = `${name} has no local endpoints`
      }
    }

    // cluster IP
    if (hasInternalEndpoints) {
      nat.add({ chain: KUBE_SERVICES, dst: sp.clusterIP, proto, matches: [comment(`${name} cluster IP`), dport(sp.port.port)], target: internalTrafficChain })
    } else {
      filter.add({
        chain: KUBE_SERVICES,
        dst: sp.clusterIP,
        proto,
        matches: [comment(internalFilterComment), dport(sp.port.port)],
        target: internalFilterTarget,
      })
    }
    // external IPs
    for (const ip of sp.externalIPs) {
      if (sp.hasEndpoints) {
        nat.add({ chain: KUBE_SERVICES, dst: ip, proto, matches: [comment(`${name} external IP`), dport(sp.port.port)], target: externalTrafficChain })
      }
      if (!hasExternalEndpoints) {
        filter.add({
          chain: KUBE_EXTERNAL_SERVICES,
          dst: ip,
          proto,
          matches: [comment(externalFilterComment), dport(sp.port.port)],
          target: externalFilterTarget,
        })
      }
    }
    // load balancer IPs
    for (const ip of sp.loadBalancerVIPs) {
      if (sp.hasEndpoints) {
        nat.add({ chain: KUBE_SERVICES, dst: ip, proto, matches: [comment(`${name} loadbalancer IP`), dport(sp.port.port)], target: loadBalancerTrafficChain })
      }
      if (usesFWChain) {
        filter.add({
          chain: KUBE_PROXY_FIREWALL,
          dst: ip,
          proto,
          matches: [comment(`${name} traffic not accepted by ${fwChain}`), dport(sp.port.port)],
          target: 'DROP',
        })
      }
    }
    if (!hasExternalEndpoints) {
      for (const ip of sp.loadBalancerVIPs) {
        filter.add({
          chain: KUBE_EXTERNAL_SERVICES,
          dst: ip,
          proto,
          matches: [comment(externalFilterComment), dport(sp.port.port)],
          target: externalFilterTarget,
        })
      }
    }
    // node port
    if (sp.port.nodePort !== 0) {
      if (sp.hasEndpoints) {
        nat.add({ chain: KUBE_NODEPORTS, proto, matches: [comment(name), dport(sp.port.nodePort)], target: externalTrafficChain })
      }
      if (!hasExternalEndpoints) {
        filter.add({
          chain: KUBE_EXTERNAL_SERVICES,
          proto,
          matches: [comment(externalFilterComment), '-m addrtype --dst-type LOCAL', dport(sp.port.nodePort)],
          target: externalFilterTarget,
        })
      }
    }
    // health check node port
    if (sp.healthCheckNodePort !== 0) {
      filter.add({
        chain: KUBE_NODEPORTS,
        proto: 'tcp',
        matches: [comment(`${name} health check node port`), `-m tcp --dport ${sp.healthCheckNodePort}`],
        target: 'ACCEPT',
      })
    }

    // internal traffic: masquerade what comes from outside the cluster (or everything with masqueradeAll)
    if (hasInternalEndpoints) {
      const base = {
        chain: internalTrafficChain,
        dst: sp.clusterIP,
        proto,
        matches: [comment(`${name} cluster IP`), dport(sp.port.port)],
        target: KUBE_MARK_MASQ,
      }
      if (opts.masqueradeAll === true) nat.add(base)
      else if (clusterCIDR !== undefined) nat.add({ ...base, src: clusterCIDR, srcNeg: true })
    }

    // external traffic
    if (usesExternalTrafficChain) {
      nat.chain(externalTrafficChain)
      if (!sp.externalPolicyLocal) {
        nat.add({ chain: externalTrafficChain, matches: [comment(`masquerade traffic for ${name} external destinations`)], target: KUBE_MARK_MASQ })
      } else {
        if (clusterCIDR !== undefined) {
          nat.add({
            chain: externalTrafficChain,
            src: clusterCIDR,
            matches: [comment(`pod traffic for ${name} external destinations`)],
            target: clusterPolicyChain,
          })
        }
        nat.add({
          chain: externalTrafficChain,
          matches: [comment(`masquerade LOCAL traffic for ${name} external destinations`), '-m addrtype --src-type LOCAL'],
          target: KUBE_MARK_MASQ,
        })
        nat.add({
          chain: externalTrafficChain,
          matches: [comment(`route LOCAL traffic for ${name} external destinations`), '-m addrtype --src-type LOCAL'],
          target: clusterPolicyChain,
        })
      }
      if (hasExternalEndpoints) nat.add({ chain: externalTrafficChain, matches: [], target: externalPolicyChain })
    }

    // firewall (loadBalancerSourceRanges)
    if (usesFWChain) {
      nat.chain(fwChain)
      const fwComment = comment(`${name} loadbalancer IP`)
      let allowFromNode = false
      const nodeAddr = nodeIP === undefined ? undefined : parseIP(nodeIP)
      for (const cidr of sp.loadBalancerSourceRanges) {
        nat.add({ chain: fwChain, src: cidr, matches: [fwComment], target: externalTrafficChain })
        const c = parseCIDR(cidr)
        if (c && nodeAddr && cidrContains(c, nodeAddr)) allowFromNode = true
      }
      if (allowFromNode) {
        for (const ip of sp.loadBalancerVIPs) nat.add({ chain: fwChain, src: ip, matches: [fwComment], target: externalTrafficChain })
      }
      nat.add({ chain: fwChain, matches: [comment(`other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL`)] })
    }

    const writeServiceToEndpointRules = (svcChain: string, endpoints: readonly ProxyEndpoint[]): void => {
      const epComment = (e: ProxyEndpoint): string[] => svcComment(opts.endpointComments === true ? `${name} -> ${e.str}` : name)
      if (sp.affinityTimeout > 0) {
        for (const e of endpoints) {
          nat.add({
            chain: svcChain,
            matches: [...epComment(e), `-m recent --rcheck --seconds ${sp.affinityTimeout} --reap --name ${sepChain(e)} --mask ${recentMask} --rsource`],
            target: sepChain(e),
          })
        }
      }
      endpoints.forEach((e, i) => {
        const matches = epComment(e)
        if (i < endpoints.length - 1) matches.push(`-m statistic --mode random --probability ${probabilityForRemaining(endpoints.length - i)}`)
        nat.add({ chain: svcChain, matches, target: sepChain(e) })
      })
    }
    if (usesClusterPolicyChain) {
      nat.chain(clusterPolicyChain)
      writeServiceToEndpointRules(clusterPolicyChain, sp.clusterEndpoints)
    }
    if (usesLocalPolicyChain) {
      nat.chain(localPolicyChain)
      writeServiceToEndpointRules(localPolicyChain, sp.localEndpoints)
    }

    // endpoint chains
    for (const e of sp.allReachableEndpoints) {
      const chain = sepChain(e)
      nat.chain(chain)
      nat.add({ chain, src: e.ip, matches: svcComment(name), target: KUBE_MARK_MASQ })
      const matches = svcComment(name)
      if (sp.affinityTimeout > 0) matches.push(`-m recent --set --name ${chain} --mask ${recentMask} --rsource`)
      matches.push(`-m ${proto}`)
      nat.add({ chain, proto, matches, target: `DNAT --to-destination ${e.str}` })
    }
  }

  // NodePorts: the last rule of KUBE-SERVICES. Localhost NodePorts (--iptables-localhost-nodeports, default on)
  // work only for IPv4, where kube-proxy also sets route_localnet.
  const localhostNodePorts = localhostNodePortsOn(opts, family, 'iptables')
  const npIPs = nodePortIPs(opts, family, 'iptables')
  const npComment = comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')
  if (npIPs === undefined) {
    nat.add({
      chain: KUBE_SERVICES,
      ...(localhostNodePorts ? {} : { dst: localhost, dstNeg: true }),
      matches: [npComment, '-m addrtype --dst-type LOCAL'],
      target: KUBE_NODEPORTS,
    })
  } else {
    for (const ip of npIPs) {
      const p = parseIP(ip)
      const loopback = p !== undefined && ((family === 4 && p.bytes[0] === 127) || (family === 6 && ip === '::1'))
      if (loopback && !localhostNodePorts) continue
      nat.add({ chain: KUBE_SERVICES, dst: ip, matches: [npComment], target: KUBE_NODEPORTS })
    }
  }
  if (localhostNodePorts) {
    // route_localnet lets packets from outside reach 127.0.0.0/8: kube-proxy (and kubelet) close that hole
    filter.chain(KUBE_FIREWALL)
    filter.add({
      chain: KUBE_FIREWALL,
      src: localhost,
      srcNeg: true,
      dst: localhost,
      matches: [comment('block incoming localnet connections'), '-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT'],
      target: 'DROP',
    })
  }

  filter.add({ chain: KUBE_FORWARD, matches: ['-m conntrack --ctstate INVALID'], target: 'DROP' })
  filter.add({ chain: KUBE_FORWARD, matches: [comment('kubernetes forwarding rules'), `-m mark --mark ${markMask}`], target: 'ACCEPT' })
  filter.add({
    chain: KUBE_FORWARD,
    matches: [comment('kubernetes forwarding conntrack rule'), '-m conntrack --ctstate RELATED,ESTABLISHED'],
    target: 'ACCEPT',
  })

  const head = `# tundra: kube-proxy iptables-mode rules (IPv${family}), in iptables-save form`
  return `${head}\n${filter.render(family)}\n${nat.render(family)}\n`
}

/** IPv4 rules (`iptables-restore` input; what `iptables-save` would print back). */
export function renderIptablesSave(cluster: Cluster, opts: IptablesOptions = {}): string {
  return render(cluster, 4, opts)
}

/** IPv6 rules (`ip6tables-restore` input). */
export function renderIp6tablesSave(cluster: Cluster, opts: IptablesOptions = {}): string {
  return render(cluster, 6, opts)
}

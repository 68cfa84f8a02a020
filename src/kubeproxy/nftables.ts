// kube-proxy's nftables-mode ruleset for a Cluster, as an `nft -f` script (pkg/proxy/nftables/proxier.go).
//
// Rules are written in the form `nft list table` prints them, so listing a loaded table gives the same text except
// for element order inside sets and maps (the kernel's hash order). The script first deletes the table, so loading it
// twice leaves one copy.
import type { Cluster, Family } from '../model/cluster'
import { cidrContains, compareIP, parseCIDR, parseIP } from '../k8s/ip'
import { NFT_PREFIX, nftServicePortChainNameBase, nftServicePortEndpointChainNameBase } from './names'
import { chainPlan, clusterCIDRFor, masqueradeMark, nodeIPFor, nodePortIPs, proxyServicePorts, type ProxyEndpoint, type ProxyOptions } from './serviceports'

export interface NftOptions extends ProxyOptions {
  /** IP family of the table: `ip kube-proxy` (4, default) or `ip6 kube-proxy` (6) */
  readonly family?: Family
  /** ServiceCIDRs: traffic to unallocated cluster IPs in them is dropped (cluster-ips-check) */
  readonly serviceCIDRs?: readonly string[]
}

interface SetDef {
  kind: 'set' | 'map'
  name: string
  type: string
  comment?: string
  flags?: string
  timeout?: number
  elements: string[]
}

interface ChainDef {
  name: string
  base?: string
  comment?: string
  rules: string[]
}

function q(s: string): string {
  return `"${s.replace(/"/g, '\\"')}"`
}

/** nft's time format: 3h, 1d, 1h1m40s, 10s. */
export function nftDuration(seconds: number): string {
  let rest = seconds
  let out = ''
  for (const [unit, len] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    const n = Math.floor(rest / len)
    if (n > 0) {
      out += `${n}${unit}`
      rest -= n * len
    }
  }
  return out === '' ? '0s' : out
}

function hex8(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`
}

/**
 * An anonymous set of addresses/prefixes as `nft list` prints it: ascending (these are interval sets), and a lone
 * element without braces.
 */
function anonSet(items: readonly string[]): string {
  const key = (s: string): string => s.split('/')[0] as string
  const sorted = [...new Set(items)].sort((a, b) => compareIP(key(a), key(b)))
  return sorted.length === 1 ? (sorted[0] as string) : `{ ${sorted.join(', ')} }`
}

function isLoopback(ip: string): boolean {
  const p = parseIP(ip)
  return p !== undefined && (p.family === 4 ? p.bytes[0] === 127 : p.bytes.every((b, i) => b === (i === 15 ? 1 : 0)))
}

function endpointAddr(e: ProxyEndpoint, family: Family): string {
  return family === 6 ? `[${e.ip}]:${e.port}` : `${e.ip}:${e.port}`
}

export function renderNft(cluster: Cluster, opts: NftOptions = {}): string {
  const family: Family = opts.family ?? 4
  const ipX = family === 4 ? 'ip' : 'ip6'
  const addrType = family === 4 ? 'ipv4_addr' : 'ipv6_addr'
  const noLocalhost = family === 4 ? 'ip daddr != 127.0.0.0/8' : 'ip6 daddr != ::1'
  const mark = hex8(masqueradeMark(opts))
  const clusterCIDR = clusterCIDRFor(opts, family)
  const nodeIP = nodeIPFor(opts, family)
  const npIPs = nodePortIPs(opts, family, 'nftables')
  const serviceCIDRs = (opts.serviceCIDRs ?? []).filter(c => parseCIDR(c)?.ip.family === family)

  const sets = new Map<string, SetDef>()
  const chains = new Map<string, ChainDef>()
  const addSet = (s: SetDef): SetDef => {
    sets.set(s.name, s)
    return s
  }
  const chain = (name: string, base?: string, comment?: string): ChainDef => {
    let c = chains.get(name)
    if (!c) {
      c = { name, rules: [] }
      if (base !== undefined) c.base = base
      if (comment !== undefined) c.comment = comment
      chains.set(name, c)
    }
    return c
  }

  // setupNFTables: base chains, then the chains they jump to, in kube-proxy's creation order. Current kube-proxy
  // filters pre-DNAT only where it must (firewall-check, at dstnat - 10) and does the rest at filter priority, after
  // DNAT. nft before 1.0.7 accepts "dstnat" only on prerouting, so output's -110 and -100 are numeric, written the
  // way `nft list` prints them.
  const baseChains: [string, string][] = [
    ['filter-prerouting-pre-dnat', 'type filter hook prerouting priority dstnat - 10; policy accept;'],
    ['filter-output-pre-dnat', 'type filter hook output priority -110; policy accept;'],
    ['filter-input', 'type filter hook input priority filter; policy accept;'],
    ['filter-forward', 'type filter hook forward priority filter; policy accept;'],
    ['filter-output', 'type filter hook output priority filter; policy accept;'],
    ['nat-prerouting', 'type nat hook prerouting priority dstnat; policy accept;'],
    ['nat-output', 'type nat hook output priority -100; policy accept;'],
    ['nat-postrouting', 'type nat hook postrouting priority srcnat; policy accept;'],
  ]
  for (const [name, base] of baseChains) chain(name, base)
  const jumps: [string, string, string][] = [
    ['nodeport-endpoints-check', 'filter-input', 'ct state new '],
    ['service-endpoints-check', 'filter-input', 'ct state new '],
    ['service-endpoints-check', 'filter-forward', 'ct state new '],
    ['service-endpoints-check', 'filter-output', 'ct state new '],
    ['firewall-check', 'filter-prerouting-pre-dnat', 'ct state new '],
    ['firewall-check', 'filter-output-pre-dnat', 'ct state new '],
    ['services', 'nat-output', ''],
    ['services', 'nat-prerouting', ''],
    ['masquerading', 'nat-postrouting', ''],
    ['cluster-ips-check', 'filter-forward', 'ct state new '],
    ['cluster-ips-check', 'filter-output', 'ct state new '],
  ]
  for (const [dst, src, extra] of jumps) {
    chain(dst)
    chain(src).rules.push(`${extra}jump ${dst}`)
  }
  chain('mark-for-masquerade').rules.push(`meta mark set meta mark | ${mark}`)
  chain('masquerading').rules.push(`meta mark & ${mark} == 0x00000000 return`, `meta mark set meta mark ^ ${mark}`, 'masquerade fully-random')
  const clusterIPsSet = addSet({ kind: 'set', name: 'cluster-ips', type: addrType, comment: 'Active ClusterIPs', elements: [] })
  chain('cluster-ips-check').rules.push(`${ipX} daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"`)
  if (serviceCIDRs.length > 0) {
    chain('cluster-ips-check').rules.push(`${ipX} daddr ${anonSet(serviceCIDRs)} drop comment "Drop traffic to unallocated ClusterIPs"`)
  }
  if (npIPs !== undefined) {
    addSet({ kind: 'set', name: 'nodeport-ips', type: addrType, comment: 'IPs that accept NodePort traffic', elements: npIPs.filter(ip => !isLoopback(ip)) })
  }
  const noEndpointServices = addSet({
    kind: 'map',
    name: 'no-endpoint-services',
    type: `${addrType} . inet_proto . inet_service : verdict`,
    comment: 'vmap to drop or reject packets to services with no endpoints',
    elements: [],
  })
  const noEndpointNodePorts = addSet({
    kind: 'map',
    name: 'no-endpoint-nodeports',
    type: 'inet_proto . inet_service : verdict',
    comment: 'vmap to drop or reject packets to service nodeports with no endpoints',
    elements: [],
  })
  chain('reject-chain', undefined, 'helper for @no-endpoint-services / @no-endpoint-nodeports').rules.push('reject')
  chain('service-endpoints-check').rules.push(`${ipX} daddr . meta l4proto . th dport vmap @no-endpoint-services`)
  chain('nodeport-endpoints-check').rules.push(
    npIPs === undefined
      ? `${noLocalhost} meta l4proto . th dport vmap @no-endpoint-nodeports`
      : `${ipX} daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports`,
  )
  const firewallIPs = addSet({
    kind: 'map',
    name: 'firewall-ips',
    type: `${addrType} . inet_proto . inet_service : verdict`,
    comment: 'destinations that are subject to LoadBalancerSourceRanges',
    elements: [],
  })
  chain('firewall-check').rules.push(`${ipX} daddr . meta l4proto . th dport vmap @firewall-ips`)
  const serviceIPs = addSet({
    kind: 'map',
    name: 'service-ips',
    type: `${addrType} . inet_proto . inet_service : verdict`,
    comment: 'ClusterIP, ExternalIP and LoadBalancer IP traffic',
    elements: [],
  })
  const serviceNodePorts = addSet({
    kind: 'map',
    name: 'service-nodeports',
    type: 'inet_proto . inet_service : verdict',
    comment: 'NodePort traffic',
    elements: [],
  })
  chain('services').rules.push(`${ipX} daddr . meta l4proto . th dport vmap @service-ips`)
  chain('services').rules.push(
    npIPs === undefined
      ? `fib daddr type local ${noLocalhost} meta l4proto . th dport vmap @service-nodeports`
      : `${ipX} daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports`,
  )

  const addElem = (s: SetDef, elem: string): void => {
    if (!s.elements.includes(elem)) s.elements.push(elem)
  }
  const localDetect = clusterCIDR

  for (const sp of proxyServicePorts(cluster, family, opts)) {
    const svc = sp.service
    const proto = sp.protocol
    const base = nftServicePortChainNameBase(svc.namespace, svc.name, proto, sp.port.name)
    const clusterPolicyChain = NFT_PREFIX.cluster + base
    const localPolicyChain = NFT_PREFIX.local + base
    const externalTrafficChain = NFT_PREFIX.external + base
    const fwChain = NFT_PREFIX.firewall + base
    const epBase = (e: ProxyEndpoint): string => nftServicePortEndpointChainNameBase(svc.namespace, svc.name, proto, sp.port.name, e.ip, e.port)
    const epChain = (e: ProxyEndpoint): string => NFT_PREFIX.endpoint + epBase(e)
    const affinitySet = (e: ProxyEndpoint): string => NFT_PREFIX.affinity + epBase(e)
    const port = String(sp.port.port)

    for (const e of sp.allReachableEndpoints) chain(epChain(e))
    const {
      usesClusterPolicyChain,
      usesLocalPolicyChain,
      internalTrafficChain,
      hasInternalEndpoints,
      externalPolicyChain,
      hasExternalEndpoints,
      usesExternalTrafficChain,
    } = chainPlan(sp, clusterPolicyChain, localPolicyChain)
    if (usesClusterPolicyChain) chain(clusterPolicyChain)
    if (usesLocalPolicyChain) chain(localPolicyChain)
    if (usesExternalTrafficChain) chain(externalTrafficChain)

    let internalVerdict = ''
    let externalVerdict = ''
    if (!sp.hasEndpoints) {
      internalVerdict = externalVerdict = 'goto reject-chain'
    } else {
      if (!hasInternalEndpoints) internalVerdict = 'drop'
      if (!hasExternalEndpoints) externalVerdict = 'drop'
    }
    const cmt = ` comment ${q(sp.name)}`

    addElem(clusterIPsSet, sp.clusterIP)
    if (hasInternalEndpoints) addElem(serviceIPs, `${sp.clusterIP} . ${proto} . ${port} : goto ${internalTrafficChain}`)
    else addElem(noEndpointServices, `${sp.clusterIP} . ${proto} . ${port}${cmt} : ${internalVerdict}`)

    for (const ip of sp.externalIPs) {
      if (sp.hasEndpoints) addElem(serviceIPs, `${ip} . ${proto} . ${port} : goto ${externalTrafficChain}`)
      if (!hasExternalEndpoints) addElem(noEndpointServices, `${ip} . ${proto} . ${port}${cmt} : ${externalVerdict}`)
    }

    const usesFWChain = sp.loadBalancerVIPs.length > 0 && sp.loadBalancerSourceRanges.length > 0
    if (usesFWChain) chain(fwChain)
    for (const ip of sp.loadBalancerVIPs) {
      if (sp.hasEndpoints) addElem(serviceIPs, `${ip} . ${proto} . ${port} : goto ${externalTrafficChain}`)
      if (usesFWChain) addElem(firewallIPs, `${ip} . ${proto} . ${port} : goto ${fwChain}`)
    }
    if (!hasExternalEndpoints) {
      for (const ip of sp.loadBalancerVIPs) addElem(noEndpointServices, `${ip} . ${proto} . ${port}${cmt} : ${externalVerdict}`)
    }

    if (sp.port.nodePort !== 0) {
      if (sp.hasEndpoints) addElem(serviceNodePorts, `${proto} . ${sp.port.nodePort} : goto ${externalTrafficChain}`)
      if (!hasExternalEndpoints) addElem(noEndpointNodePorts, `${proto} . ${sp.port.nodePort}${cmt} : ${externalVerdict}`)
    }

    if (hasInternalEndpoints) {
      const match = `${ipX} daddr ${sp.clusterIP}`
      if (opts.masqueradeAll === true) chain(internalTrafficChain).rules.push(`${match} jump mark-for-masquerade`)
      else if (localDetect !== undefined) chain(internalTrafficChain).rules.push(`${match} ${ipX} saddr != ${localDetect} jump mark-for-masquerade`)
    }

    if (usesExternalTrafficChain) {
      const ext = chain(externalTrafficChain)
      if (!sp.externalPolicyLocal) {
        ext.rules.push('jump mark-for-masquerade')
      } else {
        if (localDetect !== undefined) ext.rules.push(`${ipX} saddr ${localDetect} goto ${clusterPolicyChain} comment "short-circuit pod traffic"`)
        ext.rules.push('fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"')
        ext.rules.push(`fib saddr type local goto ${clusterPolicyChain} comment "short-circuit local traffic"`)
      }
      if (hasExternalEndpoints) ext.rules.push(`goto ${externalPolicyChain}`)
    }

    if (usesFWChain) {
      const sources = [...sp.loadBalancerSourceRanges]
      const nodeAddr = nodeIP === undefined ? undefined : parseIP(nodeIP)
      const allowFromNode =
        nodeAddr !== undefined &&
        sp.loadBalancerSourceRanges.some(c => {
          const p = parseCIDR(c)
          return p !== undefined && cidrContains(p, nodeAddr)
        })
      if (allowFromNode) sources.push(...sp.loadBalancerVIPs)
      chain(fwChain).rules.push(`${ipX} saddr != ${anonSet(sources)} drop`)
    }

    if (sp.affinityTimeout > 0) {
      for (const e of sp.allReachableEndpoints) {
        addSet({ kind: 'set', name: affinitySet(e), type: addrType, flags: 'dynamic,timeout', timeout: sp.affinityTimeout, elements: [] })
      }
    }

    const writeServiceToEndpointRules = (svcChain: string, endpoints: readonly ProxyEndpoint[]): void => {
      const c = chain(svcChain)
      if (sp.affinityTimeout > 0) {
        for (const e of endpoints) c.rules.push(`${ipX} saddr @${affinitySet(e)} goto ${epChain(e)}`)
      }
      const vmap = endpoints.map((e, i) => `${i} : goto ${epChain(e)}`).join(', ')
      c.rules.push(`numgen random mod ${endpoints.length} vmap { ${vmap} }`)
    }
    if (usesClusterPolicyChain) writeServiceToEndpointRules(clusterPolicyChain, sp.clusterEndpoints)
    if (usesLocalPolicyChain) writeServiceToEndpointRules(localPolicyChain, sp.localEndpoints)

    for (const e of sp.allReachableEndpoints) {
      const c = chain(epChain(e))
      c.rules.push(`${ipX} saddr ${e.ip} jump mark-for-masquerade`)
      if (sp.affinityTimeout > 0) c.rules.push(`update @${affinitySet(e)} { ${ipX} saddr }`)
      c.rules.push(`meta l4proto ${proto} dnat to ${endpointAddr(e, family)}`)
    }
  }

  const table = `${ipX} kube-proxy`
  const out: string[] = [
    `# tundra: kube-proxy nftables-mode ruleset (IPv${family}); load with nft -f`,
    `table ${table}`,
    `delete table ${table}`,
    `table ${table} {`,
    '\tcomment "rules for kube-proxy"',
  ]
  for (const s of sets.values()) {
    out.push(`\t${s.kind} ${s.name} {`)
    out.push(`\t\ttype ${s.type}`)
    if (s.flags !== undefined) out.push('\t\tsize 65535', `\t\tflags ${s.flags}`)
    if (s.timeout !== undefined) out.push(`\t\ttimeout ${nftDuration(s.timeout)}`)
    if (s.comment !== undefined) out.push(`\t\tcomment ${q(s.comment)}`)
    if (s.elements.length > 0) {
      const elems = [...s.elements].sort()
      out.push('\t\telements = {')
      elems.forEach((e, i) => out.push(`\t\t\t${e}${i < elems.length - 1 ? ',' : ''}`))
      out.push('\t\t}')
    }
    out.push('\t}', '')
  }
  for (const c of chains.values()) {
    out.push(`\tchain ${c.name} {`)
    if (c.base !== undefined) out.push(`\t\t${c.base}`)
    if (c.comment !== undefined) out.push(`\t\tcomment ${q(c.comment)}`)
    for (const r of c.rules) out.push(`\t\t${r}`)
    out.push('\t}', '')
  }
  if (out[out.length - 1] === '') out.pop()
  out.push('}')
  return `${out.join('\n')}\n`
}

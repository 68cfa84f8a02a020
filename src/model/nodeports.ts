// Which node addresses serve NodePorts (kube-proxy's --nodeport-addresses and --iptables-localhost-nodeports, as
// proxyutil.NewNodePortAddresses and the proxiers apply them), written once: the NAT compile (nat/compile.ts) and the
// iptables/nftables renderers (kubeproxy/serviceports.ts) both call it, so the dataplane serves what `tundra dump` says.
// Pure: CIDR containment is the caller's (each layer has its own address parser).

import type { Family } from './cluster'

/** kube-proxy's proxy mode, which decides what an empty nodePortAddresses means. */
export type ProxyMode = 'iptables' | 'nftables'

/** kube-proxy's `--nodeport-addresses primary`: the node's own IP of each family. */
export const NODEPORT_PRIMARY = 'primary'

/** 127.0.0.1: whether a nodePortAddresses CIDR covers IPv4 loopback (NodePortAddresses.ContainsIPv4Loopback) */
const IPV4_LOOPBACK = '127.0.0.1'

/** Whether `cidr` contains `ip`; false for a CIDR that does not parse or is of the other family. */
export type CidrContains = (cidr: string, ip: string) => boolean

function cidrFamily(cidr: string): Family {
  return cidr.includes(':') ? 6 : 4
}

function isZeroPrefix(cidr: string): boolean {
  return /\/0+$/.test(cidr.trim())
}

/** The nodePortAddresses entries of this family with `primary` resolved, or undefined: every local address. */
function selectors(list: readonly string[], family: Family, mode: ProxyMode, primaryIP: string | undefined): string[] | undefined {
  const l = list.length === 0 && mode === 'nftables' ? [NODEPORT_PRIMARY] : list
  const cidrs: string[] = []
  for (const x of l) {
    if (x === NODEPORT_PRIMARY) {
      if (primaryIP !== undefined) cidrs.push(`${primaryIP}/${family === 4 ? 32 : 128}`)
    } else if (cidrFamily(x) === family) cidrs.push(x)
  }
  if (cidrs.length === 0 && !l.includes(NODEPORT_PRIMARY)) return undefined
  if (cidrs.some(isZeroPrefix)) return undefined
  return cidrs
}

/**
 * The node IPs of `family` that accept NodePorts, or undefined when every local address does. `nodeIPs` are the
 * node's addresses of this family, the primary first. CIDRs of the other family are ignored, `primary` is the node's
 * IP of this family, a /0 matches everything, and an empty list is `primary` in nftables mode (kube-proxy's
 * platformApplyDefaults) but every address in iptables mode.
 */
export function nodePortIPs(
  list: readonly string[],
  family: Family,
  mode: ProxyMode,
  nodeIPs: readonly string[],
  contains: CidrContains,
): string[] | undefined {
  const cidrs = selectors(list, family, mode, nodeIPs[0])
  if (cidrs === undefined) return undefined
  const out: string[] = []
  for (const ip of nodeIPs) if (cidrs.some(c => contains(c, ip)) && !out.includes(ip)) out.push(ip)
  return out
}

/**
 * Whether NodePorts also answer on 127.0.0.0/8 (localhostNodePorts): iptables mode only, IPv4 only, and only when
 * nodePortAddresses covers IPv4 loopback (kube-proxy turns it off otherwise).
 */
export function localhostNodePorts(
  enabled: boolean,
  list: readonly string[],
  family: Family,
  mode: ProxyMode,
  primaryIP: string | undefined,
  contains: CidrContains,
): boolean {
  if (!enabled || family !== 4 || mode !== 'iptables') return false
  const cidrs = selectors(list, family, mode, primaryIP)
  return cidrs === undefined || cidrs.some(c => c.startsWith('127.') || contains(c, IPV4_LOOPBACK))
}

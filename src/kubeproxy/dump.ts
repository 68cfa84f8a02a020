// `tundra dump`: the rules kube-proxy would program for a Cluster, in both modes and for each IP family in use.
import type { Cluster, Family } from '../model/cluster'
import { parseIP } from '../k8s/ip'
import { renderIp6tablesSave, renderIptablesSave, type IptablesOptions } from './iptables'
import { renderNft, type NftOptions } from './nftables'

export type DumpOptions = IptablesOptions & Omit<NftOptions, 'family'>

export interface Dump {
  /** iptables-save text (filter + nat), IPv4 */
  readonly iptables: string
  /** nft -f script, table ip kube-proxy */
  readonly nft: string
  /** ip6tables-save text, when some Service has an IPv6 cluster IP */
  readonly ip6tables?: string
  /** nft -f script, table ip6 kube-proxy, when some Service has an IPv6 cluster IP */
  readonly nft6?: string
}

/** Whether any proxied Service has a cluster IP of this family. */
export function clusterUsesFamily(cluster: Cluster, family: Family): boolean {
  return cluster.services.some(s => !s.headless && s.clusterIPs.some(ip => parseIP(ip)?.family === family))
}

export function dumpRules(cluster: Cluster, opts: DumpOptions = {}): Dump {
  const base = { iptables: renderIptablesSave(cluster, opts), nft: renderNft(cluster, { ...opts, family: 4 }) }
  if (!clusterUsesFamily(cluster, 6)) return base
  return { ...base, ip6tables: renderIp6tablesSave(cluster, opts), nft6: renderNft(cluster, { ...opts, family: 6 }) }
}

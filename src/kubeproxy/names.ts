// kube-proxy's chain names, byte for byte: iptables mode (pkg/proxy/iptables/proxier.go: portProtoHash,
// servicePortPolicyClusterChain, servicePortEndpointChainName) and nftables mode (pkg/proxy/nftables/proxier.go:
// hashAndTruncate, servicePortChainNameBase, servicePortEndpointChainNameBase).
import { createHash } from 'node:crypto'
import type { Protocol } from '../model/cluster'

const BASE32_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'

/** encoding/base32 StdEncoding (RFC 4648, with '=' padding). */
export function base32(data: Uint8Array): string {
  let out = ''
  let bits = 0
  let value = 0
  for (const byte of data) {
    value = (value << 8) | byte
    bits += 8
    while (bits >= 5) {
      out += BASE32_ALPHABET[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
    value &= (1 << bits) - 1
  }
  if (bits > 0) out += BASE32_ALPHABET[(value << (5 - bits)) & 31]
  while (out.length % 8 !== 0) out += '='
  return out
}

function sha256Base32(text: string): string {
  return base32(createHash('sha256').update(text, 'utf8').digest())
}

/** `strings.ToLower(string(protocol))` */
export function lowerProtocol(p: Protocol): string {
  return p.toLowerCase()
}

/** First 16 characters of base32(sha256(servicePortName + protocol)). */
export function portProtoHash(servicePortNameString: string, protocol: string): string {
  return sha256Base32(servicePortNameString + protocol).slice(0, 16)
}

/** KUBE-SVC-*: dispatch to endpoints under Cluster traffic policy. */
export function servicePortPolicyClusterChain(servicePortNameString: string, protocol: string): string {
  return `KUBE-SVC-${portProtoHash(servicePortNameString, protocol)}`
}

/** KUBE-SVL-*: dispatch to node-local endpoints under Local traffic policy. */
export function servicePortPolicyLocalChainName(servicePortNameString: string, protocol: string): string {
  return `KUBE-SVL-${portProtoHash(servicePortNameString, protocol)}`
}

/** KUBE-FW-*: loadBalancerSourceRanges filtering. */
export function serviceFirewallChainName(servicePortNameString: string, protocol: string): string {
  return `KUBE-FW-${portProtoHash(servicePortNameString, protocol)}`
}

/** KUBE-EXT-*: external (NodePort, LoadBalancer, externalIP) traffic. */
export function serviceExternalChainName(servicePortNameString: string, protocol: string): string {
  return `KUBE-EXT-${portProtoHash(servicePortNameString, protocol)}`
}

/** KUBE-SEP-*: one endpoint; the hash covers servicePortName + protocol + "ip:port". */
export function servicePortEndpointChainName(servicePortNameString: string, protocol: string, endpoint: string): string {
  return `KUBE-SEP-${sha256Base32(servicePortNameString + protocol + endpoint).slice(0, 16)}`
}

/** Alias with the name the brief and older kube-proxy use for KUBE-SVC-*. */
export const servicePortChainName = servicePortPolicyClusterChain

// ---- nftables mode ----

/** knftables.NameLengthMax (256) - chainNamePrefixLengthMax (16) */
export const NFT_CHAIN_NAME_BASE_LENGTH_MAX = 256 - 16

/** Prefix with 8 chars of base32(sha256(name)) and a '-', cut to 240 with "..." when longer. */
export function hashAndTruncate(name: string): string {
  let out = `${sha256Base32(name).slice(0, 8)}-${name}`
  if (out.length > NFT_CHAIN_NAME_BASE_LENGTH_MAX) out = `${out.slice(0, NFT_CHAIN_NAME_BASE_LENGTH_MAX - 3)}...`
  return out
}

/** `HASH-namespace/name/protocol/portName`, e.g. `ULMVA6XW-ns1/svc1/tcp/p80` (portName may be empty). */
export function nftServicePortChainNameBase(namespace: string, name: string, protocol: string, portName: string): string {
  return hashAndTruncate(`${namespace}/${name}/${protocol}/${portName}`)
}

/** `HASH-namespace/name/protocol/portName__ip/port`; IPv6 colons become dots (not allowed in chain names). */
export function nftServicePortEndpointChainNameBase(namespace: string, name: string, protocol: string, portName: string, ip: string, port: number): string {
  const epIP = ip.includes(':') ? ip.replaceAll(':', '.') : ip
  return hashAndTruncate(`${namespace}/${name}/${protocol}/${portName}__${epIP}/${port}`)
}

export const NFT_PREFIX = {
  cluster: 'service-',
  local: 'local-',
  external: 'external-',
  endpoint: 'endpoint-',
  affinity: 'affinity-',
  firewall: 'firewall-',
} as const

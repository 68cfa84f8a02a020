// Synthetic inputs for the in-process benchmarks: clusters of N ClusterIP services × E endpoints in the model's own
// types (no YAML in the loop), and IPv4 packets with valid checksums.
import type { Cluster, Endpoint, Service } from '../../src/model/cluster'
import type { NatConfig } from '../../src/nat/compile'
import { fillIpv4Checksum, ipv4ToString } from '../../src/wire/ipv4'
import { fillTcpChecksum4 } from '../../src/wire/tcp'
import { fillUdpChecksum4 } from '../../src/wire/udp'

export const NODE_NAME = 'node1'
export const NODE_IP = '172.18.0.11'
/** endpoints live here (room for 20 000 services × 10 endpoints) */
export const POD_CIDR = '10.128.0.0/9'
const POD_BASE = 0x0a800000 // 10.128.0.0
const VIP_BASE = 0x0a610000 // 10.97.0.0, inside 10.96.0.0/12 and clear of 10.96.0.1 and .10
export const SERVICE_PORT = 80
export const TARGET_PORT = 8080

export const NAT_CONFIG: NatConfig = { nodeName: NODE_NAME, nodeIPs: [NODE_IP], clusterCIDRs: [POD_CIDR] }
/** the same node as kube-proxy options (dumpRules) */
export const PROXY_OPTIONS = { clusterCIDR: POD_CIDR, nodeName: NODE_NAME, nodeIPs: [NODE_IP] }

export const vipOf = (i: number): string => ipv4ToString((VIP_BASE + i) >>> 0)
export const endpointIP = (k: number): string => ipv4ToString((POD_BASE + 1 + k) >>> 0)
export const serviceName = (i: number): string => `svc-${i}`
export const serviceNamespace = (i: number): string => `ns-${i % 16}`

export function endpoint(ip: string, ready = true): Endpoint {
  return {
    ip,
    family: 4,
    ready,
    serving: ready,
    terminating: false,
    nodeName: NODE_NAME,
    ports: [{ name: 'http', protocol: 'TCP', port: TARGET_PORT }],
  }
}

/** Service i with endpoints [first, first + count) of the endpoint address space. */
export function service(i: number, endpoints: readonly Endpoint[]): Service {
  return {
    namespace: serviceNamespace(i),
    name: serviceName(i),
    type: 'ClusterIP',
    clusterIPs: [vipOf(i)],
    headless: false,
    ipFamilies: [4],
    externalIPs: [],
    loadBalancerIngress: [],
    loadBalancerSourceRanges: [],
    affinityTimeout: 0,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    healthCheckNodePort: 0,
    publishNotReadyAddresses: false,
    ports: [{ name: 'http', protocol: 'TCP', port: SERVICE_PORT, targetPort: TARGET_PORT, nodePort: 0 }],
    endpoints,
    labels: {},
  }
}

/** `services` ClusterIP services with `perService` endpoints each, all distinct addresses. */
export function synthCluster(services: number, perService: number): Cluster {
  const out: Service[] = []
  for (let i = 0; i < services; i++) {
    const eps: Endpoint[] = []
    for (let j = 0; j < perService; j++) eps.push(endpoint(endpointIP(i * perService + j)))
    out.push(service(i, eps))
  }
  return { services: out, nodes: [], pods: [] }
}

/** The same service with its first endpoint moved to a fresh address (`gen` picks which), as a rollout does. */
export function withMovedEndpoint(s: Service, gen: number): Service {
  const eps = s.endpoints.slice()
  eps[0] = endpoint(ipv4ToString((0x0af00000 + gen) >>> 0)) // 10.240.x.y: outside the synthetic endpoint range
  return { ...s, endpoints: eps }
}

export const TCP_SYN = 0x02
export const TCP_ACK = 0x10

function ipv4Header(b: Uint8Array, total: number, proto: number, src: number, dst: number): void {
  b[0] = 0x45
  b[1] = 0
  b[2] = total >>> 8
  b[3] = total & 0xff
  b[4] = 0
  b[5] = 1
  b[6] = 0x40
  b[7] = 0
  b[8] = 64
  b[9] = proto
  b[12] = src >>> 24
  b[13] = (src >>> 16) & 0xff
  b[14] = (src >>> 8) & 0xff
  b[15] = src & 0xff
  b[16] = dst >>> 24
  b[17] = (dst >>> 16) & 0xff
  b[18] = (dst >>> 8) & 0xff
  b[19] = dst & 0xff
  fillIpv4Checksum(b, 0)
}

/** IPv4 + TCP (20-byte header, no options) + `payload` bytes, checksums filled. */
export function tcp4(src: number, dst: number, sport: number, dport: number, flags: number, payload = 0, seq = 1000, ack = 0): Uint8Array {
  const b = new Uint8Array(40 + payload).fill(0xab)
  ipv4Header(b, 40 + payload, 6, src, dst)
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength)
  v.setUint16(20, sport)
  v.setUint16(22, dport)
  v.setUint32(24, seq >>> 0)
  v.setUint32(28, ack >>> 0)
  b[32] = 5 << 4
  b[33] = flags
  v.setUint16(34, 65535)
  v.setUint16(36, 0)
  v.setUint16(38, 0)
  fillTcpChecksum4(b, 20, 20 + payload, src, dst)
  return b
}

/** IPv4 + UDP with `payload` bytes. */
export function udp4(src: number, dst: number, sport: number, dport: number, payload: number): Uint8Array {
  const b = new Uint8Array(28 + payload)
  for (let i = 0; i < payload; i++) b[28 + i] = i & 0xff
  ipv4Header(b, 28 + payload, 17, src, dst)
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength)
  v.setUint16(20, sport)
  v.setUint16(22, dport)
  v.setUint16(24, 8 + payload)
  v.setUint16(26, 0)
  fillUdpChecksum4(b, 20, 8 + payload, src, dst)
  return b
}

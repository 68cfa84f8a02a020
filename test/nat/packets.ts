// Shared by the NAT tests (not a test itself): packets built in memory with full checksums, a verifier that
// recomputes every checksum from scratch, and small builders for the cluster model.
import { parsePacket, PacketInfo } from '../../src/wire/packet'
import { checksum, pseudoHeaderSum4, pseudoHeaderSum6 } from '../../src/wire/checksum'
import { fillIpv4Checksum, ipv4ChecksumOk, parseIpv4, ipv4ToString } from '../../src/wire/ipv4'
import { parseIpv6, ipv6ToString } from '../../src/wire/ipv6'
import { fillTcpChecksum4, fillTcpChecksum6 } from '../../src/wire/tcp'
import { fillUdpChecksum4, fillUdpChecksum6 } from '../../src/wire/udp'
import { fillIcmpChecksum } from '../../src/wire/icmp'
import { fillIcmp6Checksum } from '../../src/wire/icmpv6'
import { get16, get32 } from '../../src/wire/bytes'
import { fillSctpChecksum } from '../../src/wire/sctp'
import type { Endpoint, EndpointPort, Service, ServicePort } from '../../src/model/cluster'

export const SYN = 0x02
export const ACK = 0x10
export const FIN = 0x01
export const RST = 0x04
export const PSH = 0x08

export function ip4(s: string): number {
  const a = parseIpv4(s)
  if (a === undefined) throw new Error(`bad IPv4 ${s}`)
  return a
}

function v6bytes(s: string, out: Uint8Array, off: number): void {
  if (parseIpv6(s, out, off) === undefined) throw new Error(`bad IPv6 ${s}`)
}

export interface TcpOpts {
  seq?: number
  ack?: number
  payload?: number
  ipId?: number
}

/** IPv4 + TCP (20-byte header) + `payload` bytes of 0xab. */
export function tcp4(src: string, dst: string, sport: number, dport: number, flags: number, o: TcpOpts = {}): Buffer {
  const pl = o.payload ?? 0
  const b = Buffer.alloc(40 + pl, 0xab)
  ipv4Header(b, 40 + pl, 6, src, dst, o.ipId ?? 1, 0x4000)
  const t = 20
  b.writeUInt16BE(sport, t)
  b.writeUInt16BE(dport, t + 2)
  b.writeUInt32BE((o.seq ?? 1000) >>> 0, t + 4)
  b.writeUInt32BE((o.ack ?? 0) >>> 0, t + 8)
  b[t + 12] = 5 << 4
  b[t + 13] = flags
  b.writeUInt16BE(65535, t + 14)
  b.writeUInt16BE(0, t + 18)
  fillTcpChecksum4(b, t, 20 + pl, ip4(src), ip4(dst))
  return b
}

function ipv4Header(b: Buffer, total: number, proto: number, src: string, dst: string, id: number, flagsFrag: number): void {
  b[0] = 0x45
  b[1] = 0
  b.writeUInt16BE(total, 2)
  b.writeUInt16BE(id, 4)
  b.writeUInt16BE(flagsFrag, 6)
  b[8] = 64
  b[9] = proto
  b.writeUInt32BE(ip4(src), 12)
  b.writeUInt32BE(ip4(dst), 16)
  fillIpv4Checksum(b, 0)
}

/** IPv4 + UDP with `payload` bytes (pattern i & 0xff). */
export function udp4(src: string, dst: string, sport: number, dport: number, payload = 16, csum = true): Buffer {
  const b = Buffer.alloc(28 + payload)
  for (let i = 0; i < payload; i++) b[28 + i] = i & 0xff
  ipv4Header(b, 28 + payload, 17, src, dst, 7, 0)
  b.writeUInt16BE(sport, 20)
  b.writeUInt16BE(dport, 22)
  b.writeUInt16BE(8 + payload, 24)
  if (csum) fillUdpChecksum4(b, 20, 8 + payload, ip4(src), ip4(dst))
  return b
}

/**
 * Splits an IPv4 packet into fragments carrying `chunk` bytes of L3 payload each (a multiple of 8); fragment
 * headers get fresh checksums. The first fragment keeps the L4 header.
 */
export function fragment4(p: Buffer, chunk: number, id = 0x4242): Buffer[] {
  const ihl = (p[0]! & 0x0f) * 4
  const payload = p.subarray(ihl)
  const out: Buffer[] = []
  for (let off = 0; off < payload.length; off += chunk) {
    const part = payload.subarray(off, Math.min(payload.length, off + chunk))
    const f = Buffer.alloc(ihl + part.length)
    p.copy(f, 0, 0, ihl)
    part.copy(f, ihl)
    f.writeUInt16BE(ihl + part.length, 2)
    f.writeUInt16BE(id, 4)
    const more = off + chunk < payload.length ? 0x2000 : 0
    f.writeUInt16BE(more | (off >> 3), 6)
    fillIpv4Checksum(f, 0)
    out.push(f)
  }
  return out
}

/** Concatenates fragments' payloads (in order) behind the first one's header: the datagram a receiver rebuilds. */
export function reassemble4(frags: Buffer[]): Buffer {
  const ihl = (frags[0]![0]! & 0x0f) * 4
  const payload = Buffer.concat(frags.map(f => f.subarray(ihl)))
  const b = Buffer.alloc(ihl + payload.length)
  frags[0]!.copy(b, 0, 0, ihl)
  payload.copy(b, ihl)
  b.writeUInt16BE(ihl + payload.length, 2)
  b.writeUInt16BE(0, 6)
  fillIpv4Checksum(b, 0)
  return b
}

export function echo4(src: string, dst: string, id: number, seq: number, payload = 8): Buffer {
  const b = Buffer.alloc(28 + payload, 0x5a)
  ipv4Header(b, 28 + payload, 1, src, dst, 3, 0)
  b[20] = 8
  b[21] = 0
  b.writeUInt16BE(id, 24)
  b.writeUInt16BE(seq, 26)
  fillIcmpChecksum(b, 20, 8 + payload)
  return b
}

/** An ICMPv4 error (type/code) from `src` about `quoted` (its IP header + first `quote` bytes of payload). */
export function icmpError4(src: string, quoted: Buffer, type: number, code: number, quote = 8, rest = 0): Buffer {
  const ihl = (quoted[0]! & 0x0f) * 4
  const q = quoted.subarray(0, Math.min(quoted.length, ihl + quote))
  const b = Buffer.alloc(28 + q.length)
  ipv4Header(b, 28 + q.length, 1, src, ipv4ToString(quoted.readUInt32BE(12)), 9, 0)
  b[20] = type
  b[21] = code
  b.writeUInt32BE(rest, 24)
  q.copy(b, 28)
  fillIcmpChecksum(b, 20, 8 + q.length)
  return b
}

export function tcp6(src: string, dst: string, sport: number, dport: number, flags: number, o: TcpOpts = {}): Buffer {
  const pl = o.payload ?? 0
  const b = Buffer.alloc(60 + pl, 0xcd)
  ipv6Header(b, 20 + pl, 6, src, dst)
  const t = 40
  b.writeUInt16BE(sport, t)
  b.writeUInt16BE(dport, t + 2)
  b.writeUInt32BE((o.seq ?? 5000) >>> 0, t + 4)
  b.writeUInt32BE((o.ack ?? 0) >>> 0, t + 8)
  b[t + 12] = 5 << 4
  b[t + 13] = flags
  b.writeUInt16BE(65535, t + 14)
  b.writeUInt16BE(0, t + 18)
  fillTcpChecksum6(b, t, 20 + pl, 8, 24)
  return b
}

export function udp6(src: string, dst: string, sport: number, dport: number, payload = 16): Buffer {
  const b = Buffer.alloc(48 + payload)
  for (let i = 0; i < payload; i++) b[48 + i] = (i * 7) & 0xff
  ipv6Header(b, 8 + payload, 17, src, dst)
  b.writeUInt16BE(sport, 40)
  b.writeUInt16BE(dport, 42)
  b.writeUInt16BE(8 + payload, 44)
  fillUdpChecksum6(b, 40, 8 + payload, 8, 24)
  return b
}

export function echo6(src: string, dst: string, id: number, seq: number): Buffer {
  const b = Buffer.alloc(56, 0x11)
  ipv6Header(b, 16, 58, src, dst)
  b[40] = 128
  b[41] = 0
  b.writeUInt16BE(id, 44)
  b.writeUInt16BE(seq, 46)
  fillIcmp6Checksum(b, 40, 16, 8, 24)
  return b
}

/** An ICMPv6 error from `src` about `quoted` (quoted whole). */
export function icmpError6(src: string, quoted: Buffer, type: number, code: number, rest = 0): Buffer {
  const b = Buffer.alloc(48 + quoted.length)
  ipv6Header(b, 8 + quoted.length, 58, src, ipv6ToString(quoted, 8))
  b[40] = type
  b[41] = code
  b.writeUInt32BE(rest, 44)
  quoted.copy(b, 48)
  fillIcmp6Checksum(b, 40, 8 + quoted.length, 8, 24)
  return b
}

function ipv6Header(b: Buffer, plen: number, nh: number, src: string, dst: string): void {
  b.writeUInt32BE(0x60000000, 0)
  b.writeUInt16BE(plen, 4)
  b[6] = nh
  b[7] = 64
  v6bytes(src, b, 8)
  v6bytes(dst, b, 24)
}

export const info = new PacketInfo()

/** parsePacket that must succeed. */
export function parse(p: Buffer, pi: PacketInfo = info): PacketInfo {
  const v = parsePacket(p, 0, p.length, pi)
  if (v !== 0) throw new Error(`parsePacket verdict ${v}`)
  return pi
}

/**
 * Every checksum of the packet recomputed from scratch: IPv4 header, TCP/UDP/ICMP/ICMPv6 over their bytes (and
 * pseudo-header), plus the quoted packet inside an ICMP error (its IPv4 header checksum; its L4 checksum when
 * the whole quoted segment is present). Returns a list of problems (empty = all good).
 */
export function checksumProblems(p: Buffer): string[] {
  const bad: string[] = []
  const v = p[0]! >> 4
  let l4: number
  let proto: number
  let len: number
  let pseudo = 0
  if (v === 4) {
    if (!ipv4ChecksumOk(p, 0)) bad.push('ipv4 header')
    const ihl = (p[0]! & 0x0f) * 4
    l4 = ihl
    proto = p[9]!
    len = p.readUInt16BE(2) - ihl
    if ((p.readUInt16BE(6) & 0x3fff) !== 0) return bad // fragments: only the header is checkable alone
    pseudo = pseudoHeaderSum4(get32(p, 12), get32(p, 16), proto, len)
  } else {
    l4 = 40
    proto = p[6]!
    len = p.readUInt16BE(4)
    pseudo = pseudoHeaderSum6(p, 8, 24, proto, len)
  }
  if (proto === 6) {
    if (checksum(p, l4, len, pseudo) !== 0) bad.push('tcp')
  } else if (proto === 17) {
    if (p.readUInt16BE(l4 + 6) !== 0 && checksum(p, l4, len, pseudo) !== 0) bad.push('udp')
  } else if (proto === 1) {
    if (checksum(p, l4, len) !== 0) bad.push('icmp')
    const t = p[l4]!
    if (t === 3 || t === 11 || t === 12) {
      const q = l4 + 8
      if (!ipv4ChecksumOk(p, q)) bad.push('quoted ipv4 header')
      const qihl = (p[q]! & 0x0f) * 4
      const qlen = p.readUInt16BE(q + 2) - qihl
      const qproto = p[q + 9]!
      if (q + qihl + qlen <= p.length && (qproto === 6 || qproto === 17)) {
        const ps = pseudoHeaderSum4(get32(p, q + 12), get32(p, q + 16), qproto, qlen)
        if (checksum(p, q + qihl, qlen, ps) !== 0) bad.push('quoted l4')
      }
    }
  } else if (proto === 58) {
    if (checksum(p, l4, len, pseudo) !== 0) bad.push('icmpv6')
    const t = p[l4]!
    if (t >= 1 && t <= 4) {
      const q = l4 + 8
      const qlen = p.readUInt16BE(q + 4)
      const qproto = p[q + 6]!
      if (q + 40 + qlen <= p.length && (qproto === 6 || qproto === 17)) {
        const ps = pseudoHeaderSum6(p, q + 8, q + 24, qproto, qlen)
        if (checksum(p, q + 40, qlen, ps) !== 0) bad.push('quoted l4')
      }
    }
  }
  return bad
}

/** "addr:port > addr:port" of an IPv4 TCP/UDP packet (or IPv6 with brackets). */
export function flow(p: Buffer): string {
  if (p[0]! >> 4 === 4) {
    const ihl = (p[0]! & 0x0f) * 4
    return `${ipv4ToString(get32(p, 12))}:${get16(p, ihl)} > ${ipv4ToString(get32(p, 16))}:${get16(p, ihl + 2)}`
  }
  return `[${ipv6ToString(p, 8)}]:${get16(p, 40)} > [${ipv6ToString(p, 24)}]:${get16(p, 42)}`
}

export function addrs(p: Buffer): string {
  if (p[0]! >> 4 === 4) return `${ipv4ToString(get32(p, 12))} > ${ipv4ToString(get32(p, 16))}`
  return `${ipv6ToString(p, 8)} > ${ipv6ToString(p, 24)}`
}

// ---------------------------------------------------------------------------------------------------------------
// Model builders

export function port(name: string, p: number, targetPort: number | string, protocol: 'TCP' | 'UDP' | 'SCTP' = 'TCP', nodePort = 0): ServicePort {
  return { name, protocol, port: p, targetPort, nodePort }
}

export interface EpOpts {
  ready?: boolean
  serving?: boolean
  terminating?: boolean
  node?: string
  ports?: EndpointPort[]
}

export function ep(ip: string, ports: EndpointPort[] | number, o: EpOpts = {}): Endpoint {
  const ready = o.ready ?? true
  const e: Endpoint = {
    ip,
    family: ip.includes(':') ? 6 : 4,
    ready,
    serving: o.serving ?? ready,
    terminating: o.terminating ?? false,
    ports: typeof ports === 'number' ? [{ name: '', protocol: 'TCP', port: ports }] : ports,
    ...(o.node !== undefined ? { nodeName: o.node } : {}),
  }
  return e
}

export function svc(name: string, o: Partial<Service> & { namespace?: string }): Service {
  return {
    namespace: o.namespace ?? 'default',
    name,
    type: o.type ?? 'ClusterIP',
    clusterIPs: o.clusterIPs ?? [],
    headless: o.headless ?? false,
    ipFamilies: o.ipFamilies ?? [4],
    externalIPs: o.externalIPs ?? [],
    loadBalancerIngress: o.loadBalancerIngress ?? [],
    loadBalancerSourceRanges: o.loadBalancerSourceRanges ?? [],
    affinityTimeout: o.affinityTimeout ?? 0,
    externalTrafficPolicy: o.externalTrafficPolicy ?? 'Cluster',
    internalTrafficPolicy: o.internalTrafficPolicy ?? 'Cluster',
    healthCheckNodePort: o.healthCheckNodePort ?? 0,
    publishNotReadyAddresses: o.publishNotReadyAddresses ?? false,
    ports: o.ports ?? [],
    endpoints: o.endpoints ?? [],
    labels: o.labels ?? {},
    ...(o.externalName !== undefined ? { externalName: o.externalName } : {}),
  }
}

export const NODE = 'node-a'
export const NODE_IP = '192.168.1.10'
export const NODE_IP6 = 'fd00:1::10'

export const BASE_CONFIG = {
  nodeName: NODE,
  nodeIPs: [NODE_IP, NODE_IP6],
  clusterCIDRs: ['10.100.0.0/16', 'fd00:100::/56'],
} as const

/**
 * Splits an IPv6 packet (no extension headers) into fragments with a fragment header, `chunk` bytes (a multiple of
 * 8) of the original payload each.
 */
export function fragment6(p: Buffer, chunk: number, id = 0x01020304): Buffer[] {
  const nh = p[6]!
  const payload = p.subarray(40)
  const out: Buffer[] = []
  for (let off = 0; off < payload.length; off += chunk) {
    const part = payload.subarray(off, Math.min(payload.length, off + chunk))
    const f = Buffer.alloc(48 + part.length)
    p.copy(f, 0, 0, 40)
    f.writeUInt16BE(8 + part.length, 4)
    f[6] = 44
    f[40] = nh
    f[41] = 0
    f.writeUInt16BE(off | (off + chunk < payload.length ? 1 : 0), 42)
    f.writeUInt32BE(id, 44)
    part.copy(f, 48)
    out.push(f)
  }
  return out
}

/** The datagram an IPv6 receiver rebuilds from fragment6() output. */
export function reassemble6(frags: Buffer[]): Buffer {
  const payload = Buffer.concat(frags.map(f => f.subarray(48)))
  const b = Buffer.alloc(40 + payload.length)
  frags[0]!.copy(b, 0, 0, 40)
  b.writeUInt16BE(payload.length, 4)
  b[6] = frags[0]![40]!
  payload.copy(b, 40)
  return b
}

/** IPv4 + SCTP common header + one 16-byte DATA-like chunk, CRC32c filled. */
export function sctp4(src: string, dst: string, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(20 + 12 + 16, 0x33)
  ipv4Header(b, b.length, 132, src, dst, 5, 0x4000)
  b.writeUInt16BE(sport, 20)
  b.writeUInt16BE(dport, 22)
  b.writeUInt32BE(0xdeadbeef, 24)
  fillSctpChecksum(b, 20, 28)
  return b
}

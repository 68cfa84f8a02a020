// IP address and CIDR text helpers for manifests: strict parsing, canonical formatting (RFC 5952), containment.
import type { Family } from '../model/cluster'

export interface ParsedIP {
  readonly family: Family
  /** 4 or 16 bytes, network order */
  readonly bytes: Uint8Array
}

export interface ParsedCIDR {
  /** network address (host bits cleared) */
  readonly ip: ParsedIP
  readonly prefix: number
}

const V4_OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/

/** Parses dotted-quad IPv4 as the API server does (no leading zeros, no shorthand). */
function parseIPv4(text: string): Uint8Array | undefined {
  const parts = text.split('.')
  if (parts.length !== 4) return undefined
  const out = new Uint8Array(4)
  for (let i = 0; i < 4; i++) {
    const p = parts[i] as string
    if (!V4_OCTET.test(p)) return undefined
    out[i] = Number(p)
  }
  return out
}

function parseIPv6(text: string): Uint8Array | undefined {
  if (text.includes('%')) return undefined // zones are never valid in Kubernetes fields
  let head = text
  let tail4: Uint8Array | undefined
  const lastColon = text.lastIndexOf(':')
  if (lastColon >= 0 && text.indexOf('.', lastColon) > 0) {
    tail4 = parseIPv4(text.slice(lastColon + 1))
    if (!tail4) return undefined
    head = text.slice(0, lastColon + 1) + '0:0'
  }
  const dbl = head.indexOf('::')
  if (dbl !== head.lastIndexOf('::')) return undefined
  const groupsOf = (s: string): number[] | undefined => {
    if (s === '') return []
    const out: number[] = []
    for (const g of s.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined
      out.push(parseInt(g, 16))
    }
    return out
  }
  let groups: number[]
  if (dbl >= 0) {
    const left = groupsOf(head.slice(0, dbl))
    const right = groupsOf(head.slice(dbl + 2))
    if (!left || !right || left.length + right.length > 7) return undefined
    groups = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right]
  } else {
    const all = groupsOf(head)
    if (!all || all.length !== 8) return undefined
    groups = all
  }
  const out = new Uint8Array(16)
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8
    out[i * 2 + 1] = g & 0xff
  })
  if (tail4) out.set(tail4, 12)
  return out
}

export function parseIP(text: string): ParsedIP | undefined {
  if (typeof text !== 'string') return undefined
  if (text.includes(':')) {
    const bytes = parseIPv6(text)
    return bytes ? { family: 6, bytes } : undefined
  }
  const bytes = parseIPv4(text)
  return bytes ? { family: 4, bytes } : undefined
}

export function ipFamily(text: string): Family | undefined {
  return parseIP(text)?.family
}

/** Canonical text: dotted quad, or RFC 5952 (lowercase, longest zero run compressed, IPv4-mapped kept as ::ffff:a.b.c.d). */
export function formatIP(ip: ParsedIP): string {
  const b = ip.bytes
  if (ip.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`
  const groups: number[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] as number) << 8) | (b[i + 1] as number))
  const isMapped = groups.slice(0, 5).every(g => g === 0) && groups[5] === 0xffff
  if (isMapped) return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`
  let bestStart = -1
  let bestLen = 0
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map(g => g.toString(16))
  if (bestLen < 2) return hex.join(':')
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`
}

/** Canonical form of an address, or undefined when it does not parse. */
export function canonicalIP(text: string): string | undefined {
  const p = parseIP(text)
  return p ? formatIP(p) : undefined
}

export function parseCIDR(text: string): ParsedCIDR | undefined {
  if (typeof text !== 'string') return undefined
  const slash = text.indexOf('/')
  if (slash < 0) return undefined
  const ip = parseIP(text.slice(0, slash))
  const prefixText = text.slice(slash + 1)
  if (!ip || !/^(0|[1-9]\d{0,2})$/.test(prefixText)) return undefined
  const prefix = Number(prefixText)
  if (prefix > ip.bytes.length * 8) return undefined
  return { ip: { family: ip.family, bytes: maskBytes(ip.bytes, prefix) }, prefix }
}

/** CIDR with host bits cleared, as kube-proxy prints `net.IPNet.String()`. */
export function formatCIDR(c: ParsedCIDR): string {
  return `${formatIP(c.ip)}/${c.prefix}`
}

export function canonicalCIDR(text: string): string | undefined {
  const c = parseCIDR(text)
  return c ? formatCIDR(c) : undefined
}

function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length)
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8))
    out[i] = (bytes[i] as number) & ((0xff << (8 - bits)) & 0xff)
  }
  return out
}

export function cidrContains(c: ParsedCIDR, ip: ParsedIP): boolean {
  if (c.ip.family !== ip.family) return false
  const masked = maskBytes(ip.bytes, c.prefix)
  return masked.every((v, i) => v === c.ip.bytes[i])
}

/** Orders addresses numerically, IPv4 before IPv6; unparsable text sorts last, by text. */
export function compareIP(a: string, b: string): number {
  const pa = parseIP(a)
  const pb = parseIP(b)
  if (!pa || !pb) return pa ? -1 : pb ? 1 : a < b ? -1 : a > b ? 1 : 0
  if (pa.family !== pb.family) return pa.family - pb.family
  for (let i = 0; i < pa.bytes.length; i++) {
    const d = (pa.bytes[i] as number) - (pb.bytes[i] as number)
    if (d !== 0) return d
  }
  return 0
}

/** The address as an unsigned big integer, and back: used by allocators that walk a range. */
export function ipToBigInt(ip: ParsedIP): bigint {
  let v = 0n
  for (const byte of ip.bytes) v = (v << 8n) | BigInt(byte)
  return v
}

export function bigIntToIP(v: bigint, family: Family): ParsedIP {
  const len = family === 4 ? 4 : 16
  const bytes = new Uint8Array(len)
  for (let i = len - 1; i >= 0; i--) {
    bytes[i] = Number(v & 0xffn)
    v >>= 8n
  }
  return { family, bytes }
}

/** Loopback, unspecified, link-local and multicast addresses: the API server rejects them as endpoints. */
export function isSpecialEndpointIP(ip: ParsedIP): string | undefined {
  const b = ip.bytes
  if (ip.family === 4) {
    if (b.every(x => x === 0)) return 'may not be unspecified (0.0.0.0)'
    if (b[0] === 127) return 'may not be in the loopback range (127.0.0.0/8)'
    if (b[0] === 169 && b[1] === 254) return 'may not be in the link-local range (169.254.0.0/16)'
    if ((b[0] as number) >= 224 && (b[0] as number) <= 239) return 'may not be in the multicast range (224.0.0.0/4)'
    return undefined
  }
  if (b.every(x => x === 0)) return 'may not be unspecified (::)'
  if (b.slice(0, 15).every(x => x === 0) && b[15] === 1) return 'may not be the loopback address (::1)'
  if (b[0] === 0xfe && ((b[1] as number) & 0xc0) === 0x80) return 'may not be in the link-local range (fe80::/10)'
  if (b[0] === 0xff) return 'may not be in the multicast range (ff00::/8)'
  return undefined
}

// IP address and CIDR helpers for manifests over wire's parser family (src/wire/addr.ts): ParsedIP values,
// canonical text (RFC 5952), containment, ordering. Bad text is always `undefined`.
import type { Family } from '../model/cluster'
import { cidrPrefix, ipBytesToString, parseIpBytes } from '../wire/addr'

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

/** Parses an address as the API server does (no leading zeros, no zones, no shorthand): wire's parser family. */
export function parseIP(text: string): ParsedIP | undefined {
  const bytes = parseIpBytes(text)
  if (bytes === undefined) return undefined
  return { family: bytes.length === 4 ? 4 : 6, bytes }
}

/** Canonical text: dotted quad, or RFC 5952 (lowercase, longest zero run compressed, IPv4-mapped kept as ::ffff:a.b.c.d). */
export function formatIP(ip: ParsedIP): string {
  return ipBytesToString(ip.bytes)
}

export function parseCIDR(text: string): ParsedCIDR | undefined {
  if (typeof text !== 'string') return undefined
  const ip = parseIP(text.slice(0, text.indexOf('/')))
  const prefix = ip === undefined ? undefined : cidrPrefix(text, ip.bytes.length * 8)
  if (ip === undefined || prefix === undefined) return undefined
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

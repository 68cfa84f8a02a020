// IP address text for every layer: the one parser family (strict, as Go's net.ParseIP since 1.17: no leading zeros,
// no zones, no shorthand). Every parser here and in ipv4.ts/ipv6.ts answers `undefined` for bad input and never throws.
// The word/byte forms allocate nothing (packet path, compiles at cluster size); the Uint8Array form is for the control
// side. README "Packages" says why configuration text does not go through ip6addr.

import { get32, set32 } from './bytes'
import { ipv4ToString, parseIpv4 } from './ipv4'
import { ipv6ToString, parseIpv6 } from './ipv6'

/** 4 or 6 (the same literals as model's Family). */
export type IpFamily = 4 | 6

const BYTES16 = new Uint8Array(16)

/** The family of an address in text, or undefined when it is neither. */
export function ipFamily(text: string): IpFamily | undefined {
  if (parseIpv4(text) !== undefined) return 4
  return parseIpv6(text, BYTES16, 0) !== undefined ? 6 : undefined
}

/**
 * Parses `text` of `family` into `out` at `off` (1 word for IPv4, 4 for IPv6, network order); the offset after the
 * words, or undefined when it is not such an address (out untouched).
 */
export function parseIpWords(text: string, family: IpFamily, out: Uint32Array, off: number): number | undefined {
  if (family === 4) {
    const a = parseIpv4(text)
    if (a === undefined) return undefined
    out[off] = a
    return off + 1
  }
  if (parseIpv6(text, BYTES16, 0) === undefined) return undefined
  for (let i = 0; i < 4; i++) out[off + i] = get32(BYTES16, i * 4)
  return off + 4
}

/** The address as 4 or 16 new bytes (network order), or undefined. Control side: allocates the result. */
export function parseIpBytes(text: string): Uint8Array | undefined {
  const v4 = parseIpv4(text)
  if (v4 !== undefined) {
    const out = new Uint8Array(4)
    set32(out, 0, v4)
    return out
  }
  const out = new Uint8Array(16)
  return parseIpv6(text, out, 0) === undefined ? undefined : out
}

/** Canonical text of 4 or 16 address bytes: dotted quad, or RFC 5952 (IPv4-mapped kept as ::ffff:a.b.c.d). */
export function ipBytesToString(bytes: Uint8Array): string {
  return bytes.length === 4 ? ipv4ToString(get32(bytes, 0)) : ipv6ToString(bytes, 0)
}

/** Canonical text of an address, or undefined when it does not parse ("2001:DB8::1" -> "2001:db8::1"). */
export function canonicalIp(text: string): string | undefined {
  const v4 = parseIpv4(text)
  if (v4 !== undefined) return ipv4ToString(v4)
  return parseIpv6(text, BYTES16, 0) === undefined ? undefined : ipv6ToString(BYTES16, 0)
}

const PREFIX_TEXT = /^(0|[1-9]\d{0,2})$/

/**
 * A CIDR ("10.0.0.0/8") as the prefix length after the slash; undefined when there is no slash, the prefix is not a
 * decimal without leading zeros, or it exceeds `maxBits`. The address part is `text.slice(0, text.indexOf('/'))`.
 */
export function cidrPrefix(text: string, maxBits: number): number | undefined {
  const slash = text.indexOf('/')
  if (slash < 0) return undefined
  const p = text.slice(slash + 1)
  if (!PREFIX_TEXT.test(p)) return undefined
  const bits = Number(p)
  return bits <= maxBits ? bits : undefined
}

/** An IPv4 CIDR as the packet loop matches it (net with host bits cleared, mask); undefined when it is not one. */
export function parseIpv4Cidr(text: string): { net: number; mask: number } | undefined {
  const bits = cidrPrefix(text, 32)
  if (bits === undefined) return undefined
  const a = parseIpv4(text.slice(0, text.indexOf('/')))
  if (a === undefined) return undefined
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0
  return { net: (a & mask) >>> 0, mask }
}

const HOST_PORT_V6 = /^\[([^\]]+)\]:(\d+)$/
const HOST_PORT_V4 = /^([^:[\]]+):(\d+)$/
const MAX_PORT = 65535

/** host:port with an IP host ("[::]:10256" for IPv6), as Go's net.SplitHostPort + ParseIP; undefined when not one. */
export function splitHostPort(s: string): { host: string; port: number } | undefined {
  const m = HOST_PORT_V6.exec(s) ?? HOST_PORT_V4.exec(s)
  if (m === null) return undefined
  const host = m[1]!
  const port = Number(m[2])
  if (ipFamily(host) === undefined || !(port >= 0 && port <= MAX_PORT)) return undefined
  return { host, port }
}

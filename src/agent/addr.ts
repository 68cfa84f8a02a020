// IPv4 addresses as the packet loop uses them: unsigned 32-bit integers.
import { parseCIDR, parseIP } from '../k8s/ip'

const u32 = (b: Uint8Array): number => ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0

export function ipv4ToInt(text: string): number | undefined {
  const p = parseIP(text)
  return p?.family === 4 ? u32(p.bytes) : undefined
}

export function parseCidr4(text: string): { net: number; mask: number } | undefined {
  const c = parseCIDR(text)
  if (c?.ip.family !== 4) return undefined
  return { net: u32(c.ip.bytes), mask: c.prefix === 0 ? 0 : (0xffffffff << (32 - c.prefix)) >>> 0 }
}

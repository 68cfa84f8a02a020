// IPv4 addresses as the packet loop uses them: unsigned 32-bit integers.
import { parseCIDR } from '../k8s/ip'
import { parseIpv4 } from '../wire/ipv4'

export function ipv4ToInt(text: string): number | undefined {
  const v = parseIpv4(text)
  return v < 0 ? undefined : v
}

export function parseCidr4(text: string): { net: number; mask: number } | undefined {
  const c = parseCIDR(text)
  if (c?.ip.family !== 4) return undefined
  const b = c.ip.bytes
  const net = ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0
  return { net, mask: c.prefix === 0 ? 0 : (0xffffffff << (32 - c.prefix)) >>> 0 }
}

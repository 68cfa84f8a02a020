// VXLAN (RFC 7348) encapsulation of pod packets between nodes: outer IPv4/UDP 4789, VXLAN header, inner Ethernet.
//
//   outer IPv4 (20) | UDP (8) | VXLAN: flags(1)=0x08 rsvd(3) VNI(3) rsvd(1) | Ethernet dst(6) src(6) type(2) | inner IP
// The inner Ethernet addresses are what a kernel `vxlan` peer checks: its device MAC must be the destination.
import { writeIpv4Header } from '../wire/build'

export const VXLAN_OVERHEAD = 20 + 8 + 8 + 14
export const VXLAN_PORT = 4789
const ETH_IPV4 = 0x0800
const ETH_IPV6 = 0x86dd

/** A deterministic MAC for a node's VXLAN endpoint, derived from its node IP (locally administered). */
export function vxlanMac(nodeIp: number): Buffer {
  const mac = Buffer.alloc(6)
  mac[0] = 0x66
  mac[1] = 0x74
  mac.writeUInt32BE(nodeIp >>> 0, 2)
  return mac
}

let ipId = 1

/**
 * Writes an encapsulated copy of the inner packet `src[srcOff, srcOff+len)` at `out[outOff]`; returns bytes written.
 * `entropy` (a flow hash) picks the outer UDP source port so ECMP and RSS spread flows as RFC 7348 asks.
 */
export function encapsulate(
  out: Buffer,
  outOff: number,
  src: Buffer,
  srcOff: number,
  len: number,
  local: number,
  remote: number,
  vni: number,
  srcMac: Buffer,
  dstMac: Buffer,
  entropy: number,
): number {
  const total = VXLAN_OVERHEAD + len
  const o = outOff
  ipId = (ipId + 1) & 0xffff
  writeIpv4Header(out, o, 0, total, ipId, 0, 17, local, remote)
  const u = o + 20
  out.writeUInt16BE(49152 + (entropy & 0x3fff), u)
  out.writeUInt16BE(VXLAN_PORT, u + 2)
  out.writeUInt16BE(total - 20, u + 4)
  out.writeUInt16BE(0, u + 6) // zero UDP checksum is allowed over IPv4 (RFC 7348 §5)
  const v = u + 8
  out.writeUInt32BE(0x08000000, v)
  out.writeUInt32BE(((vni & 0xffffff) << 8) >>> 0, v + 4)
  const e = v + 8
  dstMac.copy(out, e)
  srcMac.copy(out, e + 6)
  out.writeUInt16BE(src[srcOff]! >> 4 === 6 ? ETH_IPV6 : ETH_IPV4, e + 12)
  src.copy(out, e + 14, srcOff, srcOff + len)
  return total
}

/**
 * If the IPv4 packet at `off` is VXLAN for `vni` addressed to us, returns the inner IP packet's offset, else -1.
 * The caller has validated the outer IPv4/UDP headers (ihl, lengths).
 */
export function innerOffset(buf: Buffer, off: number, len: number, l4Off: number, vni: number): number {
  const v = l4Off + 8
  if (v + 8 + 14 + 20 > off + len) return -1
  if ((buf[v]! & 0x08) === 0) return -1
  if (((buf.readUInt32BE(v + 4) >>> 8) & 0xffffff) !== vni) return -1
  const type = buf.readUInt16BE(v + 8 + 12)
  if (type !== ETH_IPV4 && type !== ETH_IPV6) return -1
  return v + 8 + 14
}

// Address-derived names for the DNS compiler and answers: reverse-zone names and the dashed host labels Kubernetes DNS
// derives from addresses. Address text itself is parsed by wire's parser family (src/wire/addr.ts).
import { parseIpBytes } from '../wire/addr'

/** Reverse-lookup owner name: d.c.b.a.in-addr.arpa, or 32 nibbles + ip6.arpa (RFC 3596 §2.5). */
export function reverseName(ip: Uint8Array): string {
  if (ip.length === 4) return `${ip[3]}.${ip[2]}.${ip[1]}.${ip[0]}.in-addr.arpa`
  const nibbles: string[] = []
  for (let i = 15; i >= 0; i--) {
    const b = ip[i]!
    nibbles.push((b & 0xf).toString(16), (b >>> 4).toString(16))
  }
  return `${nibbles.join('.')}.ip6.arpa`
}

/** CoreDNS endpointHostname for an endpoint without a hostname: dots or colons become dashes ("fd00::1" → "fd00--1"). */
export function dashedLabel(ip: string): string {
  return ip.toLowerCase().replace(/[.:]/g, '-')
}

/**
 * The address a `pods insecure` label names (CoreDNS findPods): exactly three dashes and no "--" reads as IPv4,
 * anything else as IPv6 with dashes for colons. Undefined when it does not parse.
 */
export function podLabelAddress(label: string): Uint8Array | undefined {
  let dashes = 0
  for (let i = 0; i < label.length; i++) if (label.charCodeAt(i) === 0x2d) dashes++
  return parseIpBytes(label.replace(/-/g, dashes === 3 && !label.includes('--') ? '.' : ':'))
}

/**
 * Allocation-free IPv4 form of podLabelAddress over wire bytes: `out` gets 4 bytes and the result is true when the label
 * is a dashed dotted-quad. False means "not IPv4"; the caller then tries the (allocating, rare) IPv6 form.
 */
export function podLabelIPv4(buf: Uint8Array, start: number, len: number, out: Uint8Array): boolean {
  let octet = 0
  let digits = 0
  let idx = 0
  let lead0 = false
  for (let i = start; i < start + len; i++) {
    const c = buf[i]!
    if (c === 0x2d) {
      if (digits === 0 || idx === 3) return false
      out[idx++] = octet
      octet = 0
      digits = 0
      continue
    }
    if (c < 0x30 || c > 0x39) return false
    if (digits === 0) lead0 = c === 0x30
    else if (lead0) return false
    octet = octet * 10 + (c - 0x30)
    if (++digits > 3 || octet > 255) return false
  }
  if (digits === 0 || idx !== 3) return false
  out[3] = octet
  return true
}

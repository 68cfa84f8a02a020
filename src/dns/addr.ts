// IP address text ↔ bytes for the DNS compiler: strict parsers (no leading zeros, no zone ids), reverse-zone names and
// the dashed host labels Kubernetes DNS derives from addresses.

/** Dotted-quad → 4 bytes, or null. Rejects leading zeros ("01.2.3.4"), as Go's net.ParseIP does since 1.17. */
export function parseIPv4(s: string): Uint8Array | null {
  const parts = s.split('.')
  if (parts.length !== 4) return null
  const out = new Uint8Array(4)
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!
    if (p.length === 0 || p.length > 3 || !/^[0-9]+$/.test(p) || (p.length > 1 && p[0] === '0')) return null
    const v = Number(p)
    if (v > 255) return null
    out[i] = v
  }
  return out
}

/** RFC 4291 §2.2 text (with "::" and an optional dotted-quad tail) → 16 bytes, or null. */
export function parseIPv6(s: string): Uint8Array | null {
  if (s.length < 2 || s.length > 45 || s.includes('%')) return null
  const out = new Uint8Array(16)
  let tail: Uint8Array | null = null
  let text = s
  const lastColon = s.lastIndexOf(':')
  if (s.indexOf('.', lastColon) >= 0) {
    tail = parseIPv4(s.slice(lastColon + 1))
    if (tail === null) return null
    text = s.slice(0, lastColon + 1) + '0:0'
  }
  const dbl = text.indexOf('::')
  if (dbl >= 0 && text.indexOf('::', dbl + 1) >= 0) return null
  const groups = (h: string): number[] | null => {
    if (h === '') return []
    const out: number[] = []
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null
      out.push(parseInt(g, 16))
    }
    return out
  }
  let words: number[]
  if (dbl >= 0) {
    const head = groups(text.slice(0, dbl))
    const rest = groups(text.slice(dbl + 2))
    if (head === null || rest === null || head.length + rest.length > 7) return null
    words = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest]
  } else {
    const all = groups(text)
    if (all === null || all.length !== 8) return null
    words = all
  }
  for (let i = 0; i < 8; i++) {
    out[2 * i] = words[i]! >>> 8
    out[2 * i + 1] = words[i]! & 0xff
  }
  if (tail !== null) out.set(tail, 12)
  return out
}

/** 4 or 16 bytes, or null. */
export function parseIP(s: string): Uint8Array | null {
  return s.includes(':') ? parseIPv6(s) : parseIPv4(s)
}

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
 * anything else as IPv6 with dashes for colons. Null when it does not parse.
 */
export function podLabelAddress(label: string): Uint8Array | null {
  let dashes = 0
  for (let i = 0; i < label.length; i++) if (label.charCodeAt(i) === 0x2d) dashes++
  if (dashes === 3 && !label.includes('--')) return parseIPv4(label.replace(/-/g, '.'))
  return parseIPv6(label.replace(/-/g, ':'))
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

export function ipToText(ip: Uint8Array): string {
  if (ip.length === 4) return `${ip[0]}.${ip[1]}.${ip[2]}.${ip[3]}`
  const w: string[] = []
  for (let i = 0; i < 16; i += 2) w.push(((ip[i]! << 8) | ip[i + 1]!).toString(16))
  // compress the longest run of zero words (RFC 5952 §4.2)
  let best = -1
  let bestLen = 1
  for (let i = 0; i < 8; ) {
    if (w[i] !== '0') {
      i++
      continue
    }
    let j = i
    while (j < 8 && w[j] === '0') j++
    if (j - i > bestLen) {
      best = i
      bestLen = j - i
    }
    i = j
  }
  if (best < 0) return w.join(':')
  return `${w.slice(0, best).join(':')}::${w.slice(best + bestLen).join(':')}`
}

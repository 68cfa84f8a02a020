// Deterministic stand-ins for the API server's ClusterIP and NodePort allocators: a hash of namespace/name picks the
// starting point, linear probing skips what is taken. The same manifests always get the same addresses and ports.
import { createHash } from 'node:crypto'
import type { Family } from '../model/cluster'
import { bigIntToIP, cidrContains, formatCIDR, formatIP, ipToBigInt, parseCIDR, parseIP, type ParsedCIDR } from './ip'
import { canonicalIp } from '../wire/addr'

export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12'

function hash64(key: string): bigint {
  return createHash('sha256').update(key).digest().readBigUInt64BE(0)
}

/** Offsets kubeadm clusters conventionally give: .1 to default/kubernetes, .10 to kube-system/kube-dns. */
const WELL_KNOWN_OFFSETS: Readonly<Record<string, bigint>> = {
  'default/kubernetes': 1n,
  'kube-system/kube-dns': 10n,
}

export class ClusterIPAllocator {
  private readonly ranges = new Map<Family, ParsedCIDR>()
  private readonly used = new Set<string>()

  /** `serviceCIDRs`: at most one per family (e.g. ['10.96.0.0/12', 'fd00:10:96::/112']). */
  constructor(serviceCIDRs: readonly string[] = [DEFAULT_SERVICE_CIDR], used: Iterable<string> = []) {
    for (const text of serviceCIDRs) {
      const c = parseCIDR(text)
      if (!c) throw new RangeError(`invalid service CIDR ${JSON.stringify(text)}`)
      if (this.ranges.has(c.ip.family)) throw new RangeError(`more than one IPv${c.ip.family} service CIDR`)
      this.ranges.set(c.ip.family, c)
    }
    for (const ip of used) this.reserve(ip)
  }

  /** Marks an address as taken (explicit clusterIPs in the input). */
  reserve(ip: string): void {
    const c = canonicalIp(ip)
    if (c !== undefined) this.used.add(c)
  }

  /** Why `ip` cannot be a cluster IP here (outside its family's service CIDR, or no such CIDR); undefined when it can. */
  outside(ip: string): string | undefined {
    const p = parseIP(ip)
    if (p === undefined) return undefined
    const range = this.ranges.get(p.family)
    if (range === undefined) return `${ip}: no IPv${p.family} service CIDR is configured`
    return cidrContains(range, p) ? undefined : `${ip} is outside the service CIDR ${formatCIDR(range)}`
  }

  hasFamily(f: Family): boolean {
    return this.ranges.has(f)
  }

  /** A free address for namespace/name in the family's range, or undefined when there is no such range or it is full. */
  allocate(namespace: string, name: string, family: Family): string | undefined {
    const range = this.ranges.get(family)
    if (!range) return undefined
    const bits = BigInt((family === 4 ? 32 : 128) - range.prefix)
    const size = 1n << bits
    const base = ipToBigInt(range.ip)
    // Never hand out the network address, .1 or .10 to others, nor the IPv4 broadcast address.
    const reserved = new Set<bigint>([0n, 1n, 10n])
    if (family === 4) reserved.add(size - 1n)
    const key = `${namespace}/${name}`
    const wellKnown = WELL_KNOWN_OFFSETS[key]
    const tryOffset = (off: bigint): string | undefined => {
      const ip = formatIP(bigIntToIP(base + off, family))
      if (this.used.has(ip)) return undefined
      this.used.add(ip)
      return ip
    }
    if (wellKnown !== undefined && wellKnown < size) {
      const ip = tryOffset(wellKnown)
      if (ip !== undefined) return ip
    }
    const start = hash64(key) % size
    for (let i = 0n; i < size; i++) {
      const off = (start + i) % size
      if (reserved.has(off)) continue
      const ip = tryOffset(off)
      if (ip !== undefined) return ip
    }
    return undefined
  }
}

export class NodePortAllocator {
  private readonly used = new Set<number>()

  constructor(
    readonly range: readonly [number, number] = [30000, 32767],
    used: Iterable<number> = [],
  ) {
    for (const p of used) this.used.add(p)
  }

  reserve(port: number): void {
    this.used.add(port)
  }

  /** A free port for `key` (e.g. `ns/name/port-name/TCP`), or undefined when the range is full. */
  allocate(key: string): number | undefined {
    const [lo, hi] = this.range
    const size = hi - lo + 1
    const start = Number(hash64(key) % BigInt(size))
    for (let i = 0; i < size; i++) {
      const port = lo + ((start + i) % size)
      if (this.used.has(port)) continue
      this.used.add(port)
      return port
    }
    return undefined
  }
}

// The cluster-DNS zone as tools and tests see it: compileZone(cluster) is a full run of ZoneCompiler (image.ts) over
// the rules in records.ts (Kubernetes DNS-Based Service Discovery 1.1.0, with CoreDNS plugin/kubernetes defaults
// where the spec leaves a choice). Every reply the zone can give is pre-encoded once, keyed by lowercase wire name,
// so answering costs one hash, one compare and a copy (answer.ts, from the installed image).
//
// What exists (all names lowercase, relative to <zone>):
//   <zone>                      SOA, NS ns.dns.<zone>           ns.dns.<zone>   A/AAAA = the DNS service IP(s)
//   dns-version.<zone>          TXT "1.1.0"
//   svc.<zone>, pod.<zone>, <ns>.svc.<zone>, <ns>.pod.<zone>    empty non-terminals (NODATA) for known namespaces
//   <svc>.<ns>.svc              A/AAAA ClusterIPs; headless: ready endpoint IPs (none ready → the name does not exist)
//                               SRV: one per port, named or not (CoreDNS), target the service or each endpoint
//   _<port>._<proto>.<svc>...   SRV for named ports, A/AAAA of the targets in additional
//   <ep>.<svc>.<ns>.svc         A/AAAA per ready endpoint, <ep> = hostname or dashed IP (CoreDNS: for every service)
//   ExternalName                CNAME (every qtype), chased inside the zone at compile time; a chain ending outside
//                               the zone is completed upstream by the server (ZoneEntry.external)
//   reverse (in-addr/ip6.arpa)  PTR for ClusterIPs → service, ready endpoint IPs → <ep>.<svc>...; other types upstream
//   <a-b-c-d>.<ns>.pod          answered on the fly (CoreDNS `pods insecure`), see answer.ts
// Anything else under <zone> is NXDOMAIN with the SOA in authority; a name that exists without the asked type is NODATA.

import type { Cluster } from '../model/cluster'
import { ZoneCompiler, type ZoneEntry, type ZoneOptions } from './image'
import { formatRecord } from './records'

export type { CompiledAnswer } from './records'
export type { ZoneEntry, ZoneOptions } from './image'

/** A compiled cluster zone, for dumps, tests and tools (the packet path answers from an installed ZoneImage). */
class Zone {
  /** e.g. 'cluster.local' */
  readonly origin: string
  readonly ttl: number
  readonly serial: number
  readonly dnsIPs: readonly string[]
  readonly podRecords: boolean
  readonly namespaces: readonly string[]
  /** compile problems (names too long, bad addresses): the object was skipped, everything else compiled */
  readonly problems: readonly string[]
  /** names with an entry */
  readonly size: number
  private readonly compiler: ZoneCompiler

  /** @internal use compileZone; the compiler must not change afterwards */
  constructor(compiler: ZoneCompiler) {
    const p = compiler.params
    this.origin = p.origin
    this.ttl = p.ttl
    this.serial = compiler.serial
    this.dnsIPs = p.dnsIPs
    this.podRecords = p.podRecords
    this.namespaces = Object.freeze(compiler.namespaces())
    this.problems = Object.freeze(compiler.problems())
    this.size = compiler.size
    this.compiler = compiler
    Object.freeze(this)
  }

  /** Every record, one per line in presentation format, sorted: for `tundra dump` and golden tests. */
  dump(): string {
    const lines = this.compiler.records().map(r => (r.data.kind === 'soa' ? formatRecord({ ...r, data: { ...r.data, serial: this.serial } }) : formatRecord(r)))
    return lines.sort().join('\n') + '\n'
  }

  /** Names with an entry (existing names and empty non-terminals), sorted. */
  names(): string[] {
    return this.compiler.names()
  }

  /** Entry lookup by text name, decoded from the bytes the packet side answers from. */
  entry(name: string): ZoneEntry | undefined {
    return this.compiler.entry(name)
  }
}

export function compileZone(cluster: Cluster, opts: ZoneOptions = {}): Zone {
  const c = new ZoneCompiler(opts)
  c.full(cluster)
  return new Zone(c)
}

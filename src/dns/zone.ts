// Compiles a Cluster snapshot into an immutable cluster-DNS zone (Kubernetes DNS-Based Service Discovery 1.1.0, with
// CoreDNS plugin/kubernetes defaults where the spec leaves a choice): every reply the zone can give is pre-encoded once,
// keyed by lowercase wire name, so answering costs one hash, one compare and a copy.
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

import type { Cluster, Endpoint, Protocol, Service } from '../model/cluster'
import { dashedLabel, ipToText, parseIP, podLabelAddress, reverseName } from './addr'
import { DNS_HEADER_LEN, MessageWriter, QType, QTypeName, Rcode, fnv1a, nameToWire, normalizeName } from './message'

export const DNS_SCHEMA_VERSION = '1.1.0'

export interface ZoneOptions {
  /** cluster domain; default 'cluster.local' */
  readonly zone?: string
  /** TTL of positive answers and the SOA minimum (negative caching); default 5 s */
  readonly ttl?: number
  /** the cluster DNS service IP(s) (A/AAAA of ns.dns.<zone>); default 10.96.0.10 */
  readonly dnsIP?: string | readonly string[]
  /** SOA serial; default: unix seconds at compile time */
  readonly serial?: number
  /** `<a-b-c-d>.<ns>.pod.<zone>` records (CoreDNS `pods insecure`); default true */
  readonly podRecords?: boolean
}

/** One reply body, encoded for a reply whose question name has this entry's wire length. */
export interface CompiledAnswer {
  readonly rcode: number
  readonly aa: boolean
  readonly an: number
  readonly ns: number
  readonly ar: number
  /** answer + authority + additional, compressed against the question at offset 12 */
  readonly body: Uint8Array
  /** offset in body where the additional section starts (the reply may drop it whole rather than set TC) */
  readonly arStart: number
  /** >1: the answer section is `rotate` records of `rrSize` bytes, rotated per reply (CoreDNS loadbalance) */
  readonly rotate: number
  readonly rrSize: number
}

export interface ZoneEntry {
  readonly name: string
  /** qtypes with a dedicated answer, parallel to `answers` */
  readonly types: readonly number[]
  readonly answers: readonly CompiledAnswer[]
  /** reply for any other qtype; null when other types are not ours (reverse names: ask upstream) */
  readonly other: CompiledAnswer | null
  /**
   * The name outside the zone where this name's CNAME chain ends (an ExternalName), or null. Stub resolvers (glibc,
   * musl) do not chase CNAMEs themselves: the server resolves it upstream and appends the answer, as CoreDNS does.
   */
  readonly external: string | null
}

/** Open-addressing hash table from lowercase wire names to entries; lookups allocate nothing. */
export class NameTable {
  private readonly slots: Int32Array
  private readonly mask: number
  private readonly keys: Uint8Array[] = []
  private readonly hashes: number[] = []
  readonly entries: ZoneEntry[] = []

  constructor(capacity: number) {
    let size = 16
    while (size < capacity * 2) size <<= 1
    this.slots = new Int32Array(size).fill(-1)
    this.mask = size - 1
  }

  /** Compile-time insert; the key must not be present. */
  add(key: Uint8Array, entry: ZoneEntry): void {
    const h = fnv1a(key, 0, key.length)
    let i = h & this.mask
    while (this.slots[i]! >= 0) i = (i + 1) & this.mask
    this.slots[i] = this.entries.length
    this.keys.push(key)
    this.hashes.push(h)
    this.entries.push(entry)
  }

  /** Entry for the wire name name[start, end) whose FNV-1a hash is `hash`, or undefined. */
  find(name: Uint8Array, start: number, end: number, hash: number): ZoneEntry | undefined {
    const len = end - start
    let i = hash & this.mask
    for (;;) {
      const e = this.slots[i]!
      if (e < 0) return undefined
      if (this.hashes[e] === hash) {
        const k = this.keys[e]!
        if (k.length === len) {
          let j = 0
          while (j < len && k[j] === name[start + j]) j++
          if (j === len) return this.entries[e]
        }
      }
      i = (i + 1) & this.mask
    }
  }

  get size(): number {
    return this.entries.length
  }
}

// ---- records as data (compile time) ----------------------------------------------------------------------------

type RData =
  | { readonly kind: 'addr'; readonly ip: Uint8Array }
  | { readonly kind: 'name'; readonly target: string }
  | { readonly kind: 'srv'; readonly priority: number; readonly weight: number; readonly port: number; readonly target: string }
  | { readonly kind: 'txt'; readonly text: string }
  | { readonly kind: 'soa'; readonly mname: string; readonly rname: string; readonly serial: number; readonly refresh: number; readonly retry: number; readonly expire: number; readonly minimum: number }

interface Rec {
  readonly name: string
  readonly type: number
  readonly ttl: number
  readonly data: RData
}

interface NodeBuild {
  readonly rrs: Map<number, Rec[]>
  readonly extra: Map<number, Rec[]>
  cname?: string
  reverse: boolean
}

interface Resolution {
  readonly rcode: number
  readonly answer: readonly Rec[]
  readonly authority: readonly Rec[]
  readonly additional: readonly Rec[]
}

/** The types tundra ever serves: a CNAME node gets a dedicated chased answer for each of them. */
const SERVED_TYPES: readonly number[] = [QType.A, QType.AAAA, QType.SRV, QType.TXT, QType.PTR, QType.NS, QType.SOA]
/** A qtype no node holds: resolving it yields the generic negative (or CNAME + negative) reply. */
const NO_SUCH_TYPE = 0

const SOA_REFRESH = 7200
const SOA_RETRY = 1800
const SOA_EXPIRE = 86400
/** CoreDNS caps the SOA record's own TTL at 300 s. */
const SOA_MAX_TTL = 300
const MAX_CNAME_CHAIN = 8

/** Offsets inside the dynamic SOA template (answer.ts patches the three pointers to the zone suffix). */
export const SoaTemplate = {
  OWNER_PTR: 0,
  MNAME_PTR: 19,
  RNAME_PTR: 32,
  LEN: 54,
} as const

/** A compiled cluster zone. Immutable: a new snapshot compiles a new Zone and the server swaps one reference. */
export class Zone {
  /** e.g. 'cluster.local' */
  readonly origin: string
  readonly ttl: number
  readonly serial: number
  readonly dnsIPs: readonly string[]
  readonly podRecords: boolean
  readonly namespaces: readonly string[]
  /** wire form of the origin and its label count */
  readonly originWire: Uint8Array
  readonly originLabels: number
  readonly table: NameTable
  /** SOA RR with pointer placeholders, for replies whose names are not in the table (NXDOMAIN, pod NODATA) */
  readonly soaTemplate: Uint8Array
  /** compile problems (names too long, bad addresses): the object was skipped, everything else compiled */
  readonly problems: readonly string[]
  private readonly records: readonly Rec[]

  /** @internal use compileZone */
  constructor(init: {
    origin: string; ttl: number; serial: number; dnsIPs: readonly string[]; podRecords: boolean
    namespaces: readonly string[]; table: NameTable; soaTemplate: Uint8Array; problems: readonly string[]
    records: readonly Rec[]
  }) {
    this.origin = init.origin
    this.ttl = init.ttl
    this.serial = init.serial
    this.dnsIPs = init.dnsIPs
    this.podRecords = init.podRecords
    this.namespaces = init.namespaces
    this.originWire = nameToWire(init.origin)
    this.originLabels = init.origin.split('.').length
    this.table = init.table
    this.soaTemplate = init.soaTemplate
    this.problems = init.problems
    this.records = init.records
    Object.freeze(this)
  }

  /** Every record, one per line in presentation format, sorted: for `tundra dump` and golden tests. */
  dump(): string {
    return this.records.map(formatRecord).sort().join('\n') + '\n'
  }

  /** Names with an entry (existing names and empty non-terminals), sorted. */
  names(): string[] {
    return this.table.entries.map(e => e.name).sort()
  }

  /** Compile-time entry lookup by text name, for tests and tools. */
  entry(name: string): ZoneEntry | undefined {
    const w = nameToWire(name)
    return this.table.find(w, 0, w.length, fnv1a(w, 0, w.length))
  }
}

/** Endpoints that DNS publishes: ready ones, or all when the service publishes not-ready addresses. */
export function dnsReady(svc: Service, ep: Endpoint): boolean {
  return ep.ready || svc.publishNotReadyAddresses
}

export function compileZone(cluster: Cluster, opts: ZoneOptions = {}): Zone {
  const origin = normalizeName(opts.zone ?? 'cluster.local')
  if (origin === '') throw new RangeError('The cluster zone must not be the root')
  const ttl = opts.ttl ?? 5
  const serial = (opts.serial ?? Math.floor(Date.now() / 1000)) >>> 0
  const dnsIPs = typeof opts.dnsIP === 'string' ? [opts.dnsIP] : [...(opts.dnsIP ?? ['10.96.0.10'])]
  const podRecords = opts.podRecords ?? true
  const problems: string[] = []
  const nodes = new Map<string, NodeBuild>()
  const records: Rec[] = []
  const suffix = `.${origin}`
  const inZone = (n: string): boolean => n === origin || n.endsWith(suffix)

  const node = (name: string): NodeBuild => {
    let nb = nodes.get(name)
    if (nb === undefined) {
      nb = { rrs: new Map(), extra: new Map(), reverse: false }
      nodes.set(name, nb)
    }
    return nb
  }
  const validName = (name: string): boolean => {
    try {
      nameToWire(name)
      return true
    } catch {
      problems.push(`${name}: not a valid DNS name, skipped`)
      return false
    }
  }
  const add = (rec: Rec): void => {
    if (!validName(rec.name)) return
    const list = node(rec.name).rrs
    const same = list.get(rec.type)
    if (same === undefined) list.set(rec.type, [rec])
    else if (!same.some(r => sameData(r.data, rec.data))) same.push(rec)
    else return
    records.push(rec)
  }
  const addExtra = (name: string, qtype: number, recs: readonly Rec[]): void => {
    const m = node(name).extra
    const list = m.get(qtype) ?? []
    for (const r of recs) if (!list.some(x => x.name === r.name && x.type === r.type && sameData(x.data, r.data))) list.push(r)
    m.set(qtype, list)
  }
  const addrRec = (name: string, ip: Uint8Array): Rec => ({
    name, type: ip.length === 4 ? QType.A : QType.AAAA, ttl, data: { kind: 'addr', ip },
  })

  // apex, the server's own name, schema version
  const soa: Rec = {
    name: origin, type: QType.SOA, ttl: Math.min(ttl, SOA_MAX_TTL),
    data: {
      kind: 'soa', mname: `ns.dns.${origin}`, rname: `hostmaster.${origin}`, serial,
      refresh: SOA_REFRESH, retry: SOA_RETRY, expire: SOA_EXPIRE, minimum: ttl,
    },
  }
  add(soa)
  const nsName = `ns.dns.${origin}`
  add({ name: origin, type: QType.NS, ttl, data: { kind: 'name', target: nsName } })
  const nsAddrs: Rec[] = []
  for (const ip of dnsIPs) {
    const b = parseIP(ip)
    if (b === null) {
      problems.push(`dnsIP ${ip}: not an IP address, skipped`)
      continue
    }
    const r = addrRec(nsName, b)
    add(r)
    nsAddrs.push(r)
  }
  addExtra(origin, QType.NS, nsAddrs)
  add({ name: `dns-version.${origin}`, type: QType.TXT, ttl, data: { kind: 'txt', text: DNS_SCHEMA_VERSION } })

  // namespaces: from services and pods (the model carries no Namespace objects)
  const nsSet = new Set<string>()
  for (const s of cluster.services) nsSet.add(s.namespace.toLowerCase())
  for (const p of cluster.pods) nsSet.add(p.namespace.toLowerCase())
  const namespaces = [...nsSet].sort()
  node(`svc.${origin}`)
  if (podRecords) node(`pod.${origin}`)
  for (const ns of namespaces) {
    if (validName(`${ns}.svc.${origin}`)) node(`${ns}.svc.${origin}`)
    if (podRecords && validName(`${ns}.pod.${origin}`)) node(`${ns}.pod.${origin}`)
  }

  // services, in a stable order so the output is deterministic
  const services = [...cluster.services].sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name))
  const ptrs = new Map<string, { ip: Uint8Array; targets: string[]; clusterIP: boolean }>()
  const addPtr = (ip: Uint8Array, target: string, clusterIP: boolean): void => {
    const key = reverseName(ip)
    const cur = ptrs.get(key)
    if (cur === undefined) ptrs.set(key, { ip, targets: [target], clusterIP })
    else if (clusterIP && !cur.clusterIP) ptrs.set(key, { ip, targets: [target], clusterIP })
    else if (!clusterIP && !cur.clusterIP && !cur.targets.includes(target)) cur.targets.push(target)
  }

  for (const svc of services) {
    const svcName = `${svc.name}.${svc.namespace}.svc.${origin}`.toLowerCase()
    if (!validName(svcName)) continue
    if (svc.type === 'ExternalName') {
      const target = normalizeName(svc.externalName ?? '')
      const ip = target === '' ? null : parseIP(target)
      if (ip !== null) add(addrRec(svcName, ip))
      else if (target !== '' && validName(target)) {
        node(svcName).cname = target
        records.push({ name: svcName, type: QType.CNAME, ttl, data: { kind: 'name', target } })
      } else node(svcName)
      continue
    }

    // endpoints DNS publishes, by host label (hostname, else the dashed IP)
    const eps = svc.endpoints
      .filter(ep => dnsReady(svc, ep))
      .map(ep => ({ ep, ip: parseIP(ep.ip), label: (ep.hostname ?? '').toLowerCase() || dashedLabel(ep.ip) }))
      .filter((x): x is { ep: Endpoint; ip: Uint8Array; label: string } => {
        if (x.ip === null) problems.push(`${svc.namespace}/${svc.name}: endpoint ${x.ep.ip} is not an IP address`)
        return x.ip !== null
      })
      .sort((a, b) => cmp(a.label, b.label) || cmpBytes(a.ip, b.ip))
    const hostAddrs = new Map<string, Rec[]>()
    for (const { ip, label } of eps) {
      const host = `${label}.${svcName}`
      if (!validName(host)) continue
      const r = addrRec(host, ip)
      add(r)
      const list = hostAddrs.get(host) ?? []
      if (!list.some(x => sameData(x.data, r.data))) list.push(r)
      hostAddrs.set(host, list)
      addPtr(ip, host, false)
    }

    if (svc.headless) {
      for (const { ip } of eps) add(addrRec(svcName, ip))
      // SRV per (endpoint, port); CoreDNS takes ports from the endpoint slices
      type Srv = { target: string; port: number; name: string; proto: Protocol }
      const all: Srv[] = []
      for (const { ep, label } of eps) {
        const target = `${label}.${svcName}`
        if (!hostAddrs.has(target)) continue
        const ports = ep.ports.length > 0
          ? ep.ports
          : svc.ports.map(p => ({ name: p.name, protocol: p.protocol, port: typeof p.targetPort === 'number' ? p.targetPort : p.port }))
        for (const p of ports) if (p.port > 0 && p.port < 65536) all.push({ target, port: p.port, name: p.name, proto: p.protocol })
      }
      addSrv(svcName, all)
      const named = new Map<string, Srv[]>()
      for (const s of all) {
        if (s.name === '') continue
        const n = `_${s.name}._${s.proto}.${svcName}`.toLowerCase()
        named.set(n, [...(named.get(n) ?? []), s])
      }
      for (const [n, list] of named) if (validName(n)) addSrv(n, list)
    } else {
      const ips: Uint8Array[] = []
      for (const ipText of svc.clusterIPs) {
        const ip = parseIP(ipText)
        if (ip === null) {
          problems.push(`${svc.namespace}/${svc.name}: clusterIP ${ipText} is not an IP address`)
          continue
        }
        ips.push(ip)
        add(addrRec(svcName, ip))
        addPtr(ip, svcName, true)
      }
      hostAddrs.set(svcName, ips.map(ip => addrRec(svcName, ip)))
      const perIP = (list: { target: string; port: number; name: string; proto: Protocol }[]) =>
        ips.flatMap(() => list)
      const ports = svc.ports.map(p => ({ target: svcName, port: p.port, name: p.name, proto: p.protocol }))
      if (ips.length > 0) {
        addSrv(svcName, perIP(ports))
        for (const p of ports) {
          if (p.name === '') continue
          const n = `_${p.name}._${p.proto}.${svcName}`.toLowerCase()
          if (validName(n)) addSrv(n, perIP([p]))
        }
      }
    }

    /** SRV RRset at `owner`: CoreDNS weight = 100 / entries (before de-duplication), priority 0; targets' addresses extra. */
    function addSrv(owner: string, entries: readonly { target: string; port: number }[]): void {
      if (entries.length === 0) return
      const weight = Math.max(1, Math.floor(100 / entries.length))
      const seen = new Set<string>()
      const extra: Rec[] = []
      for (const e of entries) {
        const k = `${e.target} ${e.port}`
        if (seen.has(k)) continue
        seen.add(k)
        add({ name: owner, type: QType.SRV, ttl, data: { kind: 'srv', priority: 0, weight, port: e.port, target: e.target } })
        extra.push(...(hostAddrs.get(e.target) ?? []))
      }
      addExtra(owner, QType.SRV, extra)
    }
  }

  // reverse names: PTR only, everything else about them belongs upstream
  for (const [name, { targets }] of [...ptrs].sort((a, b) => cmp(a[0], b[0]))) {
    for (const target of targets) add({ name, type: QType.PTR, ttl, data: { kind: 'name', target } })
    node(name).reverse = true
  }

  // empty non-terminals: every ancestor of a name in the zone exists
  for (const name of [...nodes.keys()]) {
    if (!inZone(name)) continue
    let n = name
    while (n !== origin) {
      n = n.slice(n.indexOf('.') + 1)
      node(n)
    }
  }

  // resolution over the built nodes, chasing CNAMEs inside the zone
  const soaAuthority = [soa]
  const resolve = (name: string, qtype: number, depth: number, chain: readonly string[]): Resolution | null => {
    const nb = nodes.get(name)
    if (nb === undefined || nb.reverse) {
      if (!inZone(name)) return null
      const pod = podRecords ? podRecord(name) : undefined
      if (pod === undefined) return { rcode: Rcode.NXDOMAIN, answer: [], authority: soaAuthority, additional: [] }
      if (pod !== null && pod.type === qtype) return { rcode: Rcode.NOERROR, answer: [pod], authority: [], additional: [] }
      if (pod === null) return { rcode: Rcode.NXDOMAIN, answer: [], authority: soaAuthority, additional: [] }
      return { rcode: Rcode.NOERROR, answer: [], authority: soaAuthority, additional: [] }
    }
    if (nb.cname !== undefined) {
      const c: Rec = { name, type: QType.CNAME, ttl, data: { kind: 'name', target: nb.cname } }
      if (qtype === QType.CNAME || depth >= MAX_CNAME_CHAIN || chain.includes(nb.cname)) {
        return { rcode: Rcode.NOERROR, answer: [c], authority: [], additional: [] }
      }
      const next = resolve(nb.cname, qtype, depth + 1, [...chain, name])
      if (next === null) return { rcode: Rcode.NOERROR, answer: [c], authority: [], additional: [] }
      return { rcode: next.rcode, answer: [c, ...next.answer], authority: next.authority, additional: next.additional }
    }
    const rrs = nb.rrs.get(qtype)
    if (rrs !== undefined && rrs.length > 0) {
      return { rcode: Rcode.NOERROR, answer: rrs, authority: [], additional: nb.extra.get(qtype) ?? [] }
    }
    return { rcode: Rcode.NOERROR, answer: [], authority: soaAuthority, additional: [] }
  }
  /** undefined: not a pod name; null: a pod name that does not parse (NXDOMAIN); else the record */
  function podRecord(name: string): Rec | null | undefined {
    const rel = name.slice(0, name.length - suffix.length).split('.')
    if (rel.length !== 3 || rel[2] !== 'pod' || !nsSet.has(rel[1]!)) return undefined
    const ip = podLabelAddress(rel[0]!)
    return ip === null ? null : addrRec(name, ip)
  }

  /** where the CNAME chain starting at `name` leaves the zone, or null (no CNAME, ends inside, loops, too long) */
  const externalOf = (name: string): string | null => {
    let n = name
    const seen = new Set<string>()
    for (let depth = 0; depth <= MAX_CNAME_CHAIN; depth++) {
      const nb = nodes.get(n)
      if (nb === undefined || nb.reverse) return inZone(n) || depth === 0 ? null : n
      if (nb.cname === undefined || seen.has(n)) return null
      seen.add(n)
      n = nb.cname
    }
    return null
  }

  // encode every entry
  const table = new NameTable(nodes.size)
  for (const name of [...nodes.keys()].sort()) {
    const nb = nodes.get(name)!
    const types: number[] = []
    const answers: CompiledAnswer[] = []
    let other: CompiledAnswer | null
    if (nb.reverse) {
      types.push(QType.PTR)
      answers.push(encodeAnswer(name, { rcode: 0, answer: nb.rrs.get(QType.PTR) ?? [], authority: [], additional: [] }))
      other = null
    } else {
      const qtypes = nb.cname !== undefined ? [...SERVED_TYPES, QType.CNAME] : [...nb.rrs.keys()].sort((a, b) => a - b)
      for (const t of qtypes) {
        const r = resolve(name, t, 0, [])!
        types.push(t)
        answers.push(encodeAnswer(name, r))
      }
      other = encodeAnswer(name, resolve(name, NO_SUCH_TYPE, 0, [])!)
    }
    table.add(nameToWire(name), Object.freeze({ name, types, answers, other, external: externalOf(name) }))
  }

  return new Zone({
    origin, ttl, serial, dnsIPs, podRecords, namespaces, table,
    soaTemplate: soaTemplate(soa), problems, records,
  })
}

// ---- encoding ---------------------------------------------------------------------------------------------------

function encodeAnswer(qname: string, r: Resolution): CompiledAnswer {
  const qlen = nameToWire(qname).length
  const w = new MessageWriter(DNS_HEADER_LEN + qlen + 4, qname)
  for (const rec of r.answer) writeRecord(w, rec)
  const anEnd = w.length
  for (const rec of r.authority) writeRecord(w, rec)
  const arStart = w.length
  for (const rec of r.additional) writeRecord(w, rec)
  const body = w.finish()
  // rotation needs equal-size records that all sit at the question name: the headless A/AAAA sets
  let rotate = 0
  let rrSize = 0
  const n = r.answer.length
  if (
    n > 1 &&
    r.answer.every(x => x.type === r.answer[0]!.type && x.name === qname && (x.type === QType.A || x.type === QType.AAAA))
  ) {
    rrSize = anEnd / n
    if (Number.isInteger(rrSize) && rrSize === 12 + (r.answer[0]!.type === QType.A ? 4 : 16)) rotate = n
    else rrSize = 0
  }
  return Object.freeze({
    rcode: r.rcode, aa: true, an: n, ns: r.authority.length, ar: r.additional.length, body, arStart, rotate, rrSize,
  })
}

function writeRecord(w: MessageWriter, rec: Rec): void {
  const at = w.beginRecord(rec.name, rec.type, rec.ttl)
  const d = rec.data
  switch (d.kind) {
    case 'addr':
      w.raw(d.ip)
      break
    case 'name':
      w.name(d.target, true)
      break
    case 'srv':
      w.u16(d.priority)
      w.u16(d.weight)
      w.u16(d.port)
      // RFC 2782: the target is never compressed
      w.name(d.target, false)
      break
    case 'txt': {
      const b = Buffer.from(d.text, 'utf8')
      for (let i = 0; i < b.length || i === 0; i += 255) {
        const chunk = b.subarray(i, i + 255)
        w.u8(chunk.length)
        w.raw(chunk)
      }
      break
    }
    case 'soa':
      w.name(d.mname, true)
      w.name(d.rname, true)
      w.u32(d.serial)
      w.u32(d.refresh)
      w.u32(d.retry)
      w.u32(d.expire)
      w.u32(d.minimum)
      break
  }
  w.endRdata(at)
}

/** SOA RR whose owner and rdata names are pointers to the zone suffix; answer.ts patches the three pointers. */
function soaTemplate(soa: Rec): Uint8Array {
  const d = soa.data
  if (d.kind !== 'soa') throw new TypeError('Not a SOA record')
  const t = Buffer.alloc(SoaTemplate.LEN)
  t.writeUInt16BE(0xc000, 0)
  t.writeUInt16BE(QType.SOA, 2)
  t.writeUInt16BE(1, 4)
  t.writeUInt32BE(soa.ttl, 6)
  t.writeUInt16BE(SoaTemplate.LEN - 12, 10)
  Buffer.from([2, 0x6e, 0x73, 3, 0x64, 0x6e, 0x73, 0xc0, 0]).copy(t, 12)
  t[21] = 10
  Buffer.from('hostmaster', 'latin1').copy(t, 22)
  t.writeUInt16BE(0xc000, SoaTemplate.RNAME_PTR)
  t.writeUInt32BE(d.serial, 34)
  t.writeUInt32BE(d.refresh, 38)
  t.writeUInt32BE(d.retry, 42)
  t.writeUInt32BE(d.expire, 46)
  t.writeUInt32BE(d.minimum, 50)
  return new Uint8Array(t.buffer, t.byteOffset, t.length)
}

// ---- helpers ----------------------------------------------------------------------------------------------------

function sameData(a: RData, b: RData): boolean {
  if (a.kind !== b.kind) return false
  switch (a.kind) {
    case 'addr':
      return cmpBytes(a.ip, (b as typeof a).ip) === 0
    case 'name':
      return a.target === (b as typeof a).target
    case 'srv': {
      const o = b as typeof a
      return a.port === o.port && a.target === o.target && a.weight === o.weight && a.priority === o.priority
    }
    case 'txt':
      return a.text === (b as typeof a).text
    case 'soa':
      return true
  }
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function cmpBytes(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return a.length - b.length
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!
  return 0
}

function formatRecord(r: Rec): string {
  const d = r.data
  let rdata: string
  switch (d.kind) {
    case 'addr':
      rdata = ipToText(d.ip)
      break
    case 'name':
      rdata = `${d.target}.`
      break
    case 'srv':
      rdata = `${d.priority} ${d.weight} ${d.port} ${d.target}.`
      break
    case 'txt':
      rdata = JSON.stringify(d.text)
      break
    case 'soa':
      rdata = `${d.mname}. ${d.rname}. ${d.serial} ${d.refresh} ${d.retry} ${d.expire} ${d.minimum}`
      break
  }
  return `${r.name}.\t${r.ttl}\tIN\t${QTypeName[r.type] ?? `TYPE${r.type}`}\t${rdata}`
}

// The cluster zone's rules, one function per record kind: what each Service contributes (its names, records, additional
// records and PTR claims), what the zone holds by itself, how a name resolves (CNAMEs chased inside the zone, negative
// answers), and how a resolution is encoded. Pure functions over plain data; ZoneCompiler (image.ts) combines them,
// incrementally, and compileZone (zone.ts) is its full run.
//
// Records follow the Kubernetes DNS-Based Service Discovery spec 1.1.0, with CoreDNS plugin/kubernetes defaults where
// the spec leaves a choice (see zone.ts for the list of names).

import type { Endpoint, Protocol, Service } from '../model/cluster'
import { dashedLabel, podLabelAddress, reverseName } from './addr'
import { ipBytesToString, parseIpBytes } from '../wire/addr'
import { DNS_HEADER_LEN, MessageWriter, QType, QTypeName, Rcode, nameToWire, normalizeName } from './message'

const DNS_SCHEMA_VERSION = '1.1.0'

/** What the rules need to know about the zone itself (fixed for a compiler's life). */
export interface ZoneParams {
  readonly origin: string
  readonly ttl: number
  readonly dnsIPs: readonly string[]
  readonly podRecords: boolean
}

type RData =
  | { readonly kind: 'addr'; readonly ip: Uint8Array }
  | { readonly kind: 'name'; readonly target: string }
  | { readonly kind: 'srv'; readonly priority: number; readonly weight: number; readonly port: number; readonly target: string }
  | { readonly kind: 'txt'; readonly text: string }
  | {
      readonly kind: 'soa'
      readonly mname: string
      readonly rname: string
      readonly serial: number
      readonly refresh: number
      readonly retry: number
      readonly expire: number
      readonly minimum: number
    }

export interface Rec {
  readonly name: string
  readonly type: number
  readonly ttl: number
  readonly data: RData
}

/** One owner's share of one name: its RRsets, additional records per qtype, and an ExternalName CNAME target. */
export interface NodeBuild {
  readonly rrs: Map<number, Rec[]>
  readonly extra: Map<number, Rec[]>
  cname?: string
  /** always false: a build is also the view of a name with one owner */
  readonly reverse: false
}

/** A name as resolution sees it: the merge of every owner's NodeBuild, or a reverse name. */
export interface NodeView {
  readonly rrs: ReadonlyMap<number, readonly Rec[]>
  readonly extra: ReadonlyMap<number, readonly Rec[]>
  readonly cname?: string | undefined
  /** reverse names hold PTR only; every other question about them belongs upstream */
  readonly reverse: boolean
}

/** A wish to publish PTR `name` → `target`; ClusterIP claims win over endpoint claims (resolvePtr). */
export interface PtrClaim {
  readonly name: string
  readonly target: string
  readonly clusterIP: boolean
}

/** Everything one owner (a Service, a namespace, the zone itself) adds to the zone. */
export interface Part {
  /** sort key: the order of owners decides the order of records merged at a shared name */
  readonly owner: string
  readonly nodes: ReadonlyMap<string, NodeBuild>
  readonly ptrs: readonly PtrClaim[]
  readonly problems: readonly string[]
}

interface Resolution {
  readonly rcode: number
  readonly answer: readonly Rec[]
  readonly authority: readonly Rec[]
  readonly additional: readonly Rec[]
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
  /** offset in body of the SOA serial the server writes at answer time (so a new serial rewrites no entry), or -1 */
  readonly serialAt: number
}

/** The types tundra ever serves: a CNAME node gets a dedicated chased answer for each of them. */
const SERVED_TYPES: readonly number[] = [QType.A, QType.AAAA, QType.SRV, QType.TXT, QType.PTR, QType.NS, QType.SOA]
/** A qtype no node holds: resolving it yields the generic negative (or CNAME + negative) reply. */
const NO_SUCH_TYPE = 0

export const SOA_REFRESH = 7200
export const SOA_RETRY = 1800
export const SOA_EXPIRE = 86400
/** CoreDNS caps the SOA record's own TTL at 300 s. */
export const SOA_MAX_TTL = 300
const MAX_CNAME_CHAIN = 8
/** Dependency key for "namespace <ns> exists" (pod names resolve only in known namespaces); never a DNS name. */
export const NS_KEY = '\u0000ns:'
/** Owner keys: the zone's own records sort first, namespaces next, then Services by namespace and name. */
const STATIC_OWNER = ''
const NAMESPACE_OWNER = '\u0000'

export function serviceOwner(namespace: string, name: string): string {
  return `${namespace}\u0000${name}`
}

/** Endpoints that DNS publishes: ready ones, or all when the service publishes not-ready addresses. */
function dnsReady(svc: Service, ep: Endpoint): boolean {
  return ep.ready || svc.publishNotReadyAddresses
}

export function inZoneName(p: ZoneParams, n: string): boolean {
  return n === p.origin || n.endsWith(`.${p.origin}`)
}

/** The apex SOA; its serial is written at answer time (CompiledAnswer.serialAt), so the record carries 0. */
function soaRecord(p: ZoneParams, serial = 0): Rec {
  return {
    name: p.origin,
    type: QType.SOA,
    ttl: Math.min(p.ttl, SOA_MAX_TTL),
    data: {
      kind: 'soa',
      mname: `ns.dns.${p.origin}`,
      rname: `hostmaster.${p.origin}`,
      serial,
      refresh: SOA_REFRESH,
      retry: SOA_RETRY,
      expire: SOA_EXPIRE,
      minimum: p.ttl,
    },
  }
}

// ---- building one owner's part ----------------------------------------------------------------------------------

class PartBuilder {
  readonly nodes = new Map<string, NodeBuild>()
  readonly ptrs: PtrClaim[] = []
  readonly problems: string[] = []

  constructor(
    readonly owner: string,
    readonly p: ZoneParams,
  ) {}

  node(name: string): NodeBuild {
    let nb = this.nodes.get(name)
    if (nb === undefined) {
      nb = { rrs: new Map(), extra: new Map(), reverse: false }
      this.nodes.set(name, nb)
    }
    return nb
  }

  validName(name: string): boolean {
    try {
      nameToWire(name)
      return true
    } catch {
      this.problems.push(`${name}: not a valid DNS name, skipped`)
      return false
    }
  }

  add(rec: Rec): void {
    if (!this.validName(rec.name)) return
    const list = this.node(rec.name).rrs
    const same = list.get(rec.type)
    if (same === undefined) list.set(rec.type, [rec])
    else if (!same.some(r => sameData(r.data, rec.data))) same.push(rec)
  }

  addExtra(name: string, qtype: number, recs: readonly Rec[]): void {
    const m = this.node(name).extra
    const list = m.get(qtype) ?? []
    for (const r of recs) if (!list.some(x => sameRec(x, r))) list.push(r)
    m.set(qtype, list)
  }

  addrRec(name: string, ip: Uint8Array): Rec {
    return { name, type: ip.length === 4 ? QType.A : QType.AAAA, ttl: this.p.ttl, data: { kind: 'addr', ip } }
  }

  /** SRV RRset at `owner`: CoreDNS weight = 100 / entries (before de-duplication), priority 0; targets' addresses extra. */
  addSrv(owner: string, entries: readonly { target: string; port: number }[], hostAddrs: ReadonlyMap<string, readonly Rec[]>): void {
    if (entries.length === 0) return
    const weight = Math.max(1, Math.floor(100 / entries.length))
    const seen = new Set<string>()
    const extra: Rec[] = []
    for (const e of entries) {
      const k = `${e.target} ${e.port}`
      if (seen.has(k)) continue
      seen.add(k)
      this.add({ name: owner, type: QType.SRV, ttl: this.p.ttl, data: { kind: 'srv', priority: 0, weight, port: e.port, target: e.target } })
      extra.push(...(hostAddrs.get(e.target) ?? []))
    }
    this.addExtra(owner, QType.SRV, extra)
  }

  done(): Part {
    return { owner: this.owner, nodes: this.nodes, ptrs: this.ptrs, problems: this.problems }
  }
}

/** The zone's own names: apex SOA and NS, the server's address, the schema version, svc./pod. */
export function staticPart(p: ZoneParams): Part {
  const b = new PartBuilder(STATIC_OWNER, p)
  const origin = p.origin
  b.add(soaRecord(p))
  const nsName = `ns.dns.${origin}`
  b.add({ name: origin, type: QType.NS, ttl: p.ttl, data: { kind: 'name', target: nsName } })
  const nsAddrs: Rec[] = []
  for (const ip of p.dnsIPs) {
    const bytes = parseIpBytes(ip)
    if (bytes === undefined) {
      b.problems.push(`dnsIP ${ip}: not an IP address, skipped`)
      continue
    }
    const r = b.addrRec(nsName, bytes)
    b.add(r)
    nsAddrs.push(r)
  }
  b.addExtra(origin, QType.NS, nsAddrs)
  b.add({ name: `dns-version.${origin}`, type: QType.TXT, ttl: p.ttl, data: { kind: 'txt', text: DNS_SCHEMA_VERSION } })
  b.node(`svc.${origin}`)
  if (p.podRecords) b.node(`pod.${origin}`)
  return b.done()
}

/** A namespace (known from a Service or a Pod; the model has no Namespace objects): empty non-terminals. */
export function namespacePart(ns: string, p: ZoneParams): Part {
  const b = new PartBuilder(NAMESPACE_OWNER + ns, p)
  if (b.validName(`${ns}.svc.${p.origin}`)) b.node(`${ns}.svc.${p.origin}`)
  if (p.podRecords && b.validName(`${ns}.pod.${p.origin}`)) b.node(`${ns}.pod.${p.origin}`)
  return b.done()
}

/** Everything one Service publishes. */
export function servicePart(svc: Service, p: ZoneParams): Part {
  const b = new PartBuilder(serviceOwner(svc.namespace, svc.name), p)
  const svcName = `${svc.name}.${svc.namespace}.svc.${p.origin}`.toLowerCase()
  if (!b.validName(svcName)) return b.done()
  if (svc.type === 'ExternalName') {
    externalNameRecords(b, svc, svcName)
    return b.done()
  }
  const eps = publishedEndpoints(b, svc)
  const hostAddrs = endpointRecords(b, svcName, eps)
  if (svc.headless) headlessRecords(b, svc, svcName, eps, hostAddrs)
  else clusterIPRecords(b, svc, svcName, hostAddrs)
  return b.done()
}

/** ExternalName: a CNAME (chased at resolution), or the address itself when the target is an IP (CoreDNS). */
function externalNameRecords(b: PartBuilder, svc: Service, svcName: string): void {
  const target = normalizeName(svc.externalName ?? '')
  const ip = target === '' ? undefined : parseIpBytes(target)
  if (ip !== undefined) b.add(b.addrRec(svcName, ip))
  else if (target !== '' && b.validName(target)) b.node(svcName).cname = target
  else b.node(svcName)
}

interface Published {
  readonly ep: Endpoint
  readonly ip: Uint8Array
  readonly label: string
}

/** Endpoints DNS publishes, by host label (hostname, else the dashed IP), in a stable order. */
function publishedEndpoints(b: PartBuilder, svc: Service): Published[] {
  const out: Published[] = []
  for (const ep of svc.endpoints) {
    if (!dnsReady(svc, ep)) continue
    const ip = parseIpBytes(ep.ip)
    if (ip === undefined) {
      b.problems.push(`${svc.namespace}/${svc.name}: endpoint ${ep.ip} is not an IP address`)
      continue
    }
    out.push({ ep, ip, label: (ep.hostname ?? '').toLowerCase() || dashedLabel(ep.ip) })
  }
  return out.sort((x, y) => cmp(x.label, y.label) || cmpBytes(x.ip, y.ip))
}

/** `<ep>.<svc>.<ns>.svc` A/AAAA per published endpoint (CoreDNS: for every service) and its PTR claim. */
function endpointRecords(b: PartBuilder, svcName: string, eps: readonly Published[]): Map<string, Rec[]> {
  const hostAddrs = new Map<string, Rec[]>()
  for (const { ip, label } of eps) {
    const host = `${label}.${svcName}`
    if (!b.validName(host)) continue
    const r = b.addrRec(host, ip)
    b.add(r)
    const list = hostAddrs.get(host) ?? []
    if (!list.some(x => sameData(x.data, r.data))) list.push(r)
    hostAddrs.set(host, list)
    b.ptrs.push({ name: reverseName(ip), target: host, clusterIP: false })
  }
  return hostAddrs
}

type SrvTarget = { target: string; port: number; name: string; proto: Protocol }

/** Headless: the service name answers with the endpoints; SRV per (endpoint, port), ports from the slices (CoreDNS). */
function headlessRecords(b: PartBuilder, svc: Service, svcName: string, eps: readonly Published[], hostAddrs: Map<string, Rec[]>): void {
  for (const { ip } of eps) b.add(b.addrRec(svcName, ip))
  const all: SrvTarget[] = []
  for (const { ep, label } of eps) {
    const target = `${label}.${svcName}`
    if (!hostAddrs.has(target)) continue
    const ports =
      ep.ports.length > 0
        ? ep.ports
        : svc.ports.map(p => ({ name: p.name, protocol: p.protocol, port: typeof p.targetPort === 'number' ? p.targetPort : p.port }))
    for (const p of ports) if (p.port > 0 && p.port < 65536) all.push({ target, port: p.port, name: p.name, proto: p.protocol })
  }
  b.addSrv(svcName, all, hostAddrs)
  const named = new Map<string, SrvTarget[]>()
  for (const s of all) {
    if (s.name === '') continue
    const n = `_${s.name}._${s.proto}.${svcName}`.toLowerCase()
    named.set(n, [...(named.get(n) ?? []), s])
  }
  for (const [n, list] of named) if (b.validName(n)) b.addSrv(n, list, hostAddrs)
}

/** ClusterIP (and NodePort, LoadBalancer): A/AAAA of the ClusterIPs, their PTR claims, SRV per port at the service. */
function clusterIPRecords(b: PartBuilder, svc: Service, svcName: string, hostAddrs: Map<string, Rec[]>): void {
  const ips: Uint8Array[] = []
  for (const ipText of svc.clusterIPs) {
    const ip = parseIpBytes(ipText)
    if (ip === undefined) {
      b.problems.push(`${svc.namespace}/${svc.name}: clusterIP ${ipText} is not an IP address`)
      continue
    }
    ips.push(ip)
    b.add(b.addrRec(svcName, ip))
    b.ptrs.push({ name: reverseName(ip), target: svcName, clusterIP: true })
  }
  if (ips.length === 0) return
  hostAddrs.set(
    svcName,
    ips.map(ip => b.addrRec(svcName, ip)),
  )
  const perIP = (list: readonly SrvTarget[]): SrvTarget[] => ips.flatMap(() => list)
  const ports = svc.ports.map(p => ({ target: svcName, port: p.port, name: p.name, proto: p.protocol }))
  b.addSrv(svcName, perIP(ports), hostAddrs)
  for (const port of ports) {
    if (port.name === '') continue
    const n = `_${port.name}._${port.proto}.${svcName}`.toLowerCase()
    if (b.validName(n)) b.addSrv(n, perIP([port]), hostAddrs)
  }
}

// ---- merging owners -----------------------------------------------------------------------------------------------

/** The merge of several owners' builds of one name, in owner order (records de-duplicated, the last CNAME wins). */
export function mergeNodes(builds: readonly NodeBuild[]): NodeView {
  if (builds.length === 1) return builds[0]!
  const rrs = new Map<number, Rec[]>()
  const extra = new Map<number, Rec[]>()
  let cname: string | undefined
  for (const nb of builds) {
    for (const [type, list] of nb.rrs) {
      const cur = rrs.get(type) ?? []
      for (const r of list) if (!cur.some(x => sameData(x.data, r.data))) cur.push(r)
      rrs.set(type, cur)
    }
    for (const [type, list] of nb.extra) {
      const cur = extra.get(type) ?? []
      for (const r of list) if (!cur.some(x => sameRec(x, r))) cur.push(r)
      extra.set(type, cur)
    }
    if (nb.cname !== undefined) cname = nb.cname
  }
  return { rrs, extra, cname, reverse: false }
}

/**
 * PTR records of one reverse name from its claims in owner order: the first ClusterIP claim alone when there is one
 * (a ClusterIP names one service), else every endpoint claim's target once.
 */
export function resolvePtr(name: string, claims: readonly PtrClaim[], ttl: number): NodeView {
  const first = claims.find(c => c.clusterIP)
  const targets: string[] = []
  if (first !== undefined) targets.push(first.target)
  else for (const c of claims) if (!targets.includes(c.target)) targets.push(c.target)
  const recs = targets.map((target): Rec => ({ name, type: QType.PTR, ttl, data: { kind: 'name', target } }))
  return { rrs: new Map([[QType.PTR, recs]]), extra: new Map(), reverse: true }
}

// ---- resolution ---------------------------------------------------------------------------------------------------

/** What resolution reads: nodes by name and the namespace set; `dep` is told every key an answer depends on. */
export interface ZoneLookup {
  readonly params: ZoneParams
  node(name: string): NodeView | undefined
  hasNamespace(ns: string): boolean
}

/** The answer for (name, qtype), chasing CNAMEs inside the zone; null when the name is not ours. */
function resolve(z: ZoneLookup, name: string, qtype: number, deps: string[], depth = 0, chain: readonly string[] = []): Resolution | null {
  const p = z.params
  if (depth > 0) deps.push(name)
  const nb = z.node(name)
  if (nb === undefined || nb.reverse) {
    if (!inZoneName(p, name)) return null
    const pod = p.podRecords ? podRecord(z, name, deps) : undefined
    const soa = [soaRecord(p)]
    if (pod === undefined || pod === null) return { rcode: Rcode.NXDOMAIN, answer: [], authority: soa, additional: [] }
    if (pod.type === qtype) return { rcode: Rcode.NOERROR, answer: [pod], authority: [], additional: [] }
    return { rcode: Rcode.NOERROR, answer: [], authority: soa, additional: [] }
  }
  if (nb.cname !== undefined) {
    const c: Rec = { name, type: QType.CNAME, ttl: p.ttl, data: { kind: 'name', target: nb.cname } }
    if (qtype === QType.CNAME || depth >= MAX_CNAME_CHAIN || chain.includes(nb.cname)) {
      return { rcode: Rcode.NOERROR, answer: [c], authority: [], additional: [] }
    }
    const next = resolve(z, nb.cname, qtype, deps, depth + 1, [...chain, name])
    if (next === null) return { rcode: Rcode.NOERROR, answer: [c], authority: [], additional: [] }
    return { rcode: next.rcode, answer: [c, ...next.answer], authority: next.authority, additional: next.additional }
  }
  const rrs = nb.rrs.get(qtype)
  if (rrs !== undefined && rrs.length > 0) {
    return { rcode: Rcode.NOERROR, answer: rrs, authority: [], additional: nb.extra.get(qtype) ?? [] }
  }
  return { rcode: Rcode.NOERROR, answer: [], authority: [soaRecord(p)], additional: [] }
}

/** `<a-b-c-d>.<ns>.pod.<zone>`: undefined: not a pod name; null: a pod name that does not parse; else the record. */
function podRecord(z: ZoneLookup, name: string, deps: string[]): Rec | null | undefined {
  const p = z.params
  const rel = name.slice(0, name.length - p.origin.length - 1).split('.')
  if (rel.length !== 3 || rel[2] !== 'pod') return undefined
  deps.push(NS_KEY + rel[1]!)
  if (!z.hasNamespace(rel[1]!)) return undefined
  const ip = podLabelAddress(rel[0]!)
  return ip === undefined ? null : { name, type: ip.length === 4 ? QType.A : QType.AAAA, ttl: p.ttl, data: { kind: 'addr', ip } }
}

/** Where the CNAME chain starting at `name` leaves the zone, or null (no CNAME, ends inside, loops, too long). */
function externalOf(z: ZoneLookup, name: string, deps: string[]): string | null {
  let n = name
  const seen = new Set<string>()
  for (let depth = 0; depth <= MAX_CNAME_CHAIN; depth++) {
    if (depth > 0) deps.push(n)
    const nb = z.node(n)
    if (nb === undefined || nb.reverse) return inZoneName(z.params, n) || depth === 0 ? null : n
    if (nb.cname === undefined || seen.has(n)) return null
    seen.add(n)
    n = nb.cname
  }
  return null
}

/** A name's answers: one per qtype it holds (every served type for a CNAME), `other` for the rest. */
export interface EntryAnswers {
  readonly types: readonly number[]
  readonly answers: readonly CompiledAnswer[]
  /** reply for any other qtype; null when other types are not ours (reverse names: ask upstream) */
  readonly other: CompiledAnswer | null
  readonly external: string | null
}

/** Resolve and encode everything one existing name answers; `deps` collects the other names it read. */
export function compileEntry(z: ZoneLookup, name: string, nb: NodeView, deps: string[]): EntryAnswers {
  const types: number[] = []
  const answers: CompiledAnswer[] = []
  if (nb.reverse) {
    types.push(QType.PTR)
    answers.push(encodeAnswer(name, { rcode: 0, answer: nb.rrs.get(QType.PTR) ?? [], authority: [], additional: [] }))
    return { types, answers, other: null, external: null }
  }
  const qtypes = nb.cname !== undefined ? [...SERVED_TYPES, QType.CNAME] : [...nb.rrs.keys()].sort((a, b) => a - b)
  for (const t of qtypes) {
    types.push(t)
    answers.push(encodeAnswer(name, resolve(z, name, t, deps)!))
  }
  const other = encodeAnswer(name, resolve(z, name, NO_SUCH_TYPE, deps)!)
  return { types, answers, other, external: externalOf(z, name, deps) }
}

// ---- encoding -----------------------------------------------------------------------------------------------------

function encodeAnswer(qname: string, r: Resolution): CompiledAnswer {
  const qlen = nameToWire(qname).length
  const w = new MessageWriter(DNS_HEADER_LEN + qlen + 4, qname)
  let serialAt = -1
  for (const rec of r.answer) serialAt = Math.max(serialAt, writeRecord(w, rec))
  const anEnd = w.length
  for (const rec of r.authority) serialAt = Math.max(serialAt, writeRecord(w, rec))
  const arStart = w.length
  for (const rec of r.additional) writeRecord(w, rec)
  const body = w.finish()
  // rotation needs equal-size records that all sit at the question name: the headless A/AAAA sets
  let rotate = 0
  let rrSize = 0
  const n = r.answer.length
  if (n > 1 && r.answer.every(x => x.type === r.answer[0]!.type && x.name === qname && (x.type === QType.A || x.type === QType.AAAA))) {
    rrSize = anEnd / n
    if (Number.isInteger(rrSize) && rrSize === 12 + (r.answer[0]!.type === QType.A ? 4 : 16)) rotate = n
    else rrSize = 0
  }
  return Object.freeze({
    rcode: r.rcode,
    aa: true,
    an: n,
    ns: r.authority.length,
    ar: r.additional.length,
    body,
    arStart,
    rotate,
    rrSize,
    serialAt,
  })
}

/** Writes one record; returns the offset of its SOA serial, or -1 for other types. */
function writeRecord(w: MessageWriter, rec: Rec): number {
  const at = w.beginRecord(rec.name, rec.type, rec.ttl)
  const d = rec.data
  let serialAt = -1
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
      const bytes = Buffer.from(d.text, 'utf8')
      for (let i = 0; i < bytes.length || i === 0; i += 255) {
        const chunk = bytes.subarray(i, i + 255)
        w.u8(chunk.length)
        w.raw(chunk)
      }
      break
    }
    case 'soa':
      w.name(d.mname, true)
      w.name(d.rname, true)
      serialAt = w.length
      w.u32(d.serial)
      w.u32(d.refresh)
      w.u32(d.retry)
      w.u32(d.expire)
      w.u32(d.minimum)
      break
  }
  w.endRdata(at)
  return serialAt
}

// ---- helpers ------------------------------------------------------------------------------------------------------

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

function sameRec(a: Rec, b: Rec): boolean {
  return a.name === b.name && a.type === b.type && sameData(a.data, b.data)
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function cmpBytes(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return a.length - b.length
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!
  return 0
}

/** One record in presentation format, for `tundra dump` and golden tests. */
export function formatRecord(r: Rec): string {
  const d = r.data
  let rdata: string
  switch (d.kind) {
    case 'addr':
      rdata = ipBytesToString(d.ip)
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

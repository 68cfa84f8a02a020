// Pure compile of the desired state into the NAT table the engine reads per packet: kube-proxy's service rules
// (KUBE-SERVICES / KUBE-SVC / KUBE-EXT / KUBE-FW / KUBE-SEP) as flat lookups instead of rule walks.
//
//   compileNat(cluster, config, prev?) -> NatTable     whole state; `prev` keeps service-port ids and reuses
//                                                      unchanged endpoint sets (and their Maglev tables)
//   updateNat(table, changed, deleted?) -> NatTable    copy-on-write: only the named services are recompiled (update.ts)
//   formatNatTable(table) -> string                    order-normalised text for golden tests and `tundra dump`
//                                                      (format.ts)
//
// A table is never mutated after it is returned (the engine and any CLI reader may hold it); one assignment swaps
// it in. Frontends (ClusterIP, NodePort on node addresses, externalIPs, LoadBalancer ingress) are keys
// (address words, proto << 16 | port) of a U32Map whose value is svcPortId * 4 + kind: one probe per new connection
// whatever the number of services.

import type { Cluster, Endpoint, Family, Problem, Protocol, Service, ServicePort, TrafficPolicy } from '../model/cluster'
import { IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../wire/proto'
import { localhostNodePorts, NODEPORT_PRIMARY, nodePortIPs, type CidrContains, type ProxyMode } from '../model/nodeports'
import { addrWords, inCidrList, parseCidrList, wordsToString } from './addr'
import { ipFamily, parseIpWords } from '../wire/addr'
import { ChunkedMap, U32Map } from './hash'
import { parseIpv4 } from '../wire/ipv4'
import { servicePortName } from '../model/names'
import { epCond, HINT_BITS, hintBits, nodeZone, topologyMode, usableEndpoints, type TopologyMode } from '../model/categorize'
import { MAGLEV_DEFAULT_SIZE, isPrime, maglevTable } from './maglev'
import { SCHEDULER_LABEL, SCHED_NAMES, Sched, schedulerId } from './sched'
import type { SchedValue, SchedulerName } from './sched'
import { Arena, EP_LOCAL, EP_TERMINATING, emptySet, endpointNames, epFlags } from './endpoints'
import type { EndpointSet } from './endpoints'

export type { EndpointSet } from './endpoints'
export type { ServiceRef } from './update'

/** localhostNodePorts: the loopback address NodePorts answer on (kube-proxy accepts 127.0.0.0/8; a node process
 * connecting to a NodePort on loopback uses 127.0.0.1) */
const LOCALHOST_NODEPORT = '127.0.0.1'

export interface NatConfig {
  readonly nodeName: string
  /** this node's addresses: NodePorts answer here, masquerade uses the first of each family */
  readonly nodeIPs: readonly string[]
  /** pod CIDRs of the whole cluster (kube-proxy's --cluster-cidr): sources outside them are "off-cluster" */
  readonly clusterCIDRs: readonly string[]
  /** kube-proxy --nodeport-addresses: CIDRs or 'primary' selecting which node IPs serve NodePorts (model/nodeports.ts) */
  readonly nodePortAddresses?: readonly string[]
  /** the kube-proxy mode whose rules tundra follows: an empty nodePortAddresses is every node IP (iptables, the
   * default) or the primary ones (nftables) */
  readonly proxyMode?: ProxyMode
  /** iptables.localhostNodePorts: NodePorts also answer on 127.0.0.1 to the node's own processes (default false) */
  readonly localhostNodePorts?: boolean
  /** kube-proxy --masquerade-all: SNAT every ClusterIP connection */
  readonly masqueradeAll?: boolean
  readonly lb?: 'random' | 'maglev'
  /** echo requests to a ClusterIP: answer them (like IPVS), reject (port unreachable, like nftables) or drop */
  readonly icmpMode?: 'reply' | 'reject' | 'drop'
  /** prime; default 16381 (Cilium's) */
  readonly maglevTableSize?: number
  /** mixed into the Maglev permutation hashes; must match on every node that should agree */
  readonly maglevSeed?: number
  /**
   * endpoint scheduler of every service port without a `tundra.io/scheduler` label (sched.ts); default: mh when lb
   * is maglev, else random (`tundra run` with mode ipvs passes rr, kube-proxy's IPVS default)
   */
  readonly scheduler?: SchedulerName
  /** IPVS mode: a TCP/SCTP endpoint that stops serving keeps its connections (weight 0) instead of a reset */
  readonly gracefulTermination?: boolean
  /** IPVS mode's excludeCIDRs: the connections of an endpoint in them are never flushed or reset */
  readonly excludeCIDRs?: readonly string[]
}

export interface ResolvedNatConfig {
  readonly nodeName: string
  readonly nodeIPs: readonly string[]
  readonly clusterCIDRs: readonly string[]
  readonly nodePortAddresses: readonly string[]
  readonly proxyMode: ProxyMode
  readonly localhostNodePorts: boolean
  readonly masqueradeAll: boolean
  readonly lb: 'random' | 'maglev'
  readonly icmpMode: 'reply' | 'reject' | 'drop'
  readonly maglevTableSize: number
  readonly maglevSeed: number
  readonly scheduler: SchedulerName
  readonly gracefulTermination: boolean
  readonly excludeCIDRs: readonly string[]
}

/** What matched a packet's destination. */
export const FrontendKind = { CLUSTER_IP: 0, NODE_PORT: 1, EXTERNAL_IP: 2, LOAD_BALANCER: 3 } as const
export type FrontendKindValue = (typeof FrontendKind)[keyof typeof FrontendKind]
export const FRONTEND_KIND_NAMES: readonly string[] = ['ClusterIP', 'NodePort', 'ExternalIP', 'LoadBalancer']

/** One service port in one family: kube-proxy's unit (a KUBE-SVC chain). */
export interface SvcPort {
  /** slot in NatTable.svcPorts; stable across compiles while the key exists */
  readonly id: number
  /** never reused: tells the engine a slot now holds a different service port */
  readonly uid: number
  /** "ns/name:portName/TCP/4" */
  readonly key: string
  readonly namespace: string
  readonly name: string
  readonly portName: string
  /** kube-proxy's ServicePortName.String(): "ns/name" or "ns/name:port" */
  readonly servicePortName: string
  readonly protocol: Protocol
  /** IP protocol number */
  readonly proto: number
  readonly family: Family
  readonly clusterIP: string
  readonly port: number
  readonly targetPort: number | string
  readonly nodePort: number
  readonly externalIPs: readonly string[]
  /** ingress IPs with ipMode VIP (short-circuited like kube-proxy does) */
  readonly loadBalancerIPs: readonly string[]
  /** ingress IPs with ipMode Proxy: traffic must go to the load balancer, so no frontend */
  readonly proxyModeIPs: readonly string[]
  /** loadBalancerSourceRanges of this family as a CIDR list (empty: no firewall) */
  readonly sourceRanges: Uint32Array
  /** LB ingress addresses that may also send (kube-proxy's allowFromNode), aw words each */
  readonly allowedLbSources: Uint32Array
  /** seconds; 0 when sessionAffinity is None */
  readonly affinityTimeout: number
  /** endpoint scheduler (sched.ts Sched); absent: random */
  readonly scheduler?: SchedValue
  readonly internalPolicy: TrafficPolicy
  readonly externalPolicy: TrafficPolicy
  /** usable endpoints anywhere: ready (narrowed by topology hints), or serving+terminating when none is ready */
  readonly cluster: EndpointSet
  /** how topology hints narrowed `cluster` ('' not at all): to this node's endpoints, or to its zone's */
  readonly topology: TopologyMode
  /** usable endpoints on this node, with the same fallback (empty unless a traffic policy is Local) */
  readonly local: EndpointSet
  /** what ClusterIP traffic uses (internalTrafficPolicy) */
  readonly internal: EndpointSet
  /** what NodePort / externalIP / LB traffic from outside the cluster uses (externalTrafficPolicy) */
  readonly external: EndpointSet
  /** every serving endpoint (often the cluster set itself): a flow to an endpoint not in here after an update is stale */
  readonly serving: EndpointSet
}

export interface HealthCheck {
  readonly namespace: string
  readonly name: string
  readonly nodePort: number
  /** distinct ready node-local endpoint addresses (the larger family count for dual-stack) */
  readonly localEndpoints: number
}

/** Per-family lookups the engine reads on the hot path. */
export interface FamilyTable {
  readonly family: Family
  readonly aw: number
  /** (addr words, proto << 16 | port) -> svcPortId * 4 + kind */
  readonly fe: U32Map
  /** ClusterIPs (addr words) -> svcPortId of their first port: traffic to them on no defined port is rejected */
  readonly vip: U32Map
  readonly nodeAddrs: Uint32Array
  readonly nodePortAddrs: Uint32Array
  /** masquerade source (aw words); hasSnat false when the node has no address of this family */
  readonly snat: Uint32Array
  readonly hasSnat: boolean
  readonly clusterCidrs: Uint32Array
  /** false: no cluster CIDR of this family, so nothing counts as off-cluster (kube-proxy's no-op local detector) */
  readonly hasClusterCidrs: boolean
}

/** What one service contributed, so updateNat can take it out again. */
export interface CompiledService {
  readonly key: string
  readonly service: Service
  readonly svcPortIds: readonly number[]
  /** frontend keys owned, kw words each (2 for IPv4, 5 for IPv6) */
  readonly fe4: readonly number[]
  readonly fe6: readonly number[]
  readonly vip4: readonly number[]
  readonly vip6: readonly number[]
}

export interface NatTable {
  readonly generation: number
  readonly config: ResolvedNatConfig
  /** by id; undefined for free slots */
  readonly svcPorts: readonly (SvcPort | undefined)[]
  /** by "ns/name" */
  readonly services: ChunkedMap<CompiledService>
  readonly v4: FamilyTable
  readonly v6: FamilyTable
  /** by "ns/name", services with a healthCheckNodePort (LoadBalancer, externalTrafficPolicy Local) */
  readonly healthChecks: ChunkedMap<HealthCheck>
  readonly problems: readonly Problem[]
  /** free ids, ascending */
  readonly freeIds: readonly number[]
  readonly nextUid: number
  /** this node's zone when the table was compiled (its Node's topology.kubernetes.io/zone label; '' unknown):
   * topology hints are matched against it, and updateNat keeps it (a Node change is a full compile) */
  readonly nodeZone: string
  /** updateNat: the only service port ids that differ from generation `from` (lets the engine's swap skip the rest) */
  readonly delta?: NatDelta
}

export interface NatDelta {
  readonly from: number
  /** ascending */
  readonly ids: readonly number[]
}

export function protoNumber(p: Protocol): number {
  return p === 'TCP' ? IPPROTO_TCP : p === 'UDP' ? IPPROTO_UDP : IPPROTO_SCTP
}

export function svcPortKey(namespace: string, name: string, portName: string, protocol: Protocol, family: Family): string {
  return `${namespace}/${name}:${portName}/${protocol}/${family}`
}

export function resolveNatConfig(c: NatConfig): ResolvedNatConfig {
  const m = c.maglevTableSize ?? MAGLEV_DEFAULT_SIZE
  if (!isPrime(m) || m > 65537) throw new RangeError(`maglevTableSize must be a prime up to 65537 (got ${m})`)
  return Object.freeze({
    nodeName: c.nodeName,
    nodeIPs: Object.freeze([...c.nodeIPs]),
    clusterCIDRs: Object.freeze([...c.clusterCIDRs]),
    nodePortAddresses: Object.freeze([...(c.nodePortAddresses ?? [])]),
    proxyMode: c.proxyMode ?? 'iptables',
    localhostNodePorts: c.localhostNodePorts ?? false,
    masqueradeAll: c.masqueradeAll ?? false,
    lb: c.lb ?? 'random',
    icmpMode: c.icmpMode ?? 'reply',
    maglevTableSize: m,
    maglevSeed: c.maglevSeed ?? 0,
    scheduler: c.scheduler ?? (c.lb === 'maglev' ? 'mh' : 'random'),
    gracefulTermination: c.gracefulTermination ?? false,
    excludeCIDRs: Object.freeze([...(c.excludeCIDRs ?? [])]),
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Compile context: the maps being filled and the id allocator.

/** @internal (update.ts) */
export interface Ctx {
  readonly config: ResolvedNatConfig
  /** this node's zone ('' unknown), for topology hints */
  readonly zone: string
  readonly v4: FamilyTable
  readonly v6: FamilyTable
  readonly svcPorts: (SvcPort | undefined)[]
  /** free ids, ascending */
  readonly free: number[]
  nextUid: number
  readonly problems: Problem[]
  /** previous service ports by key, for stable ids and endpoint-set reuse */
  readonly prevByKey: (key: string) => SvcPort | undefined
  readonly arena: Arena
  /** this compile's endpoint-candidate arrays */
  readonly scratch: Scratch
  /**
   * updateNat: ids the old versions of the services being recompiled held. A frontend or VIP still owned by one of
   * them is taken over (value rewritten only if it differs), not reported as a conflict; what nobody took over is
   * removed afterwards. So an update that changes only endpoints writes nothing to the maps and they stay shared.
   */
  readonly replaceable?: ReadonlySet<number>
}

function allocId(ctx: Ctx, key: string): { id: number; uid: number } {
  const prev = ctx.prevByKey(key)
  if (prev !== undefined && ctx.svcPorts[prev.id] === undefined) {
    const fi = ctx.free.indexOf(prev.id)
    if (fi >= 0) ctx.free.splice(fi, 1)
    return { id: prev.id, uid: prev.uid }
  }
  const id = ctx.free.length > 0 ? ctx.free.shift()! : ctx.svcPorts.length
  if (id === ctx.svcPorts.length) ctx.svcPorts.push(undefined)
  return { id, uid: ctx.nextUid++ }
}

function cidrHolds(family: Family): CidrContains {
  const w = new Uint32Array(4)
  return (cidr, ip) => {
    const c = parseCidrList([cidr], family, () => {})
    if (c.length === 0 || ipFamily(ip) !== family) return false
    parseIpWords(ip, family, w, 0)
    return inCidrList(c, addrWords(family), w, 0)
  }
}

/** Whether NodePorts also answer on 127.0.0.1 (model/nodeports.ts): what the compile adds and the wiring steers. */
export function servesLocalhostNodePorts(config: ResolvedNatConfig): boolean {
  const own4 = config.nodeIPs.find(ip => ipFamily(ip) === 4)
  return localhostNodePorts(config.localhostNodePorts, config.nodePortAddresses, 4, config.proxyMode, own4, cidrHolds(4))
}

function newFamilyTable(family: Family, config: ResolvedNatConfig, bad: (what: string, v: string) => void, expected: number): FamilyTable {
  const aw = addrWords(family)
  const nodeAddrList: number[] = []
  const w = new Uint32Array(4)
  for (const ip of config.nodeIPs) {
    const f = ipFamily(ip)
    if (f === undefined) {
      bad('nodeIPs', ip)
      continue
    }
    if (f !== family) continue
    parseIpWords(ip, family, w, 0)
    for (let i = 0; i < aw; i++) nodeAddrList.push(w[i]!)
  }
  const nodeAddrs = Uint32Array.from(nodeAddrList)
  // Which node addresses serve NodePorts: the rule the iptables/nftables renderers follow too (model/nodeports.ts).
  parseCidrList(
    config.nodePortAddresses.filter(c => c !== NODEPORT_PRIMARY),
    family,
    c => bad('nodePortAddresses', c),
  )
  const own = config.nodeIPs.filter(ip => ipFamily(ip) === family)
  const npList = nodePortIPs(config.nodePortAddresses, family, config.proxyMode, own, cidrHolds(family)) ?? own
  if (family === 4 && servesLocalhostNodePorts(config)) npList.push(LOCALHOST_NODEPORT)
  const np: number[] = []
  for (const ip of npList) {
    parseIpWords(ip, family, w, 0)
    for (let i = 0; i < aw; i++) np.push(w[i]!)
  }
  const nodePortAddrs = Uint32Array.from(np)
  const clusterCidrs = parseCidrList(config.clusterCIDRs, family, c => bad('clusterCIDRs', c))
  return {
    family,
    aw,
    fe: new U32Map(aw + 1, 1, expected),
    vip: new U32Map(aw, 1, expected),
    nodeAddrs,
    nodePortAddrs,
    snat: nodeAddrs.length >= aw ? nodeAddrs.slice(0, aw) : new Uint32Array(aw),
    hasSnat: nodeAddrs.length >= aw,
    clusterCidrs,
    hasClusterCidrs: clusterCidrs.length > 0,
  }
}

/** @internal (update.ts) */
export function cloneFamilyTable(t: FamilyTable): FamilyTable {
  return { ...t, fe: t.fe.clone(), vip: t.vip.clone() }
}

// ---------------------------------------------------------------------------------------------------------------
// Endpoints

// Endpoint candidates of the service port being compiled live in scratch arrays, not objects (a 20 000-service
// compile has 200 000 of them): entry i is address words addr[4i..4i+3], port[i], flags[i] (EP_LOCAL |
// EP_TERMINATING), bits[i] (READY | SERVING | the topology hint bits of model/categorize.ts hintBits). `order` lists them sorted and de-duplicated; a selection (`usable`) is
// a list of entry indexes. Each compile (compileNat, updateNat) owns one Scratch through its Ctx, so compiles share no
// state and may run side by side.
const READY = 1
const SERVING = 2

/** @internal (update.ts) The arrays one compile reuses across its service ports. */
export class Scratch {
  private cap = 0
  addr = new Uint32Array(0)
  port = new Uint32Array(0)
  flags = new Uint8Array(0)
  bits = new Uint8Array(0)
  order = new Int32Array(0)
  selCluster = new Int32Array(0)
  selLocal = new Int32Array(0)
  selServing = new Int32Array(0)
  /** address words of one parsed address */
  readonly words = new Uint32Array(4)
  /** the cluster IP being compiled, as words */
  readonly vip = new Uint32Array(4)

  reserve(n: number): void {
    if (n <= this.cap) return
    let c = Math.max(64, this.cap)
    while (c < n) c *= 2
    this.cap = c
    this.addr = new Uint32Array(c * 4)
    this.port = new Uint32Array(c)
    this.flags = new Uint8Array(c)
    this.bits = new Uint8Array(c)
    this.order = new Int32Array(c)
    this.selCluster = new Int32Array(c)
    this.selLocal = new Int32Array(c)
    this.selServing = new Int32Array(c)
  }

  /** Orders entries by address words, then port. */
  readonly compare = (a: number, b: number): number => {
    const d = this.addr
    const x = a * 4
    const y = b * 4
    return d[x]! - d[y]! || d[x + 1]! - d[y + 1]! || d[x + 2]! - d[y + 2]! || d[x + 3]! - d[y + 3]! || this.port[a]! - this.port[b]!
  }

  /** Condition bits (model/categorize.ts) of candidate order[j]. */
  readonly cond = (j: number): number => {
    const i = this.order[j]!
    const b = this.bits[i]!
    const f = this.flags[i]!
    return epCond((b & READY) !== 0, (b & SERVING) !== 0, (f & EP_TERMINATING) !== 0, (f & EP_LOCAL) !== 0, b & HINT_BITS)
  }

  /**
   * kube-proxy's CategorizeEndpoints (model/categorize.ts) over order[0..n): writes the chosen entries into `out`;
   * returns how many.
   */
  usable(n: number, localOnly: boolean, out: Int32Array): number {
    const k = usableEndpoints(n, this.cond, localOnly, out)
    for (let j = 0; j < k; j++) out[j] = this.order[out[j]!]!
    return k
  }

  /** The set's word for entry i: port and flags. */
  epWord(i: number): number {
    return (this.port[i]! | (this.flags[i]! << 16)) >>> 0
  }
}

/**
 * The endpoint's port for a service port: EndpointSlice ports carry the service port's name (the slice controller
 * resolved targetPort per pod); failing that, a container port named like a string targetPort; failing that, a
 * numeric targetPort when the endpoint lists no ports at all. -1: the endpoint does not serve this port.
 */
export function endpointPort(ep: Endpoint, sp: ServicePort): number {
  let byTarget = -1
  for (const p of ep.ports) {
    if (p.protocol !== sp.protocol) continue
    if (p.name === sp.name) return p.port
    if (typeof sp.targetPort === 'string' && p.name === sp.targetPort) byTarget = p.port
  }
  if (byTarget >= 0) return byTarget
  if (ep.ports.length === 0 && typeof sp.targetPort === 'number') return sp.targetPort === 0 ? sp.port : sp.targetPort
  return -1
}

/** Whether `set` holds exactly entries sel[0..n) (addresses, ports, flags). */
function sameSet(sc: Scratch, set: EndpointSet | undefined, sel: Int32Array, n: number, aw: number): set is EndpointSet {
  if (set === undefined || set.count !== n || set.aw !== aw) return false
  const cAddr = sc.addr
  const d = set.data
  let o = set.off
  for (let j = 0; j < n; j++) {
    const i = sel[j]!
    if (d[o] !== cAddr[i * 4]) return false
    if (aw === 4 && (d[o + 1] !== cAddr[i * 4 + 1] || d[o + 2] !== cAddr[i * 4 + 2] || d[o + 3] !== cAddr[i * 4 + 3])) return false
    if (d[o + aw] !== sc.epWord(i)) return false
    o += aw + 1
  }
  return true
}

const EMPTY_U32: Uint32Array = new Uint32Array(0)
const NO_REUSE: readonly (EndpointSet | undefined)[] = Object.freeze([])
const EMPTY_STRINGS: readonly string[] = Object.freeze([])
const EMPTY_NUMBERS: readonly number[] = Object.freeze([])

function buildSet(ctx: Ctx, sel: Int32Array, n: number, family: Family, reuse: readonly (EndpointSet | undefined)[], mh: boolean): EndpointSet {
  if (n === 0) return emptySet(family)
  const config = ctx.config
  const aw = family === 4 ? 1 : 4
  const wantMaglev = (mh || config.lb === 'maglev') && n < config.maglevTableSize
  const sc = ctx.scratch
  const cAddr = sc.addr
  for (const r of reuse) {
    if (sameSet(sc, r, sel, n, aw) && (!wantMaglev || (r.maglev !== null && r.maglev.length === config.maglevTableSize))) return r
  }
  const stride = aw + 1
  const data = ctx.arena.alloc(n * stride)
  const off = ctx.arena.at
  let o = off
  for (let j = 0; j < n; j++) {
    const i = sel[j]!
    data[o] = cAddr[i * 4]!
    if (aw === 4) {
      data[o + 1] = cAddr[i * 4 + 1]!
      data[o + 2] = cAddr[i * 4 + 2]!
      data[o + 3] = cAddr[i * 4 + 3]!
    }
    data[o + aw] = sc.epWord(i)
    o += stride
  }
  const set: { count: number; family: Family; aw: number; data: Uint32Array; off: number; maglev: Uint16Array | null } = {
    count: n,
    family,
    aw,
    data,
    off,
    maglev: null,
  }
  if (wantMaglev) {
    // The table depends only on the names: share it with a reused set of the same endpoints.
    for (const r of reuse) {
      if (r !== undefined && r.maglev !== null && r.maglev.length === config.maglevTableSize && r.count === n && sameAddrsPorts(r, set)) {
        set.maglev = r.maglev
        break
      }
    }
    set.maglev ??= maglevTable(endpointNames(set), config.maglevTableSize, config.maglevSeed)
  }
  return Object.freeze(set)
}

/** Same endpoints (addresses and ports) in the same order, flags aside. */
function sameAddrsPorts(a: EndpointSet, b: EndpointSet): boolean {
  if (a.count !== b.count || a.aw !== b.aw) return false
  const stride = a.aw + 1
  for (let i = 0; i < a.count * stride; i++) {
    const x = a.data[a.off + i]!
    const y = b.data[b.off + i]!
    if (i % stride === a.aw ? (x & 0xffff) !== (y & 0xffff) : x !== y) return false
  }
  return true
}

// ---------------------------------------------------------------------------------------------------------------
// One service

/** @internal (update.ts) */
export function serviceKey(namespace: string, name: string): string {
  return `${namespace}/${name}`
}

/** @internal (format.ts) */
export function protoPort(proto: number, port: number): number {
  return ((proto << 16) | port) >>> 0
}

/** Inserts a frontend (address words at (words, wo)); reports a problem when another service port owns it. */
function addFrontend(
  ctx: Ctx,
  ft: FamilyTable,
  words: Uint32Array,
  wo: number,
  proto: number,
  port: number,
  value: number,
  owned: number[],
  svcKey: string,
  what: string,
): void {
  const fe = ft.fe
  const aw = ft.aw
  for (let i = 0; i < aw; i++) fe.key[i] = words[wo + i]!
  fe.key[aw] = protoPort(proto, port)
  const s = fe.insert()
  if (!fe.inserted) {
    const owner = Math.floor(fe.vals[s]! / 4)
    if (ctx.replaceable?.has(owner) === true) {
      fe.setValAt(s, 0, value)
      for (let i = 0; i <= aw; i++) owned.push(fe.key[i]!)
      return
    }
    const other = ctx.svcPorts[owner]
    ctx.problems.push({
      object: `Service ${svcKey}`,
      field: what,
      reason: `${wordsToString(words, wo, ft.family)}:${port} is already a frontend of ${other?.servicePortName ?? 'another service'}`,
    })
    return
  }
  fe.vals[s] = value
  for (let i = 0; i <= aw; i++) owned.push(fe.key[i]!)
}

/** Addresses of `family` among `ips`. */
function ofFamily(ips: readonly string[], family: Family): readonly string[] {
  if (ips.length === 0) return EMPTY_STRINGS
  const out: string[] = []
  for (const ip of ips) if (ipFamily(ip) === family) out.push(ip)
  return out.length === 0 ? EMPTY_STRINGS : out
}

/**
 * Endpoint candidates of one service port (this family, serving the port) into the scratch arrays; order[0..n)
 * sorted and de-duplicated by address:port. Returns n.
 */
function candidates(ctx: Ctx, svc: Service, sp: ServicePort, family: Family, problem: (f: string, r: string) => void): number {
  const sc = ctx.scratch
  sc.reserve(svc.endpoints.length)
  const { addr: cAddr, port: cPort, flags: cFlags, bits: cBits, order, words: W, compare } = sc
  const nodeName = ctx.config.nodeName
  const zone = ctx.zone
  let n = 0
  for (const ep of svc.endpoints) {
    if (ep.family !== family) continue
    const port = endpointPort(ep, sp)
    if (port <= 0 || port > 65535) continue
    const a = n * 4
    if (family === 4) {
      const a0 = parseIpv4(ep.ip)
      if (a0 === undefined) {
        problem('endpoints', `${JSON.stringify(ep.ip)} is not an IPv4 address`)
        continue
      }
      cAddr[a] = a0
      cAddr[a + 1] = 0
      cAddr[a + 2] = 0
      cAddr[a + 3] = 0
    } else {
      if (parseIpWords(ep.ip, 6, W, 0) === undefined) {
        problem('endpoints', `${JSON.stringify(ep.ip)} is not an IPv6 address`)
        continue
      }
      cAddr[a] = W[0]!
      cAddr[a + 1] = W[1]!
      cAddr[a + 2] = W[2]!
      cAddr[a + 3] = W[3]!
    }
    const local = ep.nodeName !== undefined && ep.nodeName === nodeName
    cPort[n] = port
    cFlags[n] = (local ? EP_LOCAL : 0) | (ep.terminating ? EP_TERMINATING : 0)
    cBits[n] = (ep.ready ? READY : 0) | (ep.serving ? SERVING : 0) | hintBits(ep.zoneHints, ep.nodeHints, zone, nodeName)
    order[n] = n
    n++
  }
  // Insertion sort: slices usually arrive sorted or nearly; large ones go through Array.sort.
  if (n > 64) {
    const idx = Array.from(order.subarray(0, n)).sort(compare)
    order.set(idx)
  } else {
    for (let j = 1; j < n; j++) {
      const v = order[j]!
      let k = j - 1
      while (k >= 0 && compare(order[k]!, v) > 0) {
        order[k + 1] = order[k]!
        k--
      }
      order[k + 1] = v
    }
  }
  // Duplicates (the same address in two slices) are adjacent now; keep the first.
  let w = 0
  for (let r = 0; r < n; r++) {
    if (w > 0 && compare(order[w - 1]!, order[r]!) === 0) continue
    order[w++] = order[r]!
  }
  return w
}

/** One family's share of a service: its cluster IP (as words in ctx.scratch.vip) and external addresses. */
interface FamilyPart {
  readonly family: Family
  readonly ft: FamilyTable
  readonly clusterIP: string
  readonly externalIPs: readonly string[]
  readonly lbIPs: readonly string[]
  readonly proxyIPs: readonly string[]
  readonly sourceRanges: Uint32Array
  readonly allowed: Uint32Array
}

/** The scheduler of a service: its `tundra.io/scheduler` label (a bad value is a problem), else the node's. */
function serviceScheduler(config: ResolvedNatConfig, svc: Service, problem: (field: string, reason: string) => void): SchedValue {
  const own = svc.labels[SCHEDULER_LABEL]
  if (own !== undefined) {
    const id = schedulerId(own)
    if (id !== undefined) return id
    problem(`metadata.labels[${SCHEDULER_LABEL}]`, `${JSON.stringify(own)} is not a scheduler (${SCHED_NAMES.join(', ')})`)
  }
  return schedulerId(config.scheduler) ?? Sched.RANDOM
}

/** @internal (update.ts) */
export function compileService(ctx: Ctx, svc: Service, key: string): CompiledService {
  const ids: number[] = []
  const owned4: number[] = []
  const owned6: number[] = []
  const vips4: number[] = []
  const vips6: number[] = []
  const done = (): CompiledService =>
    Object.freeze({
      key,
      service: svc,
      svcPortIds: ids,
      fe4: owned4.length > 0 ? owned4 : EMPTY_NUMBERS,
      fe6: owned6.length > 0 ? owned6 : EMPTY_NUMBERS,
      vip4: vips4.length > 0 ? vips4 : EMPTY_NUMBERS,
      vip6: vips6.length > 0 ? vips6 : EMPTY_NUMBERS,
    })
  // Headless and ExternalName services are DNS-only: no NAT.
  if (svc.type === 'ExternalName' || svc.headless) return done()
  const problem = (field: string, reason: string): void => {
    ctx.problems.push({ object: `Service ${key}`, field, reason })
  }
  const scheduler = serviceScheduler(ctx.config, svc, problem)
  let seen4 = false
  let seen6 = false
  for (const cip of svc.clusterIPs) {
    const family = ipFamily(cip)
    if (family === undefined) {
      problem('spec.clusterIPs', `${JSON.stringify(cip)} is not an IP address`)
      continue
    }
    if (family === 4 ? seen4 : seen6) continue
    if (family === 4) seen4 = true
    else seen6 = true
    const part = familyPart(ctx, svc, cip, family, problem)
    const owned = family === 4 ? owned4 : owned6
    for (const sp of svc.ports) ids.push(compilePort(ctx, svc, sp, part, key, owned, scheduler, problem))
    if (svc.ports.length > 0) claimVip(ctx, part.ft, ids[ids.length - svc.ports.length]!, family === 4 ? vips4 : vips6)
  }
  return done()
}

/** The family's cluster IP (parsed into ctx.scratch.vip) and the addresses of this family for external frontends. */
function familyPart(ctx: Ctx, svc: Service, cip: string, family: Family, problem: (f: string, r: string) => void): FamilyPart {
  const ft = family === 4 ? ctx.v4 : ctx.v6
  const aw = ft.aw
  const VIP = ctx.scratch.vip
  parseIpWords(cip, family, VIP, 0)
  const clusterIP = family === 4 ? cip : wordsToString(VIP, 0, family)
  const externalIPs = ofFamily(svc.externalIPs, family)
  let lbIPs: readonly string[] = EMPTY_STRINGS
  let proxyIPs: readonly string[] = EMPTY_STRINGS
  if (svc.type === 'LoadBalancer' && svc.loadBalancerIngress.length > 0) {
    lbIPs = ofFamily(
      svc.loadBalancerIngress.filter(i => i.ipMode !== 'Proxy').map(i => i.ip),
      family,
    )
    proxyIPs = ofFamily(
      svc.loadBalancerIngress.filter(i => i.ipMode === 'Proxy').map(i => i.ip),
      family,
    )
  }
  let sourceRanges: Uint32Array = EMPTY_U32
  let allowed: Uint32Array = EMPTY_U32
  if (svc.loadBalancerSourceRanges.length > 0) {
    sourceRanges = parseCidrList(svc.loadBalancerSourceRanges, family, c => problem('spec.loadBalancerSourceRanges', `${JSON.stringify(c)} is not a CIDR`))
    // kube-proxy's allowFromNode: when a range covers a node IP, the LB's own addresses may send too.
    let nodeCovered = false
    for (let r = 0; r < ft.nodeAddrs.length; r += aw) if (inCidrList(sourceRanges, aw, ft.nodeAddrs, r)) nodeCovered = true
    if (nodeCovered && lbIPs.length > 0) {
      allowed = new Uint32Array(lbIPs.length * aw)
      lbIPs.forEach((ip, i) => parseIpWords(ip, family, allowed, i * aw))
    }
  }
  return { family, ft, clusterIP, externalIPs, lbIPs, proxyIPs, sourceRanges, allowed }
}

/**
 * One service port of one family: its endpoint sets (cluster, local, serving; reused from the previous version when
 * equal), its SvcPort under a stable id, and its frontends (recorded in `owned`). Returns the id.
 */
function compilePort(
  ctx: Ctx,
  svc: Service,
  sp: ServicePort,
  part: FamilyPart,
  key: string,
  owned: number[],
  scheduler: SchedValue,
  problem: (f: string, r: string) => void,
): number {
  const mh = scheduler === Sched.MH
  const { family, ft } = part
  const sc = ctx.scratch
  const proto = protoNumber(sp.protocol)
  const spKey = svcPortKey(svc.namespace, svc.name, sp.name, sp.protocol, family)
  const prev = ctx.prevByKey(spKey)
  const { id, uid } = allocId(ctx, spKey)

  const needLocal = svc.internalTrafficPolicy === 'Local' || svc.externalTrafficPolicy === 'Local'
  const n = candidates(ctx, svc, sp, family, problem)
  const reuse = prev === undefined ? NO_REUSE : [prev.cluster, prev.local, prev.serving]
  const cluster = buildSet(ctx, sc.selCluster, sc.usable(n, false, sc.selCluster), family, reuse, mh)
  const local = needLocal ? buildSet(ctx, sc.selLocal, sc.usable(n, true, sc.selLocal), family, [cluster, ...reuse], mh) : emptySet(family)
  let nServing = 0
  for (let j = 0; j < n; j++) if ((sc.bits[sc.order[j]!]! & SERVING) !== 0) sc.selServing[nServing++] = sc.order[j]!
  const serving = nServing === n && cluster.count === n ? cluster : buildSet(ctx, sc.selServing, nServing, family, [cluster, ...reuse], mh)

  const spc: SvcPort = Object.freeze({
    id,
    uid,
    key: spKey,
    namespace: svc.namespace,
    name: svc.name,
    portName: sp.name,
    servicePortName: servicePortName(svc.namespace, svc.name, sp.name),
    protocol: sp.protocol,
    proto,
    family,
    clusterIP: part.clusterIP,
    port: sp.port,
    targetPort: sp.targetPort,
    nodePort: svc.type === 'NodePort' || svc.type === 'LoadBalancer' ? sp.nodePort : 0,
    externalIPs: part.externalIPs,
    loadBalancerIPs: part.lbIPs,
    proxyModeIPs: part.proxyIPs,
    sourceRanges: part.sourceRanges,
    allowedLbSources: part.allowed,
    affinityTimeout: svc.affinityTimeout,
    scheduler,
    internalPolicy: svc.internalTrafficPolicy,
    externalPolicy: svc.externalTrafficPolicy,
    cluster,
    topology: topologyMode(n, sc.cond),
    local,
    internal: svc.internalTrafficPolicy === 'Local' ? local : cluster,
    external: svc.externalTrafficPolicy === 'Local' ? local : cluster,
    serving,
  })
  ctx.svcPorts[id] = spc

  const W = sc.words
  addFrontend(ctx, ft, sc.vip, 0, proto, sp.port, id * 4 + FrontendKind.CLUSTER_IP, owned, key, 'spec.clusterIPs')
  if (spc.nodePort > 0) {
    for (let r = 0; r < ft.nodePortAddrs.length; r += ft.aw) {
      addFrontend(ctx, ft, ft.nodePortAddrs, r, proto, spc.nodePort, id * 4 + FrontendKind.NODE_PORT, owned, key, 'spec.ports.nodePort')
    }
  }
  for (const ip of part.externalIPs) {
    parseIpWords(ip, family, W, 0)
    addFrontend(ctx, ft, W, 0, proto, sp.port, id * 4 + FrontendKind.EXTERNAL_IP, owned, key, 'spec.externalIPs')
  }
  for (const ip of part.lbIPs) {
    parseIpWords(ip, family, W, 0)
    addFrontend(ctx, ft, W, 0, proto, sp.port, id * 4 + FrontendKind.LOAD_BALANCER, owned, key, 'status.loadBalancer.ingress')
  }
  return id
}

/**
 * The cluster IP itself (words in ctx.scratch.vip), owned by the service's first port id `first`: any other port
 * (or protocol) is rejected, echo requests handled per icmpMode. Records the words in `vips` when this service owns it.
 */
function claimVip(ctx: Ctx, ft: FamilyTable, first: number, vips: number[]): void {
  const VIP = ctx.scratch.vip
  const vip = ft.vip
  const aw = ft.aw
  for (let i = 0; i < aw; i++) vip.key[i] = VIP[i]!
  const s = vip.insert()
  if (vip.inserted || ctx.replaceable?.has(vip.vals[s]!) === true) {
    vip.setValAt(s, 0, first)
    for (let i = 0; i < aw; i++) vips.push(VIP[i]!)
  }
}

/** @internal (update.ts) */
export function healthCheckOf(table: { svcPorts: readonly (SvcPort | undefined)[] }, cs: CompiledService): HealthCheck | undefined {
  const svc = cs.service
  if (svc.healthCheckNodePort <= 0 || svc.type !== 'LoadBalancer' || svc.externalTrafficPolicy !== 'Local') return undefined
  // kube-proxy counts distinct ready local endpoint IPs per service (terminating ones fail the check on purpose).
  const byFamily = new Map<Family, Set<string>>()
  for (const id of cs.svcPortIds) {
    const sp = table.svcPorts[id]
    if (sp === undefined) continue
    const set = byFamily.get(sp.family) ?? new Set<string>()
    byFamily.set(sp.family, set)
    const l = sp.local
    for (let i = 0; i < l.count; i++) {
      if ((epFlags(l, i) & EP_TERMINATING) === 0) set.add(wordsToString(l.data, l.off + i * (l.aw + 1), sp.family))
    }
  }
  let n = 0
  for (const s of byFamily.values()) n = Math.max(n, s.size)
  return Object.freeze({ namespace: svc.namespace, name: svc.name, nodePort: svc.healthCheckNodePort, localEndpoints: n })
}

// ---------------------------------------------------------------------------------------------------------------
// Entry points

/** @internal (update.ts) */
export function finish(ctx: Ctx, generation: number, services: ChunkedMap<CompiledService>, healthChecks: ChunkedMap<HealthCheck>, delta?: NatDelta): NatTable {
  return Object.freeze({
    ...(delta === undefined ? {} : { delta }),
    generation,
    config: ctx.config,
    svcPorts: ctx.svcPorts,
    services,
    v4: Object.freeze(ctx.v4),
    v6: Object.freeze(ctx.v6),
    healthChecks,
    problems: Object.freeze(ctx.problems),
    freeIds: Object.freeze([...ctx.free]),
    nextUid: ctx.nextUid,
    nodeZone: ctx.zone,
  })
}

/**
 * Compiles the whole desired state. With `prev`, service ports keep their ids (so conntrack and affinity state keyed
 * by id survive the swap) and unchanged endpoint sets are shared, Maglev tables included.
 */
export function compileNat(cluster: Cluster, config: NatConfig | ResolvedNatConfig, prev?: NatTable): NatTable {
  const rc = resolveNatConfig(config)
  const problems: Problem[] = []
  const bad = (what: string, v: string): void => {
    problems.push({ object: 'config', field: what, reason: `${JSON.stringify(v)} is not valid` })
  }
  let nPorts = 0
  for (const s of cluster.services) nPorts += s.ports.length
  // Ids only name service ports, so they survive any config change.
  const prevIndex = new Map<string, SvcPort>()
  if (prev !== undefined) for (const sp of prev.svcPorts) if (sp !== undefined) prevIndex.set(sp.key, sp)
  const ctx: Ctx = {
    config: rc,
    zone: nodeZone(cluster, rc.nodeName),
    v4: newFamilyTable(4, rc, bad, nPorts + (nPorts >> 1)),
    v6: newFamilyTable(6, rc, () => undefined, 8),
    svcPorts: [],
    free: [],
    nextUid: prev?.nextUid ?? 1,
    problems,
    prevByKey: k => prevIndex.get(k),
    arena: new Arena(Math.min(65536, Math.max(1024, nPorts * 12))),
    scratch: new Scratch(),
  }
  // Reserve every previous id so new keys never take a slot a surviving key will claim.
  if (prev !== undefined) {
    for (let i = 0; i < prev.svcPorts.length; i++) ctx.svcPorts.push(undefined)
    const claimed = new Set<number>()
    for (const s of cluster.services) {
      for (const cip of s.clusterIPs) {
        const f = ipFamily(cip)
        if (f === undefined) continue
        for (const p of s.ports) {
          const sp = prevIndex.get(svcPortKey(s.namespace, s.name, p.name, p.protocol, f))
          if (sp !== undefined) claimed.add(sp.id)
        }
      }
    }
    for (let i = 0; i < prev.svcPorts.length; i++) if (!claimed.has(i)) ctx.free.push(i)
  }
  const keyed = cluster.services.map(s => ({ k: serviceKey(s.namespace, s.name), s }))
  keyed.sort((a, b) => cmp(a.k, b.k))
  const entries: [string, CompiledService][] = []
  const hcs: [string, HealthCheck][] = []
  let last = ''
  for (const { k, s } of keyed) {
    if (k === last) {
      problems.push({ object: `Service ${k}`, field: 'metadata.name', reason: 'duplicate service; first one kept' })
      continue
    }
    last = k
    const cs = compileService(ctx, s, k)
    entries.push([k, cs])
    const hc = healthCheckOf(ctx, cs)
    if (hc !== undefined) hcs.push([k, hc])
  }
  return finish(ctx, (prev?.generation ?? 0) + 1, ChunkedMap.from(entries), ChunkedMap.from(hcs))
}

/** String order (not locale order): deterministic across machines. */
export function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

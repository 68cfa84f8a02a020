// The packet thread's half of an agent: the device, the packet loop, the NAT engine (which owns conntrack) and the
// cluster DNS answerer. It does per-packet work and installs the images the control thread sends (crossing.ts,
// ARCHITECTURE.md); every request it serves is bounded (counters, one conntrack chunk, one lookup, a batch of deletes),
// never a walk of a whole table. Stale flows after an install are flushed a slice at a time between batches.
import type { Device } from '../device/device'
import { Dataplane, dropNames, type Net4, type Net6, type Peer } from '../dataplane/loop'
import { Capture } from '../dataplane/capture'
import { FlowRing } from '../dataplane/observe'
import { NatEngine, type NatEngineOptions } from '../nat/engine'
import { compileNat, type ResolvedNatConfig } from '../nat/compile'
import { CT_CHUNK } from '../nat/ctview'
import { monoSeconds } from '../nat/clock'
import { parseIpv6 } from '../wire/ipv6'
import { DnsServer, type DnsServerOptions } from '../dns/server'
import { natCounterRecord } from '../metrics/nat'
import type { Family } from '../model/cluster'
import type { NatInstall, ZoneInstall } from './crossing'
import { Transfer } from './link'
import type { TupleQuery } from './view'

/** Everything the packet thread needs to start, as plain data and transferable images. */
export interface PacketInit {
  readonly loop: {
    nodeIp: number
    dnsIp: number
    dnsPort: number
    vni: number
    peers: readonly PeerSpec[]
    /** what a pod may not send from and where nothing may loop (plain prefixes, a handful: never cluster-sized) */
    podNet?: Net4
    clusterNet?: Net4
    serviceNet?: Net4
    serviceNet6?: Net6
    icmpRate?: { perSecond: number; burst: number }
  }
  readonly engine: NatEngineOptions
  readonly natConfig: ResolvedNatConfig
  readonly dns: DnsServerOptions
  /** the first tables */
  readonly nat: NatInstall
  readonly zone: ZoneInstall
  /** a conntrack snapshot, prepared against the first NAT table by the control thread (prepareRestore chunks) */
  readonly restore?: readonly ArrayBuffer[]
  /** a predecessor's wiring was in place: connections it carried may arrive with no entry (REPLY_PICKUP_SECONDS) */
  readonly restarted?: boolean
}

/** A VXLAN peer as plain data; the packet side makes the Peer. */
export interface PeerSpec {
  readonly net: number
  readonly mask: number
  readonly ip: number
  readonly mac: Uint8Array
}

/** One original tuple to delete (conntrack -D after the control thread matched a listing): a 5-tuple as trace asks. */
export type TupleRef = TupleQuery

/** Requests the control thread makes; each is answered with bounded work. */
export type PacketRequest =
  | { op: 'counters' }
  | { op: 'dnsMetrics' }
  | { op: 'serviceCounters' }
  | { op: 'observe'; max: number }
  | { op: 'endpoints'; release: readonly number[] }
  | { op: 'ctChunk'; cursor: number; max: number }
  | { op: 'ctDelete'; tuples: readonly TupleRef[] }
  | { op: 'lookups'; q: TupleQuery; svcPortIds: readonly { id: number; family: Family }[] }
  | { op: 'capture'; path: string; addresses: number[]; pre: boolean; post: boolean; maxRecords: number; durationMs: number }
  | { op: 'peers'; peers: readonly PeerSpec[] }
  | { op: 'nat'; install: NatInstall }
  | { op: 'zone'; install: ZoneInstall }

/**
 * Conntrack slots one stale-flow flush step visits. A turn of the event loop runs steps until FLUSH_TURN_MS has
 * passed, so the time a turn holds the packet thread does not depend on how fast the code runs: the first flushes
 * after a start run before V8 has optimised the flush, and at 20 000 services one 2048-slot step then took 2-6.5 ms
 * (the install's own first step 8.7 ms; 0.25-0.4 ms once optimised), while packets waited (bench/README "Churn
 * stalls"). A 256-slot step is at most ~1 ms even then.
 */
const FLUSH_SLICE = 256
/** How long one event-loop turn of stale-flow flushing may run before packets get their turn. */
const FLUSH_TURN_MS = 0.25

/**
 * After a restart, for this long an endpoint's packet of a connection with no conntrack entry is re-adopted (its
 * entry was lost with the last process: younger than the last snapshot, or no snapshot). Long enough for the
 * endpoints' retransmissions to come; short, because at other times such a packet may be a direct pod connection's.
 */
const REPLY_PICKUP_SECONDS = 30

/** Flow records the observe ring holds; one observe request drains at most this many. */
const OBSERVE_RING = 8192
/** Nobody asked for flows this long: the packet path stops recording them. */
const OBSERVE_IDLE_MS = 10_000

/** At most this many tuples in one ctDelete request (the control thread sends more in several). */
export const CT_DELETE_BATCH = 1024

/** The node's first IPv6 address as bytes (the source of the ICMPv6 errors the loop sends), or nothing. */
function nodeIp6Of(c: ResolvedNatConfig): { nodeIp6?: Uint8Array } {
  const out = new Uint8Array(16)
  for (const ip of c.nodeIPs) if (ip.includes(':') && parseIpv6(ip, out, 0) !== undefined) return { nodeIp6: out }
  return {}
}

/** At most this many endpoint slots freed by one endpoints request. */
export const ENDPOINT_RELEASE_BATCH = 1024

/** Counter names whose value is the same table seen from every packet thread: taken once, not summed. */
const SHARED_COUNTERS = new Set([
  'conntrack_entries',
  'conntrack_entries_ipv4',
  'conntrack_entries_ipv6',
  'conntrack_max_ipv4',
  'conntrack_max_ipv6',
  'bounds',
  'names',
  'serial',
])

/**
 * One reply out of the replies of several packet threads to the same request (counters, dnsMetrics,
 * serviceCounters): numbers and number arrays summed by name, except what every thread sees alike (shared conntrack
 * sizes, the zone, histogram bounds), which is taken from the first.
 */
export function mergeReplies(replies: readonly unknown[]): unknown {
  const merge = (a: unknown, b: unknown, key: string): unknown => {
    if (SHARED_COUNTERS.has(key)) return a
    if (typeof a === 'number' && typeof b === 'number') return a + b
    if ((Array.isArray(a) || a instanceof Float64Array) && (Array.isArray(b) || b instanceof Float64Array)) {
      const out = new Float64Array(Math.max(a.length, b.length))
      for (let i = 0; i < out.length; i++) out[i] = Number(a[i] ?? 0) + Number(b[i] ?? 0)
      return Array.isArray(a) ? Array.from(out) : out
    }
    if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
      const out: Record<string, unknown> = { ...(a as Record<string, unknown>) }
      for (const [k, v] of Object.entries(b as Record<string, unknown>)) out[k] = k in out ? merge(out[k], v, k) : v
      return out
    }
    return a
  }
  let out = replies[0]
  for (let i = 1; i < replies.length; i++) out = merge(out, replies[i], '')
  if (out !== null && typeof out === 'object' && 'device_batches' in out) {
    const c = out as Record<string, number>
    c['avg_packets_per_batch'] = c['device_batches']! > 0 ? c['device_packets']! / c['device_batches']! : 0
  }
  return out
}

function toPeer(p: PeerSpec): Peer {
  return { net: p.net, mask: p.mask, ip: p.ip, mac: Buffer.from(p.mac) }
}

export class PacketPath {
  readonly engine: NatEngine
  readonly dns: DnsServer
  readonly dp: Dataplane
  private clock = monoSeconds()
  private readonly timers: NodeJS.Timeout[] = []
  private flushing: NodeJS.Immediate | undefined
  /** installs refused (a bad image from the control thread): the last good table keeps serving */
  installErrors = 0

  constructor(
    private readonly dev: Device,
    init: PacketInit,
    private readonly log: (line: string) => void,
  ) {
    // An engine with an empty table of the right config; the first image replaces it at once.
    this.engine = new NatEngine(compileNat({ services: [], nodes: [], pods: [] }, init.natConfig), { flushBudget: FLUSH_SLICE, ...init.engine })
    this.engine.install(init.nat)
    this.dns = new DnsServer(init.dns)
    this.dns.install(init.zone)
    const l = init.loop
    this.dp = new Dataplane(dev, this.engine, this.dns, {
      nodeIp: l.nodeIp,
      dnsIp: l.dnsIp,
      dnsPort: l.dnsPort,
      vni: l.vni,
      localMac: Buffer.alloc(6),
      peers: l.peers.map(toPeer),
      ...(l.podNet === undefined ? {} : { podNet: l.podNet }),
      ...(l.clusterNet === undefined ? {} : { clusterNet: l.clusterNet }),
      ...(l.serviceNet === undefined ? {} : { serviceNet: l.serviceNet }),
      ...(l.serviceNet6 === undefined ? {} : { serviceNet6: l.serviceNet6 }),
      ...(l.icmpRate === undefined ? {} : { icmpRate: l.icmpRate }),
      ...nodeIp6Of(init.natConfig),
    })
    if (this.engine.tracking) {
      const eng = this.engine
      this.dp.queued = {
        get pendingResets(): number {
          return eng.pendingFailover
        },
        writeResets: (out, outOff, offsets, lengths, max, gap) => eng.writeFailover(out, outOff, offsets, lengths, max, gap),
      }
    }
    if (init.restore !== undefined) this.restore(init.restore)
    if (init.restarted === true) this.engine.replyPickupUntil = monoSeconds() + REPLY_PICKUP_SECONDS
  }

  /** Sets the loop's own MAC (derived from the node IP by the caller). */
  setLocalMac(mac: Buffer): void {
    this.dp.setPeers({ ...this.dp.options, localMac: mac })
  }

  async start(dnsSockets?: { host: string; port: number }): Promise<void> {
    this.dev.start(this.dp.onBatch)
    if (dnsSockets) {
      // TCP DNS, and UDP from the node's own processes, reach a kernel socket on the DNS address (on lo).
      await this.dns.listenTcp(dnsSockets.host, dnsSockets.port)
      await this.dns.listenUdp(dnsSockets.host, dnsSockets.port)
    }
    // The coarse clock and incremental conntrack reaping, between batches.
    this.timers.push(
      setInterval(() => {
        this.clock = monoSeconds()
        this.engine.tick(this.clock)
        this.sendResets()
        const ob = this.dp.observer
        if (ob !== null && performance.now() - ob.lastDrainMs > OBSERVE_IDLE_MS) {
          this.dp.observer = null
          this.engine.onConnectEvent = null
        }
      }, 250),
    )
  }

  private restore(chunks: readonly ArrayBuffer[]): void {
    let restored = 0
    try {
      for (const c of chunks) restored = this.engine.restoreChunk(c, this.clock).restored
      this.log(`[agent] restored ${restored} conntrack entries`)
      this.sendResets()
    } catch (err) {
      this.log(`[agent] ignoring the conntrack snapshot: ${(err as Error).message}`)
    }
  }

  private sendResets(): void {
    if (this.engine.pendingResets > 0) this.dp.sendResets(this.engine)
    const q = this.dp.queued
    if (q !== null && q.pendingResets > 0) this.dp.sendResets(q)
  }

  /** Flushes stale flows at most FLUSH_TURN_MS per turn of the event loop, so batches of packets run in between. */
  private drainStale(): void {
    if (this.flushing !== undefined) return
    const slice = (): void => {
      this.flushing = undefined
      const until = performance.now() + FLUSH_TURN_MS
      do this.engine.step()
      while (this.engine.flushPending && performance.now() < until)
      this.sendResets()
      if (this.engine.flushPending) this.flushing = setImmediate(slice)
    }
    this.flushing = setImmediate(slice)
  }

  counters(): Record<string, number> {
    const out: Record<string, number> = {}
    const c = this.dp.counters
    for (const [k, v] of Object.entries(c)) if (typeof v === 'number') out[k] = v
    for (const [k, v] of Object.entries(dropNames(c))) out[`drop_${k}`] = v
    const d = this.dev.stats()
    out['device_batches'] = d.batches
    out['device_packets'] = d.packets
    out['device_write_errors'] = d.writeErrors
    out['avg_packets_per_batch'] = d.avgPacketsPerBatch ?? (d.batches ? d.packets / d.batches : 0)
    Object.assign(out, natCounterRecord(this.engine))
    out['install_errors'] = this.installErrors
    return out
  }

  /** One request from the control thread. Installs are checked first: a refused one keeps the last good table. */
  handle(req: PacketRequest): unknown {
    switch (req.op) {
      case 'counters':
        return this.counters()
      case 'dnsMetrics':
        return this.dns.metrics()
      case 'serviceCounters':
        return { packets: this.engine.svcPackets.slice(), newConnections: this.engine.svcNew.slice() }
      case 'observe': {
        // the first request starts recording (until OBSERVE_IDLE_MS without one); each drains a bounded copy
        let ob = this.dp.observer
        if (ob === null) {
          ob = new FlowRing(OBSERVE_RING, this.engine)
          const ring = ob
          this.dp.observer = ring
          this.engine.onConnectEvent = (kind, family, e, ep, why) => ring.connectEvent(kind, family, e, ep, why)
        }
        const d = ob.drain(Math.min(req.max, OBSERVE_RING))
        return new Transfer(d, [d.words.buffer, d.times.buffer, d.names.buffer] as ArrayBuffer[])
      }
      case 'endpoints': {
        // O(endpoint slots): frees a bounded batch, then copies of typed arrays, as serviceCounters copies its arrays
        const eng = this.engine
        eng.book.release(req.release.slice(0, ENDPOINT_RELEASE_BATCH))
        const s = eng.book.snapshot(eng.msClock(), eng.tracking)
        return new Transfer(s, [s.keys, s.used, s.packets, s.connections, s.sig, s.hist, s.ejectedMs, s.live].map(a => a.buffer) as ArrayBuffer[])
      }
      case 'ctChunk': {
        const r = this.engine.ctChunk(req.cursor, Math.min(req.max, CT_CHUNK), this.clock)
        return new Transfer(r, [r.bytes])
      }
      case 'ctDelete': {
        let deleted = 0
        for (const t of req.tuples.slice(0, CT_DELETE_BATCH)) if (this.engine.deleteTuple(t.family, t.proto, t.src, t.dst, t.sport, t.dport)) deleted++
        return deleted
      }
      case 'lookups': {
        const q = req.q
        const tracked = this.engine.findConntrack(q.family, q.proto, q.src, q.dst, q.sport, q.dport, this.clock) ?? null
        const pins: [number, { endpoint: string; expiresIn: number }][] = []
        for (const sp of req.svcPortIds) {
          const pin = this.engine.findAffinity(sp, q.src, this.clock)
          if (pin !== undefined) pins.push([sp.id, pin])
        }
        return { q, tracked, pins }
      }
      case 'capture':
        return this.capture(req)
      case 'peers':
        this.dp.setPeers({ ...this.dp.options, peers: req.peers.map(toPeer) })
        return null
      case 'nat':
        try {
          const r = this.engine.install(req.install)
          this.sendResets()
          if (this.engine.flushPending) this.drainStale()
          return r
        } catch (err) {
          this.installErrors++
          this.log(`[agent] NAT install refused, the previous table keeps serving: ${(err as Error).message}`)
          throw err
        }
      case 'zone':
        try {
          this.dns.install(req.install)
        } catch (err) {
          this.installErrors++
          this.log(`[agent] zone install refused, the previous zone keeps serving: ${(err as Error).message}`)
          throw err
        }
        return null
    }
  }

  private capture(req: Extract<PacketRequest, { op: 'capture' }>): Promise<{ records: number }> {
    const dp = this.dp
    if (dp.capture) throw new Error('a capture is already running')
    return new Promise(resolve => {
      let timer: NodeJS.Timeout | undefined
      const cap = new Capture({ path: req.path, addresses: req.addresses, pre: req.pre, post: req.post, maxRecords: req.maxRecords }, c => {
        if (timer) clearTimeout(timer)
        if (dp.capture === c) dp.capture = null
        resolve({ records: c.records })
      })
      timer = setTimeout(() => cap.close(), req.durationMs)
      dp.capture = cap
    })
  }

  async stop(): Promise<void> {
    this.dp.capture?.close()
    for (const t of this.timers) clearInterval(t)
    if (this.flushing !== undefined) clearImmediate(this.flushing)
    await this.dns.close()
  }
}

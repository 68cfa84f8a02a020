// The packet thread's half of an agent: the device, the packet loop, the NAT engine (which owns conntrack) and the
// cluster DNS answerer. It does per-packet work and installs what the control thread sends (see ARCHITECTURE.md);
// every request it serves is bounded (counters, one conntrack chunk, one lookup), never a walk of a whole table.
import type { Device } from '../device/device'
import { Dataplane, dropNames, type Peer } from '../dataplane/loop'
import { Capture } from '../dataplane/capture'
import { NatEngine, type NatEngineOptions } from '../nat/engine'
import { natCounterRecord } from '../metrics/nat'
import { DnsServer, type DnsServerOptions } from '../dns/server'
import { PacketTables, type NatInstall, type ZoneInstall } from './crossing'
import { answerLive, type LiveRequest } from './live'

/** Everything the packet thread needs to start, as plain data (it crosses a thread boundary). */
export interface PacketInit {
  readonly loop: { nodeIp: number; dnsIp: number; dnsPort: number; vni: number; peers: readonly PeerSpec[] }
  readonly engine: NatEngineOptions
  readonly dns: DnsServerOptions
  /** the first tables */
  readonly nat: NatInstall
  readonly zone: ZoneInstall
  /** bind DNS sockets for the node's own processes on this address (real agents; not with a test device) */
  readonly dnsSockets?: { readonly host: string; readonly port: number }
  /** a conntrack snapshot to restore before the first packet */
  readonly snapshot?: Uint8Array
}

/** A VXLAN peer as plain data; the MAC is derived on the packet side. */
export interface PeerSpec { readonly net: number; readonly mask: number; readonly ip: number; readonly mac: Uint8Array }

/** Requests the control thread makes; each is answered with bounded work. */
export type PacketRequest =
  | { op: 'counters' }
  | { op: 'dnsMetrics' }
  | { op: 'ctCount' }
  | LiveRequest
  | { op: 'snapshot' }
  | { op: 'capture'; path: string; addresses: number[]; pre: boolean; post: boolean; maxRecords: number; durationMs: number }
  | { op: 'peers'; peers: readonly PeerSpec[] }
  | { op: 'nat'; install: NatInstall }
  | { op: 'zone'; install: ZoneInstall }

function toPeer(p: PeerSpec): Peer {
  return { net: p.net, mask: p.mask, ip: p.ip, mac: Buffer.from(p.mac) }
}

export class PacketPath {
  readonly engine: NatEngine
  readonly dns: DnsServer
  readonly dp: Dataplane
  private readonly tables: PacketTables
  private clock = Math.floor(Date.now() / 1000)
  private readonly timers: NodeJS.Timeout[] = []
  /** how many installs failed (a bad table from the control thread): the last good one keeps serving */
  installErrors = 0

  constructor(private readonly dev: Device, init: PacketInit, private readonly log: (line: string) => void) {
    this.tables = new PacketTables(init.nat)
    this.engine = new NatEngine(this.tables.table, init.engine)
    this.dns = new DnsServer(init.dns)
    this.tables.installZone(this.dns, init.zone)
    this.dp = new Dataplane(dev, this.engine, this.dns, {
      nodeIp: init.loop.nodeIp, dnsIp: init.loop.dnsIp, dnsPort: init.loop.dnsPort, vni: init.loop.vni,
      localMac: Buffer.alloc(6), peers: init.loop.peers.map(toPeer),
    })
    if (init.snapshot !== undefined) this.restore(Buffer.from(init.snapshot.buffer, init.snapshot.byteOffset, init.snapshot.byteLength))
  }

  /** Sets the loop's own MAC (derived from the node IP by the caller) — separate so PacketInit stays plain. */
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
    this.timers.push(setInterval(() => {
      this.clock = Math.floor(Date.now() / 1000)
      this.engine.tick(this.clock)
    }, 250))
  }

  private restore(buf: Buffer): void {
    try {
      const n = this.engine.restore(buf, this.clock)
      this.log(`[agent] restored ${n} conntrack entries`)
      if (this.engine.pendingResets > 0) this.dp.sendResets(this.engine)
    } catch (err) {
      this.log(`[agent] ignoring the conntrack snapshot: ${(err as Error).message}`)
    }
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

  /** One request from the control thread. Installs are guarded: a failure keeps the last good table. */
  handle(req: PacketRequest): unknown {
    switch (req.op) {
      case 'counters': return this.counters()
      case 'dnsMetrics': return this.dns.metrics()
      case 'ctCount': return { ipv4: this.engine.v4.ct.count, ipv6: this.engine.v6.ct.count }
      case 'live': return answerLive(this.engine, req, this.clock)
      case 'snapshot': return this.engine.snapshot()
      case 'capture': return this.capture(req)
      case 'peers': this.dp.setPeers({ ...this.dp.options, peers: req.peers.map(toPeer) }); return null
      case 'nat': {
        try {
          const r = this.tables.installNat(this.engine, req.install)
          if (r.resets > 0) this.dp.sendResets(this.engine)
          return r
        } catch (err) {
          this.installErrors++
          this.log(`[agent] NAT install failed, the previous table keeps serving: ${(err as Error).message}`)
          throw err
        }
      }
      case 'zone': {
        try { this.tables.installZone(this.dns, req.install) } catch (err) {
          this.installErrors++
          this.log(`[agent] zone install failed, the previous zone keeps serving: ${(err as Error).message}`)
          throw err
        }
        return null
      }
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
    await this.dns.close()
  }
}

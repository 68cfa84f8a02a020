// One node's tundra: owns the TUN, the NAT engine and the cluster DNS, and keeps them on one snapshot of the
// desired state. Start-up order matters: everything that can fail on bad input (manifests, config) runs before the
// node is wired, and wiring is undone on every exit path.
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { hostname } from 'node:os'
import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import type { Server } from 'node:net'
import type { AgentConfig, VxlanPeer } from './config'
import { serveControl, type Handler } from './control'
import type { DataplaneView } from './view'
import { wire, type Wiring } from './wiring'
import type { Cluster, Service } from '../model/cluster'
import { normalize } from '../k8s/normalize'
import { FileSource } from '../run/files'
import { applyBatch } from '../run/apply'
import type { ChangeSet } from '../run/store'
import { compileNat, resolveNatConfig, updateNat, type NatTable, type ResolvedNatConfig, type ServiceRef } from '../nat/compile'
import { NatEngine, NAT_STAT_NAMES, type NatEngineOptions } from '../nat/engine'
import { healthCheckByPort, healthCheckResponse } from '../nat/health'
import { DnsServer } from '../dns/server'
import { openTun, type TunDevice } from '../device/tun'
import type { Device } from '../device/device'
import { Dataplane, dropNames, type Peer } from '../dataplane/loop'
import { vxlanMac } from '../dataplane/vxlan'
import { Capture } from '../dataplane/capture'
import { ipv4ToInt, parseCidr4 } from './addr'

export interface AgentOptions {
  /** progress and events; default stderr */
  readonly log?: (line: string) => void
  /** a device to use instead of opening the TUN (tests); no node wiring is done then */
  readonly device?: Device
  /** extra control commands (inspection tools register theirs here) */
  readonly handlers?: (view: DataplaneView) => Record<string, Handler>
  /**
   * Remove the node wiring on stop (default false: like kube-proxy's rules, it stays, so a restarted agent takes
   * over established flows; `tundra agent --cleanup` removes it).
   */
  readonly cleanupOnExit?: boolean
  /** desired state from elsewhere (`tundra run`: the API server): the manifests are then neither read nor watched */
  readonly cluster?: Cluster
  /** NAT engine options (conntrack size and timeouts, INVALID handling) */
  readonly engine?: NatEngineOptions
}

/**
 * How the TUN is read: by default inline (the JS thread polls it, busy-polling 100 µs after the last packet) with
 * one queue. TUNDRA_TUN_IO, TUNDRA_BUSY_POLL_US and TUNDRA_TUN_QUEUES override the config, for measuring one
 * setting against another without editing it.
 */
function tunIo(cfg: AgentConfig): { queues: number; io: 'thread' | 'inline'; busyPollUs: number } {
  const env = (k: string): string | undefined => process.env[k]
  const envIo = env('TUNDRA_TUN_IO')
  const io = envIo === 'thread' || envIo === 'inline' ? envIo : cfg.tun.io ?? 'inline'
  const busyPollUs = env('TUNDRA_BUSY_POLL_US') !== undefined ? Number(env('TUNDRA_BUSY_POLL_US')) : cfg.tun.busyPollUs ?? 100
  // Inline, one thread serves every queue: more queues only split the batches (and busy polling watches one fd).
  const queues = env('TUNDRA_TUN_QUEUES') !== undefined ? Number(env('TUNDRA_TUN_QUEUES')) : cfg.tun.queues ?? (io === 'inline' ? 1 : 2)
  return { queues, io, busyPollUs }
}

export class AgentError extends Error {}

function toPeer(p: VxlanPeer, where: string): Peer {
  const ip = ipv4ToInt(p.ip)
  const cidr = parseCidr4(p.podCIDR)
  if (ip === undefined) throw new AgentError(`${where}.ip: not an IPv4 address: ${p.ip}`)
  if (cidr === undefined) throw new AgentError(`${where}.podCIDR: not an IPv4 CIDR: ${p.podCIDR}`)
  return { net: cidr.net, mask: cidr.mask, ip, mac: vxlanMac(ip) }
}

const RELOAD_DEBOUNCE_MS = 50

export class Agent implements DataplaneView {
  private current: Cluster
  private compiled: NatTable
  readonly natCfg: ResolvedNatConfig
  readonly engine_: NatEngine
  readonly dns_: DnsServer
  private dev: Device | undefined
  private dp: Dataplane | undefined
  private wiring: Wiring | undefined
  private control: Server | undefined
  /** the manifests, when the desired state comes from files (the lab): one file re-read per change */
  private readonly source: FileSource | undefined
  private timers: NodeJS.Timeout[] = []
  private readonly health = new Map<number, HttpServer>()
  private stopping: Promise<void> | undefined
  private started = false
  private clock = Math.floor(Date.now() / 1000)
  readonly log: (line: string) => void
  /** reloads that kept the previous state because the manifests could not be read at all */
  reloadErrors = 0
  private peers: VxlanPeer[] = []
  /** route changes run one after another: two quick reloads must not interleave */
  private routeSync: Promise<void> = Promise.resolve()
  reloads = 0
  lastSyncMs = 0

  private constructor(readonly config: AgentConfig, private readonly opts: AgentOptions) {
    this.log = opts.log ?? (l => process.stderr.write(l + '\n'))
    if (opts.cluster === undefined) {
      this.source = new FileSource(config.manifests, { debounceMs: RELOAD_DEBOUNCE_MS, log: this.log })
      this.source.onReload(r => { if (!r.applied) this.reloadErrors++ })
      this.source.reload()
    }
    this.current = opts.cluster ?? this.load()
    this.natCfg = resolveNatConfig({
      nodeName: config.node.name,
      nodeIPs: [config.node.ip],
      clusterCIDRs: [config.clusterCIDR, ...(config.clusterCIDR6 ? [config.clusterCIDR6] : [])],
      ...(config.nodePortAddresses !== undefined ? { nodePortAddresses: config.nodePortAddresses } : {}),
      ...(config.lb !== undefined ? { lb: config.lb } : {}),
      icmpMode: config.icmp ?? 'reply',
    })
    this.compiled = compileNat(this.current, this.natCfg)
    this.engine_ = new NatEngine(this.compiled, opts.engine ?? {})
    this.dns_ = new DnsServer({
      zone: config.dns.zone,
      dnsIP: config.dns.ip,
      upstream: config.dns.upstreams,
      ...(config.dns.ttl !== undefined ? { ttl: config.dns.ttl } : {}),
    })
    this.dns_.setCluster(this.current)
  }

  static async start(config: AgentConfig, opts: AgentOptions = {}): Promise<Agent> {
    const agent = new Agent(config, opts)
    try {
      await agent.bringUp()
      agent.started = true
    } catch (err) {
      await agent.stop()
      throw err
    }
    return agent
  }

  // ---- DataplaneView -------------------------------------------------------------------------------------------
  cluster(): Cluster { return this.current }
  table(): NatTable { return this.compiled }
  natConfig(): ResolvedNatConfig { return this.natCfg }
  engine(): NatEngine { return this.engine_ }
  dns(): DnsServer { return this.dns_ }
  now(): number { return this.clock }
  counters(): Record<string, number> {
    const out: Record<string, number> = {}
    const c = this.dp?.counters
    if (c) {
      for (const [k, v] of Object.entries(c)) if (typeof v === 'number') out[k] = v
      for (const [k, v] of Object.entries(dropNames(c))) out[`drop_${k}`] = v
    }
    const d = this.dev?.stats()
    if (d) {
      out.device_batches = d.batches
      out.device_packets = d.packets
      out.device_write_errors = d.writeErrors
      out.avg_packets_per_batch = d.avgPacketsPerBatch ?? (d.batches ? d.packets / d.batches : 0)
    }
    NAT_STAT_NAMES.forEach((name, i) => { out[`nat_${name}`] = this.engine_.counters[i] ?? 0 })
    out.conntrack_entries = this.engine_.v4.ct.count + this.engine_.v6.ct.count
    out.reloads = this.reloads
    out.reload_errors = this.reloadErrors
    return out
  }

  // ---- lifecycle -----------------------------------------------------------------------------------------------

  /** The whole desired state from the manifests read so far. */
  private load(): Cluster {
    // The manifests are what the API server would hold: EndpointSlices come from the controller (or `lab up`), as
    // kube-proxy sees them; the agent does not compute its own.
    const r = normalize(this.source?.store.objects() ?? [], { serviceCIDRs: [this.config.serviceCIDR, ...(this.config.serviceCIDR6 ? [this.config.serviceCIDR6] : [])] })
    for (const p of r.problems) this.log(`[agent] skipped ${p.file ? p.file + ': ' : ''}${p.object}: ${p.field}: ${p.reason}`)
    return r.cluster
  }

  /**
   * A change the file source saw, applied the way `tundra run` applies one (src/run/apply.ts): the services it names
   * incrementally, anything else in full. Pods and Deployments do not change the NAT table here (the EndpointSlices
   * are given, the agent runs no controller), so a change of only those refreshes the pod list.
   */
  private onChange(change: ChangeSet): void {
    const t0 = process.hrtime.bigint()
    const podsOnly = [...change.other].every(k => k.startsWith('Pod/') || k.startsWith('Deployment/') || k.startsWith('Namespace/'))
    const scope = { full: change.full && !podsOnly, services: new Set([...change.services, ...change.endpoints]), nodes: change.nodes }
    try {
      if (change.other.size > 0 && podsOnly && !scope.full) this.current = { ...this.current, pods: this.load().pods }
      if (scope.services.size > 0 || scope.full || scope.nodes.size > 0) applyBatch(this, this.source!.store, scope, () => this.load())
      else this.scheduleZone()
    } catch (err) {
      this.reloadErrors++
      this.log(`[agent] reload failed, keeping the previous state: ${(err as Error).message}`)
      return
    }
    this.lastSyncMs = Number(process.hrtime.bigint() - t0) / 1e6
    this.log(`[agent] synced in ${this.lastSyncMs.toFixed(1)} ms: ${this.compiled.svcPorts.length} service ports`)
  }

  private async bringUp(): Promise<void> {
    const cfg = this.config
    const nodeIp = ipv4ToInt(cfg.node.ip)
    const dnsIp = ipv4ToInt(cfg.dns.ip)
    if (nodeIp === undefined) throw new AgentError(`node.ip: not an IPv4 address: ${cfg.node.ip}`)
    if (dnsIp === undefined) throw new AgentError(`dns.ip: not an IPv4 address: ${cfg.dns.ip}`)
    const peers: Peer[] = cfg.vxlan.peers.map((p, i) => toPeer(p, `vxlan.peers[${i}]`))
    this.peers = cfg.vxlan.peers.map(p => ({ ...p }))

    if (this.opts.device) {
      this.dev = this.opts.device
    } else {
      const tun: TunDevice = await openTun({ name: cfg.tun.name, vnetHdr: cfg.tun.vnetHdr, offloads: cfg.tun.vnetHdr, txqueuelen: 10000, ...tunIo(cfg) })
      this.dev = tun
      this.log(`[agent] ${tun.name} open: vnet header ${tun.vnetHdr ? 'on' : 'off'}, offloads ${JSON.stringify(tun.offloadsAccepted)}`)
      this.wiring = await wire(cfg, tun.name)
    }
    this.dp = new Dataplane(this.dev, this.engine_, this.dns_, {
      nodeIp, dnsIp, dnsPort: 53, vni: cfg.vxlan.vni, localMac: vxlanMac(nodeIp), peers,
    })
    this.dev.start(this.dp.onBatch)

    if (!this.opts.device) {
      // TCP DNS, and UDP from the node's own processes, reach a kernel socket on the DNS address (on lo).
      await this.dns_.listenTcp(cfg.dns.ip, 53)
      await this.dns_.listenUdp(cfg.dns.ip, 53)
    }
    this.syncHealthServers()
    await this.syncExternalRoutes()

    const handlers: Record<string, Handler> = {
      hello: () => ({ node: cfg.node, hostname: hostname(), peers: this.peers, pid: process.pid }),
      stats: () => ({ counters: this.counters(), dns: this.dns_.metrics(), lastSyncMs: this.lastSyncMs }),
      capture: args => this.startCapture(args),
      peer: args => this.changePeer(args),
      reload: () => { this.reload(); return { reloads: this.reloads, lastSyncMs: this.lastSyncMs } },
      ...(this.opts.handlers ? this.opts.handlers(this) : {}),
    }
    this.control = await serveControl(cfg.control, handlers)

    this.restoreSnapshot()
    const every = (cfg.snapshot?.intervalSeconds ?? 10) * 1000
    if (every > 0) this.timers.push(setInterval(() => this.saveSnapshot(), every))

    // The coarse clock and incremental conntrack reaping run off the packet path.
    this.timers.push(setInterval(() => {
      this.clock = Math.floor(Date.now() / 1000)
      this.engine_.tick(this.clock)
    }, 250))
    if (this.source) {
      this.source.onChange(change => this.onChange(change))
      this.source.start()
    }
    this.log(`[agent] ${cfg.node.name} ready: ${this.compiled.svcPorts.length} service ports, ${peers.length} VXLAN peers, DNS ${cfg.dns.ip} (${cfg.dns.zone})`)
  }

  /**
   * Records packets into a pcapng until `count` records or `durationMs` pass. `target`: 'all', a pod or a service
   * ('name' in default, or 'ns/name'); a pod matches its IPs, a service its cluster IPs and endpoint addresses.
   */
  private startCapture(args: Record<string, unknown>): Promise<{ path: string; records: number; addresses: string[] }> {
    const dp = this.dp
    if (!dp) throw new AgentError('the dataplane is not running')
    if (dp.capture) throw new AgentError('a capture is already running')
    const path = String(args['path'] ?? '')
    if (!path.startsWith('/')) throw new AgentError('capture: path must be absolute')
    const target = String(args['target'] ?? 'all')
    const addrs = target === 'all' ? [] : this.addressesOf(target)
    const ints = addrs.map(a => ipv4ToInt(a)).filter((a): a is number => a !== undefined)
    const pre = args['pre'] !== false
    const post = args['post'] !== false
    const count = Number(args['count'] ?? 1000)
    const durationMs = Number(args['durationMs'] ?? 10_000)
    return new Promise(resolve => {
      let timer: NodeJS.Timeout | undefined
      const cap = new Capture({ path, addresses: ints, pre, post, maxRecords: count > 0 ? count : 1000 }, c => {
        if (timer) clearTimeout(timer)
        if (dp.capture === c) dp.capture = null
        resolve({ path, records: c.records, addresses: addrs })
      })
      timer = setTimeout(() => cap.close(), durationMs)
      dp.capture = cap
    })
  }

  private addressesOf(target: string): string[] {
    const [ns, name] = target.includes('/') ? target.split('/', 2) as [string, string] : ['default', target]
    const pod = this.current.pods.find(p => p.namespace === ns && p.name === name)
    if (pod) return [...pod.ips]
    const svc = this.current.services.find(s => s.namespace === ns && s.name === name)
    if (svc) return [...svc.clusterIPs, ...svc.externalIPs, ...svc.loadBalancerIngress.map(i => i.ip), ...svc.endpoints.map(e => e.ip)]
    throw new AgentError(`capture: no pod or service ${ns}/${name}`)
  }

  /**
   * `peer {op: 'add'|'remove', node, ip, podCIDR}`: another VXLAN node (a kernel vxlan device, say), without a restart.
   */
  private changePeer(args: Record<string, unknown>): { peers: VxlanPeer[] } {
    if (!this.dp) throw new AgentError('the dataplane is not running')
    const op = String(args['op'] ?? 'add')
    const peer: VxlanPeer = { node: String(args['node'] ?? ''), ip: String(args['ip'] ?? ''), podCIDR: String(args['podCIDR'] ?? '') }
    const rest = this.peers.filter(p => p.node !== peer.node && p.ip !== peer.ip)
    if (op === 'add') { toPeer(peer, 'peer'); this.setPeers([...rest, peer]) } else if (op === 'remove') this.setPeers(rest)
    else throw new AgentError(`peer: op must be add or remove, got ${JSON.stringify(op)}`)
    return { peers: this.peers }
  }

  get snapshotPath(): string { return this.config.snapshot?.path ?? `${this.config.control}.conntrack` }

  /** Writes the conntrack state atomically (a crash mid-write leaves the previous snapshot). */
  saveSnapshot(): void {
    try {
      const tmp = `${this.snapshotPath}.tmp`
      writeFileSync(tmp, this.engine_.snapshot())
      renameSync(tmp, this.snapshotPath)
    } catch (err) {
      this.log(`[agent] snapshot: ${(err as Error).message}`)
    }
  }

  /** Established flows survive a restart: their entries come back with the endpoints they were using. */
  private restoreSnapshot(): void {
    let buf: Buffer
    try { buf = readFileSync(this.snapshotPath) } catch { return }
    try {
      const n = this.engine_.restore(buf, this.clock)
      this.log(`[agent] restored ${n} conntrack entries from ${this.snapshotPath}`)
      if (this.engine_.pendingResets > 0) this.dp?.sendResets(this.engine_)
    } catch (err) {
      this.log(`[agent] ignoring snapshot ${this.snapshotPath}: ${(err as Error).message}`)
    }
  }

  /** Re-reads every manifest now (the `reload` control command); what changed is applied as on a file change. */
  reload(): void {
    if (!this.source) return
    const r = this.source.reload()
    if (r.applied && r.change === undefined) this.reloads++ // nothing changed: still a completed reload
  }

  /** Installs a new desired state: NAT table (stale flows flushed, TCP resets sent) and DNS zone together. */
  apply(cluster: Cluster): void {
    this.install(cluster, compileNat(cluster, this.natCfg, this.compiled))
    this.dns_.setCluster(cluster)
  }

  /** Swaps in a state (stale flows flushed, TCP resets sent) and brings what follows from it up to date. */
  private install(cluster: Cluster, table: NatTable): void {
    this.current = cluster
    this.compiled = table
    const r = this.engine_.swap(table)
    if (r.resets > 0) this.dp?.sendResets(this.engine_)
    this.syncHealthServers()
    this.routeSync = this.routeSync.then(() => this.syncExternalRoutes()).catch(err => this.log(`[agent] routes: ${(err as Error).message}`))
    this.reloads++
  }

  /**
   * externalIPs and LoadBalancer IPs (ipMode VIP) outside the service CIDR: a /32 into the TUN each, so traffic for
   * them that reaches the node is translated rather than routed on.
   */
  private async syncExternalRoutes(): Promise<void> {
    if (!this.wiring) return
    const wanted = new Set<string>()
    for (const svc of this.current.services) {
      for (const ip of svc.externalIPs) wanted.add(ip)
      for (const lb of svc.loadBalancerIngress) if (lb.ipMode === 'VIP') wanted.add(lb.ip)
    }
    for (const ip of [...wanted]) if (ipv4ToInt(ip) === undefined) wanted.delete(ip)
    await this.wiring.setExternalRoutes([...wanted])
  }

  /**
   * A few services changed (an endpoint came or went): only their NAT entries are recompiled and swapped in, so the
   * change reaches the packet path in milliseconds at any table size; the DNS zone follows right after.
   */
  applyServices(changed: readonly Service[], deleted: readonly ServiceRef[]): void {
    const table = updateNat(this.compiled, changed, deleted)
    const gone = new Set(deleted.map(d => `${d.namespace}/${d.name}`))
    const byKey = new Map(changed.map(svc => [`${svc.namespace}/${svc.name}`, svc]))
    const services: Service[] = []
    for (const svc of this.current.services) {
      const key = `${svc.namespace}/${svc.name}`
      if (gone.has(key)) continue
      const next = byKey.get(key)
      services.push(next ?? svc)
      byKey.delete(key)
    }
    services.push(...byKey.values())
    this.install({ ...this.current, services }, table)
    this.scheduleZone()
  }

  private zoneTimer: NodeJS.Immediate | undefined
  /** The DNS zone is compiled from the whole cluster: once per burst of changes, after the NAT swap. */
  private scheduleZone(): void {
    this.zoneTimer ??= setImmediate(() => { this.zoneTimer = undefined; this.dns_.setCluster(this.current) })
  }

  /** The VXLAN peers (other nodes' pod CIDRs), e.g. from Node objects. */
  setPeers(peers: readonly VxlanPeer[]): void {
    this.peers = [...peers]
    if (this.dp) this.dp.setPeers({ ...this.dp.options, peers: this.peers.map((p, i) => toPeer(p, `peers[${i}]`)) })
  }

  /** kube-proxy's healthCheckNodePort servers, on the node IP, for services with externalTrafficPolicy Local. */
  private syncHealthServers(): void {
    if (this.opts.device) return
    const wanted = new Set<number>()
    for (const hc of this.compiled.healthChecks.values()) wanted.add(hc.nodePort)
    for (const [port, srv] of this.health) if (!wanted.has(port)) { srv.close(); this.health.delete(port) }
    for (const port of wanted) {
      if (this.health.has(port)) continue
      const srv = createHttpServer((_req, res) => {
        const hc = healthCheckByPort(this.compiled, port)
        const r = hc ? healthCheckResponse(hc) : { status: 503, body: '{}' }
        res.writeHead(r.status, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' })
        res.end(r.body)
      })
      srv.on('error', err => this.log(`[agent] health check port ${port}: ${err.message}`))
      srv.listen(port, this.config.node.ip)
      this.health.set(port, srv)
    }
  }

  stop(): Promise<void> {
    this.stopping ??= this.shutdown()
    return this.stopping
  }

  private async shutdown(): Promise<void> {
    this.dp?.capture?.close()
    if (this.dp) this.saveSnapshot()
    for (const t of this.timers) clearInterval(t)
    await this.source?.stop()
    for (const s of this.health.values()) s.close()
    this.control?.close()
    await this.dns_.close()
    await this.routeSync
    if (this.wiring && (this.opts.cleanupOnExit === true || !this.started)) await this.wiring.undo()
    if (this.dev && !this.opts.device) await this.dev.close()
  }
}

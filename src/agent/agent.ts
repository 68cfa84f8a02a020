// One node's tundra, control side: it runs on the agent's control thread and keeps the packet thread (host.ts,
// packet-path.ts) on one snapshot of the desired state. Everything whose cost grows with the cluster runs here: reading
// manifests, normalizing, compiling NAT tables and the zone, the control socket, health servers, snapshots, wiring.
// The packet thread only installs what this side sends (crossing.ts) and answers bounded requests.
// Start-up order matters: everything that can fail on bad input (manifests, config) runs before the node is wired,
// and wiring is undone on every exit path of a failed start.
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { hostname } from 'node:os'
import { closeSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs'
import type { Server } from 'node:net'
import { tunOverrides, type AgentConfig, type TunOverrides, type VxlanPeer } from './config'
import { serveControl, type Handler } from './control'
import type { DataplaneView, LiveClient } from './view'
import { wire, wiredBefore, type Wiring } from './wiring'
import type { Cluster, Service } from '../model/cluster'
import { normalize } from '../k8s/normalize'
import { parseCIDR } from '../k8s/ip'
import { FileSource } from '../run/files'
import { applyBatch } from '../run/apply'
import type { ChangeSet } from '../run/store'
import { compileNat, resolveNatConfig, servesLocalhostNodePorts, type NatTable, type ResolvedNatConfig } from '../nat/compile'
import { updateNat, type ServiceRef } from '../nat/update'
import type { NatEngineOptions } from '../nat/engine'
import { connectOptions } from '../nat/failover'
import { healthCheckByPort, healthCheckResponse } from '../metrics/health'
import { DnsServer, type DnsServerOptions, type DnsMetrics } from '../dns/server'
import { ZoneCompiler } from '../dns/image'
import { prepareRestore, snapshotBody, snapshotHead } from '../nat/ctview'
import { vxlanMac } from '../dataplane/vxlan'
import { parseIpv4 } from '../wire/ipv4'
import { parseIpv4Cidr } from '../wire/addr'
import type { Link } from './link'
import { linkLive } from './live'
import { mergeServices, natInstall, zoneInstall } from './crossing'
import type { PacketInit, PeerSpec } from './packet-path'
import type { TunOptions } from '../device/tun'

export interface AgentOptions {
  /** the packet thread */
  readonly packet: Link
  /** progress and events; default stderr */
  readonly log?: (line: string) => void
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
  /** control commands for tests (crash or stall this thread); only with TUNDRA_TEST_HOOKS=1 */
  readonly testHooks?: boolean
}

/**
 * How the TUN is read: by default inline (the packet thread polls it, busy-polling 100 µs after the last packet) with
 * one queue. TUNDRA_TUN_IO, TUNDRA_BUSY_POLL_US, TUNDRA_TUN_QUEUES and TUNDRA_PACKET_THREADS override the config,
 * for measuring one setting against another without editing it. More than one packet thread: one queue each, inline.
 */
function tunIo(cfg: AgentConfig): { queues: number; io: 'thread' | 'inline'; busyPollUs: number; packetThreads: number } {
  let env: TunOverrides
  try {
    env = tunOverrides()
  } catch (err) {
    throw new AgentError((err as Error).message)
  }
  const threads = env.packetThreads ?? cfg.tun.packetThreads ?? 1
  const busyPollUs = env.busyPollUs ?? cfg.tun.busyPollUs ?? 100
  if (threads > 1) {
    // each packet thread reads one queue inline: anything else said explicitly is refused, not bent
    const queues = env.queues ?? cfg.tun.queues
    if (queues !== undefined && queues > 1 && queues !== threads)
      throw new AgentError(`tun.queues ${queues} with tun.packetThreads ${threads}: each packet thread reads one queue, so they must be equal`)
    if ((env.io ?? cfg.tun.io) === 'thread') throw new AgentError(`tun.io "thread" with tun.packetThreads ${threads}: packet threads read their queue inline`)
    return { queues: threads, io: 'inline', busyPollUs, packetThreads: threads }
  }
  const io = env.io ?? cfg.tun.io ?? 'inline'
  // Inline, one thread serves every queue: more queues only split the batches (and busy polling watches one fd).
  const queues = env.queues ?? cfg.tun.queues ?? (io === 'inline' ? 1 : 2)
  return { queues, io, busyPollUs, packetThreads: threads }
}

export class AgentError extends Error {}

function toPeer(p: VxlanPeer, where: string): PeerSpec {
  const ip = parseIpv4(p.ip)
  const cidr = parseIpv4Cidr(p.podCIDR)
  if (ip === undefined) throw new AgentError(`${where}.ip: not an IPv4 address: ${p.ip}`)
  if (cidr === undefined) throw new AgentError(`${where}.podCIDR: not an IPv4 CIDR: ${p.podCIDR}`)
  return { net: cidr.net, mask: cidr.mask, ip, mac: new Uint8Array(vxlanMac(ip)) }
}

/** The prefixes the packet loop guards (spoofed sources, loops) and its ICMP error rate, checked here. */
function guardNets(cfg: AgentConfig): Pick<PacketInit['loop'], 'podNet' | 'clusterNet' | 'serviceNet' | 'serviceNet6' | 'icmpRate'> {
  const v4 = (text: string, where: string): { net: number; mask: number } => {
    const c = parseIpv4Cidr(text)
    if (c === undefined) throw new AgentError(`${where}: not an IPv4 CIDR: ${text}`)
    return c
  }
  const c6 = cfg.serviceCIDR6 === undefined ? undefined : parseCIDR(cfg.serviceCIDR6)
  if (cfg.serviceCIDR6 !== undefined && c6?.ip.family !== 6) throw new AgentError(`serviceCIDR6: not an IPv6 CIDR: ${cfg.serviceCIDR6}`)
  return {
    podNet: v4(cfg.node.podCIDR, 'node.podCIDR'),
    clusterNet: v4(cfg.clusterCIDR, 'clusterCIDR'),
    serviceNet: v4(cfg.serviceCIDR, 'serviceCIDR'),
    ...(c6 === undefined ? {} : { serviceNet6: { bytes: Uint8Array.from(c6.ip.bytes), prefix: c6.prefix } }),
    ...(cfg.icmpRateLimit === undefined ? {} : { icmpRate: { perSecond: cfg.icmpRateLimit.perSecond, burst: cfg.icmpRateLimit.burst } }),
  }
}

/**
 * Conntrack entries per request of the periodic snapshot. Smaller than CT_CHUNK (nat/ctview.ts: the bound for one-off requests such
 * as `conntrack -L`): the snapshot runs every 10 s under traffic, and a 4096-entry chunk held the packet thread for
 * 4-6 ms at 20 000 services and 1 000 new flows/s (packets wait that long). 512 entries still took 0.5-3 ms in the
 * churn bench (the encoder is seldom hot enough for V8 to optimise it: it runs once every 10 s); 128 keep a request
 * under ~0.75 ms at four times the (small) number of round trips.
 */
const SNAPSHOT_CHUNK = 128
const RELOAD_DEBOUNCE_MS = 50
/** the lab replaces its per-object files by rename: a change is whole when it is seen */
const FILE_DEBOUNCE_MS = 3

export class Agent implements DataplaneView {
  private current: Cluster
  private compiled: NatTable
  readonly natCfg: ResolvedNatConfig
  private readonly dnsOpts: DnsServerOptions
  /** where each service of `current` sits: a change replaces its services in O(change) */
  private readonly services = new ServiceIndex()
  /** the zone, kept per service: a change recompiles only the services it names */
  private readonly zone: ZoneCompiler
  /** the zone as the control side answers it (for trace), installed on demand from a snapshot of `zone` */
  private dnsView: { serial: number; server: DnsServer } | undefined
  private readonly packet: Link
  private readonly liveClient: LiveClient
  private wiring: Wiring | undefined
  private control: Server | undefined
  private timers: NodeJS.Timeout[] = []
  private readonly health = new Map<number, HttpServer>()
  private stopping: Promise<void> | undefined
  private started = false
  /** the manifests, when the desired state comes from files (the lab): one file re-read per change */
  private readonly source: FileSource | undefined
  readonly log: (line: string) => void
  /** reloads that kept the previous state because the manifests could not be read at all */
  reloadErrors = 0
  /** installs the packet thread refused (the previous table kept serving) */
  installErrors = 0
  private peers: VxlanPeer[] = []
  /** route changes run one after another: two quick reloads must not interleave */
  private routeSync: Promise<void> = Promise.resolve()
  reloads = 0
  lastSyncMs = 0

  private constructor(
    readonly config: AgentConfig,
    private readonly opts: AgentOptions,
  ) {
    this.log = opts.log ?? (l => process.stderr.write(l + '\n'))
    this.packet = opts.packet
    this.liveClient = linkLive(opts.packet, () => this.compiled)
    if (opts.cluster === undefined) {
      this.source = new FileSource(config.manifests, { debounceMs: RELOAD_DEBOUNCE_MS, fileDebounceMs: FILE_DEBOUNCE_MS, log: this.log })
      this.source.onReload(r => {
        if (!r.applied) this.reloadErrors++
      })
      this.source.reload()
    }
    this.current = opts.cluster ?? this.load()
    this.natCfg = resolveNatConfig({
      nodeName: config.node.name,
      nodeIPs: [config.node.ip, ...(config.node.addresses ?? []).filter(a => a !== config.node.ip)],
      clusterCIDRs: [config.clusterCIDR, ...(config.clusterCIDR6 ? [config.clusterCIDR6] : [])],
      ...(config.nodePortAddresses !== undefined ? { nodePortAddresses: config.nodePortAddresses } : {}),
      ...(config.proxyMode !== undefined ? { proxyMode: config.proxyMode } : {}),
      ...(config.localhostNodePorts === true ? { localhostNodePorts: true } : {}),
      ...(config.lb !== undefined ? { lb: config.lb } : {}),
      ...(config.scheduler !== undefined ? { scheduler: config.scheduler } : {}),
      ...(config.ipvs !== undefined ? { gracefulTermination: true, excludeCIDRs: config.ipvs.excludeCIDRs ?? [] } : {}),
      ...(config.masqueradeAll === true ? { masqueradeAll: true } : {}),
      icmpMode: config.icmp ?? 'reply',
    })
    this.compiled = compileNat(this.current, this.natCfg)
    this.dnsOpts = {
      zone: config.dns.zone,
      dnsIP: config.dns.ip,
      upstream: config.dns.upstreams,
      ...(config.dns.ttl !== undefined ? { ttl: config.dns.ttl } : {}),
    }
    this.zone = new ZoneCompiler(this.dnsOpts)
  }

  static async start(config: AgentConfig, opts: AgentOptions): Promise<Agent> {
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
  cluster(): Cluster {
    return this.current
  }
  table(): NatTable {
    return this.compiled
  }
  natConfig(): ResolvedNatConfig {
    return this.natCfg
  }
  live(): LiveClient {
    return this.liveClient
  }
  now(): number {
    return Math.floor(Date.now() / 1000)
  }
  dns(): DnsServer {
    // Only trace asks, rarely: install a snapshot of the zone here when it changed since the last ask.
    if (this.dnsView?.serial !== this.zone.serial) {
      const server = this.dnsView?.server ?? new DnsServer(this.dnsOpts)
      server.install(this.zone.snapshot())
      this.dnsView = { serial: this.zone.serial, server }
    }
    return this.dnsView.server
  }

  /** Packet-thread counters plus the control side's own. */
  async counters(): Promise<Record<string, number>> {
    const out = await this.liveClient.counters()
    out['reloads'] = this.reloads
    out['reload_errors'] = this.reloadErrors
    out['install_errors_control'] = this.installErrors
    return out
  }

  dnsMetrics(): Promise<DnsMetrics> {
    return this.packet.call({ op: 'dnsMetrics' })
  }

  // ---- lifecycle -----------------------------------------------------------------------------------------------

  /** The whole desired state from the manifests read so far. */
  private load(): Cluster {
    // The manifests are what the API server would hold: EndpointSlices come from the controller (or `lab up`), as
    // kube-proxy sees them; the agent does not compute its own.
    const r = normalize(this.source?.store.objects() ?? [], {
      serviceCIDRs: [this.config.serviceCIDR, ...(this.config.serviceCIDR6 ? [this.config.serviceCIDR6] : [])],
      dnsIPs: [this.config.dns.ip],
    })
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
      // the pod list serves capture targets here; the packet thread's zone does not depend on it
      if (change.other.size > 0 && podsOnly && !scope.full) this.current = { ...this.current, pods: this.load().pods }
      if (scope.services.size > 0 || scope.full || scope.nodes.size > 0) applyBatch(this, this.source!.store, scope, () => this.load())
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
    const nodeIp = parseIpv4(cfg.node.ip)
    const dnsIp = parseIpv4(cfg.dns.ip)
    if (nodeIp === undefined) throw new AgentError(`node.ip: not an IPv4 address: ${cfg.node.ip}`)
    if (dnsIp === undefined) throw new AgentError(`dns.ip: not an IPv4 address: ${cfg.dns.ip}`)
    const peers = cfg.vxlan.peers.map((p, i) => toPeer(p, `vxlan.peers[${i}]`))
    this.peers = cfg.vxlan.peers.map(p => ({ ...p }))

    const { packetThreads, ...io } = tunIo(cfg)
    const tunOpts: TunOptions = { name: cfg.tun.name, vnetHdr: cfg.tun.vnetHdr, offloads: cfg.tun.vnetHdr, txqueuelen: 10000, ...io }
    const tun = await this.packet.call<{ name: string; vnetHdr: boolean; offloadsAccepted: unknown; qdisc: string }>({
      op: 'open',
      tun: tunOpts,
      packetThreads,
    })
    this.log(`[agent] ${tun.name} open: vnet header ${tun.vnetHdr ? 'on' : 'off'}, offloads ${JSON.stringify(tun.offloadsAccepted)}, qdisc ${tun.qdisc}`)
    const restarted = wiredBefore(cfg)
    this.wiring = await wire(cfg, tun.name, servesLocalhostNodePorts(this.natCfg))

    const restore = this.prepareRestore()
    const nat = natInstall(this.compiled)
    const zone = zoneInstall(this.zone.full(this.current))
    const init: PacketInit = {
      loop: { nodeIp, dnsIp, dnsPort: 53, vni: cfg.vxlan.vni, peers, ...guardNets(cfg) },
      engine: { connect: connectOptions(cfg, packetThreads), ...this.opts.engine },
      natConfig: this.natCfg,
      dns: this.dnsOpts,
      nat: nat.install,
      zone: zone.install,
      ...(restore !== undefined ? { restore } : {}),
      restarted,
    }
    await this.packet.call({ op: 'init', init, localMac: new Uint8Array(vxlanMac(nodeIp)) }, [...nat.transfer, ...zone.transfer, ...(restore ?? [])])
    // TCP DNS, and UDP from the node's own processes, reach a kernel socket on the DNS address (on lo).
    await this.packet.call({ op: 'start', dnsSockets: { host: cfg.dns.ip, port: 53 } })

    this.syncHealthServers()
    await this.syncExternalRoutes()
    this.services.reindex(this.current.services)
    this.warmChangePath()

    const handlers: Record<string, Handler> = {
      hello: () => ({ node: cfg.node, hostname: hostname(), peers: this.peers, pid: process.pid }),
      stats: async () => ({ counters: await this.counters(), dns: await this.dnsMetrics(), lastSyncMs: this.lastSyncMs }),
      capture: args => this.startCapture(args),
      peer: args => this.changePeer(args),
      reload: () => {
        this.reload()
        return { reloads: this.reloads, lastSyncMs: this.lastSyncMs }
      },
      ...(this.opts.testHooks ? testHooks(this.packet) : {}),
      ...(this.opts.handlers ? this.opts.handlers(this) : {}),
    }
    this.control = await serveControl(cfg.control, handlers)

    const every = (cfg.snapshot?.intervalSeconds ?? 10) * 1000
    if (every > 0)
      this.timers.push(
        setInterval(() => {
          void this.saveSnapshot()
        }, every),
      )
    if (this.source) {
      this.source.onChange(change => this.onChange(change))
      this.source.start()
    }
    this.log(`[agent] ${cfg.node.name} ready: ${this.compiled.svcPorts.length} service ports, ${peers.length} VXLAN peers, DNS ${cfg.dns.ip} (${cfg.dns.zone})`)
  }

  /**
   * Sends one service through the incremental path unchanged (updateNat, the delta images, both installs), before
   * the agent says it is ready: the first real change then runs compiled code instead of paying for it (at 20 000
   * services it took 25-50 ms on this thread and held the packet thread 6 ms, against 1-3 ms and 0.1 ms after).
   * Not counted as a reload: nobody asked for it.
   */
  private warmChangePath(): void {
    const svc = this.current.services[0]
    if (svc === undefined) return
    const reloads = this.reloads
    this.applyServices([svc], [])
    this.reloads = reloads
  }

  /**
   * Records packets into a pcapng until `count` records or `durationMs` pass. `target`: 'all', a pod or a service
   * ('name' in default, or 'ns/name'); a pod matches its IPs, a service its cluster IPs and endpoint addresses.
   */
  private async startCapture(args: Record<string, unknown>): Promise<{ path: string; records: number; addresses: string[] }> {
    const path = String(args['path'] ?? '')
    if (!path.startsWith('/')) throw new AgentError('capture: path must be absolute')
    const target = String(args['target'] ?? 'all')
    const addrs = target === 'all' ? [] : this.addressesOf(target)
    const ints = addrs.map(a => parseIpv4(a)).filter((a): a is number => a !== undefined)
    const count = Number(args['count'] ?? 1000)
    const r = await this.packet.call<{ records: number }>({
      op: 'capture',
      path,
      addresses: ints,
      pre: args['pre'] !== false,
      post: args['post'] !== false,
      maxRecords: count > 0 ? count : 1000,
      durationMs: Number(args['durationMs'] ?? 10_000),
    })
    return { path, records: r.records, addresses: addrs }
  }

  private addressesOf(target: string): string[] {
    const [ns, name] = target.includes('/') ? (target.split('/', 2) as [string, string]) : ['default', target]
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
    const op = String(args['op'] ?? 'add')
    const peer: VxlanPeer = { node: String(args['node'] ?? ''), ip: String(args['ip'] ?? ''), podCIDR: String(args['podCIDR'] ?? '') }
    const rest = this.peers.filter(p => p.node !== peer.node && p.ip !== peer.ip)
    if (op === 'add') {
      toPeer(peer, 'peer')
      this.setPeers([...rest, peer])
    } else if (op === 'remove') this.setPeers(rest)
    else throw new AgentError(`peer: op must be add or remove, got ${JSON.stringify(op)}`)
    return { peers: this.peers }
  }

  get snapshotPath(): string {
    return this.config.snapshot?.path ?? `${this.config.control}.conntrack`
  }

  /**
   * Writes the conntrack state atomically (a crash mid-write leaves the previous snapshot). The packet thread hands
   * it over a bounded chunk per request; the file is assembled here.
   */
  async saveSnapshot(): Promise<void> {
    // Streamed a chunk at a time (issue 14): a full table is never held twice on this thread.
    const tmp = `${this.snapshotPath}.tmp`
    let fd: number | undefined
    try {
      fd = openSync(tmp, 'w')
      writeSync(fd, snapshotHead(this.compiled))
      for (let c = 0; c >= 0; ) {
        const r = await this.packet.call<{ bytes: ArrayBuffer; next: number }>({ op: 'ctChunk', cursor: c, max: SNAPSHOT_CHUNK })
        writeSync(fd, snapshotBody(r.bytes))
        c = r.next
      }
      closeSync(fd)
      fd = undefined
      renameSync(tmp, this.snapshotPath)
    } catch (err) {
      if (fd !== undefined) closeSync(fd)
      this.log(`[agent] snapshot: ${(err as Error).message}`)
    }
  }

  /** The last snapshot, checked field by field and mapped onto the first table here (the packet thread only loads it). */
  private prepareRestore(): ArrayBuffer[] | undefined {
    let buf: Buffer
    try {
      buf = readFileSync(this.snapshotPath)
    } catch {
      return undefined
    }
    try {
      const { chunks, report } = prepareRestore(buf, this.compiled)
      if (report.problems.length > 0) this.log(`[agent] snapshot ${this.snapshotPath}: ${report.problems.join('; ')}`)
      return chunks
    } catch (err) {
      this.log(`[agent] ignoring snapshot ${this.snapshotPath}: ${(err as Error).message}`)
      return undefined
    }
  }

  /** Re-reads every manifest now (the `reload` control command); what changed is applied as on a file change. */
  reload(): void {
    if (!this.source) return
    const r = this.source.reload()
    if (r.applied && r.change === undefined) this.reloads++ // nothing changed: still a completed reload
  }

  /** Installs a new desired state in full (a full sync): NAT table and DNS zone together. */
  apply(cluster: Cluster): void {
    const prev = this.compiled
    this.compiled = compileNat(cluster, this.natCfg, prev)
    this.install(cluster, natInstall(this.compiled, prev), zoneInstall(this.zone.full(cluster, this.zone.serial + 1)))
    this.services.reindex(cluster.services)
  }

  /**
   * A few services changed (an endpoint came or went): only their NAT entries are recompiled and swapped in, so the
   * change reaches the packet path in milliseconds at any table size.
   */
  applyServices(changed: readonly Service[], deleted: readonly ServiceRef[]): void {
    const prev = this.compiled
    this.compiled = updateNat(prev, changed, deleted)
    const { services, replaced } = this.services.merge(this.current.services, changed, deleted)
    const cluster = { ...this.current, services }
    // the external routes follow externalIPs and LoadBalancer VIPs: only a change that has or had one moves them
    const routes = changed.some(hasExternalRoutes) || replaced.some(hasExternalRoutes)
    this.install(cluster, natInstall(this.compiled, prev), zoneInstall(this.zone.update(cluster, changed, deleted)), routes)
  }

  /** Sends the images to the packet thread (in order; a refused install is logged and counted there and here). */
  private install(cluster: Cluster, nat: ReturnType<typeof natInstall>, zone: ReturnType<typeof zoneInstall>, routes = true): void {
    this.current = cluster
    // A refused delta (the packet thread has another generation, e.g. after a control-thread restart) is answered
    // with a full image of the current state.
    const failed =
      (what: string, resend: () => void) =>
      (err: Error): void => {
        this.installErrors++
        this.log(`[agent] ${what} install refused: ${err.message}; sending a full image`)
        resend()
      }
    this.packet.call({ op: 'nat', install: nat.install }, nat.transfer).catch(
      failed('NAT', () => {
        const full = natInstall(this.compiled)
        this.packet.call({ op: 'nat', install: full.install }, full.transfer).catch(err => this.log(`[agent] NAT install: ${(err as Error).message}`))
      }),
    )
    this.packet.call({ op: 'zone', install: zone.install }, zone.transfer).catch(
      failed('zone', () => {
        const full = zoneInstall(this.zone.snapshot())
        this.packet.call({ op: 'zone', install: full.install }, full.transfer).catch(err => this.log(`[agent] zone install: ${(err as Error).message}`))
      }),
    )
    this.syncHealthServers()
    if (routes) this.routeSync = this.routeSync.then(() => this.syncExternalRoutes()).catch(err => this.log(`[agent] routes: ${(err as Error).message}`))
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
    for (const ip of [...wanted]) if (parseIpv4(ip) === undefined) wanted.delete(ip)
    await this.wiring.setExternalRoutes([...wanted])
  }

  /** The VXLAN peers (other nodes' pod CIDRs), e.g. from Node objects. */
  setPeers(peers: readonly VxlanPeer[]): void {
    const specs = peers.map((p, i) => toPeer(p, `peers[${i}]`))
    this.peers = [...peers]
    this.packet.call({ op: 'peers', peers: specs }).catch(err => this.log(`[agent] peers: ${(err as Error).message}`))
  }

  /** kube-proxy's healthCheckNodePort servers, on the node IP, for services with externalTrafficPolicy Local. */
  private syncHealthServers(): void {
    const wanted = new Set<number>()
    for (const hc of this.compiled.healthChecks.values()) wanted.add(hc.nodePort)
    for (const [port, srv] of this.health)
      if (!wanted.has(port)) {
        srv.close()
        this.health.delete(port)
      }
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
    for (const t of this.timers) clearInterval(t)
    await this.source?.stop()
    for (const s of this.health.values()) s.close()
    this.control?.close()
    if (this.started) await this.saveSnapshot()
    await this.dnsView?.server.close()
    await this.routeSync
    if (this.wiring && (this.opts.cleanupOnExit === true || !this.started)) await this.wiring.undo()
  }
}

const serviceKey = (s: { readonly namespace: string; readonly name: string }): string => `${s.namespace}/${s.name}`

/** Whether a service needs routes into the TUN (syncExternalRoutes): externalIPs or a LoadBalancer VIP. */
function hasExternalRoutes(svc: Service): boolean {
  return svc.externalIPs.length > 0 || svc.loadBalancerIngress.some(lb => lb.ipMode === 'VIP')
}

/**
 * The position of every service in the cluster's service list, so a change of a few services is merged in O(change)
 * plus one array copy, not by keying all 20 000 services again (mergeServices, a few ms and much garbage per change).
 * Built again when the list was replaced some other way (a full sync) or a service was deleted (rare: O(n) then).
 */
class ServiceIndex {
  private list: readonly Service[] | undefined
  private at = new Map<string, number>()

  /** `base` with `changed` replacing or adding by namespace/name and `deleted` removed; `replaced`: their old versions. */
  merge(base: readonly Service[], changed: readonly Service[], deleted: readonly ServiceRef[]): { services: Service[]; replaced: Service[] } {
    if (base !== this.list) this.reindex(base)
    const replaced: Service[] = []
    for (const s of [...changed, ...deleted]) {
      const i = this.at.get(serviceKey(s))
      if (i !== undefined) replaced.push(base[i]!)
    }
    if (deleted.length > 0) {
      const services = mergeServices(base, changed, deleted)
      this.reindex(services)
      return { services, replaced }
    }
    const services = base.slice()
    for (const svc of changed) {
      const k = serviceKey(svc)
      const i = this.at.get(k)
      if (i !== undefined) services[i] = svc
      else {
        this.at.set(k, services.length)
        services.push(svc)
      }
    }
    this.list = services
    return { services, replaced }
  }

  /** Indexes a list made some other way (a full sync): O(n) there, not on the next change. */
  reindex(list: readonly Service[]): void {
    this.at = new Map()
    for (let i = 0; i < list.length; i++) this.at.set(serviceKey(list[i]!), i)
    this.list = list
  }
}

/** Commands that make this thread (or a packet thread) fail, for tests of what the other threads do then. */
function testHooks(packet: Link): Record<string, Handler> {
  return {
    'test-crash-packet-thread': args => packet.call({ op: 'testCrashPacketThread', index: Number(args['index'] ?? 0) }),
    'test-crash': () => {
      setImmediate(() => {
        throw new Error('test-crash: the control thread fails on purpose')
      })
      return null
    },
    'test-stall': args => {
      const until = Date.now() + Math.min(Number(args['ms'] ?? 1000), 30_000)
      while (Date.now() < until) {
        /* busy: the control thread does nothing else meanwhile */
      }
      return null
    },
  }
}

// `tundra run` on a node, control side: sources (API watch or manifests), the sync runner, the agent, metrics and
// health servers. It runs on the agent's control thread (control-thread.ts); the packet thread is `packet`.
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { hostname, networkInterfaces } from 'node:os'
import { Agent } from '../agent/agent'
import type { AgentConfig, VxlanPeer } from '../agent/config'
import type { Link } from '../agent/link'
import { inspectHandlers } from '../inspect/handlers'
import type { Cluster } from '../model/cluster'
import { applyBatch, clusterOf } from '../run/apply'
import { TundraMetrics } from '../metrics/registry'
import { natEndpointCounters, type BackendRow } from '../metrics/endpoints'
import { signalRows, type SignalRow } from '../nat/signals'
import { startServers } from '../metrics/server'
import { natConntrackEntries, natConntrackMax, natDrops, natNoLocalEndpoints, natServiceCounters } from '../metrics/nat'
import { createSource, mergeFlags, nodeNameOf, readKubeProxyConfig, type RunConfig } from '../run/index'
import { RUN_FLAGS } from '../run/flags'
import { kubeProxyConfigurationOf } from '../run/kpshape'
import { conntrackTimeoutsOf } from '../run/kpconfig'
import type { ObjectStore } from '../run/store'
import { SyncRunner, type SyncBatch } from '../run/sync'
import { LAST_STATE_KINDS, loadLastState, saveLastState } from '../run/persist'
import { configureLogging, logV } from './log'
import { parseWebAddr, startWebView } from '../web/server'

const VXLAN_VNI = 4096
const VXLAN_PORT = 4789
/** Endpoint counter slots of endpoints gone from the table are freed at least this often (also without scrapes). */
const ENDPOINT_RELEASE_MS = 60_000

/** The interface of the default route: where NodePort traffic arrives when the config names none. */
function defaultUplink(): string {
  try {
    const out = execFileSync('ip', ['-o', 'route', 'show', 'default'], { encoding: 'utf8' })
    return /\bdev (\S+)/.exec(out)?.[1] ?? 'eth0'
  } catch {
    return 'eth0'
  }
}

/**
 * The node's interface addresses: what a nodePortAddresses CIDR selects from (kube-proxy's GetNodeIPs reads the
 * interfaces) and, with an empty list in iptables mode, where NodePorts answer (kube-proxy's `addrtype LOCAL`).
 * Every address but loopback, link-local and tundra's own TUN; read at start.
 */
function localAddresses(cfg: RunConfig): string[] {
  const out: string[] = []
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    if (name === cfg.tundra.tun.name) continue
    for (const a of addrs ?? []) if (!a.internal && !a.address.startsWith('fe80:') && !a.address.startsWith('169.254.')) out.push(a.address)
  }
  return out
}

function peersOf(cluster: Cluster, self: string): VxlanPeer[] {
  const out: VxlanPeer[] = []
  for (const n of cluster.nodes) {
    if (n.name === self) continue
    const ip = n.addresses.find(a => !a.includes(':'))
    const podCIDR = n.podCIDRs.find(c => !c.includes(':'))
    if (ip && podCIDR) out.push({ node: n.name, ip, podCIDR })
  }
  return out
}

/** The kube-proxy mode whose rules the dataplane follows: nftables when configured, else iptables (kube-proxy's default
 * on Linux), as `tundra dump` renders them. */
function proxyModeOf(cfg: RunConfig): 'iptables' | 'nftables' {
  return cfg.mode === 'nftables' ? 'nftables' : 'iptables'
}

function agentConfigFor(cfg: RunConfig, cluster: Cluster, nodeName: string): AgentConfig {
  const node = cluster.nodes.find(n => n.name === nodeName)
  const ip = cfg.bindAddress && cfg.bindAddress !== '0.0.0.0' && cfg.bindAddress !== '::' ? cfg.bindAddress : node?.addresses.find(a => !a.includes(':'))
  if (!ip) throw new Error(`node ${nodeName}: no IPv4 address (no Node object with one, and no --bind-address)`)
  const v4 = (l: readonly string[]): string | undefined => l.find(c => !c.includes(':'))
  const v6 = (l: readonly string[]): string | undefined => l.find(c => c.includes(':'))
  const podCIDR = v4(node?.podCIDRs ?? []) ?? v4(cfg.clusterCIDRs) ?? '10.100.0.0/16'
  // detectLocalMode NodeCIDR: only this node's podCIDRs count as local (kube-proxy's NewDetectLocalByCIDR(podCIDR))
  if (cfg.detectLocalMode === 'NodeCIDR' && (node?.podCIDRs.length ?? 0) === 0)
    throw new Error(`detectLocalMode NodeCIDR: node ${nodeName} has no spec.podCIDRs`)
  const local = cfg.detectLocalMode === 'NodeCIDR' ? (node?.podCIDRs ?? []) : cfg.clusterCIDRs
  const t = cfg.tundra
  const clusterCIDR6 = v6(local)
  const serviceCIDR6 = v6(t.serviceCIDRs)
  return {
    node: { name: nodeName, ip, podCIDR, uplink: t.uplink || defaultUplink(), addresses: localAddresses(cfg) },
    clusterCIDR: v4(local) ?? podCIDR,
    serviceCIDR: v4(t.serviceCIDRs) ?? '10.96.0.0/12',
    ...(clusterCIDR6 !== undefined ? { clusterCIDR6 } : {}),
    ...(serviceCIDR6 !== undefined ? { serviceCIDR6 } : {}),
    ...(cfg.masqueradeAll ? { masqueradeAll: true } : {}),
    manifests: [],
    dns: { ip: t.dns.ip, zone: t.dns.zone, upstreams: t.dns.upstreams, ttl: t.dns.ttl },
    tun: { name: t.tun.name, vnetHdr: t.tun.offloads, queues: t.tun.queues, io: t.tun.io, busyPollUs: t.tun.busyPollUs, packetThreads: t.tun.packetThreads },
    vxlan: { vni: VXLAN_VNI, port: VXLAN_PORT, peers: peersOf(cluster, nodeName) },
    control: t.control,
    ...(cfg.nodePortAddresses.length > 0 ? { nodePortAddresses: cfg.nodePortAddresses } : {}),
    proxyMode: proxyModeOf(cfg),
    localhostNodePorts: cfg.localhostNodePorts,
    lb: t.lb,
    scheduler: t.scheduler,
    ...(cfg.mode === 'ipvs' ? { ipvs: { excludeCIDRs: cfg.ipvs.excludeCIDRs } } : {}),
    icmp: t.icmp,
    ...(t.icmpRateLimit !== undefined ? { icmpRateLimit: t.icmpRateLimit } : {}),
    ...(t.snapshot.path ? { snapshot: { path: t.snapshot.path, intervalSeconds: t.snapshot.intervalSeconds } } : {}),
    ...(t.failover ? { failover: t.failover } : {}),
    ...(t.outlierEjection ? { outlierEjection: t.outlierEjection } : {}),
    ...(t.signals ? { signals: t.signals } : {}),
  }
}

/** Signal rows with the node each endpoint address runs on (from the EndpointSlices; '' when unknown). */
function withNodes(rows: readonly SignalRow[], cluster: Cluster): BackendRow[] {
  const node = new Map<string, string>()
  for (const s of cluster.services) for (const e of s.endpoints) if (e.nodeName !== undefined) node.set(e.ip, e.nodeName)
  return rows.map(r => ({ ...r, node: node.get(r.endpoint.replace(/^\[?(.*?)\]?:\d+$/, '$1')) ?? '' }))
}

/** The conntrack snapshot's file (the agent's default when the config names none). */
export function snapshotPathOf(cfg: RunConfig): string {
  return cfg.tundra.snapshot.path || `${cfg.tundra.control}.conntrack`
}

/** The last known Services, EndpointSlices and Nodes (src/run/persist.ts): beside the conntrack snapshot. */
export function lastStatePathOf(cfg: RunConfig): string {
  return `${snapshotPathOf(cfg)}.objects`
}

/**
 * Applies one batch (src/run/apply.ts); a full one also refreshes the VXLAN peers from the Node objects. With -v=2
 * and more it logs each sync as kube-proxy does ("Syncing ... rules", "SyncProxyRules complete" with the elapsed
 * time and the counts), with -v=4 each changed Service and EndpointSlice owner.
 */
function applyRunBatch(agent: Agent, store: ObjectStore, batch: SyncBatch, nodeName: string, verbosity: number): void {
  const start = performance.now()
  if (verbosity >= 2) {
    logV(2, `[sync] Syncing tundra rules full=${batch.full} reason=${batch.reason} services=${batch.services.size} nodes=${batch.nodes.size}`)
  }
  if (verbosity >= 4) {
    for (const k of batch.change.services) logV(4, `[sync] Service changed service=${k}`)
    for (const k of batch.change.endpoints) logV(4, `[sync] Endpoints changed service=${k}`)
    for (const k of batch.change.nodes) logV(4, `[sync] Node changed node=${k}`)
  }
  const cluster = applyBatch(agent, store, batch)
  if (cluster !== undefined && (batch.full || batch.nodes.size > 0)) agent.setPeers(peersOf(cluster, nodeName))
  if (verbosity >= 2) {
    // O(service ports), on the control thread, only when asked for
    let ports = 0
    let endpoints = 0
    for (const sp of agent.table().svcPorts) {
      if (sp === undefined) continue
      ports++
      endpoints += sp.serving.count
    }
    const elapsed = (performance.now() - start).toFixed(3)
    logV(2, `[sync] SyncProxyRules complete elapsed=${elapsed}ms full=${batch.full} numServicePorts=${ports} numEndpoints=${endpoints}`)
  }
}

/** Starts `tundra run` from its parsed command-line options; stop() ends it gracefully (conntrack snapshot kept). */
export async function runNode(
  o: Readonly<Record<string, unknown>>,
  packet: Link,
  log: (l: string) => void,
  testHooks = false,
): Promise<{ stop(): Promise<void> }> {
  const file = typeof o['config'] === 'string' ? readKubeProxyConfig(o['config']) : undefined
  const flags: Record<string, unknown> = {}
  for (const f of RUN_FLAGS) if (o[f.key] !== undefined) flags[f.key] = o[f.key]
  const cfg = mergeFlags(file, flags)
  if (cfg.tundra.web.addr !== '') {
    try {
      parseWebAddr(cfg.tundra.web.addr, cfg.tundra.web.allowRemote)
    } catch (err) {
      throw new Error(`tundra.web.addr (--web-addr): ${(err as Error).message}`)
    }
  }
  const logging = configureLogging(cfg.logging)
  await packet.call({ op: 'logging', format: logging.format, verbosity: logging.verbosity })
  for (const w of cfg.warnings) log(`[run] warning: ${w}`)
  if (cfg.oomScoreAdj !== undefined) writeFileSync('/proc/self/oom_score_adj', `${cfg.oomScoreAdj}\n`)
  const nodeName = nodeNameOf(cfg, hostname())
  const manifests = Array.isArray(o['filename']) ? (o['filename'] as string[]) : undefined
  const master = cfg.master || undefined
  // watch events at -v=5 (the function is passed only then: no line is even formatted below it)
  const watch = { ...(master ? { master } : {}), ...(logging.verbosity >= 5 ? { logV } : {}) }
  const source = createSource(cfg, { ...(manifests ? { manifests } : {}), nodeName, log, watch })
  // From the API: program the last known state first. The API server may be reachable only through a Service VIP
  // that this dataplane provides (in-cluster config), so waiting for the first LIST could mean waiting forever.
  const statePath = lastStatePathOf(cfg)
  const last = manifests ? undefined : loadLastState(statePath)
  if (last instanceof Error) log(`[run] warning: last known state not used: ${last.message}`)
  const fromLast = last !== undefined && !(last instanceof Error)
  if (fromLast) source.store.replace(LAST_STATE_KINDS, last.objects)
  source.start()
  let stopping = false
  const synced = source.waitForSync()
  if (fromLast) {
    log(`[run] ${nodeName}: programming the last known state (${last.objects.length} objects, saved ${last.savedAt}) before the first list of the API server`)
    synced.then(
      () => log(`[run] ${nodeName}: first list of the API server done; it replaces the last known state`),
      (err: Error) => {
        if (!stopping) {
          log(`tundra: ${err.message}`)
          process.exitCode = 1
          void packet.call({ op: 'exit', code: 1 }).catch(() => {})
        }
      },
    )
  } else {
    log(`[run] ${nodeName}: waiting for the first sync of ${manifests ? manifests.join(', ') : 'the API server'}…`)
    await synced
  }
  const first = clusterOf(source.store)
  const agent = await Agent.start(agentConfigFor(cfg, first, nodeName), {
    cluster: first,
    handlers: inspectHandlers,
    log,
    packet,
    testHooks,
    engine: {
      ...(cfg.conntrack.max > 0 ? { conntrackMax: cfg.conntrack.max } : {}),
      timeouts: conntrackTimeoutsOf(cfg),
      invalid: cfg.conntrack.tcpBeLiberal ? 'pass' : 'drop',
    },
  })
  const runner = new SyncRunner({
    apply: batch => applyRunBatch(agent, source.store, batch, nodeName, logging.verbosity),
    minSyncPeriodMs: cfg.minSyncPeriod * 1000,
    syncPeriodMs: cfg.syncPeriod * 1000,
    log,
  })
  runner.followNode(source.store, nodeName)
  source.onChange(change => runner.queue(change))
  runner.start()
  // the endpoint book's slots of endpoints that left the table, freed on the packet thread with the next request (a
  // scrape, or the timer below, so that a node nobody scrapes does not run out of slots); one request gives both the
  // packet/new-connection rows and the signal rows
  let release: number[] = []
  let lastEndpointRead = 0
  const endpointRows = async (): Promise<{ rows: ReturnType<typeof natEndpointCounters>['rows']; signals: SignalRow[] }> => {
    const taken = release
    release = []
    lastEndpointRead = Date.now()
    const ec = await agent.live().endpointCounters(taken)
    const table = agent.table()
    const eps = natEndpointCounters(table, ec)
    release = eps.release
    return { rows: eps.rows, signals: signalRows(table, ec) }
  }
  const releaseTimer = setInterval(() => {
    if (Date.now() - lastEndpointRead >= ENDPOINT_RELEASE_MS) endpointRows().catch(() => {})
  }, ENDPOINT_RELEASE_MS)
  releaseTimer.unref()
  const metrics = new TundraMetrics({
    dataplane: async () => {
      const live = agent.live()
      const [c, sc, eps, dns] = await Promise.all([agent.counters(), live.serviceCounters(), endpointRows(), agent.dnsMetrics()])
      const table = agent.table()
      return {
        backends: withNodes(eps.signals, agent.cluster()),
        services: natServiceCounters(table, sc),
        endpoints: eps.rows,
        drops: natDrops(c),
        conntrackEntries: natConntrackEntries(c),
        conntrackMax: natConntrackMax(c),
        dns,
        batch: { packets: c['device_packets'] ?? 0, batches: c['device_batches'] ?? 0, udpCoalesced: c['udpCoalesced'] ?? 0 },
        noLocalEndpoints: natNoLocalEndpoints(table),
      }
    },
    source: () => source.status(),
    log,
  })
  metrics.bindSync(runner)
  metrics.countInitialObjects(source.store.list('Service').length, source.store.list('EndpointSlice').length)
  const servers = await startServers({
    metricsBindAddress: cfg.metricsBindAddress,
    healthzBindAddress: cfg.healthzBindAddress,
    metrics,
    health: () => runner.health(),
    configz: () => kubeProxyConfigurationOf(cfg),
    hardFail: cfg.bindAddressHardFail,
    log,
  })
  log(`[run] metrics on ${cfg.metricsBindAddress}/metrics, health on ${cfg.healthzBindAddress}/healthz`)
  const web = cfg.tundra.web.addr === '' ? undefined : await startWebView(agent, { addr: cfg.tundra.web.addr, allowRemote: cfg.tundra.web.allowRemote, log })
  // the last known state follows the store, written with the conntrack snapshot's period and on stop; only what a
  // complete list produced (or what was loaded) is written, never a store still filling up
  let dirty = false
  const saveState = (): void => {
    if (manifests || !dirty || !(source.hasSynced() || fromLast)) return
    dirty = false
    try {
      saveLastState(statePath, source.store.list('Service').concat(source.store.list('EndpointSlice'), source.store.list('Node')))
    } catch (err) {
      log(`[run] warning: last known state: ${(err as Error).message}`)
    }
  }
  source.onChange(() => {
    dirty = true
  })
  synced.then(
    () => {
      dirty = true
      saveState()
    },
    () => {},
  )
  const every = (cfg.tundra.snapshot.intervalSeconds || 10) * 1000
  const stateTimer = setInterval(saveState, every)
  return {
    stop: async () => {
      stopping = true
      clearInterval(stateTimer)
      clearInterval(releaseTimer)
      // the runner may be mid-sync: wait for it, and for the source, before the agent goes
      await Promise.all([runner.stop(), source.stop()])
      saveState()
      await Promise.all([servers.close(), web?.close(), agent.stop()])
    },
  }
}

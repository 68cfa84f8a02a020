// `tundra run`: the node agent as a kube-proxy replacement. Desired state comes from the API server (or -f
// manifests), changes are batched like kube-proxy's minSyncPeriod and applied incrementally, and metrics and health
// are served where kube-proxy serves them.
import { execFileSync } from 'node:child_process'
import { hostname } from 'node:os'
import type { Command } from 'commander'
import { Agent } from '../agent/agent'
import type { AgentConfig, VxlanPeer } from '../agent/config'
import { inspectHandlers } from '../inspect/handlers'
import { normalize } from '../k8s/normalize'
import type { Cluster, Service } from '../model/cluster'
import type { ServiceRef } from '../nat/compile'
import { TundraMetrics } from '../metrics/registry'
import { startServers } from '../metrics/server'
import { natConntrackEntries, natConntrackMax, natDrops, natNoLocalEndpoints, natServiceCounters } from '../metrics/nat'
import {
  createSource, mergeFlags, nodeNameOf, readKubeProxyConfig, RUN_FLAGS, SyncRunner,
  type ObjectStore, type RunConfig, type SyncBatch,
} from '../run/index'

/** Beyond this many changed services in one batch a full compile is as cheap as the incremental path. */
const INCREMENTAL_LIMIT = 256
const VXLAN_VNI = 4096
const VXLAN_PORT = 4789

function clusterOf(store: ObjectStore): Cluster {
  return normalize(store.objects(), { allocate: false }).cluster
}

/** The interface of the default route: where NodePort traffic arrives when the config names none. */
function defaultUplink(): string {
  try {
    const out = execFileSync('ip', ['-o', 'route', 'show', 'default'], { encoding: 'utf8' })
    return /\bdev (\S+)/.exec(out)?.[1] ?? 'eth0'
  } catch { return 'eth0' }
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

export function agentConfigFor(cfg: RunConfig, cluster: Cluster, nodeName: string): AgentConfig {
  const node = cluster.nodes.find(n => n.name === nodeName)
  const ip = cfg.bindAddress && cfg.bindAddress !== '0.0.0.0' && cfg.bindAddress !== '::'
    ? cfg.bindAddress : node?.addresses.find(a => !a.includes(':'))
  if (!ip) throw new Error(`node ${nodeName}: no IPv4 address (no Node object with one, and no --bind-address)`)
  const podCIDR = node?.podCIDRs.find(c => !c.includes(':')) ?? cfg.clusterCIDRs[0] ?? '10.100.0.0/16'
  const t = cfg.tundra
  return {
    node: { name: nodeName, ip, podCIDR, uplink: t.uplink || defaultUplink() },
    clusterCIDR: cfg.clusterCIDRs[0] ?? podCIDR,
    serviceCIDR: t.serviceCIDRs[0] ?? '10.96.0.0/12',
    manifests: [],
    dns: { ip: t.dns.ip, zone: t.dns.zone, upstreams: t.dns.upstreams, ttl: t.dns.ttl },
    tun: { name: t.tun.name, vnetHdr: t.tun.offloads, queues: t.tun.queues, io: t.tun.io, busyPollUs: t.tun.busyPollUs },
    vxlan: { vni: VXLAN_VNI, port: VXLAN_PORT, peers: peersOf(cluster, nodeName) },
    control: t.control,
    ...(cfg.nodePortAddresses.length > 0 ? { nodePortAddresses: cfg.nodePortAddresses } : {}),
    lb: t.lb,
    icmp: t.icmp,
    ...(t.snapshot.path ? { snapshot: { path: t.snapshot.path, intervalSeconds: t.snapshot.intervalSeconds } } : {}),
  }
}

/** Applies one batch: the few services that changed through updateNat, anything bigger as a full compile. */
function applyBatch(agent: Agent, store: ObjectStore, batch: SyncBatch, nodeName: string): void {
  if (batch.full || batch.services.size > INCREMENTAL_LIMIT || batch.nodes.size > 0) {
    const cluster = clusterOf(store)
    agent.apply(cluster)
    if (batch.full || batch.nodes.size > 0) agent.setPeers(peersOf(cluster, nodeName))
    return
  }
  const changed: Service[] = []
  const deleted: ServiceRef[] = []
  for (const key of batch.services) {
    const objs = store.serviceObjects(key)
    const svc = objs.length > 0 ? normalize(objs, { allocate: false }).cluster.services[0] : undefined
    if (svc) changed.push(svc)
    else {
      const [namespace, name] = key.split('/', 2) as [string, string]
      deleted.push({ namespace, name })
    }
  }
  agent.applyServices(changed, deleted)
}

export function registerRun(program: Command): void {
  const cmd = program.command('run')
    .description('run as the node agent replacing kube-proxy (and CoreDNS): API watch or -f manifests, metrics, health, restarts that keep flows')
    .option('--config <file>', 'a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1), with an optional tundra: section')
    .option('-f, --filename <file|dir>', 'read desired state from manifests (re-read on change) instead of the API server', (v: string, p: string[] = []) => [...p, v])
  for (const f of RUN_FLAGS) {
    const spec = f.type === 'bool' ? f.flag : `${f.flag} ${f.arg ?? '<value>'}`
    cmd.option(spec, f.help)
  }
  cmd.action(async (o: Record<string, unknown>) => {
    const log = (l: string): void => { process.stderr.write(l + '\n') }
    const file = typeof o['config'] === 'string' ? readKubeProxyConfig(o['config']) : undefined
    const flags: Record<string, unknown> = {}
    for (const f of RUN_FLAGS) if (o[f.key] !== undefined) flags[f.key] = o[f.key]
    const cfg = mergeFlags(file, flags)
    for (const w of cfg.warnings) log(`[run] warning: ${w}`)
    const nodeName = nodeNameOf(cfg, hostname())
    const manifests = Array.isArray(o['filename']) ? o['filename'] as string[] : undefined
    const source = createSource(cfg, { ...(manifests ? { manifests } : {}), nodeName, log })
    source.start()
    log(`[run] ${nodeName}: waiting for the first sync of ${manifests ? manifests.join(', ') : 'the API server'}…`)
    await source.waitForSync()
    const first = clusterOf(source.store)
    const agent = await Agent.start(agentConfigFor(cfg, first, nodeName), {
      cluster: first, handlers: inspectHandlers, log,
      engine: {
        ...(cfg.conntrack.max > 0 ? { conntrackMax: cfg.conntrack.max } : {}),
        timeouts: {
          tcpEstablished: cfg.conntrack.tcpEstablishedTimeout, tcpCloseWait: cfg.conntrack.tcpCloseWaitTimeout,
          udp: cfg.conntrack.udpTimeout, udpStream: cfg.conntrack.udpStreamTimeout,
        },
        invalid: cfg.conntrack.tcpBeLiberal ? 'pass' : 'drop',
      },
    })
    const runner = new SyncRunner({
      apply: batch => applyBatch(agent, source.store, batch, nodeName),
      minSyncPeriodMs: cfg.minSyncPeriod * 1000,
      syncPeriodMs: cfg.syncPeriod * 1000,
      log,
    })
    runner.followNode(source.store, nodeName)
    source.onChange(change => runner.queue(change))
    runner.start()
    const metrics = new TundraMetrics({
      dataplane: () => {
        const e = agent.engine()
        const c = agent.counters()
        const dns = agent.dns().metrics()
        return {
          services: natServiceCounters(e), drops: natDrops(e), conntrackEntries: natConntrackEntries(e),
          conntrackMax: natConntrackMax(e), dns: { queries: dns.queries, responses: dns.responses },
          batch: { packets: c['device_packets'] ?? 0, batches: c['device_batches'] ?? 0 },
          noLocalEndpoints: natNoLocalEndpoints(agent.table()),
        }
      },
      source: () => source.status(),
      log,
    })
    metrics.bindSync(runner)
    const servers = await startServers({
      metricsBindAddress: cfg.metricsBindAddress, healthzBindAddress: cfg.healthzBindAddress,
      metrics, health: () => runner.health(), configz: () => cfg, log,
    })
    log(`[run] metrics on ${cfg.metricsBindAddress}/metrics, health on ${cfg.healthzBindAddress}/healthz`)
    let stopping = false
    const stop = (sig: string): void => {
      if (stopping) return
      stopping = true
      log(`[run] ${sig}: stopping (conntrack snapshot kept for the next start)`)
      Promise.all([runner.stop(), source.stop(), servers.close(), agent.stop()]).then(() => process.exit(0), err => { log(`[run] stop: ${(err as Error).message}`); process.exit(1) })
    }
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGINT', () => stop('SIGINT'))
  })
}

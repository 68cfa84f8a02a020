// `tundra agent --config FILE`: one node's dataplane, as the lab (or a user) starts it.
import { readFileSync } from 'node:fs'
import type { Command } from 'commander'
import type { AgentConfig } from '../agent/config'
import { Agent } from '../agent/agent'
import { inspectHandlers } from '../inspect/handlers'

/** Reads and checks an agent config; errors name the file and the field. */
export function readAgentConfig(file: string): AgentConfig {
  let raw: unknown
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`)
  }
  const need = (path: string, type: string): void => {
    let v: unknown = raw
    for (const k of path.split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined
    const ok = type === 'array' ? Array.isArray(v) : typeof v === type
    if (!ok) throw new Error(`${file}: ${path}: expected ${type === 'array' ? 'a list' : `a ${type}`}, got ${JSON.stringify(v)}`)
  }
  for (const f of ['node.name', 'node.ip', 'node.podCIDR', 'node.uplink', 'clusterCIDR', 'serviceCIDR', 'dns.ip', 'dns.zone', 'tun.name', 'control']) need(f, 'string')
  for (const f of ['manifests', 'dns.upstreams', 'vxlan.peers']) need(f, 'array')
  need('vxlan.vni', 'number')
  need('tun.vnetHdr', 'boolean')
  const tun = (raw as { tun: { io?: unknown; busyPollUs?: unknown; queues?: unknown } }).tun
  if (tun.io !== undefined && tun.io !== 'inline' && tun.io !== 'thread') throw new Error(`${file}: tun.io: expected "inline" or "thread", got ${JSON.stringify(tun.io)}`)
  if (tun.busyPollUs !== undefined && !(Number.isInteger(tun.busyPollUs) && (tun.busyPollUs as number) >= 0 && (tun.busyPollUs as number) <= 1e6)) {
    throw new Error(`${file}: tun.busyPollUs: expected an integer 0..1000000 (µs), got ${JSON.stringify(tun.busyPollUs)}`)
  }
  if (tun.queues !== undefined && !(Number.isInteger(tun.queues) && (tun.queues as number) >= 1 && (tun.queues as number) <= 64)) {
    throw new Error(`${file}: tun.queues: expected an integer 1..64, got ${JSON.stringify(tun.queues)}`)
  }
  return raw as AgentConfig
}

export function registerAgent(program: Command): void {
  program.command('agent')
    .description("run one node's dataplane (TUN, Service NAT, cluster DNS, VXLAN) from an agent config")
    .requiredOption('--config <file>', 'agent config (JSON), as `tundra lab up` writes it')
    .option('--cleanup-on-exit', 'remove the node wiring on exit (by default it stays, like kube-proxy\'s rules, so a restart keeps flows)')
    .action(async (o: { config: string; cleanupOnExit?: boolean }) => {
      const cfg = readAgentConfig(o.config)
      const agent = await Agent.start(cfg, { cleanupOnExit: o.cleanupOnExit === true, handlers: inspectHandlers })
      let stopping = false
      const stop = (sig: string): void => {
        if (stopping) return
        stopping = true
        agent.log(`[agent] ${sig}: stopping`)
        agent.stop().then(() => process.exit(0), err => { agent.log(`[agent] stop: ${(err as Error).message}`); process.exit(1) })
      }
      process.on('SIGTERM', () => stop('SIGTERM'))
      process.on('SIGINT', () => stop('SIGINT'))
    })
}

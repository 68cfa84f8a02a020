// Reads an agent config file (JSON, as `tundra lab up` writes it) and checks it; errors name the file and the field.
import { readFileSync } from 'node:fs'
import { tunIoError, tunValueError, type AgentConfig } from './config'
import { connectOptions, type ConnectConfig } from '../nat/failover'

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
  for (const f of ['node.name', 'node.ip', 'node.podCIDR', 'node.uplink', 'clusterCIDR', 'serviceCIDR', 'dns.ip', 'dns.zone', 'tun.name', 'control'])
    need(f, 'string')
  for (const f of ['manifests', 'dns.upstreams', 'vxlan.peers']) need(f, 'array')
  need('vxlan.vni', 'number')
  need('tun.vnetHdr', 'boolean')
  const tun = (raw as { tun: { io?: unknown; busyPollUs?: unknown; queues?: unknown; packetThreads?: unknown } }).tun
  const ioErr = tunIoError(tun.io)
  if (ioErr !== undefined) throw new Error(`${file}: tun.io: ${ioErr}`)
  for (const k of ['busyPollUs', 'queues', 'packetThreads'] as const) {
    const err = tun[k] === undefined ? undefined : tunValueError(k, tun[k])
    if (err !== undefined) throw new Error(`${file}: tun.${k}: ${err}`)
  }
  const pt = tun.packetThreads
  if (pt !== undefined && (pt as number) > 1 && tun.queues !== undefined && tun.queues !== pt) {
    throw new Error(`${file}: tun.queues (${String(tun.queues)}) must equal tun.packetThreads (${String(pt)}): each packet thread reads one queue`)
  }
  if (pt !== undefined && (pt as number) > 1 && tun.io === 'thread') {
    throw new Error(`${file}: tun.io "thread" with tun.packetThreads > 1: packet threads read their queue inline`)
  }
  const web = (raw as { web?: unknown }).web
  if (web !== undefined) {
    const w = web as { addr?: unknown; allowRemote?: unknown } | null
    if (w === null || typeof w !== 'object' || typeof w.addr !== 'string' || (w.allowRemote !== undefined && typeof w.allowRemote !== 'boolean')) {
      throw new Error(`${file}: web: expected { "addr": "127.0.0.1:9099", "allowRemote"?: false }, got ${JSON.stringify(web)}`)
    }
  }
  const rl = (raw as { icmpRateLimit?: unknown }).icmpRateLimit
  if (rl !== undefined) {
    const r = rl as { perSecond?: unknown; burst?: unknown } | null
    const int = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 1e6
    if (r === null || typeof r !== 'object' || !int(r.perSecond) || !int(r.burst)) {
      throw new Error(`${file}: icmpRateLimit: expected { "perSecond": 0..1000000, "burst": 0..1000000 } (integers), got ${JSON.stringify(rl)}`)
    }
  }
  try {
    connectOptions(raw as ConnectConfig, typeof pt === 'number' ? pt : 1)
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`)
  }
  return raw as AgentConfig
}

/** Checks an agent config's failover / outlierEjection / signals sections (nat/failover.ts connectOptions); throws a RangeError naming the field. */
export function checkConnectConfig(c: ConnectConfig, packetThreads = 1): void {
  connectOptions(c, packetThreads)
}

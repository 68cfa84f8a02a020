// `tundra run --cleanup` (kube-proxy's flag): removes everything `tundra run` left on the node and exits. A stopped
// tundra leaves its wiring in place on purpose (rules, table 190 with its blackhole fallback, the service CIDR's
// blackhole, the DNS address), so that a restart keeps flows; switching the node back to kube-proxy needs it gone.
//
// What it removes: the wiring, replayed from its journal (src/agent/wiring.ts: sysctls back to the values found before
// tundra first ran), the TUN if it still exists, and tundra's files (wiring journal, conntrack snapshot, last known
// state, control socket). It refuses while a tundra still answers on the control socket.
import { execFileSync } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { cleanupWiring } from '../agent/wiring'
import { mergeFlags, readKubeProxyConfig, type RunConfig } from '../run/index'
import { RUN_FLAGS } from '../run/flags'
import { lastStatePathOf, snapshotPathOf } from './run-node'

const PROBE_TIMEOUT_MS = 1000

/** true when something accepts connections on the unix socket (a running tundra). */
function answers(path: string): Promise<boolean> {
  if (!existsSync(path)) return Promise.resolve(false)
  return new Promise(resolve => {
    const s = connect(path)
    const done = (v: boolean): void => {
      s.destroy()
      resolve(v)
    }
    s.setTimeout(PROBE_TIMEOUT_MS, () => done(false))
    s.once('connect', () => done(true))
    s.once('error', () => done(false))
  })
}

function linkExists(name: string): boolean {
  try {
    execFileSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** The node's settings as `tundra run` would read them (config file and flags). */
function runConfigOf(o: Readonly<Record<string, unknown>>): RunConfig {
  const file = typeof o['config'] === 'string' ? readKubeProxyConfig(o['config']) : undefined
  const flags: Record<string, unknown> = {}
  for (const f of RUN_FLAGS) if (o[f.key] !== undefined) flags[f.key] = o[f.key]
  return mergeFlags(file, flags)
}

/** Removes what `tundra run` with these options made; returns what it did, one line each. */
export async function cleanupNode(o: Readonly<Record<string, unknown>>): Promise<string[]> {
  const cfg = runConfigOf(o)
  const t = cfg.tundra
  if (await answers(t.control)) {
    throw new Error(`a tundra is running on this node (it answers on ${t.control}): stop it first, then run --cleanup`)
  }
  const v6 = (cidrs: readonly string[]): string | undefined => cidrs.find(c => c.includes(':'))
  const v4 = (cidrs: readonly string[]): string | undefined => cidrs.find(c => !c.includes(':'))
  const done = await cleanupWiring({
    control: t.control,
    tun: t.tun.name,
    dnsIP: t.dns.ip,
    clusterCIDR: v4(cfg.clusterCIDRs) ?? '10.100.0.0/16',
    serviceCIDR: v4(t.serviceCIDRs) ?? '10.96.0.0/12',
    ...(v6(cfg.clusterCIDRs) !== undefined ? { clusterCIDR6: v6(cfg.clusterCIDRs)! } : {}),
    ...(v6(t.serviceCIDRs) !== undefined ? { serviceCIDR6: v6(t.serviceCIDRs)! } : {}),
  })
  if (linkExists(t.tun.name)) {
    execFileSync('ip', ['link', 'del', 'dev', t.tun.name])
    done.push(`ip link del ${t.tun.name}`)
  }
  const snapshot = snapshotPathOf(cfg)
  for (const f of [snapshot, `${snapshot}.tmp`, lastStatePathOf(cfg), `${lastStatePathOf(cfg)}.tmp`, t.control]) {
    if (existsSync(f)) {
      rmSync(f, { force: true })
      done.push(`removed ${f}`)
    }
  }
  return done
}

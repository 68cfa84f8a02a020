// Section 2a, control plane: tundra's full compile and one-endpoint update (+ engine swap) at 1 000 / 10 000 / 20 000
// services × 10 endpoints, against loading the same rules into the kernel (iptables-restore with the nf_tables and the
// legacy backend, nft -f) in a fresh namespace, full and as kube-proxy's partial sync of the same change.
import { compileNat, updateNat } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { dumpRules } from '../../src/kubeproxy/dump'
import { haveCommand, run } from '../../src/netns/netns'
import type { Cluster, Service } from '../../src/model/cluster'
import { dropTopology, newTopology } from '../lib/labs'
import { progress } from '../lib/progress'
import { iptablesDelta, nftDelta } from '../lib/ruleset-delta'
import { median } from '../lib/stats'
import { NAT_CONFIG, PROXY_OPTIONS, synthCluster, withMovedEndpoint } from '../lib/synth'

export type KernelLoader = 'iptables-nft' | 'iptables-legacy' | 'nftables'

export interface KernelLoad {
  /** wall time of one full load into an empty namespace (ip netns exec + restore), ms */
  fullMs?: number
  /** kube-proxy-style partial sync of a one-endpoint change, median, ms */
  deltaMs?: number
  deltaRuns?: number[]
  /** chains the partial sync rewrote */
  deltaChains?: number
  /** lines in the partial update */
  deltaLines?: number
  skipped?: string
  error?: string
}

export interface SyncRow {
  readonly services: number
  readonly endpointsPerService: number
  compileMs: number
  compileRuns: number[]
  /** updateNat of one service with one endpoint moved + NatEngine.swap, median */
  updateMs: number
  updateOnlyMs: number
  swapMs: number
  updateRuns: number[]
  /** our JS rendering of kube-proxy's rules (informative) */
  renderMs: number
  iptablesRules: number
  nftLines: number
  kernel: Partial<Record<KernelLoader, KernelLoad>>
}

const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6

/** Median wall time of `runs` calls, ms. */
function timeRuns(runs: number, fn: () => void): number[] {
  const out: number[] = []
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint()
    fn()
    out.push(ms(t0))
  }
  return out
}

const LOADERS: Record<KernelLoader, { full: string[]; delta: string[]; need: string }> = {
  'iptables-nft': { full: ['iptables-restore'], delta: ['iptables-restore', '--noflush'], need: 'iptables-restore' },
  'iptables-legacy': { full: ['iptables-legacy-restore'], delta: ['iptables-legacy-restore', '--noflush'], need: 'iptables-legacy-restore' },
  nftables: { full: ['nft', '-f', '-'], delta: ['nft', '-f', '-'], need: 'nft' },
}

async function timedIn(ns: string, cmd: readonly string[], input: string): Promise<number> {
  const t0 = process.hrtime.bigint()
  const r = await run(['ip', 'netns', 'exec', ns, ...cmd], { input, timeoutMs: 900_000 })
  const t = ms(t0)
  if (r.code !== 0) throw new Error(`${cmd.join(' ')} exited ${r.code}: ${(r.stderr || r.stdout).trim().split('\n').slice(0, 3).join(' | ')}`)
  return t
}

export interface SyncOptions {
  readonly quick: boolean
  readonly nft20k: boolean
}

export async function runSync(o: SyncOptions): Promise<SyncRow[]> {
  const sizes = o.quick ? [1000] : [1000, 10_000, 20_000]
  const rows: SyncRow[] = []
  for (const n of sizes) {
    progress('sync', `${n} services × 10 endpoints: building the cluster`)
    const cluster = synthCluster(n, 10)
    compileNat(synthCluster(100, 10), NAT_CONFIG) // warm-up
    const compileRuns = timeRuns(n >= 10_000 ? 5 : 9, () => compileNat(cluster, NAT_CONFIG))
    const compileMs = median(compileRuns)
    progress('sync', `${n} services: full compileNat ${compileMs.toFixed(1)} ms (median of ${compileRuns.length})`)

    // One endpoint of the middle service moves, again and again: updateNat + swap on a live engine.
    const mid = Math.floor(n / 2)
    let table = compileNat(cluster, NAT_CONFIG)
    const engine = new NatEngine(table, { seed: 5 })
    const base = cluster.services[mid]!
    const upd: number[] = []
    const swp: number[] = []
    const both: number[] = []
    for (let g = 1; g <= 25; g++) {
      const changed = withMovedEndpoint(base, g)
      const t0 = process.hrtime.bigint()
      const next = updateNat(table, [changed])
      const t1 = process.hrtime.bigint()
      engine.swap(next)
      const t2 = process.hrtime.bigint()
      table = next
      if (g <= 5) continue // warm-up
      upd.push(Number(t1 - t0) / 1e6)
      swp.push(Number(t2 - t1) / 1e6)
      both.push(Number(t2 - t0) / 1e6)
    }
    const row: SyncRow = {
      services: n, endpointsPerService: 10, compileMs, compileRuns, updateMs: median(both), updateOnlyMs: median(upd),
      swapMs: median(swp), updateRuns: both, renderMs: 0, iptablesRules: 0, nftLines: 0, kernel: {},
    }
    progress('sync', `${n} services: one-endpoint updateNat + swap ${row.updateMs.toFixed(3)} ms (update ${row.updateOnlyMs.toFixed(3)}, swap ${row.swapMs.toFixed(3)})`)

    // The same state as kube-proxy rules, and the same change as a partial sync.
    const t0 = process.hrtime.bigint()
    const dump = dumpRules(cluster, PROXY_OPTIONS)
    row.renderMs = ms(t0)
    row.iptablesRules = dump.iptables.split('\n').filter(l => l.startsWith('-A ')).length
    row.nftLines = dump.nft.split('\n').length
    const changedCluster = (g: number): Cluster => ({ ...cluster, services: cluster.services.map((s, i): Service => (i === mid ? withMovedEndpoint(s, g) : s)) })
    // each run needs the whole rule set rendered again (our JS renderer: ~1.5 s per 1 000 services)
    const deltaRuns = o.quick || n >= 10_000 ? 2 : 3
    const after: { iptables: string; nft: string }[] = []
    for (let g = 1; g <= deltaRuns; g++) after.push(dumpRules(changedCluster(g), PROXY_OPTIONS))
    progress('sync', `${n} services: ${row.iptablesRules} iptables rules, ${row.nftLines} nft lines (rendered in ${row.renderMs.toFixed(0)} ms)`)

    for (const k of ['iptables-nft', 'iptables-legacy', 'nftables'] as const) {
      const L = LOADERS[k]
      const res: KernelLoad = {}
      row.kernel[k] = res
      if (!haveCommand(L.need)) { res.skipped = `${L.need} is not installed`; continue }
      if (k === 'nftables' && n > 10_000 && !o.nft20k) { res.skipped = 'over the time budget (nft -f of one big transaction grows faster than linearly; --nft20k loads it)'; progress('sync', `${n} services: nft -f skipped (--nft20k to include)`); continue }
      const topo = newTopology('sync')
      try {
        const ns = await topo.ns('k')
        const full = k === 'nftables' ? dump.nft : dump.iptables
        res.fullMs = await timedIn(ns, L.full, full)
        progress('sync', `${n} services: ${k} full load ${(res.fullMs / 1000).toFixed(2)} s`)
        const runs: number[] = []
        let prev = dump
        for (const next of after) {
          const d = k === 'nftables' ? nftDelta(prev.nft, next.nft) : iptablesDelta(prev.iptables, next.iptables)
          res.deltaChains = d.changedChains
          res.deltaLines = d.text.split('\n').length - 1
          runs.push(await timedIn(ns, L.delta, d.text))
          prev = next
        }
        res.deltaRuns = runs
        res.deltaMs = median(runs)
        progress('sync', `${n} services: ${k} partial sync of the endpoint change ${res.deltaMs.toFixed(1)} ms (${res.deltaChains} chains, ${res.deltaLines} lines)`)
      } catch (err) {
        res.error = (err as Error).message
        progress('sync', `${n} services: ${k} failed: ${res.error}`)
      } finally {
        await dropTopology(topo)
      }
    }
    rows.push(row)
  }
  return rows
}

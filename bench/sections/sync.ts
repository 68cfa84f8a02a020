// Section 2a, control plane: tundra's full compile and one-endpoint update (+ engine swap) at 1 000 / 10 000 / 20 000
// services × 10 endpoints, against loading the same rules into the kernel (iptables-restore with the nf_tables and the
// legacy backend, nft -f) in a fresh namespace, full and as kube-proxy's partial sync of the same change. nft -f runs
// up to 10 000 services (--nft20k: 20 000); every load is time-capped (capsAt) and reported as "> cap" when stopped.
import { compileNat } from '../../src/nat/compile'
import { updateNat } from '../../src/nat/update'
import { NatEngine } from '../../src/nat/engine'
import { dumpRules } from '../../src/kubeproxy/dump'
import { renderIptablesSave } from '../../src/kubeproxy/iptables'
import { renderNft } from '../../src/kubeproxy/nftables'
import { spawn } from 'node:child_process'
import { haveCommand } from '../../src/netns/netns'
import type { Cluster } from '../../src/model/cluster'
import { dropTopology, newTopology } from '../lib/labs'
import { progress } from '../lib/progress'
import { iptablesDelta, nftDelta, parseIptablesSave, parseNftScript, patchIptables, patchNft, type IptablesDump, type NftDump } from '../lib/ruleset-delta'
import { median } from '../lib/stats'
import { NAT_CONFIG, PROXY_OPTIONS, synthCluster, withMovedEndpoint } from '../lib/synth'

export type KernelLoader = 'iptables-nft' | 'iptables-legacy' | 'nftables'

export interface KernelLoad {
  /** wall time of one full load into an empty namespace (ip netns exec + restore), ms */
  fullMs?: number
  /** the full load was stopped at this time cap (ms): it takes longer; fullMs is unset and the change is not measured */
  fullOverMs?: number
  /** kube-proxy-style partial sync of a one-endpoint change, median, ms */
  deltaMs?: number
  deltaRuns?: number[]
  /** chains the partial sync rewrote */
  deltaChains?: number
  /** lines in the partial update */
  deltaLines?: number
  /** a partial sync was stopped at this time cap (ms) */
  deltaOverMs?: number
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
  /** our JS rendering of kube-proxy's rules (informative; the nft script only where nft -f loads it) */
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

/** One timed run of `cmd` in the namespace, stopped (SIGKILL, by its PID) at `capMs`: `capped` instead of waiting. */
export function timedIn(ns: string, cmd: readonly string[], input: string, capMs: number): Promise<{ ms: number; capped: boolean }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint()
    // `ip netns exec` execs the command in place: the child's PID is the restore's own
    const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['pipe', 'ignore', 'pipe'] })
    let err = ''
    let capped = false
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (err.length < 4000) err += d
    })
    child.stdin!.on('error', () => {
      /* killed at the cap before it read everything */
    })
    const timer = setTimeout(() => {
      capped = true
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGKILL')
        } catch {
          /* gone */
        }
      }
    }, capMs)
    child.on('error', e => {
      clearTimeout(timer)
      reject(e)
    })
    child.on('close', code => {
      clearTimeout(timer)
      const t = ms(t0)
      if (capped) return resolve({ ms: t, capped: true })
      if (code !== 0) return reject(new Error(`${cmd.join(' ')} exited ${code}: ${err.trim().split('\n').slice(0, 3).join(' | ')}`))
      resolve({ ms: t, capped: false })
    })
    child.stdin!.end(input)
  })
}

export interface SyncOptions {
  readonly quick: boolean
  readonly nft20k: boolean
  /** time cap of one full kernel load at 20 000 services, ms (a stopped load is reported as "> cap"); see capsAt */
  readonly loadCapMs: number
}

/**
 * The time caps at n services: the full-load cap in proportion to the rule set (at least 20 s), a partial sync half
 * that (at least 10 s). With the default 120 s: 20 s at 1 000, 60 s at 10 000, 120 s at 20 000 services.
 */
export function capsAt(n: number, loadCapMs: number): { full: number; delta: number } {
  const share = Math.min(1, n / 20_000)
  return { full: Math.max(Math.min(20_000, loadCapMs), loadCapMs * share), delta: Math.max(10_000, (loadCapMs / 2) * share) }
}

/** The kernel loaders measured at each size: iptables-restore (both backends) at every size, nft -f up to 10 000. */
export function loadersAt(n: number, nft20k: boolean): KernelLoader[] {
  return n > 10_000 && !nft20k ? ['iptables-nft', 'iptables-legacy'] : ['iptables-nft', 'iptables-legacy', 'nftables']
}

const secs = (msv: number): string => `${(msv / 1000).toFixed(msv < 10_000 ? 2 : 0)} s`

export async function runSync(o: SyncOptions): Promise<SyncRow[]> {
  const sizes = o.quick ? [1000] : [1000, 10_000, 20_000]
  const rows: SyncRow[] = []
  // a loader stopped at the cap is not tried at a larger size (its time only grows with the rule set)
  const capped = new Map<KernelLoader, { services: number; capMs: number }>()
  compileNat(synthCluster(100, 10), NAT_CONFIG) // warm-up
  for (const n of sizes) {
    progress('sync', `${n} services × 10 endpoints: building the cluster`)
    const cluster = synthCluster(n, 10)
    const compileRuns = timeRuns(o.quick ? 5 : n >= 10_000 ? 5 : 9, () => compileNat(cluster, NAT_CONFIG))
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
      services: n,
      endpointsPerService: 10,
      compileMs,
      compileRuns,
      updateMs: median(both),
      updateOnlyMs: median(upd),
      swapMs: median(swp),
      updateRuns: both,
      renderMs: 0,
      iptablesRules: 0,
      nftLines: 0,
      kernel: {},
    }
    progress(
      'sync',
      `${n} services: one-endpoint updateNat + swap ${row.updateMs.toFixed(3)} ms (update ${row.updateOnlyMs.toFixed(3)}, swap ${row.swapMs.toFixed(3)})`,
    )

    // The same state as kube-proxy rules, and the same change as a partial sync. The state after each change is the
    // full dump patched with the difference between renders of the changed service alone (rendering all of it again
    // costs ~1.5 s per 1 000 services), so every partial sync is computed from complete before/after states.
    // (the nft script only where nft -f loads it)
    const measured = loadersAt(n, o.nft20k)
    const cap = capsAt(n, o.loadCapMs)
    const withNft = measured.includes('nftables')
    const t0 = process.hrtime.bigint()
    const dump = { iptables: renderIptablesSave(cluster, PROXY_OPTIONS), nft: withNft ? renderNft(cluster, { ...PROXY_OPTIONS, family: 4 }) : '' }
    row.renderMs = ms(t0)
    row.iptablesRules = dump.iptables.split('\n').filter(l => l.startsWith('-A ')).length
    row.nftLines = withNft ? dump.nft.split('\n').length : NaN
    // a median of 3 partial syncs at 1 000 services, 2 at 10 000, 1 at 20 000 (each takes seconds there)
    const deltaRuns = o.quick ? 2 : n >= 20_000 ? 1 : n >= 10_000 ? 2 : 3
    const alone = (g: number): Cluster => ({ ...cluster, services: [g === 0 ? base : withMovedEndpoint(base, g)] })
    const small = Array.from({ length: deltaRuns + 1 }, (_, g) => dumpRules(alone(g), PROXY_OPTIONS))
    progress(
      'sync',
      `${n} services: ${row.iptablesRules} iptables rules${withNft ? `, ${row.nftLines} nft lines` : ''} (rendered in ${row.renderMs.toFixed(0)} ms)`,
    )
    const ipt: IptablesDump[] = [parseIptablesSave(dump.iptables)]
    const smallIpt = small.map(d => parseIptablesSave(d.iptables))
    for (let g = 1; g <= deltaRuns; g++) ipt.push(patchIptables(ipt[g - 1]!, smallIpt[g - 1]!, smallIpt[g]!))
    const nft: NftDump[] = withNft ? [parseNftScript(dump.nft)] : []
    const smallNft = withNft ? small.map(d => parseNftScript(d.nft)) : []
    for (let g = 1; withNft && g <= deltaRuns; g++) nft.push(patchNft(nft[g - 1]!, smallNft[g - 1]!, smallNft[g]!))
    const deltas = {
      iptables: ipt.slice(1).map((after, i) => iptablesDelta(ipt[i]!, after)),
      nft: nft.slice(1).map((after, i) => nftDelta(nft[i]!, after)),
    }

    for (const k of ['iptables-nft', 'iptables-legacy', 'nftables'] as const) {
      const L = LOADERS[k]
      const res: KernelLoad = {}
      row.kernel[k] = res
      if (!haveCommand(L.need)) {
        res.skipped = `${L.need} is not installed`
        continue
      }
      if (!measured.includes(k)) {
        res.skipped = 'over the time budget (nft -f of one big transaction grows faster than linearly; --nft20k loads it)'
        progress('sync', `${n} services: nft -f skipped (--nft20k to include)`)
        continue
      }
      const before = capped.get(k)
      if (before) {
        res.skipped = `not loaded: it took over ${secs(before.capMs)} at ${before.services} services already`
        progress('sync', `${n} services: ${k} skipped (${res.skipped})`)
        continue
      }
      const topo = newTopology('sync')
      try {
        const ns = await topo.ns('k')
        const full = await timedIn(ns, L.full, k === 'nftables' ? dump.nft : dump.iptables, cap.full)
        if (full.capped) {
          res.fullOverMs = cap.full
          capped.set(k, { services: n, capMs: cap.full })
          res.skipped = `full load stopped at the ${secs(cap.full)} cap: the change is not measured`
          progress('sync', `${n} services: ${k} full load > ${secs(cap.full)} (stopped at the cap)`)
          continue
        }
        res.fullMs = full.ms
        progress('sync', `${n} services: ${k} full load ${secs(res.fullMs)}`)
        const runs: number[] = []
        for (const d of k === 'nftables' ? deltas.nft : deltas.iptables) {
          res.deltaChains = d.changedChains
          res.deltaLines = d.text.split('\n').length - 1
          const r = await timedIn(ns, L.delta, d.text, cap.delta)
          if (r.capped) {
            res.deltaOverMs = cap.delta
            break
          }
          runs.push(r.ms)
        }
        res.deltaRuns = runs
        if (runs.length > 0) res.deltaMs = median(runs)
        progress(
          'sync',
          `${n} services: ${k} partial sync of the endpoint change ${res.deltaOverMs !== undefined ? `> ${secs(res.deltaOverMs)} (stopped at the cap)` : `${res.deltaMs!.toFixed(1)} ms`} (${res.deltaChains} chains, ${res.deltaLines} lines)`,
        )
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

// The labs and namespaces a bench run makes, and their removal: in `finally` blocks normally, and synchronously on
// SIGINT/SIGTERM/exit so an interrupted run leaves no namespace behind.
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { labDown, labUp, loadLabState, type Dataplane, type LabState } from '../../src/lab/index'
import { isOurs } from '../../src/lab/proc'
import { readState, labDir } from '../../src/lab/state'
import { labPrefix, LAB } from '../../src/lab/plan'
import { deleteNamespaceSync, listNamespaces, must, Topology } from '../../src/netns/netns'
import { compileLab } from '../../src/lab/compile'
import { dumpRules } from '../../src/kubeproxy/dump'
import type { Cluster } from '../../src/model/cluster'
import { labLog } from './progress'

const labs = new Set<string>()
const topologies = new Set<Topology>()
let hooked = false

/** Removes a lab without awaiting anything: processes by recorded PID (start time checked), namespaces, files. */
export function labDownSync(name: string): void {
  let state: LabState | undefined
  try {
    state = readState(name)
  } catch {
    /* removed by name below */
  }
  for (const p of state?.processes ?? []) {
    if (isOurs(p)) {
      try {
        process.kill(p.pid, 'SIGKILL')
      } catch {
        /* exited */
      }
    }
  }
  const prefix = labPrefix(name)
  const namespaces = [...new Set([...(state?.namespaces ?? []), ...listNamespaces().filter(ns => ns.startsWith(prefix))])]
  const live = new Set(listNamespaces())
  for (const ns of namespaces.reverse()) if (live.has(ns)) deleteNamespaceSync(ns)
  const etc = [
    ...(state?.files ?? []),
    ...(existsSync('/etc/netns')
      ? readdirSync('/etc/netns')
          .filter(d => d.startsWith(prefix))
          .map(d => join('/etc/netns', d))
      : []),
  ]
  for (const d of etc) rmSync(d, { recursive: true, force: true })
  rmSync(labDir(name), { recursive: true, force: true })
}

function cleanupAllSync(): void {
  for (const name of [...labs]) {
    try {
      labDownSync(name)
    } catch {
      /* keep going */
    }
    labs.delete(name)
  }
  for (const t of [...topologies]) {
    try {
      t.cleanupSync()
    } catch {
      /* keep going */
    }
    topologies.delete(t)
  }
}

/** Installs the signal and exit hooks; call before making anything (our hooks then run before the netns helper's). */
export function hookCleanup(): void {
  if (hooked) return
  hooked = true
  process.on('exit', cleanupAllSync)
  for (const [sig, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ] as const) {
    process.on(sig, () => {
      process.stderr.write(`\n[bench] ${sig}: removing labs and namespaces\n`)
      cleanupAllSync()
      process.exit(code)
    })
  }
}

/** A Topology (namespaces `tt-<pid>-…`) that is removed with everything else on interruption. */
export function newTopology(tag: string): Topology {
  const t = new Topology('tt', tag)
  topologies.add(t)
  return t
}

export async function dropTopology(t: Topology): Promise<void> {
  try {
    await t.cleanup()
  } finally {
    topologies.delete(t)
  }
}

export interface BenchLabOptions {
  readonly name: string
  readonly files: readonly string[]
  /** 'nftables' is the lab's 'none' plus kube-proxy's nftables ruleset loaded into the node */
  readonly dataplane: Dataplane | 'nftables'
  readonly iptablesBackend?: 'nft' | 'legacy'
  readonly section: string
  readonly readyTimeoutMs?: number
  /** on failure, copy the lab's logs to `<dir>/failed-<lab>/` before removing it */
  readonly keepLogsIn?: string
}

/** Brings a lab up (removing a stale one of the same name first); registered for cleanup before it exists. */
export async function benchLabUp(o: BenchLabOptions): Promise<LabState> {
  const log = labLog(o.section)
  if (readState(o.name) !== undefined || listNamespaces().some(ns => ns.startsWith(labPrefix(o.name)))) {
    log(`[lab] removing a stale lab ${o.name} left by an earlier run`)
    await labDown(o.name, { log: () => {} })
  }
  labs.add(o.name)
  try {
    await labUp({
      files: o.files,
      name: o.name,
      nodes: 1,
      dataplane: o.dataplane === 'nftables' ? 'none' : o.dataplane,
      ...(o.iptablesBackend ? { iptablesBackend: o.iptablesBackend } : {}),
      readyTimeoutMs: o.readyTimeoutMs ?? 60_000,
      // kept only long enough to copy its logs out (below), then removed
      keepOnFailure: o.keepLogsIn !== undefined,
      log,
    })
  } catch (err) {
    if (o.keepLogsIn !== undefined) {
      const dest = join(o.keepLogsIn, `failed-${o.name}`)
      try {
        rmSync(dest, { recursive: true, force: true })
        mkdirSync(dest, { recursive: true })
        for (const f of readdirSync(labDir(o.name))) if (f.endsWith('.log') || f.endsWith('.json')) copyFileSync(join(labDir(o.name), f), join(dest, f))
        log(`[lab] ${o.name} failed; its logs are in ${dest}`)
      } catch {
        /* nothing to copy */
      }
      await benchLabDown(o.name)
    }
    throw err
  }
  const state = loadLabState(o.name)
  if (o.dataplane === 'nftables') await loadNftables(state, o.files)
  return state
}

/** The lab's cluster as `lab up` computed it (the same pure plan, recomputed from the same files). */
export function labCluster(state: LabState, files: readonly string[]): Cluster {
  return compileLab({ name: state.name, files, nodes: state.nodes.length, dataplane: 'none' }).cluster
}

/** kube-proxy's nftables-mode ruleset for the lab's cluster, loaded into each node the way --dataplane iptables loads its rules. */
export async function loadNftables(state: LabState, files: readonly string[]): Promise<void> {
  const cluster = labCluster(state, files)
  for (const n of state.nodes) {
    const rules = dumpRules(cluster, { clusterCIDR: LAB.clusterCIDR, nodeName: n.name, nodeIPs: [n.ip] }).nft
    await must(['ip', 'netns', 'exec', n.ns, 'nft', '-f', '-'], { input: rules, timeoutMs: 600_000 })
  }
}

export async function benchLabDown(name: string): Promise<void> {
  try {
    await labDown(name, { log: () => {} })
  } catch {
    labDownSync(name)
  } finally {
    labs.delete(name)
  }
}

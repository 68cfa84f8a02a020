// When desired-state changes reach the dataplane: kube-proxy's BoundedFrequencyRunner semantics.
//
//   changes are coalesced; a sync runs at most once per minSyncPeriod (at once if the last one is older than that)
//   a full sync runs at least once per syncPeriod even with no changes (and first of all, after start())
//   a failed sync keeps its changes, marks the next sync full and retries after syncPeriod (as kube-proxy does)
//
// and kube-proxy's health rule: unhealthy when a queued change has waited longer than 2 x syncPeriod without being
// applied (the apply hangs or keeps failing); /healthz is also unhealthy when this Node is being deleted.
import type { Node as K8sNode } from '../k8s/types'
import { mergeChanges, type ChangeSet, type ObjectStore } from './store'

export interface Clock {
  /** ms since the epoch */
  now(): number
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms)
    t.unref() // the sources and servers keep the process alive, not this timer
    return t
  },
  clearTimeout: h => clearTimeout(h as NodeJS.Timeout),
}

export type SyncReason = 'initial' | 'changes' | 'periodic' | 'retry' | 'requested'

export interface SyncBatch {
  /** "ns/name" of every service whose Service or EndpointSlices changed (recompile these; the deleted ones too) */
  readonly services: ReadonlySet<string>
  /** Node names that changed */
  readonly nodes: ReadonlySet<string>
  /** recompute everything (first sync, periodic resync, retry after a failure, or a change of unknown scope) */
  readonly full: boolean
  readonly reason: SyncReason
  /** the merged changes behind this batch (empty for a periodic sync) */
  readonly change: ChangeSet
}

export interface SyncRecord {
  readonly startMs: number
  readonly durationMs: number
  readonly full: boolean
  readonly reason: SyncReason
  readonly ok: boolean
  readonly error?: unknown
  /** services in the batch */
  readonly services: number
}

/** Hooks for metrics; every one optional. */
export interface SyncObserver {
  changesQueued?(change: ChangeSet, atMs: number): void
  synced?(record: SyncRecord): void
  /** seconds from an EndpointSlice's last-change-trigger-time to the sync that applied it */
  programmingLatency?(seconds: number): void
}

export interface SyncHealth {
  /** sync health alone (/livez) */
  readonly healthy: boolean
  /** false while this node's Node object has a deletionTimestamp (/healthz only) */
  readonly nodeEligible: boolean
  /** ms since the epoch of the last successful sync */
  readonly lastUpdated?: number
  /** ms since the epoch when the oldest not yet applied change was queued */
  readonly oldestPending?: number
  readonly now: number
}

export interface SyncStats {
  readonly syncs: number
  readonly errors: number
  readonly lastSyncMs?: number
  readonly lastDurationMs?: number
  readonly lastQueuedMs?: number
  /** services with changes not yet applied, by kind of change (kube-proxy's *_changes_pending) */
  readonly pendingServiceChanges: number
  readonly pendingEndpointChanges: number
}

export interface SyncRunnerOptions {
  readonly apply: (batch: SyncBatch) => void | Promise<void>
  /** default 1000 (kube-proxy's iptables default) */
  readonly minSyncPeriodMs?: number
  /** default 30000 */
  readonly syncPeriodMs?: number
  readonly clock?: Clock
  readonly observer?: SyncObserver
  readonly log?: (line: string) => void
}

const EMPTY: ChangeSet = Object.freeze({
  services: new Set<string>(),
  endpoints: new Set<string>(),
  nodes: new Set<string>(),
  other: new Set<string>(),
  full: false,
  serviceEvents: 0,
  endpointEvents: 0,
  triggerTimes: new Map<string, number[]>(),
})

/** The cluster autoscaler's taint on a node it is about to remove (kube-proxy's `ToBeDeletedTaint`). */
const TAINT_TO_BE_DELETED = 'ToBeDeletedByClusterAutoscaler'

/**
 * kube-proxy's rule (ProxyHealthServer.NodeEligible): a node being deleted, or tainted by the cluster autoscaler for
 * removal, should stop getting new traffic from load balancers.
 */
export function nodeEligible(node: K8sNode | undefined): boolean {
  const ts = node?.metadata?.deletionTimestamp
  if (ts !== undefined && ts !== null && ts !== '') return false
  const taints = (node as { spec?: { taints?: unknown } } | undefined)?.spec?.taints
  return !(Array.isArray(taints) && taints.some(t => (t as { key?: unknown } | null)?.key === TAINT_TO_BE_DELETED))
}

export class SyncRunner {
  private readonly opts: SyncRunnerOptions
  private readonly clock: Clock
  private readonly minMs: number
  private readonly periodMs: number
  private readonly observers: SyncObserver[] = []
  private readonly log: (line: string) => void
  private readonly createdMs: number

  private started = false
  private stopped = false
  private pending: ChangeSet = EMPTY
  private pendingFull = true
  private pendingReason: SyncReason = 'initial'
  /** queue time of the oldest change not yet taken by a sync; the initial sync counts as queued at construction */
  private pendingSince: number | undefined
  private inflightSince: number | undefined
  private running: Promise<void> | undefined
  private timer: unknown
  private timerDue = 0
  private lastStart: number | undefined
  private retryAt: number | undefined
  private eligible = true

  private syncs = 0
  private errors = 0
  private lastSyncMs: number | undefined
  private lastDurationMs: number | undefined
  private lastQueuedMs: number | undefined

  constructor(opts: SyncRunnerOptions) {
    this.opts = opts
    this.clock = opts.clock ?? realClock
    this.minMs = opts.minSyncPeriodMs ?? 1000
    this.periodMs = opts.syncPeriodMs ?? 30_000
    if (!(this.periodMs > 0)) throw new RangeError('syncPeriod must be greater than 0')
    if (!(this.minMs >= 0)) throw new RangeError('minSyncPeriod must not be negative')
    if (opts.observer !== undefined) this.observers.push(opts.observer)
    this.log = opts.log ?? (l => process.stderr.write(l + '\n'))
    this.createdMs = this.clock.now()
    this.pendingSince = this.createdMs
  }

  addObserver(o: SyncObserver): void {
    this.observers.push(o)
  }

  /** Allows syncs; the first one (full) runs at once. Call once the source has synced. */
  start(): void {
    if (this.started || this.stopped) return
    this.started = true
    this.schedule()
  }

  /** Queues a change from the store (wire it as `source.onChange(c => runner.queue(c))`). */
  queue(change: ChangeSet): void {
    if (this.stopped) return
    const now = this.clock.now()
    this.pending = this.pending === EMPTY ? change : mergeChanges(this.pending, change)
    if (change.full) this.pendingFull = true
    if (this.pendingReason === 'periodic') this.pendingReason = 'changes'
    this.pendingSince ??= now
    this.lastQueuedMs = now
    // a new change is worth trying sooner than the failure retry (kube-proxy's runner does the same)
    this.retryAt = undefined
    for (const o of this.observers) o.changesQueued?.(change, now)
    this.schedule()
  }

  /** Asks for a full sync as soon as minSyncPeriod allows (e.g. the node's addresses changed, SIGHUP). */
  requestFull(): void {
    if (this.stopped) return
    this.pendingFull = true
    this.pendingReason = 'requested'
    this.pendingSince ??= this.clock.now()
    this.retryAt = undefined
    this.schedule()
  }

  setNodeEligible(eligible: boolean): void {
    this.eligible = eligible
  }

  /** Keeps nodeEligible in step with this node's Node object in the store; returns the unsubscribe. */
  followNode(store: ObjectStore, nodeName: string): () => void {
    const check = (): void => this.setNodeEligible(nodeEligible(store.get('Node', '', nodeName) as K8sNode | undefined))
    check()
    return store.onChange(c => {
      if (c.nodes.has(nodeName)) check()
    })
  }

  health(): SyncHealth {
    const now = this.clock.now()
    const since = [this.pendingSince, this.running !== undefined ? this.inflightSince : undefined].filter((x): x is number => x !== undefined)
    const oldest = since.length > 0 ? Math.min(...since) : undefined
    const healthy = oldest === undefined || now - oldest <= 2 * this.periodMs
    return {
      healthy,
      nodeEligible: this.eligible,
      ...(this.lastSyncMs !== undefined ? { lastUpdated: this.lastSyncMs } : {}),
      ...(oldest !== undefined ? { oldestPending: oldest } : {}),
      now,
    }
  }

  stats(): SyncStats {
    return {
      syncs: this.syncs,
      errors: this.errors,
      ...(this.lastSyncMs !== undefined ? { lastSyncMs: this.lastSyncMs } : {}),
      ...(this.lastDurationMs !== undefined ? { lastDurationMs: this.lastDurationMs } : {}),
      ...(this.lastQueuedMs !== undefined ? { lastQueuedMs: this.lastQueuedMs } : {}),
      pendingServiceChanges: this.pending.services.size,
      pendingEndpointChanges: this.pending.endpoints.size,
    }
  }

  /** Resolves when no sync is running (a due one may still be scheduled). */
  async whenIdle(): Promise<void> {
    while (this.running !== undefined) await this.running
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer)
    this.timer = undefined
    await this.whenIdle()
  }

  private hasPending(): boolean {
    return this.pendingFull || this.pending !== EMPTY
  }

  private schedule(): void {
    if (!this.started || this.stopped || this.running !== undefined) return
    const now = this.clock.now()
    let due: number
    if (this.retryAt !== undefined) due = this.retryAt
    else if (this.hasPending()) due = this.lastStart === undefined ? now : Math.max(now, this.lastStart + this.minMs)
    else due = (this.lastStart ?? now) + this.periodMs
    if (this.timer !== undefined) {
      if (this.timerDue === due) return
      this.clock.clearTimeout(this.timer)
    }
    this.timerDue = due
    // even "now" goes through a timer: changes queued in the same tick join the batch
    this.timer = this.clock.setTimeout(
      () => {
        this.timer = undefined
        this.fire()
      },
      Math.max(0, due - now),
    )
  }

  private fire(): void {
    if (this.stopped || this.running !== undefined) return
    this.retryAt = undefined
    if (!this.hasPending()) {
      this.pendingFull = true
      this.pendingReason = 'periodic'
    }
    this.running = this.run().finally(() => {
      this.running = undefined
      this.schedule()
    })
  }

  private async run(): Promise<void> {
    const change = this.pending
    const full = this.pendingFull || change.full
    const reason = this.pendingReason
    this.inflightSince = this.pendingSince
    this.pending = EMPTY
    this.pendingFull = false
    this.pendingReason = 'changes'
    this.pendingSince = undefined
    const services = new Set([...change.services, ...change.endpoints])
    const batch: SyncBatch = { services, nodes: change.nodes, full, reason, change }
    const start = this.clock.now()
    this.lastStart = start
    let error: unknown
    let ok = true
    try {
      await this.opts.apply(batch)
    } catch (err) {
      ok = false
      error = err
    }
    const end = this.clock.now()
    const record: SyncRecord = { startMs: start, durationMs: end - start, full, reason, ok, services: services.size, ...(ok ? {} : { error }) }
    if (ok) {
      this.syncs++
      this.lastSyncMs = end
      this.lastDurationMs = end - start
      for (const times of change.triggerTimes.values()) {
        for (const t of times) {
          // like kube-proxy: changes from before this process started would only measure its start-up
          if (t < this.createdMs) continue
          const s = Math.max(0, (end - t) / 1000)
          for (const o of this.observers) o.programmingLatency?.(s)
        }
      }
    } else {
      this.errors++
      this.log(`[sync] ${full ? 'full' : 'partial'} sync failed, retrying in ${this.periodMs} ms: ${(error as Error)?.stack ?? String(error)}`)
      // keep the changes (and their age) and make the retry a full sync
      this.pending = this.pending === EMPTY ? change : mergeChanges(change, this.pending)
      this.pendingFull = true
      this.pendingReason = 'retry'
      const since = [this.inflightSince, this.pendingSince].filter((x): x is number => x !== undefined)
      this.pendingSince = since.length > 0 ? Math.min(...since) : end
      this.retryAt = end + this.periodMs
    }
    this.inflightSince = undefined
    for (const o of this.observers) o.synced?.(record)
  }
}

// What the agent reads desired state from: the API server (watch.ts) or manifest files (files.ts), behind one interface.
import type { Kind } from '../k8s/types'
import type { ChangeListener, ObjectStore } from './store'

export interface ResourceStatus {
  readonly kind: Kind
  /** listed at least once: the store holds a complete picture of this kind */
  readonly synced: boolean
  /** a watch stream is open (API) / the files are being watched (files) */
  readonly connected: boolean
  /** last resourceVersion seen (list, event or bookmark); '' for files */
  readonly resourceVersion: string
  readonly lists: number
  /** relists forced by 410 Gone (the watch's resourceVersion had been compacted away) */
  readonly relists: number
  readonly reconnects: number
  readonly errors: number
  readonly lastError?: string
  /** ms since the epoch */
  readonly lastErrorAt?: number
}

export interface SourceStatus {
  readonly source: 'api' | 'files'
  readonly synced: boolean
  readonly resources: readonly ResourceStatus[]
}

export interface DesiredStateSource {
  readonly store: ObjectStore
  /** Starts listing and watching; returns at once (see waitForSync). */
  start(): void
  /** Resolves once every resource has been read once; rejects after timeoutMs (default: never) or on stop(). */
  waitForSync(timeoutMs?: number): Promise<void>
  hasSynced(): boolean
  onChange(cb: ChangeListener): () => void
  status(): SourceStatus
  stop(): Promise<void>
}

/** A promise that resolves when `ready()` is called, with an optional deadline per waiter. */
export class SyncGate {
  private done = false
  private failed: Error | undefined
  private readonly waiters = new Set<{ resolve: () => void; reject: (e: Error) => void }>()

  get open(): boolean {
    return this.done
  }

  ready(): void {
    if (this.done) return
    this.done = true
    for (const w of this.waiters) w.resolve()
    this.waiters.clear()
  }

  fail(err: Error): void {
    this.failed = err
    for (const w of this.waiters) w.reject(err)
    this.waiters.clear()
  }

  wait(timeoutMs: number | undefined, what: () => string): Promise<void> {
    if (this.done) return Promise.resolve()
    if (this.failed) return Promise.reject(this.failed)
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined
      const w = {
        resolve: () => {
          if (timer) clearTimeout(timer)
          resolve()
        },
        reject: (e: Error) => {
          if (timer) clearTimeout(timer)
          reject(e)
        },
      }
      this.waiters.add(w)
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.waiters.delete(w)
          reject(new Error(`not synced after ${timeoutMs} ms: ${what()}`))
        }, timeoutMs)
      }
    })
  }
}

// Desired state from manifest files (`tundra run -f manifests`): the same store and change events as the API watch.
// Files are re-read when they change (fs.watch, debounced: editors and `kubectl ... > file` write in several steps).
// A read that finds a file missing or unparseable keeps the previous state whole: half-written input must not
// delete services.
import { watch, statSync, readFileSync, readdirSync, type Dirent, type FSWatcher } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import type { Problem } from '../model/cluster'
import { isManifestFile, loadPaths, parseManifests } from '../k8s/load'
import type { Kind } from '../k8s/types'
import type { DesiredStateSource, SourceStatus } from './source'
import { SyncGate } from './source'
import { ObjectStore, kubeProxyFilter, mergeChanges, type ChangeListener, type ChangeSet } from './store'

const KINDS: readonly Kind[] = ['Namespace', 'Pod', 'Service', 'Node', 'Deployment', 'EndpointSlice']

export interface FileSourceOptions {
  /** default 100 ms */
  readonly debounceMs?: number
  /**
   * Debounce when every change notification named a file in a watched directory (those are re-read one by one);
   * default debounceMs. Where every writer replaces files by rename (the lab), a few ms are enough: the file is seen
   * whole at once and the wait only gathers a burst, and it is part of every change's time to the dataplane.
   */
  readonly fileDebounceMs?: number
  readonly store?: ObjectStore
  /** see WatchOptions.kubeProxySelector */
  readonly kubeProxySelector?: boolean
  readonly log?: (line: string) => void
}

export interface ReloadResult {
  /** false: the input could not be read whole, the previous state was kept */
  readonly applied: boolean
  readonly change?: ChangeSet
  readonly problems: readonly Problem[]
  readonly warnings: readonly string[]
}

export class FileSource implements DesiredStateSource {
  readonly store: ObjectStore
  readonly paths: readonly string[]
  private readonly debounceMs: number
  private readonly fileDebounceMs: number
  private readonly log: (line: string) => void
  private readonly gate = new SyncGate()
  private watchers: FSWatcher[] = []
  private timer: NodeJS.Timeout | undefined
  /** files named by change notifications since the last reload; null: a change we cannot place (re-read all) */
  private pending: Set<string> | null = new Set()
  private started = false
  private stopped = false
  private loads = 0
  private errors = 0
  private lastError: string | undefined
  private lastErrorAt: number | undefined
  private readonly reloadListeners = new Set<(r: ReloadResult) => void>()

  constructor(paths: readonly string[], opts: FileSourceOptions = {}) {
    if (paths.length === 0) throw new Error('no manifest paths given')
    this.paths = paths
    this.debounceMs = opts.debounceMs ?? 100
    this.fileDebounceMs = Math.min(opts.fileDebounceMs ?? this.debounceMs, this.debounceMs)
    this.log = opts.log ?? (l => process.stderr.write(l + '\n'))
    this.store =
      opts.store ??
      new ObjectStore({
        log: this.log,
        ...(opts.kubeProxySelector === true ? { filter: kubeProxyFilter } : {}),
      })
  }

  /** Reads the files now and starts watching them. */
  start(): void {
    if (this.started) return
    this.started = true
    this.reload()
    this.watch()
  }

  /** Re-reads every path now (also what a change notification does after the debounce; SIGHUP can call it too). */
  reload(): ReloadResult {
    const r = loadPaths(this.paths)
    // unreadable or syntactically broken files are what a half-finished write looks like; other problems are
    // per-object and permanent, so the rest of the input is applied
    const unreadable = r.problems.filter(p => /^(cannot read|invalid YAML|invalid JSON)/.test(p.reason))
    if (unreadable.length > 0) {
      this.noteError(unreadable)
      const result = { applied: false, problems: r.problems, warnings: r.warnings }
      this.notifyReload(result)
      return result
    }
    for (const w of r.warnings) this.log(`[files] ${w}`)
    const change = this.store.replace(KINDS, r.objects)
    this.loads++
    this.gate.ready()
    const result: ReloadResult =
      change === undefined
        ? { applied: true, problems: r.problems, warnings: r.warnings }
        : { applied: true, change, problems: r.problems, warnings: r.warnings }
    this.notifyReload(result)
    return result
  }

  /**
   * Re-reads only these files of watched directories (what a change notification names): a one-object change in a
   * directory of 20 000 files costs one file. A file that is gone takes its objects with it (a deliberate delete:
   * writers replace files by rename, so a half-written file is never seen); one that cannot be parsed keeps its
   * previous objects.
   */
  reloadFiles(files: Iterable<string>): ReloadResult {
    let change: ChangeSet | undefined
    const problems: Problem[] = []
    const warnings: string[] = []
    let applied = true
    for (const file of files) {
      let text: string | undefined
      try {
        text = readFileSync(file, 'utf8')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
          problems.push({ file, object: '', field: '', reason: `cannot read: ${(err as Error).message}` })
          applied = false
          continue
        }
      }
      // an empty file is one being written (truncated, not yet filled): keep what it held
      if (text !== undefined && text.trim() === '') continue
      const r = text === undefined ? { objects: [], problems: [], warnings: [] } : parseManifests(text, file)
      const unreadable = r.problems.filter(p => /^(cannot read|invalid YAML|invalid JSON)/.test(p.reason))
      problems.push(...r.problems)
      warnings.push(...r.warnings)
      if (unreadable.length > 0) {
        applied = false
        this.noteError(unreadable)
        continue
      }
      for (const w of r.warnings) this.log(`[files] ${w}`)
      const c = this.store.replaceFile(file, KINDS, r.objects)
      if (c !== undefined) change = change === undefined ? c : mergeChanges(change, c)
    }
    this.loads++
    const result: ReloadResult = change === undefined ? { applied, problems, warnings } : { applied, change, problems, warnings }
    this.notifyReload(result)
    return result
  }

  private noteError(unreadable: readonly Problem[]): void {
    this.errors++
    this.lastErrorAt = Date.now()
    this.lastError = unreadable.map(p => `${p.file ?? ''}${p.object ? ` ${p.object}` : ''}: ${p.reason}`).join('; ')
    this.log(`[files] keeping the previous state: ${this.lastError}`)
  }

  /** Called after every reload attempt, applied or not (tests, logs). */
  onReload(cb: (r: ReloadResult) => void): () => void {
    this.reloadListeners.add(cb)
    return () => {
      this.reloadListeners.delete(cb)
    }
  }

  private notifyReload(r: ReloadResult): void {
    for (const cb of [...this.reloadListeners]) cb(r)
  }

  private watch(): void {
    // Watch directories, not files: an editor's save (write new, rename over) replaces the inode a file watch holds.
    // Each directory of a tree gets its own plain watch: Node 20's recursive watch on Linux reports renames late or
    // as "change" of another name, and a rename is how every careful writer replaces a file.
    const dirs = new Map<string, { names: Set<string> | null; given: string | undefined }>() // null: every file
    const addTree = (abs: string, given: string): void => {
      dirs.set(abs, { names: null, given })
      let entries: Dirent[] = []
      try {
        entries = readdirSync(abs, { withFileTypes: true })
      } catch {
        return
      }
      for (const e of entries) if (e.isDirectory()) addTree(join(abs, e.name), join(given, e.name))
    }
    for (const p of this.paths) {
      const abs = resolve(p)
      let isDir = false
      try {
        isDir = statSync(abs).isDirectory()
      } catch {
        /* missing now: watch its parent for it to appear */
      }
      if (isDir) addTree(abs, p)
      else {
        const d = dirname(abs)
        const cur = dirs.get(d)
        if (cur !== undefined && cur.names === null) continue
        dirs.set(d, { names: new Set([...(cur?.names ?? []), basename(abs)]), given: undefined })
      }
    }
    for (const [dir, { names, given }] of dirs) {
      try {
        const w = watch(dir, { persistent: false }, (_event, file) => {
          if (names !== null && (file === null || !names.has(basename(file.toString())))) return
          if (given === undefined || file === null) this.pending = null
          else if (isManifestFile(file.toString())) this.pending?.add(join(given, file.toString()))
          else if (!/\.(tmp|swp)$|~$/.test(file.toString()))
            this.pending = null // a new subdirectory, say
          else return
          this.schedule()
        })
        w.on('error', err => this.log(`[files] watching ${dir}: ${err.message}`))
        this.watchers.push(w)
      } catch (err) {
        this.log(`[files] cannot watch ${dir}: ${(err as Error).message} (changes there will not be picked up)`)
      }
    }
  }

  private schedule(): void {
    if (this.stopped) return
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = setTimeout(
      () => {
        this.timer = undefined
        const files = this.pending
        this.pending = new Set()
        if (this.stopped) return
        if (files === null) this.reload()
        else if (files.size > 0) this.reloadFiles(files)
      },
      this.pending === null ? this.debounceMs : this.fileDebounceMs,
    )
  }

  hasSynced(): boolean {
    return this.gate.open
  }

  waitForSync(timeoutMs?: number): Promise<void> {
    return this.gate.wait(timeoutMs, () => this.lastError ?? 'not read yet')
  }

  onChange(cb: ChangeListener): () => void {
    return this.store.onChange(cb)
  }

  status(): SourceStatus {
    const synced = this.gate.open
    return {
      source: 'files',
      synced,
      resources: KINDS.map(kind => ({
        kind,
        synced,
        connected: this.watchers.length > 0,
        resourceVersion: '',
        lists: this.loads,
        relists: 0,
        reconnects: 0,
        errors: this.errors,
        ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
        ...(this.lastErrorAt !== undefined ? { lastErrorAt: this.lastErrorAt } : {}),
      })),
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    for (const w of this.watchers) w.close()
    this.watchers = []
    this.gate.fail(new Error('stopped'))
  }
}

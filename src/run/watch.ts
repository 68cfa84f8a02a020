// Desired state from the API server: list + watch of Services, EndpointSlices (discovery.k8s.io/v1) and Nodes into an
// ObjectStore, the way client-go's reflector does it:
//
//   list (paginated, resourceVersion=0 the first time: served from the API server's watch cache)
//   -> watch from the list's resourceVersion, allowWatchBookmarks, server timeout 5-10 min (randomised)
//   -> clean end of the stream: watch again from the last resourceVersion (events or bookmarks move it on)
//   -> 410 Gone (HTTP status, or an ERROR event with code 410): relist with resourceVersion="" (a consistent read)
//   -> any other failure (refused, reset, 5xx, 403, idle stream): exponential backoff, then watch again from the last
//      resourceVersion (a compacted one turns into 410 -> relist)
//   -> every resyncSeconds (kube-proxy's configSyncPeriod, default 15m): the open watch is ended and the kind listed
//      again ("not older than" the last resourceVersion, so the API server's watch cache serves it), then watched
//      from there. The store diffs the list against what it holds, so a change a watch missed is corrected and an
//      unchanged cluster produces no ChangeSet. (client-go's informer resync re-delivers its cache to the handlers;
//      tundra's store has no handlers to remind, so the period re-reads the source instead.)
//
// The store is only ever replaced by a successful list, so while the API server is unreachable the last good state
// stays in place (and keeps being served). Authentication, TLS and proxies come from @kubernetes/client-node's
// KubeConfig (applyToHTTPSOptions: client certificates, bearer tokens re-read from file, exec plugins); the HTTP is
// done here because its Watch/ListWatch neither send bookmarks nor reconnect after errors.
import * as http from 'node:http'
import * as https from 'node:https'
import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import type { KubeConfig } from '@kubernetes/client-node'
import type { Kind, KubeObject } from '../k8s/types'
import { Backoff, sleep, type BackoffOptions } from './backoff'
import type { DesiredStateSource, ResourceStatus, SourceStatus } from './source'
import { SyncGate } from './source'
import { KUBE_PROXY_LABEL_SELECTOR, ObjectStore, kubeProxyFilter, withKind, type ChangeListener } from './store'

type ClientNode = typeof import('@kubernetes/client-node')
let clientNode: Promise<ClientNode> | undefined

/**
 * @kubernetes/client-node 1.x is an ES module. Node >= 20.19 can require() it; older Node needs a real import(),
 * which TypeScript's CommonJS output would turn back into require(), hence the Function. Loaded on first use only:
 * it takes over a second, and most tundra commands never talk to an API server.
 */
export function loadClientNode(): Promise<ClientNode> {
  clientNode ??= (async () => {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require('@kubernetes/client-node') as ClientNode
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERR_REQUIRE_ESM') throw err
      const dynamicImport = new Function('s', 'return import(s)') as (s: string) => Promise<ClientNode>
      return dynamicImport('@kubernetes/client-node')
    }
  })()
  return clientNode
}

/** Why `tundra run` cannot reach an API server, and what to give it instead. */
class NoApiServerError extends Error {
  readonly code = 'ERR_NO_API_SERVER'
}

/**
 * kube-proxy's rule: a kubeconfig path if given, else the in-cluster service account. Outside a cluster (no
 * KUBERNETES_SERVICE_HOST) it falls back to $KUBECONFIG / ~/.kube/config, which is what a developer expects; when
 * none of them exists it says so (client-node would silently use http://localhost:8080 and retry forever).
 * `master` (kube-proxy's --master) replaces the server address of whichever was loaded: with the in-cluster service
 * account it keeps its token and CA, so a DaemonSet can reach the API server directly rather than through the
 * `kubernetes` Service VIP that tundra itself provides. Setting KUBERNETES_SERVICE_HOST/PORT in the pod does the same.
 */
export async function loadKubeConfig(path?: string, master?: string): Promise<KubeConfig> {
  const k8s = await loadClientNode()
  const kc = new k8s.KubeConfig()
  if (path !== undefined && path !== '') kc.loadFromFile(path)
  else if (process.env['KUBERNETES_SERVICE_HOST'] !== undefined) kc.loadFromCluster()
  else {
    const env = process.env['KUBECONFIG']
    const files = env !== undefined && env !== '' ? env.split(':').filter(f => f !== '') : [join(homedir(), '.kube', 'config')]
    if (!files.some(f => existsSync(f))) {
      throw new NoApiServerError(
        `no API server to read Services from: no --kubeconfig (clientConnection.kubeconfig), not in a pod (KUBERNETES_SERVICE_HOST is unset), ` +
          `and no kubeconfig at ${files.join(':')}${env ? ' ($KUBECONFIG)' : ''}. Give --kubeconfig FILE, or -f MANIFESTS to run without an API server`,
      )
    }
    kc.loadFromDefault()
  }
  const cluster = kc.getCurrentCluster()
  if (cluster === null) throw new Error(`kubeconfig${path ? ` ${path}` : ''}: no current cluster`)
  if (master !== undefined && master !== '') {
    let url: URL
    try {
      url = new URL(master.includes('://') ? master : `https://${master}`)
    } catch {
      throw new Error(`--master: not a URL: ${master}`)
    }
    const server = url.toString().replace(/\/+$/, '')
    kc.clusters = kc.clusters.map(c => (c.name === cluster.name ? { ...c, server } : c))
  }
  if (kc.getCurrentCluster()?.server === undefined || kc.getCurrentCluster()?.server === '') {
    throw new NoApiServerError(`kubeconfig${path ? ` ${path}` : ''}: the current cluster has no server address; give --master URL`)
  }
  return kc
}

export interface WatchOptions {
  /** verbose lines (kube-proxy's -v): each watch event at 5; the caller drops what its verbosity excludes */
  readonly logV?: (v: number, line: string) => void
  /** kubeconfig file; empty or absent: in-cluster (see loadKubeConfig) */
  readonly kubeconfig?: string
  /** the API server's address, replacing the kubeconfig's (kube-proxy's --master) */
  readonly master?: string
  /** an already loaded KubeConfig (wins over `kubeconfig`) */
  readonly kubeConfig?: KubeConfig
  /** this node's name: needed for nodes 'self' */
  readonly nodeName?: string
  /** which Nodes to watch: all of them (default: peers' pod CIDRs and addresses), only this node, or none */
  readonly nodes?: 'all' | 'self' | 'none'
  /**
   * Select Services and EndpointSlices like kube-proxy's informers (no service-proxy-name label, no headless label),
   * on the server and in the store. Off by default: cluster DNS needs headless services and their endpoints, and
   * normalize() already keeps proxy-name services out of the NAT (its `ignored`) and headless ones without rules.
   */
  readonly kubeProxySelector?: boolean
  /** share a store (default: a new one) */
  readonly store?: ObjectStore
  readonly backoff?: BackoffOptions
  /** server-side watch timeout, randomised in [t, 2t) (default 300, client-go's minimum watch timeout) */
  readonly watchTimeoutSeconds?: number
  /** a stream with no bytes for this long is considered dead (default: watch timeout + 30 s) */
  readonly idleTimeoutMs?: number
  /** list requests: give up after this much silence (default 60 s) */
  readonly requestTimeoutMs?: number
  /** list again this often, in seconds (kube-proxy's configSyncPeriod); 0 or absent = never */
  readonly resyncSeconds?: number
  /** list page size (default 500) */
  readonly pageSize?: number
  readonly log?: (line: string) => void
  readonly userAgent?: string
}

interface ResourceDef {
  readonly kind: Kind
  readonly path: string
}

const RESOURCES: readonly ResourceDef[] = [
  { kind: 'Service', path: '/api/v1/services' },
  { kind: 'EndpointSlice', path: '/apis/discovery.k8s.io/v1/endpointslices' },
  { kind: 'Node', path: '/api/v1/nodes' },
]

/** A watch that lived at least this long without error counts as healthy (resets the backoff). */
const HEALTHY_WATCH_MS = 10_000

export class GoneError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'GoneError'
  }
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
    this.name = 'ApiError'
  }
}

interface Status {
  code?: number
  reason?: string
  message?: string
}

interface Transport {
  get(path: string, query: URLSearchParams, signal: AbortSignal, idleMs: number): Promise<http.IncomingMessage>
}

async function kubeTransport(kc: KubeConfig, userAgent: string): Promise<Transport> {
  const cluster = kc.getCurrentCluster()
  if (cluster === null) throw new Error('kubeconfig: no current cluster')
  const base = cluster.server.replace(/\/+$/, '')
  return {
    async get(path, query, signal, idleMs) {
      // per request: token files and exec credentials may have been rotated since the last one
      const opts: https.RequestOptions = {}
      await kc.applyToHTTPSOptions(opts)
      const url = new URL(base + path)
      url.search = query.toString()
      const mod = url.protocol === 'http:' ? http : https
      return new Promise((resolve, reject) => {
        let response: http.IncomingMessage | undefined
        const req = mod.request(
          url,
          {
            ...opts,
            method: 'GET',
            signal,
            headers: { ...(opts.headers ?? {}), Accept: 'application/json', 'User-Agent': userAgent },
          },
          res => {
            response = res
            resolve(res)
          },
        )
        req.on('socket', s => s.setKeepAlive(true, 30_000))
        // inactivity, not total time: a watch may rightly last many minutes. Destroying the response (once there is
        // one) makes this reason, not a bare "aborted", what the reader sees.
        req.setTimeout(idleMs, () => {
          const err = new Error(`no data from the API server for ${idleMs < 10_000 ? `${idleMs} ms` : `${Math.round(idleMs / 1000)} s`}`)
          if (response !== undefined) response.destroy(err)
          else req.destroy(err)
        })
        req.on('error', reject)
        req.end()
      })
    },
  }
}

function readBody(res: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = ''
    res.setEncoding('utf8')
    res.on('data', (d: string) => {
      body += d
    })
    res.on('end', () => resolve(body))
    res.on('error', reject)
    res.on('close', () => {
      if (!res.complete) reject(new Error('connection closed before the response was complete'))
    })
  })
}

function statusMessage(status: number, body: string): string {
  try {
    const s = JSON.parse(body) as Status
    if (typeof s.message === 'string' && s.message !== '') return `${status} ${s.reason ?? ''}: ${s.message}`.replace(' :', ':')
  } catch {
    /* not a Status */
  }
  return `HTTP ${status}${body ? `: ${body.slice(0, 200)}` : ''}`
}

class Reflector {
  rv = ''
  synced = false
  connected = false
  lists = 0
  relists = 0
  reconnects = 0
  errors = 0
  lastError: string | undefined
  lastErrorAt: number | undefined

  constructor(
    private readonly def: ResourceDef,
    private readonly src: ApiSource,
  ) {}

  get kind(): Kind {
    return this.def.kind
  }

  status(): ResourceStatus {
    return {
      kind: this.def.kind,
      synced: this.synced,
      connected: this.connected,
      resourceVersion: this.rv,
      lists: this.lists,
      relists: this.relists,
      reconnects: this.reconnects,
      errors: this.errors,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
      ...(this.lastErrorAt !== undefined ? { lastErrorAt: this.lastErrorAt } : {}),
    }
  }

  private selectors(q: URLSearchParams): void {
    const o = this.src.opts
    if (o.kubeProxySelector === true && this.def.kind !== 'Node') q.set('labelSelector', KUBE_PROXY_LABEL_SELECTOR)
    if (this.def.kind === 'Node' && o.nodes === 'self') q.set('fieldSelector', `metadata.name=${o.nodeName ?? ''}`)
  }

  async run(t: Transport, signal: AbortSignal): Promise<void> {
    const backoff = new Backoff(this.src.opts.backoff)
    let needList = true
    // the first list may come from the watch cache; after a 410 it must not (it could be as old as what expired)
    let listRv = '0'
    let goneInARow = 0
    let watches = 0
    const resyncMs = (this.src.opts.resyncSeconds ?? 0) * 1000
    let resyncAt = Infinity
    while (!signal.aborted) {
      try {
        if (needList || Date.now() >= resyncAt) {
          await this.list(t, needList ? listRv : this.rv, signal)
          needList = false
          if (resyncMs > 0) resyncAt = Date.now() + resyncMs
        }
        if (watches++ > 0) this.reconnects++
        const r = await this.watch(t, signal, resyncAt)
        goneInARow = 0
        if (r.events > 0 || r.ms >= HEALTHY_WATCH_MS || r.resync) backoff.reset()
        else if (!(await sleep(backoff.next(), signal))) break // closed at once with nothing: do not spin
      } catch (err) {
        this.connected = false
        if (signal.aborted) break
        if (err instanceof GoneError) {
          this.relists++
          needList = true
          listRv = ''
          this.src.log(`[watch] ${this.def.kind}: ${err.message}; relisting`)
          // a relist answered by 410 again at once would otherwise loop as fast as the network allows
          if (goneInARow++ > 0 && !(await sleep(backoff.next(), signal))) break
          continue
        }
        this.errors++
        this.lastError = (err as Error).message
        this.lastErrorAt = Date.now()
        const wait = backoff.next()
        this.src.log(`[watch] ${this.def.kind}: ${(err as Error).message}; keeping the last state, retrying in ${wait} ms`)
        if (!(await sleep(wait, signal))) break
      }
    }
    this.connected = false
  }

  private async list(t: Transport, rv: string, signal: AbortSignal): Promise<void> {
    const items: KubeObject[] = []
    let cont = ''
    let listRv = ''
    do {
      const q = new URLSearchParams()
      q.set('limit', String(this.src.opts.pageSize ?? 500))
      // resourceVersion may not be combined with continue: the token pins the snapshot
      if (cont !== '') q.set('continue', cont)
      else if (rv !== '') q.set('resourceVersion', rv)
      this.selectors(q)
      const res = await t.get(this.def.path, q, signal, this.src.opts.requestTimeoutMs ?? 60_000)
      const body = await readBody(res)
      if (res.statusCode === 410) throw new GoneError(`list: ${statusMessage(410, body)}`)
      if (res.statusCode !== 200) throw new ApiError(res.statusCode ?? 0, `list ${this.def.path}: ${statusMessage(res.statusCode ?? 0, body)}`)
      const list = JSON.parse(body) as { metadata?: { resourceVersion?: string; continue?: string }; items?: Record<string, unknown>[] | null }
      for (const item of list.items ?? []) items.push(withKind(item, this.def.kind))
      cont = list.metadata?.continue ?? ''
      listRv = list.metadata?.resourceVersion ?? ''
    } while (cont !== '')
    this.src.store.replace([this.def.kind], items)
    this.rv = listRv
    this.lists++
    if (!this.synced) {
      this.synced = true
      this.src.resourceSynced()
    }
  }

  /** One watch stream; it ends (resync: true) at `until`, the time of the next periodic list. */
  private async watch(t: Transport, signal: AbortSignal, until: number): Promise<{ events: number; ms: number; resync: boolean }> {
    const o = this.src.opts
    const base = o.watchTimeoutSeconds ?? 300
    const timeout = Math.floor(base * (1 + Math.random()))
    const q = new URLSearchParams()
    q.set('watch', 'true')
    q.set('resourceVersion', this.rv)
    q.set('allowWatchBookmarks', 'true')
    q.set('timeoutSeconds', String(timeout))
    this.selectors(q)
    const started = Date.now()
    const res = await t.get(this.def.path, q, signal, o.idleTimeoutMs ?? timeout * 1000 + 30_000)
    if (res.statusCode !== 200) {
      const body = await readBody(res).catch(() => '')
      if (res.statusCode === 410) throw new GoneError(`watch: ${statusMessage(410, body)}`)
      throw new ApiError(res.statusCode ?? 0, `watch ${this.def.path}: ${statusMessage(res.statusCode ?? 0, body)}`)
    }
    this.connected = true
    const store = this.src.store
    let events = 0
    return new Promise((resolve, reject) => {
      let pending = ''
      let settled = false
      const timer =
        until === Infinity
          ? undefined
          : setTimeout(
              () => {
                if (settled) return
                settled = true
                this.connected = false
                res.destroy()
                resolve({ events, ms: Date.now() - started, resync: true })
              },
              Math.max(0, until - Date.now()),
            )
      const fail = (err: Error): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        res.destroy()
        reject(err)
      }
      const handle = (line: string): void => {
        const ev = JSON.parse(line) as { type?: string; object?: Record<string, unknown> }
        const obj = ev.object ?? {}
        if (this.src.opts.logV !== undefined && ev.type !== 'BOOKMARK') {
          const md = (obj['metadata'] ?? {}) as { namespace?: string; name?: string; resourceVersion?: string }
          const ref = md.namespace ? `${md.namespace}/${md.name ?? ''}` : (md.name ?? '')
          this.src.opts.logV(5, `[watch] event type=${ev.type} kind=${this.def.kind} object=${ref} resourceVersion=${md.resourceVersion ?? ''}`)
        }
        switch (ev.type) {
          case 'ADDED':
          case 'MODIFIED':
            store.upsert(withKind(obj, this.def.kind))
            break
          case 'DELETED': {
            const md = obj['metadata'] as { namespace?: string; name?: string } | undefined
            store.remove(this.def.kind, md?.namespace ?? '', md?.name ?? '')
            break
          }
          case 'BOOKMARK':
            break
          case 'ERROR': {
            const s = obj as Status
            const msg = `watch: ${statusMessage(s.code ?? 0, JSON.stringify(obj))}`
            fail(s.code === 410 ? new GoneError(msg) : new ApiError(s.code ?? 0, msg))
            return
          }
          default:
            throw new Error(`watch: unknown event type ${JSON.stringify(ev.type)}`)
        }
        events++
        const rv = (obj['metadata'] as { resourceVersion?: string } | undefined)?.resourceVersion
        if (typeof rv === 'string' && rv !== '') this.rv = rv
      }
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        if (settled) return
        pending += chunk
        let nl: number
        while (!settled && (nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl).trim()
          pending = pending.slice(nl + 1)
          if (line === '') continue
          try {
            handle(line)
          } catch (err) {
            // a garbled stream cannot be trusted past this point: reconnect from the last good resourceVersion
            fail(new Error(`bad watch event: ${(err as Error).message}`))
          }
        }
      })
      res.on('error', err => fail(err))
      res.on('close', () => {
        if (settled) return
        if (!res.complete) {
          fail(new Error('watch connection dropped'))
          return
        }
        settled = true
        clearTimeout(timer)
        this.connected = false
        resolve({ events, ms: Date.now() - started, resync: false })
      })
    })
  }
}

export class ApiSource implements DesiredStateSource {
  readonly store: ObjectStore
  readonly opts: WatchOptions
  readonly log: (line: string) => void
  private readonly reflectors: Reflector[]
  private readonly gate = new SyncGate()
  private readonly abort = new AbortController()
  private running: Promise<void> | undefined

  constructor(opts: WatchOptions = {}) {
    this.opts = opts
    this.log = opts.log ?? (l => process.stderr.write(l + '\n'))
    if (opts.nodes === 'self' && (opts.nodeName === undefined || opts.nodeName === '')) throw new Error('nodes: self needs nodeName')
    this.store =
      opts.store ??
      new ObjectStore({
        log: this.log,
        ...(opts.kubeProxySelector === true ? { filter: kubeProxyFilter } : {}),
      })
    this.reflectors = RESOURCES.filter(r => r.kind !== 'Node' || (opts.nodes ?? 'all') !== 'none').map(r => new Reflector(r, this))
  }

  start(): void {
    if (this.running !== undefined) return
    this.running = (async () => {
      let t: Transport
      try {
        const kc = this.opts.kubeConfig ?? (await loadKubeConfig(this.opts.kubeconfig, this.opts.master))
        t = await kubeTransport(kc, this.opts.userAgent ?? 'tundra')
      } catch (err) {
        this.log(`[watch] ${(err as Error).message}`)
        this.gate.fail(err as Error)
        return
      }
      await Promise.all(this.reflectors.map(r => r.run(t, this.abort.signal)))
    })()
  }

  /** @internal called by a reflector after its first list */
  resourceSynced(): void {
    if (this.reflectors.every(r => r.synced)) this.gate.ready()
  }

  hasSynced(): boolean {
    return this.gate.open
  }

  waitForSync(timeoutMs?: number): Promise<void> {
    return this.gate.wait(timeoutMs, () =>
      this.reflectors
        .filter(r => !r.synced)
        .map(r => `${r.kind}${r.lastError !== undefined ? ` (${r.lastError})` : ''}`)
        .join(', '),
    )
  }

  onChange(cb: ChangeListener): () => void {
    return this.store.onChange(cb)
  }

  status(): SourceStatus {
    return { source: 'api', synced: this.gate.open, resources: this.reflectors.map(r => r.status()) }
  }

  async stop(): Promise<void> {
    this.abort.abort()
    this.gate.fail(new Error('stopped'))
    await this.running
  }
}

// A small Kubernetes API server for watch tests: the real list/watch wire format over node:http on 127.0.0.1.
//
//   GET <path>?limit&continue                 {"kind":"<Kind>List","metadata":{"resourceVersion","continue"},"items":[...]}
//   GET <path>?watch=true&resourceVersion=N   chunked stream of {"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}
//
// History before `compact()` is gone: a watch from an older resourceVersion gets 410 (as an ERROR event in a 200
// stream, or as an HTTP 410, per `goneMode`). Tests drive it with upsert/remove/bookmark/compact/dropWatches/stop.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { EventEmitter } from 'node:events'

export interface Resource {
  readonly kind: string
  readonly apiVersion: string
  readonly path: string
}

export const RESOURCES: readonly Resource[] = [
  { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services' },
  { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', path: '/apis/discovery.k8s.io/v1/endpointslices' },
  { kind: 'Node', apiVersion: 'v1', path: '/api/v1/nodes' },
]

type Obj = Record<string, unknown> & { metadata: Record<string, unknown> }

interface HistoryEntry {
  readonly rv: number
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED'
  readonly object: Obj
}

interface Watcher {
  readonly kind: string
  readonly res: ServerResponse
  readonly bookmarks: boolean
  readonly labelSelector: string | undefined
}

export interface RequestLog {
  readonly kind: string
  readonly watch: boolean
  readonly query: URLSearchParams
  readonly headers: IncomingMessage['headers']
  readonly status: number
}

function keyOf(o: Obj): string {
  return `${String(o.metadata['namespace'] ?? '')}/${String(o.metadata['name'])}`
}

/** `!label` terms only (what the kube-proxy selector uses). */
function matches(o: Obj, selector: string | undefined): boolean {
  if (selector === undefined || selector === '') return true
  const labels = (o.metadata['labels'] ?? {}) as Record<string, string>
  return selector.split(',').every(term => !term.startsWith('!') || labels[term.slice(1)] === undefined)
}

export class FakeApiServer extends EventEmitter {
  private server: Server | undefined
  private readonly sockets = new Set<Socket>()
  private readonly objects = new Map<string, Map<string, Obj>>()
  private readonly history = new Map<string, HistoryEntry[]>()
  private readonly watchers = new Set<Watcher>()
  rv = 1000
  /** watches from a resourceVersion below this get 410 (its history is gone) */
  compactedRv = 0
  goneMode: 'event' | 'http' = 'event'
  /** items per list page when the client sends limit (to exercise continue) */
  pageSize = 0
  /** send each event line in two writes, split mid-JSON */
  splitWrites = false
  readonly requests: RequestLog[] = []
  /** answer the next requests with this status instead (a Status body) */
  failNext: { count: number; status: number; watchOnly?: boolean } | undefined
  port = 0

  constructor() {
    super()
    for (const r of RESOURCES) {
      this.objects.set(r.kind, new Map())
      this.history.set(r.kind, [])
    }
  }

  async start(port = this.port, host = '127.0.0.1'): Promise<number> {
    const server = createServer((req, res) => this.handle(req, res))
    server.on('connection', s => {
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => resolve())
    })
    this.server = server
    this.port = (server.address() as { port: number }).port
    return this.port
  }

  /** An outage: the port stops answering; every open connection is cut. */
  async stop(): Promise<void> {
    const s = this.server
    this.server = undefined
    this.watchers.clear()
    for (const sock of this.sockets) sock.destroy()
    if (s !== undefined) await new Promise<void>(resolve => s.close(() => resolve()))
  }

  kubeconfig(token = 'test-token'): string {
    return [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      `- name: fake`,
      `  cluster: {server: "http://127.0.0.1:${this.port}", insecure-skip-tls-verify: true}`,
      'users:',
      `- name: u`,
      `  user: {token: ${token}}`,
      'contexts:',
      `- name: ctx`,
      `  context: {cluster: fake, user: u}`,
      'current-context: ctx',
      '',
    ].join('\n')
  }

  /** Open watch streams of a kind. */
  watching(kind: string): number {
    let n = 0
    for (const w of this.watchers) if (w.kind === kind) n++
    return n
  }

  upsert(kind: string, object: Record<string, unknown>): number {
    const res = RESOURCES.find(r => r.kind === kind)!
    const rv = ++this.rv
    const md = { ...(object['metadata'] as Record<string, unknown>), resourceVersion: String(rv) }
    const o: Obj = { apiVersion: res.apiVersion, kind, ...object, metadata: md }
    const m = this.objects.get(kind)!
    const prev = m.get(keyOf(o))
    m.set(keyOf(o), o)
    this.record(kind, { rv, type: prev === undefined ? 'ADDED' : 'MODIFIED', object: o }, prev)
    return rv
  }

  /** A change no watcher hears about (an event lost on the way): only a list shows it. */
  upsertUnannounced(kind: string, object: Record<string, unknown>): number {
    const res = RESOURCES.find(r => r.kind === kind)!
    const rv = ++this.rv
    const o: Obj = {
      apiVersion: res.apiVersion,
      kind,
      ...object,
      metadata: { ...(object['metadata'] as Record<string, unknown>), resourceVersion: String(rv) },
    }
    this.objects.get(kind)!.set(keyOf(o), o)
    return rv
  }

  remove(kind: string, namespace: string, name: string): number {
    const m = this.objects.get(kind)!
    const k = `${namespace}/${name}`
    const prev = m.get(k)
    if (prev === undefined) throw new Error(`no ${kind} ${k}`)
    m.delete(k)
    const rv = ++this.rv
    this.record(kind, { rv, type: 'DELETED', object: { ...prev, metadata: { ...prev.metadata, resourceVersion: String(rv) } } })
    return rv
  }

  /** A BOOKMARK to every watcher that asked for them, at the current resourceVersion. */
  bookmark(): number {
    const rv = ++this.rv
    for (const w of this.watchers) {
      if (!w.bookmarks) continue
      const res = RESOURCES.find(r => r.kind === w.kind)!
      this.send(w.res, { type: 'BOOKMARK', object: { kind: w.kind, apiVersion: res.apiVersion, metadata: { resourceVersion: String(rv) } } })
    }
    return rv
  }

  /** Forgets the history: watches from any resourceVersion seen so far now get 410. */
  compact(): void {
    this.compactedRv = this.rv
    for (const h of this.history.values()) h.length = 0
  }

  /** Tells open watchers their resourceVersion is too old (an ERROR 410 event), and ends their streams. */
  expireWatches(): void {
    for (const w of [...this.watchers]) {
      this.send(w.res, { type: 'ERROR', object: gone() })
      w.res.end()
      this.watchers.delete(w)
    }
  }

  /** Cuts every watch connection mid-stream (no chunked terminator): a dropped connection. */
  dropWatches(): void {
    for (const w of [...this.watchers]) {
      this.watchers.delete(w)
      w.res.socket?.destroy()
    }
  }

  /** Ends every watch stream cleanly, as the server's timeoutSeconds does. */
  endWatches(): void {
    for (const w of [...this.watchers]) {
      this.watchers.delete(w)
      w.res.end()
    }
  }

  /** Like the API server's watch cache: an object that stops matching a watcher's selector is DELETED for it. */
  private record(kind: string, e: HistoryEntry, prev?: Obj): void {
    this.history.get(kind)!.push(e)
    for (const w of this.watchers) {
      if (w.kind !== kind) continue
      const cur = matches(e.object, w.labelSelector)
      const old = prev !== undefined && matches(prev, w.labelSelector)
      if (e.type === 'MODIFIED' && !cur && old)
        this.send(w.res, { type: 'DELETED', object: { ...prev, metadata: { ...prev.metadata, resourceVersion: String(e.rv) } } })
      else if (e.type === 'MODIFIED' && cur && !old) this.send(w.res, { type: 'ADDED', object: e.object })
      else if (cur) this.send(w.res, { type: e.type, object: e.object })
    }
  }

  private send(res: ServerResponse, ev: unknown): void {
    const line = JSON.stringify(ev) + '\n'
    if (!this.splitWrites) {
      res.write(line)
      return
    }
    const cut = Math.floor(line.length / 2)
    res.write(line.slice(0, cut))
    setImmediate(() => {
      if (!res.writableEnded && !res.destroyed) res.write(line.slice(cut))
    })
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x')
    const resDef = RESOURCES.find(r => r.path === url.pathname)
    const watch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1'
    const log = (status: number): void => {
      const entry: RequestLog = { kind: resDef?.kind ?? url.pathname, watch, query: url.searchParams, headers: req.headers, status }
      this.requests.push(entry)
      this.emit('request', entry)
    }
    if (resDef === undefined) {
      log(404)
      status(res, 404, 'NotFound', 'the server could not find the requested resource')
      return
    }
    if (this.failNext !== undefined && this.failNext.count > 0 && (watch || this.failNext.watchOnly !== true)) {
      this.failNext.count--
      log(this.failNext.status)
      status(res, this.failNext.status, 'InternalError', 'injected failure')
      return
    }
    const selector = url.searchParams.get('labelSelector') ?? undefined
    if (!watch) {
      const all = [...this.objects.get(resDef.kind)!.values()].filter(o => matches(o, selector)).sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : 1))
      const limit = Number(url.searchParams.get('limit') ?? 0)
      const start = Number(url.searchParams.get('continue') ?? 0)
      const size = this.pageSize > 0 && limit > 0 ? this.pageSize : all.length
      const page = all.slice(start, start + size)
      const more = start + size < all.length
      // items without kind/apiVersion, as a real list returns them
      const items = page.map(o => {
        const { kind: _k, apiVersion: _a, ...rest } = o
        return rest
      })
      log(200)
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end(
        JSON.stringify({
          kind: `${resDef.kind}List`,
          apiVersion: resDef.apiVersion,
          metadata: { resourceVersion: String(this.rv), ...(more ? { continue: String(start + size) } : {}) },
          items,
        }),
      )
      return
    }
    const from = Number(url.searchParams.get('resourceVersion') ?? '0')
    if (from < this.compactedRv && from !== 0) {
      log(410)
      if (this.goneMode === 'http') {
        status(res, 410, 'Expired', `too old resource version: ${from} (${this.compactedRv + 1})`)
        return
      }
      res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' })
      this.send(res, { type: 'ERROR', object: gone(from, this.compactedRv + 1) })
      res.end()
      return
    }
    log(200)
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' })
    res.flushHeaders()
    for (const e of this.history.get(resDef.kind)!) {
      if (e.rv > from && matches(e.object, selector)) this.send(res, { type: e.type, object: e.object })
    }
    const w: Watcher = { kind: resDef.kind, res, bookmarks: url.searchParams.get('allowWatchBookmarks') === 'true', labelSelector: selector }
    this.watchers.add(w)
    res.on('close', () => this.watchers.delete(w))
    this.emit('watch', resDef.kind)
  }
}

function gone(from = 0, oldest = 0): Record<string, unknown> {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: `too old resource version: ${from} (${oldest})`,
    reason: 'Expired',
    code: 410,
  }
}

function status(res: ServerResponse, code: number, reason: string, message: string): void {
  res.writeHead(code, { 'Content-Type': 'application/json' })
  res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }))
}

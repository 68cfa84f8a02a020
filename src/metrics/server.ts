// kube-proxy's two HTTP endpoints:
//   metricsBindAddress (127.0.0.1:10249)  /metrics, /healthz ("ok": the process answers), /configz
//   healthzBindAddress (0.0.0.0:10256)    /healthz and /livez with kube-proxy's JSON body, 200 or 503
// /healthz is what cloud load balancers probe for externalTrafficPolicy Cluster services, so it also fails while the
// node is being deleted (drain it from the LB first); /livez is sync health alone (for a liveness probe).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { splitHostPort } from '../wire/addr'
import type { SyncHealth } from '../run/sync'
import type { TundraMetrics } from './registry'

export interface ServeOptions {
  /** "ip:port"; port 0 = any free port */
  readonly metricsBindAddress: string
  readonly healthzBindAddress: string
  readonly metrics: TundraMetrics
  readonly health: () => SyncHealth
  /** what /configz returns (kube-proxy: the running configuration) */
  readonly configz?: () => unknown
  /** kube-proxy's bindAddressHardFail: a port that cannot be bound is fatal (default), else logged and skipped */
  readonly hardFail?: boolean
  readonly log?: (line: string) => void
}

export interface RunningServers {
  readonly metrics: AddressInfo
  readonly healthz: AddressInfo
  close(): Promise<void>
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>

/** Go's zero time: what kube-proxy reports as lastUpdated before its first sync. */
const ZERO_TIME = '0001-01-01T00:00:00Z'

function iso(ms: number | undefined): string {
  return ms === undefined ? ZERO_TIME : new Date(ms).toISOString()
}

/** kube-proxy's /healthz body: {"lastUpdated": "...","currentTime": "...", "nodeEligible": true} and its status. */
export function healthzResponse(h: SyncHealth): { status: number; body: string } {
  const healthy = h.healthy && h.nodeEligible
  // when healthy, kube-proxy reports lastUpdated = now (older clients read it as "the sync loop is alive")
  const last = healthy ? h.now : h.lastUpdated
  return {
    status: healthy ? 200 : 503,
    body: `{"lastUpdated": ${JSON.stringify(iso(last))},"currentTime": ${JSON.stringify(iso(h.now))}, "nodeEligible": ${h.nodeEligible}}`,
  }
}

export function livezResponse(h: SyncHealth): { status: number; body: string } {
  const last = h.healthy ? h.now : h.lastUpdated
  return {
    status: h.healthy ? 200 : 503,
    body: `{"lastUpdated": ${JSON.stringify(iso(last))},"currentTime": ${JSON.stringify(iso(h.now))}}`,
  }
}

function json(res: ServerResponse, r: { status: number; body: string }): void {
  res.writeHead(r.status, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' })
  res.end(r.body)
}

function metricsRoutes(opts: ServeOptions): Record<string, Handler> {
  return {
    '/metrics': async (_req, res) => {
      const m = await opts.metrics.render()
      res.writeHead(200, { 'Content-Type': m.contentType })
      res.end(m.body)
    },
    '/healthz': (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' })
      res.end('ok')
    },
    '/configz': (_req, res) => {
      if (opts.configz === undefined) {
        res.writeHead(404).end()
        return
      }
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end(JSON.stringify({ 'kubeproxy.config.k8s.io': opts.configz() }))
    },
  }
}

function healthRoutes(opts: ServeOptions): Record<string, Handler> {
  return {
    '/healthz': (_req, res) => {
      const r = healthzResponse(opts.health())
      opts.metrics.countHealthz(r.status)
      json(res, r)
    },
    '/livez': (_req, res) => {
      const r = livezResponse(opts.health())
      opts.metrics.countLivez(r.status)
      json(res, r)
    },
  }
}

function serve(routes: Record<string, Handler>, log: (line: string) => void): Server {
  return createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/'
    const h = routes[path]
    if (h === undefined) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('404 page not found\n')
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end()
      return
    }
    Promise.resolve(h(req, res)).catch((err: unknown) => {
      log(`[http] ${path}: ${(err as Error).message}`)
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' })
      res.end(`${(err as Error).message}\n`)
    })
  })
}

function listen(server: Server, addr: string, what: string): Promise<AddressInfo> {
  const hp = splitHostPort(addr)
  if (hp === undefined) return Promise.reject(new Error(`${what}: expected ip:port, got ${JSON.stringify(addr)}`))
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(new Error(`${what} ${addr}: ${err.message}`))
    server.once('error', onError)
    server.listen(hp.port, hp.host, () => {
      server.off('error', onError)
      resolve(server.address() as AddressInfo)
    })
  })
}

function close(server: Server): Promise<void> {
  return new Promise(resolve => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
}

/**
 * Starts both servers (one, when both addresses are the same fixed ip:port). Rejects if a port cannot be bound;
 * whether that is fatal is the caller's call (kube-proxy: bindAddressHardFail).
 */
export async function startServers(opts: ServeOptions): Promise<RunningServers> {
  const log = opts.log ?? (l => process.stderr.write(l + '\n'))
  const same = opts.metricsBindAddress === opts.healthzBindAddress && splitHostPort(opts.metricsBindAddress)?.port !== 0
  if (same) {
    // both on one port: the health /healthz (JSON) wins over the metrics server's plain "ok"
    const server = serve({ ...metricsRoutes(opts), ...healthRoutes(opts) }, log)
    const a = await listen(server, opts.metricsBindAddress, 'metrics and healthz')
    return { metrics: a, healthz: a, close: () => close(server) }
  }
  const m = serve(metricsRoutes(opts), log)
  const h = serve(healthRoutes(opts), log)
  const soft = async (server: Server, addr: string, what: string): Promise<AddressInfo> => {
    try {
      return await listen(server, addr, what)
    } catch (err) {
      if (opts.hardFail !== false) throw err
      log(`[metrics] ${(err as Error).message}; going on without it (bindAddressHardFail is false)`)
      return { address: '', family: '', port: 0 }
    }
  }
  const ma = await soft(m, opts.metricsBindAddress, 'metricsBindAddress')
  let ha: AddressInfo
  try {
    ha = await soft(h, opts.healthzBindAddress, 'healthzBindAddress')
  } catch (err) {
    await close(m)
    throw err
  }
  return {
    metrics: ma,
    healthz: ha,
    close: async () => {
      await Promise.all([close(m), close(h)])
    },
  }
}

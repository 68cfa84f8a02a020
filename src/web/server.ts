// The live web view's HTTP server, on the control thread (never the packet thread): GET / is one static page
// (page.ts, inline JS/CSS), GET /api/state the JSON it polls every second (state.ts). Off unless an address is
// configured; loopback only unless remote access is allowed explicitly. Concurrent polls share one snapshot per
// second, so the cost does not grow with the number of open pages.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { canonicalIp, splitHostPort } from '../wire/addr'
import { WEB_PAGE } from './page'
import { webState, type WebSource, type WebState } from './state'

/** A snapshot is reused by polls that arrive within this many ms of it. */
const WEB_SNAPSHOT_REUSE_MS = 1000

export interface WebOptions {
  /** "ip:port"; port 0 = any free port */
  readonly addr: string
  /** serve on an address other than loopback (the page shows every flow of the node: off by default) */
  readonly allowRemote?: boolean
  readonly log?: (line: string) => void
}

export interface RunningWebView {
  readonly address: AddressInfo
  close(): Promise<void>
}

/** A setting the web view refuses (bad address, or not loopback without allowRemote). */
class WebConfigError extends Error {
  override readonly name = 'WebConfigError'
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || /^127\./.test(ip)
}

/** Checks a web address: `ip:port` (IPv6 in brackets), loopback unless `allowRemote`. */
export function parseWebAddr(addr: string, allowRemote: boolean): { host: string; port: number } {
  const hp = splitHostPort(addr)
  const host = hp === undefined ? undefined : canonicalIp(hp.host)
  if (hp === undefined || host === undefined) throw new WebConfigError(`web address ${JSON.stringify(addr)}: expected ip:port, e.g. 127.0.0.1:9099`)
  if (!allowRemote && !isLoopback(host)) {
    throw new WebConfigError(
      `web address ${addr} is not loopback: the web view shows every flow of the node; allow it with --web-allow-remote (web.allowRemote)`,
    )
  }
  return { host, port: hp.port }
}

export async function startWebView(src: WebSource, opts: WebOptions): Promise<RunningWebView> {
  const { host, port } = parseWebAddr(opts.addr, opts.allowRemote === true)
  let last: { at: number; state: Promise<WebState> } | undefined
  const snapshot = (): Promise<WebState> => {
    const now = Date.now()
    if (last === undefined || now - last.at >= WEB_SNAPSHOT_REUSE_MS) {
      const state = webState(src)
      last = { at: now, state }
      state.catch(() => {
        if (last?.state === state) last = undefined
      })
    }
    return last.state
  }
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0]
    const headers = { 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { ...headers, Allow: 'GET, HEAD' }).end()
      return
    }
    if (path === '/') {
      res.writeHead(200, { ...headers, 'Content-Type': 'text/html; charset=utf-8', 'Content-Security-Policy': "default-src 'self' 'unsafe-inline'" })
      res.end(req.method === 'HEAD' ? undefined : WEB_PAGE)
    } else if (path === '/api/state') {
      const body = JSON.stringify(await snapshot())
      res.writeHead(200, { ...headers, 'Content-Type': 'application/json' })
      res.end(req.method === 'HEAD' ? undefined : body)
    } else {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end('not found\n')
    }
  }
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      opts.log?.(`[web] ${req.url}: ${(err as Error).message}`)
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' })
      res.end(`error: ${(err as Error).message}\n`)
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address() as AddressInfo
  opts.log?.(`[web] live view on http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}/`)
  return {
    address,
    close: () =>
      new Promise<void>(resolve => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

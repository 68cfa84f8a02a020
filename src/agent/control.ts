// The agent's control socket: one JSON request per line in, one JSON reply per line out.
// `tundra dump|trace|conntrack|services|stats` talk to a running agent through it.
import { createServer, createConnection, type Server } from 'node:net'
import { mkdirSync, rmSync } from 'node:fs'
import { dirname } from 'node:path'

export type Handler = (args: Record<string, unknown>) => unknown | Promise<unknown>

export function serveControl(path: string, handlers: Record<string, Handler>): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true })
  rmSync(path, { force: true })
  const server = createServer(sock => {
    let pending = ''
    sock.setEncoding('utf8')
    sock.on('error', () => sock.destroy())
    sock.on('data', async chunk => {
      pending += chunk
      let nl: number
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl)
        pending = pending.slice(nl + 1)
        let reply: unknown
        try {
          const req = JSON.parse(line) as { cmd?: string; args?: Record<string, unknown> }
          const h = req.cmd !== undefined ? handlers[req.cmd] : undefined
          reply = h ? { ok: true, result: await h(req.args ?? {}) } : { ok: false, error: `unknown command ${JSON.stringify(req.cmd)}` }
        } catch (err) {
          reply = { ok: false, error: (err as Error).message }
        }
        sock.write(JSON.stringify(reply) + '\n')
      }
    })
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(path, () => resolve(server))
  })
}

/** Sends one request to an agent and returns its result (throws the agent's error message). */
export function askAgent(path: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path)
    let buf = ''
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`agent at ${path} did not answer within ${timeoutMs} ms`)) }, timeoutMs)
    sock.setEncoding('utf8')
    sock.on('connect', () => sock.write(JSON.stringify({ cmd, args }) + '\n'))
    sock.on('data', d => {
      buf += d
      const nl = buf.indexOf('\n')
      if (nl < 0) return
      clearTimeout(timer)
      sock.end()
      try {
        const reply = JSON.parse(buf.slice(0, nl)) as { ok: boolean; result?: unknown; error?: string }
        if (reply.ok) resolve(reply.result); else reject(new Error(reply.error ?? 'agent error'))
      } catch (err) { reject(err as Error) }
    })
    sock.on('error', err => { clearTimeout(timer); reject(new Error(`cannot reach the agent at ${path}: ${err.message}`)) })
  })
}

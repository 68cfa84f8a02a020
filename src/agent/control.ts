// The agent's control socket: one JSON request per line in, one JSON reply per line out.
// `tundra dump|trace|conntrack|services|stats` talk to a running agent through it.
import { createServer, createConnection, type Server } from 'node:net'
import { chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'

export type Handler = (args: Record<string, unknown>) => unknown | Promise<unknown>

/** The socket's mode, set explicitly (never from the umask): only root (the agent's user) may talk to it. */
const CONTROL_SOCKET_MODE = 0o600
/** A request line longer than this is refused and the connection closed (requests are a command and a few args). */
const MAX_REQUEST_LINE = 64 * 1024

/**
 * Serve `handlers` on a Unix socket at `path`, mode 0600. The socket is bound inside a fresh 0700 directory, set to
 * 0600 there and only then renamed into place, so no one can connect in between, whatever the umask.
 */
export function serveControl(path: string, handlers: Record<string, Handler>): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true })
  rmSync(path, { force: true })
  const server = createServer(sock => {
    let pending = ''
    sock.setEncoding('utf8')
    sock.on('error', () => sock.destroy())
    sock.on('data', async chunk => {
      pending += chunk
      if (pending.length > MAX_REQUEST_LINE && pending.lastIndexOf('\n', MAX_REQUEST_LINE) < 0) {
        pending = ''
        sock.end(JSON.stringify({ ok: false, error: `request line longer than ${MAX_REQUEST_LINE} bytes` }) + '\n', () => sock.destroy())
        return
      }
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
        if (!sock.destroyed) sock.write(JSON.stringify(reply) + '\n')
      }
    })
  })
  const dir = mkdtempSync(join(dirname(path), '.tundra-control-'))
  const staged = join(dir, 'sock')
  return new Promise((resolve, reject) => {
    const fail = (err: Error): void => {
      rmSync(dir, { recursive: true, force: true })
      reject(err)
    }
    server.once('error', fail)
    server.listen(staged, () => {
      server.off('error', fail)
      try {
        chmodSync(staged, CONTROL_SOCKET_MODE)
        renameSync(staged, path)
        rmSync(dir, { recursive: true, force: true })
      } catch (err) {
        server.close()
        fail(err as Error)
        return
      }
      // the server unlinks the name it was bound to on close, which is gone now: remove ours (if still ours)
      const ino = statSync(path).ino
      server.once('close', () => {
        try {
          if (statSync(path).ino === ino) rmSync(path, { force: true })
        } catch {
          // already gone
        }
      })
      resolve(server)
    })
  })
}

/** Sends one request to an agent and returns its result (throws the agent's error message). */
export function askAgent(path: string, cmd: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path)
    let buf = ''
    const timer = setTimeout(() => {
      sock.destroy()
      reject(new Error(`agent at ${path} did not answer within ${timeoutMs} ms`))
    }, timeoutMs)
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
        if (reply.ok) resolve(reply.result)
        else reject(new Error(reply.error ?? 'agent error'))
      } catch (err) {
        reject(err as Error)
      }
    })
    sock.on('error', err => {
      clearTimeout(timer)
      reject(new Error(`cannot reach the agent at ${path}: ${err.message}`))
    })
  })
}

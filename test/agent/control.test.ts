// The control socket: mode 0600 whatever the umask, a bounded request line, and the usual one-line JSON exchange.
import t from 'tap'
import { mkdtempSync, rmSync, statSync, existsSync } from 'node:fs'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Server } from 'node:net'
import { askAgent, serveControl } from '../../src/agent/control'

function dir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tundra-control-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

t.test('the socket is mode 0600 even under a permissive umask (issue 14)', async t => {
  const path = join(dir(), 'agent.sock')
  const old = process.umask(0o000)
  let server: Server
  try {
    server = await serveControl(path, { ping: () => 'pong' })
  } finally {
    process.umask(old)
  }
  t.teardown(() => server.close())
  const st = statSync(path)
  t.ok(st.isSocket(), 'a socket at the path')
  t.equal(st.mode & 0o777, 0o600, `mode ${(st.mode & 0o777).toString(8)}`)
  t.equal(await askAgent(path, 'ping'), 'pong', 'and it answers')
})

t.test('a request line past 64 KiB is refused and the connection closed (issue 14)', async t => {
  const path = join(dir(), 'agent.sock')
  const server = await serveControl(path, { ping: () => 'pong' })
  t.teardown(() => server.close())
  const reply = await new Promise<string>(resolve => {
    const c = createConnection(path)
    let got = ''
    c.setEncoding('utf8')
    c.on('data', d => {
      got += d
    })
    c.on('close', () => resolve(got))
    c.on('error', () => undefined) // EPIPE: the server hung up while we were still writing
    // 1 MiB without a newline: it used to be buffered, all of it, with no end
    const junk = 'x'.repeat(16 * 1024)
    let sent = 0
    const more = (): void => {
      while (sent < 64 && !c.destroyed) {
        sent++
        if (!c.write(junk)) {
          c.once('drain', more)
          return
        }
      }
    }
    c.on('connect', more)
  })
  t.match(reply, /request line longer than 65536 bytes/)
  t.equal(await askAgent(path, 'ping'), 'pong', 'the agent keeps serving others')
})

t.test('closing the server removes the socket; a second serve replaces a stale one', async t => {
  const path = join(dir(), 'agent.sock')
  const a = await serveControl(path, { who: () => 'a' })
  await new Promise<void>(r => a.close(() => r()))
  t.notOk(existsSync(path), 'removed on close')
  const b = await serveControl(path, { who: () => 'b' })
  const c = await serveControl(path, { who: () => 'c' })
  t.teardown(() => {
    b.close()
    c.close()
  })
  t.equal(await askAgent(path, 'who'), 'c', 'the newest owns the path')
  await new Promise<void>(r => b.close(() => r()))
  t.ok(existsSync(path), "closing the old one leaves the new one's socket")
  t.equal(await askAgent(path, 'who'), 'c')
})

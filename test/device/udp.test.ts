// The batched UDP socket (native/tun.c udpOpen…udpClose through src/device/udp.ts) on loopback: datagrams from
// several sockets arrive in one batch with their senders, sendmmsg answers each sender, a refused datagram is
// counted and the rest still go out, bind errors are errno errors, close frees the port and stops the callbacks, and
// a worker ending with its socket open frees it without crashing.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import * as dgram from 'node:dgram'
import { addonPath } from '../../src/device/native'
import { BatchUdpSocket, UDP_PEER_BYTES } from '../../src/device/udp'

const SLOT = 2048

/** A client socket that collects what it receives. */
async function client(type: 'udp4' | 'udp6', host: string): Promise<{ sock: dgram.Socket; got: string[] }> {
  const sock = dgram.createSocket(type)
  const got: string[] = []
  sock.on('message', m => got.push(m.toString()))
  await new Promise<void>(r => sock.bind(0, host, () => r()))
  t.teardown(() => sock.close())
  return { sock, got }
}

/** Until cond() holds, checked on every turn of the loop (a test timeout ends a hang). */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise(r => setImmediate(r))
}

for (const [type, host] of [
  ['udp4', '127.0.0.1'],
  ['udp6', '::1'],
] as const) {
  t.test(`${host}: a burst from three sockets is one batch, each answered to its own sender`, async t => {
    const offs = new Uint32Array(64)
    const lens = new Uint32Array(64)
    const idx = new Uint32Array(64)
    const batches: number[] = []
    const s: BatchUdpSocket = new BatchUdpSocket(host, 0, { maxDatagrams: 64, slotBytes: SLOT }, count => {
      batches.push(count)
      // echo each datagram back from the batch area itself
      for (let i = 0; i < count; i++) {
        offs[i] = i * SLOT
        lens[i] = s.lengths[i]!
        idx[i] = i
      }
      t.equal(s.send(s.buf, offs, lens, s.peers, idx, count), count)
    })
    t.teardown(() => s.close())
    const addr = s.address()
    t.equal(addr.family, type === 'udp4' ? 'IPv4' : 'IPv6')
    t.equal(addr.address, host)
    t.ok(addr.port > 0)
    const clients = await Promise.all([client(type, host), client(type, host), client(type, host)])
    // all sent before the loop polls again: the server reads them with one recvmmsg
    clients.forEach((c, k) => {
      for (let i = 0; i < 20; i++) c.sock.send(`c${k}q${i}`, addr.port, host)
    })
    await until(() => clients.every(c => c.got.length === 20))
    clients.forEach((c, k) => {
      t.same([...c.got].sort(), Array.from({ length: 20 }, (_, i) => `c${k}q${i}`).sort(), `client ${k} got exactly its own 20`)
    })
    t.same(batches, [60], 'one batch of 60')
    const [recvs, datagrams, calls] = s.stats()
    t.equal(datagrams, 60)
    t.equal(calls, 1)
    t.ok(recvs! >= 1)
    t.equal(s.counters[3], 3 * (10 * 4 + 10 * 5), 'bytes sent')
  })
}

t.test('a datagram longer than a slot says so in its length', async t => {
  const got: number[] = []
  const s = new BatchUdpSocket('127.0.0.1', 0, { maxDatagrams: 4, slotBytes: 512 }, count => {
    for (let i = 0; i < count; i++) got.push(s.lengths[i]!)
  })
  t.teardown(() => s.close())
  const c = await client('udp4', '127.0.0.1')
  c.sock.send(Buffer.alloc(3000), s.address().port, '127.0.0.1')
  c.sock.send(Buffer.alloc(100), s.address().port, '127.0.0.1')
  await until(() => got.length === 2)
  t.same(got, [3000, 100], 'the real length (MSG_TRUNC), more than the 512-byte slot')
})

t.test('a datagram the kernel refuses is counted and the others still go out', async t => {
  const s = new BatchUdpSocket('127.0.0.1', 0, { maxDatagrams: 8, slotBytes: 512 }, () => undefined)
  t.teardown(() => s.close())
  const c = await client('udp4', '127.0.0.1')
  const port = c.sock.address().port
  // peer 0: the client; peer 1: an all-zero address (family 0), which sendmmsg refuses
  const peers = new Uint8Array(2 * UDP_PEER_BYTES)
  const v = new DataView(peers.buffer)
  v.setUint16(0, 2, true) // AF_INET, host order
  v.setUint16(2, port) // network order
  peers.set([127, 0, 0, 1], 4)
  const buf = Buffer.from('onetwothree')
  const sent = s.send(buf, Uint32Array.of(0, 3, 6), Uint32Array.of(3, 3, 5), peers, Uint32Array.of(0, 1, 0), 3)
  t.equal(sent, 2)
  t.equal(s.counters[1], 1, 'one refused')
  t.ok(s.counters[2]! > 0, 'with its errno')
  await until(() => c.got.length === 2)
  t.same(c.got, ['one', 'three'])
  // out of range: counted as EINVAL, nothing sent, no throw
  t.equal(s.send(buf, Uint32Array.of(8), Uint32Array.of(9), peers, Uint32Array.of(0), 1), 0)
  t.equal(s.counters[1], 2)
  t.equal(s.counters[2], 22, 'EINVAL')
})

t.test('bind errors are errno errors; close frees the port at once and stops the callbacks', async t => {
  let calls = 0
  const s = new BatchUdpSocket('127.0.0.1', 0, { maxDatagrams: 8, slotBytes: 512 }, () => calls++)
  const port = s.address().port
  t.throws(() => new BatchUdpSocket('127.0.0.1', port, { maxDatagrams: 8, slotBytes: 512 }, () => undefined), {
    code: 'EADDRINUSE',
    syscall: 'bind',
  })
  t.throws(() => new BatchUdpSocket('not-an-ip', 0, { maxDatagrams: 8, slotBytes: 512 }, () => undefined), { code: 'ERR_INVALID_IP_ADDRESS' })
  t.throws(() => new BatchUdpSocket('127.0.0.1', 0, { maxDatagrams: 0, slotBytes: 512 }, () => undefined), { code: 'ERR_OUT_OF_RANGE' })
  const c = await client('udp4', '127.0.0.1')
  c.sock.send('x', port, '127.0.0.1')
  s.close()
  s.close()
  t.ok(s.closed)
  t.throws(() => s.send(Buffer.alloc(1), new Uint32Array(1), Uint32Array.of(1), new Uint8Array(28), new Uint32Array(1), 1), {
    code: 'ERR_SOCKET_DGRAM_NOT_RUNNING',
  })
  // the same port binds again right away (dgram's bind would fail while the old socket lived)
  const again = dgram.createSocket('udp4')
  await new Promise<void>((resolve, reject) => {
    again.once('error', reject)
    again.bind(port, '127.0.0.1', () => resolve())
  })
  again.close()
  await new Promise(r => setImmediate(r))
  t.equal(calls, 0, 'no batch after close')
})

t.test('a worker that ends without closing its socket: the port is freed and the process lives on', async t => {
  // in a child process whose only user of the addon is the worker, so the addon is unloaded with the worker's env
  // (no code of the addon may run after that: a crash here is a SIGSEGV of the child)
  for (const end of ['terminate', 'exit']) {
    const worker = `
      const { parentPort } = require('node:worker_threads')
      const n = require(${JSON.stringify(addonPath())})
      const s = n.udpOpen('127.0.0.1', 0, 4, 512)
      n.udpStart(s.handle, () => undefined)
      parentPort.postMessage(s.port)
      if (${JSON.stringify(end)} === 'exit') setImmediate(() => process.exit(3))`
    const main = `
      const { Worker } = require('node:worker_threads')
      const dgram = require('node:dgram')
      const w = new Worker(${JSON.stringify(worker)}, { eval: true })
      let port = 0
      w.on('message', p => { port = p; if (${JSON.stringify(end)} === 'terminate') void w.terminate() })
      w.on('exit', () => {
        const again = dgram.createSocket('udp4')
        again.once('error', e => { console.log('bind failed: ' + e.code); process.exitCode = 1 })
        again.bind(port, '127.0.0.1', () => { console.log('rebound'); again.close() })
      })`
    const r = spawnSync(process.execPath, ['-e', main], { encoding: 'utf8', timeout: 30_000 })
    t.equal(r.signal, null, `${end}: no crash`)
    t.equal(r.status, 0, `${end}: exit 0 ${r.stderr}`)
    t.equal(r.stdout.trim(), 'rebound', `${end}: the worker's port is free`)
  }
})

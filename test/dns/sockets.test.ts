// The kernel-socket front ends on 127.0.0.1: UDP (parallel queries from one socket) and TCP (framing, several queries
// per connection, no truncation, idle timeout), and forwarding through them.
import t from 'tap'
import * as dgram from 'node:dgram'
import * as net from 'node:net'
import { DnsServer } from '../../src/dns/server'
import type { Cluster } from '../../src/model/cluster'
import { cluster, ep, port, svc } from './fixtures/cluster'
import { datas, decode, query, type Decoded } from './fixtures/dnsq'
import { fakeUpstream, reply } from './fixtures/upstream'

const Z = 'cluster.local'

const big: Cluster = {
  ...cluster,
  services: [
    ...cluster.services,
    svc({
      namespace: 'default',
      name: 'big',
      headless: true,
      ports: [port('http', 80)],
      endpoints: Array.from({ length: 80 }, (_, i) => ep(`10.244.9.${i + 1}`)),
    }),
  ],
}

async function server(opts: ConstructorParameters<typeof DnsServer>[0] = {}): Promise<{ s: DnsServer; udp: number; tcp: number }> {
  const s = new DnsServer({ upstream: ['127.0.0.1:9'], upstreamTimeoutMs: 200, ...opts })
  s.setCluster(big)
  t.teardown(() => s.close())
  const udp = (await s.listenUdp('127.0.0.1', 0)).port
  const tcp = (await s.listenTcp('127.0.0.1', 0)).port
  return { s, udp, tcp }
}

/** Send all queries from one UDP socket at once; resolve with replies by ID. */
function udpAsk(port: number, qs: Buffer[], timeoutMs = 3000): Promise<Map<number, Decoded>> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4')
    const got = new Map<number, Decoded>()
    const timer = setTimeout(() => {
      sock.close()
      reject(new Error(`only ${got.size}/${qs.length} replies`))
    }, timeoutMs)
    sock.on('message', m => {
      const r = decode(m)
      got.set(r.id ?? -1, r)
      if (got.size === qs.length) {
        clearTimeout(timer)
        sock.close()
        resolve(got)
      }
    })
    sock.bind(0, '127.0.0.1', () => {
      for (const q of qs) sock.send(q, port, '127.0.0.1')
    })
  })
}

function frame(q: Buffer): Buffer {
  const len = Buffer.alloc(2)
  len.writeUInt16BE(q.length)
  return Buffer.concat([len, q])
}

/** One TCP connection: read `count` framed replies. */
function tcpSession(port: number, count: number, send: (c: net.Socket) => void): Promise<Decoded[]> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1')
    const out: Decoded[] = []
    let acc = Buffer.alloc(0)
    const timer = setTimeout(() => {
      c.destroy()
      reject(new Error(`only ${out.length}/${count} replies`))
    }, 3000)
    c.on('connect', () => send(c))
    c.on('error', reject)
    c.on('data', d => {
      acc = Buffer.concat([acc, d])
      while (acc.length >= 2 && acc.length >= 2 + acc.readUInt16BE(0)) {
        out.push(decode(acc.subarray(2, 2 + acc.readUInt16BE(0))))
        acc = acc.subarray(2 + acc.readUInt16BE(0))
      }
      if (out.length === count) {
        clearTimeout(timer)
        c.end()
        resolve(out)
      }
    })
  })
}

t.test('UDP: parallel A and AAAA from one socket are both answered', async t => {
  const { udp } = await server()
  const got = await udpAsk(udp, [
    query(`dual.prod.svc.${Z}`, 'A', { id: 1 }),
    query(`dual.prod.svc.${Z}`, 'AAAA', { id: 2 }),
    query(`nope.prod.svc.${Z}`, 'A', { id: 3 }),
  ])
  t.same(datas(got.get(1)!), ['10.96.50.1'])
  t.same(datas(got.get(2)!), ['fd00:10:96::50'])
  t.equal(got.get(3)!.rcode, 'NXDOMAIN')
})

t.test('UDP: thousands of answers (many batches) each keep their own bytes', async t => {
  const { udp } = await server()
  // in waves, so the loopback socket buffers never drop; each wave's replies are checked against their IDs
  for (let wave = 0; wave < 30; wave++) {
    const qs: Buffer[] = []
    for (let i = 0; i < 200; i++) {
      const id = wave * 200 + i
      qs.push(query(i % 3 === 2 ? `nope${id}.prod.svc.${Z}` : `dual.prod.svc.${Z}`, i % 3 === 1 ? 'AAAA' : 'A', { id, ...(i % 2 ? { edns: 1232 } : {}) }))
    }
    const got = await udpAsk(udp, qs, 10_000)
    for (let i = 0; i < 200; i++) {
      const r = got.get(wave * 200 + i)!
      const want = i % 3 === 0 ? ['10.96.50.1'] : i % 3 === 1 ? ['fd00:10:96::50'] : []
      if (i % 3 === 2 ? r.rcode !== 'NXDOMAIN' : JSON.stringify(datas(r)) !== JSON.stringify(want)) {
        t.fail(`reply ${wave * 200 + i}: ${JSON.stringify(r)}`)
        return
      }
    }
  }
  t.pass('6000 replies, every one right for its ID')
})

t.test('UDP: large answers truncate, garbage is ignored and the server keeps answering', async t => {
  const { s, udp } = await server()
  const sock = dgram.createSocket('udp4')
  await new Promise<void>(r => sock.bind(0, '127.0.0.1', () => r()))
  await new Promise<void>(r => sock.send(Buffer.from('junk'), udp, '127.0.0.1', () => r()))
  sock.close()
  const got = await udpAsk(udp, [query(`big.default.svc.${Z}`, 'A', { id: 7 }), query(`nginx-pod08.default.svc.${Z}`, 'A', { id: 8 })])
  t.ok(got.get(7)!.flag_tc)
  t.same(got.get(7)!.answers, [])
  t.same(datas(got.get(8)!), ['10.96.125.237'])
  t.equal(s.metrics().malformed.short, 1)
})

t.test('TCP: several queries on one connection, split and coalesced frames, no truncation', async t => {
  const { tcp } = await server()
  const qs = [
    query(`big.default.svc.${Z}`, 'A', { id: 1 }),
    query(`nginx-pod08.default.svc.${Z}`, 'A', { id: 2 }),
    query(`_pg._tcp.db.default.svc.${Z}`, 'SRV', { id: 3 }),
    query(`nope.default.svc.${Z}`, 'A', { id: 4 }),
  ]
  const replies = await tcpSession(tcp, 4, c => {
    // two frames in one write, then one frame split across writes, then the last one later
    c.write(Buffer.concat([frame(qs[0]!), frame(qs[1]!)]))
    const f = frame(qs[2]!)
    c.write(f.subarray(0, 5))
    setTimeout(() => c.write(f.subarray(5)), 20)
    setTimeout(() => c.write(frame(qs[3]!)), 60)
  })
  const byId = new Map(replies.map(r => [r.id, r]))
  t.equal(byId.get(1)?.answers?.length, 80, 'no truncation over TCP')
  t.notOk(byId.get(1)?.flag_tc)
  t.same(datas(byId.get(2)!), ['10.96.125.237'])
  t.equal(byId.get(3)?.answers?.length, 3)
  t.equal(byId.get(4)?.rcode, 'NXDOMAIN')
})

t.test('TCP: idle connections are closed', async t => {
  const { tcp } = await server({ tcpIdleMs: 150 })
  const closed = await new Promise<boolean>(resolve => {
    const c = net.connect(tcp, '127.0.0.1')
    const timer = setTimeout(() => {
      c.destroy()
      resolve(false)
    }, 3000)
    c.on('close', () => {
      clearTimeout(timer)
      resolve(true)
    })
    c.on('error', () => undefined)
  })
  t.ok(closed, 'server hung up on an idle client')
})

t.test('names outside the zone are forwarded through both front ends', async t => {
  const up = await fakeUpstream(q => reply(q, { answers: [{ name: q.questions?.[0]?.name ?? '', type: 'A', ttl: 60, data: '198.51.100.1' }] }))
  t.teardown(() => up.close())
  const { udp, tcp } = await server({ upstream: [up.spec] })
  const viaUdp = await udpAsk(udp, [query('www.example.org', 'A', { id: 21 })])
  t.same(datas(viaUdp.get(21)!), ['198.51.100.1'])
  const viaTcp = await tcpSession(tcp, 1, c => c.write(frame(query('mail.example.org', 'A', { id: 22 }))))
  t.equal(viaTcp[0]?.id, 22)
  t.same(datas(viaTcp[0]!), ['198.51.100.1'])
  t.equal(up.udp.length, 2)
})

t.test('upstream down: SERVFAIL through the UDP front end', async t => {
  const { udp } = await server({ upstream: ['127.0.0.1:9'] })
  const got = await udpAsk(udp, [query('www.example.org', 'A', { id: 31 })])
  t.equal(got.get(31)?.rcode, 'SERVFAIL')
  t.equal(got.get(31)?.questions?.[0]?.name, 'www.example.org')
})

t.test('TCP: connections past maxTcpConnections are closed at accept and counted (issue 14)', async t => {
  const { s, tcp } = await server({ maxTcpConnections: 4 })
  const open: net.Socket[] = []
  t.teardown(() => {
    for (const c of open) c.destroy()
  })
  const closedEarly = await Promise.all(
    Array.from(
      { length: 10 },
      () =>
        new Promise<boolean>(resolve => {
          const c = net.connect(tcp, '127.0.0.1')
          open.push(c)
          c.on('error', () => undefined)
          c.on('close', () => resolve(true))
          // a connection the server kept answers a query; one it dropped closes without a reply
          c.on('connect', () => c.write(frame(query(`nginx-pod08.default.svc.${Z}`, 'A'))))
          c.on('data', () => resolve(false))
        }),
    ),
  )
  t.equal(closedEarly.filter(x => !x).length, 4, 'four served')
  t.equal(closedEarly.filter(x => x).length, 6, 'six closed')
  t.equal(s.stats.tcpRejected, 6, 'and counted')
  for (const c of open) c.destroy()
  await new Promise<void>(resolve => {
    const poll = setInterval(() => {
      if (s.stats.tcpRejected >= 6 && open.every(c => c.destroyed)) {
        clearInterval(poll)
        resolve()
      }
    }, 10)
  })
  const after = await tcpSession(tcp, 1, c => c.write(frame(query(`nginx-pod08.default.svc.${Z}`, 'A', { id: 9 }))))
  t.equal(after[0]?.id, 9, 'a slot is free again once they close')
})

t.test('TCP: a client trickling bytes without completing a query is closed as idle (issue 14)', async t => {
  const { s, tcp } = await server({ tcpIdleMs: 200 })
  const closed = await new Promise<boolean>(resolve => {
    const c = net.connect(tcp, '127.0.0.1')
    const q = frame(query(`nginx-pod08.default.svc.${Z}`, 'A'))
    let i = 0
    // one byte every 50 ms: activity, but never a whole query
    const drip = setInterval(() => {
      if (i < q.length - 1 && !c.destroyed) c.write(q.subarray(i, ++i))
    }, 50)
    const timer = setTimeout(() => {
      clearInterval(drip)
      c.destroy()
      resolve(false)
    }, 3000)
    c.on('close', () => {
      clearInterval(drip)
      clearTimeout(timer)
      resolve(true)
    })
    c.on('error', () => undefined)
  })
  t.ok(closed, 'server hung up on the trickling client')
  t.equal(s.stats.tcpClosedIdle, 1)
})

/**
 * `clients` sockets on `host` each send `per` queries at once (all before the server reads: one batch of the front
 * end's recvmmsg); resolves with what each socket received, by ID.
 */
async function burst(host: string, port: number, clients: number, per: number, mk: (id: number) => Buffer): Promise<Map<number, Decoded>[]> {
  const socks = await Promise.all(
    Array.from({ length: clients }, async () => {
      const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4')
      const got = new Map<number, Decoded>()
      sock.on('message', m => {
        const r = decode(m)
        got.set(r.id ?? -1, r)
      })
      await new Promise<void>(r => sock.bind(0, host, () => r()))
      return { sock, got }
    }),
  )
  try {
    socks.forEach((c, k) => {
      for (let i = 0; i < per; i++) c.sock.send(mk(k * 1000 + i), port, host)
    })
    const deadline = Date.now() + 5000
    while (!socks.every(c => c.got.size === per) && Date.now() < deadline) await new Promise(r => setTimeout(r, 5))
    return socks.map(c => c.got)
  } finally {
    for (const c of socks) c.sock.close()
  }
}

for (const host of ['127.0.0.1', '::1']) {
  t.test(`UDP on ${host}: a burst from several sockets is answered, each reply to the socket that asked`, async t => {
    const s = new DnsServer({ upstream: ['127.0.0.1:9'], upstreamTimeoutMs: 200 })
    s.setCluster(big)
    t.teardown(() => s.close())
    const a = await s.listenUdp(host, 0)
    t.equal(a.address, host)
    t.equal(a.family, net.isIPv6(host) ? 'IPv6' : 'IPv4')
    // 4 x 15 = 60 queries: one batch; A, AAAA and NXDOMAIN mixed so a reply sent to the wrong peer shows
    const mk = (id: number): Buffer => query(id % 3 === 2 ? `nope${id}.prod.svc.${Z}` : `dual.prod.svc.${Z}`, id % 3 === 1 ? 'AAAA' : 'A', { id })
    const got = await burst(host, a.port, 4, 15, mk)
    got.forEach((m, k) => {
      const ids = [...m.keys()].sort((x, y) => x - y)
      t.same(
        ids,
        Array.from({ length: 15 }, (_, i) => k * 1000 + i),
        `socket ${k}: its own 15 IDs, no others`,
      )
      for (const [id, r] of m) {
        const want = id % 3 === 0 ? ['10.96.50.1'] : id % 3 === 1 ? ['fd00:10:96::50'] : []
        if (id % 3 === 2 ? r.rcode !== 'NXDOMAIN' : JSON.stringify(datas(r)) !== JSON.stringify(want)) t.fail(`reply ${id}: ${JSON.stringify(r)}`)
      }
    })
    t.equal(s.metrics().requests, 60)
    t.equal(s.metrics().udpSendDropped, 0)
  })
}

t.test('UDP: an oversized datagram is counted and dropped, a malformed one answered FORMERR, in one batch', async t => {
  const { s, udp } = await server()
  const good = query(`nginx-pod08.default.svc.${Z}`, 'A', { id: 41 })
  // a query with 6000 bytes after it: longer than the front end's 4096-byte slot, so cut short by the kernel
  const huge = Buffer.concat([query(`nginx-pod08.default.svc.${Z}`, 'A', { id: 42 }), Buffer.alloc(6000)])
  const twoQuestions = Buffer.from(query(`nginx-pod08.default.svc.${Z}`, 'A', { id: 43 }))
  twoQuestions.writeUInt16BE(2, 4) // QDCOUNT 2: FORMERR, as CoreDNS answers it
  const sock = dgram.createSocket('udp4')
  const got = new Map<number, Decoded>()
  sock.on('message', m => {
    const r = decode(m)
    got.set(r.id ?? -1, r)
  })
  await new Promise<void>(r => sock.bind(0, '127.0.0.1', () => r()))
  t.teardown(() => sock.close())
  for (const q of [huge, Buffer.from('junk'), twoQuestions, good]) sock.send(q, udp, '127.0.0.1')
  while (got.size < 2) await new Promise(r => setTimeout(r, 5))
  t.same(datas(got.get(41)!), ['10.96.125.237'])
  t.equal(got.get(43)?.rcode, 'FORMERR')
  t.notOk(got.has(42), 'the oversized query is not answered')
  const m = s.metrics()
  t.equal(m.malformed.truncated, 1)
  t.equal(m.malformed.short, 1)
  t.equal(m.malformed.qdcount, 1)
  t.equal(m.responses.FORMERR, 1)
})

t.test('UDP: closing with queries in flight sends nothing more and frees the port', async t => {
  // the upstream never answers: the forwarded query is still waiting when the server closes
  const up = await fakeUpstream(() => null)
  t.teardown(() => up.close())
  const s = new DnsServer({ upstream: [up.spec], upstreamTimeoutMs: 5000 })
  s.setCluster(big)
  const { port } = await s.listenUdp('127.0.0.1', 0)
  const sock = dgram.createSocket('udp4')
  const got: Buffer[] = []
  sock.on('message', m => got.push(m))
  await new Promise<void>(r => sock.bind(0, '127.0.0.1', () => r()))
  t.teardown(() => sock.close())
  // one forwarded query and a burst of in-zone ones
  sock.send(query('www.example.org', 'A', { id: 1 }), port, '127.0.0.1')
  for (let i = 0; i < 40; i++) sock.send(query(`nginx-pod08.default.svc.${Z}`, 'A', { id: 100 + i }), port, '127.0.0.1')
  while (up.udp.length < 1) await new Promise(r => setTimeout(r, 5))
  // close fails the upstream exchange (SERVFAIL to its callback) after the socket is closed: nothing is sent for it
  await s.close()
  // the port is free at once
  const again = dgram.createSocket('udp4')
  await new Promise<void>((resolve, reject) => {
    again.once('error', reject)
    again.bind(port, '127.0.0.1', () => resolve())
  })
  t.teardown(() => again.close())
  // a marker behind anything the server could still have sent: once it is here, everything sent before it is
  again.send('marker', sock.address().port, '127.0.0.1')
  while (!got.some(m => m.toString() === 'marker')) await new Promise(r => setTimeout(r, 5))
  const ids = got.filter(m => m.toString() !== 'marker').map(m => decode(m).id)
  t.notOk(ids.includes(1), 'no reply to the forwarded query')
  t.same(
    ids.sort((a, b) => a! - b!),
    Array.from({ length: 40 }, (_, i) => 100 + i),
    'the in-zone burst was answered before close',
  )
})

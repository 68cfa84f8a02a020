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

t.test('UDP: thousands of answers (several reply slabs) each keep their own bytes', async t => {
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

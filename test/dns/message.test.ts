// Wire handling: EDNS sizes, truncation, BADVERS, FORMERR/NOTIMP/REFUSED, malformed input, in-place answering.
import t from 'tap'
import dnsPacket from 'dns-packet'
import { Query, Verdict, parseQuery } from '../../src/dns/message'
import { DnsServer } from '../../src/dns/server'
import type { Cluster } from '../../src/model/cluster'
import { cluster, ep, port, svc } from './fixtures/cluster'
import { answerRaw, ask, datas, decode, query } from './fixtures/dnsq'

const Z = 'cluster.local'

/** cluster + a headless service with `n` ready endpoints, each with a hostname and a named port */
function withBig(n: number): Cluster {
  const eps = Array.from({ length: n }, (_, i) =>
    ep(`10.244.${100 + (i >> 8)}.${i & 255}`, { hostname: `member-${i}`, ports: [{ name: 'http', protocol: 'TCP', port: 80 }] }),
  )
  return { ...cluster, services: [...cluster.services, svc({ namespace: 'default', name: 'big', headless: true, ports: [port('http', 80)], endpoints: eps })] }
}

function server(c: Cluster = cluster): DnsServer {
  const s = new DnsServer({ upstream: ['127.0.0.1:9'] })
  s.setCluster(c)
  t.teardown(() => s.close())
  return s
}

function rawQuery(header: number[], body: number[]): Buffer {
  return Buffer.from([...header, ...body])
}

function opt(p: dnsPacket.DecodedPacket): dnsPacket.OptAnswer | undefined {
  return (p.additionals ?? []).find(a => a.type === 'OPT') as dnsPacket.OptAnswer | undefined
}

t.test('EDNS: OPT in the reply only when the query had one; DO echoed', async t => {
  const s = server()
  t.equal(opt(ask(s, `nginx-pod08.default.svc.${Z}`, 'A')), undefined)
  const r = ask(s, `nginx-pod08.default.svc.${Z}`, 'A', { edns: 4096, do: true })
  const o = opt(r)
  t.ok(o)
  t.equal(o?.udpPayloadSize, 1232)
  t.equal(o?.ednsVersion, 0)
  t.ok(o?.flag_do)
  t.notOk(opt(ask(s, `nginx-pod08.default.svc.${Z}`, 'A', { edns: 4096 }))?.flag_do)
  t.equal(opt(ask(s, `nope.default.svc.${Z}`, 'A', { edns: 1232 }))?.udpPayloadSize, 1232, 'negative replies too')
  t.equal(opt(ask(s, `1-2-3-4.default.pod.${Z}`, 'A', { edns: 1232 }))?.udpPayloadSize, 1232, 'pod replies too')
})

t.test('truncation: 512 without EDNS, the client size with it, none over TCP; no partial RRsets', async t => {
  const s = server(withBig(60))
  const name = `big.default.svc.${Z}`
  const plain = ask(s, name, 'A')
  t.ok(plain.flag_tc, '60 A records do not fit 512')
  t.same(plain.answers, [])
  t.equal(plain.questions?.[0]?.name, name, 'question kept')
  t.ok(plain.raw.length <= 512)
  const small = ask(s, name, 'A', { edns: 600 })
  t.ok(small.flag_tc, 'client size 600 still too small')
  t.same(small.answers, [])
  t.ok(opt(small), 'OPT kept in a truncated reply')
  const tiny = ask(s, name, 'A', { edns: 100 })
  t.ok(tiny.raw.length <= 512 && tiny.flag_tc)
  const mid = ask(s, `_pg._tcp.db.default.svc.${Z}`, 'SRV', { edns: 100 })
  t.ok(mid.raw.length > 100 && mid.raw.length <= 512, 'a 100..512-byte reply')
  t.notOk(mid.flag_tc, 'an EDNS size below 512 counts as 512')
  t.equal(mid.additionals?.filter(a => a.type === 'A').length, 3)
  const big = ask(s, name, 'A', { edns: 4096 })
  t.notOk(big.flag_tc)
  t.equal(big.answers?.length, 60)
  t.ok(big.raw.length > 512 && big.raw.length <= 4096)
  const tcp = ask(s, name, 'A', { transport: 1 })
  t.notOk(tcp.flag_tc)
  t.equal(tcp.answers?.length, 60)
  const capped = ask(s, name, 'A', { edns: 4096, outMax: 700 })
  t.ok(capped.flag_tc, 'outMax caps the reply too')
  t.ok(capped.raw.length <= 700)
  t.equal(s.metrics().truncated, 4)
})

t.test('an additional section that does not fit is dropped whole, without TC', async t => {
  const s = server(withBig(7))
  const r = ask(s, `_http._tcp.big.default.svc.${Z}`, 'SRV')
  t.notOk(r.flag_tc)
  t.equal(r.answers?.length, 7)
  t.same(r.additionals, [], 'additional A records dropped')
  const full = ask(s, `_http._tcp.big.default.svc.${Z}`, 'SRV', { edns: 4096 })
  t.equal(full.additionals?.filter(a => a.type === 'A').length, 7)
})

t.test('BADVERS for EDNS version > 0', async t => {
  const s = server()
  const r = ask(s, `nginx-pod08.default.svc.${Z}`, 'A', { edns: 1232, ednsVersion: 1 })
  const o = opt(r)
  t.equal(o?.extendedRcode, 1, 'BADVERS = 16: upper bits 1 in OPT')
  t.equal((r.flags ?? -1) & 0xf, 0, 'lower bits 0 in the header')
  t.equal(o?.ednsVersion, 0, 'we speak version 0')
  t.same(r.answers, [])
  t.equal(r.questions?.[0]?.name, `nginx-pod08.default.svc.${Z}`)
  t.equal(s.metrics().responses.BADVERS, 1)
})

t.test('NOTIMP for opcodes other than QUERY', async t => {
  const s = server()
  for (const opcode of [1, 2, 4, 5]) {
    const q = query(`nginx-pod08.default.svc.${Z}`, 'A')
    q[2] = (q[2]! & 0x87) | (opcode << 3)
    const { raw } = answerRaw(s, q)
    const r = decode(raw)
    t.equal(r.rcode, 'NOTIMP', `opcode ${opcode}`)
    t.equal((raw[2]! >> 3) & 0xf, opcode, 'opcode echoed')
    t.equal(r.id, 0x1234)
  }
  t.equal(s.metrics().malformed.opcode, 4)
})

t.test('REFUSED: zone transfers, non-IN classes inside the zone', async t => {
  const s = server()
  for (const type of ['AXFR', 'IXFR'] as const) {
    for (const transport of [0, 1] as const) {
      const r = ask(s, Z, type, { transport })
      t.equal(r.rcode, 'REFUSED', `${type} over ${transport ? 'TCP' : 'UDP'}`)
      t.equal(r.questions?.[0]?.name, Z)
    }
  }
  t.equal(ask(s, `nginx-pod08.default.svc.${Z}`, 'TXT', { class: 'CH' }).rcode, 'REFUSED')
})

t.test('CHAOS and other non-IN classes are refused here, never forwarded upstream (issue 14)', async t => {
  const s = server()
  for (const name of ['version.bind', 'hostname.bind', 'id.server', 'version.server', 'www.example.com']) {
    const { n, raw } = answerRaw(s, query(name, 'TXT', { class: 'CH' }))
    t.ok(n > 0, `${name} CH answered in place (was -1: forwarded, revealing the upstream's version)`)
    const r = decode(raw)
    t.equal(r.rcode, 'REFUSED', name)
    t.same(r.answers, [], 'no version text')
  }
  t.ok(answerRaw(s, query('www.example.com', 'A', { class: 'HS' })).n > 0, 'HESIOD too')
  t.equal(s.metrics().forwarded, 0)
})

t.test('UDP replies never exceed the size we advertise, whatever the client asks for (issue 14)', async t => {
  // 120 endpoints: a ~1 980-byte answer. Sent with DF it was lost at a 1450-byte pod MTU; now it is TC at 1232.
  const s = server(withBig(120))
  const name = `big.default.svc.${Z}`
  const r = ask(s, name, 'A', { edns: 4096 })
  t.ok(r.flag_tc, 'TC: the client retries over TCP')
  t.ok(r.raw.length <= 1232, `${r.raw.length} bytes`)
  t.equal(ask(s, name, 'A', { edns: 4096, transport: 1 }).answers?.length, 120, 'all 120 over TCP')
  const s2 = new DnsServer({ upstream: ['127.0.0.1:9'], ednsSize: 4096 })
  t.teardown(() => s2.close())
  s2.setCluster(withBig(120))
  t.equal(ask(s2, name, 'A', { edns: 4096 }).answers?.length, 120, 'ednsSize raises the cap')
  t.ok(ask(s2, name, 'A', { edns: 1500 }).flag_tc, "and the client's smaller size still counts")
})

t.test('FORMERR for malformed questions, with a counter per reason', async t => {
  const s = server()
  const hdr = (qd: number, ar = 0) => [0xab, 0xcd, 0x01, 0x00, 0, qd, 0, 0, 0, 0, 0, ar]
  const name = [3, 0x77, 0x77, 0x77, 7, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0]
  const tail = [0, 1, 0, 1]
  const optRR = [0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]
  const cases: [string, Buffer, string][] = [
    ['qdcount 0', rawQuery(hdr(0), []), 'qdcount'],
    ['qdcount 2', rawQuery(hdr(2), [...name, ...tail, ...name, ...tail]), 'qdcount'],
    ['label type 01', rawQuery(hdr(1), [0x41, 0x61, 0, ...tail]), 'label'],
    ['pointer in the question', rawQuery(hdr(1), [3, 0x61, 0x62, 0x63, 0xc0, 12, ...tail]), 'pointer'],
    ['compression loop', rawQuery(hdr(1), [0xc0, 12, ...tail]), 'pointer'],
    [
      'name over 255 bytes',
      rawQuery(hdr(1), [...Array.from({ length: 5 }, () => [63, ...new Array<number>(63).fill(0x61)]).flat(), 0, ...tail]),
      'name_too_long',
    ],
    ['label past the end', rawQuery(hdr(1), [10, 0x61, 0x62]), 'truncated'],
    ['no qtype', rawQuery(hdr(1), [...name, 0]), 'truncated'],
    ['arcount beyond the data', rawQuery(hdr(1, 1), [...name, ...tail]), 'truncated'],
    ['two OPT records', rawQuery(hdr(1, 2), [...name, ...tail, ...optRR, ...optRR]), 'opt'],
    ['OPT as the qtype', rawQuery(hdr(1), [...name, 0, 41, 0, 1]), 'qtype'],
  ]
  for (const [what, q, reason] of cases) {
    const before = s.metrics().malformed[reason] ?? 0
    const { n, raw } = answerRaw(s, q)
    t.ok(n >= 12, `${what}: answered`)
    const r = decode(raw)
    t.equal(r.rcode, 'FORMERR', what)
    t.equal(r.id, 0xabcd, `${what}: ID echoed`)
    t.equal(s.metrics().malformed[reason], before + 1, `${what}: counted as ${reason}`)
  }
  t.same(datas(ask(s, `nginx-pod08.default.svc.${Z}`, 'A')), ['10.96.125.237'], 'still answering')
})

t.test('dropped: shorter than a header, or a response', async t => {
  const s = server()
  for (let len = 0; len < 12; len++) t.equal(answerRaw(s, Buffer.alloc(len, 0x41)).n, 0, `${len} bytes`)
  const resp = query(`nginx-pod08.default.svc.${Z}`, 'A')
  resp[2] = resp[2]! | 0x80
  t.equal(answerRaw(s, resp).n, 0, 'QR=1')
  t.equal(s.metrics().malformed.short, 12)
  t.equal(s.metrics().malformed.response, 1)
  t.equal(answerRaw(s, query(`nginx-pod08.default.svc.${Z}`, 'A'), { outMax: 11 }).n, 0, 'no room for a header')
})

t.test('fuzz: random and mutated queries never throw, and the server keeps answering', async t => {
  const s = server()
  let seed = 0x2545f491
  const rnd = (): number => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return (seed >>> 0) / 0x100000000
  }
  const valid = [
    query(`nginx-pod08.default.svc.${Z}`, 'A', { edns: 1232 }),
    query(`_pg._tcp.db.default.svc.${Z}`, 'SRV'),
    query(`1-2-3-4.default.pod.${Z}`, 'A'),
    query('www.example.com', 'AAAA', { edns: 4096 }),
  ]
  const out = Buffer.alloc(70000)
  let answered = 0
  for (let i = 0; i < 20000; i++) {
    let q: Buffer
    if (i % 2 === 0) {
      q = Buffer.alloc(Math.floor(rnd() * 300))
      for (let j = 0; j < q.length; j++) q[j] = rnd() * 256
    } else {
      q = Buffer.from(valid[i % valid.length]!)
      const flips = 1 + Math.floor(rnd() * 4)
      for (let f = 0; f < flips; f++) q[Math.floor(rnd() * q.length)] = rnd() * 256
      if (rnd() < 0.3) q = q.subarray(0, Math.floor(rnd() * q.length))
    }
    const n = s.answerInPlace(q, 0, q.length, out, 0, out.length, i & 1)
    if (n > 0) {
      answered++
      const r = dnsPacket.decode(out.subarray(0, n))
      if (r.id !== q.readUInt16BE(0)) t.fail(`reply ID differs for input ${q.toString('hex')}`)
    } else if (n !== 0 && n !== -1) t.fail(`unexpected result ${n}`)
  }
  t.ok(answered > 0)
  t.same(datas(ask(s, `nginx-pod08.default.svc.${Z}`, 'A')), ['10.96.125.237'])
  const q = new Query()
  t.equal(parseQuery(valid[0]!, 0, valid[0]!.length, q), Verdict.OK)
})

t.test('in place: the reply may overwrite the query buffer', async t => {
  const s = server()
  const name = `NGINX-pod08.default.svc.${Z}`
  const q = query(name, 'A', { edns: 1232 })
  const buf = Buffer.alloc(2048)
  q.copy(buf, 100)
  const n = s.answerInPlace(buf, 100, q.length, buf, 100, 1900, 0)
  const r = dnsPacket.decode(buf.subarray(100, 100 + n))
  t.equal(r.questions?.[0]?.name, name)
  t.same(datas(r), ['10.96.125.237'])
  t.ok(opt(r))
  // overlapping at a different offset: reply starts 4 bytes after the query
  q.copy(buf, 100)
  const n2 = s.answerInPlace(buf, 100, q.length, buf, 104, 1900, 0)
  const r2 = dnsPacket.decode(buf.subarray(104, 104 + n2))
  t.equal(r2.questions?.[0]?.name, name)
  t.same(datas(r2), ['10.96.125.237'])
  // and the same for a negative reply
  const nq = query(`Missing.default.svc.${Z}`, 'A')
  nq.copy(buf, 10)
  const n3 = s.answerInPlace(buf, 10, nq.length, buf, 10, 1000, 0)
  const r3 = decode(buf.subarray(10, 10 + n3))
  t.equal(r3.rcode, 'NXDOMAIN')
  t.equal(r3.questions?.[0]?.name, `Missing.default.svc.${Z}`)
  t.equal(r3.authorities?.[0]?.name, Z)
})

t.test('metrics: queries by type, replies by rcode', async t => {
  const s = server()
  ask(s, `nginx-pod08.default.svc.${Z}`, 'A')
  ask(s, `nginx-pod08.default.svc.${Z}`, 'AAAA')
  ask(s, `nope.default.svc.${Z}`, 'A')
  answerRaw(s, query('www.example.com', 'A'))
  const m = s.metrics()
  t.same(m.queries, { A: 3, AAAA: 1 })
  t.same(m.responses, { NOERROR: 2, NXDOMAIN: 1 })
  t.equal(m.forwarded, 1)
  t.ok(m.zone.names > 10)
})

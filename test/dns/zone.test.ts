// Spec records (Kubernetes DNS-Based Service Discovery 1.1.0 + CoreDNS defaults) through the in-path answerer.
import t from 'tap'
import dnsPacket from 'dns-packet'
import { DnsServer } from '../../src/dns/server'
import { compileZone } from '../../src/dns/zone'
import { cluster, ep, port, services, svc, NGINX_IP } from './fixtures/cluster'
import { answerRaw, ask, datas, query } from './fixtures/dnsq'

const Z = 'cluster.local'

function server(opts: ConstructorParameters<typeof DnsServer>[0] = {}): DnsServer {
  const s = new DnsServer({ upstream: ['127.0.0.1:9'], serial: 1000, ...opts })
  s.setCluster(cluster)
  t.teardown(() => s.close())
  return s
}

interface Soa {
  mname: string
  rname: string
  serial: number
  refresh: number
  retry: number
  expire: number
  minimum: number
}

function ttlOf(p: dnsPacket.DecodedPacket, i = 0): number | undefined {
  return (p.answers?.[i] as { ttl?: number } | undefined)?.ttl
}

function soaOf(p: dnsPacket.DecodedPacket): { ttl: number; name: string; data: Soa } {
  const a = (p.authorities ?? []).find(x => x.type === 'SOA') as { ttl: number; name: string; data: Soa } | undefined
  if (a === undefined) throw new Error('no SOA in authority')
  return a
}

t.test('ClusterIP service A: the seed nginx-pod08', async t => {
  const s = server()
  const r = ask(s, `nginx-pod08.default.svc.${Z}`, 'A', { id: 4242 })
  t.equal(r.id, 4242, 'ID echoed')
  t.equal(r.rcode, 'NOERROR')
  t.ok(r.flag_qr && r.flag_aa && r.flag_ra && r.flag_rd, 'QR, AA, RA set; RD echoed')
  t.notOk(r.flag_tc)
  t.same(datas(r), [NGINX_IP])
  t.equal(ttlOf(r), 5, 'default TTL 5 s')
  t.equal(r.answers?.[0]?.name, `nginx-pod08.default.svc.${Z}`)
  // the answer owner is a pointer to the question name at offset 12
  const ansAt = 12 + `nginx-pod08.default.svc.${Z}`.length + 2 + 4
  t.equal(r.raw.readUInt16BE(ansAt), 0xc00c, 'owner compressed to the question')
  t.same(r.authorities, [])
})

t.test('case-insensitive, question echoed in the original case', async t => {
  const s = server()
  const name = `NgInX-POD08.Default.SVC.Cluster.Local`
  const q = query(name, 'A')
  const { raw } = answerRaw(s, q)
  const qlen = name.length + 2 + 4
  t.same(raw.subarray(12, 12 + qlen), q.subarray(12, 12 + qlen), 'question bytes identical')
  const r = dnsPacket.decode(raw)
  t.equal(r.questions?.[0]?.name, name)
  t.same(datas(r), [NGINX_IP])
})

t.test('RD clear in the query stays clear; CD echoed', async t => {
  const s = server()
  const r = ask(s, `nginx-pod08.default.svc.${Z}`, 'A', { flags: dnsPacket.CHECKING_DISABLED })
  t.notOk(r.flag_rd)
  t.ok(r.flag_cd)
  t.ok(r.flag_ra)
})

t.test('AAAA for an IPv4-only service is NODATA with the SOA, never NXDOMAIN', async t => {
  const s = server()
  const r = ask(s, `v4only.prod.svc.${Z}`, 'AAAA')
  t.equal(r.rcode, 'NOERROR')
  t.ok(r.flag_aa)
  t.same(r.answers, [])
  const soa = soaOf(r)
  t.equal(soa.name, Z)
  t.equal(soa.ttl, 5)
  t.same(soa.data, { mname: `ns.dns.${Z}`, rname: `hostmaster.${Z}`, serial: soa.data.serial, refresh: 7200, retry: 1800, expire: 86400, minimum: 5 })
  t.same(datas(ask(s, `v4only.prod.svc.${Z}`, 'A')), ['10.96.60.1'])
})

t.test('dual-stack LoadBalancer service: A and AAAA; NodePort answers with its ClusterIP', async t => {
  const s = server()
  t.same(datas(ask(s, `dual.prod.svc.${Z}`, 'A')), ['10.96.50.1'])
  t.same(datas(ask(s, `dual.prod.svc.${Z}`, 'AAAA')), ['fd00:10:96::50'])
  t.same(datas(ask(s, `web.default.svc.${Z}`, 'A')), ['10.96.10.20'])
})

t.test('headless: one A per ready endpoint, rotated between replies', async t => {
  const s = server()
  const want = ['10.244.1.10', '10.244.1.13', '10.244.2.11']
  const firsts = new Set<unknown>()
  for (let i = 0; i < 3; i++) {
    const r = ask(s, `db.default.svc.${Z}`, 'A')
    t.same([...datas(r)].sort(), want, 'not-ready db-2 (10.244.3.12) left out')
    firsts.add(datas(r)[0])
  }
  t.equal(firsts.size, 3, 'each reply starts with a different record')
  t.same(datas(ask(s, `peers.default.svc.${Z}`, 'A')), ['10.244.1.30'], 'publishNotReadyAddresses publishes not-ready')
  t.equal(ask(s, `idle.default.svc.${Z}`, 'A').rcode, 'NXDOMAIN', 'no ready endpoints: NXDOMAIN (spec 2.4.1)')
  t.equal(ask(s, `db.default.svc.${Z}`, 'AAAA').rcode, 'NOERROR', 'IPv4-only headless AAAA: NODATA')
})

t.test('endpoint names: hostname, else the dashed IP', async t => {
  const s = server()
  t.same(datas(ask(s, `db-0.db.default.svc.${Z}`, 'A')), ['10.244.1.10'])
  t.same(datas(ask(s, `DB-1.db.default.svc.${Z}`, 'A')), ['10.244.2.11'])
  t.same(datas(ask(s, `10-244-1-13.db.default.svc.${Z}`, 'A')), ['10.244.1.13'])
  t.equal(ask(s, `db-2.db.default.svc.${Z}`, 'A').rcode, 'NXDOMAIN', 'not ready: no name')
  t.same(datas(ask(s, `peer-0.peers.default.svc.${Z}`, 'A')), ['10.244.1.30'])
})

t.test('SRV for named ports of a ClusterIP service: target the service, its A in additional', async t => {
  const s = server()
  const r = ask(s, `_https._tcp.web.default.svc.${Z}`, 'SRV')
  t.equal(r.rcode, 'NOERROR')
  t.same(datas(r), [{ priority: 0, weight: 100, port: 443, target: `web.default.svc.${Z}` }])
  t.same(
    r.additionals?.map(a => [a.name, a.type, (a as { data: unknown }).data]),
    [[`web.default.svc.${Z}`, 'A', '10.96.10.20']],
  )
  t.same(datas(ask(s, `_metrics._udp.web.default.svc.${Z}`, 'SRV')), [{ priority: 0, weight: 100, port: 9100, target: `web.default.svc.${Z}` }])
  t.same(datas(ask(s, `_HTTP._TCP.web.default.svc.${Z}`, 'SRV')).length, 1, 'protocol and port labels case-insensitive')
  t.equal(ask(s, `_http._udp.web.default.svc.${Z}`, 'SRV').rcode, 'NXDOMAIN', 'wrong protocol')
  t.equal(ask(s, `_https._tcp.web.default.svc.${Z}`, 'A').rcode, 'NOERROR', 'SRV name exists: other types NODATA')
  t.equal(ask(s, `_tcp.web.default.svc.${Z}`, 'SRV').rcode, 'NOERROR', 'empty non-terminal: NODATA')
  // dual-stack: the target's A and AAAA both in additional
  const d = ask(s, `_http._tcp.dual.prod.svc.${Z}`, 'SRV')
  t.same(
    datas(d).map(x => (x as { port: number }).port),
    [80],
  )
  t.same(datas(d, 'additionals').sort(), ['10.96.50.1', 'fd00:10:96::50'])
})

t.test('SRV for a headless service: one per ready endpoint, targets with their A in additional', async t => {
  const s = server()
  const r = ask(s, `_pg._tcp.db.default.svc.${Z}`, 'SRV')
  const srv = datas(r) as { port: number; target: string; priority: number }[]
  t.same(srv.map(x => x.target).sort(), [`10-244-1-13.db.default.svc.${Z}`, `db-0.db.default.svc.${Z}`, `db-1.db.default.svc.${Z}`])
  t.ok(srv.every(x => x.port === 5432 && x.priority === 0))
  const extra = new Map((r.additionals ?? []).map(a => [a.name, (a as { data: unknown }).data]))
  t.same(Object.fromEntries(extra), {
    [`10-244-1-13.db.default.svc.${Z}`]: '10.244.1.13',
    [`db-0.db.default.svc.${Z}`]: '10.244.1.10',
    [`db-1.db.default.svc.${Z}`]: '10.244.2.11',
  })
})

t.test('SRV at the service name itself, as CoreDNS: every port, named or not', async t => {
  const s = server()
  t.same(datas(ask(s, `nginx-pod08.default.svc.${Z}`, 'SRV')), [{ priority: 0, weight: 100, port: 8080, target: `nginx-pod08.default.svc.${Z}` }])
  const web = datas(ask(s, `web.default.svc.${Z}`, 'SRV')) as { port: number; weight: number }[]
  t.same(
    web.map(x => x.port).sort((a, b) => a - b),
    [80, 443, 9100],
  )
  t.ok(
    web.every(x => x.weight === 33),
    'CoreDNS weight = 100 / records',
  )
  t.equal(datas(ask(s, `db.default.svc.${Z}`, 'SRV')).length, 3)
})

t.test('PTR: ClusterIPs → service, endpoint IPs → endpoint name; unknown → upstream', async t => {
  const s = server()
  t.same(datas(ask(s, '237.125.96.10.in-addr.arpa', 'PTR')), [`nginx-pod08.default.svc.${Z}`])
  t.same(datas(ask(s, '10.1.244.10.in-addr.arpa', 'PTR')), [`db-0.db.default.svc.${Z}`])
  t.same(datas(ask(s, '13.1.244.10.in-addr.arpa', 'PTR')), [`10-244-1-13.db.default.svc.${Z}`], 'no hostname: dashed IP (CoreDNS)')
  t.same(datas(ask(s, '5.1.244.10.in-addr.arpa', 'PTR')), [`10-244-1-5.nginx-pod08.default.svc.${Z}`])
  const v6 = '0.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa'
  t.same(datas(ask(s, v6, 'PTR')), [`dual.prod.svc.${Z}`])
  t.equal(ask(s, '237.125.96.10.IN-ADDR.ARPA', 'PTR').rcode, 'NOERROR')
  t.equal(answerRaw(s, query('12.3.244.10.in-addr.arpa', 'PTR')).n, -1, 'not-ready endpoint: not ours')
  t.equal(answerRaw(s, query('99.99.96.10.in-addr.arpa', 'PTR')).n, -1)
  t.equal(answerRaw(s, query('237.125.96.10.in-addr.arpa', 'A')).n, -1, 'other types of reverse names: upstream')
})

t.test('ExternalName: CNAME; in-zone targets followed in the same answer', async t => {
  const s = server()
  // outside target: completed upstream by forward() (test/dns/upstream.test.ts), stub resolvers do not chase CNAMEs
  t.equal(answerRaw(s, query(`ext.default.svc.${Z}`, 'A')).n, -1, 'outside target: handed to forward()')
  t.equal(answerRaw(s, query(`ext.default.svc.${Z}`, 'AAAA')).n, -1, 'for every qtype')
  const ext = ask(s, `ext.default.svc.${Z}`, 'CNAME')
  t.equal(ext.rcode, 'NOERROR')
  t.ok(ext.flag_aa)
  t.same(
    ext.answers?.map(a => [a.name, a.type, (a as { data: unknown }).data]),
    [[`ext.default.svc.${Z}`, 'CNAME', 'www.example.com']],
    'CNAME asked: answered in-path',
  )
  t.same(ext.authorities, [])

  const alias = ask(s, `alias.default.svc.${Z}`, 'A')
  t.same(
    alias.answers?.map(a => [a.name, a.type, (a as { data: unknown }).data]),
    [
      [`alias.default.svc.${Z}`, 'CNAME', `nginx-pod08.default.svc.${Z}`],
      [`nginx-pod08.default.svc.${Z}`, 'A', NGINX_IP],
    ],
  )
  const alias6 = ask(s, `alias.default.svc.${Z}`, 'AAAA')
  t.equal(alias6.rcode, 'NOERROR')
  t.same(datas(alias6), [`nginx-pod08.default.svc.${Z}`], 'target without AAAA: CNAME then NODATA')
  t.equal(soaOf(alias6).name, Z)
  t.same(datas(ask(s, `alias.default.svc.${Z}`, 'CNAME')), [`nginx-pod08.default.svc.${Z}`])
  t.equal(ask(s, `alias.default.svc.${Z}`, 'SRV').answers?.length, 2, 'SRV through the CNAME')

  const dangling = ask(s, `dangling.default.svc.${Z}`, 'A')
  t.equal(dangling.rcode, 'NXDOMAIN', 'RFC 6604: rcode of the last name in the chain')
  t.same(datas(dangling), [`nothing.default.svc.${Z}`])
})

t.test('ExternalName given as an IP answers with the address (CoreDNS)', async t => {
  const s = new DnsServer({ upstream: ['127.0.0.1:9'] })
  t.teardown(() => s.close())
  s.setCluster({ services: [svc({ namespace: 'a', name: 'ip', type: 'ExternalName', externalName: '192.0.2.7' })], nodes: [], pods: [] })
  t.same(datas(ask(s, `ip.a.svc.${Z}`, 'A')), ['192.0.2.7'])
})

t.test('dns-version TXT, apex SOA and NS, ns.dns address', async t => {
  const s = server()
  t.same(
    datas(ask(s, `dns-version.${Z}`, 'TXT')).map(d => (d as Buffer[]).map(b => b.toString())),
    [['1.1.0']],
  )
  t.equal(ask(s, `dns-version.${Z}`, 'A').rcode, 'NOERROR', 'NODATA for other types')
  const soa = ask(s, Z, 'SOA')
  const rec = soa.answers?.[0] as { data: Soa; name: string }
  t.equal(rec.name, Z)
  t.match(rec.data, { mname: `ns.dns.${Z}`, rname: `hostmaster.${Z}`, refresh: 7200, retry: 1800, expire: 86400, minimum: 5 })
  t.same(soa.authorities, [])
  const ns = ask(s, Z, 'NS')
  t.same(datas(ns), [`ns.dns.${Z}`])
  t.same(
    ns.additionals?.map(a => [a.name, (a as { data: unknown }).data]),
    [[`ns.dns.${Z}`, '10.96.0.10']],
  )
  t.same(datas(ask(s, `ns.dns.${Z}`, 'A')), ['10.96.0.10'])
  const apexA = ask(s, Z, 'A')
  t.equal(apexA.rcode, 'NOERROR')
  t.same(apexA.answers, [])
  t.equal(soaOf(apexA).name, Z)
})

t.test('empty non-terminals are NODATA; names below them that do not exist are NXDOMAIN', async t => {
  const s = server()
  for (const n of [`svc.${Z}`, `default.svc.${Z}`, `staging.svc.${Z}`, `pod.${Z}`, `default.pod.${Z}`, `_tcp.db.default.svc.${Z}`]) {
    const r = ask(s, n, 'A')
    t.equal(r.rcode, 'NOERROR', n)
    t.same(r.answers, [], n)
    t.equal(soaOf(r).data.minimum, 5, n)
  }
  for (const n of [`nope.svc.${Z}`, `x.default.svc.${Z}`, `nope.${Z}`, `a.b.nginx-pod08.default.svc.${Z}`]) {
    const r = ask(s, n, 'A')
    t.equal(r.rcode, 'NXDOMAIN', n)
    t.ok(r.flag_aa, n)
    const soa = soaOf(r)
    t.equal(soa.name, Z, n)
    t.equal(soa.ttl, 5)
    t.equal(soa.data.minimum, 5)
    t.equal(soa.data.rname, `hostmaster.${Z}`)
  }
})

t.test('search-path expansions are NXDOMAIN in-path, never upstream', async t => {
  const s = server()
  for (const n of [`example.com.default.svc.${Z}`, `example.com.svc.${Z}`, `example.com.${Z}`, `nginx-pod08.default.svc.${Z}.default.svc.${Z}`]) {
    const { n: got, raw } = answerRaw(s, query(n, 'AAAA'))
    t.ok(got > 0, n)
    t.equal((dnsPacket.decode(raw) as { rcode?: string }).rcode, 'NXDOMAIN', n)
  }
  t.equal(s.metrics().forwarded, 0)
})

t.test('types tundra does not serve: NODATA or NXDOMAIN as the name fits', async t => {
  const s = server()
  for (const type of ['MX', 'CAA', 'TXT', 'PTR'] as const) {
    const r = ask(s, `nginx-pod08.default.svc.${Z}`, type)
    t.equal(r.rcode, 'NOERROR', type)
    t.same(r.answers, [], type)
    t.equal(ask(s, `missing.default.svc.${Z}`, type).rcode, 'NXDOMAIN', type)
  }
  const any = dnsPacket.encode({ type: 'query', id: 1, flags: 0, questions: [{ name: `nginx-pod08.default.svc.${Z}`, type: 'ANY' as dnsPacket.RecordType }] })
  t.equal((dnsPacket.decode(answerRaw(s, any).raw) as { rcode?: string }).rcode, 'NOERROR')
})

t.test('pod records (pods insecure): any well-formed address in a known namespace', async t => {
  const s = server()
  t.same(datas(ask(s, `10-244-1-50.default.pod.${Z}`, 'A')), ['10.244.1.50'])
  const r = ask(s, `1-2-3-4.Default.pod.${Z}`, 'A')
  t.same(datas(r), ['1.2.3.4'])
  t.equal(ttlOf(r), 5)
  t.ok(r.flag_aa)
  t.same(datas(ask(s, `1-2-3-4.staging.pod.${Z}`, 'A')), ['1.2.3.4'], 'namespace known from pods only')
  const aaaa = ask(s, `1-2-3-4.default.pod.${Z}`, 'AAAA')
  t.equal(aaaa.rcode, 'NOERROR', 'IPv4 pod name, AAAA: NODATA')
  t.equal(soaOf(aaaa).name, Z)
  t.same(datas(ask(s, `fd00-10-244--5.default.pod.${Z}`, 'AAAA')), ['fd00:10:244::5'], 'IPv6 with dashes')
  t.equal(ask(s, `fd00-10-244--5.default.pod.${Z}`, 'A').rcode, 'NOERROR')
  for (const bad of ['1-2-3-999', '1-2-3', '01-2-3-4', 'a-b-c-d', 'x']) {
    t.equal(ask(s, `${bad}.default.pod.${Z}`, 'A').rcode, 'NXDOMAIN', bad)
  }
  t.equal(ask(s, `1-2-3-4.nope.pod.${Z}`, 'A').rcode, 'NXDOMAIN', 'unknown namespace')
  t.equal(ask(s, `x.1-2-3-4.default.pod.${Z}`, 'A').rcode, 'NXDOMAIN', 'too deep')
})

t.test('pod records can be turned off', async t => {
  const s = server({ podRecords: false })
  t.equal(ask(s, `1-2-3-4.default.pod.${Z}`, 'A').rcode, 'NXDOMAIN')
})

t.test('names outside the zone are not ours', async t => {
  const s = server()
  for (const n of ['www.example.com', 'local', 'cluster.local.example.com', 'xcluster.local']) {
    t.equal(answerRaw(s, query(n, 'A')).n, -1, n)
  }
  t.equal(answerRaw(s, query('.', 'NS')).n, -1, 'root')
})

t.test('TTL and zone are configurable; SOA minimum follows the TTL', async t => {
  const s = server({ ttl: 30, zone: 'k8s.internal.' })
  const r = ask(s, 'nginx-pod08.default.svc.k8s.internal', 'A')
  t.equal(ttlOf(r), 30)
  const neg = ask(s, 'nope.default.svc.k8s.internal', 'A')
  t.equal(neg.rcode, 'NXDOMAIN')
  t.equal(soaOf(neg).data.minimum, 30)
  t.equal(soaOf(neg).ttl, 30)
  t.equal(soaOf(neg).data.mname, 'ns.dns.k8s.internal')
  t.equal(answerRaw(s, query(`nginx-pod08.default.svc.${Z}`, 'A')).n, -1, 'cluster.local is not ours any more')
  const big = server({ ttl: 600 })
  t.equal(soaOf(ask(big, `nope.${Z}`, 'A')).ttl, 300, 'SOA TTL capped at 300 (CoreDNS)')
  t.equal(soaOf(ask(big, `nope.${Z}`, 'A')).data.minimum, 600)
})

t.test('setCluster swaps the zone whole; the serial grows', async t => {
  const s = server()
  const before = soaOf(ask(s, `nope.${Z}`, 'A')).data.serial
  s.setCluster({ ...cluster, services: services.filter(x => x.name !== 'nginx-pod08') })
  t.equal(ask(s, `nginx-pod08.default.svc.${Z}`, 'A').rcode, 'NXDOMAIN')
  t.equal(answerRaw(s, query('237.125.96.10.in-addr.arpa', 'PTR')).n, -1)
  t.ok(soaOf(ask(s, `nope.${Z}`, 'A')).data.serial > before)
  s.setCluster(cluster)
  t.same(datas(ask(s, `nginx-pod08.default.svc.${Z}`, 'A')), [NGINX_IP])
})

t.test('compile: deterministic, immutable, problems reported not thrown', async t => {
  const a = compileZone(cluster, { serial: 7 })
  const b = compileZone({ ...cluster, services: [...services].reverse() }, { serial: 7 })
  t.equal(a.dump(), b.dump())
  t.match(a.dump(), /^nginx-pod08\.default\.svc\.cluster\.local\.\t5\tIN\tA\t10\.96\.125\.237$/m)
  t.ok(Object.isFrozen(a))
  t.ok(Object.isFrozen(a.entry(`nginx-pod08.default.svc.${Z}`)))
  const bad = compileZone({
    services: [
      svc({ namespace: 'default', name: 'x'.repeat(70), clusterIPs: ['10.96.0.99'], ports: [port('', 80)] }),
      svc({ namespace: 'default', name: 'badip', clusterIPs: ['10.96.0.999'], ports: [port('', 80)] }),
      svc({ namespace: 'default', name: 'ok', clusterIPs: ['10.96.0.98'], ports: [port('', 80)], endpoints: [ep('nonsense')] }),
    ],
    nodes: [],
    pods: [],
  })
  t.equal(bad.problems.length, 3)
  t.ok(bad.entry(`ok.default.svc.${Z}`))
})

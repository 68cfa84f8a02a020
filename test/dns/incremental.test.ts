// Differential test of the incremental zone: random clusters and random sequences of service changes (add, remove,
// modify; endpoints, readiness, headless, named ports, ExternalName chains inside the zone, namespaces appearing and
// disappearing, ClusterIPs and endpoint IPs shared between services). After each step, the zone built by
// ZoneCompiler.update deltas (crossing a structured clone with their buffers transferred, as between threads) answers
// every name × qtype exactly as a fresh full compile of the final cluster does, serial aside.
// Replay: DNS_SEED=<seed printed below> npx tap test/dns/incremental.test.ts
import t from 'tap'
import dnsPacket from 'dns-packet'
import type { Cluster, Endpoint, Pod, Service } from '../../src/model/cluster'
import { Responder } from '../../src/dns/answer'
import { ZoneCompiler, type ZoneImage } from '../../src/dns/image'
import { ZoneImageError, zoneImageTransfer } from '../../src/dns/installed'
import { InstalledZone } from '../../src/dns/installed'
import { Query, Verdict, parseQuery } from '../../src/dns/message'
import { ep, port, svc } from './fixtures/cluster'
import { mulberry32, testSeed } from '../helpers/seed'

const SEED = testSeed(t, 'DNS_SEED')

const rnd = mulberry32(SEED)
const int = (n: number): number => Math.floor(rnd() * n)
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!
const chance = (p: number): boolean => rnd() < p

const Z = 'cluster.local'
const NAMESPACES = ['default', 'prod', 'dev', 'kube-system']
const NAMES = ['a', 'b', 'web', 'db', 'api']
const CLUSTER_IPS = ['10.96.0.1', '10.96.0.2', '10.96.0.3', '10.96.0.4', 'fd00:10:96::1', 'fd00:10:96::2', '10.96.0.999']
const EP_IPS = ['10.244.0.1', '10.244.0.2', '10.244.0.3', '10.244.0.4', '10.244.0.5', '10.96.0.1', 'fd00:10:244::1', 'bogus']
const HOSTNAMES = [undefined, undefined, undefined, 'h0', 'h1', 'H1']
const PORT_NAMES = ['', '', 'http', 'dns', 'HTTP']

function randomTarget(): string {
  const ns = pick(NAMESPACES)
  const name = pick(NAMES)
  return pick([
    `${name}.${ns}.svc.${Z}`,
    `${name}.${ns}.svc.${Z}`,
    `${name}.${ns}.svc.${Z}.`,
    `h0.${name}.${ns}.svc.${Z}`,
    `_http._tcp.${name}.${ns}.svc.${Z}`,
    `1-2-3-4.${ns}.pod.${Z}`,
    `${ns}.svc.${Z}`,
    Z,
    `nope.${Z}`,
    'www.example.com',
    '192.0.2.7',
    '',
    '1.0.96.10.in-addr.arpa',
    `${'x'.repeat(70)}.${Z}`,
    `WEB.${ns}.svc.${Z}`,
  ])
}

function randomEndpoint(): Endpoint {
  const ip = pick(EP_IPS)
  const hostname = pick(HOSTNAMES)
  const ports = chance(0.5) ? [] : [{ name: pick(PORT_NAMES), protocol: pick(['TCP', 'UDP'] as const), port: pick([53, 80, 8080, 0]) }]
  return ep(ip, { ready: chance(0.75), ports, ...(hostname !== undefined ? { hostname } : {}) })
}

function randomService(namespace: string, name: string): Service {
  const kind = pick(['ClusterIP', 'ClusterIP', 'headless', 'ExternalName', 'NodePort'] as const)
  const ports = Array.from({ length: int(3) }, () => port(pick(PORT_NAMES), pick([53, 80, 443]), pick(['TCP', 'UDP'] as const), pick([8080, 'web'])))
  const endpoints = Array.from({ length: int(4) }, randomEndpoint)
  const publishNotReadyAddresses = chance(0.2)
  if (kind === 'ExternalName') return svc({ namespace, name, type: 'ExternalName', externalName: randomTarget(), ports })
  if (kind === 'headless') return svc({ namespace, name, headless: true, ports, endpoints, publishNotReadyAddresses })
  const clusterIPs = chance(0.2) ? [pick(CLUSTER_IPS), pick(CLUSTER_IPS)] : [pick(CLUSTER_IPS)]
  return svc({ namespace, name, type: kind, clusterIPs, ports, endpoints, publishNotReadyAddresses })
}

function randomPods(): Pod[] {
  return [...NAMESPACES, 'podonly']
    .filter(() => chance(0.3))
    .map(namespace => ({
      namespace,
      name: 'p',
      ips: ['10.244.9.9'],
      labels: {},
      ready: true,
    }))
}

type Key = string
const keyOf = (s: { namespace: string; name: string }): Key => `${s.namespace}/${s.name}`

function randomCluster(): Map<Key, Service> {
  const m = new Map<Key, Service>()
  const n = int(10)
  for (let i = 0; i < n; i++) {
    const s = randomService(pick(NAMESPACES), chance(0.05) ? 'Web' : pick(NAMES))
    m.set(keyOf(s), s)
  }
  return m
}

/** Images cross as they would between threads: structured clone with the buffers transferred. */
function cross(img: ZoneImage): ZoneImage {
  return structuredClone(img, { transfer: zoneImageTransfer(img) })
}

const QTYPES: dnsPacket.RecordType[] = ['A', 'AAAA', 'SRV', 'TXT', 'PTR', 'NS', 'SOA', 'CNAME', 'MX']

interface Side {
  zone: InstalledZone
  responder: Responder
}

/** Every candidate name × qtype through both installed zones; returns the mismatches (empty when equal) and the count. */
function compare(inc: Side, ref: Side, names: Iterable<string>): { bad: string[]; cases: number } {
  const bad: string[] = []
  let cases = 0
  const q = new Query()
  const outA = Buffer.alloc(65536)
  const outB = Buffer.alloc(65536)
  for (const name of names) {
    for (const type of QTYPES) {
      const wire = dnsPacket.encode({ type: 'query', id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type, class: 'IN' }] })
      if (parseQuery(wire, 0, wire.length, q) !== Verdict.OK) continue
      for (const [autopath, external] of [
        [true, true],
        [false, false],
      ] as const) {
        for (const limit of [512, 65535]) {
          cases++
          const a = inc.responder.answer(inc.zone, q, wire, 0, outA, 0, limit, autopath, external)
          const b = ref.responder.answer(ref.zone, q, wire, 0, outB, 0, limit, autopath, external)
          const what = `${name} ${type} autopath=${autopath} external=${external} limit=${limit}`
          if (a !== b) bad.push(`${what}: incremental ${a}, full ${b}`)
          else if (a > 0 && !outA.subarray(0, a).equals(outB.subarray(0, b))) {
            bad.push(`${what}: replies differ\n  inc  ${outA.subarray(0, a).toString('hex')}\n  full ${outB.subarray(0, b).toString('hex')}`)
          } else if (a === -3 && inc.responder.external !== ref.responder.external) {
            bad.push(`${what}: external ${inc.responder.external} vs ${ref.responder.external}`)
          }
        }
      }
    }
  }
  return { bad, cases }
}

function probeNames(...compilers: ZoneCompiler[]): Set<string> {
  const names = new Set<string>()
  for (const c of compilers) for (const n of c.names()) names.add(n)
  for (const ns of [...NAMESPACES, 'podonly', 'nope']) {
    names.add(`1-2-3-4.${ns}.pod.${Z}`)
    names.add(`fd00--1.${ns}.pod.${Z}`)
    names.add(`x.${ns}.svc.${Z}`)
    names.add(`h9.web.${ns}.svc.${Z}`)
  }
  for (const ip of [...CLUSTER_IPS, ...EP_IPS]) {
    const p = ip.split('.')
    if (p.length === 4) names.add(`${p.reverse().join('.')}.in-addr.arpa`)
  }
  names.add(`nope.${Z}`)
  names.add('www.example.com')
  return names
}

t.test('incremental updates answer as a full compile of the final cluster', async t => {
  const RUNS = 12
  const STEPS = 30
  let cases = 0
  let deltas = 0
  let fulls = 0
  for (let run = 0; run < RUNS; run++) {
    const opts = { serial: 100, podRecords: chance(0.8) }
    let services = randomCluster()
    let pods = randomPods()
    const cluster = (): Cluster => ({ services: [...services.values()], nodes: [], pods })
    const compiler = new ZoneCompiler(opts)
    const inc: Side = { zone: new InstalledZone(), responder: new Responder(1232) }
    inc.zone.install(cross(compiler.full(cluster())))
    let lastSerial = inc.zone.serial
    for (let step = 0; step < STEPS; step++) {
      const next = new Map(services)
      const changed: Service[] = []
      const deleted: { namespace: string; name: string }[] = []
      for (let k = 1 + int(3); k > 0; k--) {
        const op = int(10)
        const existing = [...next.values()]
        if (op < 3 && existing.length > 0) {
          const s = pick(existing)
          next.delete(keyOf(s))
          deleted.push({ namespace: s.namespace, name: s.name })
        } else if (op < 7 && existing.length > 0) {
          // modify: a fresh shape, or only the endpoints (the common rollout)
          const s = pick(existing)
          const m = chance(0.5) ? randomService(s.namespace, s.name) : { ...s, endpoints: Array.from({ length: int(4) }, randomEndpoint) }
          next.set(keyOf(m), m)
          changed.push(m)
        } else {
          const s = randomService(pick(NAMESPACES), pick(NAMES))
          next.set(keyOf(s), s)
          changed.push(s)
        }
      }
      // net effect of the batch, as a watcher reports it: what is gone, and the last version of what is there
      const del = [...new Map(deleted.filter(d => !next.has(keyOf(d))).map(d => [keyOf(d), d])).values()]
      const ch = [...new Map(changed.filter(s => next.get(keyOf(s)) === s).map(s => [keyOf(s), s])).values()]
      services = next
      if (chance(0.15)) pods = randomPods()
      let img = compiler.update(cluster(), ch, del)
      if (chance(0.05)) img = compiler.snapshot()
      if (img.kind === 'delta') deltas++
      else fulls++
      inc.zone.install(cross(img))
      if (inc.zone.serial <= lastSerial) t.fail(`serial did not grow: ${lastSerial} → ${inc.zone.serial}`)
      lastSerial = inc.zone.serial

      const fresh = new ZoneCompiler(opts)
      const full = fresh.full(cluster())
      const ref: Side = { zone: new InstalledZone(), responder: new Responder(1232) }
      ref.zone.install(cross({ ...full, serial: inc.zone.serial }))
      inc.responder = new Responder(1232)
      const r = compare(inc, ref, probeNames(compiler, fresh))
      cases += r.cases
      const ctx = `run ${run} step ${step} (seed ${SEED})`
      if (r.bad.length > 0) {
        t.fail(`${ctx}: ${r.bad.length} answers differ`, { diagnostic: true, first: r.bad.slice(0, 5) })
        return
      }
      if (inc.zone.size !== ref.zone.size) {
        t.fail(`${ctx}: ${inc.zone.size} names installed, full compile has ${ref.zone.size}`)
        return
      }
      t.same(compiler.names(), fresh.names(), `${ctx}: same names`, { diagnostic: false })
      t.equal(compiler.problemTotal, fresh.problemTotal, `${ctx}: same problem count`, { diagnostic: false })
    }
  }
  t.comment(`${cases} answers compared over ${RUNS} runs × ${STEPS} steps (${deltas} deltas, ${fulls} full images)`)
  t.ok(cases > 10_000, 'thousands of cases')
})

t.test('a delta that does not fit the installed zone is refused, the zone unchanged', async t => {
  const c = new ZoneCompiler({ serial: 5 })
  const cl: Cluster = { services: [svc({ namespace: 'a', name: 'x', clusterIPs: ['10.96.0.1'] })], nodes: [], pods: [] }
  const zone = new InstalledZone()
  zone.install(c.full(cl))
  const d1 = c.update(cl, [svc({ namespace: 'a', name: 'y', clusterIPs: ['10.96.0.2'] })], [])
  const d2 = c.update(cl, [svc({ namespace: 'a', name: 'z', clusterIPs: ['10.96.0.3'] })], [])
  t.equal(d2.kind, 'delta')
  const before = { gen: zone.gen, size: zone.size, serial: zone.serial }
  t.throws(() => zone.install(d2), ZoneImageError, 'skipped generation')
  t.same({ gen: zone.gen, size: zone.size, serial: zone.serial }, before)
  zone.install(d1)
  zone.install(d2)
  t.equal(zone.serial, 7)
  // recover after a lost delta: a snapshot is a full image of the same state
  c.update(cl, [], [{ namespace: 'a', name: 'y' }])
  zone.install(c.snapshot())
  t.equal(zone.size, new ZoneCompiler().full({ ...cl, services: [...cl.services, svc({ namespace: 'a', name: 'z', clusterIPs: ['10.96.0.3'] })] }).names)
})

t.test('a one-service change sends only its entries', async t => {
  const services = Array.from({ length: 200 }, (_, i) =>
    svc({
      namespace: `ns${i % 4}`,
      name: `s${i}`,
      clusterIPs: [`10.96.1.${i}`],
      ports: [port('http', 80)],
      endpoints: [ep(`10.244.1.${i}`)],
    }),
  )
  const c = new ZoneCompiler({ serial: 1 })
  c.full({ services, nodes: [], pods: [] })
  const moved = { ...services[7]!, endpoints: [ep('10.244.2.7')] }
  const next = services.slice()
  next[7] = moved
  const d = c.update({ services: next, nodes: [], pods: [] }, [moved], [])
  t.equal(d.kind, 'delta')
  if (d.kind !== 'delta') return
  // the endpoint's name, its old and new PTR, the service name's SRV additional section is unchanged (targets the service)
  const writes = d.writes.length / 4
  t.ok(writes >= 3 && writes <= 8, `${writes} slot writes`)
  t.ok(d.chunk.length < 1000, `${d.chunk.length} bytes of entries`)
})

t.test('a new serial reaches every negative answer without rewriting entries', async t => {
  const { DnsServer } = await import('../../src/dns/server')
  const { ask } = await import('./fixtures/dnsq')
  const { cluster } = await import('./fixtures/cluster')
  const c = new ZoneCompiler({ serial: 41 })
  const s = new DnsServer({ upstream: ['127.0.0.1:9'] })
  t.teardown(() => s.close())
  s.install(cross(c.full(cluster)))
  const serials = (): number[] => [
    (ask(s, Z, 'SOA').answers![0] as { data: { serial: number } }).data.serial,
    ...[
      ask(s, `nginx-pod08.default.svc.${Z}`, 'AAAA'),
      ask(s, `nope.default.svc.${Z}`, 'A'),
      ask(s, `alias.default.svc.${Z}`, 'AAAA'),
      ask(s, `1-2-3-4.default.pod.${Z}`, 'AAAA'),
    ].map(r => (r.authorities![0] as { data: { serial: number } }).data.serial),
  ]
  t.same(serials(), [41, 41, 41, 41, 41], 'SOA answer, NODATA, NXDOMAIN, NODATA after a CNAME, pod NODATA')
  const d = c.update(cluster, [], [])
  t.equal(d.kind, 'delta')
  if (d.kind === 'delta') t.same([d.writes.length, d.chunk.length], [0, 0], 'no entry rewritten')
  s.install(cross(d))
  t.same(serials(), [42, 42, 42, 42, 42])
  t.equal(s.metrics().zone.serial, 42)
})

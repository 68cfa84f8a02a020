// Speed check, informational only: prints answerInPlace rates with t.comment and asserts correctness, never timing.
// Target: >= 1M answers/s in-process for an A query of a cluster name (dnsperf in-path target is 150k/s).
import t from 'tap'
import { DnsServer } from '../../src/dns/server'
import { cluster } from './fixtures/cluster'
import { decode, query } from './fixtures/dnsq'

t.test('answerInPlace rate', async t => {
  const s = new DnsServer({ upstream: ['127.0.0.1:9'] })
  t.teardown(() => s.close())
  s.setCluster(cluster)
  const out = Buffer.alloc(2048)
  const cases: [string, Buffer][] = [
    ['A, ClusterIP', query('nginx-pod08.default.svc.cluster.local', 'A')],
    ['A, ClusterIP, EDNS', query('nginx-pod08.default.svc.cluster.local', 'A', { edns: 1232 })],
    ['A, search-path NXDOMAIN', query('example.com.default.svc.cluster.local', 'A')],
    ['A, headless (rotated)', query('db.default.svc.cluster.local', 'A')],
    ['A, pod name', query('10-244-1-5.default.pod.cluster.local', 'A')],
  ]
  const n = 300_000
  for (const [what, q] of cases) {
    let len = 0
    for (let i = 0; i < 20_000; i++) len = s.answerInPlace(q, 0, q.length, out, 0, out.length, 0)
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) len = s.answerInPlace(q, 0, q.length, out, 0, out.length, 0)
    const sec = Number(process.hrtime.bigint() - t0) / 1e9
    t.comment(`${what}: ${(n / sec / 1e6).toFixed(2)} M answers/s`)
    const r = decode(out.subarray(0, len))
    t.equal(r.id, 0x1234, `${what}: last reply well-formed`)
  }
})

t.test('zone images: one-service update and installs', async t => {
  const { ZoneCompiler } = await import('../../src/dns/image')
  const { synthCluster, withMovedEndpoint } = await import('../../bench/lib/synth')
  const n = 2000
  let c = synthCluster(n, 2)
  const zc = new ZoneCompiler({})
  const s = new DnsServer({ upstream: ['127.0.0.1:9'] })
  t.teardown(() => s.close())
  let t0 = process.hrtime.bigint()
  const full = zc.full(c)
  t.comment(`full compile, ${n} services: ${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(0)} ms`)
  t0 = process.hrtime.bigint()
  s.install(full)
  t.comment(`install full image: ${(Number(process.hrtime.bigint() - t0) / 1e3).toFixed(0)} µs`)
  let prep = 0
  let inst = 0
  const rounds = 200
  for (let g = 0; g < rounds; g++) {
    const i = (g * 31) % n
    const moved = withMovedEndpoint(c.services[i]!, g)
    const services = c.services.slice()
    services[i] = moved
    c = { ...c, services }
    t0 = process.hrtime.bigint()
    const d = zc.update(c, [moved], [])
    const t1 = process.hrtime.bigint()
    s.install(d)
    prep += Number(t1 - t0)
    inst += Number(process.hrtime.bigint() - t1)
  }
  t.comment(`one-service update: ${(prep / rounds / 1e6).toFixed(3)} ms to prepare, ${(inst / rounds / 1e3).toFixed(1)} µs to install (mean of ${rounds})`)
  const last = c.services[((rounds - 1) * 31) % n]!
  const r = decode(answer(s, `10-240-0-${rounds - 1}.${last.name}.${last.namespace}.svc.cluster.local`))
  t.equal(r.answers?.length, 1, 'the moved endpoint answers after the deltas')
})

function answer(s: DnsServer, name: string): Buffer {
  const q = query(name, 'A')
  const out = Buffer.alloc(2048)
  const n = s.answerInPlace(q, 0, q.length, out, 0, out.length, 0)
  return out.subarray(0, Math.max(0, n))
}

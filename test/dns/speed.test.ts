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

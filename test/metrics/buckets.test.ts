// kube-proxy's histogram buckets, exactly (pkg/proxy/metrics/metrics.go): dashboards compare tundra's with kube-proxy's.
import t from 'tap'
import { PROGRAMMING_BUCKETS, SYNC_DURATION_BUCKETS } from '../../src/metrics/registry'

const linear = (start: number, width: number, count: number): number[] => Array.from({ length: count }, (_, i) => start + width * i)

t.test('network_programming_duration_seconds: MergeBuckets(Linear(0.25,0.25,2), Linear(1,1,59), Linear(60,5,12), Linear(120,30,7))', async t => {
  t.same(PROGRAMMING_BUCKETS, [...linear(0.25, 0.25, 2), ...linear(1, 1, 59), ...linear(60, 5, 12), ...linear(120, 30, 7)])
  t.equal(PROGRAMMING_BUCKETS.at(-1), 300, 'the last bucket is 5 minutes')
})

t.test('sync_proxy_rules_duration_seconds: ExponentialBuckets(0.001, 2, 15)', async t => {
  t.same(
    SYNC_DURATION_BUCKETS,
    Array.from({ length: 15 }, (_, i) => 0.001 * 2 ** i),
  )
})

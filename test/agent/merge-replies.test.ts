// Replies of several packet threads to one request become one: counters summed, the shared table counted once.
import t from 'tap'
import { mergeReplies } from '../../src/agent/packet-path'

t.test('counters: summed by name, shared conntrack sizes taken once, average recomputed', async t => {
  const a = { nat_new: 3, device_packets: 100, device_batches: 10, avg_packets_per_batch: 10, conntrack_entries: 7, conntrack_max_ipv4: 64 }
  const b = { nat_new: 4, device_packets: 50, device_batches: 40, avg_packets_per_batch: 1.25, conntrack_entries: 7, conntrack_max_ipv4: 64 }
  t.same(mergeReplies([a, b]), { nat_new: 7, device_packets: 150, device_batches: 50, avg_packets_per_batch: 3, conntrack_entries: 7, conntrack_max_ipv4: 64 })
})

t.test('DNS metrics: nested records and histograms summed, bounds and zone taken once', async t => {
  const m = (q: number, c: number[]): unknown => ({
    queries: { A: q },
    duration: { bounds: [0.001, 0.01], counts: c, sum: q, count: q },
    zone: { names: 12, serial: 5 },
  })
  t.same(mergeReplies([m(2, [1, 1]), m(3, [3, 0])]), {
    queries: { A: 5 },
    duration: { bounds: [0.001, 0.01], counts: [4, 1], sum: 5, count: 5 },
    zone: { names: 12, serial: 5 },
  })
})

t.test('service counters: per-id arrays summed, a longer one kept whole', async t => {
  const r = mergeReplies([
    { packets: Float64Array.of(1, 2), newConnections: Float64Array.of(0, 1) },
    { packets: Float64Array.of(10, 20, 30), newConnections: Float64Array.of(1, 1, 1) },
  ]) as { packets: Float64Array; newConnections: Float64Array }
  t.same(Array.from(r.packets), [11, 22, 30])
  t.same(Array.from(r.newConnections), [1, 2, 1])
})

t.test('one reply is returned as it is', async t => {
  const one = { x: 1 }
  t.equal(mergeReplies([one]), one)
})

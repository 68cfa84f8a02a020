// The summary table and charts built from a hand-made report (no measurement involved).
import t from 'tap'
import { charts, renderTable, summarize, type BenchReport } from '../../bench/lib/report'
import type { E2eResult } from '../../bench/sections/e2e'

const e2e: E2eResult = {
  rounds: 1,
  seconds: 1,
  contenders: [
    { contender: 'tundra', available: true, samples: {}, medians: { tcp1Gbps: 9, tcp4Gbps: 8, udpRxPps: 90_000, latUdpP50: 20, connPerSec: 900 } },
    { contender: 'iptables-nft', available: true, samples: {}, medians: { tcp1Gbps: 10, tcp4Gbps: 12, udpRxPps: 100_000, latUdpP50: 11, connPerSec: 1000 } },
    { contender: 'iptables-legacy', available: false, error: 'not installed', samples: {}, medians: {} },
  ],
}

t.test('rows compare tundra with the best kernel contender', async t => {
  const r: BenchReport = {
    meta: {},
    skipped: {},
    e2e,
    memory: {
      entries: 1e6,
      capacity: 1 << 20,
      rssBefore: 0,
      rssEmpty: 0,
      rssFull: 0,
      rssPerEntry: 120,
      rssPerEntryIncremental: 115,
      engineBytes: 0,
      engineBytesPerEntry: 126.6,
      engineBytesPerSlot: 115,
      v6TableBytes: 0,
      fillNsPerSyn: 0,
    },
  }
  const rows = summarize(r)
  const tcp1 = rows.find(x => x.metric === 'TCP throughput, 1 stream')!
  t.equal(tcp1.compare, 0.9)
  t.equal(tcp1.pass, false, '0.9× misses ≥ 1.0×')
  t.equal(rows.find(x => x.metric === 'TCP throughput, 4 streams')!.pass, false)
  const lat = rows.find(x => x.metric === 'UDP latency p50')!
  t.equal(lat.compare, 9, 'µs added')
  t.equal(lat.pass, false)
  t.equal(rows.find(x => x.metric === 'New TCP connections')!.pass, true, '0.9× meets ≥ 0.85×')
  t.equal(rows.find(x => x.metric.startsWith('Memory per conntrack entry (RSS'))!.pass, true)
  const table = renderTable(rows)
  t.match(table, /^metric +unit +tundra +iptables-nft +iptables-legacy +compare +target +ok$/m)
  t.match(table, /TCP throughput, 1 stream +Gbit\/s +9\.00 +10\.00 +– +0\.90× +≥ 0\.95× +NO/)
  t.match(table, /UDP latency p50 .* \+9\.0 µs/)
})

t.test('the C reference has its own column and comparison, and is not a kernel contender', async t => {
  const withCref: E2eResult = {
    ...e2e,
    contenders: [
      ...e2e.contenders,
      { contender: 'cref', available: true, samples: {}, medians: { tcp1Gbps: 12, tcp4Gbps: 6, udpRxPps: 60_000, latUdpP50: 15, connPerSec: 800 } },
    ],
  }
  const rows = summarize({ meta: {}, skipped: {}, e2e: withCref })
  const tcp1 = rows.find(x => x.metric === 'TCP throughput, 1 stream')!
  t.equal(tcp1.compare, 0.9, 'the kernel ratio ignores cref (faster here)')
  t.equal(tcp1.vsCref, 0.75)
  t.equal(rows.find(x => x.metric === 'UDP latency p50')!.vsCref, 5, 'µs added over cref')
  const table = renderTable(rows)
  t.match(table, /^metric +unit +tundra +iptables-nft +iptables-legacy +cref +vs cref +compare +target +ok$/m)
  t.match(table, /TCP throughput, 4 streams +Gbit\/s +8\.00 +12\.00 +– +6\.00 +1\.33× +0\.67× /)
  t.notMatch(renderTable(summarize({ meta: {}, skipped: {}, e2e })), /vs cref/, 'no column without a cref run')
  const won = rows.find(x => x.metric.startsWith('e2e rows where tundra ≥ cref'))!
  // tcp1 0.75× lost, tcp4 1.33× won, udp 1.5× won, UDP p50 +5 µs lost, conn/s 1.125× won
  t.equal(won.tundra, 3)
  t.equal(won.target, 'all 5')
  t.equal(won.pass, false)
})

t.test('charts for what was measured', async t => {
  const names = charts({ meta: {}, skipped: {}, e2e }).map(([n]) => n)
  t.same(names, ['throughput.svg', 'pps.svg', 'latency.svg', 'connections.svg'])
  t.same(charts({ meta: {}, skipped: {} }), [])
})

t.test('the SYN flood rows judge RSS at the cap against idle + 128 B per entry + headroom', async t => {
  const MB = 1 << 20
  const flood = {
    cap: 262144,
    syns: 301466,
    entries: 262144,
    rssBefore: 50 * MB,
    rssBase: 55 * MB,
    rssAtCap: 90 * MB,
    rssAfterSnapshot: 91 * MB,
    rssAfterCount: 92 * MB,
    rssAfterScan: 100 * MB,
    rssAgedOut: 91 * MB,
    entriesAgedOut: 0,
    ctBytes: 0,
    heapAtCap: 0,
    rssPeak: 120 * MB,
    externalAtCap: 0,
  }
  const memory = {
    entries: 1e6,
    capacity: 1 << 20,
    rssBefore: 0,
    rssEmpty: 0,
    rssFull: 0,
    rssPerEntry: 120,
    rssPerEntryIncremental: 115,
    engineBytes: 0,
    engineBytesPerEntry: 126.6,
    engineBytesPerSlot: 115,
    v6TableBytes: 0,
    fillNsPerSyn: 0,
  }
  const ok = summarize({ meta: {}, skipped: {}, memory: { ...memory, flood } })
  const cap = ok.find(x => x.metric === 'RSS at the conntrack cap (262 144 entries)')!
  t.equal(cap.tundra, 92, 'the most of flood, snapshot and count')
  t.equal(cap.pass, true, '92 ≤ 55 + 32 + 16')
  t.equal(ok.find(x => x.metric === 'RSS after the flood ages out')!.pass, true)
  const bad = summarize({ meta: {}, skipped: {}, memory: { ...memory, flood: { ...flood, rssAfterCount: 400 * MB } } })
  t.equal(bad.find(x => x.metric.startsWith('RSS at the conntrack cap'))!.pass, false, 'a count that holds the table fails')
})

t.test('DNS rows: q/s against dnsmasq (1.5× in the path, 1.0× on a socket) and server CPU per query', async t => {
  const c = (name: string, qps: number, cpu: number) => ({
    name,
    available: true,
    runs: [],
    qps,
    avgLatencyMs: 1,
    lostPct: 0,
    cpuUsPerQuery: [cpu],
    cpuUsPerQueryMedian: cpu,
  })
  const rows = summarize({
    meta: {},
    skipped: {},
    dns: {
      pinned: true,
      services: 10,
      queries: 10,
      seconds: 1,
      contenders: [c('dnsmasq', 100_000, 8), c('tundra-socket', 105_000, 10), c('tundra-lab', 140_000, 4)],
    },
  })
  const lab = rows.find(x => x.metric === 'DNS queries/s (in-path, lab)')!
  t.equal(lab.target, '≥ 1.50×')
  t.equal(lab.pass, false)
  const sock = rows.find(x => x.metric === 'DNS queries/s (socket front end)')!
  t.equal(sock.target, '≥ 1.00×')
  t.equal(sock.pass, true)
  t.equal(rows.find(x => x.metric === 'DNS server CPU per query (in-path: the agent)')!.compare, 0.5)
  t.equal(rows.find(x => x.metric === 'DNS server CPU per query (socket front end)')!.kernel['dnsmasq'], 8)
})

t.test('failover: ejection detection time and connects until ejection, per mode', async t => {
  const rows = summarize({
    meta: {},
    skipped: {},
    failover: {
      connectTimeoutSeconds: 1,
      runs: [],
      ejection: [
        { mode: 'rst', detectMs: 125, connects: 13, attempts: 3 },
        { mode: 'blackhole', detectMs: NaN, connects: NaN, attempts: NaN, error: 'timed out' },
      ],
    },
  })
  const rst = rows.find(x => x.metric === 'ejection detection time, 1 of 3 backends refusing')!
  t.equal(rst.tundra, 125)
  t.equal(rst.unit, 'ms')
  t.equal(rst.pass, undefined, 'informational: the kernel has no ejection to compare with')
  t.equal(rows.find(x => x.metric === 'client connects until ejection, 1 of 3 backends refusing')!.tundra, 13)
  t.match(rows.find(x => x.metric === 'client connects until ejection, 1 of 3 backends refusing')!.note, /3 of them reached the backend/)
  const bh = rows.find(x => x.metric === 'ejection detection time, 1 of 3 backends blackholed')!
  t.ok(Number.isNaN(bh.tundra), 'not ejected: no number')
  t.match(renderTable(rows), /ejection detection time, 1 of 3 backends refusing +ms +125/)
})

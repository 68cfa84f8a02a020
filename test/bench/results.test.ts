// bench/RESULTS.md from a run's JSON: machine, conditions, summary table, charts copied next to it (no measurement).
import t from 'tap'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readReport, renderTable, reportJson, summarize, type BenchReport } from '../../bench/lib/report'
import { conditions, loadAverages, packetThreadTable, renderResults, runSeconds, syncTable, writeResults } from '../../bench/lib/results'
import { stampedTwin } from '../../bench/results'
import type { E2eResult } from '../../bench/sections/e2e'
import type { SyncRow } from '../../bench/sections/sync'

const e2e: E2eResult = {
  rounds: 3,
  seconds: 4,
  contenders: [
    { contender: 'tundra', available: true, samples: {}, medians: { tcp1Gbps: 9, tcp4Gbps: 8, udpRxPps: 90_000, latUdpP50: 20, connPerSec: 900 } },
    { contender: 'iptables-nft', available: true, samples: {}, medians: { tcp1Gbps: 10, tcp4Gbps: 12, udpRxPps: 100_000, latUdpP50: 11, connPerSec: 1000 } },
    { contender: 'nftables', available: false, error: 'nft is not installed', samples: {}, medians: {} },
  ],
}

const syncRow = (services: number, nftOver: boolean): SyncRow => ({
  services,
  endpointsPerService: 10,
  compileMs: services / 50,
  compileRuns: [],
  updateMs: services / 1000,
  updateOnlyMs: 0,
  swapMs: 0,
  updateRuns: [],
  renderMs: 0,
  iptablesRules: 0,
  nftLines: 0,
  kernel: {
    'iptables-nft': { fullMs: services * 5, deltaMs: services / 2, deltaRuns: [services / 2] },
    nftables: nftOver
      ? { fullOverMs: 120_000, skipped: 'full load stopped at the 120 s cap: the change is not measured' }
      : { fullMs: services * 9, deltaMs: services / 4 },
  },
})

function report(load: string): BenchReport {
  return {
    meta: {
      date: '2026-11-26T02:02:05.069Z',
      host: 'vm',
      kernel: '6.18.44-test',
      cpus: 2,
      cpuModel: 'AMD EPYC',
      node: 'v20.20.2',
      quick: false,
      rounds: 3,
      seconds: 4,
      loadAverageAtStart: `${load} 1.00 1.00 1/100 1234`,
      sections: { sync: { start: `${load} 1 1 1/1 1`, end: '3.10 1 1 1/1 1', seconds: 100 } },
      tools: { iptables: 'iptables v1.8.9 (nf_tables)', iperf: 'unavailable' },
    },
    skipped: {},
    e2e,
    sync: [syncRow(1000, false), syncRow(10_000, true)],
  }
}

t.test('the page: machine, conditions, summary with every contender, ratio, target, met?, charts', async t => {
  const r = report('6.54')
  const md = renderResults(r, { source: 'bench/out/bench-x.json', chartDir: 'results' }, ['throughput.svg', 'sync.svg'], 1956)
  t.match(md, /^# tundra benchmark results$/m)
  t.match(md, /node dist\/bench\/results\.js bench\/out\/bench-x\.json/)
  t.match(md, /\| date \| 2026-11-26 02:02 UTC \|/)
  t.match(md, /\| CPU \| AMD EPYC, 2 cores \|/)
  t.match(md, /\| kernel \| 6\.18\.44-test \|/)
  t.match(md, /\| Node \| v20\.20\.2 \|/)
  t.match(md, /\| run \| full; 3 rounds, 4 s per e2e measurement; took 32\.6 min \|/)
  t.match(
    renderResults({ ...r, meta: { ...r.meta, only: ['micro', 'e2e'] } }, { source: 'x', chartDir: 'results' }, []),
    /\| run \| full, sections micro, e2e; /,
  )
  t.match(md, /while the machine was loaded/)
  t.match(md, /load average 6\.54 at the start/)
  t.notMatch(md, /unavailable/, 'tools that were not found are left out')
  t.match(md, /^\| metric \| unit \| tundra \| iptables-nft \| nftables \| ratio \| target \| met\? \|$/m)
  t.match(md, /^\| TCP throughput, 1 stream \| Gbit\/s \| 9\.00 \| 10\.00 \| – \| 0\.90× \| ≥ 0\.95× \| NO \|$/m)
  t.match(
    md,
    /^\| Full compile at 10000 services × 10 endpoints \| ms \| 200 \| 50000 \| > 120 s \| 0\.0040× \| ≤ 200 ms \| yes \|$/m,
    'a load stopped at the cap reads "> 120 s"',
  )
  t.match(md, /!\[TCP throughput through a ClusterIP\]\(results\/throughput\.svg\)/)
  t.match(md, /!\[Sync time against the number of services\]\(results\/sync\.svg\)/)
  t.notMatch(md, /dns\.svg/, 'only the charts that were made')
  t.match(md, /^- e2e nftables: nft is not installed$/m)
  t.match(md, /^- sync 10k nftables: full load stopped at the 120 s cap/m)
  t.match(md, /^\| 10k \| 200 ms \| 10\.00 ms \| 50\.0 s \| 5000 ms \| > 120 s \| not measured \|$/m)
})

t.test('conditions: quiet, loaded, a note; load averages from the start and every section', async t => {
  t.same(loadAverages(report('0.40')), [0.4, 0.4, 3.1])
  t.match(
    conditions(report('0.40')),
    /^The machine was quiet: .*up to 3\.10 during the run \(the bench's own load included\)/,
    'the load during the run is mostly the bench itself: only the start says whether other work was there',
  )
  const quiet = report('0.20')
  quiet.meta['sections'] = {}
  t.match(conditions(quiet), /^The machine was quiet/)
  t.match(conditions(quiet, 'Taken after the last dataplane change.'), /Taken after the last dataplane change\.$/)
})

t.test('the stdout table shows a capped load the same way', async t => {
  t.match(renderTable(summarize(report('1'))), /Full compile at 10000 .* > 120 s /)
  t.equal(syncTable({ meta: {}, skipped: {} }).length, 0)
})

t.test('run time from meta or from the file stamp', async t => {
  const r = report('1')
  t.equal(runSeconds(r, '/x/bench-2026-11-26T02-34-43-130Z.json'), 1958.061)
  t.equal(runSeconds(r, '/x/latest.json'), undefined)
  r.meta['totalSeconds'] = 600
  t.equal(runSeconds(r, '/x/bench-2026-11-26T02-34-43-130Z.json'), 600)
})

t.test('writeResults: RESULTS.md and the charts under results/, from JSON as written by a run', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-results-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const out = join(dir, 'out')
  mkdirSync(out)
  mkdirSync(join(dir, 'results'))
  writeFileSync(join(dir, 'results', 'stale.svg'), '<svg/>')
  const json = reportJson(report('6.54'))
  writeFileSync(join(out, 'bench-2026-11-26T02-34-43-130Z.json'), json)
  writeFileSync(join(out, 'latest.json'), json)
  const source = stampedTwin(join(out, 'latest.json'))
  t.equal(source, join(out, 'bench-2026-11-26T02-34-43-130Z.json'), 'latest.json is named by its time-stamped twin')
  const r = readReport(readFileSync(source, 'utf8'))
  t.ok(Number.isNaN(r.e2e!.contenders[2]!.medians['x'] ?? NaN))
  const files = writeResults(r, { benchDir: dir, jsonPath: source, repoRoot: dir, note: 'A note.' })
  t.same(readdirSync(join(dir, 'results')).sort(), ['connections.svg', 'latency.svg', 'pps.svg', 'sync.svg', 'throughput.svg'], 'the stale chart is gone')
  t.equal(files[0], join(dir, 'RESULTS.md'))
  const md = readFileSync(join(dir, 'RESULTS.md'), 'utf8')
  t.match(md, /results\.js out\/bench-2026-11-26T02-34-43-130Z\.json/)
  t.match(md, /took 32\.6 min/)
  t.match(md, /A note\./)
  for (const f of files) t.ok(existsSync(f), f)
  t.match(
    readFileSync(join(dir, 'results', 'sync.svg'), 'utf8'),
    /nft -f full<\/text><text[^>]*>\(&gt;120 s at 10k\)/,
    'the chart says where a load hit the cap',
  )
})

t.test("the packet thread's longest steps: installs, conntrack chunks and flush slices from the micro section", async t => {
  const r: BenchReport = {
    meta: {},
    skipped: {},
    micro: {
      runner: 'x',
      results: [
        { group: 'nat image 20000 services × 10', name: 'install full image (packet side)', nsPerOp: 1800, opsPerSec: 0, rmePct: 0, samples: 1, runner: 'x' },
        { group: 'nat image 20000 services × 10', name: 'natImage full (control side)', nsPerOp: 9e6, opsPerSec: 0, rmePct: 0, samples: 1, runner: 'x' },
        {
          group: 'nat conntrack 1000000 entries',
          name: 'ctChunk of 4096 entries (packet side)',
          nsPerOp: 122_900,
          opsPerSec: 0,
          rmePct: 0,
          samples: 1,
          runner: 'x',
        },
        { group: 'wire', name: 'parsePacket', nsPerOp: 18, opsPerSec: 0, rmePct: 0, samples: 1, runner: 'x' },
      ],
      oneShot: [{ name: 'nat stale flush over 1000000 entries: slice of 8192 slots, worst', entries: 8192, nsPerEntry: 375 }],
    },
  }
  const lines = packetThreadTable(r)
  t.same(
    lines.slice(2).map(l =>
      l
        .split('|')
        .map(c => c.trim())
        .filter(Boolean),
    ),
    [
      ['nat image 20000 services × 10: install full image (packet side)', '1.8 µs'],
      ['nat conntrack 1000000 entries: ctChunk of 4096 entries (packet side)', '122.9 µs'],
      ['nat stale flush over 1000000 entries: slice of 8192 slots, worst', '3.07 ms'],
    ],
    'packet-side steps only (not the control side, not the wire micro-benchmarks)',
  )
  t.same(packetThreadTable({ meta: {}, skipped: {} }), [], 'no micro section: no table')
})

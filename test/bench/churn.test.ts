// The churn section's offline parts: its plan and arguments, the change schedule, the lab manifest, the kernel's
// partial update (checked against a full render of the same state), the summary rows and the charts.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs, SECTIONS } from '../../bench/lib/args'
import { churnCharts, churnRows, renderTable, summarize } from '../../bench/lib/report'
import { parseIptablesSave, parseNftScript } from '../../bench/lib/ruleset-delta'
import {
  ChurnSchedule,
  churnContendersAt,
  churnPlan,
  ECHO,
  finishContender,
  kernelPatch,
  PROBE_SERVICE,
  PROBE_VIP,
  ProbeOutput,
  sliceObject,
  withEndpoints,
  writeChurnManifest,
  type ChurnContender,
  type ChurnResult,
  type PhaseResult,
} from '../../bench/sections/churn'
import { compileLab } from '../../src/lab/compile'
import { LAB } from '../../src/lab/plan'
import { renderIptablesSave } from '../../src/kubeproxy/iptables'
import { renderNft } from '../../src/kubeproxy/nftables'

t.test('--only churn, and churn is part of a whole run', async t => {
  t.same(parseArgs(['--only', 'churn'], '/o').sections, ['churn'])
  t.ok(SECTIONS.includes('churn'))
  t.ok(parseArgs([], '/o').sections.includes('churn'))
  t.notOk(parseArgs(['--only', 'control'], '/o').sections.includes('churn'))
})

t.test('plan: quick is 1 000 services for 10 s, the full run 1k/10k/20k for 20 s', async t => {
  t.same(churnPlan(true), { sizes: [1000], baselineSeconds: 3, churnSeconds: 7 })
  const full = churnPlan(false)
  t.same(full.sizes, [1000, 10_000, 20_000])
  t.ok(full.churnSeconds >= 20)
})

t.test('plan: TUNDRA_CHURN_SIZES picks the sizes, bad ones are refused', async t => {
  t.same(churnPlan(false, '20000').sizes, [20_000])
  t.same(churnPlan(false, '1000, 20000').sizes, [1000, 20_000])
  t.equal(churnPlan(false, '20000').churnSeconds, churnPlan(false, undefined).churnSeconds)
  t.same(churnPlan(true, '').sizes, [1000])
  t.throws(() => churnPlan(false, '20k'), /TUNDRA_CHURN_SIZES/)
})

t.test('contenders: tundra, iptables-restore, nft (nft above 1 000 only with --nft20k); --contenders narrows', async t => {
  const all = ['tundra', 'iptables-nft', 'iptables-legacy', 'nftables'] as const
  t.same(churnContendersAt(1000, all, false), ['tundra', 'iptables-nft', 'nftables'])
  t.same(churnContendersAt(20_000, all, false), ['tundra', 'iptables-nft'])
  t.same(churnContendersAt(20_000, all, true), ['tundra', 'iptables-nft', 'nftables'])
  t.same(churnContendersAt(1000, ['tundra'], false), ['tundra'])
})

t.test('schedule: deterministic, never leaves a service without a ready endpoint, flips the probe between the echo pods', async t => {
  const a = new ChurnSchedule(50, 7)
  const b = new ChurnSchedule(50, 7)
  const kinds = new Set<string>()
  const seqA: unknown[] = []
  const seqB: unknown[] = []
  for (let i = 0; i < 2000; i++) {
    const x = a.next()
    seqA.push(x)
    seqB.push(b.next())
    kinds.add(x.kind)
    if (!x.endpoints.some(e => e.ready)) {
      t.fail(`${x.service} left without a ready endpoint after ${x.kind}`)
      break
    }
    if (x.endpoints.length > 8) {
      t.fail(`${x.service} has ${x.endpoints.length} endpoints`)
      break
    }
  }
  t.same(seqB, seqA, 'the same seed gives the same changes')
  t.same([...kinds].sort(), ['ready-flip', 'scale-down', 'scale-up'])
  const f1 = a.flipProbe()
  t.equal(f1.service, PROBE_SERVICE)
  t.equal(a.probeTarget, ECHO[1].name)
  t.same(f1.endpoints, [
    { ip: ECHO[0].ip, ready: false },
    { ip: ECHO[1].ip, ready: true },
  ])
  a.flipProbe()
  t.equal(a.probeTarget, ECHO[0].name)
})

t.test('the lab manifest compiles (no root needed) and the kernel patch of a stream of changes equals a full render', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tt-churn-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const plan = compileLab({ name: 'bcplan', files: [writeChurnManifest(dir, 30)], nodes: 1, dataplane: 'none' })
  t.equal(plan.cluster.services.length, 32, '30 fillers, the probed service and kube-dns')
  const probe = plan.cluster.services.find(s => s.name === PROBE_SERVICE)!
  t.same(probe.clusterIPs, [PROBE_VIP])
  t.same(
    probe.endpoints.map(e => [e.ip, e.ready]),
    [
      [ECHO[0].ip, true],
      [ECHO[1].ip, false],
    ],
  )

  const opts = { clusterCIDR: LAB.clusterCIDR, nodeName: 'node1', nodeIPs: ['172.18.0.11'] }
  let cluster = plan.cluster
  let ipt = parseIptablesSave(renderIptablesSave(cluster, opts))
  let nft = parseNftScript(renderNft(cluster, { ...opts, family: 4 }))
  const sched = new ChurnSchedule(30, 3)
  for (let round = 0; round < 20; round++) {
    // a batch of changes, as one sync writes them (the probe flip among them)
    const changes = [sched.next(), sched.next(), sched.flipProbe(), sched.next()]
    const byName = new Map(cluster.services.map(s => [s.name, s]))
    const after = new Map<string, ReturnType<typeof withEndpoints>>()
    for (const c of changes) after.set(c.service, withEndpoints(byName.get(c.service)!, c.endpoints))
    const before = [...after.keys()].map(n => byName.get(n)!)
    const p = kernelPatch(ipt, cluster, before, [...after.values()], opts)
    const q = kernelPatch(nft, cluster, before, [...after.values()], opts)
    t.ok(p.text.includes('KUBE-SERVICES'), 'kube-proxy rewrites KUBE-SERVICES on every sync')
    cluster = { ...cluster, services: cluster.services.map(s => after.get(s.name) ?? s) }
    ipt = p.next
    nft = q.next
    const full = parseIptablesSave(renderIptablesSave(cluster, opts))
    const fullNft = parseNftScript(renderNft(cluster, { ...opts, family: 4 }))
    const chains = (d: typeof ipt): string[] => [...d.tables.get('nat')!.chains].map(([k, v]) => `${k}\n${v.rules.join('\n')}`).sort()
    if (JSON.stringify(chains(ipt)) !== JSON.stringify(chains(full))) {
      t.fail(`iptables state differs from a full render after round ${round}`)
      break
    }
    const sets = (d: typeof nft): string[] => [...d.sets].map(([k, v]) => `${k}: ${[...v.elements].sort().join(', ')}`).sort()
    const nchains = (d: typeof nft): string[] => [...d.chains].map(([k, v]) => `${k}\n${v.join('\n')}`).sort()
    if (JSON.stringify(sets(nft)) !== JSON.stringify(sets(fullNft)) || JSON.stringify(nchains(nft)) !== JSON.stringify(nchains(fullNft))) {
      t.fail(`nft state differs from a full render after round ${round}`)
      break
    }
  }
  t.pass('20 rounds of patches match full renders')
})

t.test('a slice carries readiness as the API does', async t => {
  const s = sliceObject('s00001', [
    { ip: '10.128.0.1', ready: true },
    { ip: '10.128.0.2', ready: false },
  ]) as { endpoints: { conditions: { ready: boolean } }[]; metadata: { labels: Record<string, string> } }
  t.same(
    s.endpoints.map(e => e.conditions.ready),
    [true, false],
  )
  t.equal(s.metadata.labels['kubernetes.io/service-name'], 's00001')
})

const phase = (o: Partial<PhaseResult>): PhaseResult => ({
  seconds: 10,
  probesSent: 10_000,
  probesReplied: 10_000,
  probesLost: 0,
  probesSkipped: 0,
  p50Us: 100,
  p999Us: 400,
  maxUs: 900,
  dwellP999Us: 150,
  dwellMaxUs: 300,
  dwellPackets: 40_000,
  dnsSent: 5000,
  dnsLost: 0,
  changes: 0,
  ...o,
})

function contender(name: ChurnContender['contender'], churn: Partial<PhaseResult>, flips: number[], unseen: number[] = []): ChurnContender {
  const c: ChurnContender = {
    contender: name,
    available: true,
    labUpSeconds: 5,
    baseline: phase({}),
    churn: phase({ changes: 100, ...churn }),
    flipsMs: flips,
    flipsUnseenMs: unseen,
    syncs: 10,
    syncP50Ms: 3,
    driverErrors: [],
    addedP50Us: NaN,
    addedP999Us: NaN,
    addedMaxUs: NaN,
    c2dP50Ms: NaN,
    c2dP99Ms: NaN,
  }
  finishContender(c)
  return c
}

t.test('added latency and change-to-dataplane from the raw figures; unseen flips count with the time they waited', async t => {
  const c = contender('tundra', { p50Us: 110, p999Us: 1200, maxUs: 2400 }, [2, 4, 6], [5000])
  t.equal(c.addedP50Us, 10)
  t.equal(c.addedP999Us, 800)
  t.equal(c.addedMaxUs, 1500)
  t.equal(c.c2dP50Ms, 5)
  t.ok(c.c2dP99Ms > 4000, 'the unseen flip sets p99')
})

t.test('rows: judged at the largest size against the targets; the ok column says yes/NO', async t => {
  const result: ChurnResult = {
    changesPerSecond: 10,
    probesPerSecond: 1000,
    dnsQps: 500,
    baselineSeconds: 10,
    churnSeconds: 20,
    sizes: [
      { services: 1000, contenders: [contender('tundra', { p999Us: 9000 }, [900])] },
      {
        services: 20_000,
        contenders: [
          contender('tundra', { p999Us: 1000, maxUs: 2500 }, [2, 3, 4]),
          contender('iptables-nft', { p999Us: 50_000, maxUs: 90_000, probesLost: 3, dnsLost: 1 }, [7000]),
          { ...contender('nftables', {}, []), available: false, error: 'not measured' },
        ],
      },
    ],
  }
  const rows = churnRows(result)
  const by = (m: string): (typeof rows)[number] => rows.find(r => r.metric === `Churn at 20000 services: ${m}`)!
  t.equal(by('probe p99.9 added').tundra, 0.6)
  t.equal(by('probe p99.9 added').pass, true)
  t.equal(by('probe max added').tundra, 1.6)
  t.equal(by('probe max added').pass, true)
  t.equal(by('probes lost').pass, true)
  t.equal(by('probes lost').kernel['iptables-nft'], 3)
  t.ok(Number.isNaN(by('probes lost').kernel['nftables']), 'a contender that did not run shows –')
  t.equal(by('change to dataplane p99').pass, true)
  t.equal(by('change to dataplane p50').pass, undefined, 'info rows are not judged')
  t.equal(by('node dwell p99.9 during churn').tundra, 0.15, "the node's own hold on the probe, from the churn phase")
  t.equal(by('node dwell max during churn').kernel['iptables-nft'], 0.3)
  t.equal(by('node dwell max during churn').pass, undefined)
  const table = renderTable(summarize({ meta: {}, skipped: {}, churn: result }))
  t.match(table, /Churn at 20000 services: probes lost\s+count\s+0\s+3\s+–\s+0\s+0\s+yes/)
  const slow = churnRows({ ...result, sizes: [{ services: 20_000, contenders: [contender('tundra', { maxUs: 900_000, probesLost: 12 }, [6000])] }] })
  t.same(
    slow.filter(r => r.pass !== undefined).map(r => r.pass),
    [true, false, false, true, false],
  )
  // A stall in the baseline (no changes) longer than the limit makes the added figures negative: not a pass.
  const stalled = contender('tundra', { p999Us: 30_000, maxUs: 40_000 }, [2, 3, 4])
  stalled.baseline = phase({ p999Us: 150_000, maxUs: 160_000 })
  finishContender(stalled)
  const hidden = churnRows({ ...result, sizes: [{ services: 20_000, contenders: [stalled] }] })
  const added = hidden.filter(r => r.metric.includes('added') && r.pass !== undefined)
  t.same(
    added.map(r => [r.tundra, r.pass]),
    [
      [-120, false],
      [-120, false],
    ],
  )
})

t.test('charts: change-to-dataplane (log) and added probe latency against services, one series per contender and figure', async t => {
  const result: ChurnResult = {
    changesPerSecond: 10,
    probesPerSecond: 1000,
    dnsQps: 500,
    baselineSeconds: 5,
    churnSeconds: 10,
    sizes: [{ services: 1000, contenders: [contender('tundra', {}, [400, 900]), contender('iptables-nft', {}, [100, 170])] }],
  }
  const charts = churnCharts(result)
  t.same(
    charts.map(c => c[0]),
    ['churn.svg', 'churn-probe.svg'],
  )
  for (const [, svg] of charts) {
    t.match(svg, /^<svg [^>]*>/)
    t.match(svg, /<\/svg>\n$/)
    t.match(svg, />tundra p/)
    t.match(svg, />iptables-nft p/)
  }
  t.match(charts[0]![1], /ms \(log\)/)
  t.same(churnCharts({ ...result, sizes: [] }), [], 'nothing measured, no chart')
})

t.test('probe output: the first answer marks the probe as running (changes wait for it); switches and the report parse across chunks', async t => {
  const seen: string[] = []
  const out = new ProbeOutput((ns, name) => seen.push(`${ns} ${name}`))
  let running = false
  void out.answering.then(() => (running = true))
  out.push('swi')
  await Promise.resolve()
  t.equal(running, false, 'nothing answered yet')
  out.push('tch 1200 echo-a\nswitch 3400 ec')
  await Promise.resolve()
  t.equal(running, true, 'running after the first answer')
  t.same(seen, ['1200 echo-a'], 'a switch is reported once its line is whole')
  out.push('ho-b\n{"sent":2,"replied":2,"lost":0,"skipped":0,"stalled":0,"seconds":1,"rttUs":[5,6],"switches":[]}\n')
  t.same(seen, ['1200 echo-a', '3400 echo-b'])
  t.equal(out.report?.replied, 2)
  t.same(out.report?.rttUs, [5, 6])
})

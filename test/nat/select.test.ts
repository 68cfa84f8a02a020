// Endpoint choice: uniform spread, ClientIP affinity (pins, expiry, endpoint removal) and Maglev (determinism,
// balance, churn).
import t from 'tap'
import type { Service } from '../../src/model/cluster'
import { compileNat } from '../../src/nat/compile'
import { updateNat } from '../../src/nat/update'
import type { NatConfig } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { NatAction, NatStat } from '../../src/nat/verdict'
import { maglevTable } from '../../src/nat/maglev'
import { ipv4ToString } from '../../src/wire/ipv4'
import { get32 } from '../../src/wire/bytes'
import { BASE_CONFIG, SYN, ep, info, parse, port, svc, tcp4 } from './packets'

const CONFIG: NatConfig = { ...BASE_CONFIG, nodeIPs: [...BASE_CONFIG.nodeIPs], clusterCIDRs: [...BASE_CONFIG.clusterCIDRs] }
const NOW = 70000

function service(n: number, o: Partial<Service> = {}): Service {
  const eps = []
  for (let i = 0; i < n; i++) eps.push(ep(`10.100.${i + 1}.${i + 10}`, 8080))
  return svc('s', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: eps, ...o })
}

function engineFor(s: Service, cfg: Partial<NatConfig> = {}, seed?: number): NatEngine {
  const table = compileNat({ services: [s], nodes: [], pods: [] }, { ...CONFIG, ...cfg })
  return new NatEngine(table, seed === undefined ? { conntrackMax: 1 << 18 } : { conntrackMax: 1 << 18, seed })
}

/** Opens a connection; returns the endpoint address it was sent to. */
function connect(eng: NatEngine, client: string, sport: number, now = NOW): string {
  const p = tcp4(client, '10.96.0.10', sport, 80, SYN)
  parse(p)
  const a = eng.process(p, 0, p.length, info, false, now)
  if (a !== NatAction.FORWARD) throw new Error(`action ${a}`)
  return ipv4ToString(get32(p, 16))
}

t.test('uniform spread over 2, 3 and 4 endpoints (40,000 connections each, unseeded)', async tt => {
  const n = 40000
  for (const k of [2, 3, 4]) {
    const eng = engineFor(service(k))
    const counts = new Map<string, number>()
    for (let i = 0; i < n; i++) {
      const dst = connect(eng, `10.100.250.${1 + (i % 250)}`, 1024 + Math.floor(i / 250))
      counts.set(dst, (counts.get(dst) ?? 0) + 1)
    }
    tt.equal(counts.size, k, `all ${k} endpoints used`)
    // Binomial: each count ~ N(n/k, n p (1-p)); 6 sigma cannot realistically fail.
    const p = 1 / k
    const sigma = Math.sqrt(n * p * (1 - p))
    let chi2 = 0
    for (const [dst, c] of counts) {
      tt.ok(Math.abs(c - n * p) < 6 * sigma, `${k} endpoints: ${dst} got ${c} (expected ${n * p} +- ${Math.round(6 * sigma)})`)
      chi2 += (c - n * p) ** 2 / (n * p)
    }
    // chi-square with k-1 <= 3 degrees of freedom: P(chi2 > 40) < 1e-8.
    tt.ok(chi2 < 40, `chi-square ${chi2.toFixed(2)}`)
  }
})

t.test('ClientIP affinity: one client always lands on one endpoint; 200 clients each pinned', async tt => {
  const eng = engineFor(service(4, { affinityTimeout: 10800 }), {}, 11)
  const first = new Map<string, string>()
  for (let round = 0; round < 10; round++) {
    for (let c = 0; c < 200; c++) {
      const client = `10.100.250.${c + 1}`
      const dst = connect(eng, client, 2000 + round)
      const pinned = first.get(client)
      if (pinned === undefined) first.set(client, dst)
      else if (pinned !== dst) tt.fail(`${client} moved from ${pinned} to ${dst}`)
    }
  }
  tt.equal(first.size, 200)
  tt.equal(new Set(first.values()).size, 4, 'clients spread over all endpoints')
  tt.equal(eng.counters[NatStat.AFFINITY_HIT], 200 * 9)
  tt.equal(eng.v4.aff.size, 200)
})

t.test('affinity expiry with an injected clock; refreshed by new connections', async tt => {
  const eng = engineFor(service(4, { affinityTimeout: 10800 }), {}, 5)
  const sp = eng.table.svcPorts[0]!
  connect(eng, '10.100.250.1', 3000, NOW)
  tt.equal(eng.findAffinity(sp, '10.100.250.1', NOW)?.expiresIn, 10800)
  connect(eng, '10.100.250.1', 3001, NOW + 100)
  tt.equal(eng.findAffinity(sp, '10.100.250.1', NOW + 100)?.expiresIn, 10800, 'refreshed')
  tt.ok(eng.findAffinity(sp, '10.100.250.1', NOW + 10899) !== undefined)
  tt.equal(eng.findAffinity(sp, '10.100.250.1', NOW + 10900), undefined, 'expired 10800 s after the last connection')
  const hits = eng.counters[NatStat.AFFINITY_HIT]
  connect(eng, '10.100.250.1', 3002, NOW + 10900)
  tt.equal(eng.counters[NatStat.AFFINITY_HIT], hits, 'a connection after expiry is a fresh choice')

  // Short timeout, many clients: after expiry about 3/4 of them land elsewhere.
  const short = engineFor(service(4, { affinityTimeout: 10 }), {}, 9)
  const before: string[] = []
  for (let c = 0; c < 200; c++) before.push(connect(short, `10.100.250.${c + 1}`, 4000, NOW))
  let same = 0
  for (let c = 0; c < 200; c++) if (connect(short, `10.100.250.${c + 1}`, 4001, NOW + 9) === before[c]) same++
  tt.equal(same, 200, 'within the timeout every client keeps its endpoint')
  let moved = 0
  for (let c = 0; c < 200; c++) if (connect(short, `10.100.250.${c + 1}`, 4002, NOW + 9 + 10) !== before[c]) moved++
  tt.ok(moved > 100 && moved < 190, `${moved} of 200 re-picked after expiry`)
  // The reaper clears expired pins.
  for (let i = 0; i < 100; i++) short.tick(NOW + 1000)
  tt.equal(short.v4.aff.size, 0)
})

t.test('affinity to a removed endpoint is re-picked', async tt => {
  const s = service(3, { affinityTimeout: 10800 })
  const eng = engineFor(s, {}, 3)
  const dst = connect(eng, '10.100.250.9', 5000)
  eng.swap(updateNat(eng.table, [{ ...s, endpoints: s.endpoints.filter(e => e.ip !== dst) }]))
  const again = connect(eng, '10.100.250.9', 5001)
  tt.not(again, dst)
  tt.equal(connect(eng, '10.100.250.9', 5002), again, 'and pinned there')
})

t.test('maglev: deterministic tables, balanced to within one slot, ~1/N churn', async tt => {
  const names = Array.from({ length: 10 }, (_, i) => `10.100.${i}.${i + 7}:8080`)
  const m = 16381
  const a = maglevTable(names, m)!
  const b = maglevTable([...names], m)!
  tt.same(a, b, 'same input, same table')
  const counts = new Array<number>(10).fill(0)
  for (const i of a) counts[i]!++
  tt.ok(
    counts.every(c => c === Math.floor(m / 10) || c === Math.ceil(m / 10)),
    `balanced: ${counts.join(',')}`,
  )
  const fewer = names.filter((_, i) => i !== 4)
  const c = maglevTable(fewer, m)!
  let moved = 0
  let movedSurvivors = 0
  for (let s = 0; s < m; s++) {
    const before = names[a[s]!]!
    const after = fewer[c[s]!]!
    if (before !== after) {
      moved++
      if (before !== names[4]) movedSurvivors++
    }
  }
  tt.ok(moved / m < 0.2 && moved / m >= 0.1, `removing 1 of 10 moved ${((100 * moved) / m).toFixed(1)}% of slots`)
  tt.ok(movedSurvivors / m < 0.1, `flows of surviving endpoints that moved: ${((100 * movedSurvivors) / m).toFixed(1)}%`)
})

t.test('maglev in the engine: two nodes agree, compile order does not matter', async tt => {
  const s = service(7)
  const shuffled: Service = { ...s, endpoints: [...s.endpoints].reverse() }
  const e1 = engineFor(s, { lb: 'maglev' }, 1)
  const e2 = engineFor(shuffled, { lb: 'maglev', nodeName: 'other-node', nodeIPs: ['192.168.1.11'] }, 999)
  const sp1 = e1.table.svcPorts[0]!
  const sp2 = e2.table.svcPorts[0]!
  tt.same(sp1.cluster.maglev, sp2.cluster.maglev, 'same lookup table on both nodes')
  let agree = 0
  const used = new Set<string>()
  for (let i = 0; i < 1000; i++) {
    const client = `10.100.250.${1 + (i % 200)}`
    const d1 = connect(e1, client, 6000 + i)
    const d2 = connect(e2, client, 6000 + i)
    used.add(d1)
    if (d1 === d2) agree++
  }
  tt.equal(agree, 1000)
  tt.equal(used.size, 7)
  // An updateNat that does not touch the endpoints keeps the very same table object.
  const t2 = updateNat(e1.table, [{ ...s, labels: { x: 'y' } }])
  tt.equal(t2.svcPorts[0]!.cluster.maglev, sp1.cluster.maglev)
})

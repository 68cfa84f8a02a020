// IPVS schedulers (src/nat/sched.ts) through the engine: rr and wrr exact proportions, lc balancing live
// connections, sh stable per client, random roughly uniform with a seeded RNG, mh from a label; graceful
// termination keeps a leaving endpoint's TCP flows.
import t from 'tap'
import type { Service } from '../../src/model/cluster'
import { compileNat } from '../../src/nat/compile'
import { updateNat } from '../../src/nat/update'
import type { NatConfig } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { NatAction } from '../../src/nat/verdict'
import { CtFlag } from '../../src/nat/conntrack'
import { SCHED_NAMES, SchedState, schedulerId } from '../../src/nat/sched'
import { ipv4ToString } from '../../src/wire/ipv4'
import { get32 } from '../../src/wire/bytes'
import { ip4 } from './packets'
import { BASE_CONFIG, SYN, ep, info, parse, port, svc, tcp4, udp4 } from './packets'

const FIN = 0x01
const ACK = 0x10

const CONFIG: NatConfig = { ...BASE_CONFIG, nodeIPs: [...BASE_CONFIG.nodeIPs], clusterCIDRs: [...BASE_CONFIG.clusterCIDRs] }
const NOW = 70000
const EPS = ['10.100.1.10', '10.100.2.11', '10.100.3.12']

function service(o: Partial<Service> = {}, eps: readonly string[] = EPS): Service {
  return svc('s', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: eps.map(a => ep(a, 8080)), ...o })
}

function engineFor(s: Service, cfg: Partial<NatConfig> = {}, seed = 7): NatEngine {
  return new NatEngine(compileNat({ services: [s], nodes: [], pods: [] }, { ...CONFIG, ...cfg }), { conntrackMax: 1 << 16, seed })
}

/** Opens a connection; returns the endpoint address it was sent to. */
function connect(eng: NatEngine, client: string, sport: number): string {
  const p = tcp4(client, '10.96.0.10', sport, 80, SYN)
  parse(p)
  const a = eng.process(p, 0, p.length, info, false, NOW)
  if (a !== NatAction.FORWARD) throw new Error(`action ${a}`)
  return ipv4ToString(get32(p, 16))
}

function tally(list: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const x of list) out[x] = (out[x] ?? 0) + 1
  return out
}

/** Deletes every conntrack entry whose endpoint (reply source) is `addr`; returns how many. */
function closeAllTo(eng: NatEngine, addr: string): number {
  const ct = eng.v4.ct
  const want = ip4(addr) >>> 0
  let n = 0
  for (let e = 0; e < ct.svcPort.length; e++) {
    if ((ct.flags[e]! & CtFlag.USED) === 0) continue
    if (ct.tuples[e * ct.tw + ct.kw]! >>> 0 === want) {
      ct.delete(e)
      n++
    }
  }
  return n
}

t.test('scheduler names', async tt => {
  tt.same(SCHED_NAMES, ['random', 'rr', 'wrr', 'lc', 'wlc', 'sh', 'mh'])
  tt.equal(schedulerId('maglev'), schedulerId('mh'))
  tt.equal(schedulerId('lblc'), undefined, 'an IPVS scheduler tundra does not have')
})

t.test('rr: exact round robin over 3 endpoints (300 connections, 100 each, in order)', async tt => {
  const eng = engineFor(service(), { scheduler: 'rr' })
  const got: string[] = []
  for (let i = 0; i < 300; i++) got.push(connect(eng, `10.100.250.${1 + (i % 200)}`, 2000 + i))
  tt.same(tally(got), { [EPS[0]!]: 100, [EPS[1]!]: 100, [EPS[2]!]: 100 })
  tt.same(got.slice(0, 6), [EPS[0], EPS[1], EPS[2], EPS[0], EPS[1], EPS[2]])
})

t.test('rr by Service label on a random node; a bad label is a problem and the node default stays', async tt => {
  const eng = engineFor(service({ labels: { 'tundra.io/scheduler': 'rr' } }))
  const got: string[] = []
  for (let i = 0; i < 30; i++) got.push(connect(eng, '10.100.250.1', 3000 + i))
  tt.same(tally(got), { [EPS[0]!]: 10, [EPS[1]!]: 10, [EPS[2]!]: 10 })
  const bad = compileNat({ services: [service({ labels: { 'tundra.io/scheduler': 'fastest' } })], nodes: [], pods: [] }, CONFIG)
  tt.match(bad.problems, [{ field: 'metadata.labels[tundra.io/scheduler]', reason: /"fastest" is not a scheduler/ }])
})

t.test('wrr: IPVS weighted round robin gives exact proportions (weights 3, 2, 1 over 600 picks)', async tt => {
  // Endpoint words: address, port | flags << 16 with the weight in the top byte (compile sets none: weight 1).
  const data = new Uint32Array([1, 8080 | (3 << 24), 2, 8080 | (2 << 24), 3, 8080 | (1 << 24)])
  const set = { count: 3, aw: 1, data, off: 0 }
  const s = new SchedState()
  const picks: number[] = []
  for (let i = 0; i < 600; i++) picks.push(s.wrr(5, set))
  tt.same(tally(picks.map(String)), { 0: 300, 1: 200, 2: 100 })
  tt.same(picks.slice(0, 6), [0, 0, 1, 0, 1, 2], 'one cycle, as ip_vs_wrr steps the current weight down')
  // Through the engine every endpoint has weight 1: wrr is rr, as in kube-proxy's IPVS mode.
  const eng = engineFor(service(), { scheduler: 'wrr' })
  const got: string[] = []
  for (let i = 0; i < 90; i++) got.push(connect(eng, '10.100.250.2', 4000 + i))
  tt.same(tally(got), { [EPS[0]!]: 30, [EPS[1]!]: 30, [EPS[2]!]: 30 })
})

t.test('lc: long-lived connections balance, and new ones go to the endpoint whose connections closed', async tt => {
  const eng = engineFor(service(), { scheduler: 'lc' })
  const first: string[] = []
  for (let i = 0; i < 30; i++) first.push(connect(eng, '10.100.250.3', 5000 + i))
  tt.same(tally(first), { [EPS[0]!]: 10, [EPS[1]!]: 10, [EPS[2]!]: 10 })
  tt.equal(eng.sched.counted, 30)
  tt.equal(closeAllTo(eng, EPS[1]!), 10)
  tt.equal(eng.sched.counted, 20, 'closing a connection lowers its endpoint count')
  const next: string[] = []
  for (let i = 0; i < 10; i++) next.push(connect(eng, '10.100.250.3', 6000 + i))
  tt.same(tally(next), { [EPS[1]!]: 10 }, 'all 10 go to the endpoint left with none')
  const more: string[] = []
  for (let i = 0; i < 30; i++) more.push(connect(eng, '10.100.250.3', 7000 + i))
  tt.same(tally(more), { [EPS[0]!]: 10, [EPS[1]!]: 10, [EPS[2]!]: 10 })
})

t.test('lc: a FIN ends a counted connection at once (its entry lingers in TIME_WAIT, not counted)', async tt => {
  const eng = engineFor(service(), { scheduler: 'lc' })
  for (let i = 0; i < 3; i++) {
    const epAddr = connect(eng, '10.100.250.6', 11000 + i)
    for (const p of [tcp4(epAddr, '10.100.250.6', 8080, 11000 + i, SYN | ACK), tcp4('10.100.250.6', '10.96.0.10', 11000 + i, 80, ACK)]) {
      parse(p)
      tt.equal(eng.process(p, 0, p.length, info, false, NOW), NatAction.FORWARD)
    }
  }
  tt.equal(eng.sched.counted, 3)
  const fin = tcp4('10.100.250.6', '10.96.0.10', 11001, 80, FIN | ACK)
  parse(fin)
  eng.process(fin, 0, fin.length, info, false, NOW)
  tt.equal(eng.sched.counted, 2)
  tt.equal(eng.v4.ct.count, 3, 'the entry stays')
  const next: string[] = []
  for (let i = 0; i < 4; i++) next.push(connect(eng, '10.100.250.6', 12000 + i))
  tt.same(next.slice(0, 1), [EPS[1]], 'the endpoint whose connection closed takes the next one')
})

t.test('lc: after an update adds an endpoint, it takes new connections until it catches up', async tt => {
  const eng = engineFor(service(), { scheduler: 'wlc' })
  for (let i = 0; i < 30; i++) connect(eng, '10.100.250.4', 8000 + i)
  const four = [...EPS, '10.100.4.13']
  eng.swap(updateNat(eng.table, [service({}, four)]))
  const next: string[] = []
  for (let i = 0; i < 10; i++) next.push(connect(eng, '10.100.250.4', 9000 + i))
  tt.same(tally(next), { '10.100.4.13': 10 })
})

t.test('sh: one client always lands on one endpoint; 300 clients use every endpoint', async tt => {
  const eng = engineFor(service(), { scheduler: 'sh' })
  const per = new Map<string, Set<string>>()
  for (let c = 0; c < 300; c++) {
    const client = `10.100.${200 + (c >> 8)}.${c & 255}`
    const seen = new Set<string>()
    for (let j = 0; j < 5; j++) seen.add(connect(eng, client, 10000 + j))
    per.set(client, seen)
  }
  tt.ok(
    [...per.values()].every(s => s.size === 1),
    'each client sees one endpoint',
  )
  const counts = tally([...per.values()].map(s => [...s][0]!))
  tt.same(Object.keys(counts).sort(), [...EPS].sort())
  for (const c of Object.values(counts)) tt.ok(c > 50, `${c} clients of 300 on one endpoint`)
  // A second engine (another node) maps each client the same way.
  const other = engineFor(service(), { scheduler: 'sh' }, 99)
  for (const [client, s] of per) tt.equal(connect(other, client, 20000), [...s][0], client)
})

t.test('random with a seeded RNG: roughly uniform and reproducible', async tt => {
  const run = (seed: number): string[] => {
    const eng = engineFor(service(), {}, seed)
    const got: string[] = []
    for (let i = 0; i < 3000; i++) got.push(connect(eng, `10.100.250.${1 + (i % 200)}`, 30000 + i))
    return got
  }
  const a = run(42)
  tt.same(a, run(42), 'same seed, same choices')
  for (const [addr, c] of Object.entries(tally(a))) tt.ok(c > 850 && c < 1150, `${addr}: ${c} of 3000`)
})

t.test('mh by label: every node picks the same endpoint for a flow', async tt => {
  const s = service({ labels: { 'tundra.io/scheduler': 'mh' } })
  const a = engineFor(s, {}, 1)
  const b = engineFor(s, {}, 2)
  const got: string[] = []
  for (let i = 0; i < 200; i++) {
    const x = connect(a, '10.100.250.9', 40000 + i)
    tt.equal(connect(b, '10.100.250.9', 40000 + i), x)
    got.push(x)
  }
  tt.equal(Object.keys(tally(got)).length, 3)
})

t.test('graceful termination: a leaving endpoint keeps its TCP connections (no reset)', async tt => {
  for (const graceful of [false, true]) {
    const eng = engineFor(service(), { scheduler: 'rr', gracefulTermination: graceful })
    for (let i = 0; i < 3; i++) connect(eng, '10.100.250.5', 50000 + i)
    const r = eng.swap(updateNat(eng.table, [service({}, EPS.slice(0, 2))]))
    if (graceful) tt.same(r, { flushed: 0, resets: 0 }, 'IPVS mode: weight 0, flows finish')
    else tt.same(r, { flushed: 1, resets: 1 }, 'default: the flow is reset')
    tt.equal(eng.v4.ct.count, graceful ? 3 : 2)
  }
})

t.test('excludeCIDRs: UDP flows of a leaving endpoint inside them are kept; outside, graceful mode flushes them', async tt => {
  const udpSvc = (eps: readonly string[]): Service =>
    svc('u', { clusterIPs: ['10.96.0.20'], ports: [port('', 53, 5353, 'UDP')], endpoints: eps.map(a => ep(a, [{ name: '', protocol: 'UDP', port: 5353 }])) })
  for (const [exclude, kept] of [
    [[], 0],
    [['10.100.3.0/24'], 1],
  ] as const) {
    const eng = new NatEngine(
      compileNat({ services: [udpSvc(EPS)], nodes: [], pods: [] }, { ...CONFIG, scheduler: 'rr', gracefulTermination: true, excludeCIDRs: exclude }),
      {
        conntrackMax: 1 << 16,
        seed: 3,
      },
    )
    for (let i = 0; i < 3; i++) {
      const p = udp4('10.100.250.7', '10.96.0.20', 53000 + i, 53)
      parse(p)
      tt.equal(eng.process(p, 0, p.length, info, false, NOW), NatAction.FORWARD)
    }
    const r = eng.swap(updateNat(eng.table, [udpSvc(EPS.slice(0, 2))]))
    tt.equal(r.flushed, 1 - kept, exclude.length > 0 ? 'inside excludeCIDRs: not touched' : 'UDP: flushed, as kube-proxy clears UDP conntrack')
    tt.equal(eng.v4.ct.count, 2 + kept)
  }
})

// Two NAT engines (two packet threads' views) over one shared conntrack: a flow whose two directions arrive on
// different threads is translated as one connection.
import t from 'tap'
import { compileNat } from '../../src/nat/compile'
import type { NatConfig } from '../../src/nat/compile'
import { sharedConntrack } from '../../src/nat/conntrack'
import { sharedAffinity } from '../../src/nat/select'
import { connectOptions } from '../../src/nat/failover'
import { mergeEndpointSnapshots, signalRows, splitRelease } from '../../src/nat/signals'
import { natEndpointCounters } from '../../src/metrics/endpoints'
import { NatEngine } from '../../src/nat/engine'
import { NatAction, NatStat } from '../../src/nat/verdict'
import { ACK, BASE_CONFIG, NODE, PSH, SYN, checksumProblems, ep, flow, info, parse, port, svc, tcp4, udp4 } from './packets'

const CONFIG: NatConfig = { ...BASE_CONFIG, nodeIPs: [...BASE_CONFIG.nodeIPs], clusterCIDRs: [...BASE_CONFIG.clusterCIDRs] }
const NOW = 100000

const two = svc('two', {
  clusterIPs: ['10.96.0.20'],
  ports: [port('', 80, 8080), port('dns', 53, 53, 'UDP')],
  endpoints: [
    ep(
      '10.100.1.2',
      [
        { name: '', protocol: 'TCP', port: 8080 },
        { name: 'dns', protocol: 'UDP', port: 53 },
      ],
      { node: NODE },
    ),
    ep(
      '10.100.2.3',
      [
        { name: '', protocol: 'TCP', port: 8080 },
        { name: 'dns', protocol: 'UDP', port: 53 },
      ],
      { node: 'node-b' },
    ),
  ],
})

const sticky = svc('sticky', { ...two, clusterIPs: ['10.96.0.30'], affinityTimeout: 600 })

function pair(): [NatEngine, NatEngine] {
  const table = compileNat({ services: [two, sticky], nodes: [], pods: [] }, CONFIG)
  const v4 = sharedConntrack(4, 1024, 11)
  const v6 = sharedConntrack(6, 64, 12)
  const aff4 = sharedAffinity(4, 64)
  const aff6 = sharedAffinity(6, 16)
  // different seeds for endpoint choice: the threads' RNGs are their own
  return [
    new NatEngine(table, { seed: 1, shared: { v4, v6, aff4, aff6, owner: 1 } }),
    new NatEngine(table, { seed: 2, shared: { v4, v6, aff4, aff6, owner: 2 } }),
  ]
}

function run(eng: NatEngine, p: Buffer): number {
  parse(p)
  return eng.process(p, 0, p.length, info, false, NOW)
}

t.test('SYN on thread A, SYN-ACK on thread B, then data both ways on either', async tt => {
  const [a, b] = pair()
  const syn = tcp4('10.100.1.50', '10.96.0.20', 40000, 80, SYN, { seq: 1000 })
  tt.equal(run(a, syn), NatAction.FORWARD)
  const backend = flow(syn).split(' > ')[1]!
  const [bip, bport] = backend.split(':') as [string, string]
  tt.match(backend, /^10\.100\.(1\.2|2\.3):8080$/)
  const synack = tcp4(bip, '10.100.1.50', Number(bport), 40000, SYN | ACK, { seq: 7000, ack: 1001 })
  tt.equal(run(b, synack), NatAction.FORWARD, 'thread B finds the entry thread A made')
  tt.equal(flow(synack), '10.96.0.20:80 > 10.100.1.50:40000', 'reply un-NATed on the other thread')
  tt.same(checksumProblems(synack), [])
  for (let i = 0; i < 4; i++) {
    const [x, y] = i % 2 === 0 ? [b, a] : [a, b]
    const out = tcp4('10.100.1.50', '10.96.0.20', 40000, 80, ACK | PSH, { seq: 1001 + i * 10, ack: 7001, payload: 10 })
    tt.equal(run(x, out), NatAction.FORWARD)
    tt.equal(flow(out), `10.100.1.50:40000 > ${backend}`, 'same endpoint whichever thread')
    tt.same(checksumProblems(out), [])
    const back = tcp4(bip, '10.100.1.50', Number(bport), 40000, ACK | PSH, { seq: 7001 + i * 10, ack: 1011 + i * 10, payload: 10 })
    tt.equal(run(y, back), NatAction.FORWARD)
    tt.equal(flow(back), '10.96.0.20:80 > 10.100.1.50:40000')
  }
  tt.equal(a.ctCount(), 1, 'one connection')
  tt.equal(b.ctCount(), 1, 'seen from both threads')
  const [e] = b.conntrackEntries(NOW)
  tt.equal(e?.state, 'ESTABLISHED')
  tt.same(e?.flags, ['replied', 'assured', 'dnat'])
  tt.same(e?.packets, [5, 5], 'packets of both threads counted on the one entry')
  tt.equal(a.counters[NatStat.NEW]! + b.counters[NatStat.NEW]!, 1, 'one new connection in all')
})

t.test('UDP: a reply on the other thread, and a second packet there, reuse the entry', async tt => {
  const [a, b] = pair()
  const q = udp4('10.100.1.51', '10.96.0.20', 5353, 53)
  tt.equal(run(a, q), NatAction.FORWARD)
  const backend = flow(q).split(' > ')[1]!
  const [bip] = backend.split(':') as [string, string]
  const r = udp4(bip, '10.100.1.51', 53, 5353)
  tt.equal(run(b, r), NatAction.FORWARD)
  tt.equal(flow(r), '10.96.0.20:53 > 10.100.1.51:5353')
  const q2 = udp4('10.100.1.51', '10.96.0.20', 5353, 53)
  tt.equal(run(b, q2), NatAction.FORWARD)
  tt.equal(flow(q2), `10.100.1.51:5353 > ${backend}`)
  tt.equal(a.ctCount(), 1)
})

t.test('deletes and reaping on one thread are seen by the other', async tt => {
  const [a, b] = pair()
  for (let i = 0; i < 50; i++) tt.equal(run(a, udp4('10.100.1.60', '10.96.0.20', 10000 + i, 53)), NatAction.FORWARD)
  tt.equal(b.ctCount(), 50)
  tt.equal(b.flush({}), 50)
  tt.equal(a.ctCount(), 0)
  tt.same(a.conntrackEntries(NOW), [])
  tt.equal(run(b, udp4('10.100.1.60', '10.96.0.20', 10000, 53)), NatAction.FORWARD, 'a flushed tuple starts over')
  tt.equal(a.ctCount(), 1)
})

t.test('sessionAffinity ClientIP: one pin for the client whichever thread its connections arrive on', async tt => {
  const [a, b] = pair()
  const seen = new Set<string>()
  for (let i = 0; i < 24; i++) {
    const p = tcp4('10.100.1.70', '10.96.0.30', 41000 + i, 80, SYN)
    tt.equal(run(i % 2 === 0 ? a : b, p), NatAction.FORWARD)
    seen.add(flow(p).split(' > ')[1]!)
  }
  tt.equal(seen.size, 1, `every connection to the one endpoint it was pinned to (${[...seen].join(', ')})`)
  tt.equal(a.stats().affinity_pins, 1, 'one pin, seen from thread A')
  tt.equal(b.stats().affinity_pins, 1, 'and from thread B')
  tt.equal(b.findAffinity({ id: a.table.svcPorts.findIndex(sp => sp?.name === 'sticky'), family: 4 }, '10.100.1.70', NOW)?.endpoint, [...seen][0])
})

t.test('a full shared affinity table: connections still go through, without a pin', async tt => {
  const table = compileNat({ services: [two, sticky], nodes: [], pods: [] }, CONFIG)
  const shared = { v4: sharedConntrack(4, 1024, 11), v6: sharedConntrack(6, 64, 12), aff4: sharedAffinity(4, 8), aff6: sharedAffinity(6, 8), owner: 1 }
  const eng = new NatEngine(table, { seed: 1, shared })
  for (let i = 0; i < 20; i++) tt.equal(run(eng, tcp4(`10.100.2.${i + 1}`, '10.96.0.30', 42000, 80, SYN)), NatAction.FORWARD)
  tt.equal(eng.stats().affinity_pins, 8, 'pins up to the table size')
  tt.equal(eng.ctCount(), 20, 'every connection tracked')
})

t.test('a lock held by a thread that died is released by its owner id', async tt => {
  const [a, b] = pair()
  a.v4.ct.lock()
  tt.equal(b.releaseLocksOf(2), false, 'not held by 2')
  tt.equal(b.releaseLocksOf(1), true, 'held by 1: released')
  tt.equal(run(b, udp4('10.100.1.61', '10.96.0.20', 1, 53)), NatAction.FORWARD, 'the other thread goes on')
})

t.test('signals with two engines over one conntrack: per-engine books, an entry of the other thread finds no slot', async tt => {
  const table = compileNat({ services: [two, sticky], nodes: [], pods: [] }, CONFIG)
  const v4 = sharedConntrack(4, 1024, 11)
  const v6 = sharedConntrack(6, 64, 12)
  const connect = connectOptions({}, 2)
  tt.equal(connect.signals, true, 'signals are allowed with two threads')
  const engines = [
    new NatEngine(table, { seed: 1, connect, shared: { v4, v6, owner: 1 } }),
    new NatEngine(table, { seed: 2, connect, shared: { v4, v6, owner: 2 } }),
  ]
  // per engine, per endpoint: packets it processed of flows to it, packets of flows it made, flows it made
  const seen = [new Map<string, number>(), new Map<string, number>()]
  const own = [new Map<string, number>(), new Map<string, number>()]
  const made = [new Map<string, number>(), new Map<string, number>()]
  const inc = (m: Map<string, number>, k: string, n = 1): void => void m.set(k, (m.get(k) ?? 0) + n)
  for (let i = 0; i < 40; i++) {
    const x = i % 2
    const y = 1 - x
    const q = udp4('10.100.1.80', '10.96.0.20', 20000 + i, 53)
    tt.equal(run(engines[x]!, q), NatAction.FORWARD)
    const backend = flow(q).split(' > ')[1]!
    const [bip] = backend.split(':') as [string, string]
    tt.equal(run(engines[y]!, udp4(bip, '10.100.1.80', 53, 20000 + i)), NatAction.FORWARD, 'reply on the other thread')
    tt.equal(run(engines[x]!, udp4('10.100.1.80', '10.96.0.20', 20000 + i, 53)), NatAction.FORWARD)
    inc(made[x]!, backend)
    inc(own[x]!, backend, 2)
    inc(seen[x]!, backend, 2)
    inc(seen[y]!, backend)
    // the other thread deletes it: the next flow may take the same entry, and the engine that made this one keeps
    // a stale word for it
    tt.equal(engines[y]!.flush({}), 1)
  }
  for (const x of [0, 1]) {
    const eng = engines[x]!
    const snap = eng.book.snapshot(0, eng.tracking)
    const rows = natEndpointCounters(table, snap).rows.filter(r => r.service === 'two' && r.port === 'dns')
    for (const r of rows) {
      tt.equal(r.newConnections, made[x]!.get(r.endpoint) ?? 0, `engine ${x} ${r.endpoint}: the flows it made`)
      tt.ok(r.packets >= (own[x]!.get(r.endpoint) ?? 0), `engine ${x} ${r.endpoint}: every packet of its own flows`)
      tt.ok(r.packets <= (seen[x]!.get(r.endpoint) ?? 0), `engine ${x} ${r.endpoint}: nothing of another endpoint's flows`)
    }
    tt.same(
      signalRows(table, snap).map(r => r.failed),
      signalRows(table, snap).map(() => 0),
      'no failures invented',
    )
  }
  // what the host answers for several threads: one snapshot, one signal row per endpoint, releases split back
  const merged = mergeEndpointSnapshots(engines.map(e => e.book.snapshot(0, e.tracking)))
  const dnsRows = signalRows(table, merged).filter(r => r.service === 'two' && r.port === 'dns')
  tt.equal(new Set(dnsRows.map(r => r.endpoint)).size, dnsRows.length, 'one signal row per endpoint')
  tt.equal(
    dnsRows.reduce((n, r) => n + r.opened, 0),
    40,
    'every flow counted once across the threads',
  )
  const all = Array.from({ length: merged.n }, (_, c) => c).filter(c => merged.used[c] === 1)
  const back = [splitRelease(all, 0, 2), splitRelease(all, 1, 2)]
  tt.equal(back[0]!.length + back[1]!.length, all.length, 'every merged slot goes back to one thread')
  tt.equal(engines[0]!.book.release(back[0]!) + engines[1]!.book.release(back[1]!), all.length, 'and frees a slot there')
})

// Connect tracking in the engine on real packet bytes: failover on RST, ICMP unreachable and timeout, outlier
// ejection with its panic threshold, per-endpoint signals.
import t from 'tap'
import type { Service } from '../../src/model/cluster'
import { compileNat } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { NatAction } from '../../src/nat/verdict'
import { CONN_STAT_NAMES, ConnStat, connectOptions, type ConnectOptions, type FailoverConfig } from '../../src/nat/failover'
import { DEFAULT_OUTLIER } from '../../src/nat/outlier'
import { signalRows, type SignalRow } from '../../src/nat/signals'
import { ipv4ToString } from '../../src/wire/ipv4'
import { ACK, BASE_CONFIG, RST, SYN, checksumProblems, ep, flow, icmpError4, info, parse, port, svc, tcp4 } from './packets'

const NOW = 100000
const DEFAULT_FAILOVER = connectOptions({}).failover
const VIP = '10.96.0.30'
const CLIENT = '10.100.1.50'
const EPS = ['10.100.1.2', '10.100.1.3', '10.100.1.4']
const three: Service = svc('three', { clusterIPs: [VIP], ports: [port('', 80, 8080)], endpoints: EPS.map(a => ep(a, 8080, { node: 'node-a' })) })

function engine(
  connect: { signals?: boolean; failover?: Partial<FailoverConfig>; outlier?: ConnectOptions['outlier'] },
  seed = 7,
): { eng: NatEngine; clock: { ms: number } } {
  const cfg = { ...BASE_CONFIG, nodeIPs: [...BASE_CONFIG.nodeIPs], clusterCIDRs: [...BASE_CONFIG.clusterCIDRs] }
  const opts: ConnectOptions = {
    signals: connect.signals ?? true,
    failover: { ...DEFAULT_FAILOVER, ...connect.failover },
    outlier: connect.outlier === undefined ? null : connect.outlier,
  }
  const eng = new NatEngine(compileNat({ services: [three], nodes: [], pods: [] }, cfg), { seed, connect: opts })
  const clock = { ms: 1000 }
  eng.msClock = () => clock.ms
  return { eng, clock }
}

function run(eng: NatEngine, p: Buffer, now = NOW): number {
  parse(p)
  return eng.process(p, 0, p.length, info, false, now)
}

/** The endpoint a SYN from client port `sport` went to. */
function connect(eng: NatEngine, sport: number): { syn: Buffer; to: string; act: number } {
  const syn = tcp4(CLIENT, VIP, sport, 80, SYN, { seq: 5000 })
  const act = run(eng, syn)
  return { syn, to: ipv4ToString(syn.readUInt32BE(16)), act }
}

/** connect(), answered with a SYN-ACK unless it went to `bad`. */
function answered(eng: NatEngine, sport: number, bad: string): string {
  const c = connect(eng, sport)
  if (c.to !== bad) run(eng, tcp4(c.to, CLIENT, 8080, sport, SYN | ACK, { seq: 1, ack: 5001 }))
  return c.to
}

function resent(eng: NatEngine): Buffer[] {
  const out = Buffer.alloc(4096)
  const offs = new Uint32Array(8)
  const lens = new Uint32Array(8)
  const n = eng.writeFailover(out, 0, offs, lens, 8, 10)
  const r: Buffer[] = []
  for (let i = 0; i < n; i++) r.push(Buffer.from(out.subarray(offs[i]!, offs[i]! + lens[i]!)))
  return r
}

function stat(eng: NatEngine, s: number): number {
  return eng.connCounters[s]!
}

function rowOf(eng: NatEngine, addr: string): SignalRow | undefined {
  return signalRows(eng.table, eng.book.snapshot(eng.msClock(), true)).find(r => r.endpoint === `${addr}:8080`)
}

t.test('failover off: the RST to a SYN reaches the client; signals count it', async tt => {
  const { eng } = engine({})
  const c = connect(eng, 40000)
  tt.equal(c.act, NatAction.FORWARD)
  const rst = tcp4(c.to, CLIENT, 8080, 40000, RST | ACK, { seq: 0, ack: 5001 })
  tt.equal(run(eng, rst), NatAction.FORWARD, 'the RST passes')
  tt.equal(flow(rst), `${VIP}:80 > ${CLIENT}:40000`)
  tt.equal(eng.pendingFailover, 0)
  const s = rowOf(eng, c.to)!
  tt.match(s, {
    namespace: 'default',
    service: 'three',
    port: '80',
    opened: 1,
    failed: 1,
    closed: 1,
    active: 0,
    resetsEndpoint: 1,
    resetsClient: 0,
    bytesTo: 40,
    bytesFrom: 40,
  })
})

t.test('failover on RST: the SYN goes to another endpoint, the client sees its SYN-ACK', async tt => {
  const { eng, clock } = engine({ failover: { enabled: true } })
  const c = connect(eng, 40001)
  const rst = tcp4(c.to, CLIENT, 8080, 40001, RST | ACK, { seq: 0, ack: 5001 })
  tt.equal(run(eng, rst), NatAction.DROP, 'the RST is swallowed')
  tt.equal(eng.pendingFailover, 1)
  const [syn] = resent(eng)
  tt.ok(syn, 'a SYN is written')
  tt.same(checksumProblems(syn!), [], 'its checksums verify')
  const to = ipv4ToString(syn!.readUInt32BE(16))
  tt.not(to, c.to, 'to another endpoint')
  tt.ok(EPS.includes(to))
  tt.equal(flow(syn!), `${CLIENT}:40001 > ${to}:8080`)
  tt.equal(syn!.readUInt32BE(24), 5000, 'the client sequence number is kept')
  tt.equal(syn![33], SYN)
  clock.ms += 3
  const synack = tcp4(to, CLIENT, 8080, 40001, SYN | ACK, { seq: 9000, ack: 5001 })
  tt.equal(run(eng, synack), NatAction.FORWARD)
  tt.equal(flow(synack), `${VIP}:80 > ${CLIENT}:40001`, 'reverse-NATed from the ClusterIP')
  const ack = tcp4(CLIENT, VIP, 40001, 80, ACK, { seq: 5001, ack: 9001 })
  tt.equal(run(eng, ack), NatAction.FORWARD)
  tt.equal(flow(ack), `${CLIENT}:40001 > ${to}:8080`, 'the rest of the connection follows the new endpoint')
  tt.equal(stat(eng, ConnStat.FAILOVER), 1)
  tt.equal(eng.ctCount(), 1, 'one conntrack entry')
  tt.match(rowOf(eng, c.to), { opened: 1, failed: 1, closed: 1, active: 0 }, 'the refused attempt is over')
  const h = rowOf(eng, to)!.connect
  tt.equal(h.count, 1, 'the connect time is recorded for the endpoint that answered')
  tt.equal(h.sum, 3)
  tt.equal(rowOf(eng, to)!.active, 1, 'one active connection')
})

t.test('failover gives up after maxRetries: the last RST reaches the client', async tt => {
  const { eng } = engine({ failover: { enabled: true, maxRetries: 2 } })
  let c = connect(eng, 40002)
  let to = c.to
  const seen = new Set([to])
  for (let i = 0; i < 2; i++) {
    tt.equal(run(eng, tcp4(to, CLIENT, 8080, 40002, RST | ACK, { seq: 0, ack: 5001 })), NatAction.DROP)
    const [syn] = resent(eng)
    to = ipv4ToString(syn!.readUInt32BE(16))
    tt.notOk(seen.has(to), 'never an endpoint already tried')
    seen.add(to)
  }
  const last = tcp4(to, CLIENT, 8080, 40002, RST | ACK, { seq: 0, ack: 5001 })
  tt.equal(run(eng, last), NatAction.FORWARD)
  tt.equal(flow(last), `${VIP}:80 > ${CLIENT}:40002`)
  tt.equal(stat(eng, ConnStat.FAILOVER_EXHAUSTED), 1)
  c = connect(eng, 40003)
  tt.equal(c.act, NatAction.FORWARD, 'new connections still work')
})

t.test('failover on ICMP unreachable from the endpoint side', async tt => {
  const { eng } = engine({ failover: { enabled: true } })
  const c = connect(eng, 40004)
  const err = icmpError4(c.to, c.syn, 3, 1)
  tt.equal(run(eng, err), NatAction.DROP, 'the unreachable is swallowed')
  const [syn] = resent(eng)
  tt.not(ipv4ToString(syn!.readUInt32BE(16)), c.to)
  tt.equal(stat(eng, ConnStat.FAILED_UNREACHABLE), 1)
})

t.test('failover on timeout: no SYN-ACK within synTimeout', async tt => {
  const { eng, clock } = engine({ failover: { enabled: true, synTimeoutMs: 1000 } })
  const c = connect(eng, 40005)
  clock.ms += 999
  eng.tick(NOW)
  tt.equal(eng.pendingFailover, 0, 'not before the timeout')
  clock.ms += 2
  eng.tick(NOW)
  tt.equal(eng.pendingFailover, 1)
  const [syn] = resent(eng)
  const to = ipv4ToString(syn!.readUInt32BE(16))
  tt.not(to, c.to)
  tt.equal(stat(eng, ConnStat.FAILED_TIMEOUT), 1)
  const synack = tcp4(to, CLIENT, 8080, 40005, SYN | ACK, { seq: 1, ack: 5001 })
  tt.equal(run(eng, synack), NatAction.FORWARD)
  tt.equal(flow(synack), `${VIP}:80 > ${CLIENT}:40005`)
  clock.ms += 5000
  eng.tick(NOW)
  tt.equal(eng.pendingFailover, 0, 'an answered connect does not time out')
})

t.test('a connection that exchanged data is never failed over', async tt => {
  const { eng } = engine({ failover: { enabled: true } })
  const c = connect(eng, 40006)
  tt.equal(run(eng, tcp4(c.to, CLIENT, 8080, 40006, SYN | ACK, { seq: 9000, ack: 5001 })), NatAction.FORWARD)
  tt.equal(run(eng, tcp4(CLIENT, VIP, 40006, 80, ACK, { seq: 5001, ack: 9001, payload: 10 })), NatAction.FORWARD)
  const rst = tcp4(c.to, CLIENT, 8080, 40006, RST | ACK, { seq: 9001, ack: 5011 })
  tt.equal(run(eng, rst), NatAction.FORWARD, 'the RST reaches the client')
  tt.equal(eng.pendingFailover, 0)
})

t.test('outlier ejection: consecutive failures eject; the selection skips; it comes back after the back-off', async tt => {
  const { eng, clock } = engine({ outlier: { ...DEFAULT_OUTLIER, consecutiveFailures: 2, baseEjectionMs: 30_000 } })
  const bad = EPS[0]!
  let sport = 41000
  let fails = 0
  while (fails < 2) {
    if (answered(eng, sport, bad) === bad) {
      run(eng, tcp4(bad, CLIENT, 8080, sport, RST | ACK, { seq: 0, ack: 5001 }))
      fails++
    }
    sport++
  }
  tt.equal(stat(eng, ConnStat.EJECTIONS), 1)
  tt.equal(rowOf(eng, bad)!.ejections, 1)
  const s = eng.book.snapshot(clock.ms, true)
  const ejected = [...s.ejectedMs].filter(x => x > 0)
  tt.same(ejected, [30_000], 'one endpoint ejected for 30 s')
  let toBad = 0
  for (let i = 0; i < 60; i++) if (answered(eng, sport++, bad) === bad) toBad++
  tt.equal(toBad, 0, 'no new connection goes to the ejected endpoint')
  tt.ok(stat(eng, ConnStat.SKIPPED_EJECTED) > 0)
  clock.ms += 30_001
  eng.tick(NOW)
  for (let i = 0; i < 60; i++) if (connect(eng, sport++).to === bad) toBad++
  tt.ok(toBad > 0, 'after the back-off it is used again')
  // Fails again: ejected for twice as long.
  fails = 0
  while (fails < 2) {
    if (answered(eng, sport, bad) === bad) {
      run(eng, tcp4(bad, CLIENT, 8080, sport, RST | ACK, { seq: 0, ack: 5001 }))
      fails++
    }
    sport++
  }
  tt.same(
    [...eng.book.snapshot(clock.ms, true).ejectedMs].filter(x => x > 0),
    [60_000],
    'the second ejection in a row lasts twice as long',
  )
})

t.test('panic threshold: above maxEjectionPercent all endpoints are used', async tt => {
  const { eng } = engine({ outlier: { ...DEFAULT_OUTLIER, consecutiveFailures: 1, maxEjectionPercent: 50 } })
  let sport = 42000
  const failed = new Set<string>()
  while (failed.size < 2) {
    const c = connect(eng, sport)
    if (c.to !== EPS[2] && !failed.has(c.to)) {
      run(eng, tcp4(c.to, CLIENT, 8080, sport, RST | ACK, { seq: 0, ack: 5001 }))
      failed.add(c.to)
    }
    sport++
  }
  tt.equal(stat(eng, ConnStat.EJECTIONS), 2, 'two of three ejected')
  const used = new Set<string>()
  for (let i = 0; i < 60; i++) used.add(connect(eng, sport++).to)
  tt.equal(used.size, 3, 'more than 50% ejected: every endpoint is used')
})

t.test('counter names line up with ConnStat', async tt => {
  tt.equal(CONN_STAT_NAMES.length, Object.keys(ConnStat).length)
})

t.test('connectOptions: every field honoured or refused', async tt => {
  const d = connectOptions({})
  tt.same(d, { signals: true, failover: DEFAULT_FAILOVER, outlier: null }, 'defaults: signals on, failover and ejection off')
  const c = connectOptions({
    failover: { enabled: true, synTimeout: 0.5, maxRetries: 1, pool: 100 },
    outlierEjection: { enabled: true, consecutiveFailures: 3, baseEjectionTime: 10, maxEjectionTime: 40, maxEjectionPercent: 30 },
    signals: { enabled: false },
  })
  tt.same(c, {
    signals: false,
    failover: { enabled: true, synTimeoutMs: 500, maxRetries: 1, pool: 100 },
    outlier: { consecutiveFailures: 3, baseEjectionMs: 10000, maxEjectionMs: 40000, maxEjectionPercent: 30 },
  })
  tt.throws(() => connectOptions({ failover: { synTimeout: 0.001 } }), /synTimeout/)
  tt.throws(() => connectOptions({ failover: { maxRetries: 9 } }), /maxRetries/)
  tt.throws(() => connectOptions({ failover: { retries: 1 } as never }), /failover.retries: unknown field/)
  tt.throws(() => connectOptions({ failover: { enabled: 'yes' } as never }), /expected a boolean/)
  tt.throws(() => connectOptions({ outlierEjection: { enabled: true, baseEjectionTime: 60, maxEjectionTime: 30 } }), /maxEjection/)
  tt.throws(() => connectOptions({ outlierEjection: { enabled: true, maxEjectionPercent: 101 } }), /maxEjectionPercent/)
})

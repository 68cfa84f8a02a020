// Conntrack time: the packet thread's monotonic clock at run time, remaining lifetimes in snapshots. A restart with
// a clock that starts anywhere, and a wall clock that stepped, leave every connection its own time to live.
import t from 'tap'
import { compileNat } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { CT_CHUNK, assembleSnapshot, prepareRestore } from '../../src/nat/ctview'
import { monoSeconds } from '../../src/nat/clock'
import { parsePacket, PacketInfo } from '../../src/wire/packet'
import { BASE_CONFIG, SYN, ep, port, svc, tcp4 } from './packets'

const web = svc('web', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080)] })
const cluster = { services: [web], nodes: [], pods: [] }
const info = new PacketInfo()

function open(eng: NatEngine, client: string, now: number): void {
  const b = tcp4(client, '10.96.0.10', 40000, 80, SYN)
  parsePacket(b, 0, b.length, info)
  eng.process(b, 0, b.length, info, false, now)
}

function snapshotOf(eng: NatEngine, now: number, wallMs: number): Buffer {
  const chunks: ArrayBuffer[] = []
  for (let c = 0; c >= 0; ) {
    const r = eng.ctChunk(c, CT_CHUNK, now)
    chunks.push(r.bytes)
    c = r.next
  }
  return assembleSnapshot(chunks, eng.table, wallMs)
}

t.test('a snapshot keeps each entry its remaining lifetime, whatever the clocks of the writer and the reader', async t => {
  const table = compileNat(cluster, BASE_CONFIG)
  const a = new NatEngine(table, { seed: 1 })
  open(a, '10.100.2.1', 5000)
  const left = a.conntrackEntries(5000)[0]!.expiresIn
  t.ok(left > 10, `a SYN_SENT entry lives ${left} s`)
  // written at wall time W by an engine whose clock read 5000; read 7 s of wall time later by one whose clock reads 3
  const W = 1_900_000_000_000
  const file = snapshotOf(a, 5000, W)
  const b = new NatEngine(table, { seed: 2 })
  const { chunks } = prepareRestore(file, table, W + 7000)
  for (const c of chunks) b.restoreChunk(c, 3)
  const e = b.conntrackEntries(3)
  t.equal(e.length, 1)
  t.equal(e[0]!.expiresIn, left - 7, 'the lifetime left at the save, less the 7 s the restart took')
  // read long after: expired, not resurrected
  const late = prepareRestore(file, table, W + (left + 1) * 1000)
  t.equal(
    late.chunks.reduce((n, c) => n + new DataView(c).getUint32(8, true), 0),
    0,
  )
  t.equal(late.report.expired, 1, 'counted as expired')
})

t.test("the packet thread's clock does not follow the wall clock", async t => {
  const before = monoSeconds()
  const real = Date.now
  Date.now = () => real() + 3600_000 // the wall clock jumps an hour ahead
  try {
    t.ok(monoSeconds() - before <= 1, 'monoSeconds did not jump')
  } finally {
    Date.now = real
  }
})

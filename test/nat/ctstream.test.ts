// Conntrack read a chunk at a time on the control side (issue 14, finding 7): a count, a listing, a flush and a
// snapshot of a table far bigger than one chunk see every entry once and hold no more than a chunk of it.
import t from 'tap'
import { compileNat } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { CT_CHUNK, assembleSnapshot, prepareRestore, snapshotBody, snapshotHead } from '../../src/nat/ctview'
import { engineLive } from '../../src/agent/live'
import { parsePacket, PacketInfo } from '../../src/wire/packet'
import { BASE_CONFIG, SYN, ep, port, svc, tcp4 } from './packets'

const web = svc('web', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080)] })
const table = compileNat({ services: [web], nodes: [], pods: [] }, BASE_CONFIG)
const info = new PacketInfo()
const N = CT_CHUNK * 2 + 123

function filled(): NatEngine {
  const eng = new NatEngine(table, { seed: 1 })
  for (let k = 0; k < N; k++) {
    const b = tcp4(`10.100.${2 + (k >>> 14)}.${1 + (k & 0x3f)}`, '10.96.0.10', 1024 + ((k >>> 6) & 0xff), 80, SYN)
    parsePacket(b, 0, b.length, info)
    eng.process(b, 0, b.length, info, false, 100)
  }
  return eng
}

t.test('a count and a filtered listing visit every entry once, across chunks', async t => {
  const eng = filled()
  t.equal(eng.v4.ct.count, N)
  const live = engineLive(eng, () => 100)
  const seen = new Set<string>()
  let n = 0
  await live.conntrack(e => {
    n++
    seen.add(`${e.orig.src}:${e.orig.sport}`)
  })
  t.equal(n, N, 'visited')
  t.equal(seen.size, N, 'each once')
  t.equal(await live.conntrackCount(), N, 'a count from the chunk headers agrees')
})

t.test('a flush deletes chunk by chunk and misses nothing', async t => {
  const eng = filled()
  const live = engineLive(eng, () => 100)
  const odd = (sport: number): boolean => (sport & 1) === 1
  let expect = 0
  await live.conntrack(e => {
    if (odd(e.orig.sport)) expect++
  })
  t.ok(expect > CT_CHUNK, `more than a chunk to delete (${expect})`)
  t.equal(await live.deleteWhere(e => odd(e.orig.sport)), expect)
  t.equal(eng.v4.ct.count, N - expect)
  let left = 0
  await live.conntrack(e => {
    if (odd(e.orig.sport)) left++
  })
  t.equal(left, 0)
})

t.test('a snapshot streamed a chunk at a time is the assembled one, and restores', async t => {
  const eng = filled()
  const wall = 1_900_000_000_000
  const a: ArrayBuffer[] = []
  const b: Uint8Array[] = [snapshotHead(table, wall)]
  for (let c = 0; c >= 0; ) {
    const r = eng.ctChunk(c, CT_CHUNK, 100)
    a.push(r.bytes.slice(0))
    b.push(snapshotBody(r.bytes))
    c = r.next
  }
  const whole = assembleSnapshot(a, table, wall)
  const streamed = Buffer.concat(b)
  t.ok(whole.equals(streamed), 'same bytes')
  const { report } = prepareRestore(streamed, table, wall)
  t.equal(report.corrupt, 0)
  t.equal(report.expired, 0)
})

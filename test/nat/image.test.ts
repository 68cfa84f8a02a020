// NatImage: an engine fed delta images must behave exactly like one given a full image of the same final table
// (seeded differential property test: verdict, endpoint and rewritten bytes); conntrack chunks list every entry
// once; stale flows are flushed in bounded slices; restore skips corrupt entries with a reason.
import t from 'tap'
import type { Cluster, Endpoint, Service, ServicePort } from '../../src/model/cluster'
import { compileNat } from '../../src/nat/compile'
import { updateNat } from '../../src/nat/update'
import type { NatConfig, NatTable } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { NatAction, NatStat } from '../../src/nat/verdict'
import { ImageKind, natImage, natImageTransfer } from '../../src/nat/image'
import { ctChunkBytes, decodeCtChunk, resolveCtFilter } from '../../src/nat/ctview'
import { NAT_ACTION_NAMES, NAT_STAT_NAMES, NatStat as VerdictStat } from '../../src/nat/verdict'
import { CAPTURE_VERDICTS } from '../../src/dataplane/capture'
import { parsePacket, PacketInfo } from '../../src/wire/packet'
import { parseIpWords } from '../../src/wire/addr'
import { findEndpoint } from '../../src/nat/select'
import { BASE_CONFIG, NODE, NODE_IP, ACK, SYN, ep, port, svc, tcp4, udp4, tcp6 } from './packets'
import { mulberry32 as prng } from '../helpers/seed'

const CONFIG: NatConfig = { ...BASE_CONFIG, nodeIPs: [...BASE_CONFIG.nodeIPs], clusterCIDRs: [...BASE_CONFIG.clusterCIDRs] }
const NOW = 100000

function cluster(services: readonly Service[]): Cluster {
  return { services: [...services], nodes: [], pods: [] }
}

// ---------------------------------------------------------------------------------------------------------------
// Random clusters: a small address pool so that frontends collide, endpoints come and go, ids get reused.

const NAMES = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l']
const PORTS = [80, 443, 53, 8080]
const LB_IPS = ['203.0.113.7', '203.0.113.8']
const EXT_IPS = ['198.51.100.20', '198.51.100.21']

class Gen {
  constructor(readonly r: () => number) {}
  int(n: number): number {
    return Math.floor(this.r() * n)
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!
  }
  chance(p: number): boolean {
    return this.r() < p
  }

  endpoint(six: boolean): Endpoint {
    const ip = six ? `fd00:100::${(1 + this.int(12)).toString(16)}` : `10.100.${this.int(3)}.${1 + this.int(12)}`
    const ready = this.chance(0.8)
    const terminating = !ready && this.chance(0.6)
    const ports = ['', 'p0', 'p1'].flatMap(name => [
      { name, protocol: 'TCP' as const, port: 8080 },
      { name, protocol: 'UDP' as const, port: 8053 },
    ])
    return ep(ip, ports, {
      ready,
      serving: ready || terminating,
      terminating,
      node: this.pick([NODE, 'node-b', 'node-c']),
    })
  }

  service(name: string): Service {
    const type = this.pick(['ClusterIP', 'ClusterIP', 'NodePort', 'LoadBalancer'] as const)
    const dual = this.chance(0.2)
    const ports: ServicePort[] = []
    const n = 1 + this.int(2)
    for (let i = 0; i < n; i++) {
      const proto = this.pick(['TCP', 'UDP'] as const)
      ports.push(port(n === 1 ? '' : `p${i}`, this.pick(PORTS), proto === 'TCP' ? 8080 : 8053, proto, type === 'ClusterIP' ? 0 : 30000 + this.int(6)))
    }
    const eps: Endpoint[] = []
    const ne = this.int(6)
    for (let i = 0; i < ne; i++) eps.push(this.endpoint(false))
    if (dual) for (let i = 0; i < this.int(3); i++) eps.push(this.endpoint(true))
    return svc(name, {
      type,
      clusterIPs: dual ? [`10.96.0.${this.int(16)}`, `fd00:96::${this.int(16).toString(16)}`] : [`10.96.0.${this.int(16)}`],
      ipFamilies: dual ? [4, 6] : [4],
      ports,
      endpoints: eps,
      externalIPs: this.chance(0.2) ? [this.pick(EXT_IPS)] : [],
      loadBalancerIngress: type === 'LoadBalancer' ? [{ ip: this.pick(LB_IPS), ipMode: 'VIP' }] : [],
      loadBalancerSourceRanges: type === 'LoadBalancer' && this.chance(0.5) ? [this.pick(['198.51.100.0/24', '192.168.1.0/24', '10.0.0.0/8'])] : [],
      affinityTimeout: this.chance(0.25) ? 10 + this.int(100) : 0,
      externalTrafficPolicy: this.chance(0.4) ? 'Local' : 'Cluster',
      internalTrafficPolicy: this.chance(0.2) ? 'Local' : 'Cluster',
    })
  }

  /** Endpoints re-rolled, or the whole service re-rolled. */
  change(s: Service): Service {
    if (this.chance(0.6)) {
      const eps = s.endpoints.filter(() => this.chance(0.7))
      for (let i = this.int(3); i > 0; i--) eps.push(this.endpoint(false))
      return { ...s, endpoints: eps }
    }
    return this.service(s.name)
  }

  /** A packet toward a frontend of `table` (mostly), or toward something that may be one. */
  packet(table: NatTable): Buffer {
    const sport = 1024 + this.int(60000)
    const sps = table.svcPorts.filter(sp => sp !== undefined)
    const sp = sps.length > 0 && this.chance(0.8) ? this.pick(sps) : undefined
    if (sp?.family === 6 || (sp === undefined && this.chance(0.1))) {
      const dst = sp?.clusterIP ?? `fd00:96::${this.int(16).toString(16)}`
      return tcp6(this.pick(['fd00:100::50', 'fd00:1::10', '2001:db8::9']), dst, sport, sp?.port ?? this.pick(PORTS), SYN)
    }
    const src = this.pick(['10.100.1.50', '10.100.0.3', NODE_IP, '198.51.100.9', '8.8.8.8', `10.100.${this.int(3)}.${1 + this.int(12)}`])
    let dst = this.pick([`10.96.0.${this.int(16)}`, NODE_IP, ...LB_IPS, ...EXT_IPS])
    let dport = dst === NODE_IP ? 30000 + this.int(6) : this.pick(PORTS)
    let udp = this.chance(0.5)
    if (sp !== undefined) {
      udp = sp.protocol === 'UDP'
      const kinds: [string, number][] = [[sp.clusterIP, sp.port]]
      if (sp.nodePort > 0) kinds.push([NODE_IP, sp.nodePort])
      for (const ip of sp.loadBalancerIPs) kinds.push([ip, sp.port])
      for (const ip of sp.externalIPs) kinds.push([ip, sp.port])
      ;[dst, dport] = this.pick(kinds)
    }
    return udp ? udp4(src, dst, sport, dport) : tcp4(src, dst, sport, dport, this.chance(0.95) ? SYN : ACK)
  }
}

const pi = new PacketInfo()
const W = new Uint32Array(4)

function run(eng: NatEngine, p: Buffer): number {
  if (parsePacket(p, 0, p.length, pi) !== 0) throw new Error('test packet does not parse')
  return eng.process(p, 0, p.length, pi, false, NOW)
}

t.test('delta-installed images behave like a full image of the final table (seeded differential test)', async tt => {
  const seed = Number(process.env.TUNDRA_SEED ?? (Math.random() * 0x100000000) >>> 0)
  tt.comment(`seed ${seed} (replay: TUNDRA_SEED=${seed})`)
  const g = new Gen(prng(seed))
  let cases = 0
  const verdicts = [0, 0, 0, 0, 0]
  let deltas = 0
  let fulls = 0
  let mismatch = ''
  for (let round = 0; round < 180 && mismatch === ''; round++) {
    const cfg: NatConfig = g.chance(0.3) ? { ...CONFIG, lb: 'maglev', maglevTableSize: 251 } : CONFIG
    let services = NAMES.slice(0, 3 + g.int(NAMES.length - 3)).map(n => g.service(n))
    let table: NatTable = compileNat(cluster(services), cfg)
    const engSeed = g.int(1 << 30)
    const live = new NatEngine(table, { seed: engSeed, flushBudget: 1 + g.int(64) })
    for (let step = 0; step < 12; step++) {
      const prev = table
      if (g.chance(0.1)) {
        services = services.map(s => (g.chance(0.3) ? g.change(s) : s))
        table = compileNat(cluster(services), cfg, prev)
      } else {
        const changed: Service[] = []
        const deleted: { namespace: string; name: string }[] = []
        for (let k = 1 + g.int(3); k > 0; k--) {
          const name = g.pick(NAMES)
          const i = services.findIndex(s => s.name === name)
          if (i >= 0 && g.chance(0.25)) {
            deleted.push({ namespace: 'default', name })
            services = services.filter(s => s.name !== name)
          } else {
            const s = i >= 0 ? g.change(services[i]!) : g.service(name)
            services = i >= 0 ? services.map(x => (x.name === name ? s : x)) : [...services, s]
            changed.push(s)
          }
        }
        table = updateNat(
          prev,
          changed.filter(c => services.some(s => s === c)),
          deleted,
        )
      }
      const img = natImage(table, prev)
      if (img.kind === ImageKind.DELTA) deltas++
      else fulls++
      live.install(img, table)
      // Only some slices now: later installs must merge into a flush under way.
      if (g.chance(0.5)) live.step(1 + g.int(16))
    }
    while (live.flushPending) live.step(64)
    const fresh = new NatEngine(table, { seed: engSeed })
    for (let n = 0; n < 60; n++, cases++) {
      const p = g.packet(table)
      const q = Buffer.from(p)
      const a = run(live, p)
      const b = run(fresh, q)
      verdicts[a]!++
      if (a !== b || !p.equals(q)) {
        mismatch = `round ${round} case ${n}: verdict ${NAT_ACTION_NAMES[a]} vs ${NAT_ACTION_NAMES[b]}; bytes ${p.toString('hex')} vs ${q.toString('hex')}`
        break
      }
    }
    if (mismatch === '') {
      const sa = live.stats()
      const sb = fresh.stats()
      delete sa.stale_flushed
      delete sa.reset_queued
      delete sa.reset_overflow
      if (JSON.stringify(sa) !== JSON.stringify(sb)) mismatch = `round ${round}: counters ${JSON.stringify(sa)} vs ${JSON.stringify(sb)}`
    }
  }
  tt.equal(mismatch, '', 'no difference')
  tt.ok(cases >= 10000, `${cases} cases`)
  tt.comment(`verdicts: ${NAT_ACTION_NAMES.map((n, i) => `${n} ${verdicts[i]}`).join(', ')}`)
  tt.ok(verdicts[NatAction.FORWARD]! > cases / 5 && verdicts[NatAction.DROP]! > 0 && verdicts[NatAction.REJECT]! > 0, 'every verdict kind is exercised')
  tt.ok(deltas > 100 && fulls > 10, `${deltas} delta and ${fulls} full images installed`)
})

t.test('a delta applies only to the generation it was made from', async tt => {
  const a = compileNat(cluster([svc('web', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080)] })]), CONFIG)
  const b = updateNat(a, [svc('db', { clusterIPs: ['10.96.0.11'], ports: [port('', 5432, 5432)] })])
  const c = updateNat(b, [], [{ namespace: 'default', name: 'db' }])
  const eng = new NatEngine(a, { seed: 1 })
  const skip = natImage(c, b)
  tt.equal(skip.kind, ImageKind.DELTA)
  tt.throws(() => eng.install(skip), { code: 'ERR_NAT_IMAGE', message: /delta from generation 2, but generation 1 is installed/ })
  tt.equal(eng.generation, 1, 'nothing changed')
  eng.install(natImage(b, a), b)
  eng.install(skip, c)
  tt.equal(eng.generation, 3)
})

t.test('an image crosses threads as transferred buffers', async tt => {
  const web = svc('web', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080), ep('10.100.1.3', 8080)] })
  const a = compileNat(cluster([web]), CONFIG)
  const img = natImage(a)
  const list = natImageTransfer(img)
  tt.ok(list.length >= 8, `${list.length} buffers`)
  const moved = structuredClone(img, { transfer: list })
  tt.equal(img.records.byteLength, 0, 'the sender no longer holds the records')
  const eng = new NatEngine(compileNat(cluster([]), CONFIG), { seed: 1 })
  eng.install(moved)
  tt.equal(run(eng, tcp4('10.100.1.50', '10.96.0.10', 40000, 80, SYN)), NatAction.FORWARD)
  tt.throws(() => eng.table, /without its table/, 'no NatTable on the packet side')
})

t.test('stale flows are flushed in bounded slices', async tt => {
  const eps = [ep('10.100.1.2', 8080), ep('10.100.1.3', 8080)]
  const web = svc('web', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: eps })
  const a = compileNat(cluster([web]), CONFIG)
  const eng = new NatEngine(a, { seed: 5, conntrackMax: 1 << 16, flushBudget: 1000 })
  for (let i = 0; i < 4000; i++) run(eng, tcp4(`10.100.${2 + (i >> 8)}.${i & 255}`, '10.96.0.10', 40000, 80, SYN))
  const toGone = eng.conntrackEntries(NOW).filter(e => e.reply.src === '10.100.1.3').length
  tt.ok(toGone > 1000, `${toGone} flows to the endpoint that goes`)
  const b = updateNat(a, [{ ...web, endpoints: [eps[0]!] }])
  const first = eng.install(natImage(b, a), b)
  tt.ok(first.flushed < toGone, `first slice flushed ${first.flushed}`)
  tt.ok(eng.flushPending)
  let flushed = first.flushed
  let resets = first.resets
  let slices = 1
  while (eng.flushPending) {
    const r = eng.step(1000)
    tt.ok(r.flushed <= 1000)
    flushed += r.flushed
    resets += r.resets
    slices++
  }
  tt.equal(flushed, toGone, 'every flow to the removed endpoint, once')
  tt.equal(resets, toGone, 'a reset for each (SYN_SENT)')
  tt.ok(slices > 10, `${slices} slices`)
  tt.equal(eng.conntrackEntries(NOW).filter(e => e.reply.src === '10.100.1.3').length, 0)
  tt.equal(eng.counters[NatStat.STALE_FLUSHED], toGone)
})

t.test('a change to a service with no connections walks no conntrack slot', async tt => {
  const eps = [ep('10.100.1.2', 8080), ep('10.100.1.3', 8080)]
  const web = svc('web', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: eps })
  const idle = svc('idle', { clusterIPs: ['10.96.0.11'], ports: [port('', 80, 8080)], endpoints: eps })
  const a = compileNat(cluster([web, idle]), CONFIG)
  const eng = new NatEngine(a, { seed: 5, conntrackMax: 1 << 16, flushBudget: 1000 })
  for (let i = 0; i < 3000; i++) run(eng, tcp4(`10.100.${2 + (i >> 8)}.${i & 255}`, '10.96.0.10', 40000, 80, SYN))
  const before = eng.ctCount()
  // idle loses an endpoint: its service port has no entries, so the flush has only the affinity table to look at
  const b = updateNat(a, [{ ...idle, endpoints: [eps[0]!] }])
  eng.install(natImage(b, a), b)
  let slices = 0
  while (eng.flushPending) {
    eng.step(1000)
    slices++
  }
  const aff = eng.v4.aff.map.cap + eng.v6.aff.map.cap
  tt.ok(
    slices <= Math.ceil(aff / 1000),
    `done in ${slices} slices of 1000: the ${aff} affinity slots, none of the ${eng.v4.ct.capacity + eng.v6.ct.capacity} conntrack slots`,
  )
  tt.equal(eng.ctCount(), before, 'no flow touched')
  // web loses one: its flows are walked and flushed as before
  const c = updateNat(b, [{ ...web, endpoints: [eps[0]!] }])
  eng.install(natImage(c, b), c)
  while (eng.flushPending) eng.step(1000)
  tt.equal(eng.conntrackEntries(NOW).filter(e => e.reply.src === '10.100.1.3').length, 0, "web's flows to the removed endpoint are gone")
  tt.ok(eng.ctCount() > 0 && eng.ctCount() < before)
})

t.test('an endpoint that comes back before the flush reaches its flows keeps them', async tt => {
  const eps = [ep('10.100.1.2', 8080), ep('10.100.1.3', 8080)]
  const web = svc('web', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: eps })
  const a = compileNat(cluster([web]), CONFIG)
  const eng = new NatEngine(a, { seed: 5, flushBudget: 1 })
  for (let i = 0; i < 50; i++) run(eng, tcp4(`10.100.2.${i}`, '10.96.0.10', 40000, 80, SYN))
  const before = eng.ctCount()
  const b = updateNat(a, [{ ...web, endpoints: [eps[0]!] }])
  eng.install(natImage(b, a), b)
  const c = updateNat(b, [web])
  eng.install(natImage(c, b), c)
  while (eng.flushPending) eng.step(64)
  tt.ok(eng.ctCount() >= before - 2, `${eng.ctCount()} of ${before} kept`)
})

t.test('conntrack chunks list every entry exactly once', async tt => {
  const web = svc('web', {
    clusterIPs: ['10.96.0.10'],
    ports: [port('http', 80, 8080)],
    endpoints: [ep('10.100.1.2', [{ name: 'http', protocol: 'TCP', port: 8080 }])],
  })
  const table = compileNat(cluster([web]), CONFIG)
  const eng = new NatEngine(table, { seed: 9, conntrackMax: 1 << 18, conntrackMax6: 1024 })
  const N = 200000
  const ct = eng.v4.ct
  for (let i = 0; i < N; i++) {
    // Client 10.0.x.y (one per entry) -> 10.96.0.10:80, reply from 10.100.1.2:8080.
    const client = (0x0a000000 + i) >>> 0
    const sport = 1024 + (i % 60000)
    ct.tk.set([client, 0x0a60000a, ((sport << 16) | 80) >>> 0, 0x0a640102, client, ((8080 << 16) | sport) >>> 0])
    if (ct.create(6, 0, 0, NOW) < 0) throw new Error(`insert ${i} failed`)
  }
  tt.equal(eng.ctCount(), N)
  const seen = new Set<string>()
  let dup = 0
  let calls = 0
  let over = 0
  for (let c = 0; c >= 0; ) {
    const { bytes, next } = eng.ctChunk(c, 4096, NOW)
    const es = decodeCtChunk(bytes, table)
    if (es.length > 4096) over++
    for (const e of es) {
      const k = `${e.orig.src}:${e.orig.sport}`
      if (seen.has(k)) dup++
      seen.add(k)
    }
    tt.ok(next === -1 || next > c, 'the cursor moves on')
    c = next
    calls++
  }
  tt.equal(seen.size, N, 'every entry')
  // The same listing into one buffer the control side keeps handing back.
  const back = new ArrayBuffer(ctChunkBytes(4096))
  let again = 0
  for (let c = 0; c >= 0; ) {
    const r = eng.ctChunk(c, 4096, NOW, back)
    tt.equal(r.bytes, back)
    again += decodeCtChunk(r.bytes, table).length
    c = r.next
  }
  tt.equal(again, N, 'every entry, no allocation per chunk')
  tt.equal(dup, 0, 'none twice')
  tt.equal(over, 0, 'no chunk above its max')
  tt.ok(calls >= N / 4096, `${calls} calls`)
  const one = decodeCtChunk(eng.ctChunk(0, 1, NOW).bytes, table)[0]!
  tt.equal(one.service, 'default/web:http', 'service names resolved on the control side')

  // Flush by a filter resolved on the control side, in chunks.
  const f = resolveCtFilter({ service: 'default/web' }, table)
  let flushed = 0
  for (let c = 0; c >= 0; ) {
    const r = eng.flushChunk(f, c, 4096)
    tt.ok(r.flushed <= 4096)
    flushed += r.flushed
    c = r.next
  }
  tt.equal(flushed, N)
  tt.equal(eng.ctCount(), 0)
  tt.equal(resolveCtFilter({ service: 'default/nope' }, table).none, true, 'unknown service: matches nothing')
})

t.test('restore skips corrupt entries and says why', async tt => {
  const web = svc('web', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080)] })
  const table = compileNat(cluster([web]), CONFIG)
  const eng = new NatEngine(table, { seed: 3 })
  for (let i = 0; i < 6; i++) run(eng, tcp4(`10.100.2.${i + 1}`, '10.96.0.10', 40000, 80, SYN))
  const snap = eng.snapshot()
  const hl = snap.readUInt32LE(4)
  const at = (i: number): number => 8 + hl + i * 80
  snap[at(0) + 2] = 42 // TCP state
  snap[at(1) + 1] = 99 // protocol
  snap[at(2) + 3] = 0x80 // flags
  snap.writeDoubleLE(-1, at(3) + 24) // packet counter
  const fresh = new NatEngine(table, { seed: 4 })
  tt.equal(fresh.restore(snap, NOW + 1), 2, 'the two sound entries')
  const r = fresh.lastRestore
  tt.equal(r.corrupt, 4)
  tt.match(r.problems.join('\n'), /state 42 is out of range/)
  tt.match(r.problems.join('\n'), /protocol 99 is not tracked/)
  tt.match(r.problems.join('\n'), /flags 0x80 are not valid/)
  tt.match(r.problems.join('\n'), /counter -1 is not a count/)

  const cut = snap.subarray(0, at(5) + 30)
  const again = new NatEngine(table, { seed: 4 })
  tt.equal(again.restore(cut, NOW + 1), 1)
  tt.match(again.lastRestore.problems.join('\n'), /truncated/)

  const bad = Buffer.from(snap)
  bad.write('{', 8, 'utf8')
  bad.write('x', 9, 'utf8')
  tt.throws(() => fresh.restore(bad, NOW), { name: 'RangeError', message: 'NAT snapshot header is not valid JSON' })
  tt.throws(() => fresh.restore(snap.subarray(0, 10), NOW), { name: 'RangeError', message: /truncated/ })
})

t.test('verdict and counter names line up with their definitions', async tt => {
  tt.same(NAT_ACTION_NAMES, [...CAPTURE_VERDICTS], 'capture verdicts are the NAT actions')
  tt.equal(NAT_STAT_NAMES.length, Object.keys(VerdictStat).length)
  for (const [k, v] of Object.entries(VerdictStat)) tt.equal(NAT_STAT_NAMES[v], k.toLowerCase())
  tt.equal(NAT_STAT_NAMES[NatStat.DROP_NO_LOCAL_ENDPOINTS], 'drop_no_local_endpoints')
})

t.test('version 1 snapshot files still restore', async tt => {
  const web = svc('web', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080)] })
  const table = compileNat(cluster([web]), CONFIG)
  const eng = new NatEngine(table, { seed: 3 })
  for (let i = 0; i < 3; i++) run(eng, tcp4(`10.100.2.${i + 1}`, '10.96.0.10', 40000, 80, SYN))
  // The layout engine.snapshot() wrote before chunks: JSON header, then a Conntrack.snapshot() per family.
  const header = Buffer.from(JSON.stringify({ version: 1, keys: table.svcPorts.map(sp => sp?.key ?? null) }))
  const s4 = eng.v4.ct.snapshot()
  const s6 = eng.v6.ct.snapshot()
  const v1 = Buffer.alloc(8 + header.length + 4 + s4.length + 4 + s6.length)
  let o = v1.write('TNSN', 0, 'latin1')
  o = v1.writeUInt32LE(header.length, o)
  o += header.copy(v1, o)
  o = v1.writeUInt32LE(s4.length, o)
  o += s4.copy(v1, o)
  o = v1.writeUInt32LE(s6.length, o)
  s6.copy(v1, o)
  const fresh = new NatEngine(table, { seed: 4 })
  tt.equal(fresh.restore(v1, NOW + 1), 3)
  tt.equal(fresh.conntrackEntries(NOW + 1).filter(e => e.service === 'default/web').length, 3)
})

t.test('a malformed image is refused with a reason, changing nothing', async tt => {
  const web = svc('web', { clusterIPs: ['10.96.0.10'], ports: [port('', 80, 8080)], endpoints: [ep('10.100.1.2', 8080)] })
  const a = compileNat(cluster([web]), CONFIG)
  const b = updateNat(a, [{ ...web, endpoints: [ep('10.100.1.3', 8080)] }])
  const eng = new NatEngine(a, { seed: 1 })
  const d = natImage(b, a)
  d.records[4 * 0 + 6] = 1000 // cluster set count far beyond the data
  tt.throws(() => eng.install(d), { code: 'ERR_NAT_IMAGE', message: /endpoint span out of range/ })
  tt.throws(() => eng.install({ ...natImage(a), head: new Uint32Array(3) }), { code: 'ERR_NAT_IMAGE', message: /head has 3 words/ })
  tt.equal(run(eng, tcp4('10.100.1.50', '10.96.0.10', 40000, 80, SYN)), NatAction.FORWARD, 'still serving generation 1')
})

t.test('with traffic between updates, no flow outlives its endpoint once the flush is done (seeded)', async tt => {
  const seed = Number(process.env.TUNDRA_SEED ?? (Math.random() * 0x100000000) >>> 0)
  tt.comment(`seed ${seed} (replay: TUNDRA_SEED=${seed})`)
  const g = new Gen(prng(seed ^ 0x5eed))
  let checked = 0
  let bad = ''
  for (let round = 0; round < 40 && bad === ''; round++) {
    let services = NAMES.slice(0, 4 + g.int(8)).map(n => g.service(n))
    let table = compileNat(cluster(services), CONFIG)
    const eng = new NatEngine(table, { seed: g.int(1 << 30), flushBudget: 1 + g.int(32) })
    for (let step = 0; step < 10; step++) {
      for (let k = 0; k < 40; k++) run(eng, g.packet(table))
      const prev = table
      const name = g.pick(services).name
      services = services.map(s => (s.name === name ? g.change(s) : s))
      table = g.chance(0.15)
        ? compileNat(cluster(services), CONFIG, prev)
        : updateNat(
            prev,
            services.filter(s => s.name === name),
          )
      eng.install(natImage(table, prev), table)
      if (g.chance(0.5)) eng.step(1 + g.int(8))
    }
    while (eng.flushPending) eng.step(256)
    for (const e of eng.conntrackEntries(NOW)) {
      checked++
      const sp = table.svcPorts[e.svcPortId]
      const ok = sp !== undefined && parseIpWords(e.reply.src, sp.family, W, 0) !== undefined && findEndpoint(sp.serving, W, 0, e.reply.sport, -1) >= 0
      if (!ok) {
        bad = `round ${round}: ${e.protocol} ${e.orig.src}:${e.orig.sport} -> ${e.reply.src}:${e.reply.sport} (id ${e.svcPortId}) survived`
        break
      }
    }
  }
  tt.equal(bad, '', 'every remaining flow goes to a serving endpoint of its service port')
  tt.ok(checked > 500, `${checked} flows checked`)
})

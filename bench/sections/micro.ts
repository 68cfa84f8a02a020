// Section 1, in-process micro benchmarks: packet validation, checksums, NAT per packet at 1 / 1 000 / 20 000
// services, conntrack at 10 000 and 1 000 000 entries, DNS answers. Nothing here touches the network.
import dnsPacket from 'dns-packet'
import { compileNat } from '../../src/nat/compile'
import { updateNat } from '../../src/nat/update'
import { NatEngine } from '../../src/nat/engine'
import { NatAction } from '../../src/nat/verdict'
import { sharedConntrack } from '../../src/nat/conntrack'
import { natImage } from '../../src/nat/image'
import { connectOptions } from '../../src/nat/failover'
import { SCHED_NAMES } from '../../src/nat/sched'
import { ctChunkBytes } from '../../src/nat/ctview'
import { Conntrack } from '../../src/nat/conntrack'
import { DnsServer } from '../../src/dns/server'
import { PacketInfo, parsePacket } from '../../src/wire/packet'
import { checksum } from '../../src/wire/checksum'
import { DST, natIpv4 } from '../../src/wire/l4rewrite'
import { parseIpv4 } from '../../src/wire/ipv4'
import { benchmarkJs, type MicroCase, type MicroResult, type MicroRunner } from '../lib/micro'
import { progress } from '../lib/progress'
import { si } from '../lib/stats'
import { NAT_CONFIG, SERVICE_PORT, TCP_ACK, TCP_SYN, serviceName, serviceNamespace, synthCluster, tcp4, udp4, vipOf, withMovedEndpoint } from '../lib/synth'
import { median } from '../lib/stats'

export interface MicroSection {
  readonly runner: string
  readonly results: MicroResult[]
  /** one-shot timings that do not fit a repeatable op (filling and reaping a table) */
  readonly oneShot: { name: string; entries: number; nsPerEntry: number }[]
}

const ip = (s: string): number => {
  const a = parseIpv4(s)
  if (a === undefined) throw new Error(`bad address ${s}`)
  return a >>> 0
}

const CLIENT = ip('10.255.0.2') // a pod of the cluster CIDR: no masquerade
const NOW = 1000

export function runMicro(quick: boolean, runner: MicroRunner = benchmarkJs): MicroSection {
  // benchmark.js samples for at least maxTime s and minSamples cycles (~50 ms each) per case
  const opts = { maxTime: quick ? 0.1 : 1, minSamples: quick ? 2 : 20 }
  const results: MicroResult[] = []
  const oneShot: MicroSection['oneShot'] = []
  const run = (c: MicroCase): void => {
    const r = runner.run(c, opts)
    results.push(r)
    progress('micro', `${c.group}: ${c.name}: ${r.nsPerOp.toFixed(1)} ns/op, ${si(r.opsPerSec)} ops/s ±${r.rmePct.toFixed(1)}%`)
  }

  // ---- wire ----
  const info = new PacketInfo()
  const syn = tcp4(CLIENT, ip(vipOf(0)), 40000, SERVICE_PORT, TCP_SYN)
  const big = tcp4(CLIENT, ip(vipOf(0)), 40000, SERVICE_PORT, TCP_ACK, 1460)
  const small = udp4(CLIENT, ip(vipOf(0)), 40000, 53, 36)
  let sink = 0
  /** New connections to service `idx`, each from its own client port and removed again (so the table stays small). */
  const newConnections = (eng: NatEngine, work: Uint8Array, idx: number, group: string, name: string): void => {
    const ct = eng.v4.ct
    const tpl = tcp4(CLIENT, ip(vipOf(idx)), 1, SERVICE_PORT, TCP_SYN)
    let port = 0
    run({
      group,
      name,
      opsPerCall: 16,
      fn: () => {
        for (let i = 0; i < 16; i++) {
          work.set(tpl)
          port = (port + 1) & 0x7fff
          work[20] = 0x80 | (port >>> 8)
          work[21] = port & 0xff
          parsePacket(work, 0, 40, info)
          if (eng.process(work, 0, 40, info, false, NOW) !== NatAction.FORWARD) throw new Error('new connection not forwarded')
          ct.delete(ct.lookup(6) >>> 1)
        }
      },
    })
  }
  /** One established flow to service 0 (SYN, SYN-ACK from the chosen endpoint), then its ACKs measured in `work`. */
  const established = (eng: NatEngine, work: Uint8Array, group: string, name: string): void => {
    const vip0 = ip(vipOf(0))
    const s = tcp4(CLIENT, vip0, 33000, SERVICE_PORT, TCP_SYN, 0, 1000)
    work.set(s)
    parsePacket(work, 0, s.length, info)
    if (eng.process(work, 0, s.length, info, false, NOW) !== NatAction.FORWARD) throw new Error('SYN was not forwarded')
    const epAddr = ((work[16]! << 24) | (work[17]! << 16) | (work[18]! << 8) | work[19]!) >>> 0
    const sa = tcp4(epAddr, CLIENT, 8080, 33000, TCP_SYN | TCP_ACK, 0, 5000, 1001)
    work.set(sa)
    parsePacket(work, 0, sa.length, info)
    if (eng.process(work, 0, sa.length, info, false, NOW) !== NatAction.FORWARD) throw new Error('SYN-ACK was not forwarded')
    const ackTpl = tcp4(CLIENT, vip0, 33000, SERVICE_PORT, TCP_ACK, 0, 1001, 5001)
    const len = ackTpl.length
    run({
      group,
      name,
      opsPerCall: 32,
      fn: () => {
        for (let i = 0; i < 32; i++) {
          work.set(ackTpl)
          parsePacket(work, 0, len, info)
          sink += eng.process(work, 0, len, info, false, NOW)
        }
      },
    })
  }
  const B = 64
  run({
    group: 'wire',
    name: 'parsePacket, TCP SYN 40 B',
    opsPerCall: B,
    fn: () => {
      for (let i = 0; i < B; i++) sink += parsePacket(syn, 0, syn.length, info)
    },
  })
  run({
    group: 'wire',
    name: 'parsePacket, TCP 1500 B',
    opsPerCall: B,
    fn: () => {
      for (let i = 0; i < B; i++) sink += parsePacket(big, 0, big.length, info)
    },
  })
  run({
    group: 'wire',
    name: 'parsePacket, UDP 64 B',
    opsPerCall: B,
    fn: () => {
      for (let i = 0; i < B; i++) sink += parsePacket(small, 0, small.length, info)
    },
  })
  run({
    group: 'wire',
    name: 'full checksum, 1480 B TCP segment',
    opsPerCall: 8,
    fn: () => {
      for (let i = 0; i < 8; i++) sink += checksum(big, 20, 1480, i)
    },
  })
  run({
    group: 'wire',
    name: 'full checksum, 20 B IPv4 header',
    opsPerCall: B,
    fn: () => {
      for (let i = 0; i < B; i++) sink += checksum(syn, 0, 20, i)
    },
  })
  const rw = big.slice()
  const addrs = [ip('10.128.0.1') | 0, ip('10.128.0.2') | 0]
  run({
    group: 'wire',
    name: 'incremental rewrite (dst address + port, IPv4 + TCP checksums)',
    opsPerCall: B,
    fn: () => {
      for (let i = 0; i < B; i++) natIpv4(rw, 0, 20, 6, DST, addrs[i & 1]!, 8080 + (i & 1), false)
    },
  })

  // ---- NAT per packet ----
  // 'shared': conntrack in a SharedArrayBuffer as packet threads have it (tun.packetThreads > 1): the lock per packet
  for (const n of [1, 1000, 20000, 'shared'] as const) {
    const shared = n === 'shared'
    const table = compileNat(synthCluster(shared ? 1000 : n, 10), NAT_CONFIG)
    const eng = new NatEngine(table, {
      seed: 1,
      conntrackMax: 1 << 16,
      ...(shared ? { shared: { v4: sharedConntrack(4, 1 << 16, 1), v6: sharedConntrack(6, 1024, 2), owner: 1 } } : {}),
    })
    const work = new Uint8Array(64)
    established(
      eng,
      work,
      shared ? 'nat 1000 services, shared conntrack (packet threads)' : `nat ${n} services`,
      'established flow: parse + conntrack + rewrite',
    )
    if (shared) continue
    for (const [label, idx] of [
      ['first', 0],
      ['last', n - 1],
    ] as const) {
      if (n === 1 && label === 'last') continue
      newConnections(eng, work, idx, `nat ${n} services`, `new connection to the ${label} service: parse + lookup + DNAT + conntrack insert (and its removal)`)
    }
  }

  // ---- per-backend golden signals: what they add to an established packet (issue 16) ----
  for (const withSignals of [false, true]) {
    const table = compileNat(synthCluster(1000, 10), NAT_CONFIG)
    const connect = connectOptions({ signals: { enabled: withSignals } })
    const eng = new NatEngine(table, { seed: 1, conntrackMax: 1 << 16, ...(withSignals ? { connect } : {}) })
    established(eng, new Uint8Array(64), 'nat signals', `established flow, 1000 services, golden signals ${withSignals ? 'on' : 'off'}`)
  }

  // ---- endpoint schedulers (src/nat/sched.ts): a new connection's first packet per scheduler ----
  // 1 000 services x 10 endpoints (--quick: 100); the connection is removed again, so lc/wlc also pay their
  // count on close. Each row: parse + frontend + schedule + DNAT + conntrack insert + delete.
  {
    const n = quick ? 100 : 1000
    const work = new Uint8Array(64)
    for (const sched of SCHED_NAMES) {
      const table = compileNat(synthCluster(n, 10), { ...NAT_CONFIG, scheduler: sched })
      const eng = new NatEngine(table, { seed: 1, conntrackMax: 1 << 16 })
      newConnections(
        eng,
        work,
        n >> 1,
        `nat scheduler, ${n} services × 10`,
        `${sched}: new connection, first packet (schedule + DNAT + conntrack insert, and its removal)`,
      )
    }
  }

  // ---- NAT images: what crosses from the control thread, and what installing it costs the packet thread ----
  {
    const n = 20000
    const cluster = synthCluster(n, 10)
    const t0 = compileNat(cluster, NAT_CONFIG)
    run({
      group: `nat image ${n} services × 10`,
      name: 'natImage full (control side)',
      opsPerCall: 1,
      fn: () => {
        sink += natImage(t0).records.length
      },
    })
    const full = natImage(t0)
    const eng = new NatEngine(t0, { seed: 1, conntrackMax: quick ? 1 << 18 : 1 << 20 })
    run({
      group: `nat image ${n} services × 10`,
      name: 'install full image (packet side)',
      opsPerCall: 1,
      fn: () => {
        sink += eng.install(full).flushed
      },
    })
    // A chain of one-endpoint moves of the middle service, each as a delta from the one before.
    const base = cluster.services[n >> 1]!
    const K = 200
    const tables = [t0]
    for (let g = 1; g <= K; g++) tables.push(updateNat(tables[g - 1]!, [withMovedEndpoint(base, g)]))
    run({
      group: `nat image ${n} services × 10`,
      name: 'natImage delta, 1-service change (control side)',
      opsPerCall: 1,
      fn: () => {
        sink += natImage(tables[2]!, tables[1]!).records.length
      },
    })
    const deltas = tables.slice(1).map((tb, g) => natImage(tb, tables[g]!))
    eng.install(full)
    const ins: number[] = []
    for (const d of deltas) {
      const a = process.hrtime.bigint()
      eng.install(d)
      ins.push(Number(process.hrtime.bigint() - a))
    }
    const insNs = median(ins.slice(20))
    oneShot.push({ name: `nat image ${n} services: install delta, 1-service change (median of ${K - 20})`, entries: 1, nsPerEntry: insNs })
    progress('micro', `nat image ${n} services: install delta ${(insNs / 1000).toFixed(1)} µs (median of ${K - 20})`)

    // Conntrack for the control thread: a chunk of 4096 entries out of a big table, and stale-flush slices.
    const entries = quick ? 200_000 : 1_000_000
    const ct = eng.v4.ct
    const last = tables[K]!.svcPorts[0]!
    for (let k = 0; k < entries; k++) {
      const src = (0x0a000000 + k) >>> 0
      const sport = 1024 + (k % 60000)
      const epIp = last.serving.data[last.serving.off + (k % last.serving.count) * 2]!
      ct.tk.set([src, ip(vipOf(0)), ((sport << 16) | SERVICE_PORT) >>> 0, epIp, src, ((8080 << 16) | sport) >>> 0])
      ct.create(6, 0, k % last.serving.count, NOW)
    }
    let cursor = 0
    run({
      group: `nat conntrack ${entries} entries`,
      name: 'ctChunk of 4096 entries (packet side)',
      opsPerCall: 1,
      fn: () => {
        const r = eng.ctChunk(cursor, 4096, NOW)
        cursor = r.next < 0 ? 0 : r.next
        sink += r.bytes.byteLength
      },
    })
    const back = new ArrayBuffer(ctChunkBytes(4096))
    run({
      group: `nat conntrack ${entries} entries`,
      name: 'ctChunk of 4096 entries into a returned buffer (packet side)',
      opsPerCall: 1,
      fn: () => {
        const r = eng.ctChunk(cursor, 4096, NOW, back)
        cursor = r.next < 0 ? 0 : r.next
        sink += r.bytes.byteLength
      },
    })
    // Service 0 loses one of its endpoints: 1/10 of the entries are stale, flushed 8192 slots per slice.
    const s0 = cluster.services.find(sv => sv.name === last.name && sv.namespace === last.namespace)!
    const gone = updateNat(tables[K]!, [{ ...s0, endpoints: s0.endpoints.slice(1) }])
    eng.install(natImage(gone, tables[K]!))
    const slices: number[] = []
    let flushed = 0
    while (eng.flushPending) {
      const a = process.hrtime.bigint()
      flushed += eng.step(8192).flushed
      slices.push(Number(process.hrtime.bigint() - a))
      if (eng.pendingResets > 60000) eng.writeResets(new Uint8Array(1 << 22), 0, new Uint32Array(65536), new Uint32Array(65536), 65536)
    }
    const worst = Math.max(...slices)
    oneShot.push({ name: `nat stale flush over ${entries} entries: slice of 8192 slots, median`, entries: 8192, nsPerEntry: median(slices) / 8192 })
    oneShot.push({ name: `nat stale flush over ${entries} entries: slice of 8192 slots, worst`, entries: 8192, nsPerEntry: worst / 8192 })
    progress(
      'micro',
      `nat stale flush over ${entries} entries: ${slices.length} slices of 8192, median ${(median(slices) / 1e6).toFixed(3)} ms, worst ${(worst / 1e6).toFixed(3)} ms, ${flushed} flushed`,
    )
  }

  // ---- conntrack ----
  for (const n of quick ? [10_000] : [10_000, 1_000_000]) {
    const ct = new Conntrack({ family: 4, max: n, seed: 7 })
    const vip = ip(vipOf(0))
    const fillKey = (k: number, tk: Uint32Array): void => {
      const src = (0x0a640000 + k) >>> 0 // 10.100.0.0 + k
      const sport = 1024 + (k % 60000)
      tk[0] = src
      tk[1] = vip
      tk[2] = ((sport << 16) | SERVICE_PORT) >>> 0
      tk[3] = (0x0a800001 + (k % 1000)) >>> 0
      tk[4] = src
      tk[5] = ((8080 << 16) | sport) >>> 0
    }
    const entries = new Int32Array(n)
    // Fill and reap once unmeasured (JIT warm-up and page faults of the fresh arrays), then fill measured.
    for (let k = 0; k < n; k++) {
      fillKey(k, ct.tk)
      ct.create(6, 0, 0, NOW)
    }
    while (ct.count > 0) ct.reap(NOW + 100_000, 4096)
    const t0 = process.hrtime.bigint()
    for (let k = 0; k < n; k++) {
      fillKey(k, ct.tk)
      entries[k] = ct.create(6, 0, 0, NOW)
    }
    const fillNs = Number(process.hrtime.bigint() - t0) / n
    oneShot.push({ name: `conntrack fill 0 → ${n}: insert`, entries: n, nsPerEntry: fillNs })
    progress('micro', `conntrack ${n}: fill ${fillNs.toFixed(1)} ns/insert (one shot)`)
    // lookups of live entries in a scattered order
    const keys = new Uint32Array(4096 * 3)
    for (let i = 0; i < 4096; i++) {
      const k = Math.floor((((i * 2654435761) >>> 0) / 4294967296) * n)
      fillKey(k, ct.tk)
      keys[i * 3] = ct.tk[0]!
      keys[i * 3 + 1] = ct.tk[1]!
      keys[i * 3 + 2] = ct.tk[2]!
    }
    let li = 0
    run({
      group: `conntrack ${si(n)} entries`,
      name: 'lookup (hit, original direction)',
      opsPerCall: 64,
      fn: () => {
        const key = ct.key
        for (let i = 0; i < 64; i++) {
          const o = (li = (li + 1) & 4095) * 3
          key[0] = keys[o]!
          key[1] = keys[o + 1]!
          key[2] = keys[o + 2]!
          if (ct.lookup(6) < 0) throw new Error('lookup missed')
        }
      },
    })
    run({
      group: `conntrack ${si(n)} entries`,
      name: 'lookup (miss)',
      opsPerCall: 64,
      fn: () => {
        const key = ct.key
        for (let i = 0; i < 64; i++) {
          key[0] = 0xc0a80000 + (li = (li + 1) & 0xffff)
          key[1] = 1
          key[2] = 2
          sink += ct.lookup(6)
        }
      },
    })
    // steady state at n entries: delete the oldest, insert a new one
    let oldest = 0
    let next = n
    run({
      group: `conntrack ${si(n)} entries`,
      name: 'insert + delete (table kept full)',
      opsPerCall: 16,
      fn: () => {
        for (let i = 0; i < 16; i++) {
          ct.delete(entries[oldest]!)
          fillKey(next++, ct.tk)
          entries[oldest] = ct.create(6, 0, 0, NOW)
          oldest = oldest + 1 === n ? 0 : oldest + 1
        }
      },
    })
    run({
      group: `conntrack ${si(n)} entries`,
      name: 'reap scan, nothing expired (per entry visited)',
      opsPerCall: 1024,
      fn: () => {
        sink += ct.reap(NOW, 1024)
      },
    })
    // reap of expired entries: everything made at NOW expires after the generic timeout
    const later = NOW + 100_000
    const r0 = process.hrtime.bigint()
    const had = ct.count
    while (ct.count > 0) ct.reap(later, 4096)
    const reapNs = Number(process.hrtime.bigint() - r0) / had
    oneShot.push({ name: `conntrack reap of ${n} expired entries`, entries: had, nsPerEntry: reapNs })
    progress('micro', `conntrack ${n}: reap ${reapNs.toFixed(1)} ns/expired entry (one shot)`)
  }

  // ---- DNS ----
  // (building the records of 10 000 services takes seconds: --quick answers from 1 000)
  const dnsServices = quick ? 1000 : 10_000
  const dnsGroup = `dns (${dnsServices === 1000 ? '1 000' : '10 000'} services)`
  const asked = Math.floor(dnsServices * 0.4321)
  const dns = new DnsServer({ upstream: ['127.0.0.1:9'] })
  try {
    dns.setCluster(synthCluster(dnsServices, 2))
    const out = new Uint8Array(2048)
    const q = (name: string): Uint8Array =>
      dnsPacket.encode({ type: 'query', id: 0x1234, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A', class: 'IN' }] })
    const hit = q(`${serviceName(asked)}.${serviceNamespace(asked)}.svc.cluster.local`)
    const miss = q(`nothing.${serviceNamespace(1)}.svc.cluster.local`)
    const probe = dns.answerInPlace(hit, 0, hit.length, out, 0, out.length, 0)
    if (probe <= 0) throw new Error(`answerInPlace gave ${probe} for a service name`)
    run({
      group: dnsGroup,
      name: 'answerInPlace: A of a service (decode + answer + encode)',
      opsPerCall: 16,
      fn: () => {
        for (let i = 0; i < 16; i++) sink += dns.answerInPlace(hit, 0, hit.length, out, 0, out.length, 0)
      },
    })
    run({
      group: dnsGroup,
      name: 'answerInPlace: NXDOMAIN in the cluster zone',
      opsPerCall: 16,
      fn: () => {
        for (let i = 0; i < 16; i++) sink += dns.answerInPlace(miss, 0, miss.length, out, 0, out.length, 0)
      },
    })
  } finally {
    void dns.close()
  }
  if (sink === 0.5) progress('micro', 'unreachable') // keeps `sink` live so nothing is optimised away
  return { runner: runner.name, results, oneShot }
}

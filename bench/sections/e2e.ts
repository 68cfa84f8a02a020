// Section 4, end to end in network namespaces: the same lab (client pod -> service VIP -> 2 backend pods) once per
// contender — tundra, kernel iptables (nf_tables backend and legacy), kernel nftables — brought up together and all up
// at once, and every measurement run for each contender back to back (order rotated per round), medians over rounds.
//
//   tcp1 / tcp4   iperf2, 1 and 4 streams, to `solo` (one endpoint): Gbit/s, and dataplane CPU per Gbit/s
//   udp           iperf2, 64-byte datagrams as fast as one sender goes, to `solo`: received pps, loss, CPU per Mpps
//   lat           sockperf ping-pong UDP and TCP to `web` (two endpoints): p50/p99 µs, unpinned and all on CPU 0
//   conn          new HTTP/1.0 connections/s to nginx behind `web` (bench/tools/connect.ts, no keep-alive)
//   direct        sockperf UDP to backend-1's pod IP: the routing-only baseline of the same lab
//
// Dataplane CPU: for kernel paths, softirq time (where the kernel forwards and NATs); for a TUN forwarder (tundra's
// agent, cref) all softirq time plus the forwarder's own utime+stime outside softirq: the kernel charges a softirq
// tick to the running task as well, and much softirq runs in the forwarder's write() (lib/softirq.ts; the share is
// sampled with perf, and without perf the whole utime+stime is added: an over-count, flagged in the JSON). From /proc,
// so other load on the machine shows up as noise.
import { join } from 'node:path'
import { cpus } from 'node:os'
import type { ChildProcess } from 'node:child_process'
import type { Topology } from '../../src/netns/netns'
import { haveCommand, run } from '../../src/netns/netns'
import type { LabState } from '../../src/lab/index'
import type { Contender } from '../lib/args'
import { benchLabDown, benchLabUp, dropTopology, labCluster, newTopology } from '../lib/labs'
import { errorSummary, progress } from '../lib/progress'
import { median } from '../lib/stats'
import { forwarderCores, sampleSoftirq } from '../lib/softirq'
import {
  crefBinary,
  crefRules,
  nsRun,
  parseConnect,
  parseIperfTcpCsv,
  parseIperfUdpServerCsv,
  parseSnmpUdp,
  parseSockperf,
  readCpuTicks,
  readPidTicks,
  sockperfClient,
  sockperfNoSleep,
  USER_HZ,
  waitListening,
  type CpuTicks,
} from '../lib/tools'
import { agentConfig, repoRoot } from '../../src/lab/up'
import { tunOverrides } from '../../src/agent/config'
import { compileLab } from '../../src/lab/compile'
import { LAB } from '../../src/lab/plan'
import { labDir } from '../../src/lab/state'
import { waitFor } from '../../src/netns/netns'

export const WEB_VIP = '10.96.200.10'
export const SOLO_VIP = '10.96.200.11'
const BACKEND1_IP = '10.100.85.11'

export const LAB_NAMES: Record<Contender, string> = {
  tundra: 'bntundra',
  'iptables-nft': 'bniptnft',
  'iptables-legacy': 'bniptleg',
  nftables: 'bnnft',
  cref: 'bncref',
}

export interface ContenderResult {
  readonly contender: Contender
  available: boolean
  error?: string
  /** metric -> one value per round */
  readonly samples: Record<string, number[]>
  readonly medians: Record<string, number>
}

export interface E2eResult {
  readonly rounds: number
  readonly seconds: number
  /** sockperf's client ran with bench/tools/sockperf-nosleep.c preloaded (skips its 2 s sleep after warm-up) */
  readonly sockperfNoSleep?: boolean
  /**
   * How a TUN forwarder's CPU was counted: 'perf' (its softirq share sampled and counted once) or why not (then its
   * whole utime+stime was added to all softirq: softirq in its context counted twice)
   */
  readonly forwarderCpu?: string
  /** tundra's packet threads and cref's TUN queues (TUNDRA_PACKET_THREADS; absent: 1) */
  readonly packetThreads?: number
  readonly contenders: ContenderResult[]
}

/**
 * Packet threads for this run: TUNDRA_PACKET_THREADS, which the lab's agents inherit, and as many queues and threads
 * for cref, so the two forwarders compare at the same thread count.
 */
function packetThreads(): number {
  return tunOverrides().packetThreads ?? 1
}

interface Env {
  readonly contender: Contender
  readonly state: LabState
  readonly client: string
  readonly b1: string
  readonly b2: string
  readonly procs: Topology
  readonly sockperf: ChildProcess[]
  readonly agentPid?: number
  /** where perf writes its sample of the forwarder (lib/softirq.ts) */
  readonly perfFile: string
  /**
   * why the forwarder's softirq share was not sampled, the first time it was not; `off`: sampling is not tried at all,
   * and why (shared by every Env of the run)
   */
  readonly cpuNote: { why?: string; readonly off?: string }
  /** LD_PRELOAD shim that skips sockperf's 2 s sleep after warm-up (undefined: plain sockperf) */
  readonly shim?: string
}

export function manifestPath(): string {
  return join(repoRoot(), 'bench', 'lab', 'e2e.yaml')
}

function podNs(state: LabState, name: string): string {
  const p = state.pods.find(x => x.name === name)
  if (!p) throw new Error(`lab ${state.name} has no pod ${name}`)
  return p.ns
}

async function setUp(c: Contender, procs: Topology, workDir: string, shim: string | undefined, cpuNote: Env['cpuNote']): Promise<Env> {
  const name = LAB_NAMES[c]
  const state = await benchLabUp({
    name,
    files: [manifestPath()],
    section: 'e2e',
    keepLogsIn: workDir,
    dataplane: c === 'tundra' ? 'tundra' : c === 'nftables' ? 'nftables' : c === 'cref' ? 'none' : 'iptables',
    ...(c === 'iptables-legacy' ? { iptablesBackend: 'legacy' as const } : c === 'iptables-nft' ? { iptablesBackend: 'nft' as const } : {}),
  })
  const client = podNs(state, 'client')
  const b1 = podNs(state, 'backend-1')
  const b2 = podNs(state, 'backend-2')
  // Short connections by the thousand: let the client reuse ports in TIME_WAIT (its own namespace only).
  await nsRun(client, ['sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=10000 65000'], 10_000)
  const sockperf: ChildProcess[] = []
  for (const b of [b1, b2]) {
    procs.spawn(b, ['iperf', '-s', '-p', '5001'])
    sockperf.push(procs.spawn(b, ['sockperf', 'sr', '-i', '0.0.0.0', '-p', '11111']))
    sockperf.push(procs.spawn(b, ['sockperf', 'sr', '-i', '0.0.0.0', '-p', '11112', '--tcp']))
  }
  for (const b of [b1, b2]) {
    await waitListening(b, 'tcp', 5001)
    await waitListening(b, 'udp', 11111)
    await waitListening(b, 'tcp', 11112)
  }
  const agent = c === 'cref' ? { pid: await startCref(state, procs) } : state.processes.find(p => p.role === 'agent')
  const env: Env = {
    contender: c,
    state,
    client,
    b1,
    b2,
    procs,
    sockperf,
    perfFile: join(workDir, `perf-${name}.data`),
    cpuNote,
    ...(agent ? { agentPid: agent.pid } : {}),
    ...(shim ? { shim } : {}),
  }
  // The service must answer before anything is measured.
  const probe = await connTest(env, 0.5)
  if (!(probe['connPerSec']! > 0)) throw new Error(`no connection through ${WEB_VIP}:80 worked`)
  return env
}

/**
 * The C reference (bench/tools/cref.c) on the node of a `dataplane none` lab: it opens the TUN tundra would open
 * (same name, vnet header, offloads), then the node is wired as the tundra agent wires it (bench/tools/cref-wire.ts
 * calls the agent's own `wire`), so the two labs differ only in the program on the TUN. Returns cref's PID.
 */
export async function startCref(state: LabState, procs: Topology): Promise<number> {
  const bin = crefBinary(repoRoot())
  if (!bin) throw new Error('no C compiler for bench/tools/cref.c (scripts/bootstrap builds it)')
  const node = state.nodes[0]!
  const rules = crefRules(labCluster(state, [manifestPath()]))
  // as many TUN queues (one thread each) as tundra's agents have packet threads in this run
  const cref = procs.spawn(node.ns, [bin, '-n', LAB.tunName, '-s', '-q', String(packetThreads()), ...rules])
  let err = ''
  cref.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d
  })
  await waitFor(
    `cref to open ${LAB.tunName}`,
    async () => {
      if (cref.exitCode !== null) throw new Error(`cref exited: ${err.trim()}`)
      return (await nsRun(node.ns, ['ip', 'link', 'show', LAB.tunName], 5000)).code === 0
    },
    10_000,
    20,
  )
  const plan = compileLab({ name: state.name, files: [manifestPath()], nodes: state.nodes.length, dataplane: 'none' })
  const cfg = agentConfig(plan, node.name, '', join(labDir(state.name), `${node.name}.cref.sock`))
  const r = await nsRun(node.ns, [process.execPath, join(repoRoot(), 'dist', 'bench', 'tools', 'cref-wire.js'), JSON.stringify(cfg), LAB.tunName], 30_000)
  if (r.code !== 0) throw new Error(`wiring the node for cref failed: ${r.stderr.trim()}`)
  if (cref.pid === undefined) throw new Error('cref did not start')
  return cref.pid
}

// ---- CPU accounting ----

interface CpuMark {
  t: bigint
  ticks: CpuTicks
  agent: number
}

function cpuMark(env: Env): CpuMark {
  return { t: process.hrtime.bigint(), ticks: readCpuTicks(), agent: env.agentPid === undefined ? 0 : readPidTicks(env.agentPid) }
}

/** Starts sampling the forwarder (tundra's agent, cref) for a test of `seconds`; nothing to sample for the kernel. */
function sampleForwarder(env: Env, seconds: number): { done(): Promise<number | undefined> } {
  if (env.agentPid === undefined) return { done: async () => undefined }
  if (env.cpuNote.off !== undefined) {
    env.cpuNote.why ??= env.cpuNote.off
    return { done: async () => undefined }
  }
  const s = sampleSoftirq(env.agentPid, seconds, env.perfFile)
  return {
    async done() {
      const r = await s.done()
      if (r.share === undefined && env.cpuNote.why === undefined) {
        env.cpuNote.why = r.why ?? 'not sampled'
        progress('e2e', `${env.contender}: softirq share of the forwarder not sampled (${env.cpuNote.why}): its CPU is over-counted`)
      }
      return r.share
    },
  }
}

/**
 * Cores the dataplane used between two marks: softirq, plus for a TUN forwarder its own time outside softirq
 * (`share`: the part of its time that was softirq, already in the softirq count).
 */
function dataplaneCores(a: CpuMark, b: CpuMark, share: number | undefined): number {
  const secs = Number(b.t - a.t) / 1e9
  const soft = (b.ticks.softirq - a.ticks.softirq) / USER_HZ
  return forwarderCores(soft, (b.agent - a.agent) / USER_HZ, share) / secs
}

// ---- the measurements ----

async function tcpTest(env: Env, streams: number, seconds: number): Promise<Record<string, number>> {
  const a = cpuMark(env)
  const sampler = sampleForwarder(env, seconds)
  const r = await nsRun(env.client, ['iperf', '-c', SOLO_VIP, '-p', '5001', '-t', String(seconds), '-P', String(streams), '-y', 'C'], (seconds + 20) * 1000)
  const b = cpuMark(env)
  const share = await sampler.done()
  const gbps = parseIperfTcpCsv(r.stdout) / 1e9
  const cores = dataplaneCores(a, b, share)
  return {
    [`tcp${streams}Gbps`]: gbps,
    [`tcp${streams}Cores`]: cores,
    [`tcp${streams}CoresPerGbps`]: cores / gbps,
    ...(share !== undefined ? { [`tcp${streams}ForwarderSoftirqShare`]: share } : {}),
  }
}

async function udpTest(env: Env, seconds: number): Promise<Record<string, number>> {
  const server = env.procs.spawn(env.b1, ['iperf', '-s', '-u', '-p', '5001', '-y', 'C'])
  let out = ''
  server.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out += d
  })
  try {
    await waitListening(env.b1, 'udp', 5001)
    const full0 = await rcvbufErrors(env.b1)
    const a = cpuMark(env)
    const sampler = sampleForwarder(env, seconds)
    await nsRun(env.client, ['iperf', '-c', SOLO_VIP, '-p', '5001', '-u', '-l', '64', '-b', '10000M', '-t', String(seconds)], (seconds + 20) * 1000)
    const b = cpuMark(env)
    const share = await sampler.done()
    const end = Date.now() + 5000
    while (parseIperfUdpServerCsv(out) === undefined && Date.now() < end) await new Promise(r => setTimeout(r, 100))
    const rep = parseIperfUdpServerCsv(out)
    if (!rep) return { udpRxPps: NaN, udpTxPps: NaN, udpLossPct: NaN }
    // Where the loss happened: datagrams the receiver's full socket buffer refused (the receiver, on a CPU it shares
    // with the sender and the dataplane, reads slower than they arrive) are not the dataplane's drops.
    const full = (await rcvbufErrors(env.b1)) - full0
    const cores = dataplaneCores(a, b, share)
    return {
      ...(share !== undefined ? { udpForwarderSoftirqShare: share } : {}),
      udpRxPps: rep.rxPps,
      udpTxPps: rep.txPps,
      udpLossPct: rep.lossPct,
      udpSocketLossPct: (Math.max(0, full) / rep.sent) * 100,
      udpCores: cores,
      udpCoresPerMpps: cores / (rep.rxPps / 1e6),
    }
  } finally {
    await env.procs.stop(server, 1000)
  }
}

/** The receiving namespace's UDP RcvbufErrors (NaN when /proc/net/snmp cannot be read there). */
async function rcvbufErrors(ns: string): Promise<number> {
  const r = await nsRun(ns, ['cat', '/proc/net/snmp'], 5000)
  return parseSnmpUdp(r.stdout)?.['RcvbufErrors'] ?? NaN
}

async function setAffinity(pids: readonly number[], cpuList: string): Promise<void> {
  for (const pid of pids) await run(['taskset', '-a', '-p', '-c', cpuList, String(pid)], { timeoutMs: 5000 })
}

async function latencyTest(env: Env, seconds: number, pinned: boolean): Promise<Record<string, number>> {
  const all = `0-${Math.max(0, cpus().length - 1)}`
  const pids = [...env.sockperf.map(p => p.pid).filter((p): p is number => p !== undefined), ...(env.agentPid !== undefined ? [env.agentPid] : [])]
  if (pinned) await setAffinity(pids, '0')
  try {
    const out: Record<string, number> = {}
    const suffix = pinned ? 'Pinned' : ''
    for (const [proto, port] of [
      ['Udp', '11111'],
      ['Tcp', '11112'],
    ] as const) {
      const cmd = [
        ...(pinned ? ['taskset', '-c', '0'] : []),
        ...sockperfClient(env.shim, ['pp', '-i', WEB_VIP, '-p', port, '-t', String(seconds), '-m', '64', ...(proto === 'Tcp' ? ['--tcp'] : [])]),
      ]
      const r = await nsRun(env.client, cmd, (seconds + 20) * 1000)
      const rep = parseSockperf(r.stdout + r.stderr)
      out[`lat${proto}${suffix}P50`] = rep?.p50 ?? NaN
      out[`lat${proto}${suffix}P99`] = rep?.p99 ?? NaN
    }
    return out
  } finally {
    if (pinned) await setAffinity(pids, all)
  }
}

async function directTest(env: Env, seconds: number): Promise<Record<string, number>> {
  const r = await nsRun(
    env.client,
    sockperfClient(env.shim, ['pp', '-i', BACKEND1_IP, '-p', '11111', '-t', String(seconds), '-m', '64']),
    (seconds + 20) * 1000,
  )
  const rep = parseSockperf(r.stdout + r.stderr)
  return { latDirectUdpP50: rep?.p50 ?? NaN, latDirectUdpP99: rep?.p99 ?? NaN }
}

async function connTest(env: Env, seconds: number): Promise<Record<string, number>> {
  const tool = join(repoRoot(), 'dist', 'bench', 'tools', 'connect.js')
  const r = await nsRun(
    env.client,
    [process.execPath, tool, '--host', WEB_VIP, '--port', '80', '--seconds', String(seconds), '--concurrency', '16'],
    (seconds + 30) * 1000,
  )
  const rep = parseConnect(r.stdout)
  if (!rep) return { connPerSec: NaN }
  return { connPerSec: rep.perSecond, connErrors: rep.errors, connP50Ms: rep.p50Ms }
}

// latency runs: 2 s of ping-pong (tens of thousands of round trips) is plenty for p50 and p99
// `small`: the tests the C reference also runs in --quick (the rest of its row waits for a full run: budget)
const TESTS: readonly { name: string; run: (env: Env, seconds: number) => Promise<Record<string, number>>; headline: string; small?: boolean }[] = [
  { name: 'tcp 1 stream', run: (e, s) => tcpTest(e, 1, s), headline: 'tcp1Gbps', small: true },
  { name: 'tcp 4 streams', run: (e, s) => tcpTest(e, 4, s), headline: 'tcp4Gbps' },
  { name: 'udp 64 B', run: (e, s) => udpTest(e, s), headline: 'udpRxPps', small: true },
  { name: 'latency', run: (e, s) => latencyTest(e, Math.min(s, 2), false), headline: 'latUdpP50' },
  { name: 'latency pinned', run: (e, s) => latencyTest(e, Math.min(s, 2), true), headline: 'latUdpPinnedP50', small: true },
  { name: 'new connections', run: (e, s) => connTest(e, s), headline: 'connPerSec' },
  { name: 'direct pod latency', run: (e, s) => directTest(e, Math.min(s, 2)), headline: 'latDirectUdpP50' },
]

export async function runE2e(contenders: readonly Contender[], rounds: number, seconds: number, workDir: string, quick = false): Promise<E2eResult> {
  const results: ContenderResult[] = contenders.map(c => ({ contender: c, available: false, samples: {}, medians: {} }))
  const envs: Env[] = []
  const shim = sockperfNoSleep(repoRoot(), workDir)
  if (!shim) progress('e2e', 'no C compiler for bench/tools/sockperf-nosleep.c: sockperf runs as is (2 s longer per latency run)')
  const procs = newTopology('e2e')
  // perf's record and script take 1-2 s per sampled run: too much for --quick's 1 s runs and 3-minute budget
  const cpuNote: Env['cpuNote'] = quick ? { off: 'not sampled in --quick' } : {}
  try {
    // All labs come up at once (bring-up is mostly waiting for processes); measuring starts when all are up.
    progress('e2e', `bringing up ${results.map(r => `${r.contender} (${LAB_NAMES[r.contender]})`).join(', ')}`)
    const up = await Promise.all(
      results.map(async r => {
        const c = r.contender
        if (c === 'iptables-legacy' && !haveCommand('iptables-legacy-restore')) {
          r.error = 'iptables-legacy-restore is not installed'
          return undefined
        }
        try {
          const env = await setUp(c, procs, workDir, shim, cpuNote)
          r.available = true
          progress('e2e', `${c} is up`)
          return env
        } catch (err) {
          r.error = errorSummary(err)
          progress('e2e', `${c}: not measured: ${r.error}`)
          await benchLabDown(LAB_NAMES[c])
          return undefined
        }
      }),
    )
    for (const env of up) if (env) envs.push(env) // in contender order
    for (let round = 0; round < rounds; round++) {
      for (const t of TESTS) {
        // rotate the order each round so no contender always goes first (or right after the noisiest)
        const order = envs.map((_, i) => envs[(i + round) % envs.length]!)
        for (const env of order) {
          if (quick && env.contender === 'cref' && t.small !== true) continue
          const res = results.find(x => x.contender === env.contender)!
          let vals: Record<string, number>
          try {
            vals = await t.run(env, seconds)
          } catch (err) {
            progress('e2e', `round ${round + 1}/${rounds} ${env.contender}: ${t.name} failed: ${(err as Error).message}`)
            continue
          }
          for (const [k, v] of Object.entries(vals)) (res.samples[k] ??= []).push(v)
          const h = vals[t.headline]
          progress('e2e', `round ${round + 1}/${rounds} ${env.contender.padEnd(15)} ${t.name}: ${headline(t.headline, h)}`)
        }
      }
    }
  } finally {
    await dropTopology(procs)
    for (const r of results) await benchLabDown(LAB_NAMES[r.contender])
  }
  for (const r of results) for (const [k, v] of Object.entries(r.samples)) r.medians[k] = median(v)
  const forwarder = envs.some(e => e.agentPid !== undefined)
  const threads = packetThreads()
  return {
    rounds,
    seconds,
    sockperfNoSleep: shim !== undefined,
    ...(forwarder ? { forwarderCpu: cpuNote.why ?? 'perf' } : {}),
    ...(threads > 1 ? { packetThreads: threads } : {}),
    contenders: results,
  }
}

function headline(metric: string, v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return 'no result'
  if (metric.endsWith('Gbps')) return `${v.toFixed(2)} Gbit/s`
  if (metric.endsWith('Pps')) return `${(v / 1000).toFixed(1)} kpps received`
  if (metric.startsWith('lat')) return `p50 ${v.toFixed(1)} µs`
  if (metric === 'connPerSec') return `${v.toFixed(0)} conn/s`
  return v.toFixed(2)
}

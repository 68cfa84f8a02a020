// Section 5, DNS: queries/s and latency against tundra's cluster DNS and against dnsmasq serving the same records (a
// hosts file written from the same cluster), same query file (service A names, shuffled), interleaved.
//
//   dnsmasq        in a namespace of ours, --addn-hosts with every service name
//   tundra-socket  DnsServer (answerInPlace) behind a kernel UDP socket, in the same namespace
//   tundra-lab     tundra's in-path cluster DNS in a lab (`-s 10.96.0.10` from a pod), when tundra runs
//
// The load generator is bench/tools/dnsblast.c (dnsperf's query file and -c/-q, but sendmmsg/recvmmsg batches): with
// dnsperf the client's CPU was 96-100 % busy for every server, so the q/s were dnsperf's own ceiling, not the
// servers' (bench/README "DNS: fair shares and where the time goes"). dnsperf stays the generator where no C compiler
// builds dnsblast; `dns.generator` in the JSON says which ran.
//
// Fair shares of a small machine: with two or more CPUs, every server (dnsmasq, the socket front end's process, the
// lab's agent, each with all its threads) is pinned to CPU 0 while it is measured and the load generator runs on the
// last CPU, so no contender gets more of the machine than another and the generator never steals the server's CPU.
// The kernel's work on the client's sends runs on the client's CPU for every contender alike.
import { writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { compileLab } from '../../src/lab/compile'
import { repoRoot } from '../../src/lab/up'
import { haveCommand, waitFor } from '../../src/netns/netns'
import { benchLabDown, benchLabUp, dropTopology, newTopology } from '../lib/labs'
import { writeScaleManifest } from '../lib/manifests'
import { scaleServices, type KeptLab } from './firstpacket'
import { errorSummary, progress } from '../lib/progress'
import { median } from '../lib/stats'
import { dnsblastBinary, dnsmasqCommand, nsRun, readPidTicks, USER_HZ, waitListening } from '../lib/tools'
import { cpus } from 'node:os'
import { run } from '../../src/netns/netns'

/** What a load generator's run gives: dnsperf's summary or dnsblast's JSON line. */
export interface DnsLoadReport {
  readonly qps: number
  readonly completed: number
  readonly lost: number
  readonly avgLatencyMs: number
  readonly stddevLatencyMs: number
  /** answers whose rcode was not NOERROR (dnsblast; every name in the query file exists, so these are failures) */
  readonly notNoerror?: number
}

/** The summary block dnsperf prints at the end of a run. */
export function parseDnsperf(text: string): DnsLoadReport | undefined {
  const num = (re: RegExp): number => {
    const m = re.exec(text)
    return m ? Number(m[1]) : NaN
  }
  const qps = num(/Queries per second:\s+([\d.]+)/)
  if (!Number.isFinite(qps)) return undefined
  return {
    qps,
    completed: num(/Queries completed:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    avgLatencyMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
    stddevLatencyMs: num(/Latency StdDev \(s\):\s+([\d.]+)/) * 1000,
  }
}

/** The JSON line bench/tools/dnsblast prints at the end of a run (undefined when there is none). */
export function parseDnsblast(text: string): DnsLoadReport | undefined {
  const line = text
    .split('\n')
    .reverse()
    .find(l => l.startsWith('{'))
  if (line === undefined) return undefined
  let j: Record<string, unknown>
  try {
    j = JSON.parse(line) as Record<string, unknown>
  } catch {
    return undefined
  }
  const num = (k: string): number => (typeof j[k] === 'number' ? (j[k] as number) : NaN)
  if (!Number.isFinite(num('qps'))) return undefined
  return {
    qps: num('qps'),
    completed: num('completed'),
    lost: num('lost'),
    avgLatencyMs: num('avgLatencyMs'),
    stddevLatencyMs: NaN,
    notNoerror: num('notNoerror'),
  }
}

export interface DnsContender {
  readonly name: string
  available: boolean
  error?: string
  readonly runs: DnsLoadReport[]
  qps: number
  avgLatencyMs: number
  lostPct: number
  /** the server process's own CPU (utime + stime, all threads) per answered query, µs, one per round */
  readonly cpuUsPerQuery?: number[]
  /** median of cpuUsPerQuery: what an answer costs the server, much less sensitive to other load than q/s */
  cpuUsPerQueryMedian?: number
}

export interface DnsResult {
  /** servers on CPU 0 and the load generator on the last CPU (false on a one-CPU machine: nothing pinned) */
  readonly pinned?: boolean
  /** the load generator: dnsblast (bench/tools/dnsblast.c), or dnsperf where no C compiler built it */
  readonly generator?: 'dnsblast' | 'dnsperf'

  readonly services: number
  readonly queries: number
  readonly seconds: number
  readonly contenders: DnsContender[]
}

/** A deterministic shuffle (xorshift), so every run queries in the same order. */
function shuffle<T>(a: T[], seed = 12345): T[] {
  let x = seed
  for (let i = a.length - 1; i > 0; i--) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    const j = (x >>> 0) % (i + 1)
    const t = a[i]!
    a[i] = a[j]!
    a[j] = t
  }
  return a
}

/** Share of answers that may be errors before a round is discarded (every name in the query file exists). */
const MAX_ERROR_ANSWERS = 0.001

const SRV = '10.99.0.2'
const SRV_TUNDRA = '10.99.0.3'

export interface DnsOptions {
  readonly quick: boolean
  readonly rounds: number
  readonly seconds: number
  readonly withTundraLab: boolean
  readonly workDir: string
  /** firstpacket's tundra lab (same services): used instead of bringing up bndns, and brought down here */
  readonly lab?: KeptLab
}

export async function runDns(o: DnsOptions): Promise<DnsResult> {
  const n = o.lab?.services ?? scaleServices(o.quick)
  const last = cpus().length - 1
  const pin = last >= 1
  const seconds = o.quick ? 1 : Math.max(3, o.seconds)
  mkdirSync(o.workDir, { recursive: true })
  const manifest = o.lab?.manifest ?? writeScaleManifest(o.workDir, n)
  const cluster = compileLab({ name: 'bndns', files: [manifest], nodes: 1, dataplane: 'none' }).cluster
  const names: [string, string][] = cluster.services.filter(s => s.clusterIPs[0]).map(s => [`${s.name}.${s.namespace}.svc.cluster.local`, s.clusterIPs[0]!])
  const hosts = join(o.workDir, 'dns-hosts')
  const queries = join(o.workDir, 'dns-queries')
  writeFileSync(hosts, names.map(([name, ip]) => `${ip} ${name}`).join('\n') + '\n')
  const qs: string[] = []
  for (let i = 0; i < 20_000; i++) qs.push(`${names[i % names.length]![0]} A`)
  writeFileSync(queries, shuffle(qs).join('\n') + '\n')
  progress('dns', `${names.length} service names; query file of ${qs.length} A queries`)

  const mk = (name: string): DnsContender => ({ name, available: false, runs: [], qps: NaN, avgLatencyMs: NaN, lostPct: NaN, cpuUsPerQuery: [] })
  const contenders = [mk('dnsmasq'), mk('tundra-socket'), ...(o.withTundraLab ? [mk('tundra-lab')] : [])]
  const blast = dnsblastBinary(repoRoot())
  const generator = blast !== undefined ? 'dnsblast' : 'dnsperf'
  if (blast === undefined) progress('dns', 'no C compiler for bench/tools/dnsblast.c: dnsperf generates the load (its own CPU may be the limit)')
  const targets = new Map<string, { ns: string; server: string; port: number; pid?: number }>()
  const topo = newTopology('dns')
  const servers: ChildProcess[] = []
  try {
    if (blast === undefined && !haveCommand('dnsperf')) throw new Error('dnsperf is not installed (scripts/bootstrap installs it)')
    const cli = await topo.ns('dcli')
    const srv = await topo.ns('dsrv')
    await topo.veth(cli, 'eth0', srv, 'eth0')
    await topo.addr(cli, 'eth0', '10.99.0.1/24')
    await topo.addr(srv, 'eth0', `${SRV}/24`)
    await topo.addr(srv, 'eth0', `${SRV_TUNDRA}/24`)

    const dm = contenders[0]!
    try {
      const d = topo.spawn(srv, dnsmasqCommand(hosts, SRV))
      servers.push(d)
      await waitListening(srv, 'udp', 53)
      targets.set(dm.name, { ns: cli, server: SRV, port: 53, ...(d.pid !== undefined ? { pid: d.pid } : {}) })
      dm.available = true
    } catch (err) {
      dm.error = (err as Error).message
    }

    const ts = contenders[1]!
    try {
      const tool = join(repoRoot(), 'dist', 'bench', 'tools', 'dns-server.js')
      const child = topo.spawn(srv, [process.execPath, tool, manifest, SRV_TUNDRA, '53'])
      servers.push(child)
      let said = ''
      child.stdout?.setEncoding('utf8').on('data', (d: string) => {
        said += d
      })
      child.stderr?.setEncoding('utf8').on('data', (d: string) => {
        said += d
      })
      await waitFor(
        "tundra's socket DNS to listen",
        () => {
          if (child.exitCode !== null) throw new Error(`dns-server exited: ${said.trim()}`)
          return said.includes('listening')
        },
        120_000,
        100,
      )
      const r = await nsRun(cli, ['dig', '+short', '+time=2', '+tries=3', `@${SRV_TUNDRA}`, names[0]![0]], 15_000)
      if (r.stdout.trim() !== names[0]![1]) throw new Error(`tundra's socket DNS answered ${JSON.stringify(r.stdout.trim())} for ${names[0]![0]}`)
      targets.set(ts.name, { ns: cli, server: SRV_TUNDRA, port: 53, ...(child.pid !== undefined ? { pid: child.pid } : {}) })
      ts.available = true
    } catch (err) {
      ts.error = (err as Error).message
    }

    const tl = contenders[2]
    if (tl) {
      try {
        if (o.lab) progress('dns', `using firstpacket's tundra lab with the same services (${o.lab.name})`)
        else progress('dns', 'bringing up a tundra lab with the same services (bndns)')
        const st =
          o.lab?.state ??
          (await benchLabUp({ name: 'bndns', files: [manifest], dataplane: 'tundra', section: 'dns', readyTimeoutMs: 240_000, keepLogsIn: o.workDir }))
        const client = st.pods.find(p => p.name === 'client')!.ns
        const agent = st.processes.find(p => p.role === 'agent')
        targets.set(tl.name, { ns: client, server: '10.96.0.10', port: 53, ...(agent ? { pid: agent.pid } : {}) })
        tl.available = true
      } catch (err) {
        tl.error = errorSummary(err)
        progress('dns', `tundra-lab: not measured: ${tl.error}`)
      }
    }

    const live = contenders.filter(c => c.available)
    for (let round = 0; round < o.rounds; round++) {
      for (let i = 0; i < live.length; i++) {
        const c = live[(i + round) % live.length]!
        const t = targets.get(c.name)!
        const load = ['-s', t.server, '-p', String(t.port), '-d', queries, '-l', String(seconds), '-c', '4', '-q', '200']
        const generatorCmd = blast !== undefined ? [blast, ...load] : ['dnsperf', ...load, '-t', '2']
        if (pin && t.pid !== undefined) await setAffinity(t.pid, '0')
        let r: Awaited<ReturnType<typeof nsRun>>
        const ticks0 = t.pid === undefined ? NaN : readPidTicks(t.pid)
        let ticks = NaN
        try {
          r = await nsRun(t.ns, pin ? ['taskset', '-c', String(last), ...generatorCmd] : generatorCmd, (seconds + 30) * 1000)
          ticks = t.pid === undefined ? NaN : readPidTicks(t.pid) - ticks0
        } finally {
          if (pin && t.pid !== undefined) await setAffinity(t.pid, `0-${last}`)
        }
        const rep = blast !== undefined ? parseDnsblast(r.stdout) : parseDnsperf(r.stdout)
        if (!rep) {
          progress('dns', `round ${round + 1} ${c.name}: ${generator} gave no summary: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' | ')}`)
          continue
        }
        // Every name asked exists: a server that answers fast with errors is not measured as fast.
        if ((rep.notNoerror ?? 0) > rep.completed * MAX_ERROR_ANSWERS) {
          progress('dns', `round ${round + 1} ${c.name}: ${rep.notNoerror} of ${rep.completed} answers were not NOERROR: round not counted`)
          continue
        }
        c.runs.push(rep)
        const cpuUs = rep.completed > 0 ? ((ticks / USER_HZ) * 1e6) / rep.completed : NaN
        c.cpuUsPerQuery!.push(cpuUs)
        progress(
          'dns',
          `round ${round + 1}/${o.rounds} ${c.name.padEnd(13)} ${rep.qps.toFixed(0)} q/s, avg ${rep.avgLatencyMs.toFixed(3)} ms, lost ${rep.lost}` +
            `, server CPU ${Number.isFinite(cpuUs) ? cpuUs.toFixed(2) : '?'} µs/query`,
        )
      }
    }
  } finally {
    for (const s of servers) await topo.stop(s, 1000)
    await dropTopology(topo)
    if (o.lab) await benchLabDown(o.lab.name)
    else if (o.withTundraLab) await benchLabDown('bndns')
  }
  for (const c of contenders) {
    if (c.runs.length === 0) continue
    c.qps = median(c.runs.map(r => r.qps))
    c.avgLatencyMs = median(c.runs.map(r => r.avgLatencyMs))
    c.lostPct = median(c.runs.map(r => (r.completed + r.lost > 0 ? (100 * r.lost) / (r.completed + r.lost) : NaN)))
    const cpu = (c.cpuUsPerQuery ?? []).filter(Number.isFinite)
    if (cpu.length > 0) c.cpuUsPerQueryMedian = median(cpu)
  }
  return { pinned: pin, generator, services: names.length, queries: qs.length, seconds, contenders }
}

/** Every thread of `pid` onto `cpuList` (taskset -a): the agent's packet and control threads, Node's helpers. */
async function setAffinity(pid: number, cpuList: string): Promise<void> {
  await run(['taskset', '-a', '-p', '-c', cpuList, String(pid)], { timeoutMs: 5000 })
}

// Running the load tools inside namespaces and reading what they print: iperf2 CSV, sockperf percentiles, the
// connect tool's JSON; CPU time from /proc for the dataplane's share. The parsers are pure (unit-tested).
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { run, waitFor, type RunResult } from '../../src/netns/netns'
import type { Cluster } from '../../src/model/cluster'

/** `ip netns exec <ns> <cmd…>` with a hard time limit (a wedged tool must not stall the run). */
export function nsRun(ns: string, cmd: readonly string[], timeoutMs: number): Promise<RunResult> {
  return run(['ip', 'netns', 'exec', ns, ...cmd], { timeoutMs })
}

/** Waits until something listens on proto/port inside the namespace. */
export async function waitListening(ns: string, proto: 'tcp' | 'udp', port: number, timeoutMs = 10_000): Promise<void> {
  await waitFor(
    `${proto}/${port} to listen in ${ns}`,
    async () => {
      const r = await run(['ip', 'netns', 'exec', ns, 'ss', proto === 'tcp' ? '-Hltn' : '-Hlun', `sport = :${port}`], { timeoutMs: 5000 })
      return r.code === 0 && r.stdout.trim() !== ''
    },
    timeoutMs,
    100,
  )
}

/** iperf2 `-y C` client output: total bits/s (the SUM line when there is one, else the sum of the streams). */
export function parseIperfTcpCsv(text: string): number {
  const rows = text
    .split('\n')
    .map(l => l.trim().split(','))
    .filter(f => f.length >= 9 && /^\d+$/.test(f[0]!))
  if (rows.length === 0) return NaN
  const sum = rows.find(f => f[5] === '-1')
  if (sum) return Number(sum[8])
  return rows.reduce((a, f) => a + Number(f[8]), 0)
}

export interface UdpReport {
  readonly seconds: number
  readonly sent: number
  readonly lost: number
  readonly received: number
  readonly rxPps: number
  readonly txPps: number
  readonly lossPct: number
}

/** iperf2 `-s -u -y C` server line: interval, lost and total datagrams. */
export function parseIperfUdpServerCsv(text: string): UdpReport | undefined {
  for (const line of text.split('\n').reverse()) {
    const f = line.trim().split(',')
    if (f.length < 13 || !/^\d+$/.test(f[0]!)) continue
    const [a, b] = f[6]!.split('-').map(Number)
    const seconds = (b ?? NaN) - (a ?? NaN)
    const lost = Number(f[10])
    const sent = Number(f[11])
    if (!(seconds > 0) || !Number.isFinite(sent) || sent <= 0) continue
    const received = sent - Math.max(0, lost)
    return { seconds, sent, lost, received, rxPps: received / seconds, txPps: sent / seconds, lossPct: (Math.max(0, lost) / sent) * 100 }
  }
  return undefined
}

/**
 * The `Udp:` counters of a namespace's /proc/net/snmp (header line of names, then a line of values), by name;
 * undefined when the text has no such pair. RcvbufErrors counts datagrams a full socket buffer refused.
 */
export function parseSnmpUdp(text: string): Record<string, number> | undefined {
  const lines = text.split('\n').filter(l => l.startsWith('Udp: '))
  if (lines.length < 2) return undefined
  const names = lines[0]!.trim().split(/\s+/).slice(1)
  const values = lines[1]!.trim().split(/\s+/).slice(1).map(Number)
  if (names.length !== values.length || values.some(v => !Number.isFinite(v))) return undefined
  const out: Record<string, number> = {}
  names.forEach((n, i) => {
    out[n] = values[i]!
  })
  return out
}

export interface SockperfReport {
  readonly p50: number
  readonly p99: number
  readonly avg: number
  readonly observations: number
}

/** sockperf ping-pong output: percentiles in µs (sockperf reports half the round trip). */
export function parseSockperf(text: string): SockperfReport | undefined {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: strips the ANSI colour codes (ESC [ ... m) sockperf prints
  const clean = text.replace(/\x1b\[[0-9;]*m/g, '')
  const pct = (p: string): number => {
    const m = new RegExp(`percentile ${p.replace('.', '\\.')} =\\s*([\\d.]+)`).exec(clean)
    return m ? Number(m[1]) : NaN
  }
  const avg = /avg-latency=([\d.]+)/.exec(clean)
  const obs = /Total (\d+) observations/.exec(clean)
  const p50 = pct('50.000')
  if (!Number.isFinite(p50)) return undefined
  return { p50, p99: pct('99.000'), avg: avg ? Number(avg[1]) : NaN, observations: obs ? Number(obs[1]) : 0 }
}

export interface ConnectReport {
  connections: number
  errors: number
  seconds: number
  perSecond: number
  p50Ms: number
  p99Ms: number
}

export function parseConnect(text: string): ConnectReport | undefined {
  const line = text.trim().split('\n').pop()
  if (!line) return undefined
  try {
    return JSON.parse(line) as ConnectReport
  } catch {
    return undefined
  }
}

/** CPU ticks (USER_HZ) from the aggregate `cpu` line of /proc/stat. */
export interface CpuTicks {
  softirq: number
  irq: number
  total: number
}

export function parseProcStat(text: string): CpuTicks {
  const f = (text.split('\n').find(l => l.startsWith('cpu ')) ?? '').trim().split(/\s+/).slice(1).map(Number)
  const total = f.reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0)
  return { irq: f[5] ?? 0, softirq: f[6] ?? 0, total }
}

export function readCpuTicks(): CpuTicks {
  return parseProcStat(readFileSync('/proc/stat', 'utf8'))
}

/** utime + stime of a process in ticks (fields 14 and 15 of /proc/<pid>/stat), NaN when it is gone. */
export function parsePidStat(text: string): number {
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return Number(fields[11]) + Number(fields[12])
}

export function readPidTicks(pid: number): number {
  try {
    return parsePidStat(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return NaN
  }
}

export const USER_HZ = 100

/**
 * bench/tools/sockperf-nosleep.c built as a shared object in `workDir` (once; rebuilt when the source is newer), for
 * LD_PRELOAD into the sockperf client: it skips sockperf's fixed 2 s sleep after the warm-up. undefined when there
 * is no C compiler (sockperf then runs as is, 2 s slower per run).
 */
export function sockperfNoSleep(repo: string, workDir: string): string | undefined {
  const src = join(repo, 'bench', 'tools', 'sockperf-nosleep.c')
  const so = join(workDir, 'sockperf-nosleep.so')
  try {
    if (existsSync(so) && statSync(so).mtimeMs >= statSync(src).mtimeMs) return so
    mkdirSync(workDir, { recursive: true })
    execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', so, src], { stdio: 'ignore', timeout: 60_000 })
    return so
  } catch {
    return undefined
  }
}

/** The sockperf client command, with the no-sleep shim preloaded when there is one. */
export function sockperfClient(shim: string | undefined, args: readonly string[]): string[] {
  return shim ? ['env', `LD_PRELOAD=${shim}`, 'sockperf', ...args] : ['sockperf', ...args]
}

/** dnsmasq as the bench's authoritative-for-the-hosts-file DNS contender, listening on `address` (port 53). */
export function dnsmasqCommand(hostsFile: string, address: string): string[] {
  return [
    'dnsmasq',
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    `--addn-hosts=${hostsFile}`,
    '--bind-interfaces',
    `--listen-address=${address}`,
    '--pid-file=',
    '--user=root',
    '--cache-size=10000',
  ]
}

/**
 * bench/tools/build/<name>, built from bench/tools/<name>.c with `cc -O2` when missing or older than its source
 * (scripts/bootstrap builds them too). undefined when there is no C compiler.
 */
function benchTool(repo: string, name: string): string | undefined {
  const src = join(repo, 'bench', 'tools', `${name}.c`)
  const bin = join(repo, 'bench', 'tools', 'build', name)
  try {
    if (existsSync(bin) && statSync(bin).mtimeMs >= statSync(src).mtimeMs) return bin
    mkdirSync(join(repo, 'bench', 'tools', 'build'), { recursive: true })
    execFileSync('cc', ['-O2', '-pthread', '-o', bin, src], { stdio: 'ignore', timeout: 60_000 })
    return bin
  } catch {
    return undefined
  }
}

/** The C reference contender (bench/tools/cref.c). */
export function crefBinary(repo: string): string | undefined {
  return benchTool(repo, 'cref')
}

/** The DNS section's load generator (bench/tools/dnsblast.c: batched sends and reads, dnsperf's query file). */
export function dnsblastBinary(repo: string): string | undefined {
  return benchTool(repo, 'dnsblast')
}

/** cref's rules for a cluster: `tcp|udp:<clusterIP>:<port>=<ip>:<port>,…` per IPv4 ClusterIP port with ready endpoints. */
export function crefRules(cluster: Cluster): string[] {
  const out: string[] = []
  for (const s of cluster.services) {
    const vip = s.clusterIPs.find(ip => ip.includes('.'))
    if (vip === undefined || s.headless) continue
    for (const p of s.ports) {
      if (p.protocol === 'SCTP') continue
      const eps = s.endpoints
        .filter(e => e.ready && e.family === 4)
        .flatMap(e => e.ports.filter(q => q.name === p.name && q.protocol === p.protocol).map(q => `${e.ip}:${q.port}`))
      if (eps.length > 0) out.push(`${p.protocol.toLowerCase()}:${vip}:${p.port}=${eps.join(',')}`)
    }
  }
  return out
}

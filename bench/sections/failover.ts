// Section failover (issue 16): sequential TCP connects through a ClusterIP with three backends, one of which refuses
// (nft tcp reset in its namespace) or blackholes (nft drop). tundra run with connect-time failover and outlier
// ejection on, against kube-proxy's iptables rules (the kernel contender) in the same run: connects that failed, and
// the connect time (curl's time_connect) tundra adds while failing over from a blackholed backend.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { execArgv, labExec, type LabState } from '../../src/lab/index'
import type { SummaryRow } from '../lib/report'
import { benchLabDown, benchLabUp } from '../lib/labs'
import { errorSummary, progress } from '../lib/progress'
import { median } from '../lib/stats'

const VIP = '10.96.0.60'
const CLI = join(__dirname, '..', '..', 'src', 'cli', 'main.js')

const MANIFEST = `${['a', 'b', 'c']
  .map(
    x => `apiVersion: v1
kind: Pod
metadata: {name: web-${x}, labels: {app: web}}
spec:
  containers: [{name: s, image: agnhost, ports: [{containerPort: 8080}]}]
---
`,
  )
  .join('')}apiVersion: v1
kind: Pod
metadata: {name: cli}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: ${VIP}
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
`

export interface FailoverRun {
  readonly contender: 'tundra' | 'iptables-nft'
  readonly mode: 'rst' | 'blackhole'
  readonly connects: number
  failed: number
  /** curl's time_connect of the connects that succeeded, ms */
  connectMsMedian: number
  connectMsP99: number
  connectMsMean: number
  error?: string
}

export interface FailoverResult {
  readonly connectTimeoutSeconds: number
  readonly runs: FailoverRun[]
}

export const FAILOVER_LAB_NAMES = ['bffotun', 'bffoipt']

/** Connect timeout of every curl (the kernel contender waits this long on a blackholed backend). */
const CONNECT_TIMEOUT_S = 1

export async function runFailover(opts: { quick: boolean; workDir: string }): Promise<FailoverResult> {
  const nRst = opts.quick ? 30 : 1000
  const nBlack = opts.quick ? 15 : 300
  mkdirSync(opts.workDir, { recursive: true })
  const manifest = join(opts.workDir, 'failover.yaml')
  writeFileSync(manifest, MANIFEST)
  const runs: FailoverRun[] = []
  for (const contender of ['tundra', 'iptables-nft'] as const) {
    const name = FAILOVER_LAB_NAMES[contender === 'tundra' ? 0 : 1]!
    let proc: ChildProcess | undefined
    try {
      const state = await benchLabUp({
        name,
        files: [manifest],
        dataplane: contender === 'tundra' ? 'none' : 'iptables',
        ...(contender === 'tundra' ? {} : { iptablesBackend: 'nft' as const }),
        section: 'failover',
      })
      const pod = (p: string, cmd: string[], timeoutMs = 30_000): ReturnType<typeof labExec> => labExec({ name, target: { pod: p }, cmd, timeoutMs })
      const restart = async (): Promise<void> => {
        if (contender !== 'tundra') return
        if (proc !== undefined) {
          proc.kill('SIGTERM')
          await until(async () => proc!.exitCode !== null || proc!.signalCode !== null)
        }
        proc = startTundra(state)
        await until(async () => (await pod('cli', ['curl', '-s', '-m', '1', `http://${VIP}/hostname`])).stdout.startsWith('web-'))
      }
      for (const [mode, n, verdict] of [
        ['rst', nRst, 'reject with tcp reset'],
        ['blackhole', nBlack, 'drop'],
      ] as const) {
        await restart() // fresh ejection state for each mode
        await pod('web-a', ['sh', '-c', 'nft delete table inet tt 2>/dev/null; true'])
        const r = await pod('web-a', [
          'nft',
          `add table inet tt; add chain inet tt in { type filter hook input priority 0; }; add rule inet tt in tcp dport 8080 ${verdict}`,
        ])
        if (r.code !== 0) throw new Error(`nft in web-a: ${r.stderr}`)
        runs.push(await connects(pod, contender, mode, n))
        const last = runs[runs.length - 1]!
        progress(
          'failover',
          `${contender} ${mode}: ${last.failed} of ${n} connects failed, connect median ${last.connectMsMedian.toFixed(2)} ms, p99 ${last.connectMsP99.toFixed(1)} ms`,
        )
      }
    } catch (err) {
      runs.push({ contender, mode: 'rst', connects: 0, failed: NaN, connectMsMedian: NaN, connectMsP99: NaN, connectMsMean: NaN, error: errorSummary(err) })
    } finally {
      if (proc !== undefined && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
      await benchLabDown(name)
    }
  }
  return { connectTimeoutSeconds: CONNECT_TIMEOUT_S, runs }
}

function startTundra(state: LabState): ChildProcess {
  const config = join(state.dir, 'failover-run.yaml')
  writeFileSync(
    config,
    [
      'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
      'kind: KubeProxyConfiguration',
      'clusterCIDR: 10.100.0.0/16',
      'iptables: {minSyncPeriod: 0s}',
      'metricsBindAddress: 127.0.0.1:10249',
      'tundra:',
      `  control: ${join(state.dir, 'run.sock')}`,
      '  dns: {upstreams: [172.18.0.53]}',
      '  failover: {enabled: true, synTimeout: 300ms, maxRetries: 2}',
      '  outlierEjection: {enabled: true, consecutiveFailures: 3, baseEjectionTime: 30s}',
      '',
    ].join('\n'),
  )
  const [file, ...args] = execArgv(state, { node: 'node1' }, [
    process.execPath,
    CLI,
    'run',
    '--config',
    config,
    '-f',
    state.manifests!,
    '--hostname-override',
    'node1',
  ])
  return spawn(file!, args, { stdio: 'ignore' })
}

async function until(f: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await f().catch(() => false))) {
    if (Date.now() > end) throw new Error('timed out waiting for tundra run')
    await new Promise(r => setTimeout(r, 100))
  }
}

async function connects(
  pod: (p: string, cmd: string[], timeoutMs?: number) => ReturnType<typeof labExec>,
  contender: FailoverRun['contender'],
  mode: FailoverRun['mode'],
  n: number,
): Promise<FailoverRun> {
  // one line per connect: time_connect (s), or "fail"
  const script = `for i in $(seq ${n}); do if t=$(curl -s -o /dev/null --connect-timeout ${CONNECT_TIMEOUT_S} -m 3 -w '%{time_connect}' http://${VIP}/hostname); then echo $t; else echo fail; fi; done`
  const r = await pod('cli', ['sh', '-c', script], (n * (CONNECT_TIMEOUT_S + 3) + 60) * 1000)
  const lines = r.stdout.split('\n').filter(l => l !== '')
  const ok = lines.filter(l => l !== 'fail').map(l => Number(l) * 1000)
  const failed = lines.filter(l => l === 'fail').length + Math.max(0, n - lines.length)
  const sorted = [...ok].sort((a, b) => a - b)
  return {
    contender,
    mode,
    connects: n,
    failed,
    connectMsMedian: median(ok),
    connectMsP99: sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? NaN,
    connectMsMean: ok.reduce((a, b) => a + b, 0) / Math.max(1, ok.length),
  }
}

/** Summary rows: connects lost (tundra vs the kernel), and the mean connect time failover adds with a blackhole. */
export function failoverRows(r: FailoverResult): SummaryRow[] {
  const get = (c: FailoverRun['contender'], m: FailoverRun['mode']): FailoverRun | undefined => r.runs.find(x => x.contender === c && x.mode === m)
  const rows: SummaryRow[] = []
  for (const mode of ['rst', 'blackhole'] as const) {
    const t = get('tundra', mode)
    const k = get('iptables-nft', mode)
    if (t === undefined) continue
    const lost = (x: FailoverRun | undefined): number => (x === undefined ? NaN : (100 * x.failed) / x.connects)
    rows.push({
      metric: `connects failed, 1 of 3 backends ${mode === 'rst' ? 'refusing' : 'blackholed'}`,
      unit: '%',
      tundra: lost(t),
      kernel: k === undefined ? {} : { 'iptables-nft': lost(k) },
      compare: lost(t),
      compareKind: 'value',
      target: '0 %',
      pass: Number.isFinite(lost(t)) ? t.failed === 0 : undefined,
    })
  }
  const b = get('tundra', 'blackhole')
  const kb = get('iptables-nft', 'blackhole')
  if (b !== undefined)
    rows.push({
      metric: 'connect time, 1 of 3 backends blackholed (mean)',
      unit: 'ms',
      tundra: b.connectMsMean,
      kernel: kb === undefined ? {} : { 'iptables-nft': kb.connectMsMean },
      compare: b.connectMsMean,
      compareKind: 'value',
      target: 'informational',
      pass: undefined,
      note: 'tundra fails over after synTimeout (300 ms here); the kernel contender loses the connect instead',
    })
  return rows
}

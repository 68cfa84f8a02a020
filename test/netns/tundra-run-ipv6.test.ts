// Issue 15, problem 4: the second (IPv6) CIDR of a dual-stack clusterCIDR was ignored, so `tundra run` had no IPv6.
// End to end in a 1-node dual-stack lab with no dataplane of its own: `tundra run -f` with dual-stack
// --cluster-cidr and --service-cidr serves an IPv6-only ClusterIP and the IPv6 side of a dual-stack one, from a pod,
// with curl, and counts them per endpoint.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { execArgv, labDown, labExec, labUp, loadLabState } from '../../src/lab/index'
import { CLI, until } from './fixtures/run-lab'
import { FIXTURES } from '../fixtures/tundra/lab'

const skip = netnsSkip('curl', 'unshare')
const IPV6 = join(FIXTURES, 'ipv6.yaml')

t.test('tundra run: IPv6 Services from a dual-stack clusterCIDR', { ...skip, timeout: 180_000 }, async t => {
  const name = `r6${process.pid.toString(36)}`
  const procs: ChildProcess[] = []
  let log = ''
  t.teardown(async () => {
    if (!t.passing()) t.comment(log.slice(-4000))
    for (const c of procs) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    await labDown(name, { log: () => {} })
  })
  const status = await labUp({ files: [IPV6], name, nodes: 1, dataplane: 'none', log: () => {}, readyTimeoutMs: 30_000 })
  const state = loadLabState(name)
  const node = (cmd: string[]) => labExec({ name, target: { node: 'node1' }, cmd, timeoutMs: 20_000 })
  const pod = (cmd: string[]) => labExec({ name, target: { pod: 'client' }, cmd, timeoutMs: 20_000 })
  const [file, ...args] = execArgv(state, { node: 'node1' }, [
    process.execPath,
    CLI,
    'run',
    '-f',
    state.manifests!,
    '--hostname-override',
    'node1',
    '--cluster-cidr',
    '10.100.0.0/16,fd00:10:100::/56',
    '--service-cidr',
    '10.96.0.0/12,fd00:10:96::/112',
    '--dns-upstream',
    '172.18.0.53',
    '--snapshot',
    join(state.dir, 'run.conntrack'),
  ])
  const run = spawn(file!, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  run.stderr!.setEncoding('utf8').on('data', (d: string) => {
    log += d
  })
  procs.push(run)
  const metrics = async (): Promise<string> => (await node(['curl', '-s', '127.0.0.1:10249/metrics'])).stdout
  await until('tundra run to serve metrics', async () => (await metrics()).includes('kubeproxy_sync_proxy_rules_last_timestamp_seconds'))

  const web = state.pods.filter(p => p.name.startsWith('web')).map(p => p.name)
  t.equal(web.length, 2, 'two web pods')
  const seen = new Set<string>()
  for (let i = 0; i < 12; i++) {
    const r = await pod(['curl', '-g', '-sS', '-m', '3', 'http://[fd00:10:96::100]:80/hostname'])
    t.equal(r.code, 0, `IPv6-only ClusterIP, connection ${i} (${r.stderr})`)
    seen.add(r.stdout)
  }
  t.same([...seen].sort(), [...web].sort(), 'both endpoints answered over IPv6')
  const dual = status.services.find(s => s.name === 'dual')
  const dual6 = (dual?.clusterIPs ?? []).find(ip => ip.includes(':'))
  t.ok(dual6, 'dual has an IPv6 ClusterIP')
  const d = await pod(['curl', '-g', '-sS', '-m', '3', `http://[${dual6}]:80/hostname`])
  t.ok(web.includes(d.stdout), `the IPv6 side of a dual-stack Service answers (${d.stderr})`)

  const m = await metrics()
  t.match(m, /^tundra_conntrack_entries\{family="ipv6"\} [1-9]/m, 'IPv6 connections tracked')
  t.match(
    m,
    /^tundra_endpoint_new_connections_total\{namespace="default",service="web6",port="http",endpoint="\[fd00:10:100:[0-9a-f:]+\]:8080"\} [1-9]/m,
    'counted per IPv6 endpoint',
  )
  run.kill('SIGTERM')
})

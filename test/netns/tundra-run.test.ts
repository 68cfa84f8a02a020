// `tundra run` (the kube-proxy replacement) end to end in a lab whose nodes have no dataplane of their own: it serves
// the ClusterIP from -f manifests, shows real values on /metrics, keeps a TCP transfer going across a graceful
// restart (conntrack snapshot), applies an endpoint change, and /healthz turns 503 when its Node is being deleted.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { execArgv } from '../../src/lab/index'
import { CLI, runLab, until } from './fixtures/run-lab'
import { readObjects, writeObject } from '../../src/lab/objects'
import type { EndpointSlice, KubeObject } from '../../src/k8s/types'

const skip = netnsSkip('iperf', 'curl', 'unshare')
const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))

t.test('tundra run on a lab node', { ...skip, timeout: 180_000 }, async t => {
  const { state, procs: runs, node, pod } = await runLab(t, 'rn')
  const manifests = state.manifests!
  let log = ''
  const start = (): ChildProcess => {
    const [file, ...args] = execArgv(state, { node: 'node1' }, [
      process.execPath,
      CLI,
      'run',
      '-f',
      manifests,
      '--hostname-override',
      'node1',
      '--cluster-cidr',
      '10.100.0.0/16',
      '--dns-upstream',
      '172.18.0.53',
      '--iptables-min-sync-period',
      '0s',
      '--iptables-sync-period',
      '2s',
      '--snapshot',
      join(state.dir, 'run.conntrack'),
    ])
    const child = spawn(file!, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log += d
    })
    runs.push(child)
    return child
  }
  const metrics = async (): Promise<string> => (await node(['curl', '-s', '127.0.0.1:10249/metrics'])).stdout
  const healthz = async (): Promise<string> => (await node(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '127.0.0.1:10256/healthz'])).stdout

  let run = start()
  await until('tundra run to serve metrics', async () => (await metrics()).includes('kubeproxy_sync_proxy_rules_last_timestamp_seconds'))
  const hello = await pod('cli', ['curl', '-sS', '-m', '5', 'http://perf:5003/hostname'])
  t.equal(hello.stdout, 'srv', `the ClusterIP answers by name through tundra run (${hello.stderr})`)
  // kube-proxy's localhostNodePorts (on by default): a node process reaches a NodePort on 127.0.0.1
  const local = await node(['curl', '-sS', '-m', '5', 'http://127.0.0.1:30050/hostname'])
  t.equal(local.stdout, 'srv', `127.0.0.1:<nodePort> from the node reaches the service (${local.stderr})`)

  const m = await metrics()
  t.match(m, /tundra_service_new_connections_total\{namespace="default",service="perf",port="http"\} [1-9]/, 'per-service new connections after traffic')
  t.match(m, /tundra_dns_queries_total\{type="A"\} [1-9]/, 'DNS queries counted')
  t.match(m, /kubeproxy_sync_proxy_rules_duration_seconds_count [1-9]/, 'sync durations recorded')
  t.match(m, /tundra_conntrack_entries\{family="ipv4"\} \d+/, 'conntrack entries')
  t.equal(await healthz(), '200', 'healthz 200 while synced')

  // A long TCP transfer through the ClusterIP keeps going across SIGTERM + start (conntrack snapshot).
  await pod('srv', ['sh', '-c', 'iperf -s -p 5001 -D >/dev/null 2>&1 &'])
  await until('iperf to listen', async () => (await pod('srv', ['sh', '-c', 'ss -ltn | grep -q :5001 && echo y'])).stdout.includes('y'))
  const iperf = pod('cli', ['iperf', '-c', '10.96.0.50', '-p', '5001', '-t', '8', '-i', '1', '-y', 'C'], 40_000)
  await sleep(2000)
  run.kill('SIGTERM')
  await until('the old tundra to exit', async () => run.exitCode !== null || run.signalCode !== null)
  run = start()
  const r = await iperf
  t.equal(r.code, 0, `iperf finished without error across the restart: ${r.stderr}`)
  const intervals = r.stdout
    .trim()
    .split('\n')
    .map(l => l.split(','))
  const last = intervals.at(-2) // the last one-second interval (the final line is the total)
  t.ok(intervals.length >= 8, `iperf reported every interval (${intervals.length})`)
  t.ok(Number(last?.[7] ?? 0) > 0, `bytes still flowed after the restart (interval ${last?.[6]}: ${last?.[7]} bytes)`)
  t.match(log, /restored \d+ conntrack entries/, 'the second tundra restored the snapshot')

  // An endpoint change (the only endpoint becomes not ready) reaches the packet path: the service now refuses.
  // The lab keeps one file per object in the manifests directory; each edit rewrites one file, as `lab apply` does.
  const objects = readObjects(manifests)
  const slices = [...objects.values()].filter(o => o.kind === 'EndpointSlice') as EndpointSlice[]
  const setReady = (ready: boolean): void => {
    for (const sl of slices) writeObject(manifests, { ...sl, endpoints: (sl.endpoints ?? []).map(e => ({ ...e, conditions: { ...e.conditions, ready } })) })
  }
  setReady(false)
  await until('the endpoint to leave rotation', async () => (await pod('cli', ['curl', '-sS', '-m', '2', 'http://10.96.0.50:5003/hostname'])).code === 7)
  t.pass('an EndpointSlice edit made the ClusterIP refuse connections (curl exit 7: no usable endpoint)')
  setReady(true)
  await until('the endpoint to come back', async () => (await pod('cli', ['curl', '-sS', '-m', '2', 'http://10.96.0.50:5003/hostname'])).stdout === 'srv')
  t.pass('and restoring it brings the service back')

  // kube-proxy's rule: a Node being deleted is not healthy for load balancers.
  const nodeObj = [...objects.values()].find(o => o.kind === 'Node')
  t.ok(nodeObj, 'the lab wrote a Node object')
  writeObject(manifests, { ...nodeObj!, metadata: { ...nodeObj!.metadata, deletionTimestamp: '2026-01-01T00:00:00Z' } } as KubeObject)
  await until('healthz to turn 503', async () => (await healthz()) === '503')
  t.pass('healthz is 503 while the Node is being deleted')
  run.kill('SIGTERM')
})

// `tundra run` restarts while the API server is reachable only through its `kubernetes` ClusterIP, i.e. through
// tundra itself (what in-cluster config gives a DaemonSet). The last known state, saved by the previous run, programs
// the ClusterIP before the first LIST; then the LIST and the watch succeed through it, and a Service created after the
// restart is served.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { netnsSkip } from '../helpers/netns'
import { fixtureCommand } from './fixtures/launch'
import { execArgv } from '../../src/lab/index'
import { CLI, runLab, until } from './fixtures/run-lab'

const skip = netnsSkip('curl', 'unshare')
const API_PORT = 6443
const API_VIP = '10.96.0.1'

function kubeconfig(server: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: c',
    `  cluster: {server: "${server}", insecure-skip-tls-verify: true}`,
    'users:',
    '- name: u',
    '  user: {token: t}',
    'contexts:',
    '- name: x',
    '  context: {cluster: c, user: u}',
    'current-context: x',
    '',
  ].join('\n')
}

/** A Service and its EndpointSlice in front of one pod. */
function service(name: string, clusterIP: string, port: number, podIP: string, targetPort: number): Record<string, unknown>[] {
  return [
    {
      kind: 'Service',
      object: {
        metadata: { name, namespace: 'default' },
        spec: { clusterIP, clusterIPs: [clusterIP], type: 'ClusterIP', ports: [{ name: 'p', port, targetPort, protocol: 'TCP' }] },
      },
    },
    {
      kind: 'EndpointSlice',
      object: {
        metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
        addressType: 'IPv4',
        ports: [{ name: 'p', port: targetPort, protocol: 'TCP' }],
        endpoints: [{ addresses: [podIP], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node1' }],
      },
    },
  ]
}

t.test('tundra run comes back when the API server is behind its own ClusterIP', { ...skip, timeout: 150_000 }, async t => {
  let log = ''
  let apiOut = ''
  const { state, procs, pod, node } = await runLab(t, 'ra', () => `tundra's log:\n${log}\nAPI server:\n${apiOut}`)
  const srvIP = state.pods.find(p => p.name === 'srv')!.ip

  // the API server runs in pod srv, serving what the lab computed (Services, EndpointSlices, the Node) and `kubernetes`
  const [afile, ...aargs] = execArgv(state, { pod: 'srv' }, fixtureCommand('apiserver', 'none', [String(API_PORT)]))
  const api = spawn(afile!, aargs, { stdio: ['pipe', 'pipe', 'pipe'] })
  procs.push(api)
  api.stdout!.setEncoding('utf8').on('data', (d: string) => {
    apiOut += d
  })
  api.stderr!.setEncoding('utf8').on('data', (d: string) => {
    apiOut += d
  })
  await until('the API server to listen', async () => apiOut.includes('listening'))
  let acks = 0
  const send = async (cmd: Record<string, unknown>): Promise<void> => {
    api.stdin!.write(JSON.stringify({ op: 'upsert', ...cmd }) + '\n')
    acks++
    await until('the API server to take the object', async () => (apiOut.match(/^ok /gm)?.length ?? 0) >= acks)
  }
  for (const f of readdirSync(state.manifests!)) {
    for (const doc of parseAllDocuments(readFileSync(join(state.manifests!, f), 'utf8'))) {
      const o = doc.toJS() as { kind?: string } | null
      if (o?.kind === 'Service' || o?.kind === 'EndpointSlice' || o?.kind === 'Node') await send({ kind: o.kind, object: o })
    }
  }
  for (const o of service('kubernetes', API_VIP, 443, srvIP, API_PORT)) await send(o)

  const direct = join(state.dir, 'kubeconfig-direct')
  const viaVip = join(state.dir, 'kubeconfig-vip')
  writeFileSync(direct, kubeconfig(`http://${srvIP}:${API_PORT}`))
  writeFileSync(viaVip, kubeconfig(`http://${API_VIP}:443`))
  // with --config, kube-proxy (and tundra) take the kubeconfig and the sync periods from the file only
  const configFor = (kc: string): string => {
    const path = `${kc}.config.yaml`
    writeFileSync(
      path,
      [
        'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
        'kind: KubeProxyConfiguration',
        'clusterCIDR: 10.100.0.0/16',
        `clientConnection: {kubeconfig: ${kc}}`,
        'iptables: {minSyncPeriod: 0s}',
        'tundra:',
        `  control: ${join(state.dir, 'control.sock')}`,
        `  snapshot: {path: ${join(state.dir, 'nat.snapshot')}, intervalSeconds: 1}`,
        '  dns: {upstreams: [172.18.0.53]}',
        '',
      ].join('\n'),
    )
    return path
  }
  const config = configFor(direct)
  const configVip = configFor(viaVip)
  const start = (kc: string): ChildProcess => {
    // kc: the config file naming the kubeconfig
    const [file, ...args] = execArgv(state, { node: 'node1' }, [process.execPath, CLI, 'run', '--config', kc, '--hostname-override', 'node1'])
    const child = spawn(file!, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log += d
    })
    procs.push(child)
    return child
  }
  // 0. no kubeconfig, not in a pod: a clear message and exit 1 (not a retry loop with an unrelated TLS message)
  const none = await node([
    'env',
    '-u',
    'KUBERNETES_SERVICE_HOST',
    `KUBECONFIG=${join(state.dir, 'missing')}`,
    process.execPath,
    CLI,
    'run',
    '--hostname-override',
    'node1',
  ])
  t.equal(none.code, 1, 'without any API server configuration run exits 1')
  t.match(none.stderr, /ERROR tundra: no API server to read Services from.*Give --kubeconfig FILE, or -f MANIFESTS/, 'and says what to give it')

  const answers = async (ip: string): Promise<boolean> => (await pod('cli', ['curl', '-sS', '-m', '2', `http://${ip}:5003/hostname`])).stdout === 'srv'

  // 1. a first run that reaches the API server directly saves the last known state
  let run = start(config)
  await until('the ClusterIP to answer (first run)', async () => answers('10.96.0.50'))
  await until('the last known state to be saved', async () => readdirSync(state.dir).includes('nat.snapshot.objects'))
  run.kill('SIGTERM')
  await until('the first run to exit', async () => run.exitCode !== null || run.signalCode !== null)
  t.equal(run.exitCode, 0, 'the first run stopped cleanly')

  // 2. the restart reaches the API server only through its ClusterIP, which nothing but tundra serves
  log = ''
  run = start(configVip)
  await until('the last known state to be programmed', async () => log.includes('programming the last known state'))
  await until('the first LIST through the ClusterIP', async () => log.includes('first list of the API server done'), 30_000)
  t.pass('the last known state programmed the kubernetes ClusterIP, then the LIST through it succeeded')
  t.ok(await until('the ClusterIP to answer (second run)', async () => answers('10.96.0.50')), 'the Service is served after the restart')

  // 3. the watch through the ClusterIP works: a Service created now is served
  for (const o of service('late', '10.96.0.51', 5003, srvIP, 8080)) await send(o)
  t.ok(await until('a Service created after the restart to answer', async () => answers('10.96.0.51')), 'a new Service reaches the dataplane through the watch')
  t.notMatch(log, /no API server|TypeError/, 'no errors in the log')
  run.kill('SIGTERM')
  await until('the second run to exit', async () => run.exitCode !== null || run.signalCode !== null)
  await node([process.execPath, CLI, 'run', '--config', config, '--cleanup'])
})

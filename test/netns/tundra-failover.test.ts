// Connect-time failover and passive outlier ejection through `tundra run`, with real clients: three backends behind
// a ClusterIP, one of which refuses (TCP reset) or blackholes (drops) from nft rules in its own namespace. With
// failover on, 200 sequential curl connects all succeed and the bad backend shows as ejected in `tundra services`
// and in the metrics; with failover off about a third fail (the test can fail).
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { netnsSkip, run } from '../helpers/netns'
import { execArgv, labDown, labExec, labUp, loadLabState } from '../../src/lab/index'
import { CLI, until } from './fixtures/run-lab'

const skip = netnsSkip('curl', 'nft', 'unshare')
const FIXTURE = join(__dirname, '..', 'fixtures', 'tundra', 'failover.yaml')
const VIP = '10.96.0.60'

t.test('connect-time failover and outlier ejection (tundra run)', { ...skip, timeout: 420_000 }, async t => {
  const name = `fo${process.pid.toString(36)}`
  const procs: ChildProcess[] = []
  let log = ''
  t.teardown(async () => {
    if (!t.passing()) t.comment(log.slice(-4000))
    for (const c of procs) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    await labDown(name, { log: () => {} })
  })
  await labUp({ files: [FIXTURE], name, nodes: 1, dataplane: 'none', log: () => {}, readyTimeoutMs: 30_000 })
  const state = loadLabState(name)
  const pod = (p: string, cmd: string[], timeoutMs = 20_000): ReturnType<typeof labExec> => labExec({ name, target: { pod: p }, cmd, timeoutMs })
  const node = (cmd: string[]): ReturnType<typeof labExec> => labExec({ name, target: { node: 'node1' }, cmd, timeoutMs: 20_000 })
  const ipOf = (p: string): string => state.pods.find(x => x.name === p)!.ip
  const sock = join(state.dir, 'run.sock')

  const start = (on: boolean): ChildProcess => {
    const config = join(state.dir, `failover-${on}.yaml`)
    writeFileSync(
      config,
      [
        'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
        'kind: KubeProxyConfiguration',
        'clusterCIDR: 10.100.0.0/16',
        'iptables: {minSyncPeriod: 0s}',
        'tundra:',
        `  control: ${sock}`,
        '  dns: {upstreams: [172.18.0.53]}',
        `  failover: {enabled: ${on}, synTimeout: 1s, maxRetries: 2}`,
        `  outlierEjection: {enabled: ${on}, consecutiveFailures: 3, baseEjectionTime: 60s, maxEjectionPercent: 50}`,
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
    const child = spawn(file!, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log += d
    })
    procs.push(child)
    return child
  }
  const stop = async (c: ChildProcess): Promise<void> => {
    c.kill('SIGTERM')
    await until('tundra run to exit', async () => c.exitCode !== null || c.signalCode !== null)
  }
  /** n sequential curl connects from the client pod; how many failed */
  const connects = async (n: number): Promise<number> => {
    const script = `fail=0; for i in $(seq ${n}); do curl -s -m 5 -o /dev/null http://${VIP}/hostname || fail=$((fail+1)); done; echo $fail`
    const r = await pod('cli', ['sh', '-c', script], 600_000)
    t.equal(r.code, 0, r.stderr)
    return Number(r.stdout.trim())
  }
  const nft = (p: string, verdict: string): ReturnType<typeof labExec> =>
    pod(p, ['nft', `add table inet tt; add chain inet tt in { type filter hook input priority 0; }; add rule inet tt in tcp dport 8080 ${verdict}`])
  const services = async (output: string): Promise<string> => {
    const r = await run([process.execPath, CLI, 'services', '--socket', sock, '-o', output])
    t.equal(r.code, 0, r.stderr)
    return r.stdout
  }
  const metrics = async (): Promise<string> => (await node(['curl', '-s', '127.0.0.1:10249/metrics'])).stdout

  let runner = start(true)
  await until(
    'tundra run to serve the ClusterIP',
    async () => (await pod('cli', ['curl', '-s', '-m', '2', `http://${VIP}/hostname`])).stdout.startsWith('web-'),
    30_000,
  )
  t.equal(await connects(30), 0, 'all backends up: 30 of 30 connects succeed')

  await t.test('tundra observe --follow shows a new flow and the DNS query of a client', async t => {
    const obs = spawn(process.execPath, [CLI, 'observe', '--follow', '--socket', sock, '-o', 'json', '--pod', 'cli'], { stdio: ['ignore', 'pipe', 'pipe'] })
    procs.push(obs)
    let out = ''
    obs.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d
    })
    const flows = (): {
      kind: string
      dst: string
      dport: number
      endpoint: string
      service: string
      srcPod: string
      dstPod: string
      dns?: { name: string }
    }[] =>
      out
        .split('\n')
        .filter(l => l.startsWith('{'))
        .map(l => JSON.parse(l) as never)
    // observe's first request starts the recording: keep connecting until flows show up
    await until(
      'observe to show the new flow and the DNS query',
      async () => {
        await pod('cli', ['curl', '-s', '-m', '2', '-o', '/dev/null', 'http://web.default.svc.cluster.local/hostname'])
        const f = flows()
        return (
          f.some(x => x.kind === 'new' && x.dst === VIP && x.dport === 80 && x.service === 'default/web' && x.endpoint.endsWith(':8080')) &&
          f.some(x => x.kind === 'dns-query' && x.dns?.name === 'web.default.svc.cluster.local')
        )
      },
      30_000,
    )
    const other = flows().filter(f => f.srcPod !== 'default/cli' && f.dstPod !== 'default/cli')
    t.same(other, [], 'only flows of the client pod (--pod cli)')
    obs.kill('SIGINT')
    await until('observe to stop', async () => obs.exitCode !== null || obs.signalCode !== null)
  })

  await t.test('one backend refuses (RST): failover hides it, ejection takes it out', async t => {
    const r = await nft('web-a', 'reject with tcp reset')
    t.equal(r.code, 0, r.stderr)
    t.equal(await connects(200), 0, 'failover on: 0 of 200 connects failed')
    const wide = await services('wide')
    t.match(wide, new RegExp(`${ipOf('web-a').replace(/\./g, '\\.')}:8080/TCP \\([^)]*ejected \\d+s`), 'tundra services marks the backend ejected')
    t.match(wide, /endpoint signals/, '-o wide shows the golden signals')
    const tr = await run([process.execPath, CLI, 'trace', '--socket', sock, '--src', `${ipOf('cli')}:40000`, '--dst', `${VIP}:80`])
    t.equal(tr.code, 0, tr.stderr)
    t.match(tr.stdout, new RegExp(`skipped: +${ipOf('web-a').replace(/\./g, '\\.')}:8080 is ejected`), 'tundra trace says the backend is skipped as ejected')
    const m = await metrics()
    const ep = `endpoint="${ipOf('web-a')}:8080"`
    t.match(m, new RegExp(`tundra_endpoint_ejected\\{[^}]*${ep}[^}]*\\} 1`), 'tundra_endpoint_ejected is 1')
    t.match(m, new RegExp(`tundra_endpoint_ejections_total\\{[^}]*${ep}[^}]*\\} [1-9]`), 'ejections counted')
    t.match(m, new RegExp(`tundra_endpoint_connect_seconds_count\\{[^}]*endpoint="${ipOf('web-b')}:8080"[^}]*\\} [1-9]`), 'connect times recorded')
  })

  await t.test('one backend blackholes (drop): connects still succeed, the timeout fails them over', async t => {
    const r = await nft('web-b', 'drop')
    t.equal(r.code, 0, r.stderr)
    const t0 = Date.now()
    t.equal(await connects(30), 0, 'failover on: 0 of 30 connects failed')
    t.comment(`30 connects with one backend blackholed took ${Date.now() - t0} ms`)
    const json = JSON.parse(await services('json')) as { services: { signals?: { endpoint: string; failed: number }[] }[] }
    const b = json.services.flatMap(s => s.signals ?? []).find(x => x.endpoint === `${ipOf('web-b')}:8080`)
    t.ok(b !== undefined && b.failed > 0, `the blackholed backend's failed connects are counted (${b?.failed})`)
    await pod('web-b', ['nft', 'delete table inet tt'])
  })

  await t.test('failover off: the refusing backend fails about a third of the connects', async t => {
    await stop(runner)
    runner = start(false)
    await until(
      'tundra run to serve again',
      async () => (await pod('cli', ['curl', '-s', '-m', '2', `http://${VIP}/hostname`])).stdout.startsWith('web-'),
      30_000,
    )
    const failed = await connects(200)
    t.ok(failed > 20 && failed < 120, `${failed} of 200 connects failed without failover`)
  })
  await stop(runner)
})

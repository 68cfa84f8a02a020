// `tundra run --cleanup` leaves a node exactly as it was before tundra: rules, routes (every table, both families),
// links, the DNS address, sysctls, nftables and iptables state are diffed against the state before the first start,
// after a SIGTERM (which leaves the wiring and its blackhole fallbacks in place on purpose) and after `kill -9`. Then
// deploy/README's switch back: kube-proxy's rules for the same objects (`tundra dump`, loaded with iptables-restore)
// serve the ClusterIP on the cleaned node.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { execArgv } from '../../src/lab/index'
import { CLI, runLab, until } from './fixtures/run-lab'

const skip = netnsSkip('curl', 'unshare', 'iptables-restore', 'iptables-save', 'nft')

/** What tundra may touch on a node, as text to diff. */
const STATE: Record<string, string[]> = {
  'ip -4 rule': ['ip', '-4', 'rule', 'show'],
  'ip -6 rule': ['ip', '-6', 'rule', 'show'],
  'ip -4 route (all tables)': ['ip', '-4', 'route', 'show', 'table', 'all'],
  'ip -6 route (all tables)': ['ip', '-6', 'route', 'show', 'table', 'all'],
  links: ['sh', '-c', 'ip -o link show | cut -d" " -f2'],
  addresses: ['ip', '-o', 'addr', 'show'],
  sysctls: [
    'sysctl',
    'net.ipv4.ip_forward',
    'net.ipv4.conf.all.rp_filter',
    'net.ipv4.ip_early_demux',
    'net.ipv4.tcp_early_demux',
    'net.ipv4.udp_early_demux',
    'net.ipv6.conf.all.forwarding',
    'net.ipv6.conf.all.disable_ipv6',
  ],
  nft: ['nft', 'list', 'ruleset'],
  iptables: ['sh', '-c', 'iptables-save | grep -v "^#"'],
}

t.test('tundra run --cleanup restores the node', { ...skip, timeout: 150_000 }, async t => {
  const { state, procs: runs, node, pod } = await runLab(t, 'cl')
  const manifests = state.manifests!
  // everything tundra writes goes under the lab's directory, none of it under /run/tundra
  const config = join(state.dir, 'cleanup-config.yaml')
  writeFileSync(
    config,
    [
      'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
      'kind: KubeProxyConfiguration',
      'clusterCIDR: 10.100.0.0/16',
      'metricsBindAddress: 127.0.0.1:10249',
      'iptables: {minSyncPeriod: 0s}',
      'tundra:',
      `  control: ${join(state.dir, 'control.sock')}`,
      `  snapshot: {path: ${join(state.dir, 'nat.snapshot')}, intervalSeconds: 1}`,
      '  dns: {upstreams: [172.18.0.53]}',
      '',
    ].join('\n'),
  )
  const runArgs = ['run', '--config', config, '-f', manifests, '--hostname-override', 'node1']
  const snapshot = async (): Promise<Record<string, string>> => {
    const out: Record<string, string> = {}
    for (const [k, cmd] of Object.entries(STATE)) out[k] = (await node(cmd)).stdout
    return out
  }
  let log = ''
  const start = (): ChildProcess => {
    const [file, ...args] = execArgv(state, { node: 'node1' }, [process.execPath, CLI, ...runArgs])
    const child = spawn(file!, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log += d
    })
    runs.push(child)
    return child
  }
  const serving = async (): Promise<void> => {
    await until(
      'the ClusterIP to answer through tundra',
      async () => (await pod('cli', ['curl', '-sS', '-m', '2', 'http://10.96.0.50:5003/hostname'])).stdout === 'srv',
    )
  }
  const exited = (c: ChildProcess): Promise<unknown> => until('tundra to exit', async () => c.exitCode !== null || c.signalCode !== null)
  const cleanup = async (): Promise<string> => {
    const r = await node([process.execPath, CLI, ...runArgs, '--cleanup'])
    t.equal(r.code, 0, `tundra run --cleanup exits 0 (${r.stderr.trim().split('\n').at(-1)})`)
    return r.stderr
  }
  const same = (what: string, before: Record<string, string>, after: Record<string, string>): void => {
    for (const k of Object.keys(STATE)) t.equal(after[k], before[k], `${what}: ${k} as before tundra`)
  }

  // IPv6 duplicate address detection on the lab's new links adds local routes when it ends: let it end first
  await until('IPv6 DAD to finish on the node', async () => (await node(['ip', '-6', 'addr', 'show', 'tentative'])).stdout.trim() === '')
  const before = await snapshot()

  // 1. SIGTERM: the wiring stays (blackhole fallbacks and all), then --cleanup takes it away
  let run = start()
  await serving()
  t.not((await snapshot())['sysctls'], before['sysctls'], 'tundra changed sysctls while running (early demux off)')
  run.kill('SIGTERM')
  await exited(run)
  const left = (await node(['ip', 'route', 'show', 'table', '190'])).stdout
  t.match(left, /blackhole default/, 'after SIGTERM the blackhole fallback stays in table 190 (for a restart)')
  t.match((await node(['ip', 'rule', 'show'])).stdout, /^92:/m, 'and the pod rule stays')
  const out = await cleanup()
  t.match(out, /ip -4 rule del pref 92/, 'cleanup says what it removed')
  same('after SIGTERM and --cleanup', before, await snapshot())
  t.equal((await node(['sh', '-c', `ls ${state.dir} | grep -c -e control.sock -e nat.snapshot || true`])).stdout.trim(), '0', 'no tundra files are left')

  // 2. kill -9: nothing ran on the way out; --cleanup still restores everything from the journal
  run = start()
  await serving()
  run.kill('SIGKILL')
  await exited(run)
  t.match((await node(['ip', 'rule', 'show'])).stdout, /^92:/m, 'after kill -9 the rules are still there')
  await cleanup()
  same('after kill -9 and --cleanup', before, await snapshot())
  const again = await node([process.execPath, CLI, ...runArgs, '--cleanup'])
  t.equal(again.code, 0, 'a second --cleanup finds nothing to do and succeeds')

  // 3. --cleanup refuses while a tundra runs (it would cut the node off under it)
  run = start()
  await serving()
  const refused = await node([process.execPath, CLI, ...runArgs, '--cleanup'])
  t.not(refused.code, 0, 'cleanup refuses while tundra runs')
  t.match(refused.stderr, /stop it first/, 'and says why')
  run.kill('SIGTERM')
  await exited(run)
  await cleanup()

  // 4. switch back: kube-proxy's own rules for the same objects serve the ClusterIP on the cleaned node
  const dump = await node([process.execPath, CLI, 'dump', '-f', manifests, '--node-name', 'node1', '--format', 'iptables-save'])
  t.equal(dump.code, 0, `tundra dump (${dump.stderr.trim()})`)
  const restore = await node(['iptables-restore', '--noflush'], dump.stdout)
  t.equal(restore.code, 0, `kube-proxy's rules load (${restore.stderr.trim()})`)
  const viaKernel = await until('the ClusterIP through kube-proxy rules', async () => {
    const r = await pod('cli', ['curl', '-sS', '-m', '2', 'http://10.96.0.50:5003/hostname'])
    return r.stdout === 'srv' ? r : undefined
  })
  t.equal(viaKernel.stdout, 'srv', "after --cleanup, kube-proxy's iptables rules serve the ClusterIP")
  t.notMatch(log, /TypeError|ReferenceError/, "no programming errors in tundra's log")
})

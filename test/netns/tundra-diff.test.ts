// `tundra diff --from-node` on real rules: tundra's own dump loaded into iptables-legacy, iptables-nft and nft in a
// fresh network namespace, read back there with iptables-save / nft list ruleset, agrees (exit 0); after a rule is
// deleted or changed in the kernel, it names the chain and exits 1.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { netnsSkip, topology } from '../helpers/netns'

const root = join(__dirname, '..', '..')
const CLI = join(root, 'dist/src/cli/main.js')
// two services with ClientIP affinity; default/sticky has three endpoints
const FILES = ['-f', join(root, 'test/fixtures/k8s/cases/affinity.yaml')]
const SVC_CHAIN = 'KUBE-SVC-BJWR5DPVIKTHVKZU'
const SEP_63 = 'KUBE-SEP-3A2QKRAHYHIF4POI'

function tundra(args: string[], opts: { ns?: string } = {}): { status: number | null; stdout: string; stderr: string } {
  const cmd = opts.ns === undefined ? ['node', CLI, ...args] : ['ip', 'netns', 'exec', opts.ns, 'node', CLI, ...args]
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
}

const VARIANTS = [
  { mode: 'iptables-legacy', restore: 'iptables-legacy-restore', del: 'iptables-legacy', format: 'iptables-save' },
  { mode: 'iptables-nft', restore: 'iptables-nft-restore', del: 'iptables-nft', format: 'iptables-save' },
  { mode: 'nft', restore: 'nft', del: 'nft', format: 'nft' },
] as const

for (const v of VARIANTS) {
  const skip = netnsSkip(v.restore)
  t.test(`${v.mode}: tundra's dump loaded in a namespace agrees with tundra; a deleted rule is reported`, { ...skip, timeout: 120_000 }, async t => {
    const dump = tundra(['dump', ...FILES, '--format', v.format])
    t.equal(dump.status, 0, dump.stderr)
    const topo = topology(t, 'diff')
    const ns = await topo.ns('n')
    const load = await topo.exec(ns, v.mode === 'nft' ? ['nft', '-f', '-'] : [v.restore], { input: dump.stdout })
    t.equal(load.code, 0, `load: ${load.stderr}`)

    const agree = tundra(['diff', ...FILES, '--from-node', '--mode', v.mode], { ns })
    t.equal(agree.status, 0, `agree: ${agree.stdout}${agree.stderr}`)
    t.match(agree.stdout, /^agree: 2 service port\(s\) in the live (iptables|nft) rules \(IPv4\) match tundra's$/m)
    // the default mode finds what is there: nft's kube-proxy table, else what the node's iptables-save reads
    const saveVariant = /\((legacy|nf_tables)\)/.exec(spawnSync('iptables-save', ['--version'], { encoding: 'utf8' }).stdout ?? '')?.[1]
    if (v.mode === 'nft' || v.mode === (saveVariant === 'legacy' ? 'iptables-legacy' : 'iptables-nft')) {
      const auto = tundra(['diff', ...FILES, '--from-node', '-o', 'json'], { ns })
      t.equal(auto.status, 0, `default mode: ${auto.stdout}${auto.stderr}`)
      t.equal((JSON.parse(auto.stdout) as { mode: string }).mode, v.mode === 'nft' ? 'nft' : 'iptables')
    }

    // take one endpoint out of default/sticky's service chain, in the kernel
    if (v.mode === 'nft') {
      const list = await topo.exec(ns, ['nft', '-a', 'list', 'table', 'ip', 'kube-proxy'])
      const chain = /chain (service-\S+-default\/sticky\/tcp\/) \{/.exec(list.stdout)?.[1]
      t.ok(chain, 'the service chain is listed')
      const block = list.stdout.slice(list.stdout.indexOf(`chain ${chain} {`))
      const rule = /numgen random mod 3 vmap \{ 0 : goto (\S+), 1 : goto (\S+), 2 : goto (\S+) \} # handle (\d+)/.exec(block)
      t.ok(rule, 'its numgen rule')
      const vmap = `{ 0 : goto ${rule![1]}, 1 : goto ${rule![2]} }`
      const r = await topo.exec(ns, ['nft', 'replace', 'rule', 'ip', 'kube-proxy', chain!, 'handle', rule![4]!, 'numgen', 'random', 'mod', '2', 'vmap', vmap])
      t.equal(r.code, 0, r.stderr)
      const differ = tundra(['diff', ...FILES, '--from-node', '--mode', 'nft'], { ns })
      t.equal(differ.status, 1, differ.stderr)
      t.match(differ.stdout, `default/sticky (${chain}): endpoint 10.244.3.63:80 (${rule![3]}) missing in live rules`)
      t.match(differ.stdout, `default/sticky (${chain}): endpoint 10.244.1.61:80 probability: live 1/2, tundra 1/3`)
    } else {
      const r = await topo.exec(ns, [v.del, '-t', 'nat', '-D', SVC_CHAIN, '-m', 'comment', '--comment', 'default/sticky', '-j', SEP_63])
      t.equal(r.code, 0, r.stderr)
      const differ = tundra(['diff', ...FILES, '--from-node', '--mode', v.mode], { ns })
      t.equal(differ.status, 1, differ.stderr)
      t.match(differ.stdout, `default/sticky (${SVC_CHAIN}): endpoint 10.244.3.63:80 (${SEP_63}) missing in live rules`)
    }
  })
}

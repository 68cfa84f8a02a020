// `tundra diff`: tundra's own dump (iptables-save and nft) agrees with itself, every golden ruleset agrees with the
// cluster it was rendered from, and each mutation of a dump (an endpoint dropped, a probability changed, affinity
// dropped, a NodePort changed, a stray service, another masquerade mark) is reported once, naming its chain.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { diffRules, formatDiff, tundraRules, type DiffReport } from '../../src/inspect/diff'
import { parseRuleset } from '../../src/kubeproxy/parse'
import { RulesetParseError, type RuleMode } from '../../src/kubeproxy/parse-model'
import { loadCluster } from '../../src/k8s/index'
import { dumpRules, type DumpOptions } from '../../src/kubeproxy/dump'
import type { NormalizeOptions } from '../../src/k8s/normalize'
import type { Family } from '../../src/model/cluster'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { CASES, PINNED, SEP_CHAINS, SVC_CHAIN, cliChild, liveView, quietView, root } from './helpers/inspect'
import { serveControl } from '../../src/agent/control'
import { inspectHandlers } from '../../src/inspect/handlers'

const VIEWS = {
  seed: quietView([PINNED]).view,
  sticky: quietView([join(CASES, 'affinity.yaml')]).view,
  front: quietView([join(CASES, 'nodeport.yaml')]).view,
}
type Which = keyof typeof VIEWS

function dump(mode: RuleMode, which: Which = 'seed'): string {
  return tundraRules(VIEWS[which], mode, 4)
}

async function diff(live: string, which: Which = 'seed'): Promise<DiffReport> {
  return diffRules(live, (mode, family) => tundraRules(VIEWS[which], mode, family))
}

/** The report's lines, without the closing summary line. */
function lines(r: DiffReport): string[] {
  return r.agree ? [] : formatDiff(r).trim().split('\n').slice(0, -1)
}

t.test("tundra's own dump agrees with tundra, in both modes", async t => {
  for (const which of Object.keys(VIEWS) as Which[]) {
    for (const mode of ['iptables', 'nft'] as const) {
      const r = await diff(dump(mode, which), which)
      t.equal(r.mode, mode)
      t.equal(r.agree, true, `${which} ${mode}: ${lines(r).join('; ')}`)
      t.same(r.differences, [])
      t.ok(r.servicePorts >= 1, `${which} ${mode}: ${r.servicePorts} service ports compared`)
      t.match(formatDiff(r), /^agree: \d+ service port\(s\)/)
    }
  }
})

t.test('every golden ruleset agrees with the cluster it was rendered from', async t => {
  interface Case {
    name: string
    inputs: string[]
    normalize: NormalizeOptions
    proxy: DumpOptions
  }
  const { cases } = JSON.parse(readFileSync(join(root, 'test/fixtures/k8s/cases.json'), 'utf8')) as { cases: Case[] }
  for (const c of cases) {
    const cluster = loadCluster(
      c.inputs.map(p => join(root, p)),
      c.normalize,
    ).cluster
    const d = dumpRules(cluster, c.proxy)
    const render = (mode: RuleMode, family: Family): string =>
      (family === 4 ? (mode === 'nft' ? d.nft : d.iptables) : mode === 'nft' ? d.nft6 : d.ip6tables) ?? ''
    for (const ext of ['iptables', 'nft', 'ip6tables', 'nft6']) {
      let golden: string
      try {
        golden = readFileSync(join(root, 'test/fixtures/k8s/golden', `${c.name}.${ext}`), 'utf8')
      } catch {
        continue
      }
      const r = await diffRules(golden, render, ext === 'ip6tables' || ext === 'nft6' ? 6 : 4)
      t.equal(r.agree, true, `${c.name}.${ext}: ${lines(r).join('; ')}`)
    }
  }
})

t.test('iptables: each mutation is reported with its chain', async t => {
  const base = dump('iptables')
  const seedName = 'default/nginx-pod08'

  // an endpoint dropped from the service chain
  const dropEp = base
    .split('\n')
    .filter(l => !(l.startsWith(`-A ${SVC_CHAIN} `) && l.endsWith(`-j ${SEP_CHAINS[1]}`)))
    .join('\n')
  let r = await diff(dropEp)
  t.same(lines(r), [`${seedName} (${SVC_CHAIN}): endpoint 10.100.85.253:80 (${SEP_CHAINS[1]}) missing in live rules`])

  // a probability changed; kube-proxy's written form of the same value (0.5000000000) is no difference
  r = await diff(base.replace('--probability 0.50000000000', '--probability 0.33333333349'))
  t.same(lines(r), [`${seedName} (${SVC_CHAIN}): endpoint 10.100.85.246:80 probability: live 0.33333333349, tundra 0.50000000000`])
  r = await diff(base.replace('--probability 0.50000000000', '--probability 0.5000000000'))
  t.equal(r.agree, true, 'same probability after iptables rounding')

  // affinity dropped
  const noAffinity = dump('iptables', 'sticky')
    .split('\n')
    .filter(l => !(l.includes('"default/sticky"') && l.includes('--rcheck')))
    .join('\n')
  r = await diff(noAffinity, 'sticky')
  t.same(lines(r), ['default/sticky (KUBE-SVC-BJWR5DPVIKTHVKZU): session affinity: live none, tundra ClientIP 600s'])

  // a NodePort changed
  r = await diff(dump('iptables', 'front').replace('"default/front" -m tcp --dport 30080', '"default/front" -m tcp --dport 30081'), 'front')
  t.same(lines(r), ['default/front (KUBE-SVC-DFME4TBX5E6GT2OD): node port: live 30081, tundra 30080'])

  // a stray service kube-proxy still has and tundra does not
  const stray = [
    '-A KUBE-SERVICES -d 10.96.9.9/32 -p tcp -m comment --comment "default/stray:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-STRAYSTRAYSTRAY2',
    '-A KUBE-SVC-STRAYSTRAYSTRAY2 -m comment --comment "default/stray:http" -j KUBE-SEP-STRAYSTRAYSTRAY2',
    '-A KUBE-SEP-STRAYSTRAYSTRAY2 -p tcp -m comment --comment "default/stray:http" -m tcp -j DNAT --to-destination 10.100.9.9:8080',
  ]
  r = await diff(base.replace(/^(\*nat\n(?:.*\n)*?)(COMMIT)/m, (_m, body: string, commit: string) => `${body}${stray.join('\n')}\n${commit}`))
  t.equal(r.differences.length, 1, lines(r).join('; '))
  t.same(lines(r), ['default/stray:http (KUBE-SVC-STRAYSTRAYSTRAY2): service port only in live rules (10.96.9.9:80)'])

  // another masquerade mark, and a service chain without its masquerade rule
  r = await diff(base.replace('MARK --set-xmark 0x4000/0x4000', 'MARK --set-xmark 0x8000/0x8000'))
  t.same(lines(r), ['node (KUBE-MARK-MASQ): masquerade mark: live 0x8000, tundra 0x4000'])
  r = await diff(
    base
      .split('\n')
      .filter(l => !(l.startsWith(`-A ${SVC_CHAIN} `) && l.endsWith('-j KUBE-MARK-MASQ')))
      .join('\n'),
  )
  t.same(lines(r), [`${seedName} (${SVC_CHAIN}): cluster IP masquerade missing in live rules (tundra: not from 10.100.0.0/16)`])

  t.equal(
    formatDiff(r).trim().split('\n').at(-1),
    `1 difference(s) between the live iptables rules (IPv4) and tundra's, ${r.servicePorts} service port(s) compared`,
  )
})

t.test('nft: each mutation is reported with its chain', async t => {
  const base = dump('nft')
  const svc = /chain (service-[A-Z2-7]{8}-default\/nginx-pod08\/tcp\/) \{/.exec(base)?.[1] ?? ''
  t.not(svc, '')
  const vmap = /numgen random mod 2 vmap \{ 0 : goto (endpoint-\S+), 1 : goto (endpoint-\S+) \}/.exec(base.slice(base.indexOf(`chain ${svc} {`)))!
  let r = await diff(base.replace(vmap[0], `numgen random mod 1 vmap { 0 : goto ${vmap[1]} }`))
  t.same(lines(r), [
    `default/nginx-pod08 (${svc}): endpoint 10.100.85.246:80 probability: live 1/1, tundra 1/2`,
    `default/nginx-pod08 (${svc}): endpoint 10.100.85.253:80 (${vmap[2]}) missing in live rules`,
  ])

  r = await diff(dump('nft', 'sticky').replace(/\n\t\tip saddr @affinity-\S+-default\/sticky\/tcp\/__\S+ goto \S+/g, ''), 'sticky')
  t.same(lines(r), ['default/sticky (service-EDE2N7RF-default/sticky/tcp/): session affinity: live none, tundra ClientIP 600s'])

  r = await diff(dump('nft', 'front').replace('tcp . 30080 : goto external-', 'tcp . 30081 : goto external-'), 'front')
  t.same(lines(r), ['default/front (service-YIXGGQEY-default/front/tcp/): node port: live 30081, tundra 30080'])

  r = await diff(base.replace('meta mark set meta mark | 0x00004000', 'meta mark set meta mark | 0x00008000'))
  t.same(lines(r), ['node (mark-for-masquerade): masquerade mark: live 0x8000, tundra 0x4000'])

  // a stray element of service-ips, with its chain
  const stray = base
    .replace(/(map service-ips \{[^}]*elements = \{\n)/, '$110.96.9.9 . tcp . 80 : goto service-AAAAAAAA-default/stray/tcp/http,\n')
    .replace(/\n\}\n$/, '\n\tchain service-AAAAAAAA-default/stray/tcp/http {\n\t}\n}\n')
  r = await diff(stray)
  t.same(lines(r), ['default/stray:http (service-AAAAAAAA-default/stray/tcp/http): service port only in live rules (10.96.9.9:80)'])
})

t.test('bad input is a RulesetParseError naming the line', async t => {
  t.throws(() => parseRuleset('hello\n'), RulesetParseError)
  t.throws(() => parseRuleset('*nat\n-A KUBE-SERVICES -m comment --comment "x\nCOMMIT\n'), { message: /^line 2: unterminated quoted string/ })
  t.throws(() => parseRuleset('*nat\nbogus line\nCOMMIT\n'), { message: /^line 2: not iptables-save output/ })
  t.throws(() => parseRuleset('table ip kube-proxy {\n\tchain x {\n'), { message: /not closed/ })
  await t.rejects(diff('*nat\n-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "a/b cluster IP" -m tcp --dport x -j KUBE-SVC-A\nCOMMIT\n'), {
    message: /^line 2: --dport: expected a number/,
  })
})

t.test('the command: exit 0 agree, 1 differ, 2 bad input naming the file and line; -o json', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-diff-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = (name: string, text: string): string => {
    const p = join(dir, name)
    writeFileSync(p, text)
    return p
  }
  const same = file('same.rules', dump('iptables'))
  const changed = file('changed.rules', dump('iptables').replace('--probability 0.50000000000', '--probability 0.25'))
  const bad = file('bad.rules', '*nat\n-A KUBE-SERVICES -p tcp --dport\nCOMMIT\n')

  let r = await cliChild(['diff', '-f', PINNED, '--rules', same])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, "agree: 1 service port(s) in the live iptables rules (IPv4) match tundra's\n")

  r = await cliChild(['diff', '-f', PINNED, '--rules', changed, '-o', 'json'])
  t.equal(r.code, 1, r.stderr)
  const report = JSON.parse(r.stdout) as DiffReport
  t.same(report.differences, [
    { servicePort: 'default/nginx-pod08/tcp', chain: SVC_CHAIN, what: 'endpoint 10.100.85.246:80 probability', live: '0.25000000000', tundra: '0.50000000000' },
  ])

  r = await cliChild(['diff', '-f', PINNED, '--rules', bad])
  t.equal(r.code, 2)
  t.equal(r.stderr, `tundra diff: ${bad}: line 2: --dport without a value\n`)

  r = await cliChild(['diff', '-f', PINNED])
  t.equal(r.code, 2)
  t.match(r.stderr, /give the live rules: --rules FILE/)
})

t.test("online: --socket compares with a running agent's own rules", async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-diff-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const sock = join(dir, 'agent.sock')
  const { view } = liveView()
  const server = await serveControl(sock, inspectHandlers(view))
  t.teardown(() => server.close())
  const nft = join(dir, 'live.nft')
  writeFileSync(nft, tundraRules(view, 'nft', 4).replace('meta mark set meta mark | 0x00004000', 'meta mark set meta mark | 0x00008000'))
  const r = await cliChild(['diff', '--socket', sock, '--rules', nft])
  t.equal(r.code, 1, r.stderr)
  t.equal(r.stdout.split('\n')[0], 'node (mark-for-masquerade): masquerade mark: live 0x8000, tundra 0x4000')
})

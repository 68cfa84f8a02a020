// The kernel side of an incremental sync: partial iptables-restore and nft transactions computed from two dumps.
import t from 'tap'
import { dumpRules } from '../../src/kubeproxy/dump'
import type { Cluster } from '../../src/model/cluster'
import {
  iptablesDelta,
  nftDelta,
  parseIptablesSave,
  parseNftScript,
  patchIptables,
  patchNft,
  type IptablesDump,
  type NftDump,
} from '../../bench/lib/ruleset-delta'
import { PROXY_OPTIONS, synthCluster, withMovedEndpoint } from '../../bench/lib/synth'

const cluster = synthCluster(3, 2)
const moved = { ...cluster, services: cluster.services.map((s, i) => (i === 1 ? withMovedEndpoint(s, 1) : s)) }
const before = dumpRules(cluster, PROXY_OPTIONS)
const after = dumpRules(moved, PROXY_OPTIONS)

t.test('parseIptablesSave', async t => {
  const d = parseIptablesSave(before.iptables)
  t.same([...d.tables.keys()], ['filter', 'nat'])
  const nat = d.tables.get('nat')!.chains
  t.equal(nat.get('KUBE-SERVICES')!.rules.length, 4, 'three services and the nodeports jump')
  t.ok([...nat.keys()].filter(k => k.startsWith('KUBE-SEP-')).length === 6)
})

t.test('iptables delta of a moved endpoint', async t => {
  const d = iptablesDelta(before.iptables, after.iptables)
  t.equal(d.changedChains, 3, 'the service chain, the new endpoint chain, the old endpoint chain')
  t.match(d.text, /^\*nat$/m)
  t.match(d.text, /^-X KUBE-SEP-/m, 'the old endpoint chain is deleted')
  t.match(d.text, /^:KUBE-SERVICES - \[0:0\]$/m, 'KUBE-SERVICES is rewritten, as kube-proxy always does')
  t.match(d.text, /^\*filter\n:KUBE-EXTERNAL-SERVICES/m, "filter's top-level chains too (kube-proxy rewrites them every sync)")
  t.notMatch(d.text, /^-A (INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) /m, 'built-in chains are left alone')
  t.equal(iptablesDelta(before.iptables, before.iptables, []).text, '', 'no change, nothing to send')
  const x = d.text.indexOf('-X ')
  t.ok(x > d.text.lastIndexOf('-A '), 'deletions come after every rule')
})

t.test('nft delta of a moved endpoint', async t => {
  const p = parseNftScript(before.nft)
  t.equal(p.table, 'kube-proxy')
  t.equal(p.sets.get('service-ips')!.elements.length, 3)
  const d = nftDelta(before.nft, after.nft)
  t.equal(d.changedChains, 3)
  t.equal(d.elements, 0, 'maps point at the service chain: unchanged')
  t.match(d.text, /^add chain ip kube-proxy endpoint-/m)
  t.match(d.text, /^flush chain ip kube-proxy service-/m)
  t.match(d.text, /^delete chain ip kube-proxy endpoint-/m)
  t.equal(nftDelta(before.nft, before.nft).text, '')
})

t.test('nft delta with set elements', async t => {
  const fewer = dumpRules({ ...cluster, services: cluster.services.slice(0, 2) }, PROXY_OPTIONS)
  const d = nftDelta(before.nft, fewer.nft)
  t.match(d.text, /^delete element ip kube-proxy service-ips \{ 10\.97\.0\.2 \. tcp \. 80 \}$/m, 'map keys without their verdicts')
  t.match(d.text, /^delete element ip kube-proxy cluster-ips \{ 10\.97\.0\.2 \}$/m)
})

t.test('patching the full dump with a render of the changed service alone gives the full render after the change', async t => {
  const big = synthCluster(12, 3)
  const mid = 6
  const alone = (g: number): Cluster => ({ ...big, services: [g === 0 ? big.services[mid]! : withMovedEndpoint(big.services[mid]!, g)] })
  const whole = (g: number): Cluster => ({ ...big, services: big.services.map((s, i) => (i === mid && g > 0 ? withMovedEndpoint(s, g) : s)) })
  const chainsOf = (d: IptablesDump): Record<string, Record<string, string[]>> =>
    Object.fromEntries([...d.tables].map(([n, tb]) => [n, Object.fromEntries([...tb.chains].map(([c, v]) => [c, v.rules]).sort())]))
  const setsOf = (d: NftDump): Record<string, string[]> => Object.fromEntries([...d.sets].map(([n, s]) => [n, [...s.elements].sort()]).sort())
  const sorted = (text: string): string[] => text.split('\n').sort()
  let ipt = parseIptablesSave(dumpRules(whole(0), PROXY_OPTIONS).iptables)
  let nft = parseNftScript(dumpRules(whole(0), PROXY_OPTIONS).nft)
  for (const g of [1, 2]) {
    const truth = dumpRules(whole(g), PROXY_OPTIONS)
    const before = dumpRules(alone(g - 1), PROXY_OPTIONS)
    const after = dumpRules(alone(g), PROXY_OPTIONS)
    const pi = patchIptables(ipt, parseIptablesSave(before.iptables), parseIptablesSave(after.iptables))
    const pn = patchNft(nft, parseNftScript(before.nft), parseNftScript(after.nft))
    t.same(chainsOf(pi), chainsOf(parseIptablesSave(truth.iptables)), `iptables after change ${g}`)
    t.same(Object.fromEntries([...pn.chains].sort()), Object.fromEntries([...parseNftScript(truth.nft).chains].sort()), `nft chains after change ${g}`)
    t.same(setsOf(pn), setsOf(parseNftScript(truth.nft)), `nft sets after change ${g}`)
    // and the partial syncs made from it are the ones made from full renders (chain order aside)
    const prevText = dumpRules(whole(g - 1), PROXY_OPTIONS)
    t.same(sorted(iptablesDelta(ipt, pi).text), sorted(iptablesDelta(prevText.iptables, truth.iptables).text), `iptables delta ${g}`)
    t.same(sorted(nftDelta(nft, pn).text), sorted(nftDelta(prevText.nft, truth.nft).text), `nft delta ${g}`)
    t.equal(iptablesDelta(ipt, pi).changedChains, 3)
    ipt = pi
    nft = pn
  }
  const same = patchIptables(ipt, ipt, ipt)
  t.ok(
    [...same.tables.values()].every((tb, i) => tb === [...ipt.tables.values()][i]),
    'no difference: the tables are the ones given',
  )
})

// The kernel side of an incremental sync: partial iptables-restore and nft transactions computed from two dumps.
import t from 'tap'
import { dumpRules } from '../../src/kubeproxy/dump'
import { iptablesDelta, nftDelta, parseIptablesSave, parseNftScript } from '../../bench/lib/ruleset-delta'
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
  t.match(d.text, /^\*filter\n:KUBE-EXTERNAL-SERVICES/m, 'filter\'s top-level chains too (kube-proxy rewrites them every sync)')
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

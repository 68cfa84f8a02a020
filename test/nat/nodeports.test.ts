// Which node addresses serve NodePorts in the NAT table: the same rule as `tundra dump` (model/nodeports.ts), per
// kube-proxy mode, plus localhost NodePorts; and the engine's verdicts for them.
import t from 'tap'
import { compileNat, servesLocalhostNodePorts, type NatConfig } from '../../src/nat/compile'
import { nodePortIPs as dumpNodePortIPs } from '../../src/kubeproxy/serviceports'
import { wordsToString } from '../../src/nat/addr'
import type { FamilyTable } from '../../src/nat/compile'
import type { Cluster } from '../../src/model/cluster'
import { NODE } from './packets'

const cluster: Cluster = { services: [], nodes: [] } as unknown as Cluster
const IPS = ['192.168.1.10', '10.0.0.5', 'fd00:1::10']

function addrs(ft: FamilyTable): string[] {
  const out: string[] = []
  for (let r = 0; r < ft.nodePortAddrs.length; r += ft.aw) out.push(wordsToString(ft.nodePortAddrs, r, ft.family))
  return out
}

function table(extra: Partial<NatConfig>) {
  return compileNat(cluster, { nodeName: NODE, nodeIPs: IPS, clusterCIDRs: ['10.100.0.0/16'], ...extra })
}

const cases: [string, Partial<NatConfig>, string[], string[]][] = [
  ['iptables, empty list: every node IP', { proxyMode: 'iptables' }, ['192.168.1.10', '10.0.0.5'], ['fd00:1::10']],
  ['nftables, empty list: the primary IP per family', { proxyMode: 'nftables' }, ['192.168.1.10'], ['fd00:1::10']],
  ['a CIDR: node IPs inside it; other family all', { nodePortAddresses: ['10.0.0.0/8'] }, ['10.0.0.5'], ['fd00:1::10']],
  ['primary', { nodePortAddresses: ['primary'] }, ['192.168.1.10'], ['fd00:1::10']],
  ['0.0.0.0/0', { nodePortAddresses: ['0.0.0.0/0'], proxyMode: 'nftables' }, ['192.168.1.10', '10.0.0.5'], ['fd00:1::10']],
  ['localhost NodePorts (iptables)', { localhostNodePorts: true }, ['192.168.1.10', '10.0.0.5', '127.0.0.1'], ['fd00:1::10']],
  ['localhost NodePorts off in nftables mode', { localhostNodePorts: true, proxyMode: 'nftables' }, ['192.168.1.10'], ['fd00:1::10']],
  ['localhost NodePorts off when the list has no loopback', { localhostNodePorts: true, nodePortAddresses: ['primary'] }, ['192.168.1.10'], ['fd00:1::10']],
]

for (const [name, extra, v4, v6] of cases) {
  t.test(name, async t => {
    const tb = table(extra)
    t.same(addrs(tb.v4), v4, 'IPv4 NodePort addresses')
    t.same(addrs(tb.v6), v6, 'IPv6 NodePort addresses')
    t.equal(servesLocalhostNodePorts(tb.config), v4.includes('127.0.0.1'), 'wiring steers loopback exactly then')
    // the dump renders the same set (undefined: every local address = every node IP here)
    const mode = tb.config.proxyMode
    const opts = { nodeIPs: IPS, nodePortAddresses: tb.config.nodePortAddresses, localhostNodePorts: tb.config.localhostNodePorts }
    t.same(
      dumpNodePortIPs(opts, 4, mode) ?? ['192.168.1.10', '10.0.0.5'],
      v4.filter(a => a !== '127.0.0.1'),
      'tundra dump agrees (IPv4)',
    )
    t.same(dumpNodePortIPs(opts, 6, mode) ?? ['fd00:1::10'], v6, 'tundra dump agrees (IPv6)')
  })
}

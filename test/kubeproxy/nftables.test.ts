// renderNft on hand-built Clusters: map entries, chain names and verdicts as kube-proxy's nftables mode makes them.
import t from 'tap'
import type { Endpoint, Service } from '../../src/model/cluster'
import { cluster, ep as endpoint, svc as service } from '../helpers/cluster'
import { nftDuration, renderNft } from '../../src/kubeproxy/nftables'
import { nftServicePortChainNameBase, nftServicePortEndpointChainNameBase } from '../../src/kubeproxy/names'

function ep(ip: string, port: number, extra: Partial<Endpoint> = {}): Endpoint {
  return endpoint(ip, { serving: true, ports: [{ name: 'http', protocol: 'TCP', port }], ...extra })
}

function svc(extra: Partial<Service> = {}): Service {
  return service({
    namespace: 'ns1',
    name: 'svc1',
    clusterIPs: ['172.30.0.41'],
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 80, nodePort: 0 }],
    ...extra,
  })
}

function chainBody(text: string, name: string): string[] {
  const start = text.indexOf(`\tchain ${name} {\n`)
  if (start < 0) return []
  const end = text.indexOf('\n\t}', start)
  return text
    .slice(start, end)
    .split('\n')
    .slice(1)
    .map(l => l.trim())
}

const base = nftServicePortChainNameBase('ns1', 'svc1', 'tcp', 'http')
const epChain = (ip: string, port: number): string => `endpoint-${nftServicePortEndpointChainNameBase('ns1', 'svc1', 'tcp', 'http', ip, port)}`

t.test('service-ips map entry, numgen vmap over endpoint chains, dnat in each', async t => {
  const out = renderNft(cluster(svc({ endpoints: [ep('10.180.0.1', 80), ep('10.180.0.2', 80)] })))
  t.ok(out.includes(`\t\t\t172.30.0.41 . tcp . 80 : goto service-${base}\n`))
  t.same(chainBody(out, `service-${base}`), [`numgen random mod 2 vmap { 0 : goto ${epChain('10.180.0.1', 80)}, 1 : goto ${epChain('10.180.0.2', 80)} }`])
  t.same(chainBody(out, epChain('10.180.0.1', 80)), ['ip saddr 10.180.0.1 jump mark-for-masquerade', 'meta l4proto tcp dnat to 10.180.0.1:80'])
  t.match(out, /^table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy \{/m)
})

t.test('no endpoints: the cluster IP goes to no-endpoint-services with goto reject-chain', async t => {
  const out = renderNft(cluster(svc({ type: 'NodePort', ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 80, nodePort: 30080 }] })))
  t.ok(out.includes('172.30.0.41 . tcp . 80 comment "ns1/svc1:http" : goto reject-chain'))
  t.ok(out.includes('tcp . 30080 comment "ns1/svc1:http" : goto reject-chain'))
  t.notOk(out.includes(`service-${base}`))
})

t.test('affinity: a timeout set per endpoint, checked before numgen, updated in the endpoint chain', async t => {
  const out = renderNft(cluster(svc({ affinityTimeout: 10800, endpoints: [ep('10.180.0.1', 80)] })))
  const aff = epChain('10.180.0.1', 80).replace(/^endpoint-/, 'affinity-')
  t.ok(out.includes(`\tset ${aff} {\n\t\ttype ipv4_addr\n\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout 3h\n\t}`))
  t.same(chainBody(out, `service-${base}`)[0], `ip saddr @${aff} goto ${epChain('10.180.0.1', 80)}`)
  t.same(chainBody(out, epChain('10.180.0.1', 80))[1], `update @${aff} { ip saddr }`)
})

t.test('loadBalancerSourceRanges: firewall-ips entry and a drop for other sources (sorted, node-allowed VIP added)', async t => {
  const out = renderNft(
    cluster(
      svc({
        type: 'LoadBalancer',
        loadBalancerIngress: [{ ip: '5.6.7.8', ipMode: 'VIP' }],
        loadBalancerSourceRanges: ['192.168.0.0/16', '1.2.3.0/24'],
        endpoints: [ep('10.180.0.1', 80)],
      }),
    ),
    { nodeIPs: ['192.168.1.1'] },
  )
  t.ok(out.includes(`5.6.7.8 . tcp . 80 : goto firewall-${base}`))
  t.same(chainBody(out, `firewall-${base}`), ['ip saddr != { 1.2.3.0/24, 5.6.7.8, 192.168.0.0/16 } drop'])
})

t.test('IPv6 table', async t => {
  const out = renderNft(cluster(svc({ clusterIPs: ['fd00::41'], ipFamilies: [6], endpoints: [ep('fd00:180::1', 80)] })), {
    family: 6,
    clusterCIDR: 'fd00:180::/64',
    nodePortAddresses: ['::/0'],
  })
  t.match(out, /^table ip6 kube-proxy \{/m)
  t.ok(out.includes('ip6 daddr fd00::41 ip6 saddr != fd00:180::/64 jump mark-for-masquerade'))
  t.ok(out.includes('dnat to [fd00:180::1]:80'))
  t.ok(out.includes('ip6 daddr != ::1 meta l4proto . th dport vmap @no-endpoint-nodeports'))
  t.notOk(renderNft(cluster(svc({ clusterIPs: ['fd00::41'], ipFamilies: [6] }))).includes('fd00::41'), 'the IPv4 table skips it')
})

t.test('nodePortAddresses: a nodeport-ips set replaces "fib daddr type local"', async t => {
  const out = renderNft(cluster(), { nodeIPs: ['192.168.1.1', '10.1.1.1'], nodePortAddresses: ['192.168.0.0/16'] })
  t.ok(out.includes('\tset nodeport-ips {'))
  t.ok(out.includes('\t\t\t192.168.1.1\n'))
  t.notOk(out.includes('10.1.1.1'))
  t.same(chainBody(out, 'services')[1], 'ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports')
})

t.test('nodePortAddresses unset: NodePorts on the primary node IP only (nftables mode defaults to primary)', async t => {
  const out = renderNft(cluster(), { nodeIPs: ['192.168.1.1', '10.1.1.1'] })
  t.ok(out.includes('\t\t\t192.168.1.1\n'))
  t.notOk(out.includes('10.1.1.1'))
  t.same(chainBody(out, 'services')[1], 'ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports')
  const all = renderNft(cluster(), { nodeIPs: ['192.168.1.1'], nodePortAddresses: ['0.0.0.0/0'] })
  t.same(
    chainBody(all, 'services')[1],
    'fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports',
    '0.0.0.0/0: every local address',
  )
})

t.test('current kube-proxy base chains: filter pre-DNAT only for firewall-check, the rest at filter priority', async t => {
  const out = renderNft(cluster(), { serviceCIDRs: ['172.30.0.0/16'] })
  t.same(chainBody(out, 'filter-prerouting-pre-dnat'), ['type filter hook prerouting priority dstnat - 10; policy accept;', 'ct state new jump firewall-check'])
  t.same(chainBody(out, 'filter-output-pre-dnat'), ['type filter hook output priority -110; policy accept;', 'ct state new jump firewall-check'])
  t.same(chainBody(out, 'filter-output'), [
    'type filter hook output priority filter; policy accept;',
    'ct state new jump service-endpoints-check',
    'ct state new jump cluster-ips-check',
  ])
  t.same(chainBody(out, 'cluster-ips-check')[1], 'ip daddr 172.30.0.0/16 drop comment "Drop traffic to unallocated ClusterIPs"')
  t.notOk(out.includes('filter-output-post-dnat'))
})

t.test('nft durations', async t => {
  t.equal(nftDuration(10800), '3h')
  t.equal(nftDuration(86400), '1d')
  t.equal(nftDuration(3700), '1h1m40s')
  t.equal(nftDuration(10), '10s')
})

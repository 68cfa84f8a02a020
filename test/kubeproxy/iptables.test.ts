// renderIptablesSave on hand-built Clusters: each kube-proxy behaviour checked on its own lines.
import t from 'tap'
import type { Endpoint, Service } from '../../src/model/cluster'
import { cluster, ep as endpoint, svc as service } from '../helpers/cluster'
import { renderIp6tablesSave, renderIptablesSave } from '../../src/kubeproxy/iptables'
import { servicePortChainName, servicePortEndpointChainName, serviceExternalChainName, servicePortPolicyLocalChainName } from '../../src/kubeproxy/names'

function ep(ip: string, port: number, extra: Partial<Endpoint> = {}, portName = ''): Endpoint {
  return endpoint(ip, { serving: true, ports: [{ name: portName, protocol: 'TCP', port }], ...extra })
}

function svc(extra: Partial<Service> = {}): Service {
  return service({
    namespace: 'ns',
    name: 's',
    clusterIPs: ['10.96.0.50'],
    ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 0 }],
    ...extra,
  })
}

function rules(text: string, chain: string): string[] {
  return text.split('\n').filter(l => l.startsWith(`-A ${chain} `))
}

function table(text: string, name: string): string {
  const start = text.indexOf(`*${name}\n`)
  return text.slice(start, text.indexOf('COMMIT', start))
}

const SVC = servicePortChainName('ns/s', 'tcp')
const sep = (e: string): string => servicePortEndpointChainName('ns/s', 'tcp', e)

t.test('N endpoints: probabilities 1/N, 1/(N-1), ... and a final unconditional jump, sorted as kube-proxy sorts', async t => {
  const out = renderIptablesSave(cluster(svc({ endpoints: [ep('10.0.0.9', 8080), ep('10.0.0.10', 8080), ep('10.0.0.100', 8080), ep('10.0.0.2', 8080)] })))
  const r = rules(out, SVC)
  t.equal(r.length, 4)
  // string order of "ip:port": 10.0.0.100 < 10.0.0.10 < 10.0.0.2 < 10.0.0.9
  t.same(
    r.map(l => l.split(' -j ')[1]),
    ['10.0.0.100:8080', '10.0.0.10:8080', '10.0.0.2:8080', '10.0.0.9:8080'].map(sep),
  )
  t.match(r[0], /--probability 0\.25000000000 /)
  t.match(r[1], /--probability 0\.33333333349 /)
  t.match(r[2], /--probability 0\.50000000000 /)
  t.notMatch(r[3], /statistic/)
})

t.test('only ready endpoints; not-ready ones get no chain', async t => {
  const out = renderIptablesSave(cluster(svc({ endpoints: [ep('10.0.0.1', 8080), ep('10.0.0.2', 8080, { ready: false, serving: false })] })))
  t.same(rules(out, SVC), [`-A ${SVC} -m comment --comment "ns/s" -j ${sep('10.0.0.1:8080')}`])
  t.notOk(out.includes(sep('10.0.0.2:8080')))
})

t.test('no ready endpoint: serving+terminating ones are used; not serving ones never', async t => {
  const out = renderIptablesSave(
    cluster(
      svc({
        endpoints: [
          ep('10.0.0.1', 8080, { ready: false, serving: true, terminating: true }),
          ep('10.0.0.2', 8080, { ready: false, serving: false, terminating: true }),
        ],
      }),
    ),
  )
  t.same(
    rules(out, SVC).map(l => l.split(' -j ')[1]),
    [sep('10.0.0.1:8080')],
  )
})

t.test('no usable endpoint: REJECT in filter, nothing in nat but the node-port tail', async t => {
  const out = renderIptablesSave(cluster(svc({ type: 'NodePort', ports: [{ name: 'web', protocol: 'UDP', port: 53, targetPort: 53, nodePort: 30053 }] })))
  const filter = table(out, 'filter')
  t.ok(
    filter.includes(
      '-A KUBE-SERVICES -d 10.96.0.50/32 -p udp -m comment --comment "ns/s:web has no endpoints" -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable',
    ),
  )
  t.ok(
    filter.includes(
      '-A KUBE-EXTERNAL-SERVICES -p udp -m comment --comment "ns/s:web has no endpoints" -m addrtype --dst-type LOCAL -m udp --dport 30053 -j REJECT --reject-with icmp-port-unreachable',
    ),
  )
  const nat = table(out, 'nat')
  t.notOk(nat.includes('KUBE-SVC-'), 'no service chain')
  t.notOk(nat.includes('ns/s'), 'no nat rule mentions the service')
})

t.test('endpoints match service ports by name and protocol', async t => {
  const s = svc({
    ports: [
      { name: 'a', protocol: 'TCP', port: 80, targetPort: 'web', nodePort: 0 },
      { name: 'b', protocol: 'UDP', port: 80, targetPort: 80, nodePort: 0 },
    ],
    endpoints: [
      {
        ...ep('10.0.0.1', 0),
        ports: [
          { name: 'a', protocol: 'TCP', port: 8080 },
          { name: 'b', protocol: 'UDP', port: 5353 },
        ],
      },
      {
        ...ep('10.0.0.2', 0),
        ports: [
          { name: 'a', protocol: 'TCP', port: 9090 },
          { name: 'b', protocol: 'TCP', port: 5353 },
        ],
      },
    ],
  })
  const out = renderIptablesSave(cluster(s))
  t.ok(out.includes('--to-destination 10.0.0.1:8080'))
  t.ok(out.includes('--to-destination 10.0.0.2:9090'))
  t.ok(out.includes('--to-destination 10.0.0.1:5353'))
  t.notOk(out.includes('--to-destination 10.0.0.2:5353'), 'port b of 10.0.0.2 is TCP, the service port is UDP')
})

t.test('ClientIP affinity: recent checks before the random split, recent --set before DNAT', async t => {
  const out = renderIptablesSave(cluster(svc({ affinityTimeout: 300, endpoints: [ep('10.0.0.1', 8080), ep('10.0.0.2', 8080)] })))
  const r = rules(out, SVC)
  t.equal(r.length, 4)
  t.match(r[0], /-m recent --rcheck --seconds 300 --reap --name KUBE-SEP-\S+ --mask 255\.255\.255\.255 --rsource -j KUBE-SEP-/)
  t.match(r[1], /-m recent --rcheck --seconds 300/)
  t.match(r[2], /statistic/)
  const dnat = rules(out, sep('10.0.0.1:8080'))[1]
  t.equal(
    dnat,
    `-A ${sep('10.0.0.1:8080')} -p tcp -m comment --comment "ns/s" -m recent --set --name ${sep('10.0.0.1:8080')} --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.0.0.1:8080`,
  )
})

t.test('clusterCIDR adds the off-cluster masquerade rule first in KUBE-SVC; masqueradeAll masquerades everything', async t => {
  const c = cluster(svc({ endpoints: [ep('10.0.0.1', 8080)] }))
  t.equal(rules(renderIptablesSave(c), SVC).length, 1)
  t.equal(
    rules(renderIptablesSave(c, { clusterCIDR: '10.244.0.0/16' }), SVC)[0],
    `-A ${SVC} ! -s 10.244.0.0/16 -d 10.96.0.50/32 -p tcp -m comment --comment "ns/s cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ`,
  )
  t.equal(
    rules(renderIptablesSave(c, { masqueradeAll: true, clusterCIDR: '10.244.0.0/16' }), SVC)[0],
    `-A ${SVC} -d 10.96.0.50/32 -p tcp -m comment --comment "ns/s cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ`,
  )
  t.equal(rules(renderIptablesSave(c, { clusterCIDR: '10.244.7.7/16' }), SVC)[0]?.split(' ')[4], '10.244.0.0/16', 'CIDR printed as a network')
})

t.test("externalTrafficPolicy Local: KUBE-SVL holds only this node's endpoints", async t => {
  const s = svc({
    type: 'NodePort',
    externalTrafficPolicy: 'Local',
    ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 80, nodePort: 30001 }],
    endpoints: [ep('10.0.0.1', 80, { nodeName: 'a' }), ep('10.0.0.2', 80, { nodeName: 'b' })],
  })
  const out = renderIptablesSave(cluster(s), { nodeName: 'a' })
  const SVL = servicePortPolicyLocalChainName('ns/s', 'tcp')
  const EXT = serviceExternalChainName('ns/s', 'tcp')
  t.same(
    rules(out, SVL).map(l => l.split(' -j ')[1]),
    [servicePortEndpointChainName('ns/s', 'tcp', '10.0.0.1:80')],
  )
  t.equal(rules(out, EXT).at(-1), `-A ${EXT} -j ${SVL}`)
  t.equal(rules(out, SVC).length, 2, 'cluster IP traffic still spreads over both')
  t.notOk(out.includes('has no local endpoints'))
  // seen from node c, nothing is local: external traffic is dropped, pods/host still short-circuit to KUBE-SVC
  const fromC = renderIptablesSave(cluster(s), { nodeName: 'c' })
  t.ok(
    fromC.includes(
      '-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "ns/s has no local endpoints" -m addrtype --dst-type LOCAL -m tcp --dport 30001 -j DROP',
    ),
  )
  t.notOk(fromC.includes(':KUBE-SVL-'))
  t.notOk(rules(fromC, EXT).some(l => l.endsWith(`-j ${SVL}`)))
})

t.test('headless, ExternalName and cluster-IP-less services are not proxied; Proxy-mode LB IPs are not captured', async t => {
  const out = renderIptablesSave(
    cluster(
      svc({ name: 'h', headless: true, clusterIPs: [], endpoints: [ep('10.0.0.1', 8080)] }),
      svc({ name: 'x', type: 'ExternalName', clusterIPs: [], externalName: 'example.com' }),
      svc({
        name: 'lb',
        type: 'LoadBalancer',
        loadBalancerIngress: [
          { ip: '203.0.113.1', ipMode: 'Proxy' },
          { ip: '203.0.113.2', ipMode: 'VIP' },
        ],
        endpoints: [ep('10.0.0.3', 8080)],
      }),
    ),
  )
  t.notOk(out.includes('ns/h'))
  t.notOk(out.includes('ns/x'))
  t.notOk(out.includes('203.0.113.1/32'))
  t.ok(out.includes('-d 203.0.113.2/32'))
})

t.test('IPv6 goes to ip6tables only, with v6 forms of every address', async t => {
  const s = svc({ clusterIPs: ['10.96.0.50', 'fd00::50'], ipFamilies: [4, 6], endpoints: [ep('10.0.0.1', 8080), ep('fd00:1::1', 8080)] })
  const v4 = renderIptablesSave(cluster(s))
  const v6 = renderIp6tablesSave(cluster(s), { clusterCIDR: ['10.244.0.0/16', 'fd00:1::/64'] })
  t.notOk(v4.includes('fd00'))
  t.notOk(v6.includes('10.0.0.1'))
  t.ok(v6.includes('--to-destination [fd00:1::1]:8080'))
  t.ok(v6.includes('! -s fd00:1::/64 -d fd00::50/128'))
  t.ok(v6.includes('! -d ::1/128'))
  t.ok(renderIp6tablesSave(cluster(svc({ clusterIPs: ['fd00::50'] }))).includes('icmp6-port-unreachable'))
})

t.test('more than 1000 endpoints: per-endpoint comments are dropped (large cluster mode)', async t => {
  const many = Array.from({ length: 3 }, (_, i) => ep(`10.0.1.${i + 1}`, 80))
  const out = renderIptablesSave(cluster(svc({ endpoints: many })), { largeClusterEndpointsThreshold: 2 })
  t.notOk(rules(out, SVC).some(l => l.includes('--comment "ns/s"')))
  t.ok(out.includes('--comment "ns/s cluster IP"'), 'service-level comments stay')
})

t.test('masquerade bit sets the mark everywhere', async t => {
  const out = renderIptablesSave(cluster(), { masqueradeBit: 12 })
  t.ok(out.includes('-A KUBE-MARK-MASQ -j MARK --set-xmark 0x1000/0x1000'))
  t.ok(out.includes('-A KUBE-POSTROUTING -m mark ! --mark 0x1000/0x1000 -j RETURN'))
  t.ok(out.includes('-A KUBE-POSTROUTING -j MARK --set-xmark 0x1000/0x0'))
})

// normalize(): API defaults, slices merged into services, headless/ignored handling, allocation, determinism.
import t from 'tap'
import { parseManifests } from '../../src/k8s/load'
import { normalize, type NormalizeOptions } from '../../src/k8s/normalize'

function norm(yaml: string, opts: NormalizeOptions = {}): ReturnType<typeof normalize> {
  const l = parseManifests(yaml, 'in.yaml')
  return normalize(l.objects, opts)
}

const SLICE = (svc: string, name: string, body: string, labels = ''): string =>
  `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: ${name}\n  labels:\n    kubernetes.io/service-name: ${svc}\n${labels}${body}\n`

t.test('defaults as the API server applies them', async t => {
  const r = norm('apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  clusterIP: 10.96.0.7\n  ports: [{port: 80}]\n')
  t.same(r.problems, [])
  t.same(r.cluster.services[0], {
    namespace: 'default',
    name: 's',
    type: 'ClusterIP',
    clusterIPs: ['10.96.0.7'],
    headless: false,
    ipFamilies: [4],
    externalIPs: [],
    loadBalancerIngress: [],
    loadBalancerSourceRanges: [],
    affinityTimeout: 0,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    healthCheckNodePort: 0,
    publishNotReadyAddresses: false,
    ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 80, nodePort: 0 }],
    endpoints: [],
    labels: {},
  })
  const aff = norm(
    'apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 10.96.0.7, sessionAffinity: ClientIP, ports: [{port: 80, targetPort: "8080"}]}\n',
  )
  t.equal(aff.cluster.services[0]?.affinityTimeout, 10800, 'ClientIP default timeout')
  t.equal(aff.cluster.services[0]?.ports[0]?.targetPort, 8080, 'a numeric string targetPort is a number')
})

t.test('slices merge by service-name label, de-duplicated by address, sorted by IP; conditions default as the API says', async t => {
  const yaml = [
    'apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 10.96.0.7, ports: [{name: a, port: 80}, {name: b, port: 81}]}\n',
    SLICE(
      's',
      's-2',
      'addressType: IPv4\nports: [{name: b, port: 81}]\nendpoints:\n- addresses: [10.0.0.10]\n  conditions: {terminating: true, ready: false}\n- addresses: [10.0.0.9]',
    ),
    SLICE(
      's',
      's-1',
      'addressType: IPv4\nports: [{name: a, port: 80}]\nendpoints:\n- addresses: [10.0.0.10]\n  nodeName: n1\n  targetRef: {kind: Pod, name: p10}',
    ),
    SLICE('s', 's-3', 'addressType: IPv4\nendpoints: null\nports: null'),
    SLICE('nope', 'orphan-1', 'addressType: IPv4\nendpoints: []'),
    'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: unlabelled}\naddressType: IPv4\nendpoints: []\n',
  ].join('---\n')
  const r = norm(yaml)
  t.same(r.problems, [])
  const eps = r.cluster.services[0]?.endpoints ?? []
  t.same(
    eps.map(e => e.ip),
    ['10.0.0.9', '10.0.0.10'],
  )
  const ten = eps[1]
  t.same(
    ten,
    {
      ip: '10.0.0.10',
      family: 4,
      ready: true,
      serving: true,
      terminating: false,
      nodeName: 'n1',
      podName: 'p10',
      ports: [
        { name: 'a', protocol: 'TCP', port: 80 },
        { name: 'b', protocol: 'TCP', port: 81 },
      ],
    },
    'the non-terminating copy wins, ports are united',
  )
  t.equal(r.warnings.length, 2)
  t.match(r.warnings[0], /orphan-1: ignored, Service default\/nope is not defined/)
  t.match(r.warnings[1], /unlabelled: ignored, it has no kubernetes\.io\/service-name label/)
})

t.test('headless: clusterIP None, or slices labelled service.kubernetes.io/headless', async t => {
  const r = norm(
    [
      'apiVersion: v1\nkind: Service\nmetadata: {name: h}\nspec: {clusterIP: None, selector: {app: db}}\n',
      'apiVersion: v1\nkind: Service\nmetadata: {name: l}\nspec: {clusterIP: 10.96.0.8, ports: [{port: 80}]}\n',
      SLICE('l', 'l-1', 'addressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]', '    service.kubernetes.io/headless: ""\n'),
    ].join('---\n'),
  )
  const [h, l] = r.cluster.services
  t.equal(h?.headless, true)
  t.same(h?.clusterIPs, [])
  t.same(h?.ipFamilies, [4])
  t.equal(l?.headless, true)
  t.same(l?.clusterIPs, [])
  t.match(r.warnings[0], /treated as headless/)
})

t.test('service-proxy-name: kept out of the cluster, listed as ignored', async t => {
  const r = norm(
    'apiVersion: v1\nkind: Service\nmetadata:\n  name: other\n  labels: {service.kubernetes.io/service-proxy-name: cilium}\nspec: {clusterIP: 10.96.0.9, ports: [{port: 80}]}\n',
  )
  t.same(r.cluster.services, [])
  t.same(
    r.ignored.map(s => s.name),
    ['other'],
  )
})

t.test('ExternalName and LoadBalancer status', async t => {
  const r = norm(
    [
      'apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: ExternalName, externalName: db.example.com}\n',
      'apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec: {type: LoadBalancer, clusterIP: 10.96.0.10, externalTrafficPolicy: Local, loadBalancerSourceRanges: [" 10.1.2.3/8 "], ports: [{port: 80}]}\nstatus: {loadBalancer: {ingress: [{ip: 1.2.3.4}, {hostname: lb.example.com}, {ip: "2001:DB8::1", ipMode: Proxy}]}}\n',
    ].join('---\n'),
  )
  const [lb, x] = r.cluster.services
  t.same([x?.type, x?.externalName, x?.clusterIPs, x?.ipFamilies], ['ExternalName', 'db.example.com', [], []])
  t.same(lb?.loadBalancerIngress, [
    { ip: '1.2.3.4', ipMode: 'VIP' },
    { ip: '2001:db8::1', ipMode: 'Proxy' },
  ])
  t.same(lb?.loadBalancerSourceRanges, ['10.0.0.0/8'])
  t.equal(lb?.externalTrafficPolicy, 'Local')
  t.ok((lb?.ports[0]?.nodePort ?? 0) >= 30000, 'node port allocated')
  t.ok((lb?.healthCheckNodePort ?? 0) >= 30000, 'health check node port allocated for LoadBalancer + Local')
})

t.test('cluster IP allocation: deterministic, skips used addresses, .1 and .10; well-known names get theirs', async t => {
  const svc = (ns: string, name: string, ip = ''): string =>
    `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}, namespace: ${ns}}\nspec: {${ip ? `clusterIP: ${ip}, ` : ''}ports: [{port: 80}]}\n`
  const yaml = [svc('default', 'kubernetes'), svc('kube-system', 'kube-dns'), svc('a', 'one'), svc('a', 'two'), svc('b', 'taken', '10.96.0.2')].join('---\n')
  const r1 = norm(yaml)
  const r2 = norm([...yaml.split('---\n')].reverse().join('---\n'))
  const ips = (r: ReturnType<typeof normalize>): Record<string, string | undefined> =>
    Object.fromEntries(r.cluster.services.map(s => [`${s.namespace}/${s.name}`, s.clusterIPs[0]]))
  t.same(ips(r1), ips(r2), 'input order does not matter')
  t.equal(ips(r1)['default/kubernetes'], '10.96.0.1')
  t.equal(ips(r1)['kube-system/kube-dns'], '10.96.0.10')
  for (const k of ['a/one', 'a/two']) {
    const ip = ips(r1)[k] ?? ''
    t.match(ip, /^10\.(9[6-9]|10[0-9]|110|111)\.\d+\.\d+$/, `${k} in 10.96.0.0/12`)
    t.notOk(['10.96.0.0', '10.96.0.1', '10.96.0.10', '10.96.0.2', '10.111.255.255'].includes(ip))
  }
  t.not(ips(r1)['a/one'], ips(r1)['a/two'])
  const small = norm(svc('a', 'one'), { serviceCIDRs: ['192.168.0.0/29'] })
  t.match(small.cluster.services[0]?.clusterIPs[0], /^192\.168\.0\.[2-6]$/)
  const off = norm(svc('a', 'one'), { allocate: false })
  t.same(off.cluster.services[0]?.clusterIPs, [])
  t.ok(off.warnings.some(w => /has no cluster IP/.test(w)))
  const v6 = norm(`apiVersion: v1\nkind: Service\nmetadata: {name: six}\nspec: {ipFamilies: [IPv6], ports: [{port: 80}]}\n`)
  t.same(v6.cluster.services, [])
  t.same(
    v6.problems.map(p => [p.object, p.field]),
    [['Service default/six', 'spec.clusterIP']],
  )
  const dual = norm(`apiVersion: v1\nkind: Service\nmetadata: {name: d}\nspec: {ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}\n`, {
    serviceCIDRs: ['10.96.0.0/12', 'fd00::/108'],
  })
  t.same(dual.cluster.services[0]?.ipFamilies, [4, 6])
})

t.test('nodes and pods', async t => {
  const r = norm(
    [
      'apiVersion: v1\nkind: Node\nmetadata: {name: n2}\nspec: {podCIDR: 10.244.2.0/24}\nstatus: {addresses: [{type: InternalIP, address: 192.168.1.2}, {type: Hostname, address: n2}]}\n',
      'apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDRs: [10.244.1.0/24, "fd00:1::/64"]}\n',
      'apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {a: b}}\nspec: {nodeName: n1, hostname: h, subdomain: s, containers: [{name: c}]}\nstatus: {podIPs: [{ip: 10.244.1.5}, {ip: "FD00:1::5"}], conditions: [{type: Ready, status: "True"}]}\n',
    ].join('---\n'),
  )
  t.same(r.cluster.nodes, [
    { name: 'n1', addresses: [], podCIDRs: ['10.244.1.0/24', 'fd00:1::/64'] },
    { name: 'n2', addresses: ['192.168.1.2'], podCIDRs: ['10.244.2.0/24'] },
  ])
  t.same(r.cluster.pods, [
    { namespace: 'default', name: 'p', ips: ['10.244.1.5', 'fd00:1::5'], nodeName: 'n1', hostname: 'h', subdomain: 's', labels: { a: 'b' }, ready: true },
  ])
})

t.test('deployments and the controller, end to end; the result is frozen', async t => {
  const yaml = [
    'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\n',
    'apiVersion: v1\nkind: Service\nmetadata: {name: d}\nspec: {selector: {app: d}, ports: [{port: 80, targetPort: http}]}\n',
  ].join('---\n')
  const r = norm(yaml, { expandDeployments: true, endpointSliceController: true })
  t.equal(r.cluster.pods.length, 2)
  t.same(r.cluster.services[0]?.endpoints, [], 'generated pods have no IP yet, so no endpoints')
  t.ok(Object.isFrozen(r.cluster) && Object.isFrozen(r.cluster.services[0]) && Object.isFrozen(r.cluster.services[0]?.ports))
  t.match(r.warnings, [])
})

t.test('namespaces not declared (other than the built-in ones) are warned about', async t => {
  const r = norm('apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop}\nspec: {clusterIP: 10.96.0.7, ports: [{port: 80}]}\n')
  t.same(r.warnings, ['in.yaml: Service shop/s: namespace shop is not defined in the input'])
  t.equal(r.cluster.services.length, 1)
})

t.test('condition defaults: ready nil = true, serving nil = ready, terminating nil = false', async t => {
  const r = norm(
    [
      'apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: 10.96.0.7, ports: [{port: 80}]}\n',
      SLICE(
        's',
        's-1',
        'addressType: IPv4\nports: [{port: 80}]\nendpoints:\n- addresses: [10.0.0.1]\n- addresses: [10.0.0.2]\n  conditions: {ready: false, terminating: true}\n- addresses: [10.0.0.3]\n  conditions: {ready: false, serving: true, terminating: true}',
      ),
    ].join('---\n'),
  )
  t.same(
    r.cluster.services[0]?.endpoints.map(e => [e.ip, e.ready, e.serving, e.terminating]),
    [
      ['10.0.0.1', true, true, false],
      ['10.0.0.2', false, false, true],
      ['10.0.0.3', false, true, true],
    ],
  )
})

t.test('a cluster IP outside the service CIDR or equal to the DNS address is refused, with file, object, field (issue 14)', async t => {
  const svc = (name: string, ip: string, extra = ''): string =>
    `apiVersion: v1\nkind: Service\nmetadata: {name: ${name}}\nspec: {clusterIP: ${ip}, ${extra}ports: [{port: 80}]}\n`
  const yaml = [
    svc('inside', '10.96.0.7'),
    svc('outside', '1.2.3.4'),
    svc('dns', '10.96.0.10'),
    svc('six', 'fd00::7', 'ipFamilies: [IPv6], '),
    `apiVersion: v1\nkind: Service\nmetadata: {name: dual}\nspec: {clusterIPs: [10.96.0.8, 'fd00::8'], ipFamilies: [IPv4, IPv6], ipFamilyPolicy: RequireDualStack, ports: [{port: 80}]}\n`,
  ].join('---\n')
  const r = norm(yaml, { serviceCIDRs: ['10.96.0.0/12'], dnsIPs: ['10.96.0.10'] })
  t.same(
    r.cluster.services.map(s => s.name),
    ['inside'],
    'only the one inside the CIDR and not the DNS address',
  )
  t.same(r.problems.map(p => [p.file, p.object, p.field, p.reason]).sort(), [
    [
      'in.yaml',
      'Service default/dns',
      'spec.clusterIP',
      '10.96.0.10 is the cluster DNS address, answered by tundra itself (only kube-system/kube-dns may hold it)',
    ],
    ['in.yaml', 'Service default/dual', 'spec.clusterIPs[1]', 'fd00::8: no IPv6 service CIDR is configured'],
    ['in.yaml', 'Service default/outside', 'spec.clusterIP', '1.2.3.4 is outside the service CIDR 10.96.0.0/12'],
    ['in.yaml', 'Service default/six', 'spec.clusterIP', 'fd00::7: no IPv6 service CIDR is configured'],
  ])
  const kubeDns = `apiVersion: v1\nkind: Service\nmetadata: {name: kube-dns, namespace: kube-system}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 53, protocol: UDP}]}\n`
  t.same(norm(kubeDns, { serviceCIDRs: ['10.96.0.0/12'], dnsIPs: ['10.96.0.10'] }).problems, [], 'the cluster DNS Service itself holds the DNS address')
  const dual = norm(yaml, { serviceCIDRs: ['10.96.0.0/12', 'fd00::/108'] })
  t.same(dual.cluster.services.map(s => s.name).sort(), ['dns', 'dual', 'inside', 'six'], 'an IPv6 CIDR admits them; no dnsIPs: no DNS check')
  t.same(norm(yaml).problems, [], 'without serviceCIDRs (tundra run: the API server checked) nothing is refused')
})

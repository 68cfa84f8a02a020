// dump, trace and services from manifests (no agent): the seed as written and with its document's pinned addresses.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { tempDir } from '../helpers/tmp'
import { inspectHandlers } from '../../src/inspect/handlers'
import { dumpRules } from '../../src/kubeproxy/dump'
import { buildTrace, formatTrace, type Trace } from '../../src/inspect/trace'
import { formatServices, type ServicesReport } from '../../src/inspect/services'
import { dumpOptions } from '../../src/inspect/model'
import { CASES, CLIENT, NGINX, PINNED, SEED, SEP_CHAINS, SVC_CHAIN, VIP, quietView } from './helpers/inspect'

t.test('the seed is run like `lab up` would: pods on node1 with lab addresses, two endpoints', async t => {
  const { view, lines } = quietView([SEED])
  t.same(lines, [], 'no problems, no warnings')
  t.ok(view.placed)
  t.equal(view.natConfig().nodeName, 'node1')
  t.same(view.natConfig().nodeIPs, ['172.18.0.11'])
  t.same(view.natConfig().clusterCIDRs, ['10.100.0.0/16'])
  const svc = view.cluster().services.find(s => s.name === 'nginx-pod08')!
  t.equal(svc.endpoints.length, 2)
  for (const e of svc.endpoints) t.match(e.ip, /^10\.100\.85\.\d+$/)
  t.equal(view.live(), undefined)
})

t.test("dump: exactly what dumpRules renders for this node; the pinned seed has the document's chains", async t => {
  const { view } = quietView([PINNED])
  const h = inspectHandlers(view)
  const text = (await h.dump({})) as string
  t.equal(text, dumpRules(view.cluster(), dumpOptions(view.natConfig())).iptables, 'iptables-save by default, byte for byte')
  t.match(text, /^\*filter$/m)
  t.match(text, /^\*nat$/m)
  t.ok(text.includes(`:${SVC_CHAIN} - [0:0]`))
  for (const sep of SEP_CHAINS) t.ok(text.includes(`:${sep} - [0:0]`), sep)
  t.ok(text.includes(`-A KUBE-SERVICES -d ${VIP}/32 -p tcp -m comment --comment "default/nginx-pod08 cluster IP" -m tcp --dport 8080 -j ${SVC_CHAIN}`))
  t.ok(text.includes(`-A ${SEP_CHAINS[0]} -p tcp -m comment --comment "default/nginx-pod08" -m tcp -j DNAT --to-destination ${NGINX[0]}:80`))
  // --cluster-cidr set, as on a node: off-cluster sources are masqueraded
  t.ok(text.includes(`-A ${SVC_CHAIN} ! -s 10.100.0.0/16 -d ${VIP}/32 -p tcp`))

  const nft = (await h.dump({ format: 'nft' })) as string
  t.match(nft, /^table ip kube-proxy/m)
  t.ok(nft.includes(VIP))
  await t.rejects(
    Promise.resolve().then(() => h.dump({ format: 'nft', family: 6 })),
    /no Service has an IPv6 cluster IP/,
  )
  await t.rejects(
    Promise.resolve().then(() => h.dump({ format: 'xml' })),
    /format must be one of iptables-save, nft, json/,
  )

  const json = JSON.parse((await h.dump({ format: 'json' })) as string) as {
    node: { name: string }
    services: {
      service: string
      ports: {
        chains: { service: string }
        frontends: { kind: string; address: string; port: number }[]
        endpoints: { cluster: { endpoint: string; chain: string }[] }
      }[]
    }[]
  }
  t.equal(json.node.name, 'node1')
  const port = json.services.find(s => s.service === 'default/nginx-pod08')!.ports[0]!
  t.equal(port.chains.service, SVC_CHAIN)
  t.same(
    port.frontends.map(f => [f.kind, f.address, f.port]),
    [['ClusterIP', VIP, 8080]],
  )
  t.same(
    port.endpoints.cluster.map(e => [e.endpoint, e.chain]),
    [
      [`${NGINX[0]}:80`, SEP_CHAINS[0]],
      [`${NGINX[1]}:80`, SEP_CHAINS[1]],
    ],
  )
})

t.test('trace: pod -> ClusterIP walks PREROUTING → KUBE-SERVICES → KUBE-SVC → KUBE-SEP and DNATs to :80', async t => {
  const { view } = quietView([PINNED])
  const tr = (await inspectHandlers(view).trace({ src: `${CLIENT}:40000`, dst: `${VIP}:8080`, proto: 'tcp' })) as Trace
  t.equal(tr.verdict, 'dnat')
  t.same(tr.path.slice(0, 3), ['PREROUTING', 'KUBE-SERVICES', SVC_CHAIN])
  t.match(tr.path[3], /^KUBE-SEP-/)
  t.equal(tr.path.length, 4, 'no masquerade: nothing in POSTROUTING')
  t.ok(SEP_CHAINS.includes(tr.pick!.chain))
  t.equal(tr.pick!.how, 'hash', 'offline: not decided, one shown')
  t.equal(tr.rewritten!.dport, 80)
  t.ok(NGINX.includes(tr.rewritten!.dst))
  t.same([tr.rewritten!.src, tr.rewritten!.sport], [CLIENT, 40000], 'pod source kept')
  t.equal(tr.masquerade!.masquerade, false)
  t.match(tr.masquerade!.reason, /inside the cluster CIDR 10\.100\.0\.0\/16/)
  t.same(
    tr.endpoints!.map(e => e.probability),
    ['0.5000000000', null],
    "kube-proxy's %0.10f of 1/(N-i)",
  )
  t.equal(tr.endpoints!.filter(e => e.picked).length, 1)
  const svcStep = tr.steps.find(s => s.chain === 'KUBE-SERVICES')!
  t.equal(svcStep.rule, `-d ${VIP}/32 -p tcp -m comment --comment "default/nginx-pod08 cluster IP" -m tcp --dport 8080 -j ${SVC_CHAIN}`)
  const dnat = tr.steps[tr.steps.length - 1]!
  t.match(dnat.rule, new RegExp(`-j DNAT --to-destination ${tr.rewritten!.dst.replace(/\./g, '\\.')}:80$`))
  // the same tuple always shows the same endpoint; the text names each step
  const again = buildTrace(view, { src: `${CLIENT}:40000`, dst: `${VIP}:8080` })
  t.equal(again.pick!.endpoint, tr.pick!.endpoint)
  const text = formatTrace(tr)
  t.match(text, new RegExp(`path: PREROUTING → KUBE-SERVICES → ${SVC_CHAIN} → KUBE-SEP-[A-Z0-9]{16}`))
  t.match(text, /--probability 0\.5000000000/)
  t.match(text, /masquerade: no/)
  t.match(text, new RegExp(`result: +tcp ${CLIENT}:40000 → 10\\.100\\.85\\.(246|253):80`))

  const other = buildTrace(view, { src: `${CLIENT}:40001`, dst: `${VIP}:8080` })
  const many = new Set<string>()
  for (let p = 40000; p < 40040; p++) many.add(buildTrace(view, { src: `${CLIENT}:${p}`, dst: `${VIP}:8080` }).pick!.endpoint)
  t.equal(many.size, 2, 'different source ports show both endpoints')
  t.ok(other.pick)
})

t.test('trace: from outside the cluster CIDR the ClusterIP masquerades, to the node address', async t => {
  const { view } = quietView([PINNED])
  const tr = buildTrace(view, { src: '172.18.0.100:5555', dst: `${VIP}:8080` })
  t.equal(tr.verdict, 'dnat')
  t.equal(tr.masquerade!.masquerade, true)
  t.equal(tr.masquerade!.to, '172.18.0.11')
  t.same([tr.rewritten!.src, tr.rewritten!.sport], ['172.18.0.11', null], 'random source port')
  t.ok(
    tr.steps.some(
      s => s.rule === `! -s 10.100.0.0/16 -d ${VIP}/32 -p tcp -m comment --comment "default/nginx-pod08 cluster IP" -m tcp --dport 8080 -j KUBE-MARK-MASQ`,
    ),
  )
  t.same(tr.path.slice(-2), ['POSTROUTING', 'KUBE-POSTROUTING'])
  // hairpin: an nginx pod reaching its own service and landing on itself
  for (let p = 1000; p < 1100; p++) {
    const h = buildTrace(view, { src: `${NGINX[0]}:${p}`, dst: `${VIP}:8080` })
    if (h.pick!.endpoint !== `${NGINX[0]}:80`) continue
    t.equal(h.masquerade!.masquerade, true)
    t.match(h.masquerade!.reason, /hairpin/)
    t.ok(h.steps.some(s => s.rule === `-s ${NGINX[0]}/32 -m comment --comment "default/nginx-pod08" -j KUBE-MARK-MASQ`))
    break
  }
})

t.test('trace: a service without endpoints is rejected in the filter table, as kube-proxy does', async t => {
  const { view } = quietView([join(CASES, 'no-endpoints.yaml')])
  const tr = buildTrace(view, { src: '10.100.85.5:1234', dst: '10.96.60.70:80' })
  t.equal(tr.verdict, 'reject')
  t.match(tr.reason, /no usable endpoints/)
  const last = tr.steps[tr.steps.length - 1]!
  t.same([last.table, last.chain], ['filter', 'KUBE-SERVICES'])
  t.equal(
    last.rule,
    '-d 10.96.60.70/32 -p tcp -m comment --comment "default/empty has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable',
  )
  t.match(formatTrace(tr), /filter KUBE-SERVICES → REJECT/)
  // the same rule is in the dump
  t.ok(((await inspectHandlers(view).dump({})) as string).includes(`-A KUBE-SERVICES ${last.rule}`))

  const np = buildTrace(view, { src: '172.18.0.100:1234', dst: '172.18.0.11:30071' })
  t.equal(np.verdict, 'reject')
  t.same(
    np.steps.slice(-1).map(s => [s.table, s.chain]),
    [['filter', 'KUBE-EXTERNAL-SERVICES']],
  )
  const noPort = buildTrace(view, { src: '10.100.85.5:1234', dst: '10.96.60.70:81' })
  t.equal(noPort.verdict, 'reject')
  t.match(noPort.reason, /no service port 81\/tcp/)
})

t.test('trace: LoadBalancer source ranges, NodePort with externalTrafficPolicy Cluster', async t => {
  const { view } = quietView([join(CASES, 'loadbalancer.yaml')])
  const denied = buildTrace(view, { src: '203.0.113.5:1234', dst: '203.0.113.10:443' })
  t.equal(denied.verdict, 'drop')
  t.match(denied.path.join(' '), /KUBE-FW-[A-Z0-9]{16} filter \w+ filter KUBE-PROXY-FIREWALL/)
  const allowed = buildTrace(view, { src: '198.51.100.5:1234', dst: '203.0.113.10:443' })
  t.equal(allowed.verdict, 'dnat')
  t.match(allowed.path.join(' '), /^PREROUTING KUBE-SERVICES KUBE-FW-\S+ KUBE-EXT-\S+ KUBE-SVC-\S+ KUBE-SEP-\S+ POSTROUTING KUBE-POSTROUTING$/)
  t.match(allowed.masquerade!.reason, /externalTrafficPolicy Cluster/)
  const np = buildTrace(view, { src: '172.18.0.100:1234', dst: '172.18.0.11:31443' })
  t.same(
    np.path.slice(0, 4).map(p => p.replace(/-[A-Z0-9]{16}$/, '')),
    ['PREROUTING', 'KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-EXT'],
  )
  t.equal(np.frontend!.kind, 'NodePort')
})

t.test('trace: ping to a ClusterIP is answered by tundra; kube-proxy iptables would not answer', async t => {
  const { view } = quietView([PINNED])
  const tr = buildTrace(view, { src: CLIENT, dst: VIP, proto: 'icmp' })
  t.equal(tr.verdict, 'reply')
  t.match(tr.icmp!.tundra, /answered by tundra/)
  t.match(tr.icmp!.kubeProxy, /iptables mode .* no answer/)
  t.same([tr.query.sport, tr.query.dport], [null, null])
  const notVip = buildTrace(view, { src: CLIENT, dst: NGINX[0]!, proto: 'icmp' })
  t.equal(notVip.verdict, 'pass')
})

t.test('trace: a DNS name is resolved by the cluster DNS first', async t => {
  const { view } = quietView([PINNED])
  const tr = buildTrace(view, { src: `${CLIENT}:40000`, dst: 'nginx-pod08.default.svc.cluster.local:8080' })
  t.equal(tr.dns!.outcome, 'resolved')
  t.equal(tr.dns!.address, VIP)
  t.equal(tr.verdict, 'dnat')
  t.equal(tr.path[2], SVC_CHAIN)
  // pod-client's search path (ndots:5) is tried first, like its resolver would
  t.same(tr.dns!.search, ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'])
  t.equal(tr.dns!.tries[0]!.result, 'NXDOMAIN')
  t.match(formatTrace(tr), /nginx-pod08\.default\.svc\.cluster\.local +\d+ +A +10\.96\.125\.237/)

  const short = buildTrace(view, { src: `${CLIENT}:40000`, name: 'nginx-pod08', dport: 8080 })
  t.equal(short.dns!.address, VIP, 'a short name resolves through the search path')
  t.equal(short.dns!.tries.length, 1)

  const missing = buildTrace(view, { src: CLIENT, dst: 'nope.default.svc.cluster.local:80' })
  t.equal(missing.verdict, 'unresolved')
  t.equal(missing.dns!.outcome, 'nxdomain')
  const outside = buildTrace(view, { src: '172.18.0.100', dst: 'example.com:80' })
  t.equal(outside.dns!.outcome, 'forwarded')
  t.match(outside.reason, /forwards the query upstream/)
})

t.test('trace: bad requests say what is wrong', async t => {
  const { view } = quietView([PINNED])
  const h = inspectHandlers(view)
  const bad = async (args: Record<string, unknown>, re: RegExp): Promise<void> => {
    await t.rejects(
      Promise.resolve().then(() => h.trace(args)),
      re,
    )
  }
  await bad({ src: CLIENT, dst: 'foo!:80' }, /--dst: "foo!:80" is not an address, address:port or DNS name/)
  await bad({ src: CLIENT, dst: '10.96.1:80' }, /not an address/)
  await bad({ src: 'pod-client', dst: `${VIP}:8080` }, /--src: "pod-client" is not an IP address/)
  await bad({ src: CLIENT, dst: VIP }, /give the destination port for tcp/)
  await bad({ src: CLIENT, dst: `${VIP}:99999` }, /not a port number/)
  await bad({ src: CLIENT, dst: '[fd00::1]:80' }, /not of one IP family/)
  await bad({ src: CLIENT, dst: `${VIP}:80`, proto: 'gre' }, /proto must be one of tcp, udp, sctp, icmp/)
  await bad({ dst: `${VIP}:80` }, /give the source/)
})

t.test('services: the frontend with its two backends, ready and local', async t => {
  const { view } = quietView([PINNED])
  const r = (await inspectHandlers(view).services({})) as ServicesReport
  t.equal(r.live, false)
  t.equal(r.services.length, 1)
  const s = r.services[0]!
  t.equal(s.servicePortName, 'default/nginx-pod08')
  t.same(
    s.frontends.map(f => `${f.kind} ${f.address}:${f.port}/${f.protocol}`),
    [`ClusterIP ${VIP}:8080/TCP`],
  )
  t.same(
    s.backends.map(b => [b.endpoint, b.state, b.local, b.node, b.active]),
    [
      [`${NGINX[0]}:80`, 'ready', true, 'node1', true],
      [`${NGINX[1]}:80`, 'ready', true, 'node1', true],
    ],
  )
  t.equal(s.chain, SVC_CHAIN)
  t.equal(s.counters, undefined, 'no counters offline')
  const text = formatServices(r)
  t.match(text, /^ID +FRONTEND +TYPE +SERVICE +BACKENDS +POLICY +AFFINITY$/m)
  t.match(
    text,
    new RegExp(
      `^0 +${VIP.replace(/\./g, '\\.')}:8080/TCP +ClusterIP +default/nginx-pod08 +1 => 10\\.100\\.85\\.246:80/TCP \\(ready, local\\) +int Cluster +None$`,
      'm',
    ),
  )
  t.match(text, /^ +2 => 10\.100\.85\.253:80\/TCP \(ready, local\)$/m)
  // columns line up: the second backend starts where the first does
  const lines = text.split('\n')
  const first = lines.find(l => l.includes('1 => '))!
  const second = lines.find(l => l.includes('2 => '))!
  t.equal(second.indexOf('2 => '), first.indexOf('1 => '))
})

t.test('services: traffic policies, terminating backends, node ports', async t => {
  const { view } = quietView([join(CASES, 'local-policy.yaml'), join(CASES, 'terminating.yaml')], { nodeName: 'node-a', nodeIP: '172.18.0.11' })
  const r = (await inspectHandlers(view).services({})) as ServicesReport
  const local = r.services.find(s => s.servicePortName === 'default/ingress-local:http')!
  t.same(
    local.frontends.map(f => f.kind),
    ['ClusterIP', 'NodePort', 'LoadBalancer'],
  )
  t.equal(local.externalTrafficPolicy, 'Local')
  t.same(
    local.backends.map(b => [b.endpoint, b.local]),
    [
      ['10.244.1.91:8080', true],
      ['10.244.2.92:8080', false],
    ],
  )
  t.same(local.externalEndpoints, ['10.244.1.91:8080'], 'outside clients only reach the local one')
  const text = formatServices(r)
  t.match(text, /10\.244\.2\.92:8080\/TCP \(ready, remote node-b, not used: externalTrafficPolicy Local\)/)
  t.match(text, /terminating/)
})

t.test('manifest problems go to the report as file: object: field: reason, and the rest still works', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-inspect-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'm.yaml')
  writeFileSync(file, `${readFileSync(PINNED, 'utf8')}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec:\n  ports: [{port: 99999}]\n`)
  const { view, lines } = quietView([file])
  t.same(lines, [`${file}: Service default/broken: spec.ports[0].port: must be 1-65535`])
  t.ok(view.placed, 'the valid objects were still run')
  const r = (await inspectHandlers(view).services({})) as ServicesReport
  t.same(
    r.services.map(s => [s.servicePortName, s.backends.length]),
    [['default/nginx-pod08', 2]],
  )
  t.same(
    r.services[0]!.backends.map(b => b.address),
    NGINX,
    'with the pinned addresses',
  )
  t.throws(() => quietView([join(dir, 'missing.yaml')]), /missing\.yaml: no such file or directory/)
  t.throws(() => quietView([PINNED], { nodeIP: 'x' }), /--node-ip: "x" is not an IP address/)
  t.throws(() => quietView([PINNED], { clusterCIDR: '10.100.0.0/99' }), /--cluster-cidr: "10\.100\.0\.0\/99" is not valid/)
})

t.test('manifests that already carry addresses are taken as they are', async t => {
  const { view } = quietView([join(CASES, 'nodeport.yaml')])
  t.equal(view.placed, false)
  t.ok(view.table().svcPorts.length > 0)
})

t.test('--service-node-port-range holds when pods are placed like `lab up`: 20000-22767 is accepted and allocated from', async t => {
  const file = join(
    tempDir(t, {
      'app.yaml': [
        'apiVersion: v1',
        'kind: Pod',
        'metadata: {name: web, namespace: default, labels: {app: web}}',
        'spec: {containers: [{name: c, image: nginx, ports: [{containerPort: 80}]}]}',
        '---',
        'apiVersion: v1',
        'kind: Service',
        'metadata: {name: fixed, namespace: default}',
        'spec: {type: NodePort, selector: {app: web}, ports: [{port: 80, nodePort: 20001}]}',
        '---',
        'apiVersion: v1',
        'kind: Service',
        'metadata: {name: free, namespace: default}',
        'spec: {type: NodePort, selector: {app: web}, ports: [{port: 81, targetPort: 80}]}',
        '',
      ].join('\n'),
    }),
    'app.yaml',
  )
  const { view, lines } = quietView([file], { nodePortRange: [20000, 22767] })
  t.same(lines, [], 'no problems')
  t.ok(view.placed, 'pods were placed')
  const np = (name: string): number => view.cluster().services.find(s => s.name === name)!.ports[0]!.nodePort
  t.equal(np('fixed'), 20001)
  t.ok(np('free') >= 20000 && np('free') <= 22767, `allocated from the range: ${np('free')}`)
  t.equal(view.cluster().services.find(s => s.name === 'fixed')!.endpoints.length, 1, 'endpoints computed')

  const { view: dflt, lines: dl } = quietView([file])
  t.match(dl.join('\n'), /spec\.ports\[0\]\.nodePort: must be 30000-32767/, 'the default range still refuses it')
  t.equal(
    dflt.cluster().services.find(s => s.name === 'fixed'),
    undefined,
  )
})

t.test('trace: every rule a trace prints is a line of the dump (one set of structured rules)', async t => {
  const traces: [string, Parameters<typeof buildTrace>[1]][] = [
    [PINNED, { src: `${CLIENT}:40000`, dst: `${VIP}:8080`, proto: 'tcp' }],
    [PINNED, { src: '192.0.2.9:40000', dst: `${VIP}:8080`, proto: 'tcp' }],
    [join(CASES, 'loadbalancer.yaml'), { src: '203.0.113.5:1234', dst: '203.0.113.10:443' }],
    [join(CASES, 'loadbalancer.yaml'), { src: '198.51.100.5:1234', dst: '203.0.113.10:443' }],
    [join(CASES, 'loadbalancer.yaml'), { src: '172.18.0.100:1234', dst: '172.18.0.11:31443' }],
  ]
  for (const [file, args] of traces) {
    const { view } = quietView([file])
    const dump = ((await inspectHandlers(view).dump({})) as string).split('\n')
    const tr = buildTrace(view, args)
    const printed = tr.steps.filter(s => s.rule !== '')
    t.ok(printed.length > 2, `${args.src} -> ${args.dst} prints rules`)
    for (const s of printed) t.ok(dump.includes(`-A ${s.chain} ${s.rule}`), `${args.src} -> ${args.dst}: ${s.table} ${s.chain} ${s.rule}`)
  }
})

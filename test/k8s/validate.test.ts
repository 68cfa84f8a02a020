// What kube-apiserver would reject is a Problem naming file, object and field; the object is dropped, the rest stays.
import t, { type Test } from 'tap'
import { parseManifests } from '../../src/k8s/load'
import { normalize } from '../../src/k8s/normalize'
import { validateAll, validateObject } from '../../src/k8s/validate'

function problems(yaml: string): { field: string; reason: string; object: string; file?: string }[] {
  return validateAll(parseManifests(yaml, 'bad.yaml').objects).problems
}

function svc(spec: string, name = 'web', extraMeta = ''): string {
  return `apiVersion: v1\nkind: Service\nmetadata:\n  name: ${name}\n  namespace: shop\n${extraMeta}spec:\n${spec.replace(/^/gm, '  ')}\n`
}

/** One problem for this Service spec, on this field, with a reason matching `reason`. */
function expectOne(t: Test, spec: string, field: string, reason: RegExp): void {
  const p = problems(svc(spec))
  t.equal(p.length, 1, `exactly one problem for ${field}: ${JSON.stringify(p)}`)
  t.same(p[0] && { file: p[0].file, object: p[0].object, field: p[0].field }, { file: 'bad.yaml', object: 'Service shop/web', field })
  t.match(p[0]?.reason, reason)
}

t.test('a valid Service has no problems', async t => {
  t.same(problems(svc('ports:\n- {name: http, port: 80, targetPort: http-alt}\n- {name: dns, port: 53, protocol: UDP}\nselector: {app: web}')), [])
})

t.test('ports', async t => {
  expectOne(t, 'ports:\n- port: 0', 'spec.ports[0].port', /Required value: must be 1-65535/)
  expectOne(t, 'ports:\n- port: 70000', 'spec.ports[0].port', /^must be 1-65535$/)
  expectOne(t, 'ports:\n- port: 80.5', 'spec.ports[0].port', /must be an integer/)
  expectOne(t, 'ports:\n- {port: 80, protocol: ICMP}', 'spec.ports[0].protocol', /Unsupported value "ICMP": must be TCP, UDP or SCTP/)
  expectOne(t, 'ports:\n- {name: a, port: 80}\n- {port: 81}', 'spec.ports[1].name', /Required value/)
  expectOne(t, 'ports:\n- {name: a, port: 80}\n- {name: a, port: 81}', 'spec.ports[1].name', /Duplicate value "a"/)
  expectOne(t, 'ports:\n- {name: Web_1, port: 80}', 'spec.ports[0].name', /DNS-1123 label/)
  expectOne(t, 'ports:\n- {name: a, port: 80}\n- {name: b, port: 80}', 'spec.ports[1]', /Duplicate value: port 80\/TCP/)
  expectOne(t, 'ports:\n- {port: 80, targetPort: web--x}', 'spec.ports[0].targetPort', /port name: must not contain consecutive/)
  expectOne(t, 'ports:\n- {port: 80, targetPort: 65536}', 'spec.ports[0].targetPort', /must be 1-65535/)
  expectOne(t, 'ports:\n- {port: 80, targetPort: this-name-is-too-long}', 'spec.ports[0].targetPort', /no more than 15 characters/)
  expectOne(t, 'selector: {app: web}', 'spec.ports', /Required value/)
})

t.test('node ports: only on NodePort/LoadBalancer, in range', async t => {
  expectOne(t, 'ports:\n- {port: 80, nodePort: 30080}', 'spec.ports[0].nodePort', /may not be used when type is 'ClusterIP'/)
  expectOne(t, 'type: NodePort\nports:\n- {port: 80, nodePort: 8080}', 'spec.ports[0].nodePort', /must be 30000-32767/)
  t.same(problems(svc('type: NodePort\nports:\n- {port: 80, nodePort: 30080}')), [])
})

t.test('type, clusterIP, families', async t => {
  expectOne(t, 'type: Internal\nports: [{port: 80}]', 'spec.type', /Unsupported value "Internal"/)
  expectOne(t, 'clusterIP: 10.96.0.300\nports: [{port: 80}]', 'spec.clusterIP', /must be a valid IP address/)
  expectOne(t, 'clusterIP: 10.96.0.3\nclusterIPs: [10.96.0.4]\nports: [{port: 80}]', 'spec.clusterIPs[0]', /must match spec.clusterIP/)
  expectOne(t, 'clusterIPs: [10.96.0.4, 10.96.0.5]\nipFamilyPolicy: RequireDualStack\nports: [{port: 80}]', 'spec.clusterIPs[1]', /other IP family/)
  expectOne(t, 'type: NodePort\nclusterIP: None\nports: [{port: 80}]', 'spec.clusterIP', /may not be set to 'None'/)
  expectOne(t, 'ipFamilies: [IPv6]\nclusterIP: 10.96.0.4\nports: [{port: 80}]', 'spec.clusterIPs[0]', /expected an IPv6 value/)
  t.same(problems(svc('clusterIP: None\nselector: {app: db}')), [], 'headless services need no ports')
})

t.test('ExternalName', async t => {
  expectOne(t, 'type: ExternalName', 'spec.externalName', /Required value/)
  expectOne(t, 'type: ExternalName\nexternalName: Not_A_Host', 'spec.externalName', /DNS-1123 subdomain/)
  expectOne(t, 'type: ExternalName\nexternalName: db.example.com\nclusterIP: 10.96.0.9', 'spec.clusterIP', /may not be set for ExternalName/)
  t.same(problems(svc('type: ExternalName\nexternalName: db.example.com.')), [], 'a trailing dot is fine')
})

t.test('session affinity', async t => {
  expectOne(
    t,
    'sessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\nports: [{port: 80}]',
    'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
    /^must be 1-86400$/,
  )
  expectOne(
    t,
    'sessionAffinity: ClientIP\nsessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}\nports: [{port: 80}]',
    'spec.sessionAffinityConfig.clientIP.timeoutSeconds',
    /^must be 1-86400$/,
  )
  expectOne(t, 'sessionAffinity: Sticky\nports: [{port: 80}]', 'spec.sessionAffinity', /Unsupported value "Sticky"/)
  expectOne(
    t,
    'sessionAffinityConfig: {clientIP: {timeoutSeconds: 10}}\nports: [{port: 80}]',
    'spec.sessionAffinityConfig',
    /must not be set when sessionAffinity is None/,
  )
})

t.test('external traffic: policies, source ranges, external IPs', async t => {
  expectOne(t, 'externalTrafficPolicy: Local\nports: [{port: 80}]', 'spec.externalTrafficPolicy', /externally-accessible/)
  expectOne(t, 'type: NodePort\nexternalTrafficPolicy: Nearby\nports: [{port: 80}]', 'spec.externalTrafficPolicy', /Unsupported value "Nearby"/)
  expectOne(t, 'internalTrafficPolicy: Nearby\nports: [{port: 80}]', 'spec.internalTrafficPolicy', /Unsupported value/)
  expectOne(t, 'type: LoadBalancer\nloadBalancerSourceRanges: [10.0.0.0/33]\nports: [{port: 80}]', 'spec.loadBalancerSourceRanges[0]', /valid CIDR/)
  expectOne(t, 'loadBalancerSourceRanges: [10.0.0.0/8]\nports: [{port: 80}]', 'spec.loadBalancerSourceRanges', /only be used when type is 'LoadBalancer'/)
  expectOne(t, 'externalIPs: [127.0.0.1]\nports: [{port: 80}]', 'spec.externalIPs[0]', /loopback/)
})

t.test('healthCheckNodePort without LoadBalancer + Local: a warning (kube-proxy ignores it), the Service is kept', async t => {
  for (const spec of [
    'type: NodePort\nhealthCheckNodePort: 31000\nports: [{port: 80}]',
    'type: LoadBalancer\nexternalTrafficPolicy: Cluster\nhealthCheckNodePort: 31000\nports: [{port: 80}]',
  ]) {
    const r = validateAll(parseManifests(svc(spec), 'hc.yaml').objects)
    t.same(r.problems, [], spec)
    t.equal(r.objects.length, 1, 'kept')
    t.same(r.warnings, [
      "hc.yaml: Service shop/web: spec.healthCheckNodePort: ignored: kube-proxy serves a health check only when type is 'LoadBalancer' and externalTrafficPolicy is 'Local'",
    ])
    const n = normalize(parseManifests(svc(spec), 'hc.yaml').objects)
    t.equal(n.cluster.services.length, 1)
    t.match(n.warnings, [/spec\.healthCheckNodePort: ignored/], 'normalize passes the warning on')
  }
  expectOne(t, 'type: LoadBalancer\nexternalTrafficPolicy: Local\nhealthCheckNodePort: 80\nports: [{port: 80}]', 'spec.healthCheckNodePort', /node port range/)
})

t.test('names: Services are DNS-1035 labels, namespaces DNS-1123 labels; labels are validated', async t => {
  const p1 = problems(svc('ports: [{port: 80}]', '1web'))
  t.same(
    p1.map(p => [p.object, p.field]),
    [['Service shop/1web', 'metadata.name']],
  )
  t.match(p1[0]?.reason, /DNS-1035 label/)
  const p2 = problems('apiVersion: v1\nkind: Namespace\nmetadata: {name: Shop}\n')
  t.same(
    p2.map(p => [p.object, p.field]),
    [['Namespace Shop', 'metadata.name']],
  )
  const p3 = problems(svc('ports: [{port: 80}]', 'web', '  labels: {tier: "front end"}\n'))
  t.same(
    p3.map(p => p.field),
    ['metadata.labels["tier"]'],
  )
  const p4 = problems(svc('ports: [{port: 80}]', 'web', '  labels: {enabled: yes}\n'))
  t.match(p4[0]?.reason, /must be a string/)
  t.same(
    problems('apiVersion: v1\nkind: Service\nmetadata: {}\nspec: {ports: [{port: 80}]}\n').map(p => p.field),
    ['metadata.name'],
  )
})

t.test('EndpointSlice: addressType and addresses', async t => {
  const slice = (body: string): string =>
    `apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s-1, labels: {kubernetes.io/service-name: s}}\n${body}\n`
  const at = problems(slice('addressType: IPv5\nendpoints: []'))
  t.same(
    at.map(p => [p.object, p.field]),
    [['EndpointSlice default/s-1', 'addressType']],
  )
  t.same(
    problems(slice('endpoints: []')).map(p => p.field),
    ['addressType'],
  )
  const addr = problems(slice('addressType: IPv4\nendpoints:\n- addresses: [fd00::1]\n- addresses: []\n- addresses: [10.0.0.1]\n  conditions: {ready: "yes"}'))
  t.same(
    addr.map(p => p.field),
    ['endpoints[0].addresses[0]', 'endpoints[1].addresses', 'endpoints[2].conditions.ready'],
  )
  t.match(addr[0]?.reason, /must be an IPv4 address/)
  const ports = problems(slice('addressType: IPv4\nendpoints: null\nports: [{name: a, port: 99999}, {name: a, protocol: ICMP}]'))
  t.same(
    ports.map(p => p.field),
    ['ports[0].port', 'ports[1].name', 'ports[1].protocol'],
  )
  t.same(problems(slice('addressType: IPv4\nendpoints: null\nports: null')), [], 'a placeholder slice is valid')
})

t.test('Pods and Deployments', async t => {
  const pod = problems(
    'apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    ports: [{containerPort: 0}, {containerPort: 80, name: TooLong_name_here}]\nstatus: {podIP: 10.0.0.999}\n',
  )
  t.same(
    pod.map(p => p.field),
    ['spec.containers[0].ports[0].containerPort', 'spec.containers[0].ports[1].name', 'status.podIP'],
  )
  t.same(
    problems('apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n').map(p => p.field),
    ['spec.containers'],
  )
  const dep = problems(
    'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: -1\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec: {containers: [{name: c}]}\n',
  )
  t.same(
    dep.map(p => p.field),
    ['spec.replicas', 'spec.template.metadata.labels'],
  )
  t.match(dep[1]?.reason, /selector does not match template labels/)
})

t.test('across objects: duplicate names, cluster IPs and node ports are rejected; the first one wins', async t => {
  const yaml = [
    svc('clusterIP: 10.96.0.10\nports: [{port: 80}]', 'a'),
    svc('clusterIP: 10.96.0.11\nports: [{port: 80}]', 'a'),
    svc('clusterIP: 10.96.0.10\nports: [{port: 80}]', 'b'),
    svc('type: NodePort\nports: [{port: 80, nodePort: 30001}]', 'c'),
    svc('type: NodePort\nports: [{port: 80, nodePort: 30001}]', 'd'),
    svc('type: NodePort\nports: [{name: t, port: 53, nodePort: 30053}, {name: u, port: 53, protocol: UDP, nodePort: 30053}]', 'e'),
  ].join('---\n')
  const r = validateAll(parseManifests(yaml, 'dup.yaml').objects)
  t.same(
    r.objects.map(o => o.object.metadata?.name),
    ['a', 'c', 'e'],
  )
  t.same(
    r.problems.map(p => [p.object, p.field]),
    [
      ['Service shop/a', 'metadata.name'],
      ['Service shop/b', 'spec.clusterIP'],
      ['Service shop/d', 'spec.ports[0].nodePort'],
    ],
  )
  t.match(r.problems[0]?.reason, /already exists \(defined in dup\.yaml\)/)
  t.match(r.problems[1]?.reason, /10\.96\.0\.10 is already allocated to Service shop\/a/)
})

t.test('an invalid object is skipped by normalize, everything else still works', async t => {
  const yaml = [svc('clusterIP: 10.96.0.10\nports: [{port: 80}]', 'good'), svc('clusterIP: 10.96.0.11\nports: [{port: 0}]', 'bad')].join('---\n')
  const r = normalize(parseManifests(yaml, 'mixed.yaml').objects)
  t.same(
    r.cluster.services.map(s => s.name),
    ['good'],
  )
  t.same(
    r.problems.map(p => [p.file, p.object, p.field]),
    [['mixed.yaml', 'Service shop/bad', 'spec.ports[0].port']],
  )
})

t.test('validateObject without a file leaves file out', async t => {
  const p = validateObject({ object: { apiVersion: 'v1', kind: 'Service', metadata: { name: 'x' }, spec: { ports: [] } } })
  t.same(p, [{ object: 'Service default/x', field: 'spec.ports', reason: 'Required value: at least one port (unless clusterIP is None)' }])
})

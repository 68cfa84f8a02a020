// The EndpointSlice controller's output: which pods, which ports, which conditions, which labels.
import t from 'tap'
import { endpointSlicesForService, findPort, runEndpointSliceController } from '../../src/k8s/endpointslice-controller'
import { defaultServicePort } from '../../src/k8s/defaults'
import type { EndpointSlice, Pod, Service } from '../../src/k8s/types'

function pod(
  name: string,
  ip: string | string[] | undefined,
  opts: {
    labels?: Record<string, string>
    ready?: boolean
    node?: string
    ports?: { name?: string; containerPort: number; protocol?: 'TCP' | 'UDP' }[]
    namespace?: string
    deleting?: boolean
    phase?: 'Running' | 'Succeeded'
    hostname?: string
    subdomain?: string
  } = {},
): Pod {
  const ips = ip === undefined ? [] : Array.isArray(ip) ? ip : [ip]
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: opts.namespace ?? 'default',
      labels: opts.labels ?? { app: 'web' },
      ...(opts.deleting ? { deletionTimestamp: '2024-01-01T00:00:00Z' } : {}),
    },
    spec: {
      containers: [{ name: 'c', ports: opts.ports ?? [{ name: 'http', containerPort: 8080 }] }],
      ...(opts.node ? { nodeName: opts.node } : {}),
      ...(opts.hostname ? { hostname: opts.hostname } : {}),
      ...(opts.subdomain ? { subdomain: opts.subdomain } : {}),
    },
    status: {
      ...(ips[0] ? { podIP: ips[0], podIPs: ips.map(x => ({ ip: x })) } : {}),
      phase: opts.phase ?? 'Running',
      conditions: [{ type: 'Ready', status: opts.ready === false ? 'False' : 'True' }],
    },
  }
}

function service(spec: Service['spec'], name = 'web', labels: Record<string, string> = {}): Service {
  return { apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'default', labels }, spec: { selector: { app: 'web' }, ...spec } }
}

const addrs = (s: EndpointSlice): string[] => (s.endpoints ?? []).map(e => e.addresses?.[0] ?? '')

t.test('selector, namespace, IP and phase decide which pods are endpoints', async t => {
  const slices = endpointSlicesForService(service({ ports: [{ port: 80, targetPort: 8080 }] }), [
    pod('a', '10.0.0.2'),
    pod('b', '10.0.0.1'),
    pod('other-app', '10.0.0.3', { labels: { app: 'db' } }),
    pod('other-ns', '10.0.0.4', { namespace: 'x' }),
    pod('no-ip', undefined),
    pod('done', '10.0.0.5', { phase: 'Succeeded' }),
  ])
  t.equal(slices.length, 1)
  t.same(addrs(slices[0]!), ['10.0.0.1', '10.0.0.2'], 'sorted by IP')
  t.same(slices[0]?.ports, [{ name: '', protocol: 'TCP', port: 8080 }])
  t.equal(slices[0]?.addressType, 'IPv4')
})

t.test('named targetPort resolves per pod; slices group by resolved ports; a pod without the port has no port', async t => {
  const svc = service({
    ports: [
      { name: 'web', port: 80, targetPort: 'http' },
      { name: 'm', port: 9100, protocol: 'UDP', targetPort: 'metrics' },
    ],
  })
  const slices = endpointSlicesForService(svc, [
    pod('a', '10.0.0.1', {
      ports: [
        { name: 'http', containerPort: 8080 },
        { name: 'metrics', containerPort: 9100, protocol: 'UDP' },
      ],
    }),
    pod('b', '10.0.0.2', { ports: [{ name: 'http', containerPort: 9090 }] }),
    pod('c', '10.0.0.3', {
      ports: [
        { name: 'http', containerPort: 8080 },
        { name: 'metrics', containerPort: 9100, protocol: 'TCP' },
      ],
    }),
  ])
  const byPorts = new Map(slices.map(s => [JSON.stringify(s.ports), addrs(s)]))
  t.equal(slices.length, 3)
  t.same(
    byPorts.get(
      JSON.stringify([
        { name: 'web', protocol: 'TCP', port: 8080 },
        { name: 'm', protocol: 'UDP', port: 9100 },
      ]),
    ),
    ['10.0.0.1'],
  )
  t.same(byPorts.get(JSON.stringify([{ name: 'web', protocol: 'TCP', port: 9090 }])), ['10.0.0.2'])
  t.same(byPorts.get(JSON.stringify([{ name: 'web', protocol: 'TCP', port: 8080 }])), ['10.0.0.3'], 'metrics is TCP on c: protocol must match')
  t.equal(findPort(pod('x', '1.1.1.1'), defaultServicePort({ port: 80 })), 80, 'no targetPort means port')
})

t.test('conditions: ready from the Ready condition, terminating from deletionTimestamp', async t => {
  const slices = endpointSlicesForService(service({ ports: [{ port: 80 }] }), [
    pod('ready', '10.0.0.1'),
    pod('unready', '10.0.0.2', { ready: false }),
    pod('leaving', '10.0.0.3', { deleting: true }),
  ])
  t.same(
    slices[0]?.endpoints?.map(e => e.conditions),
    [
      { ready: true, serving: true, terminating: false },
      { ready: false, serving: false, terminating: false },
      { ready: false, serving: true, terminating: true },
    ],
  )
})

t.test('publishNotReadyAddresses: every endpoint is ready', async t => {
  const slices = endpointSlicesForService(service({ publishNotReadyAddresses: true, ports: [{ port: 80 }] }), [
    pod('unready', '10.0.0.2', { ready: false }),
    pod('leaving', '10.0.0.3', { deleting: true }),
  ])
  t.same(
    slices[0]?.endpoints?.map(e => e.conditions?.ready),
    [true, true],
  )
  t.same(
    slices[0]?.endpoints?.map(e => e.conditions?.serving),
    [false, true],
  )
})

t.test("hostname only when the pod's subdomain is the service; nodeName and targetRef always", async t => {
  const slices = endpointSlicesForService(service({ clusterIP: 'None', ports: [{ port: 80 }] }, 'db'), [
    pod('db-0', '10.0.0.1', { hostname: 'db-0', subdomain: 'db', node: 'n1', labels: { app: 'web' } }),
    pod('db-1', '10.0.0.2', { hostname: 'db-1', subdomain: 'other', labels: { app: 'web' } }),
  ])
  const [a, b] = slices[0]?.endpoints ?? []
  t.equal(a?.hostname, 'db-0')
  t.equal(a?.nodeName, 'n1')
  t.same(a?.targetRef, { kind: 'Pod', namespace: 'default', name: 'db-0' })
  t.equal(b?.hostname, undefined)
  t.equal(b?.nodeName, undefined)
  t.equal(slices[0]?.metadata?.labels?.['service.kubernetes.io/headless'], '', 'headless services get the headless label')
})

t.test('labels: service labels copied, service-name and managed-by set', async t => {
  const [s] = endpointSlicesForService(service({ ports: [{ port: 80 }] }, 'web', { team: 'a', 'kubernetes.io/service-name': 'spoof' }), [pod('a', '10.0.0.1')])
  t.same(s?.metadata?.labels, { team: 'a', 'kubernetes.io/service-name': 'web', 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' })
  t.match(s?.metadata?.name, /^web-[bcdfghjklmnpqrstvwxz2456789]{5}$/)
  t.equal(s?.metadata?.namespace, 'default')
})

t.test('address type from the pod IPs (dual-stack pods give one slice per family), or pinned by the service', async t => {
  const pods = [pod('a', ['10.0.0.1', 'fd00::1']), pod('b', ['fd00::2'])]
  const both = endpointSlicesForService(service({ ports: [{ port: 80 }] }), pods)
  t.same(
    both.map(s => [s.addressType, addrs(s)]),
    [
      ['IPv4', ['10.0.0.1']],
      ['IPv6', ['fd00::1', 'fd00::2']],
    ],
  )
  const v6 = endpointSlicesForService(service({ ipFamilies: ['IPv6'], ports: [{ port: 80 }] }), pods)
  t.same(
    v6.map(s => s.addressType),
    ['IPv6'],
  )
  const byIP = endpointSlicesForService(service({ clusterIP: '10.96.0.5', ports: [{ port: 80 }] }), pods)
  t.same(
    byIP.map(s => s.addressType),
    ['IPv4'],
  )
})

t.test('no selector or ExternalName: no slices; no matching pod: one placeholder slice', async t => {
  t.same(endpointSlicesForService({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'x' }, spec: { ports: [{ port: 80 }] } }, [pod('a', '10.0.0.1')]), [])
  t.same(endpointSlicesForService(service({ type: 'ExternalName', externalName: 'a.example' }), [pod('a', '10.0.0.1')]), [])
  const ph = endpointSlicesForService(service({ ports: [{ port: 80 }] }), [])
  t.equal(ph.length, 1)
  t.equal(ph[0]?.endpoints, null)
  t.equal(ph[0]?.ports, null)
})

t.test('more than maxEndpointsPerSlice endpoints are split; names stay unique and stable', async t => {
  const pods = Array.from({ length: 5 }, (_, i) => pod(`p${i}`, `10.0.0.${i + 1}`))
  const a = endpointSlicesForService(service({ ports: [{ port: 80 }] }), pods, { maxEndpointsPerSlice: 2 })
  t.same(
    a.map(s => s.endpoints?.length),
    [2, 2, 1],
  )
  t.equal(new Set(a.map(s => s.metadata?.name)).size, 3)
  const b = endpointSlicesForService(service({ ports: [{ port: 80 }] }), [...pods].reverse(), { maxEndpointsPerSlice: 2 })
  t.same(b, a, 'pod order does not matter')
})

t.test('zone comes from the node label', async t => {
  const out = runEndpointSliceController([
    { object: service({ ports: [{ port: 80 }] }) },
    { object: pod('a', '10.0.0.1', { node: 'n1' }) },
    { object: { apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1', labels: { 'topology.kubernetes.io/zone': 'z1' } } } },
  ])
  t.equal(out.length, 1)
  t.equal(out[0]?.object.endpoints?.[0]?.zone, 'z1')
  t.equal(out[0]?.file, undefined)
})

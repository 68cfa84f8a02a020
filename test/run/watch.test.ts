// The API watch against a fake API server speaking the real wire format: list, watch events, bookmarks, 410 Gone
// (as an ERROR event and as HTTP 410), dropped connections and a full outage. The store must converge, and the
// normalized Cluster with it, after each.
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { normalize } from '../../src/k8s/normalize'
import { ApiSource, type WatchOptions } from '../../src/run/watch'
import type { ChangeSet } from '../../src/run/store'
import { FakeApiServer } from './helpers/fake-apiserver'
import { nextEvent, waitFor } from './helpers/wait'
import { tempDir } from '../helpers/tmp'

function svc(name: string, ip: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    metadata: { name, namespace: 'default', uid: `uid-${name}`, labels },
    spec: { type: 'ClusterIP', clusterIP: ip, clusterIPs: [ip], ipFamilies: ['IPv4'], ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }] },
  }
}

function slice(service: string, name: string, ips: string[], opts: { labels?: Record<string, string>; trigger?: string } = {}): Record<string, unknown> {
  return {
    metadata: {
      name,
      namespace: 'default',
      labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io', ...(opts.labels ?? {}) },
      ...(opts.trigger !== undefined ? { annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': opts.trigger } } : {}),
      managedFields: [{ manager: 'kube-controller-manager', operation: 'Update' }],
    },
    addressType: 'IPv4',
    endpoints: ips.map(ip => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'node-a' })),
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
  }
}

function node(name: string, ip: string, podCIDR: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    metadata: { name, labels: { 'kubernetes.io/hostname': name }, ...extra },
    spec: { podCIDR, podCIDRs: [podCIDR] },
    status: { addresses: [{ type: 'InternalIP', address: ip }], conditions: [{ type: 'Ready', status: 'True' }], images: [{ names: ['x'], sizeBytes: 1 }] },
  }
}

/** "ns/name -> endpoint IPs" of the normalized Cluster (and the ignored services, marked). */
function view(src: ApiSource): Record<string, string[]> {
  const n = normalize(src.store.objects(), { allocate: false })
  const out: Record<string, string[]> = {}
  for (const s of n.cluster.services) out[`${s.namespace}/${s.name}${s.headless ? ' (headless)' : ''}`] = s.endpoints.map(e => e.ip)
  for (const s of n.ignored) out[`${s.namespace}/${s.name} (ignored)`] = s.endpoints.map(e => e.ip)
  return out
}

function seed(api: FakeApiServer): void {
  api.upsert('Service', svc('web', '10.96.0.10'))
  api.upsert('Service', svc('db', '10.96.0.20'))
  api.upsert('EndpointSlice', slice('web', 'web-abc', ['10.100.1.1', '10.100.1.2']))
  api.upsert('EndpointSlice', slice('db', 'db-abc', ['10.100.2.1']))
  api.upsert('Node', node('node-a', '172.18.0.10', '10.100.1.0/24'))
}

async function setup(tt: Test, opts: Partial<WatchOptions> = {}): Promise<{ api: FakeApiServer; src: ApiSource; logs: string[]; changes: ChangeSet[] }> {
  const api = new FakeApiServer()
  await api.start()
  seed(api)
  const dir = tempDir(tt)
  const kubeconfig = join(dir, 'kubeconfig')
  writeFileSync(kubeconfig, api.kubeconfig())
  const logs: string[] = []
  const src = new ApiSource({ kubeconfig, backoff: { initialMs: 5, maxMs: 40 }, log: l => logs.push(l), ...opts })
  const changes: ChangeSet[] = []
  src.onChange(c => changes.push(c))
  src.start()
  tt.teardown(async () => {
    await src.stop()
    await api.stop()
  })
  await src.waitForSync(10_000)
  // the watches are open once each kind has one
  await waitFor('three watches', () => api.watching('Service') === 1 && api.watching('EndpointSlice') === 1 && api.watching('Node') === 1)
  return { api, src, logs, changes }
}

const rvOf = (src: ApiSource, kind: string): string => src.status().resources.find(r => r.kind === kind)?.resourceVersion ?? ''
const status = (src: ApiSource, kind: string) => src.status().resources.find(r => r.kind === kind)!

t.test('initial list: objects with kind set, managedFields dropped, the Cluster normalizes; watches use the list RV and bookmarks', async t => {
  const { api, src } = await setup(t)
  t.same(view(src), { 'default/db': ['10.100.2.1'], 'default/web': ['10.100.1.1', '10.100.1.2'] })
  const sl = src.store.get('EndpointSlice', 'default', 'web-abc')
  t.equal(sl?.kind, 'EndpointSlice')
  t.equal(sl?.apiVersion, 'discovery.k8s.io/v1')
  t.equal((sl?.metadata as Record<string, unknown> | undefined)?.['managedFields'], undefined)
  // Nodes keep only what tundra reads
  const n = src.store.get('Node', '', 'node-a') as unknown as { status: Record<string, unknown> }
  t.same(Object.keys(n.status), ['addresses'])

  const lists = api.requests.filter(r => !r.watch)
  t.equal(lists.length, 3)
  t.ok(
    lists.every(r => r.query.get('resourceVersion') === '0'),
    'first list from the watch cache',
  )
  t.ok(
    api.requests.every(r => r.headers['authorization'] === 'Bearer test-token'),
    'kubeconfig credentials are sent',
  )
  const watches = api.requests.filter(r => r.watch)
  t.equal(watches.length, 3)
  for (const w of watches) {
    t.equal(w.query.get('allowWatchBookmarks'), 'true')
    t.equal(w.query.get('resourceVersion'), String(api.rv))
    const timeout = Number(w.query.get('timeoutSeconds'))
    t.ok(timeout >= 300 && timeout < 600, `timeoutSeconds ${timeout} in [300, 600)`)
    t.equal(w.query.get('labelSelector'), null, 'no selector by default: DNS needs headless services')
  }
  t.equal(src.hasSynced(), true)
})

t.test('ADDED / MODIFIED / DELETED: the store follows, each change names its service', async t => {
  const { api, src, changes } = await setup(t)
  changes.length = 0

  const added = nextEvent<ChangeSet>(
    'api added',
    cb => src.onChange(cb),
    c => c.services.has('default/api'),
  )
  api.upsert('Service', svc('api', '10.96.0.30'))
  t.same([...(await added).services], ['default/api'])

  const trigger = new Date(Date.now() - 1500).toISOString()
  const eps = nextEvent<ChangeSet>(
    'api endpoints',
    cb => src.onChange(cb),
    c => c.endpoints.has('default/api'),
  )
  api.upsert('EndpointSlice', slice('api', 'api-xyz', ['10.100.3.1'], { trigger }))
  const c = await eps
  t.same([...c.endpoints], ['default/api'])
  t.equal(c.services.size, 0, 'an endpoint change is not a service change')
  t.equal(c.endpointEvents, 1)
  t.same(c.triggerTimes.get('default/api'), [Date.parse(trigger)])

  const mod = nextEvent<ChangeSet>(
    'web endpoints',
    cb => src.onChange(cb),
    c => c.endpoints.has('default/web'),
  )
  api.upsert('EndpointSlice', slice('web', 'web-abc', ['10.100.1.2', '10.100.1.3']))
  await mod
  const del = nextEvent<ChangeSet>(
    'db deleted',
    cb => src.onChange(cb),
    c => c.services.has('default/db'),
  )
  api.remove('Service', 'default', 'db')
  await del
  const delSlice = nextEvent<ChangeSet>(
    'db slice deleted',
    cb => src.onChange(cb),
    c => c.endpoints.has('default/db'),
  )
  api.remove('EndpointSlice', 'default', 'db-abc')
  await delSlice

  t.same(view(src), { 'default/api': ['10.100.3.1'], 'default/web': ['10.100.1.2', '10.100.1.3'] })
  t.equal(rvOf(src, 'EndpointSlice'), String(api.rv))
  t.equal(status(src, 'Service').lists, 1, 'no relist needed')

  // an update that changes nothing tundra keeps (a Node status heartbeat) is not a change
  const before = src.store.generation
  const nodeRv = api.upsert('Node', node('node-a', '172.18.0.10', '10.100.1.0/24', {}))
  await waitFor('node rv', () => rvOf(src, 'Node') === String(nodeRv))
  t.equal(src.store.generation, before, 'no ChangeSet for an unchanged Node')
})

t.test('events split across chunks are reassembled', async t => {
  const { api, src } = await setup(t)
  api.splitWrites = true
  api.upsert('Service', svc('split', '10.96.0.40'))
  await waitFor('split service', () => src.store.get('Service', 'default', 'split') !== undefined)
  t.pass()
})

t.test('BOOKMARK moves the resourceVersion on without a change; the next watch resumes from it', async t => {
  const { api, src } = await setup(t)
  const gen = src.store.generation
  const rv = api.bookmark()
  await waitFor('bookmark rv', () => rvOf(src, 'Service') === String(rv) && rvOf(src, 'Node') === String(rv))
  t.equal(src.store.generation, gen)
  const n = api.requests.length
  api.endWatches() // the server's timeoutSeconds: a clean end
  await waitFor('re-watch', () => api.requests.filter((r, i) => i >= n && r.watch).length === 3)
  for (const r of api.requests.slice(n)) {
    t.equal(r.watch, true, 'a clean end is followed by a watch, not a list')
    t.equal(r.query.get('resourceVersion'), String(rv))
  }
})

t.test('410 Gone as an ERROR event: relist (consistent read), deletions during the gap are noticed', async t => {
  const { api, src, changes } = await setup(t)
  // the client misses these: its watches are cut and history is compacted before it can resume
  api.dropWatches()
  api.remove('Service', 'default', 'db')
  api.remove('EndpointSlice', 'default', 'db-abc')
  api.upsert('EndpointSlice', slice('web', 'web-abc', ['10.100.1.9']))
  api.compact()
  changes.length = 0
  await waitFor('relist', () => src.status().resources.every(r => r.relists === 1), 5000)
  await waitFor('converged', () => JSON.stringify(view(src)) === JSON.stringify({ 'default/web': ['10.100.1.9'] }))
  const relists = (): number => api.requests.filter(r => !r.watch && r.query.get('resourceVersion') === null).length
  await waitFor('three relists', () => relists() >= 3)
  t.equal(relists(), 3, 'relists carry no resourceVersion (not from the cache)')
  const all = changes.reduce((acc, c) => ({ s: [...acc.s, ...c.services], e: [...acc.e, ...c.endpoints] }), { s: [] as string[], e: [] as string[] })
  t.same(all.s.sort(), ['default/db'])
  t.same([...new Set(all.e)].sort(), ['default/db', 'default/web'])
  await waitFor('watching again', () => api.watching('Service') === 1)
})

t.test('410 on an open stream (ERROR event) and as an HTTP status on the watch request', async t => {
  const { api, src } = await setup(t)
  api.expireWatches()
  await waitFor('relist after ERROR 410', () => status(src, 'Service').relists === 1 && api.watching('Service') === 1)

  api.goneMode = 'http'
  api.endWatches() // cleanly: the re-watch then meets the 410
  api.upsert('Service', svc('late', '10.96.0.50'))
  api.compact()
  await waitFor('relist after HTTP 410', () => status(src, 'Service').relists === 2)
  await waitFor('late service', () => src.store.get('Service', 'default', 'late') !== undefined)
  t.equal(status(src, 'Service').errors, 0, '410 is not an error, it is a relist')
})

t.test('a dropped connection: reconnect from the last resourceVersion, catch up on what was missed, no relist', async t => {
  const { api, src } = await setup(t)
  const listsBefore = api.requests.filter(r => !r.watch).length
  const lastRv = rvOf(src, 'Service')
  api.dropWatches()
  api.upsert('Service', svc('missed', '10.96.0.60'))
  await waitFor('missed service', () => src.store.get('Service', 'default', 'missed') !== undefined)
  t.equal(api.requests.filter(r => !r.watch).length, listsBefore, 'no list')
  const rewatch = api.requests.filter(r => r.watch && r.kind === 'Service').pop()
  t.equal(rewatch?.query.get('resourceVersion'), lastRv)
  t.ok(status(src, 'Service').errors >= 1)
  t.ok(status(src, 'Service').reconnects >= 1)
})

t.test('an outage keeps the last state; the API coming back (with compacted history) converges it', async t => {
  const { api, src } = await setup(t)
  const before = view(src)
  await api.stop()
  // several failed reconnects while down
  await waitFor('errors while down', () => status(src, 'Service').errors >= 3 && status(src, 'EndpointSlice').errors >= 3)
  t.same(view(src), before, 'the last good state is kept')
  t.equal(status(src, 'Service').connected, false)
  t.match(status(src, 'Service').lastError, /ECONNREFUSED|socket hang up|dropped|ECONNRESET/)

  // back on the same port, with changes made meanwhile and history gone
  api.upsert('Service', svc('new', '10.96.0.70'))
  api.upsert('EndpointSlice', slice('new', 'new-1', ['10.100.7.1']))
  api.remove('EndpointSlice', 'default', 'web-abc')
  api.compact()
  await api.start()
  await waitFor(
    'converged after the outage',
    () =>
      JSON.stringify(view(src)) ===
      JSON.stringify({
        'default/db': ['10.100.2.1'],
        'default/new': ['10.100.7.1'],
        'default/web': [],
      }),
    5000,
  )
  await waitFor('connected again', () => src.status().resources.every(r => r.connected))
  t.pass()
})

t.test('HTTP errors on the watch (500) back off and retry, keeping state', async t => {
  const { api, src } = await setup(t)
  api.failNext = { count: 4, status: 500, watchOnly: true }
  api.dropWatches()
  await waitFor(
    'retried past the failures',
    () => api.failNext!.count === 0 && api.watching('Service') === 1 && api.watching('EndpointSlice') === 1 && api.watching('Node') === 1,
  )
  t.ok(src.status().resources.reduce((n, r) => n + r.errors, 0) >= 4)
  t.match(
    src
      .status()
      .resources.map(r => r.lastError ?? '')
      .join(' '),
    /500/,
  )
  t.same(Object.keys(view(src)).sort(), ['default/db', 'default/web'])
})

t.test('paginated lists follow continue tokens', async t => {
  const api = new FakeApiServer()
  await api.start()
  api.pageSize = 2
  for (let i = 0; i < 5; i++) api.upsert('Service', svc(`s${i}`, `10.96.1.${i + 1}`))
  const dir = tempDir(t, { kubeconfig: api.kubeconfig() })
  const src = new ApiSource({ kubeconfig: join(dir, 'kubeconfig'), nodes: 'none', backoff: { initialMs: 5, maxMs: 40 }, log: () => {} })
  src.start()
  t.teardown(async () => {
    await src.stop()
    await api.stop()
  })
  await src.waitForSync(5000)
  t.equal(src.store.list('Service').length, 5)
  const svcLists = api.requests.filter(r => !r.watch && r.kind === 'Service')
  t.equal(svcLists.length, 3)
  t.same(
    svcLists.map(r => r.query.get('continue')),
    [null, '2', '4'],
  )
  t.equal(svcLists[1]!.query.get('resourceVersion'), null, 'continue is not combined with resourceVersion')
  t.equal(
    api.requests.some(r => r.kind === 'Node'),
    false,
    "nodes: 'none' watches no Nodes",
  )
})

t.test('service-proxy-name and headless labels: normalize keeps them out of the NAT; kubeProxySelector drops them at the source', async t => {
  await t.test('default: kept for DNS, classified by normalize', async t => {
    const { api, src } = await setup(t)
    api.upsert('Service', svc('other-proxy', '10.96.0.80', { 'service.kubernetes.io/service-proxy-name': 'foo' }))
    api.upsert('EndpointSlice', slice('other-proxy', 'op-1', ['10.100.8.1'], { labels: { 'service.kubernetes.io/service-proxy-name': 'foo' } }))
    api.upsert('Service', { ...svc('hl', 'None'), spec: { clusterIP: 'None', clusterIPs: ['None'], ports: [{ port: 80 }] } })
    api.upsert('EndpointSlice', slice('hl', 'hl-1', ['10.100.9.1'], { labels: { 'service.kubernetes.io/headless': '' } }))
    await waitFor('all four', () => src.store.size === 9)
    t.same(view(src), {
      'default/db': ['10.100.2.1'],
      'default/hl (headless)': ['10.100.9.1'],
      'default/web': ['10.100.1.1', '10.100.1.2'],
      'default/other-proxy (ignored)': ['10.100.8.1'],
    })
  })
  await t.test('kubeProxySelector: as kube-proxy informers', async t => {
    const { api, src } = await setup(t, { kubeProxySelector: true })
    const w = api.requests.find(r => r.watch && r.kind === 'Service')
    t.equal(w?.query.get('labelSelector'), '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless')
    t.equal(api.requests.find(r => r.watch && r.kind === 'Node')?.query.get('labelSelector'), null)
    // a service that gains the label stops matching: the server sends DELETED
    const gone = nextEvent<ChangeSet>(
      'web dropped',
      cb => src.onChange(cb),
      c => c.services.has('default/web'),
    )
    api.upsert('Service', svc('web', '10.96.0.10', { 'service.kubernetes.io/service-proxy-name': 'foo' }))
    await gone
    t.equal(src.store.get('Service', 'default', 'web'), undefined)
    t.same(Object.keys(view(src)), ['default/db'])
  })
})

t.test("nodes: 'self' watches one Node by field selector", async t => {
  const { api, src } = await setup(t, { nodes: 'self', nodeName: 'node-a' })
  const w = api.requests.find(r => r.watch && r.kind === 'Node')
  t.equal(w?.query.get('fieldSelector'), 'metadata.name=node-a')
  t.ok(src.store.get('Node', '', 'node-a'))
})

t.test('a bad kubeconfig fails waitForSync with its reason', async t => {
  const src = new ApiSource({ kubeconfig: '/nonexistent/kubeconfig', log: () => {} })
  src.start()
  await t.rejects(src.waitForSync(5000), /nonexistent/)
  await src.stop()
})

t.test('a silent stream (half-open connection) is given up after idleTimeoutMs and re-watched', async t => {
  const { api, src } = await setup(t, { idleTimeoutMs: 150 })
  await waitFor('idle reconnects', () => status(src, 'Service').reconnects >= 2)
  t.match(status(src, 'Service').lastError, /no data from the API server/)
  // still following events
  api.upsert('Service', svc('after-idle', '10.96.0.90'))
  await waitFor('event after idle reconnects', () => src.store.get('Service', 'default', 'after-idle') !== undefined)
})

t.test('configSyncPeriod (resyncSeconds): a change the watch never delivered is picked up by the periodic list', async t => {
  const { api, src, changes } = await setup(t, { resyncSeconds: 0.2 })
  changes.length = 0
  const listsBefore = api.requests.filter(r => !r.watch && r.kind === 'Service').length
  const got = nextEvent<ChangeSet>(
    'api service from a resync',
    cb => src.onChange(cb),
    c => c.services.has('default/api'),
  )
  api.upsertUnannounced('Service', svc('api', '10.96.0.30'))
  t.same([...(await got).services], ['default/api'])
  t.same(Object.keys(view(src)).sort(), ['default/api', 'default/db', 'default/web'])
  const relist = api.requests.filter(r => !r.watch && r.kind === 'Service').slice(listsBefore)
  t.ok(relist.length >= 1, 'listed again')
  t.ok(
    relist.every(r => r.query.get('resourceVersion') !== '' && r.query.get('resourceVersion') !== '0'),
    'not older than what it has: served from the watch cache',
  )
  // and the watches resume after it
  await waitFor('watches again', () => api.watching('Service') === 1 && api.watching('EndpointSlice') === 1)
  t.equal(status(src, 'Service').errors, 0, 'a resync is no error')
})

t.test('without a resync period, a change the watch never delivered stays unseen (the case configSyncPeriod covers)', async t => {
  const { api, src } = await setup(t)
  api.upsertUnannounced('Service', svc('api', '10.96.0.30'))
  // a watch event after it is delivered, and the unannounced change is still missing
  const seen = nextEvent<ChangeSet>(
    'web2',
    cb => src.onChange(cb),
    c => c.services.has('default/web2'),
  )
  api.upsert('Service', svc('web2', '10.96.0.40'))
  await seen
  t.equal(src.store.get('Service', 'default', 'api'), undefined)
})

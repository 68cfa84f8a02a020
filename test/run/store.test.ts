// ObjectStore: keys, change sets (which services), no-op updates, the slice index, filters, relists.
import t from 'tap'
import { normalize } from '../../src/k8s/normalize'
import type { EndpointSlice, KubeObject, Service } from '../../src/k8s/types'
import { ObjectStore, kubeProxyFilter, mergeChanges, objectKey, type ChangeSet } from '../../src/run/store'

const svc = (name: string, rv = '1', labels: Record<string, string> = {}): Service =>
  ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'ns', labels, resourceVersion: rv, annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"big":true}' } },
    spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }] },
  }) as Service
const slice = (name: string, service: string, ips: string[], rv = '1'): EndpointSlice =>
  ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'ns', labels: { 'kubernetes.io/service-name': service }, resourceVersion: rv },
    addressType: 'IPv4',
    endpoints: ips.map(ip => ({ addresses: [ip] })),
    ports: [{ port: 80 }],
  }) as EndpointSlice

function collect(store: ObjectStore): ChangeSet[] {
  const out: ChangeSet[] = []
  store.onChange(c => out.push(c))
  return out
}

t.test('keys: namespaced and cluster-scoped', async t => {
  t.equal(objectKey('Service', 'ns', 'a'), 'Service/ns/a')
  t.equal(objectKey('Service', '', 'a'), 'Service/default/a')
  t.equal(objectKey('Node', 'whatever', 'n1'), 'Node//n1')
})

t.test('changes name services; a new resourceVersion with the same content is no change', async t => {
  const store = new ObjectStore()
  const changes = collect(store)
  t.equal(store.upsert(svc('a')), true)
  t.equal(store.upsert(svc('a', '2')), false, 'same content')
  t.equal(changes.length, 1)
  t.same([...changes[0]!.services], ['ns/a'])
  t.equal((store.get('Service', 'ns', 'a')!.metadata as Record<string, unknown>)['resourceVersion'], '2', 'the newer object is kept anyway')
  t.same(store.get('Service', 'ns', 'a')!.metadata?.annotations, {}, 'last-applied-configuration dropped')
  store.upsert(slice('a-1', 'a', ['10.0.0.1']))
  t.same([...changes[1]!.endpoints], ['ns/a'])
  t.equal(changes[1]!.serviceEvents, 0)
  t.equal(changes[1]!.endpointEvents, 1)
})

t.test('a slice that moves to another service changes both', async t => {
  const store = new ObjectStore()
  store.upsert(slice('s-1', 'a', ['10.0.0.1']))
  const changes = collect(store)
  store.upsert(slice('s-1', 'b', ['10.0.0.1'], '2'))
  t.same([...changes[0]!.endpoints].sort(), ['ns/a', 'ns/b'])
  t.same(store.serviceObjects('ns/a'), [])
  t.same(
    store.serviceObjects('ns/b').map(l => l.object.metadata?.name),
    ['s-1'],
  )
})

t.test('serviceObjects is enough to normalize one service', async t => {
  const store = new ObjectStore()
  store.upsert(svc('a'))
  store.upsert(svc('b'))
  store.upsert(slice('a-1', 'a', ['10.0.0.1']))
  store.upsert(slice('a-2', 'a', ['10.0.0.2']))
  store.upsert(slice('b-1', 'b', ['10.0.0.3']))
  const one = normalize(store.serviceObjects('ns/a'), { allocate: false })
  t.same(
    one.cluster.services.map(s => [s.name, s.endpoints.map(e => e.ip)]),
    [['a', ['10.0.0.1', '10.0.0.2']]],
  )
})

t.test('replace: a relist reports exactly the difference', async t => {
  const store = new ObjectStore()
  store.upsert(svc('a'))
  store.upsert(svc('b'))
  store.upsert(slice('a-1', 'a', ['10.0.0.1']))
  const changes = collect(store)
  const c = store.replace(['Service'], [svc('a', '9'), svc('c')])
  t.same([...c!.services].sort(), ['ns/b', 'ns/c'])
  t.equal(changes.length, 1)
  t.equal(store.get('EndpointSlice', 'ns', 'a-1') !== undefined, true, 'other kinds untouched')
  t.equal(store.replace(['Service'], [svc('a'), svc('c')]), undefined, 'nothing changed: no ChangeSet')
})

t.test('kubeProxyFilter: labelled objects are absent, gaining the label removes', async t => {
  const store = new ObjectStore({ filter: kubeProxyFilter })
  store.upsert(svc('a'))
  const changes = collect(store)
  store.upsert(svc('a', '2', { 'service.kubernetes.io/service-proxy-name': 'other' }))
  t.equal(store.get('Service', 'ns', 'a'), undefined)
  t.same([...changes[0]!.services], ['ns/a'])
  const headless = slice('h-1', 'h', ['10.0.0.9'])
  headless.metadata!.labels!['service.kubernetes.io/headless'] = ''
  t.equal(store.upsert(headless), false)
  t.equal(kubeProxyFilter({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n', labels: { 'service.kubernetes.io/headless': '' } } } as KubeObject), true)
})

t.test('a throwing listener is logged, the others still run', async t => {
  const logs: string[] = []
  const store = new ObjectStore({ log: l => logs.push(l) })
  store.onChange(() => {
    throw new Error('boom')
  })
  const changes = collect(store)
  store.upsert(svc('a'))
  t.equal(changes.length, 1)
  t.match(logs[0], /change listener failed: Error: boom/)
})

t.test('mergeChanges is a union', async t => {
  const store = new ObjectStore()
  const changes = collect(store)
  store.upsert(slice('a-1', 'a', ['10.0.0.1']))
  store.upsert(svc('b'))
  store.upsert({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1' } })
  const m = mergeChanges(mergeChanges(changes[0]!, changes[1]!), changes[2]!)
  t.same([...m.services], ['ns/b'])
  t.same([...m.endpoints], ['ns/a'])
  t.same([...m.nodes], ['n1'])
  t.same([m.serviceEvents, m.endpointEvents, m.full], [1, 1, false])
})

t.test('replace with duplicates: the last one wins, and a repeat is no change', async t => {
  const store = new ObjectStore()
  const a1 = { ...svc('a'), spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }] } } as Service
  const a2 = { ...svc('a'), spec: { clusterIP: '10.96.0.1', ports: [{ port: 81 }] } } as Service
  store.replace(['Service'], [a1, a2])
  t.equal((store.get('Service', 'ns', 'a') as Service).spec?.ports?.[0]?.port, 81)
  t.equal(store.replace(['Service'], [a1, a2]), undefined)
})

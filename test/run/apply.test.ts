// How a batch of store changes becomes the agent's state (src/run/apply.ts), as `tundra run` and the lab's agents
// apply it: the services a batch names incrementally, everything else in full.
import t from 'tap'
import { ObjectStore } from '../../src/run/store'
import { applyBatch, clusterOf, type ApplyTarget } from '../../src/run/apply'
import type { Cluster, Service } from '../../src/model/cluster'
import type { ServiceRef } from '../../src/nat/update'
import type { KubeObject } from '../../src/k8s/types'

const service = (name: string, nodePort: number): KubeObject =>
  ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: {
      type: 'NodePort',
      clusterIP: '10.96.0.20',
      clusterIPs: ['10.96.0.20'],
      ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort, protocol: 'TCP' }],
    },
  }) as KubeObject

function recorder(): ApplyTarget & { full: Cluster[]; changed: Service[][]; deleted: ServiceRef[][] } {
  const r = { full: [] as Cluster[], changed: [] as Service[][], deleted: [] as ServiceRef[][] }
  return {
    ...r,
    apply: c => {
      r.full.push(c)
    },
    applyServices: (c, d) => {
      r.changed.push([...c])
      r.deleted.push([...d])
    },
  } as ApplyTarget & typeof r
}

t.test('a NodePort the API server allocated outside 30000-32767 is kept (kube-proxy takes what the API holds)', async t => {
  const store = new ObjectStore({ log: () => {} })
  store.upsert(service('web', 20080))
  t.same(
    clusterOf(store).services.map(s => s.ports[0]?.nodePort),
    [20080],
    'full sync',
  )
  const target = recorder()
  applyBatch(target, store, { full: false, services: new Set(['default/web']), nodes: new Set() })
  t.same(
    target.changed.flat().map(s => s.ports[0]?.nodePort),
    [20080],
    'incremental sync',
  )
})

t.test('a batch naming a few services is applied incrementally; a full one or a Node change in full', async t => {
  const store = new ObjectStore({ log: () => {} })
  store.upsert(service('web', 30080))
  const target = recorder()
  applyBatch(target, store, { full: false, services: new Set(['default/web', 'default/gone']), nodes: new Set() })
  t.same(
    target.changed[0]!.map(s => s.name),
    ['web'],
  )
  t.same(target.deleted[0], [{ namespace: 'default', name: 'gone' }], 'a service with no objects left is deleted')
  t.equal(target.full.length, 0)
  applyBatch(target, store, { full: false, services: new Set(), nodes: new Set(['node1']) })
  applyBatch(target, store, { full: true, services: new Set(), nodes: new Set() })
  t.equal(target.full.length, 2, 'Node changes and full batches recompute everything')
})

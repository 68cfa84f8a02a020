// -v=5: each API watch event is logged (type, kind, object, resourceVersion) through the source's logV; without
// logV nothing is formatted at all (tundra run passes it only at -v=5 and above).
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ApiSource } from '../../src/run/watch'
import { FakeApiServer } from './helpers/fake-apiserver'
import { waitFor } from './helpers/wait'
import { tempDir } from '../helpers/tmp'

const svc = (name: string, ip: string): Record<string, unknown> => ({
  metadata: { name, namespace: 'default', uid: `uid-${name}` },
  spec: { type: 'ClusterIP', clusterIP: ip, clusterIPs: [ip], ipFamilies: ['IPv4'], ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080 }] },
})

t.test('watch events at V(5)', async t => {
  const api = new FakeApiServer()
  await api.start()
  api.upsert('Service', svc('web', '10.96.0.10'))
  const kubeconfig = join(tempDir(t), 'kubeconfig')
  writeFileSync(kubeconfig, api.kubeconfig())
  const verbose: [number, string][] = []
  const src = new ApiSource({ kubeconfig, nodes: 'none', log: () => {}, logV: (v, l) => verbose.push([v, l]) })
  src.start()
  t.teardown(async () => {
    await src.stop()
    await api.stop()
  })
  await src.waitForSync(10_000)
  await waitFor('the watches', () => api.watching('Service') === 1 && api.watching('EndpointSlice') === 1)
  t.same(verbose, [], 'the initial list is not a watch event')
  const rv = api.upsert('Service', svc('api', '10.96.0.30'))
  await waitFor('the event', () => verbose.length > 0)
  t.same(verbose, [[5, `[watch] event type=ADDED kind=Service object=default/api resourceVersion=${rv}`]])
  api.remove('Service', 'default', 'api')
  await waitFor('the delete', () => verbose.length > 1)
  t.match(verbose[1], [5, /^\[watch\] event type=DELETED kind=Service object=default\/api /])
})

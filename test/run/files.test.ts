// The file source: same store and change events as the API watch, re-read on change, keeping the last state when a
// file is half-written or gone.
import t from 'tap'
import { writeFileSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { normalize } from '../../src/k8s/normalize'
import { FileSource, type ReloadResult } from '../../src/run/files'
import type { ChangeSet } from '../../src/run/store'
import { nextEvent } from './helpers/wait'
import { tempDir } from '../helpers/tmp'

const service = (name: string, ip: string): string => `
apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: default}
spec: {clusterIP: ${ip}, ports: [{name: http, port: 80, targetPort: 8080}]}
`
const slice = (svc: string, ips: string[]): string => `
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${svc}-1, namespace: default, labels: {kubernetes.io/service-name: ${svc}}}
addressType: IPv4
endpoints: [${ips.map(ip => `{addresses: [${ip}]}`).join(', ')}]
ports: [{name: http, port: 8080}]
`

function view(src: FileSource): Record<string, string[]> {
  const out: Record<string, string[]> = {}
  for (const s of normalize(src.store.objects(), { allocate: false }).cluster.services) out[`${s.namespace}/${s.name}`] = s.endpoints.map(e => e.ip)
  return out
}

t.test('reads a directory, follows edits (debounced), deletions and renames-over', async t => {
  const dir = tempDir(t, {
    'svc.yaml': service('web', '10.96.0.10') + '---' + slice('web', ['10.100.0.1']),
    'notes.txt': 'not a manifest',
  })
  const src = new FileSource([dir], { debounceMs: 20, log: () => {} })
  t.teardown(() => src.stop())
  src.start()
  await src.waitForSync(1000)
  t.same(view(src), { 'default/web': ['10.100.0.1'] })
  t.equal(src.store.list('Service')[0] !== undefined && src.store.objects()[0]?.file !== undefined, true, 'objects keep their file')

  let change = nextEvent<ChangeSet>('endpoint change', cb => src.onChange(cb))
  writeFileSync(join(dir, 'svc.yaml'), service('web', '10.96.0.10') + '---' + slice('web', ['10.100.0.1', '10.100.0.2']))
  let c = await change
  t.same([...c.endpoints], ['default/web'])
  t.equal(c.services.size, 0, 'the Service itself did not change')
  t.same(view(src), { 'default/web': ['10.100.0.1', '10.100.0.2'] })

  // an editor's save: write a temp file, rename it over the original
  change = nextEvent<ChangeSet>('rename-over', cb => src.onChange(cb))
  writeFileSync(join(dir, '.svc.yaml.tmp'), service('web', '10.96.0.10') + '---' + service('api', '10.96.0.20'))
  renameSync(join(dir, '.svc.yaml.tmp'), join(dir, 'svc.yaml'))
  c = await change
  t.same([...c.services].sort(), ['default/api'])
  t.same([...c.endpoints].sort(), ['default/web'])
  t.same(view(src), { 'default/api': [], 'default/web': [] })

  change = nextEvent<ChangeSet>('new file', cb => src.onChange(cb))
  writeFileSync(join(dir, 'more.yaml'), service('db', '10.96.0.30'))
  c = await change
  t.same([...c.services], ['default/db'])

  change = nextEvent<ChangeSet>('file removed', cb => src.onChange(cb))
  rmSync(join(dir, 'more.yaml'))
  c = await change
  t.same([...c.services], ['default/db'])
  t.same(Object.keys(view(src)).sort(), ['default/api', 'default/web'])
})

t.test('a half-written (invalid) file keeps the previous state; fixing it applies', async t => {
  const dir = tempDir(t, { 'a.yaml': service('web', '10.96.0.10') })
  const file = join(dir, 'a.yaml')
  const logs: string[] = []
  const src = new FileSource([file], { debounceMs: 20, log: l => logs.push(l) })
  t.teardown(() => src.stop())
  src.start()
  await src.waitForSync(1000)
  const bad = nextEvent<ReloadResult>(
    'failed reload',
    cb => src.onReload(cb),
    r => !r.applied,
  )
  writeFileSync(file, 'apiVersion: v1\nkind: Service\nmetadata: {name: web\n')
  await bad
  t.same(Object.keys(view(src)), ['default/web'], 'still there')
  t.match(logs.join('\n'), /keeping the previous state: .*a\.yaml.*invalid YAML/)
  t.match(src.status().resources[0]?.lastError, /invalid YAML/)
  const good = nextEvent<ChangeSet>('fixed', cb => src.onChange(cb))
  writeFileSync(file, service('web2', '10.96.0.11'))
  const c = await good
  t.same([...c.services].sort(), ['default/web', 'default/web2'])
})

t.test('Pods and Deployments make a change full (their effect on EndpointSlices is derived)', async t => {
  const dir = tempDir(t, { 'p.yaml': service('web', '10.96.0.10') })
  const src = new FileSource([dir], { debounceMs: 10, log: () => {} })
  t.teardown(() => src.stop())
  src.start()
  const change = nextEvent<ChangeSet>('pod change', cb => src.onChange(cb))
  writeFileSync(join(dir, 'pod.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: default}\nspec: {containers: [{name: c, image: x}]}\n')
  const c = await change
  t.equal(c.full, true)
  t.same([...c.other], ['Pod/default/p1'])
})

t.test('a missing path at start fails waitForSync with the reason', async t => {
  const src = new FileSource(['/nonexistent/manifests.yaml'], { log: () => {} })
  t.teardown(() => src.stop())
  src.start()
  await t.rejects(src.waitForSync(200), /cannot read/)
})

t.test('a change notification re-reads only the file it names; a removed file takes its objects', async t => {
  const files: Record<string, string> = {}
  for (let i = 0; i < 300; i++) files[`svc-${i}.yaml`] = service(`s${i}`, `10.96.${1 + (i >> 8)}.${i & 255}`)
  const dir = tempDir(t, files)
  const src = new FileSource([dir], { debounceMs: 20, log: () => {} })
  t.teardown(() => src.stop())
  src.start()
  await src.waitForSync(1000)
  t.equal(src.store.list('Service').length, 300)
  const reloads: ReloadResult[] = []
  src.onReload(r => reloads.push(r))

  // one file rewritten, one broken, one removed, in one batch
  const r = src.reloadFiles(
    [join(dir, 'svc-1.yaml'), join(dir, 'svc-2.yaml'), join(dir, 'svc-3.yaml')].map((f, i) => {
      if (i === 0) writeFileSync(f, service('s1', '10.96.9.1') + '---' + slice('s1', ['10.100.0.9']))
      if (i === 1) writeFileSync(f, 'kind: [unclosed')
      if (i === 2) rmSync(f)
      return f
    }),
  )
  t.equal(r.applied, false, 'the broken file is reported')
  t.same([...(r.change?.services ?? [])].sort(), ['default/s1', 'default/s3'], 'only the rewritten and the removed file changed')
  t.same([...(r.change?.endpoints ?? [])], ['default/s1'])
  const v = view(src)
  t.same(v['default/s1'], ['10.100.0.9'])
  t.ok(v['default/s2'] !== undefined, 'the broken file keeps its previous objects')
  t.equal(v['default/s3'], undefined, 'the removed file took its service with it')
  t.equal(Object.keys(v).length, 299)
  t.equal(reloads.length, 1)
})

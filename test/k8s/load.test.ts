// Reading manifests: files and directories, multi-document YAML, JSON, Lists, and what is skipped or rejected.
import t from 'tap'
import { join } from 'node:path'
import { loadPaths, manifestFiles, parseManifests } from '../../src/k8s/load'

t.test('multi-document YAML: every object, with file and document index; empty documents are fine', async t => {
  const r = parseManifests(
    '---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n',
    'x.yaml',
  )
  t.same(r.problems, [])
  t.same(
    r.objects.map(o => [o.object.kind, o.file, o.doc]),
    [
      ['Namespace', 'x.yaml', 0],
      ['Service', 'x.yaml', 2],
    ],
  )
})

t.test('kind: List is expanded; unknown kinds and apiVersions are warnings, not failures', async t => {
  const r = parseManifests(
    `
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Pod, metadata: {name: p}}
- {apiVersion: v1, kind: ConfigMap, metadata: {name: cm, namespace: kube-system}}
- {apiVersion: discovery.k8s.io/v1beta1, kind: EndpointSlice, metadata: {name: old}}
`,
    'list.yaml',
  )
  t.same(
    r.objects.map(o => o.object.kind),
    ['Pod'],
  )
  t.same(r.problems, [])
  t.equal(r.warnings.length, 2)
  t.match(r.warnings[0], /^list\.yaml: skipped ConfigMap kube-system\/cm: kind ConfigMap is not used by tundra$/)
  t.match(r.warnings[1], /apiVersion discovery\.k8s\.io\/v1beta1 is not supported for EndpointSlice \(use discovery\.k8s\.io\/v1\)/)
})

t.test('JSON files, including a List', async t => {
  const r = parseManifests(
    JSON.stringify({ apiVersion: 'v1', kind: 'ServiceList', items: [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'a' } }] }),
    'svc.json',
  )
  t.same(
    r.objects.map(o => o.object.metadata?.name),
    ['a'],
  )
  const bad = parseManifests('{"kind": ', 'bad.json')
  t.equal(bad.problems.length, 1)
  t.equal(bad.problems[0]?.file, 'bad.json')
  t.match(bad.problems[0]?.reason, /^invalid JSON/)
})

t.test('syntax errors and non-objects are problems naming the file and document; the rest still loads', async t => {
  const r = parseManifests(
    'apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\n---\nkind: [unclosed\n---\n- just\n- a list\n---\napiVersion: v1\nmetadata: {name: nokind}\n',
    'm.yaml',
  )
  t.same(
    r.objects.map(o => o.object.metadata?.name),
    ['ok'],
  )
  t.same(
    r.problems.map(p => [p.file, p.object, p.field]),
    [
      ['m.yaml', 'document 2', ''],
      ['m.yaml', 'document 3', ''],
      ['m.yaml', 'document 4', 'kind'],
    ],
  )
  t.match(r.problems[0]?.reason, /^invalid YAML/)
})

t.test('YAML 1.1 like kubectl: an unquoted yes is a boolean', async t => {
  const r = parseManifests('apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {enabled: yes}\n')
  t.equal(r.objects[0]?.object.metadata?.labels?.['enabled'] as unknown, true)
})

t.test('directories: recursive, only .yaml/.yml/.json, sorted; a named file is read whatever its extension', async t => {
  const dir = t.testdir({
    'b.yaml': 'apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n',
    'a.yml': 'apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n',
    'notes.txt': 'not a manifest',
    sub: {
      'c.json': '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"c"}}',
      deeper: { 'A.YAML': 'apiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n' },
    },
  })
  t.same(
    manifestFiles(dir).map(f => f.slice(dir.length + 1)),
    ['a.yml', 'b.yaml', 'sub/c.json', 'sub/deeper/A.YAML'],
  )
  const r = loadPaths([dir, join(dir, 'notes.txt')])
  t.same(
    r.objects.map(o => o.object.metadata?.name),
    ['a', 'b', 'c', 'd'],
  )
  t.equal(r.problems.length, 1, 'notes.txt was named explicitly, so it is parsed and found wanting')
  t.equal(r.problems[0]?.file, join(dir, 'notes.txt'))
  const missing = loadPaths([join(dir, 'nope')])
  t.match(missing.problems[0]?.reason, /^cannot read/)
})

t.test('the seed example loads as three objects', async t => {
  const r = loadPaths([join(__dirname, '..', '..', 'examples', 'seed')])
  t.same(
    r.objects.map(o => `${o.object.kind}/${o.object.metadata?.name}`),
    ['Deployment/nginx-dep08', 'Service/nginx-pod08', 'Pod/pod-client'],
  )
  t.same(r.problems, [])
})

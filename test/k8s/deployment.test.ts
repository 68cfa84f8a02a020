// Deployment -> Pods named like a ReplicaSet's: <deployment>-<pod-template-hash>-<5 chars>, reproducibly.
import t from 'tap'
import {
  canonicalJSON,
  expandDeployment,
  expandDeployments,
  fnv32a,
  generateName,
  nameSuffix,
  podTemplateHash,
  safeEncodeString,
  SAFE_ALPHABET,
} from '../../src/k8s/deployment'
import type { Deployment, LoadedObject } from '../../src/k8s/types'

const dep = (extra: Partial<NonNullable<Deployment['spec']>> = {}, name = 'nginx-dep08'): Deployment => ({
  apiVersion: 'apps/v1',
  kind: 'Deployment',
  metadata: { name, labels: { app: 'nginx-svc08' } },
  spec: {
    replicas: 2,
    selector: { matchLabels: { app: 'nginx-pod08' } },
    template: { metadata: { labels: { app: 'nginx-pod08' } }, spec: { containers: [{ name: 'nginx', image: 'nginx:1.8', ports: [{ containerPort: 80 }] }] } },
    ...extra,
  },
})

t.test("FNV-32a and SafeEncodeString behave like Go's", async t => {
  t.equal(fnv32a(new Uint8Array()), 0x811c9dc5)
  t.equal(fnv32a(new TextEncoder().encode('a')), 0xe40c292c)
  t.equal(fnv32a(new TextEncoder().encode('foobar')), 0xbf9cf968)
  // digits map to 4-9,b,c,d,f: the seed's hash 584b5f5458 is the encoding of 1406191014
  t.equal(safeEncodeString('1406191014'), '584b5f5458')
  t.equal(safeEncodeString('0123456789'), '456789bcdf')
})

t.test('pod names have the ReplicaSet shape and the labels carry pod-template-hash', async t => {
  const { pods, replicaSetName, podTemplateHash: hash } = expandDeployment(dep())
  t.match(hash, /^[456789bcdf]{1,10}$/)
  t.equal(replicaSetName, `nginx-dep08-${hash}`)
  t.equal(pods.length, 2)
  for (const p of pods) {
    t.match(p.metadata?.name, new RegExp(`^nginx-dep08-${hash}-[${SAFE_ALPHABET}]{5}$`))
    t.same(p.metadata?.labels, { app: 'nginx-pod08', 'pod-template-hash': hash })
    t.equal(p.metadata?.namespace, 'default')
    t.equal(p.metadata?.generateName, `${replicaSetName}-`)
    t.same(p.metadata?.ownerReferences?.[0], { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: replicaSetName, controller: true, blockOwnerDeletion: true })
    t.same(p.spec, dep().spec?.template?.spec)
  }
  t.not(pods[0]?.metadata?.name, pods[1]?.metadata?.name)
})

t.test('deterministic: same input, same names; the template decides the hash, not labels of the Deployment', async t => {
  const a = expandDeployment(dep())
  const b = expandDeployment({ ...dep(), metadata: { name: 'nginx-dep08', labels: { other: 'x' } } })
  t.same(
    a.pods.map(p => p.metadata?.name),
    b.pods.map(p => p.metadata?.name),
  )
  const changed = expandDeployment(
    dep({ template: { metadata: { labels: { app: 'nginx-pod08' } }, spec: { containers: [{ name: 'nginx', image: 'nginx:1.9' }] } } }),
  )
  t.not(changed.podTemplateHash, a.podTemplateHash, 'a new image is a new ReplicaSet')
  t.equal(podTemplateHash({ b: 1, a: [1, { d: 2, c: 3 }] }), podTemplateHash({ a: [1, { c: 3, d: 2 }], b: 1 }), 'key order does not matter')
  t.equal(canonicalJSON({ b: 1, a: undefined, c: [null] }), '{"b":1,"c":[null]}')
})

t.test('replicas: default 1, zero gives none, many give distinct names', async t => {
  t.equal(expandDeployment(dep({ replicas: undefined as unknown as number })).pods.length, 1)
  t.equal(expandDeployment(dep({ replicas: 0 })).pods.length, 0)
  const many = expandDeployment(dep({ replicas: 200 })).pods.map(p => p.metadata?.name)
  t.equal(new Set(many).size, 200)
})

t.test("long names are cut like the API server's name generator (63 characters)", async t => {
  const long = expandDeployment(dep({}, 'x'.repeat(60))).pods[0]?.metadata?.name ?? ''
  t.equal(long.length, 63)
  t.equal(generateName('abc-', 'zzzzz'), 'abc-zzzzz')
  t.match(nameSuffix('seed'), new RegExp(`^[${SAFE_ALPHABET}]{5}$`))
})

t.test('expandDeployments adds Pods after their Deployment, with its file; existing Pods are not duplicated', async t => {
  const d: LoadedObject = { object: dep(), file: 'd.yaml', doc: 3 }
  const first = expandDeployments([d])
  t.same(
    first.map(o => [o.object.kind, o.file, o.doc]),
    [
      ['Deployment', 'd.yaml', 3],
      ['Pod', 'd.yaml', 3],
      ['Pod', 'd.yaml', 3],
    ],
  )
  const again = expandDeployments(first)
  t.equal(again.length, 3, 'expanding again adds nothing: its pods are already there')
  t.equal(new Set(again.filter(o => o.object.kind === 'Pod').map(o => o.object.metadata?.name)).size, 2)
})

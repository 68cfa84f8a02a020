// Expands a Deployment into the Pods its ReplicaSet would create, with ReplicaSet-shaped, reproducible names.
//
// kube-controller-manager names them `<deployment>-<pod-template-hash>-<5 random chars>`: the hash is FNV-32a over
// the template (Go's spew dump of the struct, which we cannot reproduce, so we hash canonical JSON instead), printed
// in decimal and passed through rand.SafeEncodeString; the suffix comes from the API server's name generator. Both use
// the alphabet below. Here the suffix is derived from the ReplicaSet name and replica index, so labs are reproducible.
import { createHash } from 'node:crypto'
import { LABEL_POD_TEMPLATE_HASH, namespaceOf, type Deployment, type LoadedObject, type ObjectMeta, type Pod, type PodSpec } from './types'

/** k8s.io/apimachinery/pkg/util/rand: consonants and digits that cannot spell words. */
export const SAFE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789'

/** rand.SafeEncodeString: each character mapped to SAFE_ALPHABET[code % 27]. */
export function safeEncodeString(s: string): string {
  let out = ''
  for (const ch of s) out += SAFE_ALPHABET[(ch.codePointAt(0) as number) % SAFE_ALPHABET.length]
  return out
}

/** FNV-1a, 32 bit (hash/fnv New32a). */
export function fnv32a(data: Uint8Array): number {
  let h = 0x811c9dc5
  for (const b of data) {
    h ^= b
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h >>> 0
}

/** JSON with object keys sorted at every level: the same template always gives the same bytes. */
export function canonicalJSON(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null'
  if (Array.isArray(v)) return `[${v.map(canonicalJSON).join(',')}]`
  const rec = v as Record<string, unknown>
  const keys = Object.keys(rec)
    .filter(k => rec[k] !== undefined)
    .sort()
  return `{${keys.map(k => `${JSON.stringify(k)}:${canonicalJSON(rec[k])}`).join(',')}}`
}

/** The pod-template-hash label value: SafeEncodeString(decimal(FNV-32a(template))), 1 to 10 characters. */
export function podTemplateHash(template: unknown, collisionCount?: number): string {
  const bytes = new TextEncoder().encode(canonicalJSON(template ?? {}) + (collisionCount === undefined ? '' : `#${collisionCount}`))
  return safeEncodeString(String(fnv32a(bytes)))
}

/** Five SAFE_ALPHABET characters derived from `seed` (stands in for utilrand.String(5)). */
export function nameSuffix(seed: string): string {
  const digest = createHash('sha256').update(seed).digest()
  let out = ''
  // 27 does not divide 256: reject bytes >= 243 (9 * 27) so every character is equally likely.
  for (const b of digest) {
    if (b >= 243) continue
    out += SAFE_ALPHABET[b % 27]
    if (out.length === 5) break
  }
  return out.padEnd(5, 'b')
}

/** names.SimpleNameGenerator: the generateName base is cut so that base + 5 chars fits in 63. */
export function generateName(base: string, suffix: string): string {
  const max = 63 - suffix.length
  return (base.length > max ? base.slice(0, max) : base) + suffix
}

function deepCopy<T>(v: T): T {
  return v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T)
}

export interface ExpandedDeployment {
  /** `<deployment>-<pod-template-hash>` */
  readonly replicaSetName: string
  readonly podTemplateHash: string
  readonly pods: Pod[]
}

/** The Pods of a (valid) Deployment: `spec.replicas` (default 1) copies of the template, labelled and named like a ReplicaSet's. */
export function expandDeployment(d: Deployment): ExpandedDeployment {
  const name = d.metadata?.name ?? ''
  const namespace = namespaceOf(d)
  const template = d.spec?.template ?? {}
  const hash = podTemplateHash(template)
  const replicaSetName = `${name}-${hash}`
  const replicas = d.spec?.replicas ?? 1
  const tmd: ObjectMeta = template.metadata ?? {}
  const pods: Pod[] = []
  const used = new Set<string>()
  for (let i = 0; i < replicas; i++) {
    let podName = ''
    for (let attempt = 0; podName === '' || used.has(podName); attempt++) {
      podName = generateName(`${replicaSetName}-`, nameSuffix(`${namespace}/${replicaSetName}/${i}${attempt === 0 ? '' : `/${attempt}`}`))
    }
    used.add(podName)
    const metadata: ObjectMeta = {
      name: podName,
      generateName: `${replicaSetName}-`,
      namespace,
      labels: { ...(tmd.labels ?? {}), [LABEL_POD_TEMPLATE_HASH]: hash },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: replicaSetName, controller: true, blockOwnerDeletion: true }],
    }
    if (tmd.annotations) metadata.annotations = { ...tmd.annotations }
    const spec = deepCopy<PodSpec>(template.spec ?? {})
    pods.push({ apiVersion: 'v1', kind: 'Pod', metadata, spec })
  }
  return { replicaSetName, podTemplateHash: hash, pods }
}

/**
 * The input with each Deployment followed by its Pods (carrying the Deployment's file, so problems point at it).
 * A Pod already present with the same namespace/name is not generated again.
 */
export function expandDeployments(objects: readonly LoadedObject[]): LoadedObject[] {
  const existing = new Set(objects.filter(o => o.object.kind === 'Pod').map(o => `${namespaceOf(o.object)}/${o.object.metadata?.name ?? ''}`))
  const out: LoadedObject[] = []
  for (const o of objects) {
    out.push(o)
    if (o.object.kind !== 'Deployment') continue
    for (const pod of expandDeployment(o.object).pods) {
      const key = `${namespaceOf(pod)}/${pod.metadata?.name ?? ''}`
      if (existing.has(key)) continue
      existing.add(key)
      const loaded: LoadedObject = { object: pod }
      out.push(o.file === undefined ? loaded : { ...loaded, file: o.file, ...(o.doc === undefined ? {} : { doc: o.doc }) })
    }
  }
  return out
}

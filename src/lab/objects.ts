// The lab's desired state on disk, one file per object, each written atomically (tmp + rename):
//   <lab dir>/manifests/<kind>.<namespace>.<name>.json  what the agents read: the cluster as the API server would hold it
//   <lab dir>/applied/<kind>.<namespace>.<name>.json    the user's objects as last applied (what `lab apply` compares with)
// Cluster-scoped objects (Namespace, Node) are `<kind>.<name>.json`. A change rewrites only the files it touches.
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { defaultServicePort, explicitClusterIPs, isHeadlessSpec, serviceType } from '../k8s/defaults'
import { namespaceOf, type EndpointSlice, type KubeObject, type Service } from '../k8s/types'
import type { LabServiceState, LabSliceState } from './state'

export const MANIFESTS_DIR = 'manifests'
export const APPLIED_DIR = 'applied'

const CLUSTER_SCOPED = new Set(['Namespace', 'Node'])

/** `Kind/namespace/name` (namespace '' for cluster-scoped kinds): one key per object. */
export function objectKey(o: Pick<KubeObject, 'kind' | 'metadata'>): string {
  return keyOf(o.kind, CLUSTER_SCOPED.has(o.kind) ? '' : namespaceOf(o), o.metadata?.name ?? '')
}

export const keyOf = (kind: string, namespace: string, name: string): string => `${kind}/${namespace}/${name}`

/** The object's file name; names too long for a file (NAME_MAX 255) are cut and made unique by a hash. */
function objectFileName(o: Pick<KubeObject, 'kind' | 'metadata'>): string {
  const name = o.metadata?.name ?? ''
  const base = CLUSTER_SCOPED.has(o.kind) ? `${o.kind.toLowerCase()}.${name}` : `${o.kind.toLowerCase()}.${namespaceOf(o)}.${name}`
  if (base.length <= 200) return `${base}.json`
  return `${base.slice(0, 180)}-${createHash('sha1').update(base).digest('hex').slice(0, 12)}.json`
}

/**
 * Writes the object atomically: readers (an agent's reload) never see half a file. `fresh`: a directory nobody reads
 * yet (`lab up`), written in place (a 20 000-service lab has 60 000 files).
 */
export function writeObject(dir: string, o: KubeObject, fresh = false): void {
  const path = join(dir, objectFileName(o))
  const text = JSON.stringify(o) + '\n'
  if (fresh) {
    writeFileSync(path, text)
    return
  }
  // `.tmp` is no manifest extension: a reader listing the directory skips it
  writeFileSync(`${path}.tmp`, text)
  renameSync(`${path}.tmp`, path)
}

export function removeObject(dir: string, o: Pick<KubeObject, 'kind' | 'metadata'>): void {
  rmSync(join(dir, objectFileName(o)), { force: true })
}

/** Every object in `dir` by key (an absent directory is empty). */
export function readObjects(dir: string): Map<string, KubeObject> {
  const out = new Map<string, KubeObject>()
  if (!existsSync(dir)) return out
  for (const f of readdirSync(dir).sort()) {
    if (!f.endsWith('.json')) continue
    const o = JSON.parse(readFileSync(join(dir, f), 'utf8')) as KubeObject
    out.set(objectKey(o), o)
  }
  return out
}

export function ensureDir(dir: string): void {
  mkdirSync(dir, { recursive: true })
}

/** `lab status`'s row of a Service as the lab holds it (cluster IPs and node ports explicit). */
export function serviceState(svc: Service): LabServiceState {
  const type = serviceType(svc)
  const ips = explicitClusterIPs(svc)
  return {
    namespace: namespaceOf(svc),
    name: svc.metadata?.name ?? '',
    type,
    clusterIP: type === 'ExternalName' ? '' : isHeadlessSpec(svc) ? 'None' : (ips[0] ?? ''),
    ...(ips.length > 1 ? { clusterIPs: ips } : {}),
    externalIPs: [...(svc.spec?.externalIPs ?? [])],
    ports: (svc.spec?.ports ?? [])
      .map(defaultServicePort)
      .map(p => ({ name: p.name, port: p.port, targetPort: p.targetPort, nodePort: p.nodePort, protocol: p.protocol })),
  }
}

export function sliceState(o: EndpointSlice): LabSliceState {
  return {
    namespace: namespaceOf(o),
    name: o.metadata?.name ?? '',
    service: o.metadata?.labels?.['kubernetes.io/service-name'] ?? '',
    addressType: o.addressType ?? 'IPv4',
    ports: (o.ports ?? []).map(p => `${p.port ?? ''}/${p.protocol ?? 'TCP'}`),
    endpoints: (o.endpoints ?? []).flatMap(e => e.addresses ?? []),
  }
}

// The desired state as raw Kubernetes objects, keyed by kind/namespace/name, shared by the API watch and the file
// source. Every mutation reports what it changed as one ChangeSet, so the agent can recompile only those services
// (updateNat) instead of the whole table.
import { createHash } from 'node:crypto'
import { LABEL_HEADLESS, LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME, API_VERSION, type Kind, type KubeObject, type LoadedObject } from '../k8s/types'

/** EndpointSlice annotation: when the change that caused this slice update happened (RFC 3339). */
export const ANNOTATION_TRIGGER_TIME = 'endpoints.kubernetes.io/last-change-trigger-time'
const ANNOTATION_LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration'

const CLUSTER_SCOPED: ReadonlySet<string> = new Set(['Node', 'Namespace'])

export interface ChangeSet {
  /** "ns/name" of Services whose Service object was added, changed or deleted */
  readonly services: ReadonlySet<string>
  /** "ns/name" of Services one of whose EndpointSlices was added, changed or deleted */
  readonly endpoints: ReadonlySet<string>
  /** names of Nodes added, changed (in a field tundra reads) or deleted */
  readonly nodes: ReadonlySet<string>
  /** objects of other kinds (file source: Pods, Deployments, Namespaces), as store keys */
  readonly other: ReadonlySet<string>
  /**
   * true when the change can affect services it does not name: Pods or Deployments changed and the EndpointSlices
   * are derived from them (file source), so everything must be recomputed
   */
  readonly full: boolean
  /** Service / EndpointSlice object changes (kube-proxy counts events, not services) */
  readonly serviceEvents: number
  readonly endpointEvents: number
  /** last-change-trigger-time of changed EndpointSlices, ms since the epoch, by service key */
  readonly triggerTimes: ReadonlyMap<string, readonly number[]>
}

export type ChangeListener = (change: ChangeSet) => void

export interface ObjectStoreOptions {
  /** objects for which this returns false are treated as absent (removed if they were present) */
  readonly filter?: (obj: KubeObject) => boolean
  /** listener errors go here (a throwing listener must not break the watch); default stderr */
  readonly log?: (line: string) => void
}

/**
 * kube-proxy's informer selector (`!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless`),
 * applied to Services and EndpointSlices alike: such objects belong to another proxy or need no proxying.
 * Not the default in the sources: cluster DNS still needs headless services and their endpoints.
 */
export const KUBE_PROXY_LABEL_SELECTOR = `!${LABEL_SERVICE_PROXY_NAME},!${LABEL_HEADLESS}`

export function kubeProxyFilter(obj: KubeObject): boolean {
  if (obj.kind !== 'Service' && obj.kind !== 'EndpointSlice') return true
  const labels = obj.metadata?.labels
  return labels === undefined || (labels[LABEL_SERVICE_PROXY_NAME] === undefined && labels[LABEL_HEADLESS] === undefined)
}

export function objectKey(kind: string, namespace: string, name: string): string {
  return `${kind}/${CLUSTER_SCOPED.has(kind) ? '' : namespace === '' ? 'default' : namespace}/${name}`
}

export function keyOf(obj: KubeObject): string {
  const ns = obj.metadata?.namespace
  return objectKey(obj.kind, typeof ns === 'string' ? ns : '', obj.metadata?.name ?? '')
}

/** "ns/name" of the Service an EndpointSlice belongs to, if it says. */
export function sliceServiceKey(obj: KubeObject): string | undefined {
  if (obj.kind !== 'EndpointSlice') return undefined
  const svc = obj.metadata?.labels?.[LABEL_SERVICE_NAME]
  if (svc === undefined || svc === '') return undefined
  const ns = obj.metadata?.namespace
  return `${ns === undefined || ns === '' ? 'default' : ns}/${svc}`
}

function serviceKey(obj: KubeObject): string {
  const ns = obj.metadata?.namespace
  return `${ns === undefined || ns === '' ? 'default' : ns}/${obj.metadata?.name ?? ''}`
}

/**
 * What is kept of an object: managedFields and the last-applied annotation go (often the largest part), and a Node
 * keeps only what tundra reads, so status heartbeats and image lists do not look like changes.
 */
export function trimObject(obj: KubeObject): KubeObject {
  const md = obj.metadata
  if (obj.kind === 'Node') {
    const meta: Record<string, unknown> = {}
    const src = (md ?? {}) as Record<string, unknown>
    for (const k of ['name', 'uid', 'resourceVersion', 'labels', 'deletionTimestamp']) {
      if (src[k] !== undefined) meta[k] = src[k]
    }
    const out: Record<string, unknown> = { apiVersion: obj.apiVersion, kind: 'Node', metadata: meta }
    const spec: Record<string, unknown> = {}
    if (obj.spec?.podCIDR !== undefined) spec['podCIDR'] = obj.spec.podCIDR
    if (obj.spec?.podCIDRs !== undefined) spec['podCIDRs'] = obj.spec.podCIDRs
    if (obj.spec?.unschedulable !== undefined) spec['unschedulable'] = obj.spec.unschedulable
    // /healthz reads the cluster autoscaler's taint (sync.ts nodeEligible)
    const taints = (obj.spec as { taints?: unknown } | undefined)?.taints
    if (taints !== undefined) spec['taints'] = taints
    out['spec'] = spec
    if (obj.status?.addresses !== undefined) out['status'] = { addresses: obj.status.addresses }
    return out as unknown as KubeObject
  }
  const raw = md as Record<string, unknown> | undefined
  if (raw === undefined || (raw['managedFields'] === undefined && md?.annotations?.[ANNOTATION_LAST_APPLIED] === undefined)) return obj
  const meta: Record<string, unknown> = { ...raw }
  delete meta['managedFields']
  if (md?.annotations?.[ANNOTATION_LAST_APPLIED] !== undefined) {
    const ann = { ...md.annotations }
    delete ann[ANNOTATION_LAST_APPLIED]
    meta['annotations'] = ann
  }
  return { ...obj, metadata: meta } as KubeObject
}

/**
 * Content identity: a digest of the object without its resourceVersion (a relist re-delivers unchanged objects, and
 * a Node's status heartbeat changes nothing that was kept). A digest, not the text: it is kept per object.
 */
function contentOf(obj: KubeObject): string {
  const md = obj.metadata
  const json = JSON.stringify(obj, function (this: unknown, key: string, value: unknown) {
    return key === 'resourceVersion' && this === md ? undefined : value
  })
  return createHash('sha1').update(json).digest('base64')
}

/** metadata.resourceVersion (not in src/k8s/types: manifests never carry one) */
export function resourceVersionOf(obj: KubeObject): string | undefined {
  const rv = (obj.metadata as { resourceVersion?: unknown } | undefined)?.resourceVersion
  return typeof rv === 'string' ? rv : undefined
}

function triggerTime(obj: KubeObject): number | undefined {
  const t = obj.metadata?.annotations?.[ANNOTATION_TRIGGER_TIME]
  if (t === undefined) return undefined
  const ms = Date.parse(t)
  return Number.isFinite(ms) ? ms : undefined
}

interface Entry {
  readonly object: KubeObject
  readonly content: string
  readonly file?: string
}

class ChangeBuilder {
  readonly services = new Set<string>()
  readonly endpoints = new Set<string>()
  readonly nodes = new Set<string>()
  readonly other = new Set<string>()
  readonly triggerTimes = new Map<string, number[]>()
  full = false
  serviceEvents = 0
  endpointEvents = 0

  get empty(): boolean {
    return this.serviceEvents === 0 && this.endpointEvents === 0 && this.nodes.size === 0 && this.other.size === 0
  }

  record(before: KubeObject | undefined, after: KubeObject | undefined): void {
    const obj = (after ?? before)!
    switch (obj.kind) {
      case 'Service':
        this.serviceEvents++
        this.services.add(serviceKey(obj))
        break
      case 'EndpointSlice': {
        this.endpointEvents++
        const a = before === undefined ? undefined : sliceServiceKey(before)
        const b = after === undefined ? undefined : sliceServiceKey(after)
        if (a !== undefined) this.endpoints.add(a)
        if (b !== undefined) {
          this.endpoints.add(b)
          // like kube-proxy, only updates carry a trigger time worth measuring (not deletions)
          const t = after === undefined ? undefined : triggerTime(after)
          if (t !== undefined) {
            const list = this.triggerTimes.get(b) ?? []
            list.push(t)
            this.triggerTimes.set(b, list)
          }
        }
        break
      }
      case 'Node':
        this.nodes.add(obj.metadata?.name ?? '')
        break
      default:
        this.other.add(keyOf(obj))
        // Pods and Deployments feed the emulated EndpointSlice controller: their effect is not per service
        if (obj.kind === 'Pod' || obj.kind === 'Deployment') this.full = true
    }
  }

  build(): ChangeSet {
    return {
      services: this.services,
      endpoints: this.endpoints,
      nodes: this.nodes,
      other: this.other,
      full: this.full,
      serviceEvents: this.serviceEvents,
      endpointEvents: this.endpointEvents,
      triggerTimes: this.triggerTimes,
    }
  }
}

/** Union of change sets (what the sync runner accumulates between syncs). */
export function mergeChanges(a: ChangeSet, b: ChangeSet): ChangeSet {
  const tt = new Map<string, number[]>()
  for (const m of [a.triggerTimes, b.triggerTimes]) for (const [k, v] of m) tt.set(k, [...(tt.get(k) ?? []), ...v])
  return {
    services: new Set([...a.services, ...b.services]),
    endpoints: new Set([...a.endpoints, ...b.endpoints]),
    nodes: new Set([...a.nodes, ...b.nodes]),
    other: new Set([...a.other, ...b.other]),
    full: a.full || b.full,
    serviceEvents: a.serviceEvents + b.serviceEvents,
    endpointEvents: a.endpointEvents + b.endpointEvents,
    triggerTimes: tt,
  }
}

export class ObjectStore {
  private readonly entries = new Map<string, Entry>()
  /** service key -> keys of its EndpointSlices */
  private readonly slices = new Map<string, Set<string>>()
  /** file -> keys of the objects read from it (file sources) */
  private readonly byFile = new Map<string, Set<string>>()
  private readonly listeners = new Set<ChangeListener>()
  private readonly filter: ((obj: KubeObject) => boolean) | undefined
  private readonly log: (line: string) => void
  private gen = 0

  constructor(opts: ObjectStoreOptions = {}) {
    this.filter = opts.filter
    this.log = opts.log ?? (l => process.stderr.write(l + '\n'))
  }

  /** Bumped on every change: cheap "has anything changed since" checks. */
  get generation(): number {
    return this.gen
  }
  get size(): number {
    return this.entries.size
  }

  get(kind: Kind, namespace: string, name: string): KubeObject | undefined {
    return this.entries.get(objectKey(kind, namespace, name))?.object
  }

  list(kind: Kind): KubeObject[] {
    const out: KubeObject[] = []
    for (const e of this.entries.values()) if (e.object.kind === kind) out.push(e.object)
    return out
  }

  /** Everything, as normalize() takes it. */
  objects(): LoadedObject[] {
    return [...this.entries.values()].map(toLoaded)
  }

  /** One service's Service object (if present) and its EndpointSlices: enough to normalize just that service. */
  serviceObjects(svcKey: string): LoadedObject[] {
    const out: LoadedObject[] = []
    const slash = svcKey.indexOf('/')
    const svc = this.entries.get(objectKey('Service', svcKey.slice(0, slash), svcKey.slice(slash + 1)))
    if (svc !== undefined) out.push(toLoaded(svc))
    for (const k of this.slices.get(svcKey) ?? []) {
      const e = this.entries.get(k)
      if (e !== undefined) out.push(toLoaded(e))
    }
    return out
  }

  onChange(cb: ChangeListener): () => void {
    this.listeners.add(cb)
    return () => {
      this.listeners.delete(cb)
    }
  }

  /** Adds or replaces one object (a watch ADDED / MODIFIED). Returns whether anything changed. */
  upsert(obj: KubeObject, file?: string): boolean {
    const c = new ChangeBuilder()
    this.put(obj, file, c)
    return this.emit(c)
  }

  /** Removes one object (a watch DELETED). */
  remove(kind: Kind, namespace: string, name: string): boolean {
    const c = new ChangeBuilder()
    this.drop(objectKey(kind, namespace, name), c)
    return this.emit(c)
  }

  /** Makes the objects of these kinds exactly `objects` (a relist); one ChangeSet for the whole difference. */
  replace(kinds: readonly Kind[], objects: readonly (KubeObject | LoadedObject)[]): ChangeSet | undefined {
    const c = new ChangeBuilder()
    const kindSet = new Set<string>(kinds)
    // the last of duplicates wins (as it would in the API), without flapping between them on every reload
    const want = new Map<string, { object: KubeObject; file?: string }>()
    for (const o of objects) {
      const l = 'object' in o ? o : { object: o }
      if (kindSet.has(l.object.kind)) want.set(keyOf(l.object), l)
    }
    for (const l of want.values()) this.put(l.object, l.file, c)
    for (const [k, e] of [...this.entries]) {
      if (kindSet.has(e.object.kind) && !want.has(k)) this.drop(k, c)
    }
    return this.emit(c) ? c.build() : undefined
  }

  /**
   * Makes the objects that came from `file` exactly `objects` (that file was rewritten or removed): one ChangeSet for
   * the difference, at a cost that grows with the file, not with the store.
   */
  replaceFile(file: string, kinds: readonly Kind[], objects: readonly (KubeObject | LoadedObject)[]): ChangeSet | undefined {
    const c = new ChangeBuilder()
    const kindSet = new Set<string>(kinds)
    const want = new Map<string, KubeObject>()
    for (const o of objects) {
      const obj = 'object' in o ? o.object : o
      if (kindSet.has(obj.kind)) want.set(keyOf(obj), obj)
    }
    for (const k of [...(this.byFile.get(file) ?? [])]) {
      if (!want.has(k) && this.entries.get(k)?.file === file) this.drop(k, c)
    }
    for (const obj of want.values()) this.put(obj, file, c)
    return this.emit(c) ? c.build() : undefined
  }

  private put(raw: KubeObject, file: string | undefined, c: ChangeBuilder): void {
    const k = keyOf(raw)
    if (this.filter !== undefined && !this.filter(raw)) {
      // e.g. a Service that gained service.kubernetes.io/service-proxy-name: for us it is gone
      this.drop(k, c)
      return
    }
    const obj = trimObject(raw)
    const content = contentOf(obj)
    const prev = this.entries.get(k)
    if (prev !== undefined && prev.content === content) {
      if (resourceVersionOf(prev.object) !== resourceVersionOf(obj) || prev.file !== file) {
        this.setEntry(k, file === undefined ? { object: obj, content } : { object: obj, content, file }, prev)
      }
      return
    }
    this.setEntry(k, file === undefined ? { object: obj, content } : { object: obj, content, file }, prev)
    this.index(prev?.object, obj, k)
    c.record(prev?.object, obj)
  }

  private drop(k: string, c: ChangeBuilder): void {
    const prev = this.entries.get(k)
    if (prev === undefined) return
    this.entries.delete(k)
    this.fileIndex(k, prev.file, undefined)
    this.index(prev.object, undefined, k)
    c.record(prev.object, undefined)
  }

  private setEntry(k: string, e: Entry, prev: Entry | undefined): void {
    this.entries.set(k, e)
    if (prev?.file !== e.file) this.fileIndex(k, prev?.file, e.file)
  }

  private fileIndex(k: string, before: string | undefined, after: string | undefined): void {
    moveKey(this.byFile, k, before, after)
  }

  private index(before: KubeObject | undefined, after: KubeObject | undefined, k: string): void {
    const a = before === undefined ? undefined : sliceServiceKey(before)
    const b = after === undefined ? undefined : sliceServiceKey(after)
    if (a !== b) moveKey(this.slices, k, a, b)
  }

  private emit(c: ChangeBuilder): boolean {
    if (c.empty) return false
    this.gen++
    const change = c.build()
    for (const cb of [...this.listeners]) {
      try {
        cb(change)
      } catch (err) {
        this.log(`[store] change listener failed: ${(err as Error).stack ?? String(err)}`)
      }
    }
    return true
  }
}

/** Moves `k` from the set of `from` to the set of `to` in a one-to-many index (an emptied set is dropped). */
function moveKey(index: Map<string, Set<string>>, k: string, from: string | undefined, to: string | undefined): void {
  if (from !== undefined) {
    const s = index.get(from)
    s?.delete(k)
    if (s?.size === 0) index.delete(from)
  }
  if (to !== undefined) {
    const s = index.get(to) ?? new Set<string>()
    s.add(k)
    index.set(to, s)
  }
}

function toLoaded(e: Entry): LoadedObject {
  return e.file === undefined ? { object: e.object } : { object: e.object, file: e.file }
}

/** Sets kind and apiVersion, which list responses leave out of their items. */
export function withKind<T extends KubeObject>(obj: Record<string, unknown>, kind: T['kind']): T {
  if (obj['kind'] === kind && obj['apiVersion'] === API_VERSION[kind]) return obj as unknown as T
  return { ...obj, kind, apiVersion: API_VERSION[kind] } as unknown as T
}

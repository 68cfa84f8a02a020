// Live changes to a running lab, the way kubectl changes a cluster: `lab apply`, `lab delete`, `lab scale`,
// `lab set-ready`. A change is planned first, purely, against the lab's objects (validation, cluster IPs, node ports,
// pod placement, the EndpointSlice controller's output for the Services it touches); any problem stops it there, naming
// file, object and field, with nothing changed. Then new pods are made and probed, the object files the agents watch
// are rewritten (only those that changed), removed pods are taken down, and the state is saved.
import { expandDeployment, canonicalJSON } from '../k8s/deployment'
import { endpointSlicesForService } from '../k8s/endpointslice-controller'
import { NodePortAllocator } from '../k8s/allocate'
import { defaultServicePort, explicitClusterIPs, selectorMatches, serviceType } from '../k8s/defaults'
import { loadPaths } from '../k8s/load'
import {
  LABEL_MANAGED_BY,
  LABEL_SERVICE_NAME,
  MANAGED_BY_CONTROLLER,
  namespaceOf,
  objectRef,
  type Deployment,
  type EndpointSlice,
  type KubeObject,
  type LoadedObject,
  type Node,
  type Pod,
  type Service,
} from '../k8s/types'
import { DEFAULT_NODE_PORT_RANGE, validateAll } from '../k8s/validate'
import type { Problem } from '../model/cluster'
import { isRoot } from '../netns/netns'
import type { ClusterIPAllocator } from '../k8s/allocate'
import {
  allocateServiceIPs,
  controllerWarning,
  deploymentWantedIPs,
  labClusterIPAllocator,
  LabManifestError,
  nodeObject,
  podInputsOf,
  runningPod,
  wantsIPv6,
  type WantIP,
} from './compile'
import { APPLIED_DIR, keyOf, MANIFESTS_DIR, objectKey, readObjects, removeObject, writeObject, ensureDir } from './objects'
import { placePods, type PlannedNode, type PlannedPod } from './plan'
import { createNamespaces, podState, removePods, startContainers, waitReady, wirePods, type LabRuntime } from './pods'
import { LabError, loadLabState, saveState, type LabPodState, type LabState } from './state'
import { join } from 'node:path'

/** A running lab opened for changes: its state and objects, loaded once, kept in step with what is on disk. */
export interface LabSession {
  readonly state: LabState
  readonly nodes: readonly PlannedNode[]
  readonly dualStack: boolean
  /** the user's objects as last applied, by objectKey */
  readonly applied: Map<string, KubeObject>
  /** what the agents read, by objectKey */
  readonly served: Map<string, KubeObject>
  /** EndpointSlice keys by `<namespace>/<service>` */
  readonly slicesBySvc: Map<string, Set<string>>
  /** Pod keys by namespace */
  readonly podsByNs: Map<string, Set<string>>
  /** Service keys by namespace */
  readonly svcsByNs: Map<string, Set<string>>
  /** cluster IP and node port owners (`<namespace>/<name>`) */
  readonly ipOwner: Map<string, string>
  readonly portOwner: Map<number, string>
  alloc: ClusterIPAllocator | undefined
  readonly log: (line: string) => void
  readonly timeoutMs: number
}

export interface OpenOptions {
  readonly log?: (line: string) => void
  /** how long new pods may take to answer their probes (default 60 s) */
  readonly readyTimeoutMs?: number
}

const KIND_RESOURCE: Readonly<Record<string, string>> = {
  Service: 'service',
  Deployment: 'deployment.apps',
  Pod: 'pod',
  EndpointSlice: 'endpointslice.discovery.k8s.io',
  Namespace: 'namespace',
  Node: 'node',
}
/** kubectl's `<resource>/<name>` */
const resourceRef = (o: Pick<KubeObject, 'kind' | 'metadata'>): string => `${KIND_RESOURCE[o.kind] ?? o.kind.toLowerCase()}/${o.metadata?.name ?? ''}`

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T
const nsName = (o: Pick<KubeObject, 'metadata'>): string => `${namespaceOf(o)}/${o.metadata?.name ?? ''}`
const hasSelector = (svc: Service): boolean => Object.keys(svc.spec?.selector ?? {}).length > 0 && serviceType(svc) !== 'ExternalName'

function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k)
  if (!s) {
    s = new Set()
    m.set(k, s)
  }
  s.add(v)
}

function sliceService(o: EndpointSlice): string | undefined {
  const svc = o.metadata?.labels?.[LABEL_SERVICE_NAME]
  return svc === undefined || svc === '' ? undefined : `${namespaceOf(o)}/${svc}`
}

function index(s: LabSession, o: KubeObject, add: boolean): void {
  const key = objectKey(o)
  const op = <K, V>(m: Map<K, Set<V>>, k: K, v: V): void => {
    if (add) addTo(m, k, v)
    else m.get(k)?.delete(v)
  }
  if (o.kind === 'Pod') op(s.podsByNs, namespaceOf(o), key)
  else if (o.kind === 'Service') {
    op(s.svcsByNs, namespaceOf(o), key)
    for (const ip of explicitClusterIPs(o)) {
      if (add) s.ipOwner.set(ip, nsName(o))
      else s.ipOwner.delete(ip)
    }
    for (const p of o.spec?.ports ?? [])
      if (typeof p.nodePort === 'number' && p.nodePort !== 0) {
        if (add) s.portOwner.set(p.nodePort, nsName(o))
        else s.portOwner.delete(p.nodePort)
      }
  } else if (o.kind === 'EndpointSlice') {
    const svc = sliceService(o)
    if (svc !== undefined) op(s.slicesBySvc, svc, key)
  }
}

/** Opens a running lab for changes (reads its state and objects once). */
export function openLab(name?: string, opts: OpenOptions = {}): LabSession {
  const state = loadLabState(name)
  if (state.phase !== 'up') throw new LabError(`lab ${state.name} is ${state.phase}, not up`)
  const manifests = join(state.dir, MANIFESTS_DIR)
  if (state.manifests !== manifests)
    throw new LabError(`lab ${state.name} was made by an older tundra (one manifests file): take it down and up again to change it live`)
  if (state.dataplane === 'iptables') {
    throw new LabError(`lab ${state.name} runs kube-proxy's iptables rules, loaded once at lab up: live changes need --dataplane tundra or none`)
  }
  const nodes: PlannedNode[] = state.nodes.map((n, i) => ({
    index: i + 1,
    name: n.name,
    ns: n.ns,
    ip: n.ip,
    podCIDR: n.podCIDR,
    ...(n.podCIDR6 === undefined ? {} : { podCIDR6: n.podCIDR6 }),
    bridgePort: `p-${n.name}`,
    ...(n.labels === undefined ? {} : { labels: n.labels }),
  }))
  const s: LabSession = {
    state,
    nodes,
    dualStack: nodes.some(n => n.podCIDR6 !== undefined),
    applied: readObjects(join(state.dir, APPLIED_DIR)),
    served: readObjects(manifests),
    slicesBySvc: new Map(),
    podsByNs: new Map(),
    svcsByNs: new Map(),
    ipOwner: new Map(),
    portOwner: new Map(),
    alloc: undefined,
    log: opts.log ?? ((line: string) => process.stderr.write(`${line}\n`)),
    timeoutMs: opts.readyTimeoutMs ?? 60_000,
  }
  for (const o of s.served.values()) index(s, o, true)
  return s
}

// ---- planning (pure: reads the session, changes nothing) ----

/** What one change does. `served`/`applied`: object (write) or null (remove), by key. */
export interface LabChange {
  readonly lines: string[]
  readonly served: Map<string, KubeObject | null>
  readonly applied: Map<string, KubeObject | null>
  readonly addPods: PlannedPod[]
  readonly removePods: LabPodState[]
  /** pod key → failing readiness (set-ready) */
  readonly readiness: Map<string, boolean>
  readonly warnings: string[]
}

class Draft {
  readonly change: LabChange = { lines: [], served: new Map(), applied: new Map(), addPods: [], removePods: [], readiness: new Map(), warnings: [] }
  readonly problems: Problem[] = []
  /** Services whose slices to compute again */
  readonly services = new Set<string>()
  /** pods added, removed or relabelled: Services in their namespace that select them (before or after) are recomputed */
  readonly touchedPods: Pod[] = []
  private nodePorts: NodePortAllocator | undefined
  constructor(readonly s: LabSession) {}

  served(key: string): KubeObject | undefined {
    const c = this.change.served
    return c.has(key) ? (c.get(key) ?? undefined) : this.s.served.get(key)
  }
  applied(key: string): KubeObject | undefined {
    const c = this.change.applied
    return c.has(key) ? (c.get(key) ?? undefined) : this.s.applied.get(key)
  }
  putServed(o: KubeObject): void {
    this.change.served.set(objectKey(o), o)
  }
  dropServed(key: string): void {
    if (this.served(key) !== undefined) this.change.served.set(key, null)
  }
  putApplied(o: KubeObject): void {
    this.change.applied.set(objectKey(o), o)
  }
  dropApplied(key: string): void {
    if (this.applied(key) !== undefined) this.change.applied.set(key, null)
  }

  problem(l: { file?: string | undefined }, o: KubeObject, field: string, reason: string): void {
    this.problems.push({ ...(l.file === undefined ? {} : { file: l.file }), object: objectRef(o), field, reason })
  }

  /** Keys of the namespace's objects of one kind after the change so far. */
  keysIn(kind: 'Pod' | 'Service', ns: string): string[] {
    const base = (kind === 'Pod' ? this.s.podsByNs : this.s.svcsByNs).get(ns) ?? new Set<string>()
    const out = new Set(base)
    const prefix = keyOf(kind, ns, '')
    for (const [k, v] of this.change.served) {
      if (!k.startsWith(prefix)) continue
      if (v === null) out.delete(k)
      else out.add(k)
    }
    return [...out]
  }

  allocator(): ClusterIPAllocator {
    this.s.alloc ??= labClusterIPAllocator(this.s.nodes, this.s.dualStack, this.s.ipOwner.keys())
    return this.s.alloc
  }
  portAllocator(): NodePortAllocator {
    this.nodePorts ??= new NodePortAllocator(DEFAULT_NODE_PORT_RANGE, this.s.portOwner.keys())
    return this.nodePorts
  }
}

/** The lines kubectl prints for an object: created, configured or unchanged. */
const verb = (prev: KubeObject | undefined): string => (prev === undefined ? 'created' : 'configured')

function planService(d: Draft, l: LoadedObject<Service>): void {
  const s = d.s
  const svc = clone(l.object)
  const key = objectKey(svc)
  const prev = d.served(key) as Service | undefined
  const spec = (svc.spec ??= {})
  // cluster IPs and node ports stay what the API server gave, unless the manifest asks otherwise (immutable for IPs)
  const before = prev === undefined ? [] : explicitClusterIPs(prev)
  const given = explicitClusterIPs(svc)
  if (prev !== undefined && before.length > 0 && serviceType(svc) !== 'ExternalName' && spec.clusterIP !== 'None') {
    if (given.length === 0) {
      spec.clusterIP = before[0]!
      spec.clusterIPs = [...before]
    } else if (given[0] !== before[0]) {
      d.problem(l, svc, 'spec.clusterIP', `Invalid value: ${JSON.stringify(given[0])}: field is immutable (it is ${before[0]})`)
      return
    }
  }
  for (const ip of explicitClusterIPs(svc)) {
    const owner = s.ipOwner.get(ip)
    if (owner !== undefined && owner !== nsName(svc)) {
      d.problem(l, svc, 'spec.clusterIP', `Invalid value: ${JSON.stringify(ip)}: provided IP is already allocated to Service ${owner}`)
      return
    }
  }
  if (wantsIPv6(svc) && !s.dualStack) {
    d.problem(l, svc, 'spec.ipFamilies', 'this lab is IPv4-only (no Service asked for IPv6 at lab up): its pods have no IPv6 addresses')
    return
  }
  allocateServiceIPs(svc, d.allocator(), {
    nodes: s.nodes,
    dualStack: s.dualStack,
    warn: w => d.change.warnings.push(w),
    ...(l.file === undefined ? {} : { file: l.file }),
  })
  const type = serviceType(svc)
  const wantsNodePorts = type === 'NodePort' || (type === 'LoadBalancer' && spec.allocateLoadBalancerNodePorts !== false)
  const prevPorts = (prev?.spec?.ports ?? []).map(defaultServicePort)
  let failed = false
  spec.ports = (spec.ports ?? []).map((p, i) => {
    const dp = defaultServicePort(p)
    if (dp.nodePort !== 0) {
      const owner = s.portOwner.get(dp.nodePort)
      if (owner !== undefined && owner !== nsName(svc)) {
        d.problem(l, svc, `spec.ports[${i}].nodePort`, `Invalid value: ${dp.nodePort}: provided port is already allocated to Service ${owner}`)
        failed = true
      }
      return p
    }
    if (!wantsNodePorts) return p
    const kept = prevPorts.find(q => q.name === dp.name && q.protocol === dp.protocol && q.nodePort !== 0)?.nodePort
    const np = kept ?? d.portAllocator().allocate(`${nsName(svc)}/${dp.name}/${dp.port}/${dp.protocol}`)
    if (np === undefined) {
      d.problem(l, svc, `spec.ports[${i}].nodePort`, 'no free node port left')
      failed = true
      return p
    }
    return { ...p, nodePort: np }
  })
  if (failed) return
  d.putServed(svc)
  d.services.add(nsName(svc))
}

function removeServiceSlices(d: Draft, svcKey: string): void {
  for (const k of d.s.slicesBySvc.get(svcKey) ?? []) {
    const o = d.served(k) as EndpointSlice | undefined
    if (o?.metadata?.labels?.[LABEL_MANAGED_BY] === MANAGED_BY_CONTROLLER) d.dropServed(k)
  }
}

/** Pods to add (placed later, all together) and pods to remove. */
interface PodWork {
  readonly add: LoadedObject<Pod>[]
  readonly wanted: Map<string, WantIP>
}

function removePod(d: Draft, namespace: string, name: string): void {
  const key = keyOf('Pod', namespace, name)
  const served = d.served(key) as Pod | undefined
  if (served) d.touchedPods.push(served)
  d.dropServed(key)
  const st = d.s.state.pods.find(p => p.namespace === namespace && p.name === name)
  if (st && !d.change.removePods.includes(st)) d.change.removePods.push(st)
}

function planDeployment(d: Draft, l: LoadedObject<Deployment>, prev: Deployment | undefined, work: PodWork): void {
  const before = prev === undefined ? [] : expandDeployment(prev).pods
  const after = expandDeployment(l.object).pods
  const keep = new Set(after.map(nsName))
  for (const p of before) if (!keep.has(nsName(p))) removePod(d, namespaceOf(p), p.metadata?.name ?? '')
  const had = new Set(before.map(nsName))
  const w = deploymentWantedIPs(l.object, l.file)
  d.problems.push(...w.problems)
  for (const [k, v] of w.wanted) work.wanted.set(k, v)
  for (const p of after) {
    if (had.has(nsName(p))) continue
    if (d.served(objectKey(p)) !== undefined) {
      d.problem(l, l.object, 'metadata.name', `its pod ${p.metadata?.name ?? ''} would replace an existing Pod of that name`)
      continue
    }
    work.add.push({ object: p, ...(l.file === undefined ? {} : { file: l.file }) })
  }
}

function planPod(d: Draft, l: LoadedObject<Pod>, prev: Pod | undefined, work: PodWork): void {
  const key = objectKey(l.object)
  if (prev === undefined) {
    if (d.served(key) !== undefined) {
      d.problem(l, l.object, 'metadata.name', 'a Pod of that name already runs (made by a Deployment): delete or scale the Deployment instead')
      return
    }
    work.add.push(l)
    return
  }
  if (canonicalJSON(prev.spec ?? {}) !== canonicalJSON(l.object.spec ?? {})) {
    d.problem(l, l.object, 'spec', 'Forbidden: pod updates may not change the spec: delete the Pod and apply it again')
    return
  }
  // labels and annotations: the running object keeps its status
  const running = clone(d.served(key) as Pod)
  running.metadata = { ...clone(l.object.metadata ?? {}) }
  d.touchedPods.push(d.served(key) as Pod, running)
  d.putServed(running)
}

/** Places new pods next to the running ones and records their running objects. */
function placeNew(d: Draft, work: PodWork): void {
  if (work.add.length === 0) return
  const s = d.s
  const inputs = podInputsOf(work.add, work.wanted)
  d.problems.push(...inputs.problems)
  const existing = s.state.pods.filter(p => !d.change.removePods.includes(p))
  const placed = placePods(s.state.name, s.nodes, inputs.inputs, existing)
  d.problems.push(...placed.problems)
  d.change.warnings.push(...placed.warnings)
  const nodeIP = new Map(s.nodes.map(n => [n.name, n.ip]))
  for (const p of placed.pods) {
    const pod = work.add.find(l => l.object.metadata?.name === p.name && namespaceOf(l.object) === p.namespace)!.object
    const running = runningPod(pod, p, nodeIP.get(p.node) ?? '')
    d.putServed(running)
    d.touchedPods.push(running)
    d.change.addPods.push(p)
  }
}

/** The EndpointSlice controller, for the Services the change touches. */
function reconcileSlices(d: Draft): void {
  const s = d.s
  const byNs = new Map<string, Pod[]>()
  for (const p of d.touchedPods) {
    const l = byNs.get(namespaceOf(p)) ?? []
    l.push(p)
    byNs.set(namespaceOf(p), l)
  }
  for (const [ns, pods] of byNs) {
    for (const k of d.keysIn('Service', ns)) {
      const svc = d.served(k) as Service
      const sel = svc.spec?.selector ?? {}
      if (!hasSelector(svc)) continue
      if (pods.some(p => selectorMatches(sel, p.metadata?.labels))) d.services.add(nsName(svc))
    }
  }
  const nodes: Node[] = s.nodes.map(nodeObject)
  for (const svcKey of d.services) {
    const [ns, name] = [svcKey.slice(0, svcKey.indexOf('/')), svcKey.slice(svcKey.indexOf('/') + 1)]
    const svc = d.served(keyOf('Service', ns, name)) as Service | undefined
    const old = new Set(
      [...(s.slicesBySvc.get(svcKey) ?? [])].filter(
        k => (d.served(k) as EndpointSlice | undefined)?.metadata?.labels?.[LABEL_MANAGED_BY] === MANAGED_BY_CONTROLLER,
      ),
    )
    if (svc === undefined || !hasSelector(svc)) {
      for (const k of old) d.dropServed(k)
      continue
    }
    const pods = d.keysIn('Pod', ns).map(k => d.served(k) as Pod)
    for (const slice of endpointSlicesForService(svc, pods, { nodes })) {
      const k = objectKey(slice)
      old.delete(k)
      const prev = d.served(k)
      if (prev === undefined || canonicalJSON(prev) !== canonicalJSON(slice)) d.putServed(slice)
    }
    for (const k of old) d.dropServed(k)
  }
}

function finish(d: Draft): LabChange {
  if (d.problems.length > 0) {
    d.s.alloc = undefined // it may have handed out addresses this change will not use
    throw new LabManifestError(d.problems)
  }
  reconcileSlices(d)
  // namespaces the agents should know about, as lab up writes them
  for (const o of d.change.served.values()) {
    if (o === null || o.kind === 'Namespace' || o.kind === 'Node') continue
    const nk = keyOf('Namespace', '', namespaceOf(o))
    if (d.served(nk) === undefined) d.putServed({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespaceOf(o) } })
  }
  return d.change
}

/** Plans `lab apply` of objects (as loaded from files). Throws LabManifestError (file: object: field: reason). */
export function planApply(s: LabSession, objects: readonly LoadedObject[]): LabChange {
  const d = new Draft(s)
  const checked = validateAll(objects)
  d.problems.push(...checked.problems)
  const work: PodWork = { add: [], wanted: new Map() }
  for (const l of checked.objects) {
    const o = l.object
    if (o.kind === 'Node') {
      d.change.warnings.push(
        `${l.file === undefined ? '' : `${l.file}: `}${objectRef(o)}: ignored, the lab makes its own nodes (their labels are read at lab up)`,
      )
      continue
    }
    const w = controllerWarning(l)
    if (w !== undefined) d.change.warnings.push(w)
    const key = objectKey(o)
    const prev = d.applied(key)
    if (prev !== undefined && canonicalJSON(prev) === canonicalJSON(o)) {
      d.change.lines.push(`${resourceRef(o)} unchanged`)
      continue
    }
    const problemsBefore = d.problems.length
    switch (o.kind) {
      case 'Namespace':
        d.putServed(clone(o))
        break
      case 'Service':
        planService(d, l as LoadedObject<Service>)
        break
      case 'EndpointSlice':
        d.putServed(clone(o))
        break
      case 'Deployment':
        planDeployment(d, l as LoadedObject<Deployment>, prev as Deployment | undefined, work)
        break
      case 'Pod':
        planPod(d, l as LoadedObject<Pod>, prev as Pod | undefined, work)
        break
    }
    if (d.problems.length > problemsBefore) continue
    d.putApplied(clone(o))
    d.change.lines.push(`${resourceRef(o)} ${verb(prev)}`)
  }
  placeNew(d, work)
  return finish(d)
}

export interface ObjectRefArg {
  readonly kind: string
  readonly namespace: string
  readonly name: string
}

const KIND_ALIASES: Readonly<Record<string, string>> = {
  svc: 'Service',
  service: 'Service',
  services: 'Service',
  deploy: 'Deployment',
  deployment: 'Deployment',
  deployments: 'Deployment',
  'deployment.apps': 'Deployment',
  po: 'Pod',
  pod: 'Pod',
  pods: 'Pod',
  endpointslice: 'EndpointSlice',
  endpointslices: 'EndpointSlice',
  'endpointslice.discovery.k8s.io': 'EndpointSlice',
  ns: 'Namespace',
  namespace: 'Namespace',
  namespaces: 'Namespace',
}

/** `svc/web`, `deploy/web`, `pod/x` (kubectl's short names) in namespace `namespace`. */
export function parseObjectRef(text: string, namespace = 'default'): ObjectRefArg {
  const slash = text.indexOf('/')
  const kind = slash < 0 ? undefined : KIND_ALIASES[text.slice(0, slash).toLowerCase()]
  const name = text.slice(slash + 1)
  if (slash < 0 || kind === undefined || name === '') {
    throw new LabError(`${JSON.stringify(text)}: give TYPE/NAME with TYPE one of svc, deploy, pod, endpointslice, ns`)
  }
  return { kind, namespace: kind === 'Namespace' ? '' : namespace, name }
}

const notFound = (r: ObjectRefArg): string =>
  `${KIND_RESOURCE[r.kind] ?? r.kind}/${r.name}${r.namespace === '' ? '' : ` in namespace ${r.namespace}`} not found`

/** Plans `lab delete`. Deleting what is not there is an error (as kubectl without --ignore-not-found). */
export function planDelete(s: LabSession, refs: readonly ObjectRefArg[]): LabChange {
  const d = new Draft(s)
  const expanded: ObjectRefArg[] = []
  for (const r of refs) {
    if (r.kind !== 'Namespace') {
      expanded.push(r)
      continue
    }
    // a namespace goes with everything in it
    for (const o of s.applied.values())
      if (o.kind !== 'Namespace' && namespaceOf(o) === r.name) expanded.push({ kind: o.kind, namespace: r.name, name: o.metadata?.name ?? '' })
    expanded.push(r)
  }
  for (const r of expanded) {
    const key = keyOf(r.kind, r.namespace, r.name)
    const prev = d.applied(key)
    if (prev === undefined) {
      const running = d.served(key)
      const owner = running?.metadata?.ownerReferences?.[0]
      d.problems.push({
        object: `${r.kind} ${r.namespace === '' ? '' : `${r.namespace}/`}${r.name}`,
        field: '',
        reason: running !== undefined && owner !== undefined ? `made by ${owner.kind} ${owner.name}: scale or delete its Deployment` : 'not found',
      })
      continue
    }
    d.dropApplied(key)
    switch (r.kind) {
      case 'Service':
        d.dropServed(key)
        removeServiceSlices(d, `${r.namespace}/${r.name}`)
        break
      case 'Deployment':
        for (const p of expandDeployment(prev as Deployment).pods) removePod(d, r.namespace, p.metadata?.name ?? '')
        break
      case 'Pod':
        removePod(d, r.namespace, r.name)
        break
      default:
        d.dropServed(key)
    }
    d.change.lines.push(`${resourceRef(prev)} deleted`)
  }
  if (d.problems.length > 0) throw new LabError(d.problems.map(p => `${p.object}: ${p.reason}`).join('\n'))
  return finish(d)
}

/** Plans `lab scale deploy/NAME --replicas N`. */
export function planScale(s: LabSession, namespace: string, name: string, replicas: number): LabChange {
  if (!Number.isInteger(replicas) || replicas < 0) throw new LabError(`--replicas must be a whole number ≥ 0, not ${replicas}`)
  const prev = s.applied.get(keyOf('Deployment', namespace, name)) as Deployment | undefined
  if (!prev) throw new LabError(notFound({ kind: 'Deployment', namespace, name }))
  const next = clone(prev)
  next.spec = { ...(next.spec ?? {}), replicas }
  const d = new Draft(s)
  const work: PodWork = { add: [], wanted: new Map() }
  planDeployment(d, { object: next }, prev, work)
  placeNew(d, work)
  d.putApplied(next)
  d.change.lines.push(`${resourceRef(next)} scaled`)
  return finish(d)
}

/** Plans `lab set-ready pod/NAME --ready=…`: the pod's Ready condition, as a passing or failing readiness probe sets it. */
export function planSetReady(s: LabSession, namespace: string, name: string, ready: boolean): LabChange {
  const key = keyOf('Pod', namespace, name)
  const pod = s.served.get(key) as Pod | undefined
  if (!pod) throw new LabError(notFound({ kind: 'Pod', namespace, name }))
  const d = new Draft(s)
  const next = clone(pod)
  const status = ready ? 'True' : 'False'
  next.status = {
    ...(next.status ?? {}),
    conditions: [
      { type: 'Ready', status },
      { type: 'ContainersReady', status },
    ],
  }
  if (canonicalJSON(next) !== canonicalJSON(pod)) {
    d.putServed(next)
    d.touchedPods.push(next)
  }
  d.change.readiness.set(`${namespace}/${name}`, !ready)
  d.change.lines.push(`pod/${name} ${ready ? 'ready' : 'not ready'}`)
  return finish(d)
}

// ---- carrying a change out ----

function runtime(s: LabSession): LabRuntime {
  // the same scripts lab up ran (the state records the repository)
  const dist = (rel: string): string => join(s.state.repo, 'dist', rel)
  return {
    state: s.state,
    say: s.log,
    timeoutMs: s.timeoutMs,
    node: process.execPath,
    scripts: { netexec: dist('src/lab/netexec-main.js'), probe: dist('src/lab/probe-main.js') },
  }
}

/** Makes new pods, rewrites the changed object files, takes removed pods down, saves the state. Returns kubectl's lines. */
export async function commit(s: LabSession, c: LabChange): Promise<string[]> {
  const state = s.state
  for (const w of c.warnings) s.log(`[lab] warning: ${w}`)
  if (c.addPods.length > 0) {
    if (!isRoot()) throw new LabError('creating pods needs root: it makes network namespaces')
    const rt = runtime(s)
    for (const p of c.addPods) state.pods.push(podState(p))
    saveState(state)
    try {
      await createNamespaces(
        rt,
        c.addPods.map(p => p.ns),
        'pod namespaces',
      )
      await wirePods(rt, s.nodes, c.addPods)
      await startContainers(rt, c.addPods)
      await waitReady(rt, s.nodes, new Set(c.addPods.map(p => `${p.namespace}/${p.name}`)))
    } catch (err) {
      const made = new Set(c.addPods.map(p => `${p.namespace}/${p.name}`))
      await removePods(
        state,
        state.pods.filter(p => made.has(`${p.namespace}/${p.name}`)),
      )
      throw err
    }
  }
  // the object files: what the agents pick up (new pods are ready by now; removed ones still run until after)
  const manifests = join(state.dir, MANIFESTS_DIR)
  const applied = join(state.dir, APPLIED_DIR)
  ensureDir(applied)
  for (const [key, o] of c.served) {
    const prev = s.served.get(key)
    if (prev !== undefined) index(s, prev, false)
    if (o === null) {
      if (prev !== undefined) removeObject(manifests, prev)
      s.served.delete(key)
    } else {
      writeObject(manifests, o)
      s.served.set(key, o)
      index(s, o, true)
    }
  }
  for (const [key, o] of c.applied) {
    const prev = s.applied.get(key)
    if (o === null) {
      if (prev !== undefined) removeObject(applied, prev)
      s.applied.delete(key)
    } else {
      writeObject(applied, o)
      s.applied.set(key, o)
    }
  }
  for (const [key, failing] of c.readiness) {
    state.pods = state.pods.map(p => {
      if (`${p.namespace}/${p.name}` !== key) return p
      const { failingReadiness: _, ...rest } = p
      return failing ? { ...rest, failingReadiness: true } : rest
    })
  }
  await removePods(state, c.removePods)
  saveState(state)
  return c.lines
}

// ---- the in-process API (the CLI and benchmarks) ----

/** `kubectl apply` of objects: returns lines like `service/web created`. */
export async function labApply(s: LabSession, objects: readonly LoadedObject[]): Promise<string[]> {
  return commit(s, planApply(s, objects))
}

/** Reads manifest files/directories for apply or delete; unreadable or invalid documents are a LabManifestError. */
export function loadManifestFiles(files: readonly string[]): { objects: LoadedObject[]; warnings: string[] } {
  if (files.length === 0) throw new LabError('give at least one manifest file or directory (-f)')
  const loaded = loadPaths(files)
  if (loaded.problems.length > 0) throw new LabManifestError(loaded.problems)
  return { objects: loaded.objects, warnings: loaded.warnings }
}

export async function labDelete(s: LabSession, refs: readonly ObjectRefArg[]): Promise<string[]> {
  return commit(s, planDelete(s, refs))
}

export async function labScale(s: LabSession, namespace: string, name: string, replicas: number): Promise<string[]> {
  return commit(s, planScale(s, namespace, name, replicas))
}

export async function labSetReady(s: LabSession, namespace: string, pod: string, ready: boolean): Promise<string[]> {
  return commit(s, planSetReady(s, namespace, pod, ready))
}

/** The objects of loaded manifests as delete references. */
export function refsOf(objects: readonly LoadedObject[]): ObjectRefArg[] {
  return objects
    .filter(l => l.object.kind !== 'Node')
    .map(l => ({
      kind: l.object.kind,
      namespace: l.object.kind === 'Namespace' ? '' : namespaceOf(l.object),
      name: l.object.metadata?.name ?? '',
    }))
}

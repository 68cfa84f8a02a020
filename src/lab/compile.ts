// From manifest paths to everything a lab needs, without touching the system: objects read and validated, Deployments
// expanded, pods placed and addressed, EndpointSlices computed, cluster IPs and node ports made explicit.
import type { Cluster, Problem } from '../model/cluster'
import { ClusterIPAllocator } from '../k8s/allocate'
import { declaredFamilies, explicitClusterIPs, isHeadlessSpec, serviceType } from '../k8s/defaults'
import { ipFamily } from '../k8s/ip'
import type { Family } from '../model/cluster'
import { expandDeployment, expandDeployments } from '../k8s/deployment'
import { runEndpointSliceController } from '../k8s/endpointslice-controller'
import { loadPaths } from '../k8s/load'
import { normalize } from '../k8s/normalize'
import {
  namespaceOf, objectRef,
  type Deployment, type EndpointSlice, type KubeObject, type LoadedObject, type Namespace, type Node, type Service,
} from '../k8s/types'
import { validateAll } from '../k8s/validate'
import { LAB, planNodes, placePods, type Dataplane, type PlannedNode, type PlannedPod, type PodInput } from './plan'
import { LabError } from './state'

export class LabManifestError extends LabError {
  constructor(readonly problems: readonly Problem[]) {
    super(`invalid manifests:\n${problems.map(formatProblem).join('\n')}`)
  }
}

/** `file: Kind ns/name: field: reason`, the shape kubectl users know from `kubectl apply`. */
export function formatProblem(p: Problem): string {
  return [p.file, p.object, p.field, p.reason].filter(s => s !== undefined && s !== '').join(': ')
}

export interface LabPlan {
  readonly name: string
  readonly dataplane: Dataplane
  readonly nodes: readonly PlannedNode[]
  readonly pods: readonly PlannedPod[]
  /** some Service asks for IPv6: pods get an IPv6 address too, and Services an IPv6 cluster IP when they ask */
  readonly dualStack: boolean
  /** what the agents read: Namespaces, Nodes, Pods (with IPs, node, Ready), Services (explicit IPs/ports), EndpointSlices */
  readonly manifests: readonly KubeObject[]
  readonly cluster: Cluster
  readonly warnings: readonly string[]
}

export interface CompileOptions {
  readonly name: string
  readonly files: readonly string[]
  readonly nodes: number
  readonly dataplane: Dataplane
  /** called for each warning as soon as it is known (so warnings show even when a later error stops the lab) */
  readonly onWarning?: (warning: string) => void
}

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T
const annotationField = (key: string): string => `metadata.annotations[${key}]`

/** Reads, checks and plans a lab; throws LabManifestError naming file, object and field for anything invalid. */
export function compileLab(opts: CompileOptions): LabPlan {
  if (opts.files.length === 0) throw new LabError('give at least one manifest file or directory (-f)')
  const loaded = loadPaths(opts.files)
  const warnings: string[] = []
  const warn = (w: string): void => { warnings.push(w); opts.onWarning?.(w) }
  for (const w of loaded.warnings) warn(w)
  if (loaded.problems.length > 0) throw new LabManifestError(loaded.problems)
  const checked = validateAll(loaded.objects)
  const problems: Problem[] = [...checked.problems]

  // The lab makes its own nodes; Node objects in the input would describe machines that do not exist.
  const input: LoadedObject[] = []
  for (const l of checked.objects) {
    if (l.object.kind === 'Node') { warn(`${l.file === undefined ? '' : `${l.file}: `}${objectRef(l.object)}: ignored, the lab makes its own nodes (--nodes)`); continue }
    input.push(l)
  }

  // Addresses asked for by annotation: on a Pod, one IP; on a Deployment, a list (replica i gets entry i).
  const wanted = new Map<string, NonNullable<PodInput['wantIP']>>()
  for (const l of input) {
    if (l.object.kind !== 'Deployment') continue
    const d: Deployment = l.object
    const list = d.metadata?.annotations?.[LAB.podIPsAnnotation]
    if (list === undefined) continue
    const ips = list.split(',').map(s => s.trim()).filter(Boolean)
    const pods = expandDeployment(d).pods
    const field = annotationField(LAB.podIPsAnnotation)
    if (ips.length > pods.length) {
      problems.push({ ...(l.file === undefined ? {} : { file: l.file }), object: objectRef(d), field, reason: `lists ${ips.length} addresses for ${pods.length} replicas` })
    }
    pods.forEach((p, i) => {
      const ip = ips[i]
      if (ip === undefined) return
      wanted.set(`${namespaceOf(p)}/${p.metadata?.name ?? ''}`, { ip, field, object: objectRef(d), ...(l.file === undefined ? {} : { file: l.file }) })
    })
  }

  const objects = expandDeployments(input).filter(l => l.object.kind !== 'Deployment')
  const podInputs: PodInput[] = []
  for (const l of objects) {
    if (l.object.kind !== 'Pod') continue
    const pod = l.object
    const at = l.file === undefined ? {} : { file: l.file }
    if (pod.spec?.hostNetwork === true) problems.push({ ...at, object: objectRef(pod), field: 'spec.hostNetwork', reason: 'host-network pods are not supported by the lab' })
    const own = pod.metadata?.annotations?.[LAB.podIPAnnotation]
    const key = `${namespaceOf(pod)}/${pod.metadata?.name ?? ''}`
    const want = own !== undefined
      ? { ip: own.trim(), field: annotationField(LAB.podIPAnnotation), object: objectRef(pod), ...at }
      : wanted.get(key)
    podInputs.push({ pod, ...at, ...(want === undefined ? {} : { wantIP: want }) })
  }

  if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > LAB.maxNodes) {
    throw new LabError(`--nodes must be 1-${LAB.maxNodes}, not ${opts.nodes}`)
  }
  const dualStack = objects.some(l => l.object.kind === 'Service' && wantsIPv6(l.object))
  const nodes = planNodes(opts.name, opts.nodes, { dualStack })
  if (dualStack && opts.nodes > 1) warn(`IPv6 reaches only pods on the same node: tundra carries IPv4 between nodes (VXLAN), not IPv6`)
  const placed = placePods(opts.name, nodes, podInputs)
  problems.push(...placed.problems)
  placed.warnings.forEach(warn)
  if (problems.length > 0) throw new LabManifestError(problems)

  // The objects as the API server would hold them once every pod runs.
  const byKey = new Map(placed.pods.map(p => [`${p.namespace}/${p.name}`, p]))
  const nodeObjects: Node[] = nodes.map(n => ({
    apiVersion: 'v1', kind: 'Node',
    metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name, 'kubernetes.io/os': 'linux' } },
    spec: { podCIDR: n.podCIDR, podCIDRs: n.podCIDR6 === undefined ? [n.podCIDR] : [n.podCIDR, n.podCIDR6] },
    status: { addresses: [{ type: 'InternalIP', address: n.ip }, { type: 'Hostname', address: n.name }] },
  }))
  const nodeIPs = new Map(nodes.map(n => [n.name, n.ip]))
  const running: LoadedObject[] = objects.map(l => {
    if (l.object.kind === 'Service') return { ...l, object: clone(l.object) }
    if (l.object.kind !== 'Pod') return l
    const pod = clone(l.object)
    const p = byKey.get(`${namespaceOf(pod)}/${pod.metadata?.name ?? ''}`)!
    pod.spec = { ...(pod.spec ?? {}), nodeName: p.node }
    pod.status = {
      phase: 'Running', podIP: p.ip, podIPs: p.ip6 === undefined ? [{ ip: p.ip }] : [{ ip: p.ip }, { ip: p.ip6 }], hostIP: nodeIPs.get(p.node) ?? '',
      conditions: [{ type: 'Ready', status: 'True' }, { type: 'ContainersReady', status: 'True' }],
    }
    return { ...l, object: pod }
  })
  preallocateClusterIPs(running, nodes, warn, dualStack)
  const computed = runEndpointSliceController(running, { nodes: nodeObjects })
  const all: LoadedObject[] = [...nodeObjects.map(object => ({ object })), ...running, ...computed]
  const norm = normalize(all, { validate: false, serviceCIDRs: serviceCIDRs(dualStack) })
  if (norm.problems.length > 0) throw new LabManifestError(norm.problems)
  norm.warnings.forEach(warn)

  // Cluster IPs and node ports written out, so every agent (and a later reader) sees the same allocation.
  const svcByKey = new Map(norm.cluster.services.map(s => [`${s.namespace}/${s.name}`, s]))
  const explicit = running.map(l => {
    if (l.object.kind !== 'Service') return l.object
    const svc: Service = l.object
    const n = svcByKey.get(`${namespaceOf(svc)}/${svc.metadata?.name ?? ''}`)
    if (!n) return svc
    const spec = svc.spec ?? {}
    if (!n.headless && n.clusterIPs.length > 0) { spec.clusterIP = n.clusterIPs[0]!; spec.clusterIPs = [...n.clusterIPs] }
    if (dualStack && n.type !== 'ExternalName' && n.ipFamilies.length > 0) {
      // as the API server writes them: an agent then needs no IPv6 service CIDR to read the Service back
      spec.ipFamilies = n.ipFamilies.map(f => (f === 6 ? 'IPv6' : 'IPv4'))
      spec.ipFamilyPolicy ??= n.ipFamilies.length > 1 ? 'PreferDualStack' : 'SingleStack'
    }
    spec.ports = (spec.ports ?? []).map((p, i) => {
      const np = n.ports[i]?.nodePort ?? 0
      return np !== 0 ? { ...p, nodePort: np } : p
    })
    svc.spec = spec
    return svc
  })
  const namespaces = new Set(['default'])
  for (const o of explicit) if (o.kind !== 'Namespace') namespaces.add(namespaceOf(o))
  const declared = new Set(explicit.filter((o): o is Namespace => o.kind === 'Namespace').map(o => o.metadata?.name ?? ''))
  const nsObjects: Namespace[] = [...namespaces].filter(n => !declared.has(n)).sort().map(name => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } }))
  const order = (o: KubeObject): number => ['Namespace', 'Node', 'Pod', 'Service', 'EndpointSlice'].indexOf(o.kind)
  const manifests: KubeObject[] = [...nsObjects, ...nodeObjects, ...explicit, ...computed.map(c => c.object as EndpointSlice)]
    .map((o, i) => ({ o, i }))
    .sort((a, b) => order(a.o) - order(b.o) || a.i - b.i)
    .map(x => x.o)
  return { name: opts.name, dataplane: opts.dataplane, nodes, pods: placed.pods, dualStack, manifests, cluster: norm.cluster, warnings }
}

const serviceCIDRs = (dualStack: boolean): string[] => (dualStack ? [LAB.serviceCIDR, LAB.serviceCIDR6] : [LAB.serviceCIDR])

/** A Service that asks for an IPv6 cluster IP: IPv6 in ipFamilies or clusterIPs, or a dual-stack policy. */
export function wantsIPv6(svc: Service): boolean {
  const policy = svc.spec?.ipFamilyPolicy
  return declaredFamilies(svc).includes(6) || policy === 'PreferDualStack' || policy === 'RequireDualStack'
}

/** The families the API server gives a Service: those asked for (IPv4 by default), plus the other for a dual-stack policy. */
function wantedFamilies(svc: Service, dualStack: boolean): Family[] {
  const declared = declaredFamilies(svc)
  const wanted: Family[] = declared.length > 0 ? [...declared] : [4]
  const policy = svc.spec?.ipFamilyPolicy
  if (dualStack && wanted.length < 2 && (policy === 'PreferDualStack' || policy === 'RequireDualStack')) wanted.push(wanted[0] === 6 ? 4 : 6)
  return wanted
}

/**
 * Gives Services without a cluster IP one now, as the API server would, but never one inside a node's pod block: the
 * lab's service CIDR (10.96.0.0/12, kubeadm's default) contains the pod network 10.100.0.0/16, as in the seed's cluster.
 * Mutates the Service objects (they are the lab's copies).
 */
function preallocateClusterIPs(objects: LoadedObject[], nodes: readonly PlannedNode[], warn: (w: string) => void, dualStack: boolean): void {
  const services = objects.filter((l): l is LoadedObject<Service> => l.object.kind === 'Service')
  const podBlocks: string[] = []
  for (const n of nodes) {
    const base = n.podCIDR.split('/')[0]!.split('.').slice(0, 3).join('.')
    for (let h = 0; h < 256; h++) podBlocks.push(`${base}.${h}`)
  }
  const alloc = new ClusterIPAllocator(serviceCIDRs(dualStack), [...podBlocks, ...services.flatMap(l => explicitClusterIPs(l.object))])
  const blocked = new Set(podBlocks)
  for (const l of services) {
    const svc = l.object
    const explicit = explicitClusterIPs(svc)
    for (const ip of explicit) {
      if (blocked.has(ip)) warn(`${l.file === undefined ? '' : `${l.file}: `}${objectRef(svc)}: cluster IP ${ip} is inside a node's pod block`)
    }
    if (serviceType(svc) === 'ExternalName') continue
    const wanted = wantedFamilies(svc, dualStack)
    if (isHeadlessSpec(svc)) {
      // the API server records a headless Service's families too: the EndpointSlice controller keeps to them
      if (dualStack) svc.spec = { ...(svc.spec ?? {}), ipFamilies: wanted.map(f => (f === 6 ? 'IPv6' : 'IPv4')) }
      continue
    }
    if (!dualStack && (explicit.length > 0 || wanted.some(f => f !== 4))) continue
    const ips = [...explicit]
    for (const fam of wanted) {
      if (ips.some(ip => ipFamily(ip) === fam)) continue
      const ip = alloc.allocate(namespaceOf(svc), svc.metadata?.name ?? '', fam)
      if (ip !== undefined) ips.push(ip)
    }
    if (ips.length > explicit.length) svc.spec = { ...(svc.spec ?? {}), clusterIP: ips[0]!, clusterIPs: ips }
  }
}

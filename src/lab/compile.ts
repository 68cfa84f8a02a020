// From manifest paths to everything a lab needs, without touching the system: objects read and validated, Deployments
// expanded, pods placed and addressed, EndpointSlices computed, cluster IPs and node ports made explicit.
import type { Cluster, Problem, Service as NormalizedService } from '../model/cluster'
import { ClusterIPAllocator } from '../k8s/allocate'
import { declaredFamilies, explicitClusterIPs, isHeadlessSpec, serviceType } from '../k8s/defaults'
import { cidrContains, parseCIDR, parseIP } from '../k8s/ip'
import { ipFamily } from '../wire/addr'
import type { Family } from '../model/cluster'
import { expandDeployment, expandDeployments } from '../k8s/deployment'
import { runEndpointSliceController } from '../k8s/endpointslice-controller'
import { loadPaths } from '../k8s/load'
import { normalize } from '../k8s/normalize'
import {
  namespaceOf,
  objectRef,
  type Deployment,
  type EndpointSlice,
  type KubeObject,
  type LoadedObject,
  type Namespace,
  type Node,
  type Pod,
  type Service,
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
  /** the objects as the user gave them (Nodes left out): what a later `lab apply` compares against */
  readonly applied: readonly KubeObject[]
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
  /** the API server's --service-node-port-range: what explicit NodePorts are checked against and where free ones come from */
  readonly nodePortRange?: readonly [number, number]
}

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T
const annotationField = (key: string): string => `metadata.annotations[${key}]`

/** Reads, checks and plans a lab; throws LabManifestError naming file, object and field for anything invalid. */
export function compileLab(opts: CompileOptions): LabPlan {
  if (opts.files.length === 0) throw new LabError('give at least one manifest file or directory (-f)')
  const loaded = loadPaths(opts.files)
  const warnings: string[] = []
  const warn = (w: string): void => {
    warnings.push(w)
    opts.onWarning?.(w)
  }
  for (const w of loaded.warnings) warn(w)
  if (loaded.problems.length > 0) throw new LabManifestError(loaded.problems)
  const range = opts.nodePortRange !== undefined ? { nodePortRange: opts.nodePortRange } : {}
  const checked = validateAll(loaded.objects, range)
  checked.warnings.forEach(warn)
  const problems: Problem[] = [...checked.problems]

  // The lab makes its own nodes (--nodes); a Node object in the input lends its labels to the lab node of its name
  // (a zone for topology-aware routing, say), nothing else: it would describe a machine that does not exist.
  const input: LoadedObject[] = []
  const nodeInputs: LoadedObject<Node>[] = []
  for (const l of checked.objects) {
    if (l.object.kind === 'Node') nodeInputs.push(l as LoadedObject<Node>)
    else input.push(l)
    const w = controllerWarning(l)
    if (w !== undefined) warn(w)
  }

  const wanted = new Map<string, WantIP>()
  for (const l of input) {
    if (l.object.kind !== 'Deployment') continue
    const w = deploymentWantedIPs(l.object, l.file)
    problems.push(...w.problems)
    for (const [k, v] of w.wanted) wanted.set(k, v)
  }

  const objects = expandDeployments(input).filter(l => l.object.kind !== 'Deployment')
  const pi = podInputsOf(objects, wanted)
  problems.push(...pi.problems)
  const podInputs = pi.inputs

  if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > LAB.maxNodes) {
    throw new LabError(`--nodes must be 1-${LAB.maxNodes}, not ${opts.nodes}`)
  }
  const dualStack = objects.some(l => l.object.kind === 'Service' && wantsIPv6(l.object))
  const nodes = withNodeLabels(planNodes(opts.name, opts.nodes, { dualStack }), nodeInputs, warn)
  if (dualStack && opts.nodes > 1) warn(`IPv6 reaches only pods on the same node: tundra carries IPv4 between nodes (VXLAN), not IPv6`)
  const placed = placePods(opts.name, nodes, podInputs)
  problems.push(...placed.problems)
  placed.warnings.forEach(warn)
  if (problems.length > 0) throw new LabManifestError(problems)

  // The objects as the API server would hold them once every pod runs.
  const byKey = new Map(placed.pods.map(p => [`${p.namespace}/${p.name}`, p]))
  const nodeObjects: Node[] = nodes.map(nodeObject)
  const nodeIPs = new Map(nodes.map(n => [n.name, n.ip]))
  const running: LoadedObject[] = objects.map(l => {
    if (l.object.kind === 'Service') return { ...l, object: clone(l.object) }
    if (l.object.kind !== 'Pod') return l
    const p = byKey.get(`${namespaceOf(l.object)}/${l.object.metadata?.name ?? ''}`)!
    return { ...l, object: runningPod(l.object, p, nodeIPs.get(p.node) ?? '') }
  })
  preallocateClusterIPs(running, nodes, warn, dualStack)
  const computed = runEndpointSliceController(running, { nodes: nodeObjects })
  const all: LoadedObject[] = [...nodeObjects.map(object => ({ object })), ...running, ...computed]
  const norm = normalize(all, { validate: false, serviceCIDRs: serviceCIDRs(dualStack), dnsIPs: [LAB.dnsIP], ...range })
  if (norm.problems.length > 0) throw new LabManifestError(norm.problems)
  norm.warnings.forEach(warn)

  // Cluster IPs and node ports written out, so every agent (and a later reader) sees the same allocation.
  const svcByKey = new Map(norm.cluster.services.map(s => [`${s.namespace}/${s.name}`, s]))
  const explicit = running.map(l => {
    if (l.object.kind !== 'Service') return l.object
    const n = svcByKey.get(`${namespaceOf(l.object)}/${l.object.metadata?.name ?? ''}`)
    return n ? explicitService(l.object, n, dualStack) : l.object
  })
  const namespaces = new Set(['default'])
  for (const o of explicit) if (o.kind !== 'Namespace') namespaces.add(namespaceOf(o))
  const declared = new Set(explicit.filter((o): o is Namespace => o.kind === 'Namespace').map(o => o.metadata?.name ?? ''))
  const nsObjects: Namespace[] = [...namespaces]
    .filter(n => !declared.has(n))
    .sort()
    .map(name => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } }))
  const order = (o: KubeObject): number => ['Namespace', 'Node', 'Pod', 'Service', 'EndpointSlice'].indexOf(o.kind)
  const manifests: KubeObject[] = [...nsObjects, ...nodeObjects, ...explicit, ...computed.map(c => c.object as EndpointSlice)]
    .map((o, i) => ({ o, i }))
    .sort((a, b) => order(a.o) - order(b.o) || a.i - b.i)
    .map(x => x.o)
  const applied = input.map(l => l.object)
  return { name: opts.name, dataplane: opts.dataplane, nodes, pods: placed.pods, dualStack, manifests, applied, cluster: norm.cluster, warnings }
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
  const alloc = labClusterIPAllocator(
    nodes,
    dualStack,
    services.flatMap(l => explicitClusterIPs(l.object)),
  )
  for (const l of services) allocateServiceIPs(l.object, alloc, { nodes, dualStack, warn, ...(l.file === undefined ? {} : { file: l.file }) })
}

/** Every address of the nodes' pod blocks: never handed out as a cluster IP. */
function podBlockAddresses(nodes: readonly Pick<PlannedNode, 'podCIDR'>[]): string[] {
  const out: string[] = []
  for (const n of nodes) {
    const base = n.podCIDR.split('/')[0]!.split('.').slice(0, 3).join('.')
    for (let h = 0; h < 256; h++) out.push(`${base}.${h}`)
  }
  return out
}

/** The lab's cluster IP allocator: the service CIDR(s) less the pod blocks and the addresses already in use. */
export function labClusterIPAllocator(nodes: readonly Pick<PlannedNode, 'podCIDR'>[], dualStack: boolean, used: Iterable<string>): ClusterIPAllocator {
  return new ClusterIPAllocator(serviceCIDRs(dualStack), [...podBlockAddresses(nodes), ...used])
}

/**
 * Gives one Service (the lab's copy: mutated) its cluster IPs, as the API server would; warns when an explicit one is
 * inside a node's pod block.
 */
export function allocateServiceIPs(
  svc: Service,
  alloc: ClusterIPAllocator,
  o: { nodes: readonly Pick<PlannedNode, 'podCIDR'>[]; dualStack: boolean; warn: (w: string) => void; file?: string },
): void {
  const { dualStack, warn, file } = o
  const explicit = explicitClusterIPs(svc)
  for (const ip of explicit) {
    if (inPodBlock(ip, o.nodes)) warn(`${file === undefined ? '' : `${file}: `}${objectRef(svc)}: cluster IP ${ip} is inside a node's pod block`)
  }
  if (serviceType(svc) === 'ExternalName') return
  const wanted = wantedFamilies(svc, dualStack)
  if (isHeadlessSpec(svc)) {
    // the API server records a headless Service's families too: the EndpointSlice controller keeps to them
    if (dualStack) svc.spec = { ...(svc.spec ?? {}), ipFamilies: wanted.map(f => (f === 6 ? 'IPv6' : 'IPv4')) }
    return
  }
  if (!dualStack && (explicit.length > 0 || wanted.some(f => f !== 4))) return
  const ips = [...explicit]
  for (const fam of wanted) {
    if (ips.some(ip => ipFamily(ip) === fam)) continue
    const ip = alloc.allocate(namespaceOf(svc), svc.metadata?.name ?? '', fam)
    if (ip !== undefined) ips.push(ip)
  }
  if (ips.length > explicit.length) svc.spec = { ...(svc.spec ?? {}), clusterIP: ips[0]!, clusterIPs: ips }
}

/** Inside some node's pod block. */
function inPodBlock(ip: string, nodes: readonly Pick<PlannedNode, 'podCIDR'>[]): boolean {
  const p = parseIP(ip)
  return p !== undefined && nodes.some(n => cidrContains(parseCIDR(n.podCIDR)!, p))
}

/** A wanted pod address, with where it was asked for. */
export type WantIP = NonNullable<PodInput['wantIP']>

/** The addresses a Deployment's `tundra.dev/pod-ips` annotation asks for, keyed `<namespace>/<pod>` (replica i gets entry i). */
export function deploymentWantedIPs(d: Deployment, file?: string): { wanted: Map<string, WantIP>; problems: Problem[] } {
  const wanted = new Map<string, WantIP>()
  const problems: Problem[] = []
  const list = d.metadata?.annotations?.[LAB.podIPsAnnotation]
  if (list === undefined) return { wanted, problems }
  const ips = list
    .split(',')
    .map(s => s.trim())
    .filter(Boolean)
  const pods = expandDeployment(d).pods
  const field = annotationField(LAB.podIPsAnnotation)
  const at = file === undefined ? {} : { file }
  if (ips.length > pods.length) problems.push({ ...at, object: objectRef(d), field, reason: `lists ${ips.length} addresses for ${pods.length} replicas` })
  pods.forEach((p, i) => {
    const ip = ips[i]
    if (ip !== undefined) wanted.set(`${namespaceOf(p)}/${p.metadata?.name ?? ''}`, { ip, field, object: objectRef(d), ...at })
  })
  return { wanted, problems }
}

/** Pods to place, each with the address its annotation (or its Deployment's) asks for; host-network pods are problems. */
export function podInputsOf(objects: readonly LoadedObject[], wanted: ReadonlyMap<string, WantIP>): { inputs: PodInput[]; problems: Problem[] } {
  const inputs: PodInput[] = []
  const problems: Problem[] = []
  for (const l of objects) {
    if (l.object.kind !== 'Pod') continue
    const pod = l.object
    const at = l.file === undefined ? {} : { file: l.file }
    if (pod.spec?.hostNetwork === true)
      problems.push({ ...at, object: objectRef(pod), field: 'spec.hostNetwork', reason: 'host-network pods are not supported by the lab' })
    const own = pod.metadata?.annotations?.[LAB.podIPAnnotation]
    const key = `${namespaceOf(pod)}/${pod.metadata?.name ?? ''}`
    const want = own !== undefined ? { ip: own.trim(), field: annotationField(LAB.podIPAnnotation), object: objectRef(pod), ...at } : wanted.get(key)
    inputs.push({ pod, ...at, ...(want === undefined ? {} : { wantIP: want }) })
  }
  return { inputs, problems }
}

/** Service annotations that ask the EndpointSlice controller for capacity-based zone hints (topology-mode Auto). */
const TOPOLOGY_MODE_ANNOTATIONS = ['service.kubernetes.io/topology-mode', 'service.kubernetes.io/topology-aware-hints']

/**
 * What the lab's EndpointSlice controller does not do for an object, as a warning (undefined: nothing): it writes
 * hints for spec.trafficDistribution, but not topology-mode Auto's hints by zone capacity, which need nodes with
 * allocatable CPU (the controller gives none without them either).
 */
export function controllerWarning(l: LoadedObject): string | undefined {
  if (l.object.kind !== 'Service') return undefined
  const ann = l.object.metadata?.annotations ?? {}
  const key = TOPOLOGY_MODE_ANNOTATIONS.find(k => ann[k] !== undefined && ann[k].toLowerCase() === 'auto')
  if (key === undefined) return undefined
  return `${l.file === undefined ? '' : `${l.file}: `}${objectRef(l.object)}: metadata.annotations[${key}]: the lab's EndpointSlice controller writes no zone hints for Auto (its nodes have no allocatable CPU); use spec.trafficDistribution: PreferClose`
}

/**
 * The lab nodes with the labels of the input's Node objects of their names; a Node naming no lab node, and every
 * field of a Node but its labels, is ignored with a warning.
 */
function withNodeLabels(nodes: PlannedNode[], inputs: readonly LoadedObject<Node>[], warn: (w: string) => void): PlannedNode[] {
  const labels = new Map<string, Record<string, string>>()
  for (const l of inputs) {
    const at = `${l.file === undefined ? '' : `${l.file}: `}${objectRef(l.object)}`
    const name = l.object.metadata?.name ?? ''
    if (!nodes.some(n => n.name === name)) {
      warn(`${at}: ignored, the lab makes its own nodes (--nodes: ${nodes.map(n => n.name).join(', ')})`)
      continue
    }
    const other = (['spec', 'status'] as const).filter(k => l.object[k] !== undefined)
    if (other.length > 0) warn(`${at}: ${other.join(' and ')} ignored, the lab makes its own nodes (only metadata.labels are taken)`)
    labels.set(name, { ...(labels.get(name) ?? {}), ...(l.object.metadata?.labels ?? {}) })
  }
  return nodes.map(n => (labels.has(n.name) ? { ...n, labels: labels.get(n.name)! } : n))
}

/** The Node object the agents read for a lab node: its own labels, then those the manifests gave it. */
export function nodeObject(n: PlannedNode): Node {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: n.name, labels: { ...(n.labels ?? {}), 'kubernetes.io/hostname': n.name, 'kubernetes.io/os': 'linux' } },
    spec: { podCIDR: n.podCIDR, podCIDRs: n.podCIDR6 === undefined ? [n.podCIDR] : [n.podCIDR, n.podCIDR6] },
    status: {
      addresses: [
        { type: 'InternalIP', address: n.ip },
        { type: 'Hostname', address: n.name },
      ],
    },
  }
}

/** A Pod as the API server holds it once it runs on its node: node name, addresses, Ready (unless `ready` is false). */
export function runningPod(pod: Pod, p: Pick<PlannedPod, 'node' | 'ip' | 'ip6'>, hostIP: string, ready = true): Pod {
  const out = clone(pod)
  out.spec = { ...(out.spec ?? {}), nodeName: p.node }
  const status = ready ? 'True' : 'False'
  out.status = {
    phase: 'Running',
    podIP: p.ip,
    podIPs: p.ip6 === undefined ? [{ ip: p.ip }] : [{ ip: p.ip }, { ip: p.ip6 }],
    hostIP,
    conditions: [
      { type: 'Ready', status },
      { type: 'ContainersReady', status },
    ],
  }
  return out
}

/** The Service with what the API server filled in written out (cluster IPs, families, node ports), so every agent agrees. */
function explicitService(svc: Service, n: NormalizedService, dualStack: boolean): Service {
  const spec = svc.spec ?? {}
  if (!n.headless && n.clusterIPs.length > 0) {
    spec.clusterIP = n.clusterIPs[0]!
    spec.clusterIPs = [...n.clusterIPs]
  }
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
}

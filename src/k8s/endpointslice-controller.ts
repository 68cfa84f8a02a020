// The EndpointSlice controller's output for Services with a selector, computed from Pods (pkg/controller/endpointslice).
// Deterministic where the real controller is random: slice names, endpoint order (by IP), slice order.
import type { Family } from '../model/cluster'
import {
  defaultServicePort,
  isHeadlessSpec,
  isPodReady,
  isPodTerminal,
  podIPs,
  selectorMatches,
  declaredFamilies,
  serviceType,
  type DefaultedServicePort,
} from './defaults'
import { generateName, nameSuffix } from './deployment'
import { compareIP } from './ip'
import { ipFamily } from '../wire/addr'
import {
  LABEL_HEADLESS,
  LABEL_MANAGED_BY,
  LABEL_SERVICE_NAME,
  LABEL_TOPOLOGY_ZONE,
  MANAGED_BY_CONTROLLER,
  namespaceOf,
  type AddressType,
  type Endpoint,
  type EndpointHints,
  type EndpointPort,
  type EndpointSlice,
  type LoadedObject,
  type Node,
  type Pod,
  type Service,
} from './types'

export interface ControllerOptions {
  /** --max-endpoints-per-slice; default 100 */
  readonly maxEndpointsPerSlice?: number
  /** Nodes, for each endpoint's zone (label topology.kubernetes.io/zone) */
  readonly nodes?: readonly Node[]
}

/** podutil.FindPort: a numeric targetPort as is; a named one is the container port of that name and protocol. */
export function findPort(pod: Pod, sp: DefaultedServicePort): number | undefined {
  if (typeof sp.targetPort === 'number') return sp.targetPort
  for (const ctr of [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])]) {
    for (const p of ctr.ports ?? []) {
      if (p.name === sp.targetPort && (p.protocol ?? 'TCP') === sp.protocol && typeof p.containerPort === 'number') return p.containerPort
    }
  }
  return undefined
}

function addressTypeOf(f: Family): AddressType {
  return f === 6 ? 'IPv6' : 'IPv4'
}

function portsKey(ports: readonly EndpointPort[]): string {
  return ports.map(p => `${p.name ?? ''}/${p.protocol ?? ''}/${p.port ?? ''}`).join(',')
}

/** Reserved on slices: the controller sets these itself and does not copy them from the Service. */
const RESERVED_LABELS = new Set([LABEL_SERVICE_NAME, LABEL_MANAGED_BY])

function sliceLabels(svc: Service): Record<string, string> {
  const labels: Record<string, string> = {}
  for (const [k, v] of Object.entries(svc.metadata?.labels ?? {})) if (!RESERVED_LABELS.has(k)) labels[k] = v
  labels[LABEL_SERVICE_NAME] = svc.metadata?.name ?? ''
  labels[LABEL_MANAGED_BY] = MANAGED_BY_CONTROLLER
  if (isHeadlessSpec(svc)) labels[LABEL_HEADLESS] = ''
  return labels
}

function nodeZones(nodes: readonly Node[] | undefined): Map<string, string> {
  const out = new Map<string, string>()
  for (const n of nodes ?? []) {
    const zone = n.metadata?.labels?.[LABEL_TOPOLOGY_ZONE]
    if (n.metadata?.name !== undefined && zone !== undefined && zone !== '') out.set(n.metadata.name, zone)
  }
  return out
}

/** spec.trafficDistribution values for which the controller hints endpoints (trafficdist's preferCloseHeuristic) */
const CLOSE_DISTRIBUTIONS = new Set(['PreferClose', 'PreferSameZone', 'PreferSameNode'])

/**
 * The hints a ready endpoint gets: its own zone for PreferClose / PreferSameZone, its own node as well for
 * PreferSameNode; none otherwise (kube-proxy then chooses among all endpoints).
 */
function trafficHints(distribution: string | undefined, ep: Endpoint): EndpointHints | undefined {
  if (distribution === undefined || !CLOSE_DISTRIBUTIONS.has(distribution) || ep.conditions?.ready !== true) return undefined
  const hints: EndpointHints = {}
  if (ep.zone !== undefined) hints.forZones = [{ name: ep.zone }]
  if (distribution === 'PreferSameNode' && ep.nodeName !== undefined) hints.forNodes = [{ name: ep.nodeName }]
  return hints.forZones !== undefined || hints.forNodes !== undefined ? hints : undefined
}

interface Candidate {
  readonly ip: string
  readonly endpoint: Endpoint
  readonly ports: EndpointPort[]
}

/**
 * The EndpointSlices the controller keeps for one Service. Services without a selector (and ExternalName services)
 * get none; a Service whose selector matches no usable Pod gets one placeholder slice with `endpoints: null`.
 */
export function endpointSlicesForService(svc: Service, pods: readonly Pod[], opts: ControllerOptions = {}): EndpointSlice[] {
  const selector = svc.spec?.selector
  if (selector === undefined || selector === null || Object.keys(selector).length === 0) return []
  if (serviceType(svc) === 'ExternalName') return []
  const name = svc.metadata?.name ?? ''
  const namespace = namespaceOf(svc)
  const publishNotReady = svc.spec?.publishNotReadyAddresses === true
  const servicePorts = (svc.spec?.ports ?? []).map(defaultServicePort)
  const zones = nodeZones(opts.nodes)
  const declared = declaredFamilies(svc)
  const max = Math.max(1, opts.maxEndpointsPerSlice ?? 100)

  // Group endpoints by (address type, resolved port set), as the reconciler does.
  const groups = new Map<string, { addressType: AddressType; ports: EndpointPort[]; items: Candidate[] }>()
  for (const pod of pods) {
    if (namespaceOf(pod) !== namespace || !selectorMatches(selector, pod.metadata?.labels)) continue
    // endpointutil.ShouldPodBeInEndpoints(pod, includeTerminating=true)
    if (isPodTerminal(pod)) continue
    const ips = podIPs(pod)
    if (ips.length === 0) continue
    const ports: EndpointPort[] = []
    for (const sp of servicePorts) {
      const port = findPort(pod, sp)
      if (port === undefined) continue // a pod without the named port is left out of this port's slices
      const ep: EndpointPort = { name: sp.name, protocol: sp.protocol, port }
      if (sp.appProtocol !== undefined) ep.appProtocol = sp.appProtocol
      ports.push(ep)
    }
    const serving = isPodReady(pod)
    const terminating = pod.metadata?.deletionTimestamp !== undefined && pod.metadata.deletionTimestamp !== null
    // Never "ready" while terminating, unless the Service publishes not-ready addresses.
    const ready = publishNotReady || (serving && !terminating)
    for (const ip of ips) {
      const fam = ipFamily(ip)
      if (fam === undefined) continue
      if (declared.length > 0 && !declared.includes(fam)) continue
      const endpoint: Endpoint = {
        addresses: [ip],
        conditions: { ready, serving, terminating },
      }
      const hostname = pod.spec?.hostname
      if (hostname !== undefined && hostname !== '' && pod.spec?.subdomain === name) endpoint.hostname = hostname
      endpoint.targetRef = { kind: 'Pod', namespace, name: pod.metadata?.name ?? '', ...(pod.metadata?.uid === undefined ? {} : { uid: pod.metadata.uid }) }
      const nodeName = pod.spec?.nodeName
      if (nodeName !== undefined && nodeName !== '') {
        endpoint.nodeName = nodeName
        const zone = zones.get(nodeName)
        if (zone !== undefined) endpoint.zone = zone
      }
      const hints = trafficHints(svc.spec?.trafficDistribution, endpoint)
      if (hints !== undefined) endpoint.hints = hints
      const addressType = addressTypeOf(fam)
      const key = `${addressType}|${portsKey(ports)}`
      let g = groups.get(key)
      if (!g) {
        g = { addressType, ports, items: [] }
        groups.set(key, g)
      }
      g.items.push({ ip, endpoint, ports })
    }
  }

  const base = `${name}-`
  const makeSlice = (addressType: AddressType, ports: EndpointPort[] | null, endpoints: Endpoint[] | null, seed: string): EndpointSlice => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: generateName(base, nameSuffix(`${namespace}/${seed}`)),
      generateName: base,
      namespace,
      labels: sliceLabels(svc),
      ownerReferences: [{ apiVersion: 'v1', kind: 'Service', name, controller: true, blockOwnerDeletion: true }],
    },
    addressType,
    endpoints,
    ports,
  })

  if (groups.size === 0) {
    const fam = declared[0] ?? 4
    return [makeSlice(addressTypeOf(fam), null, null, `${name}/placeholder`)]
  }

  const slices: EndpointSlice[] = []
  const keys = [...groups.keys()].sort()
  for (const key of keys) {
    const g = groups.get(key)!
    g.items.sort((a, b) => compareIP(a.ip, b.ip))
    for (let i = 0; i * max < g.items.length; i++) {
      const chunk = g.items.slice(i * max, (i + 1) * max).map(c => c.endpoint)
      slices.push(makeSlice(g.addressType, g.ports, chunk, `${name}/${key}/${i}`))
    }
  }
  return slices
}

/**
 * Runs the controller over a set of objects: EndpointSlices for every Service with a selector, from the Pods present.
 * Returned as LoadedObjects without a file (they are derived, not read).
 */
export function runEndpointSliceController(objects: readonly LoadedObject[], opts: ControllerOptions = {}): LoadedObject<EndpointSlice>[] {
  const pods = objects.filter((o): o is LoadedObject<Pod> => o.object.kind === 'Pod').map(o => o.object)
  const nodes = opts.nodes ?? objects.filter((o): o is LoadedObject<Node> => o.object.kind === 'Node').map(o => o.object)
  const out: LoadedObject<EndpointSlice>[] = []
  for (const o of objects) {
    if (o.object.kind !== 'Service') continue
    for (const slice of endpointSlicesForService(o.object, pods, { ...opts, nodes })) out.push({ object: slice })
  }
  return out
}

// Turns Kubernetes objects into the normalized Cluster (src/model/cluster.ts): API defaults applied, EndpointSlices
// merged into their Service, addresses canonical, everything sorted so the same input always gives the same snapshot.
import type { Cluster, Endpoint, EndpointPort, Family, LoadBalancerIngress, Node, Pod, Problem, Protocol, Service, ServicePort } from '../model/cluster'
import { ClusterIPAllocator, DEFAULT_SERVICE_CIDR, NodePortAllocator } from './allocate'
import {
  declaredFamilies,
  defaultServicePort,
  explicitClusterIPs,
  externalTrafficPolicy,
  internalTrafficPolicy,
  isHeadlessSpec,
  isPodReady,
  podIPs,
  serviceType,
} from './defaults'
import { expandDeployments } from './deployment'
import { runEndpointSliceController } from './endpointslice-controller'
import { canonicalCIDR, compareIP } from './ip'
import { canonicalIp, ipFamily } from '../wire/addr'
import {
  LABEL_HEADLESS,
  LABEL_TOPOLOGY_ZONE,
  LABEL_SERVICE_NAME,
  LABEL_SERVICE_PROXY_NAME,
  namespaceOf,
  objectRef,
  type EndpointSlice as K8sEndpointSlice,
  type LoadedObject,
  type Node as K8sNode,
  type Pod as K8sPod,
  type Service as K8sService,
} from './types'
import { DEFAULT_NODE_PORT_RANGE, validateAll } from './validate'

export interface NormalizeOptions {
  /** validate every object first and drop the invalid ones (default true) */
  readonly validate?: boolean
  /** give Services without a cluster IP / node port one, as the API server would (default true) */
  readonly allocate?: boolean
  /**
   * service CIDRs, one per family (default ['10.96.0.0/12']); when given, an explicit cluster IP outside them is a
   * problem (the API server would refuse it; a pod would reach it through tundra's NAT only)
   */
  readonly serviceCIDRs?: readonly string[]
  /**
   * the cluster DNS addresses tundra answers on: a Service may not claim one (its NAT rules would never be reached, and
   * it would shadow the cluster DNS). Not given by `tundra run`, where kube-system/kube-dns holds that address.
   */
  readonly dnsIPs?: readonly string[]
  /** node port range (default 30000-32767) */
  readonly nodePortRange?: readonly [number, number]
  /** add the Pods of each Deployment before anything else (default false) */
  readonly expandDeployments?: boolean
  /** compute EndpointSlices for Services with a selector from the Pods, like the controller (default false) */
  readonly endpointSliceController?: boolean
}

export interface NormalizeResult {
  readonly cluster: Cluster
  /** objects that were skipped, with why */
  readonly problems: Problem[]
  /** things that were accepted but deserve a look (orphan slices, unknown namespaces, ...) */
  readonly warnings: string[]
  /** Services kube-proxy does not handle (label service.kubernetes.io/service-proxy-name): normalized, kept out of `cluster` */
  readonly ignored: readonly Service[]
}

const BUILTIN_NAMESPACES = new Set(['default', 'kube-system', 'kube-public', 'kube-node-lease'])

function byString(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v)
    for (const x of Object.values(v as object)) deepFreeze(x)
  }
  return v
}

interface MutableEndpoint {
  ip: string
  family: Family
  ready: boolean
  serving: boolean
  terminating: boolean
  nodeName?: string
  hostname?: string
  zone?: string
  zoneHints?: string[]
  nodeHints?: string[]
  podName?: string
  ports: EndpointPort[]
}

function endpointPortsOf(slice: K8sEndpointSlice): EndpointPort[] {
  const out: EndpointPort[] = []
  for (const p of slice.ports ?? []) {
    // kube-proxy skips ports with no number (the API's "all ports" is not implemented anywhere)
    if (p.port === undefined || p.port === null || p.port === 0) continue
    out.push({ name: p.name ?? '', protocol: (p.protocol ?? 'TCP') as Protocol, port: p.port })
  }
  return out
}

/**
 * Merges the slices of one Service: one endpoint per address (kube-proxy reads only `addresses[0]`), ports united,
 * a non-terminating copy preferred over a terminating one (kube-proxy does the same when a pod IP is reused).
 */
function mergeSlices(slices: readonly K8sEndpointSlice[]): Endpoint[] {
  const byIP = new Map<string, MutableEndpoint>()
  const sorted = [...slices].sort((a, b) => byString(a.metadata?.name ?? '', b.metadata?.name ?? ''))
  for (const slice of sorted) {
    if (slice.addressType !== 'IPv4' && slice.addressType !== 'IPv6') continue
    const ports = endpointPortsOf(slice)
    for (const ep of slice.endpoints ?? []) {
      const first = ep.addresses?.[0]
      if (first === undefined) continue
      const ip = canonicalIp(first)
      const family = ipFamily(first)
      if (ip === undefined || family === undefined) continue
      const cond = ep.conditions ?? {}
      // API semantics: ready nil means true, serving nil defers to ready, terminating nil means false.
      // (kube-proxy's cache reads a nil serving as true; that differs only for ready=false + terminating=true.)
      const ready = cond.ready ?? true
      const next: MutableEndpoint = {
        ip,
        family,
        ready,
        serving: cond.serving ?? ready,
        terminating: cond.terminating ?? false,
        ports: [...ports],
      }
      if (ep.nodeName !== undefined && ep.nodeName !== '') next.nodeName = ep.nodeName
      if (ep.hostname !== undefined && ep.hostname !== '') next.hostname = ep.hostname
      if (ep.zone !== undefined && ep.zone !== '') next.zone = ep.zone
      const zoneHints = hintNames(ep.hints?.forZones)
      if (zoneHints.length > 0) next.zoneHints = zoneHints
      const nodeHints = hintNames(ep.hints?.forNodes)
      if (nodeHints.length > 0) next.nodeHints = nodeHints
      if (ep.targetRef?.kind === 'Pod' && ep.targetRef.name !== undefined && ep.targetRef.name !== '') next.podName = ep.targetRef.name
      const prev = byIP.get(ip)
      if (!prev) {
        byIP.set(ip, next)
        continue
      }
      const winner = prev.terminating && !next.terminating ? next : prev
      const loser = winner === prev ? next : prev
      for (const p of loser.ports) {
        if (!winner.ports.some(q => q.name === p.name && q.protocol === p.protocol)) winner.ports.push(p)
      }
      byIP.set(ip, winner)
    }
  }
  return [...byIP.values()]
    .sort((a, b) => compareIP(a.ip, b.ip))
    .map(e => ({ ...e, ports: [...e.ports].sort((a, b) => byString(a.name, b.name) || byString(a.protocol, b.protocol)) }))
}

/** The names of hints.forZones / forNodes (entries without a name are no hint). */
function hintNames(hints: readonly { name?: string }[] | undefined | null): string[] {
  const out: string[] = []
  for (const h of Array.isArray(hints) ? hints : []) if (typeof h?.name === 'string' && h.name !== '' && !out.includes(h.name)) out.push(h.name)
  return out
}

function problem(l: LoadedObject, field: string, reason: string): Problem {
  const p = { object: objectRef(l.object), field, reason }
  return l.file === undefined ? p : { file: l.file, ...p }
}

/** The Service that holds the cluster DNS address in a cluster. */
const CLUSTER_DNS_SERVICE = 'kube-system/kube-dns'

export function normalize(input: readonly LoadedObject[], opts: NormalizeOptions = {}): NormalizeResult {
  const problems: Problem[] = []
  const warnings: string[] = []
  const nodePortRange = opts.nodePortRange ?? DEFAULT_NODE_PORT_RANGE

  let objects: LoadedObject[] = [...input]
  if (opts.validate !== false) {
    const v = validateAll(objects, { nodePortRange })
    objects = v.objects
    problems.push(...v.problems)
    warnings.push(...v.warnings)
  }
  if (opts.expandDeployments === true) objects = expandDeployments(objects)
  if (opts.endpointSliceController === true) objects = [...objects, ...runEndpointSliceController(objects)]

  const namespaces = new Set(BUILTIN_NAMESPACES)
  for (const l of objects) if (l.object.kind === 'Namespace' && l.object.metadata?.name) namespaces.add(l.object.metadata.name)
  for (const l of objects) {
    if (l.object.kind === 'Namespace' || l.object.kind === 'Node') continue
    const ns = namespaceOf(l.object)
    if (!namespaces.has(ns)) warnings.push(`${l.file === undefined ? '' : `${l.file}: `}${objectRef(l.object)}: namespace ${ns} is not defined in the input`)
  }

  const svcObjs = objects
    .filter((l): l is LoadedObject<K8sService> => l.object.kind === 'Service')
    .sort((a, b) => byString(`${namespaceOf(a.object)}/${a.object.metadata?.name ?? ''}`, `${namespaceOf(b.object)}/${b.object.metadata?.name ?? ''}`))

  // EndpointSlices, grouped by the Service they name.
  const slicesBySvc = new Map<string, K8sEndpointSlice[]>()
  const svcKeys = new Set(svcObjs.map(l => `${namespaceOf(l.object)}/${l.object.metadata?.name ?? ''}`))
  for (const l of objects) {
    if (l.object.kind !== 'EndpointSlice') continue
    const slice = l.object
    const where = `${l.file === undefined ? '' : `${l.file}: `}${objectRef(slice)}`
    const svcName = slice.metadata?.labels?.[LABEL_SERVICE_NAME]
    if (svcName === undefined || svcName === '') {
      warnings.push(`${where}: ignored, it has no ${LABEL_SERVICE_NAME} label`)
      continue
    }
    if (slice.addressType === 'FQDN') {
      warnings.push(`${where}: ignored, kube-proxy does not use FQDN EndpointSlices`)
      continue
    }
    const key = `${namespaceOf(slice)}/${svcName}`
    if (!svcKeys.has(key)) {
      warnings.push(`${where}: ignored, Service ${key} is not defined`)
      continue
    }
    const list = slicesBySvc.get(key) ?? []
    list.push(slice)
    slicesBySvc.set(key, list)
  }

  // Allocation: every explicit address and port is reserved before anything is handed out.
  const allocate = opts.allocate !== false
  let ipAlloc: ClusterIPAllocator | undefined
  try {
    ipAlloc = new ClusterIPAllocator(opts.serviceCIDRs ?? [DEFAULT_SERVICE_CIDR])
  } catch (err) {
    warnings.push(`cluster IPs are not allocated: ${(err as Error).message}`)
  }
  const portAlloc = new NodePortAllocator(nodePortRange)
  const dnsIPs = new Set((opts.dnsIPs ?? []).map(ip => canonicalIp(ip) ?? ip))
  for (const l of svcObjs) {
    for (const ip of explicitClusterIPs(l.object)) ipAlloc?.reserve(ip)
    for (const p of l.object.spec?.ports ?? []) if (typeof p.nodePort === 'number' && p.nodePort !== 0) portAlloc.reserve(p.nodePort)
    const hc = l.object.spec?.healthCheckNodePort
    if (typeof hc === 'number' && hc !== 0) portAlloc.reserve(hc)
  }

  const services: Service[] = []
  const ignored: Service[] = []
  for (const l of svcObjs) {
    const svc = l.object
    const spec = svc.spec ?? {}
    const namespace = namespaceOf(svc)
    const name = svc.metadata?.name ?? ''
    const key = `${namespace}/${name}`
    const type = serviceType(svc)
    const slices = slicesBySvc.get(key) ?? []
    const headlessByLabel = slices.some(s => s.metadata?.labels?.[LABEL_HEADLESS] !== undefined)
    const headless = type !== 'ExternalName' && (isHeadlessSpec(svc) || headlessByLabel)
    if (headlessByLabel && !isHeadlessSpec(svc)) {
      warnings.push(`${l.file === undefined ? '' : `${l.file}: `}${objectRef(svc)}: treated as headless because its EndpointSlices carry ${LABEL_HEADLESS}`)
    }

    // cluster IPs and families
    let clusterIPs: string[] = []
    let ipFamilies: Family[] = []
    const skip = (field: string, reason: string): void => {
      problems.push(problem(l, field, reason))
    }
    let failed = false
    if (type === 'ExternalName') {
      // no cluster IP, no families
    } else if (headless) {
      ipFamilies = declaredFamilies(svc)
      if (ipFamilies.length === 0) ipFamilies = [4]
    } else {
      clusterIPs = explicitClusterIPs(svc).map(ip => canonicalIp(ip) as string)
      clusterIPs.forEach((ip, i) => {
        const field = (spec.clusterIPs?.length ?? 0) > 0 ? `spec.clusterIPs[${i}]` : 'spec.clusterIP'
        const why = opts.serviceCIDRs !== undefined ? ipAlloc?.outside(ip) : undefined
        if (why !== undefined) {
          skip(field, why)
          failed = true
        } else if (dnsIPs.has(ip) && key !== CLUSTER_DNS_SERVICE) {
          // kube-system/kube-dns is the cluster DNS Service itself (its address is the one tundra answers on)
          skip(field, `${ip} is the cluster DNS address, answered by tundra itself (only ${CLUSTER_DNS_SERVICE} may hold it)`)
          failed = true
        }
      })
      const declared = declaredFamilies(svc)
      let wanted: Family[] = declared.length > 0 ? declared : [4]
      const policy = spec.ipFamilyPolicy
      if (declared.length < 2 && (policy === 'RequireDualStack' || policy === 'PreferDualStack')) {
        const other: Family = (wanted[0] ?? 4) === 4 ? 6 : 4
        if (ipAlloc?.hasFamily(other)) wanted = [...wanted, other]
        else if (policy === 'RequireDualStack' && allocate) {
          skip('spec.ipFamilyPolicy', `RequireDualStack needs an IPv${other} service CIDR, and none is configured`)
          failed = true
        }
      }
      for (const fam of wanted) {
        if (clusterIPs.some(ip => ipFamily(ip) === fam)) continue
        if (!allocate) continue
        const ip = ipAlloc?.allocate(namespace, name, fam)
        if (ip === undefined) {
          skip('spec.clusterIP', ipAlloc?.hasFamily(fam) ? `no free IPv${fam} cluster IP left` : `cannot allocate: no IPv${fam} service CIDR is configured`)
          failed = true
          break
        }
        clusterIPs.push(ip)
      }
      ipFamilies = clusterIPs.map(ip => ipFamily(ip) as Family)
      if (clusterIPs.length === 0 && !failed) {
        warnings.push(`${l.file === undefined ? '' : `${l.file}: `}${objectRef(svc)}: has no cluster IP (allocation is off), kube-proxy will skip it`)
      }
    }
    if (failed) continue

    // ports, with node ports allocated where the API server would
    const wantsNodePorts = type === 'NodePort' || (type === 'LoadBalancer' && spec.allocateLoadBalancerNodePorts !== false)
    const ports: ServicePort[] = []
    for (const raw of spec.ports ?? []) {
      const d = defaultServicePort(raw)
      let nodePort = d.nodePort
      if (nodePort === 0 && wantsNodePorts && allocate) {
        // one port number serves both protocols of a port listed twice (TCP and UDP), as the API server does
        const twin = ports.find(p => p.port === d.port && p.nodePort !== 0 && p.protocol !== d.protocol)
        nodePort = twin?.nodePort ?? portAlloc.allocate(`${key}/${d.name}/${d.port}/${d.protocol}`) ?? 0
      }
      const sp: ServicePort = { name: d.name, protocol: d.protocol, port: d.port, targetPort: d.targetPort, nodePort }
      ports.push(d.appProtocol === undefined ? sp : { ...sp, appProtocol: d.appProtocol })
    }

    const etp = externalTrafficPolicy(svc)
    let healthCheckNodePort = spec.healthCheckNodePort ?? 0
    if (healthCheckNodePort === 0 && type === 'LoadBalancer' && etp === 'Local' && allocate) {
      healthCheckNodePort = portAlloc.allocate(`${key}/health-check`) ?? 0
    }

    const loadBalancerIngress: LoadBalancerIngress[] = []
    for (const ing of svc.status?.loadBalancer?.ingress ?? []) {
      const ip = ing.ip === undefined || ing.ip === '' ? undefined : canonicalIp(ing.ip)
      if (ip === undefined) continue // hostname-only ingress: nothing for a node to capture
      loadBalancerIngress.push({ ip, ipMode: ing.ipMode ?? 'VIP' })
    }

    const endpoints = type === 'ExternalName' ? [] : mergeSlices(slices)
    const affinity = spec.sessionAffinity === 'ClientIP'
    const out: Service = {
      namespace,
      name,
      type,
      clusterIPs,
      headless,
      ipFamilies,
      ...(type === 'ExternalName' && spec.externalName !== undefined ? { externalName: spec.externalName } : {}),
      externalIPs: (spec.externalIPs ?? []).map(ip => canonicalIp(ip) as string),
      loadBalancerIngress,
      loadBalancerSourceRanges: (spec.loadBalancerSourceRanges ?? []).map(r => canonicalCIDR(r.trim()) as string),
      affinityTimeout: affinity ? (spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? 10800) : 0,
      externalTrafficPolicy: etp,
      internalTrafficPolicy: internalTrafficPolicy(svc),
      healthCheckNodePort,
      publishNotReadyAddresses: spec.publishNotReadyAddresses === true,
      ports,
      endpoints,
      labels: { ...(svc.metadata?.labels ?? {}) },
    }
    const proxyName = svc.metadata?.labels?.[LABEL_SERVICE_PROXY_NAME]
    if (proxyName !== undefined) ignored.push(out)
    else services.push(out)
  }

  const nodes: Node[] = objects
    .filter((l): l is LoadedObject<K8sNode> => l.object.kind === 'Node')
    .map(l => {
      const n = l.object
      const addresses = (n.status?.addresses ?? [])
        .filter(a => a.type === 'InternalIP' || a.type === 'ExternalIP')
        .map(a => canonicalIp(a.address))
        .filter((a): a is string => a !== undefined)
      const cidrs =
        n.spec?.podCIDRs !== undefined && n.spec.podCIDRs.length > 0
          ? n.spec.podCIDRs
          : n.spec?.podCIDR !== undefined && n.spec.podCIDR !== ''
            ? [n.spec.podCIDR]
            : []
      const zone = n.metadata?.labels?.[LABEL_TOPOLOGY_ZONE]
      return {
        name: n.metadata?.name ?? '',
        addresses: [...new Set(addresses)],
        podCIDRs: cidrs.map(c => canonicalCIDR(c) as string),
        ...(zone !== undefined && zone !== '' ? { zone } : {}),
      }
    })
    .sort((a, b) => byString(a.name, b.name))

  const pods: Pod[] = objects
    .filter((l): l is LoadedObject<K8sPod> => l.object.kind === 'Pod')
    .map(l => {
      const p = l.object
      const pod: Pod = {
        namespace: namespaceOf(p),
        name: p.metadata?.name ?? '',
        ips: podIPs(p).map(ip => canonicalIp(ip) as string),
        ...(p.spec?.nodeName ? { nodeName: p.spec.nodeName } : {}),
        ...(p.spec?.hostname ? { hostname: p.spec.hostname } : {}),
        ...(p.spec?.subdomain ? { subdomain: p.spec.subdomain } : {}),
        labels: { ...(p.metadata?.labels ?? {}) },
        ready: isPodReady(p),
      }
      return pod
    })
    .sort((a, b) => byString(`${a.namespace}/${a.name}`, `${b.namespace}/${b.name}`))

  const cluster: Cluster = { services, nodes, pods }
  return { cluster: deepFreeze(cluster), problems, warnings, ignored: deepFreeze(ignored) }
}

// TypeScript shapes of the Kubernetes API objects tundra reads, with the API's own field names.
// Every field is optional because these describe input as written; validate.ts decides what is required.
// Subset of: core/v1 Namespace, Pod, Service, Node; apps/v1 Deployment; discovery.k8s.io/v1 EndpointSlice.

export interface ObjectMeta {
  name?: string
  generateName?: string
  namespace?: string
  uid?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
  deletionTimestamp?: string
  ownerReferences?: OwnerReference[]
}

export interface OwnerReference {
  apiVersion: string
  kind: string
  name: string
  uid?: string
  controller?: boolean
  blockOwnerDeletion?: boolean
}

export interface ObjectReference {
  kind?: string
  namespace?: string
  name?: string
  uid?: string
}

export interface LabelSelectorRequirement {
  key: string
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist'
  values?: string[]
}

export interface LabelSelector {
  matchLabels?: Record<string, string>
  matchExpressions?: LabelSelectorRequirement[]
}

// ---- core/v1 ----

export type ApiProtocol = 'TCP' | 'UDP' | 'SCTP'

export interface Namespace {
  apiVersion: 'v1'
  kind: 'Namespace'
  metadata?: ObjectMeta
}

export interface ContainerPort {
  name?: string
  containerPort?: number
  hostPort?: number
  protocol?: ApiProtocol
}

export interface Container {
  name?: string
  image?: string
  command?: string[]
  args?: string[]
  ports?: ContainerPort[] | null
}

export interface PodSpec {
  containers?: Container[]
  initContainers?: Container[]
  nodeName?: string
  hostname?: string
  subdomain?: string
  hostNetwork?: boolean
}

export interface PodCondition {
  type: string
  status: 'True' | 'False' | 'Unknown'
}

export interface PodIP {
  ip: string
}

export interface PodStatus {
  phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown'
  podIP?: string
  podIPs?: PodIP[]
  hostIP?: string
  conditions?: PodCondition[]
}

export interface Pod {
  apiVersion: 'v1'
  kind: 'Pod'
  metadata?: ObjectMeta
  spec?: PodSpec
  status?: PodStatus
}

export interface PodTemplateSpec {
  metadata?: ObjectMeta
  spec?: PodSpec
}

export interface ServicePort {
  name?: string
  protocol?: ApiProtocol
  appProtocol?: string
  port?: number
  /** number, or the name of a container port */
  targetPort?: number | string
  nodePort?: number
}

export interface ClientIPConfig {
  timeoutSeconds?: number
}

export interface SessionAffinityConfig {
  clientIP?: ClientIPConfig
}

export type IPFamilyName = 'IPv4' | 'IPv6'

export interface ServiceSpec {
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName'
  selector?: Record<string, string> | null
  ports?: ServicePort[] | null
  clusterIP?: string
  clusterIPs?: string[]
  ipFamilies?: IPFamilyName[]
  ipFamilyPolicy?: 'SingleStack' | 'PreferDualStack' | 'RequireDualStack'
  externalIPs?: string[]
  externalName?: string
  sessionAffinity?: 'None' | 'ClientIP'
  sessionAffinityConfig?: SessionAffinityConfig
  externalTrafficPolicy?: 'Cluster' | 'Local'
  internalTrafficPolicy?: 'Cluster' | 'Local'
  healthCheckNodePort?: number
  publishNotReadyAddresses?: boolean
  loadBalancerIP?: string
  loadBalancerSourceRanges?: string[]
  loadBalancerClass?: string
  allocateLoadBalancerNodePorts?: boolean
  /** PreferClose | PreferSameZone | PreferSameNode: the EndpointSlice controller hints endpoints for their zone/node */
  trafficDistribution?: string
}

export interface LoadBalancerIngressStatus {
  ip?: string
  hostname?: string
  ipMode?: 'VIP' | 'Proxy'
}

export interface ServiceStatus {
  loadBalancer?: { ingress?: LoadBalancerIngressStatus[] }
}

export interface Service {
  apiVersion: 'v1'
  kind: 'Service'
  metadata?: ObjectMeta
  spec?: ServiceSpec
  status?: ServiceStatus
}

export interface NodeAddress {
  type: 'InternalIP' | 'ExternalIP' | 'Hostname' | 'InternalDNS' | 'ExternalDNS'
  address: string
}

export interface Node {
  apiVersion: 'v1'
  kind: 'Node'
  metadata?: ObjectMeta
  spec?: { podCIDR?: string; podCIDRs?: string[]; unschedulable?: boolean }
  status?: { addresses?: NodeAddress[] }
}

// ---- apps/v1 ----

export interface DeploymentSpec {
  replicas?: number
  selector?: LabelSelector
  template?: PodTemplateSpec
}

export interface Deployment {
  apiVersion: 'apps/v1'
  kind: 'Deployment'
  metadata?: ObjectMeta
  spec?: DeploymentSpec
}

// ---- discovery.k8s.io/v1 ----

export type AddressType = 'IPv4' | 'IPv6' | 'FQDN'

export interface EndpointConditions {
  /** nil means true */
  ready?: boolean | null
  /** nil defers to ready */
  serving?: boolean | null
  /** nil means false */
  terminating?: boolean | null
}

export interface EndpointHints {
  forZones?: { name: string }[]
  forNodes?: { name: string }[]
}

export interface Endpoint {
  addresses?: string[]
  conditions?: EndpointConditions
  hostname?: string
  targetRef?: ObjectReference
  nodeName?: string
  zone?: string
  hints?: EndpointHints
}

export interface EndpointPort {
  name?: string | null
  protocol?: ApiProtocol | null
  port?: number | null
  appProtocol?: string
}

export interface EndpointSlice {
  apiVersion: 'discovery.k8s.io/v1'
  kind: 'EndpointSlice'
  metadata?: ObjectMeta
  addressType?: AddressType
  endpoints?: Endpoint[] | null
  ports?: EndpointPort[] | null
}

// ---- unions ----

export type KubeObject = Namespace | Pod | Service | Node | Deployment | EndpointSlice
export type Kind = KubeObject['kind']

/** apiVersion each supported kind must carry. */
export const API_VERSION: Readonly<Record<Kind, string>> = {
  Namespace: 'v1',
  Pod: 'v1',
  Service: 'v1',
  Node: 'v1',
  Deployment: 'apps/v1',
  EndpointSlice: 'discovery.k8s.io/v1',
}

/** One object read from a manifest, with where it came from. */
export interface LoadedObject<T extends KubeObject = KubeObject> {
  readonly object: T
  /** path as given (or a label such as `<stdin>`); absent for objects built in code */
  readonly file?: string
  /** 0-based document index in the file (items of a List share their document's index) */
  readonly doc?: number
}

// ---- well-known labels and annotations ----

export const LABEL_SERVICE_NAME = 'kubernetes.io/service-name'
export const LABEL_MANAGED_BY = 'endpointslice.kubernetes.io/managed-by'
export const MANAGED_BY_CONTROLLER = 'endpointslice-controller.k8s.io'
export const LABEL_HEADLESS = 'service.kubernetes.io/headless'
export const LABEL_SERVICE_PROXY_NAME = 'service.kubernetes.io/service-proxy-name'
export const LABEL_POD_TEMPLATE_HASH = 'pod-template-hash'
export const LABEL_TOPOLOGY_ZONE = 'topology.kubernetes.io/zone'

/** `Kind ns/name` (or `Kind name` for cluster-scoped kinds): how problems name an object. */
export function objectRef(obj: { kind?: unknown; metadata?: ObjectMeta | undefined }): string {
  const kind = typeof obj.kind === 'string' ? obj.kind : '<no kind>'
  const md = obj.metadata
  const name = typeof md?.name === 'string' && md.name !== '' ? md.name : '<no name>'
  if (kind === 'Namespace' || kind === 'Node') return `${kind} ${name}`
  const ns = typeof md?.namespace === 'string' && md.namespace !== '' ? md.namespace : 'default'
  return `${kind} ${ns}/${name}`
}

export function namespaceOf(obj: { metadata?: ObjectMeta | undefined }): string {
  const ns = obj.metadata?.namespace
  return typeof ns === 'string' && ns !== '' ? ns : 'default'
}

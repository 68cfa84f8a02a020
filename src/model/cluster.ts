// The normalized desired state one node needs: what the NAT compiler, cluster DNS, `dump` and `trace` all read.
// Built from Kubernetes objects by src/k8s/normalize.ts; immutable once built (one snapshot serves every consumer).

export type Protocol = 'TCP' | 'UDP' | 'SCTP'
export type Family = 4 | 6
export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName'
export type TrafficPolicy = 'Cluster' | 'Local'

export interface ServicePort {
  /** '' for an unnamed (single) port */
  readonly name: string
  readonly protocol: Protocol
  readonly port: number
  /** number, or the name of a container port resolved per endpoint */
  readonly targetPort: number | string
  /** 0 when none */
  readonly nodePort: number
  readonly appProtocol?: string
}

export interface EndpointPort {
  readonly name: string
  readonly protocol: Protocol
  readonly port: number
}

export interface Endpoint {
  readonly ip: string
  readonly family: Family
  /** EndpointSlice conditions; `ready` absent in the API means true, `serving` absent means = ready */
  readonly ready: boolean
  readonly serving: boolean
  readonly terminating: boolean
  readonly nodeName?: string
  readonly hostname?: string
  readonly zone?: string
  /** EndpointSlice hints.forZones / hints.forNodes names (model/categorize.ts: topology) */
  readonly zoneHints?: readonly string[]
  readonly nodeHints?: readonly string[]
  /** pod name from targetRef, when it is a Pod */
  readonly podName?: string
  /** ports of the slice this endpoint came from */
  readonly ports: readonly EndpointPort[]
}

export interface LoadBalancerIngress {
  readonly ip: string
  /** 'Proxy' means the LB proxies itself: the node must not short-circuit traffic to this IP */
  readonly ipMode: 'VIP' | 'Proxy'
}

export interface Service {
  readonly namespace: string
  readonly name: string
  readonly type: ServiceType
  /** empty for headless and ExternalName services */
  readonly clusterIPs: readonly string[]
  readonly headless: boolean
  readonly ipFamilies: readonly Family[]
  readonly externalName?: string
  readonly externalIPs: readonly string[]
  readonly loadBalancerIngress: readonly LoadBalancerIngress[]
  readonly loadBalancerSourceRanges: readonly string[]
  /** seconds, or 0 when sessionAffinity is None */
  readonly affinityTimeout: number
  readonly externalTrafficPolicy: TrafficPolicy
  readonly internalTrafficPolicy: TrafficPolicy
  readonly healthCheckNodePort: number
  readonly publishNotReadyAddresses: boolean
  readonly ports: readonly ServicePort[]
  /** merged from all EndpointSlices of the service, de-duplicated by address */
  readonly endpoints: readonly Endpoint[]
  readonly labels: Readonly<Record<string, string>>
}

export interface Node {
  readonly name: string
  readonly addresses: readonly string[]
  readonly podCIDRs: readonly string[]
  /** its topology.kubernetes.io/zone label */
  readonly zone?: string
}

export interface Pod {
  readonly namespace: string
  readonly name: string
  readonly ips: readonly string[]
  readonly nodeName?: string
  readonly hostname?: string
  readonly subdomain?: string
  readonly labels: Readonly<Record<string, string>>
  readonly ready: boolean
}

export interface Cluster {
  readonly services: readonly Service[]
  readonly nodes: readonly Node[]
  readonly pods: readonly Pod[]
}

/** A problem with one input object: it was skipped, everything else still compiles. */
export interface Problem {
  readonly file?: string
  readonly object: string
  readonly field: string
  readonly reason: string
}

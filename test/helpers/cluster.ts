// Builders for normalized Cluster objects (model/cluster.ts) in tests: a Service with the API server's defaults,
// a service port and an endpoint. One place for the defaults, so a new Service field is added here once.
import type { Cluster, Endpoint, Service, ServicePort } from '../../src/model/cluster'

/** A ClusterIP Service with every field at its default; `p` sets the rest. */
export function svc(p: Partial<Service> & Pick<Service, 'namespace' | 'name'>): Service {
  return {
    type: 'ClusterIP',
    clusterIPs: [],
    headless: false,
    ipFamilies: [4],
    externalIPs: [],
    loadBalancerIngress: [],
    loadBalancerSourceRanges: [],
    affinityTimeout: 0,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    healthCheckNodePort: 0,
    publishNotReadyAddresses: false,
    ports: [],
    endpoints: [],
    labels: {},
    ...p,
  }
}

export function port(name: string, p: number, protocol: 'TCP' | 'UDP' = 'TCP', targetPort: number | string = p): ServicePort {
  return { name, protocol, port: p, targetPort, nodePort: 0 }
}

/** A ready endpoint (serving follows ready unless given), no ports unless given. */
export function ep(ip: string, opts: Partial<Endpoint> = {}): Endpoint {
  const ready = opts.ready ?? true
  return {
    ip,
    family: ip.includes(':') ? 6 : 4,
    ready,
    serving: ready,
    terminating: false,
    ports: [],
    ...opts,
  }
}

/** A cluster of just these services. */
export function cluster(...services: Service[]): Cluster {
  return { services, nodes: [], pods: [] }
}

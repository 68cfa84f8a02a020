// kube-proxy's service health check answer for healthCheckNodePort (LoadBalancer, externalTrafficPolicy Local):
// 200 while this node has a ready local endpoint, 503 otherwise, so the cloud LB only sends traffic where it lands.

import type { HealthCheck, NatTable } from '../nat/compile'

export interface HealthResponse {
  readonly status: 200 | 503
  /** application/json */
  readonly body: string
}

/** The response kube-proxy's healthcheck server gives for `hc` (proxyHealthy false forces 503, as kube-proxy does). */
export function healthCheckResponse(hc: HealthCheck, proxyHealthy = true): HealthResponse {
  const body = JSON.stringify({
    service: { namespace: hc.namespace, name: hc.name },
    localEndpoints: hc.localEndpoints,
    serviceProxyHealthy: proxyHealthy,
  })
  return { status: hc.localEndpoints > 0 && proxyHealthy ? 200 : 503, body }
}

/** The health check served on `nodePort`, if any. */
export function healthCheckByPort(table: NatTable, nodePort: number): HealthCheck | undefined {
  for (const hc of table.healthChecks.values()) if (hc.nodePort === nodePort) return hc
  return undefined
}

// API-server defaulting of the fields tundra reads (pkg/apis/core/v1/defaults.go), shared by normalize and the controller.
import type { Family, ServicePort as ModelServicePort, ServiceType, TrafficPolicy } from '../model/cluster'
import { ipFamily } from '../wire/addr'
import type { IPFamilyName, Pod, Service, ServicePort } from './types'

/** A service port after defaulting: the model's ServicePort (targetPort defaults to `port`; digits become a number). */
export type DefaultedServicePort = ModelServicePort

export function defaultServicePort(p: ServicePort): DefaultedServicePort {
  const port = p.port ?? 0
  let targetPort: number | string = port
  if (typeof p.targetPort === 'string' && p.targetPort !== '') targetPort = /^\d+$/.test(p.targetPort) ? Number(p.targetPort) : p.targetPort
  else if (typeof p.targetPort === 'number' && p.targetPort !== 0) targetPort = p.targetPort
  const out: DefaultedServicePort = {
    name: p.name ?? '',
    protocol: p.protocol ?? 'TCP',
    port,
    targetPort,
    nodePort: p.nodePort ?? 0,
  }
  return p.appProtocol === undefined ? out : { ...out, appProtocol: p.appProtocol }
}

export function serviceType(svc: Service): ServiceType {
  const t = svc.spec?.type
  return t === undefined || (t as string) === '' ? 'ClusterIP' : t
}

export function isHeadlessSpec(svc: Service): boolean {
  return svc.spec?.clusterIP === 'None' || svc.spec?.clusterIPs?.[0] === 'None'
}

/** NodePort, LoadBalancer, or ClusterIP with externalIPs: the services external traffic policy applies to. */
export function externallyAccessible(svc: Service): boolean {
  const t = serviceType(svc)
  return t === 'NodePort' || t === 'LoadBalancer' || (t === 'ClusterIP' && (svc.spec?.externalIPs?.length ?? 0) > 0)
}

export function externalTrafficPolicy(svc: Service): TrafficPolicy {
  return externallyAccessible(svc) && svc.spec?.externalTrafficPolicy === 'Local' ? 'Local' : 'Cluster'
}

export function internalTrafficPolicy(svc: Service): TrafficPolicy {
  return svc.spec?.internalTrafficPolicy === 'Local' ? 'Local' : 'Cluster'
}

/** The explicit cluster IPs: clusterIPs if given, else [clusterIP]; never 'None' or ''. */
export function explicitClusterIPs(svc: Service): string[] {
  const spec = svc.spec ?? {}
  const list = spec.clusterIPs !== undefined && spec.clusterIPs.length > 0 ? spec.clusterIPs : spec.clusterIP !== undefined ? [spec.clusterIP] : []
  return list.filter(ip => ip !== '' && ip !== 'None')
}

export function familyOfName(f: IPFamilyName): Family {
  return f === 'IPv6' ? 6 : 4
}

/** Families the user pinned: from ipFamilies, else from the explicit cluster IPs; empty when neither says. */
export function declaredFamilies(svc: Service): Family[] {
  const fams = svc.spec?.ipFamilies
  if (fams !== undefined && fams.length > 0) return fams.map(familyOfName)
  const out: Family[] = []
  for (const ip of explicitClusterIPs(svc)) {
    const f = ipFamily(ip)
    if (f !== undefined && !out.includes(f)) out.push(f)
  }
  return out
}

/** podutil.IsPodReady: the Ready condition is True. */
export function isPodReady(pod: Pod): boolean {
  return (pod.status?.conditions ?? []).some(c => c.type === 'Ready' && c.status === 'True')
}

/** status.podIPs, else status.podIP. */
export function podIPs(pod: Pod): string[] {
  const list = (pod.status?.podIPs ?? []).map(p => p.ip).filter(ip => typeof ip === 'string' && ip !== '')
  if (list.length > 0) return list
  const one = pod.status?.podIP
  return one !== undefined && one !== '' ? [one] : []
}

/** Succeeded or Failed: the pod will never run again. */
export function isPodTerminal(pod: Pod): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed'
}

/** Equality-based selector match (Service selectors are plain label maps). */
export function selectorMatches(selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>> | undefined): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels?.[k] !== v) return false
  return true
}

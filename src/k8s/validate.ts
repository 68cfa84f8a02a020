// Validation of manifest objects as kube-apiserver would do it on create: each error names file, object and field path.
// An object with any error is dropped by validateAll; everything else goes on to normalize().
import type { Problem } from '../model/cluster'
import { parseCIDR, parseIP, isSpecialEndpointIP } from './ip'
import { ipFamily } from '../wire/addr'
import { objectRef, type Deployment, type EndpointSlice, type LoadedObject, type Namespace, type Node, type Pod, type PodSpec, type Service } from './types'

export interface ValidateOptions {
  /** the API server's --service-node-port-range; default 30000-32767 */
  readonly nodePortRange?: readonly [number, number]
}

export const DEFAULT_NODE_PORT_RANGE: readonly [number, number] = [30000, 32767]

// ---- name formats (k8s.io/apimachinery/pkg/util/validation) ----

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/
const QUALIFIED_NAME_PART = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/

export function dns1123LabelError(s: string): string | undefined {
  if (s.length > 63) return 'must be no more than 63 characters'
  if (!DNS1123_LABEL.test(s)) return "must be a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)"
  return undefined
}

export function dns1123SubdomainError(s: string): string | undefined {
  if (s.length > 253) return 'must be no more than 253 characters'
  if (!DNS1123_SUBDOMAIN.test(s)) return "must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
  return undefined
}

export function dns1035LabelError(s: string): string | undefined {
  if (s.length > 63) return 'must be no more than 63 characters'
  if (!DNS1035_LABEL.test(s)) return "must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter and ending with a letter or digit)"
  return undefined
}

/** IANA_SVC_NAME, the format of named ports. */
export function portNameError(s: string): string | undefined {
  if (s.length > 15) return 'must be no more than 15 characters'
  if (!/^[-a-z0-9]+$/.test(s)) return "must contain only lowercase letters, digits and '-'"
  if (!/[a-z]/.test(s)) return 'must contain at least one letter'
  if (s.includes('--')) return "must not contain consecutive '-'"
  if (s.startsWith('-') || s.endsWith('-')) return "must not begin or end with '-'"
  return undefined
}

function labelKeyError(key: string): string | undefined {
  const slash = key.indexOf('/')
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined
  const name = slash >= 0 ? key.slice(slash + 1) : key
  if (prefix !== undefined) {
    if (prefix === '') return 'prefix part must be non-empty'
    const e = dns1123SubdomainError(prefix)
    if (e) return `prefix part ${e}`
  }
  if (name === '') return 'name part must be non-empty'
  if (name.length > 63) return 'name part must be no more than 63 characters'
  if (!QUALIFIED_NAME_PART.test(name)) return "name part must consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
  return undefined
}

function labelValueError(v: string): string | undefined {
  if (v === '') return undefined
  if (v.length > 63) return 'must be no more than 63 characters'
  if (!QUALIFIED_NAME_PART.test(v)) return "must consist of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
  return undefined
}

// ---- a collector bound to one object ----

class Check {
  readonly problems: Problem[] = []
  /** accepted, but worth saying: `file: object: field: reason` lines */
  readonly warnings: string[] = []
  constructor(
    private readonly file: string | undefined,
    readonly object: string,
  ) {}

  add(field: string, reason: string): void {
    this.problems.push(this.file === undefined ? { object: this.object, field, reason } : { file: this.file, object: this.object, field, reason })
  }

  warn(field: string, reason: string): void {
    this.warnings.push(`${this.file === undefined ? '' : `${this.file}: `}${this.object}: ${field}: ${reason}`)
  }

  /** true when v is an object (not array, not null) or absent */
  optObject(v: unknown, field: string): v is Record<string, unknown> | undefined {
    if (v === undefined || v === null) return true
    if (typeof v !== 'object' || Array.isArray(v)) {
      this.add(field, 'must be an object')
      return false
    }
    return true
  }

  optArray(v: unknown, field: string): v is unknown[] | undefined | null {
    if (v === undefined || v === null || Array.isArray(v)) return true
    this.add(field, 'must be a list')
    return false
  }

  optString(v: unknown, field: string): v is string | undefined {
    if (v === undefined || typeof v === 'string') return true
    this.add(field, 'must be a string')
    return false
  }

  optBool(v: unknown, field: string): boolean {
    if (v === undefined || v === null || typeof v === 'boolean') return true
    this.add(field, 'must be true or false')
    return false
  }

  /** integer or absent; reports non-integers */
  optInt(v: unknown, field: string): v is number | undefined {
    if (v === undefined || v === null) return true
    if (typeof v === 'number' && Number.isInteger(v)) return true
    this.add(field, 'must be an integer')
    return false
  }

  port(v: unknown, field: string, required: boolean): void {
    if (v === undefined || v === null || v === 0) {
      if (required) this.add(field, 'Required value: must be 1-65535')
      return
    }
    if (!this.optInt(v, field)) return
    if ((v as number) < 1 || (v as number) > 65535) this.add(field, 'must be 1-65535')
  }

  protocol(v: unknown, field: string): void {
    if (v === undefined || v === null) return // defaulted to TCP
    if (v !== 'TCP' && v !== 'UDP' && v !== 'SCTP') this.add(field, `Unsupported value ${JSON.stringify(v)}: must be TCP, UDP or SCTP`)
  }

  oneOf(v: unknown, field: string, allowed: readonly string[]): void {
    if (v === undefined || v === null || v === '') return
    if (typeof v !== 'string' || !allowed.includes(v)) {
      this.add(
        field,
        `Unsupported value ${JSON.stringify(v)}: must be ${allowed.slice(0, -1).join(', ')}${allowed.length > 1 ? ' or ' : ''}${allowed[allowed.length - 1]}`,
      )
    }
  }

  ip(v: unknown, field: string): number | undefined {
    if (typeof v !== 'string' || !parseIP(v)) {
      this.add(field, `must be a valid IP address (e.g. 10.9.8.7 or 2001:db8::ffff), got ${JSON.stringify(v)}`)
      return undefined
    }
    return ipFamily(v)
  }

  cidr(v: unknown, field: string): void {
    if (typeof v !== 'string' || !parseCIDR(v)) this.add(field, `must be a valid CIDR (e.g. 10.0.0.0/8 or 2001:db8::/64), got ${JSON.stringify(v)}`)
  }

  labels(v: unknown, field: string): void {
    if (v === undefined || v === null) return
    if (!this.optObject(v, field)) return
    for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
      const ke = labelKeyError(k)
      if (ke) this.add(`${field}[${JSON.stringify(k)}]`, `invalid label key: ${ke}`)
      if (typeof val !== 'string') {
        this.add(`${field}[${JSON.stringify(k)}]`, 'label value must be a string (quote it in YAML)')
        continue
      }
      const ve = labelValueError(val)
      if (ve) this.add(`${field}[${JSON.stringify(k)}]`, `invalid label value ${JSON.stringify(val)}: ${ve}`)
    }
  }

  meta(md: unknown, nameCheck: (s: string) => string | undefined, namespaced: boolean): void {
    if (md === undefined || md === null) {
      this.add('metadata.name', 'Required value')
      return
    }
    if (!this.optObject(md, 'metadata')) return
    const m = md as Record<string, unknown>
    if (m['name'] === undefined || m['name'] === '') this.add('metadata.name', 'Required value')
    else if (this.optString(m['name'], 'metadata.name')) {
      const e = nameCheck(m['name'] as string)
      if (e) this.add('metadata.name', e)
    }
    if (namespaced && m['namespace'] !== undefined && m['namespace'] !== '') {
      if (this.optString(m['namespace'], 'metadata.namespace')) {
        const e = dns1123LabelError(m['namespace'] as string)
        if (e) this.add('metadata.namespace', e)
      }
    }
    this.labels(m['labels'], 'metadata.labels')
    if (m['annotations'] !== undefined && m['annotations'] !== null && this.optObject(m['annotations'], 'metadata.annotations')) {
      for (const [k, val] of Object.entries(m['annotations'] as Record<string, unknown>)) {
        if (typeof val !== 'string') this.add(`metadata.annotations[${JSON.stringify(k)}]`, 'must be a string')
      }
    }
    this.optString(m['deletionTimestamp'], 'metadata.deletionTimestamp')
  }
}

// ---- per kind ----

const SERVICE_TYPES = ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const

/** What the Service checks below share: the raw spec and what its type implies. */
interface ServiceSpec {
  readonly spec: Record<string, unknown>
  /** spec.type, defaulted to ClusterIP */
  readonly type: string
  readonly isExternalName: boolean
  /** clusterIP: None */
  readonly headless: boolean
  readonly npMin: number
  readonly npMax: number
}

/** spec.trafficDistribution values the API server accepts (PreferSameZone and PreferSameNode since 1.33) */
const TRAFFIC_DISTRIBUTIONS = ['PreferClose', 'PreferSameZone', 'PreferSameNode']

/** The Service checks in the API server's order: each step reports its own fields. */
function validateService(c: Check, svc: Service, opts: ValidateOptions): void {
  c.meta(svc.metadata, dns1035LabelError, true)
  const spec = (svc.spec ?? {}) as Record<string, unknown>
  if (!c.optObject(svc.spec, 'spec')) return
  const [npMin, npMax] = opts.nodePortRange ?? DEFAULT_NODE_PORT_RANGE
  c.oneOf(spec['type'], 'spec.type', SERVICE_TYPES)
  const type = typeof spec['type'] === 'string' && spec['type'] !== '' ? spec['type'] : 'ClusterIP'
  const s: ServiceSpec = { spec, type, isExternalName: type === 'ExternalName', headless: spec['clusterIP'] === 'None', npMin, npMax }
  c.labels(spec['selector'], 'spec.selector')
  checkServiceClusterIPs(c, s)
  if (s.isExternalName) checkExternalName(c, spec['externalName'])
  checkServicePorts(c, s)
  checkSessionAffinity(c, spec)
  checkExternalAccess(c, s)
  c.oneOf(spec['trafficDistribution'], 'spec.trafficDistribution', TRAFFIC_DISTRIBUTIONS)
  checkLoadBalancerStatus(c, svc.status?.loadBalancer)
}

/** clusterIP, clusterIPs, ipFamilies and ipFamilyPolicy (none of them for an ExternalName service). */
function checkServiceClusterIPs(c: Check, s: ServiceSpec): void {
  const { spec, type } = s
  const clusterIP = spec['clusterIP']
  c.optString(clusterIP, 'spec.clusterIP')
  const clusterIPs = spec['clusterIPs']
  const ipFamilies = spec['ipFamilies']
  if (s.isExternalName) {
    if ((typeof clusterIP === 'string' && clusterIP !== '') || (Array.isArray(clusterIPs) && clusterIPs.length > 0)) {
      c.add('spec.clusterIP', 'may not be set for ExternalName services')
    }
    if (Array.isArray(ipFamilies) && ipFamilies.length > 0) c.add('spec.ipFamilies', 'may not be set for ExternalName services')
  } else {
    const families = checkClusterIPList(c, clusterIP, clusterIPs)
    checkIpFamilies(c, ipFamilies, families)
    c.oneOf(spec['ipFamilyPolicy'], 'spec.ipFamilyPolicy', ['SingleStack', 'PreferDualStack', 'RequireDualStack'])
    const nFamilies = Math.max(Array.isArray(ipFamilies) ? ipFamilies.length : 0, Array.isArray(clusterIPs) && !s.headless ? clusterIPs.length : 0)
    if (spec['ipFamilyPolicy'] === 'SingleStack' && nFamilies > 1) {
      c.add('spec.ipFamilyPolicy', 'must be RequireDualStack or PreferDualStack when multiple IP families are specified')
    }
  }
  if (s.headless && (type === 'NodePort' || type === 'LoadBalancer')) {
    c.add('spec.clusterIP', "may not be set to 'None' for LoadBalancer or NodePort services")
  }
}

/** clusterIP and clusterIPs of a service with cluster IPs; returns the IP family of each (undefined: None or bad). */
function checkClusterIPList(c: Check, clusterIP: unknown, clusterIPs: unknown): (number | undefined)[] {
  const families: (number | undefined)[] = []
  if (typeof clusterIP === 'string' && clusterIP !== '' && clusterIP !== 'None') c.ip(clusterIP, 'spec.clusterIP')
  if (c.optArray(clusterIPs, 'spec.clusterIPs') && Array.isArray(clusterIPs)) {
    if (clusterIPs.length > 2) c.add('spec.clusterIPs', 'may contain at most 2 addresses (one per IP family)')
    if (typeof clusterIP === 'string' && clusterIP !== '' && clusterIPs.length > 0 && clusterIPs[0] !== clusterIP) {
      c.add('spec.clusterIPs[0]', `must match spec.clusterIP (${clusterIP})`)
    }
    clusterIPs.forEach((ip, i) => {
      if (ip === 'None') {
        if (clusterIPs.length > 1) c.add(`spec.clusterIPs[${i}]`, "'None' must be the only value")
        families.push(undefined)
        return
      }
      families.push(c.ip(ip, `spec.clusterIPs[${i}]`))
    })
    if (families.length === 2 && families[0] !== undefined && families[0] === families[1]) {
      c.add('spec.clusterIPs[1]', 'must be of the other IP family than spec.clusterIPs[0] (dual-stack)')
    }
  }
  if (families.length === 0 && typeof clusterIP === 'string' && clusterIP !== '' && clusterIP !== 'None') {
    families.push(ipFamily(clusterIP)) // clusterIPs is defaulted from clusterIP
  }
  return families
}

/** ipFamilies: known, no repeats, and each agreeing with the cluster IP at its index. */
function checkIpFamilies(c: Check, ipFamilies: unknown, families: readonly (number | undefined)[]): void {
  if (!c.optArray(ipFamilies, 'spec.ipFamilies') || !Array.isArray(ipFamilies)) return
  if (ipFamilies.length > 2) c.add('spec.ipFamilies', 'may contain at most 2 families')
  const seen = new Set<unknown>()
  ipFamilies.forEach((f, i) => {
    c.oneOf(f, `spec.ipFamilies[${i}]`, ['IPv4', 'IPv6'])
    if (seen.has(f)) c.add(`spec.ipFamilies[${i}]`, `Duplicate value ${JSON.stringify(f)}`)
    seen.add(f)
    const fromIP = families[i]
    if (fromIP !== undefined && (f === 'IPv4' ? 4 : f === 'IPv6' ? 6 : 0) !== fromIP) {
      c.add(`spec.clusterIPs[${i}]`, `expected an ${f} value as indicated by spec.ipFamilies[${i}]`)
    }
  })
}

function checkExternalName(c: Check, en: unknown): void {
  if (typeof en !== 'string' || en.replace(/\.$/, '') === '') c.add('spec.externalName', 'Required value: an ExternalName service needs spec.externalName')
  else {
    const e = dns1123SubdomainError(en.replace(/\.$/, ''))
    if (e) c.add('spec.externalName', e)
  }
}

/** Names, port/protocol pairs and node port/protocol pairs seen so far among a service's ports. */
interface PortsSeen {
  readonly names: Set<string>
  readonly portProto: Set<string>
  readonly nodePortProto: Set<string>
}

function checkServicePorts(c: Check, s: ServiceSpec): void {
  const ports = s.spec['ports']
  if (!c.optArray(ports, 'spec.ports')) return
  const list = Array.isArray(ports) ? ports : []
  if (list.length === 0 && !s.headless && !s.isExternalName) c.add('spec.ports', 'Required value: at least one port (unless clusterIP is None)')
  const seen: PortsSeen = { names: new Set(), portProto: new Set(), nodePortProto: new Set() }
  list.forEach((raw, i) => {
    const f = `spec.ports[${i}]`
    if (!c.optObject(raw, f) || raw === undefined || raw === null) return
    checkServicePort(c, s, raw as Record<string, unknown>, f, list.length, seen)
  })
}

/** One entry of spec.ports (f is its field path; n how many ports the service has). */
function checkServicePort(c: Check, s: ServiceSpec, p: Record<string, unknown>, f: string, n: number, seen: PortsSeen): void {
  const name = p['name']
  if (name === undefined || name === null || name === '') {
    if (n > 1) c.add(`${f}.name`, 'Required value: each port must be named when the service has more than one')
  } else if (c.optString(name, `${f}.name`)) {
    const e = dns1123LabelError(name as string)
    if (e) c.add(`${f}.name`, e)
    else if (seen.names.has(name as string)) c.add(`${f}.name`, `Duplicate value ${JSON.stringify(name)}`)
    seen.names.add(name as string)
  }
  c.port(p['port'], `${f}.port`, true)
  c.protocol(p['protocol'], `${f}.protocol`)
  const proto = typeof p['protocol'] === 'string' ? p['protocol'] : 'TCP'
  const key = `${String(p['port'])}/${proto}`
  if (typeof p['port'] === 'number') {
    if (seen.portProto.has(key)) c.add(f, `Duplicate value: port ${String(p['port'])}/${proto} is listed twice`)
    seen.portProto.add(key)
  }
  checkTargetPort(c, p['targetPort'], `${f}.targetPort`)
  const np = p['nodePort']
  if (np !== undefined && np !== null && np !== 0) {
    if (!c.optInt(np, `${f}.nodePort`)) return
    if (s.type !== 'NodePort' && s.type !== 'LoadBalancer') {
      c.add(`${f}.nodePort`, `may not be used when type is '${s.type}'`)
    } else if ((np as number) < s.npMin || (np as number) > s.npMax) {
      c.add(`${f}.nodePort`, `must be ${s.npMin}-${s.npMax} (the node port range)`)
    }
    const nk = `${String(np)}/${proto}`
    if (seen.nodePortProto.has(nk)) c.add(`${f}.nodePort`, `Duplicate value ${String(np)}`)
    seen.nodePortProto.add(nk)
  }
  c.optString(p['appProtocol'], `${f}.appProtocol`)
}

/** targetPort: a number (or digits) 1-65535, or a port name. */
function checkTargetPort(c: Check, tp: unknown, field: string): void {
  if (typeof tp === 'string') {
    if (/^\d+$/.test(tp)) c.port(Number(tp), field, false)
    else {
      const e = portNameError(tp)
      if (e) c.add(field, `must be a port number 1-65535 or a port name: ${e}`)
    }
  } else if (tp !== undefined && tp !== null) c.port(tp, field, false)
}

function checkSessionAffinity(c: Check, spec: Record<string, unknown>): void {
  c.oneOf(spec['sessionAffinity'], 'spec.sessionAffinity', ['None', 'ClientIP'])
  const sac = spec['sessionAffinityConfig'] as Record<string, unknown> | undefined
  if (!c.optObject(sac, 'spec.sessionAffinityConfig') || !sac) return
  const cip = sac['clientIP'] as Record<string, unknown> | undefined
  if (!c.optObject(cip, 'spec.sessionAffinityConfig.clientIP') || !cip) return
  if (spec['sessionAffinity'] !== 'ClientIP') {
    c.add('spec.sessionAffinityConfig', 'must not be set when sessionAffinity is None')
    return
  }
  const t = cip['timeoutSeconds']
  if (t !== undefined && t !== null && c.optInt(t, 'spec.sessionAffinityConfig.clientIP.timeoutSeconds')) {
    if ((t as number) < 1 || (t as number) > 86400) c.add('spec.sessionAffinityConfig.clientIP.timeoutSeconds', 'must be 1-86400')
  }
}

/** externalIPs, the traffic policies, the health check node port and the load balancer fields. */
function checkExternalAccess(c: Check, s: ServiceSpec): void {
  const { spec, type } = s
  const externalIPs = spec['externalIPs']
  if (c.optArray(externalIPs, 'spec.externalIPs') && Array.isArray(externalIPs)) {
    externalIPs.forEach((ip, i) => {
      if (c.ip(ip, `spec.externalIPs[${i}]`) === undefined) return
      const special = isSpecialEndpointIP(parseIP(ip as string)!)
      if (special) c.add(`spec.externalIPs[${i}]`, special)
    })
  }
  const externallyAccessible = type === 'NodePort' || type === 'LoadBalancer' || (type === 'ClusterIP' && Array.isArray(externalIPs) && externalIPs.length > 0)
  const etp = spec['externalTrafficPolicy']
  if (etp !== undefined && etp !== null && etp !== '') {
    if (!externallyAccessible)
      c.add('spec.externalTrafficPolicy', 'may only be set for externally-accessible services (NodePort, LoadBalancer, or with externalIPs)')
    else c.oneOf(etp, 'spec.externalTrafficPolicy', ['Cluster', 'Local'])
  }
  if (!s.isExternalName) c.oneOf(spec['internalTrafficPolicy'], 'spec.internalTrafficPolicy', ['Cluster', 'Local'])
  checkHealthCheckNodePort(c, s, etp)
  checkLoadBalancerSpec(c, spec, type)
  c.optBool(spec['publishNotReadyAddresses'], 'spec.publishNotReadyAddresses')
}

function checkHealthCheckNodePort(c: Check, s: ServiceSpec, etp: unknown): void {
  const hc = s.spec['healthCheckNodePort']
  if (hc === undefined || hc === null || hc === 0) return
  // The API server refuses this on create, but kube-proxy (whose output tundra matches) just ignores it: only
  // LoadBalancer + externalTrafficPolicy Local gets a health check. Ignored with a warning, not an error.
  if (s.type !== 'LoadBalancer' || etp !== 'Local')
    c.warn('spec.healthCheckNodePort', "ignored: kube-proxy serves a health check only when type is 'LoadBalancer' and externalTrafficPolicy is 'Local'")
  else if (c.optInt(hc, 'spec.healthCheckNodePort') && ((hc as number) < s.npMin || (hc as number) > s.npMax)) {
    c.add('spec.healthCheckNodePort', `must be ${s.npMin}-${s.npMax} (the node port range)`)
  }
}

/** loadBalancerSourceRanges, allocateLoadBalancerNodePorts, loadBalancerIP. */
function checkLoadBalancerSpec(c: Check, spec: Record<string, unknown>, type: string): void {
  const ranges = spec['loadBalancerSourceRanges']
  if (c.optArray(ranges, 'spec.loadBalancerSourceRanges') && Array.isArray(ranges) && ranges.length > 0) {
    if (type !== 'LoadBalancer') c.add('spec.loadBalancerSourceRanges', "may only be used when type is 'LoadBalancer'")
    ranges.forEach((r, i) => c.cidr(typeof r === 'string' ? r.trim() : r, `spec.loadBalancerSourceRanges[${i}]`))
  }
  if (spec['allocateLoadBalancerNodePorts'] !== undefined && type !== 'LoadBalancer') {
    c.add('spec.allocateLoadBalancerNodePorts', "may only be used when type is 'LoadBalancer'")
  }
  if (spec['loadBalancerIP'] !== undefined && spec['loadBalancerIP'] !== '') c.ip(spec['loadBalancerIP'], 'spec.loadBalancerIP')
}

/** status.loadBalancer.ingress: each an ip (with an optional ipMode) or a hostname. */
function checkLoadBalancerStatus(c: Check, lb: unknown): void {
  const ingress = (lb as Record<string, unknown> | undefined)?.['ingress']
  if (!c.optArray(ingress, 'status.loadBalancer.ingress') || !Array.isArray(ingress)) return
  ingress.forEach((ing, i) => {
    const f = `status.loadBalancer.ingress[${i}]`
    if (!c.optObject(ing, f) || !ing) return
    const g = ing as Record<string, unknown>
    if (g['ip'] !== undefined && g['ip'] !== '') c.ip(g['ip'], `${f}.ip`)
    if (g['ipMode'] !== undefined) {
      if (g['ip'] === undefined || g['ip'] === '') c.add(`${f}.ipMode`, 'may only be set when ip is set')
      c.oneOf(g['ipMode'], `${f}.ipMode`, ['VIP', 'Proxy'])
    }
  })
}

function validatePodSpec(c: Check, spec: PodSpec | undefined, path: string): void {
  if (spec === undefined || spec === null) {
    c.add(`${path}.containers`, 'Required value')
    return
  }
  if (!c.optObject(spec, path)) return
  const containers = spec.containers as unknown
  if (!c.optArray(containers, `${path}.containers`)) return
  if (!Array.isArray(containers) || containers.length === 0) {
    c.add(`${path}.containers`, 'Required value: at least one container')
    return
  }
  const ctrNames = new Set<string>()
  containers.forEach((raw, i) => {
    const f = `${path}.containers[${i}]`
    if (!c.optObject(raw, f) || !raw) return
    const ctr = raw as Record<string, unknown>
    const name = ctr['name']
    if (name === undefined || name === '') c.add(`${f}.name`, 'Required value')
    else if (c.optString(name, `${f}.name`)) {
      const e = dns1123LabelError(name as string)
      if (e) c.add(`${f}.name`, e)
      else if (ctrNames.has(name as string)) c.add(`${f}.name`, `Duplicate value ${JSON.stringify(name)}`)
      ctrNames.add(name as string)
    }
    const ports = ctr['ports']
    if (!c.optArray(ports, `${f}.ports`) || !Array.isArray(ports)) return
    const portNames = new Set<string>()
    ports.forEach((rp, j) => {
      const pf = `${f}.ports[${j}]`
      if (!c.optObject(rp, pf) || !rp) return
      const p = rp as Record<string, unknown>
      c.port(p['containerPort'], `${pf}.containerPort`, true)
      if (p['hostPort'] !== undefined && p['hostPort'] !== 0) c.port(p['hostPort'], `${pf}.hostPort`, false)
      c.protocol(p['protocol'], `${pf}.protocol`)
      const pn = p['name']
      if (pn !== undefined && pn !== '' && c.optString(pn, `${pf}.name`)) {
        const e = portNameError(pn as string)
        if (e) c.add(`${pf}.name`, e)
        else if (portNames.has(pn as string)) c.add(`${pf}.name`, `Duplicate value ${JSON.stringify(pn)}`)
        portNames.add(pn as string)
      }
    })
  })
  for (const k of ['hostname', 'subdomain'] as const) {
    const v = spec[k] as unknown
    if (v !== undefined && v !== '' && c.optString(v, `${path}.${k}`)) {
      const e = dns1123LabelError(v as string)
      if (e) c.add(`${path}.${k}`, e)
    }
  }
  if (spec.nodeName !== undefined && spec.nodeName !== '' && c.optString(spec.nodeName, `${path}.nodeName`)) {
    const e = dns1123SubdomainError(spec.nodeName)
    if (e) c.add(`${path}.nodeName`, e)
  }
}

function validatePod(c: Check, pod: Pod): void {
  c.meta(pod.metadata, dns1123SubdomainError, true)
  validatePodSpec(c, pod.spec, 'spec')
  const st = pod.status as unknown
  if (!c.optObject(st, 'status') || !st) return
  const status = st as Record<string, unknown>
  const podIP = status['podIP']
  if (podIP !== undefined && podIP !== '') c.ip(podIP, 'status.podIP')
  const podIPs = status['podIPs']
  if (c.optArray(podIPs, 'status.podIPs') && Array.isArray(podIPs)) {
    const fams = new Set<number>()
    podIPs.forEach((e, i) => {
      const ip = (e as { ip?: unknown } | null)?.ip
      const fam = c.ip(ip, `status.podIPs[${i}].ip`)
      if (fam === undefined) return
      if (fams.has(fam)) c.add(`status.podIPs[${i}].ip`, 'may have at most one address per IP family')
      fams.add(fam)
    })
    const first = (podIPs[0] as { ip?: unknown } | undefined)?.ip
    if (typeof podIP === 'string' && podIP !== '' && first !== undefined && first !== podIP) {
      c.add('status.podIPs[0].ip', `must match status.podIP (${podIP})`)
    }
  }
  c.oneOf(status['phase'], 'status.phase', ['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown'])
  const conds = status['conditions']
  if (c.optArray(conds, 'status.conditions') && Array.isArray(conds)) {
    conds.forEach((cond, i) => {
      if (!c.optObject(cond, `status.conditions[${i}]`) || !cond) return
      c.oneOf((cond as Record<string, unknown>)['status'], `status.conditions[${i}].status`, ['True', 'False', 'Unknown'])
    })
  }
}

function selectorMatches(sel: Record<string, unknown>, labels: Record<string, string>): boolean {
  const ml = (sel['matchLabels'] ?? {}) as Record<string, unknown>
  for (const [k, v] of Object.entries(ml)) if (labels[k] !== v) return false
  const exprs = (sel['matchExpressions'] ?? []) as { key: string; operator: string; values?: string[] }[]
  for (const e of exprs) {
    const has = Object.hasOwn(labels, e.key)
    const val = labels[e.key]
    switch (e.operator) {
      case 'In':
        if (!has || !(e.values ?? []).includes(val as string)) return false
        break
      case 'NotIn':
        if (has && (e.values ?? []).includes(val as string)) return false
        break
      case 'Exists':
        if (!has) return false
        break
      case 'DoesNotExist':
        if (has) return false
        break
      default:
        return false
    }
  }
  return true
}

function validateDeployment(c: Check, d: Deployment): void {
  c.meta(d.metadata, dns1123SubdomainError, true)
  if (!c.optObject(d.spec, 'spec')) return
  const spec = (d.spec ?? {}) as Record<string, unknown>
  const replicas = spec['replicas']
  if (replicas !== undefined && c.optInt(replicas, 'spec.replicas') && (replicas as number) < 0) c.add('spec.replicas', 'must be greater than or equal to 0')
  const sel = spec['selector']
  let selOk = false
  if (sel === undefined || sel === null) c.add('spec.selector', 'Required value')
  else if (c.optObject(sel, 'spec.selector')) {
    const s = sel as Record<string, unknown>
    c.labels(s['matchLabels'], 'spec.selector.matchLabels')
    const exprs = s['matchExpressions']
    let nExpr = 0
    if (c.optArray(exprs, 'spec.selector.matchExpressions') && Array.isArray(exprs)) {
      nExpr = exprs.length
      exprs.forEach((e, i) => {
        const f = `spec.selector.matchExpressions[${i}]`
        if (!c.optObject(e, f) || !e) return
        const x = e as Record<string, unknown>
        if (typeof x['key'] !== 'string' || x['key'] === '') c.add(`${f}.key`, 'Required value')
        c.oneOf(x['operator'], `${f}.operator`, ['In', 'NotIn', 'Exists', 'DoesNotExist'])
        const vals = x['values']
        if ((x['operator'] === 'In' || x['operator'] === 'NotIn') && (!Array.isArray(vals) || vals.length === 0)) {
          c.add(`${f}.values`, 'must be specified when operator is In or NotIn')
        }
        if ((x['operator'] === 'Exists' || x['operator'] === 'DoesNotExist') && Array.isArray(vals) && vals.length > 0) {
          c.add(`${f}.values`, 'may not be specified when operator is Exists or DoesNotExist')
        }
      })
    }
    const nLabels = s['matchLabels'] && typeof s['matchLabels'] === 'object' ? Object.keys(s['matchLabels']).length : 0
    if (nLabels + nExpr === 0) c.add('spec.selector', 'empty selector is invalid for deployment')
    else selOk = true
  }
  const tmpl = spec['template']
  if (tmpl === undefined || tmpl === null) {
    c.add('spec.template', 'Required value')
    return
  }
  if (!c.optObject(tmpl, 'spec.template')) return
  const t = tmpl as Record<string, unknown>
  const md = (t['metadata'] ?? {}) as Record<string, unknown>
  c.labels(md['labels'], 'spec.template.metadata.labels')
  if (selOk) {
    const labels = (md['labels'] ?? {}) as Record<string, string>
    if (!selectorMatches(sel as Record<string, unknown>, labels)) c.add('spec.template.metadata.labels', 'selector does not match template labels')
  }
  validatePodSpec(c, t['spec'] as PodSpec | undefined, 'spec.template.spec')
}

function validateNode(c: Check, n: Node): void {
  c.meta(n.metadata, dns1123SubdomainError, false)
  const spec = n.spec as unknown
  if (c.optObject(spec, 'spec') && spec) {
    const s = spec as Record<string, unknown>
    if (s['podCIDR'] !== undefined && s['podCIDR'] !== '') c.cidr(s['podCIDR'], 'spec.podCIDR')
    const cidrs = s['podCIDRs']
    if (c.optArray(cidrs, 'spec.podCIDRs') && Array.isArray(cidrs)) cidrs.forEach((x, i) => c.cidr(x, `spec.podCIDRs[${i}]`))
  }
  const st = n.status as unknown
  if (c.optObject(st, 'status') && st) {
    const addrs = (st as Record<string, unknown>)['addresses']
    if (c.optArray(addrs, 'status.addresses') && Array.isArray(addrs)) {
      addrs.forEach((a, i) => {
        const rec = a as Record<string, unknown> | null
        if (!rec || typeof rec['address'] !== 'string' || rec['address'] === '') c.add(`status.addresses[${i}].address`, 'Required value')
        c.oneOf(rec?.['type'], `status.addresses[${i}].type`, ['InternalIP', 'ExternalIP', 'Hostname', 'InternalDNS', 'ExternalDNS'])
        if (rec && (rec['type'] === 'InternalIP' || rec['type'] === 'ExternalIP') && typeof rec['address'] === 'string') {
          c.ip(rec['address'], `status.addresses[${i}].address`)
        }
      })
    }
  }
}

function validateNamespace(c: Check, ns: Namespace): void {
  c.meta(ns.metadata, dns1123LabelError, false)
}

/** The API's limit on hints.forZones and hints.forNodes entries. */
const MAX_HINTS = 8

/** hints.forZones / forNodes: at most 8 entries, each a distinct valid name (a label value / a node name). */
function checkHintNames(c: Check, list: unknown, field: string, nameError: (s: string) => string | undefined): void {
  if (!c.optArray(list, field) || !Array.isArray(list)) return
  if (list.length > MAX_HINTS) c.add(field, `must have at most ${MAX_HINTS} items`)
  const seen = new Set<string>()
  list.forEach((raw, i) => {
    const f = `${field}[${i}].name`
    const name = c.optObject(raw, `${field}[${i}]`) && raw ? (raw as Record<string, unknown>)['name'] : undefined
    if (typeof name !== 'string') {
      c.add(f, 'Required value: a string')
      return
    }
    if (seen.has(name)) c.add(f, `Duplicate value: ${JSON.stringify(name)}`)
    seen.add(name)
    const e = nameError(name)
    if (e) c.add(f, e)
  })
}

function validateEndpointSlice(c: Check, es: EndpointSlice): void {
  c.meta(es.metadata, dns1123SubdomainError, true)
  const at = es.addressType as unknown
  if (at === undefined || at === '') c.add('addressType', 'Required value: IPv4, IPv6 or FQDN')
  else c.oneOf(at, 'addressType', ['IPv4', 'IPv6', 'FQDN'])
  const eps = es.endpoints as unknown
  if (c.optArray(eps, 'endpoints') && Array.isArray(eps)) {
    if (eps.length > 1000) c.add('endpoints', 'must have at most 1000 items')
    eps.forEach((raw, i) => {
      const f = `endpoints[${i}]`
      if (!c.optObject(raw, f) || !raw) return
      const ep = raw as Record<string, unknown>
      const addrs = ep['addresses']
      if (!Array.isArray(addrs) || addrs.length === 0) c.add(`${f}.addresses`, 'Required value: at least one address')
      else {
        if (addrs.length > 100) c.add(`${f}.addresses`, 'must have at most 100 items')
        addrs.forEach((a, j) => {
          const af = `${f}.addresses[${j}]`
          if (at === 'FQDN') {
            const e = typeof a === 'string' ? dns1123SubdomainError(a) : 'must be a string'
            if (e) c.add(af, e)
            return
          }
          const p = typeof a === 'string' ? parseIP(a) : undefined
          if (!p) {
            c.add(af, `must be a valid ${at === 'IPv6' ? 'IPv6' : 'IPv4'} address, got ${JSON.stringify(a)}`)
            return
          }
          if ((at === 'IPv4' && p.family !== 4) || (at === 'IPv6' && p.family !== 6)) {
            c.add(af, `must be an ${String(at)} address (addressType is ${String(at)}), got ${a as string}`)
            return
          }
          const special = isSpecialEndpointIP(p)
          if (special) c.add(af, special)
        })
      }
      const cond = ep['conditions']
      if (c.optObject(cond, `${f}.conditions`) && cond) {
        for (const k of ['ready', 'serving', 'terminating']) c.optBool((cond as Record<string, unknown>)[k], `${f}.conditions.${k}`)
      }
      const hn = ep['hostname']
      if (hn !== undefined && hn !== null && c.optString(hn, `${f}.hostname`)) {
        const e = dns1123LabelError(hn as string)
        if (e) c.add(`${f}.hostname`, e)
      }
      const nn = ep['nodeName']
      if (nn !== undefined && nn !== null && c.optString(nn, `${f}.nodeName`)) {
        const e = dns1123SubdomainError(nn as string)
        if (e) c.add(`${f}.nodeName`, e)
      }
      c.optObject(ep['targetRef'], `${f}.targetRef`)
      const hints = ep['hints']
      if (c.optObject(hints, `${f}.hints`) && hints) {
        const h = hints as Record<string, unknown>
        checkHintNames(c, h['forZones'], `${f}.hints.forZones`, labelValueError)
        checkHintNames(c, h['forNodes'], `${f}.hints.forNodes`, dns1123SubdomainError)
      }
    })
  }
  const ports = es.ports as unknown
  if (c.optArray(ports, 'ports') && Array.isArray(ports)) {
    if (ports.length > 100) c.add('ports', 'must have at most 100 items')
    const names = new Set<string>()
    ports.forEach((raw, i) => {
      const f = `ports[${i}]`
      if (!c.optObject(raw, f) || !raw) return
      const p = raw as Record<string, unknown>
      const name = p['name'] ?? ''
      if (c.optString(name, `${f}.name`)) {
        if (name !== '') {
          const e = dns1123LabelError(name as string)
          if (e) c.add(`${f}.name`, e)
        }
        if (names.has(name as string)) c.add(`${f}.name`, `Duplicate value ${JSON.stringify(name)}`)
        names.add(name as string)
      }
      c.protocol(p['protocol'], `${f}.protocol`)
      if (p['port'] !== undefined && p['port'] !== null) c.port(p['port'], `${f}.port`, false)
    })
  }
}

/** Problems with one object on its own (no cross-object checks). */
export function validateObject(loaded: LoadedObject, opts: ValidateOptions = {}): Problem[] {
  return checkObject(loaded, opts).problems
}

function checkObject(loaded: LoadedObject, opts: ValidateOptions): Check {
  const obj = loaded.object
  const c = new Check(loaded.file, objectRef(obj))
  switch (obj.kind) {
    case 'Service':
      validateService(c, obj, opts)
      break
    case 'Pod':
      validatePod(c, obj)
      break
    case 'Deployment':
      validateDeployment(c, obj)
      break
    case 'Node':
      validateNode(c, obj)
      break
    case 'Namespace':
      validateNamespace(c, obj)
      break
    case 'EndpointSlice':
      validateEndpointSlice(c, obj)
      break
  }
  return c
}

export interface ValidateResult {
  /** the objects without problems, in input order */
  readonly objects: LoadedObject[]
  readonly problems: Problem[]
  /** settings accepted but ignored (as kube-proxy ignores them), one line each */
  readonly warnings: string[]
}

function where(l: LoadedObject): string {
  return l.file === undefined ? 'earlier' : `in ${l.file}`
}

/**
 * Validates every object, then what the API server checks across objects: one object per kind and name, one Service
 * per cluster IP, one Service per node port. The first object wins; later duplicates are problems and dropped.
 */
export function validateAll(objects: readonly LoadedObject[], opts: ValidateOptions = {}): ValidateResult {
  const valid: LoadedObject[] = []
  const problems: Problem[] = []
  const byName = new Map<string, LoadedObject>()
  const clusterIPs = new Map<string, LoadedObject>()
  const nodePorts = new Map<string, LoadedObject>()
  const warnings: string[] = []
  for (const l of objects) {
    const checked = checkObject(l, opts)
    if (checked.problems.length > 0) {
      problems.push(...checked.problems)
      continue
    }
    warnings.push(...checked.warnings)
    const ref = objectRef(l.object)
    const c = new Check(l.file, ref)
    const prev = byName.get(ref)
    if (prev) {
      c.add('metadata.name', `already exists (defined ${where(prev)})`)
      problems.push(...c.problems)
      continue
    }
    if (l.object.kind === 'Service') {
      const spec = l.object.spec ?? {}
      const ips = [...new Set([spec.clusterIP, ...(spec.clusterIPs ?? [])].filter((x): x is string => typeof x === 'string' && x !== '' && x !== 'None'))]
      for (const ip of ips) {
        const owner = clusterIPs.get(ip)
        if (owner) c.add('spec.clusterIP', `${ip} is already allocated to ${objectRef(owner.object)}`)
      }
      const nps = new Set<number>()
      for (const [i, p] of (spec.ports ?? []).entries()) {
        if (typeof p.nodePort !== 'number' || p.nodePort === 0 || nps.has(p.nodePort)) continue
        nps.add(p.nodePort) // one service may use a node port for both TCP and UDP
        const owner = nodePorts.get(String(p.nodePort))
        if (owner) c.add(`spec.ports[${i}].nodePort`, `${p.nodePort} is already allocated to ${objectRef(owner.object)}`)
      }
      if (c.problems.length > 0) {
        problems.push(...c.problems)
        continue
      }
      for (const ip of ips) clusterIPs.set(ip, l)
      for (const np of nps) nodePorts.set(String(np), l)
    }
    byName.set(ref, l)
    valid.push(l)
  }
  return { objects: valid, problems, warnings }
}

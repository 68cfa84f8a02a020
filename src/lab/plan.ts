// The lab's address plan and naming, and the pure part of `lab up`: which node each pod lands on and which IP it gets.
//
//   node network   172.18.0.0/24 on a bridge in `tundra-<lab>-net`: node k 172.18.0.(10+k), external host .100,
//                  upstream DNS .53
//   pod network    10.100.0.0/16, node k owns 10.100.(84+k).0/24 (node 1 owns 10.100.85.0/24, as in the seed story);
//                  .1 of each block is kept free (a node-side address, like flannel's cni0), pods get .2–.254
//   services       10.96.0.0/12, cluster DNS 10.96.0.10, zone cluster.local
//   IPv6 (a dual-stack lab: some Service asks for IPv6)
//                  pods fd00:10:100::/56, node k owns fd00:10:100:<k in hex>::/64; a pod's IPv6 host part is its IPv4
//                  host number written in decimal digits (10.100.85.37 <-> fd00:10:100:1::37); default route via
//                  fe80::1, a fixed link-local address on the node's cali interface; services fd00:10:96::/112
import { createHash } from 'node:crypto'
import type { Problem } from '../model/cluster'
import { fnv32a } from '../k8s/deployment'
import { cidrContains, formatIP, parseCIDR, parseIP, type ParsedIP } from '../k8s/ip'
import { namespaceOf, objectRef, type Container, type Pod } from '../k8s/types'
import { isNginxImage } from './nginx'

export const LAB = {
  clusterCIDR: '10.100.0.0/16',
  /** third octet of node 1's pod block */
  firstPodSubnet: 85,
  serviceCIDR: '10.96.0.0/12',
  dnsIP: '10.96.0.10',
  zone: 'cluster.local',
  nodeNetwork: '172.18.0.0/24',
  nodeNetworkPrefix: 24,
  externalIP: '172.18.0.100',
  upstreamDnsIP: '172.18.0.53',
  /** the gateway every pod routes through; proxy ARP on the node's cali interface answers for it (Calico's choice) */
  podGateway: '169.254.1.1',
  clusterCIDR6: 'fd00:10:100::/56',
  serviceCIDR6: 'fd00:10:96::/112',
  /** the IPv6 gateway of every pod: a link-local address set (without DAD) on each cali interface of the node */
  podGateway6: 'fe80::1',
  maxNodes: 40,
  bridge: 'br0',
  uplink: 'eth0',
  vxlan: { vni: 4096, port: 4789 },
  tunName: 'tundra0',
  /** annotation on a Pod: its IP; on a Deployment: a comma-separated list, replica i gets entry i */
  podIPAnnotation: 'tundra.dev/pod-ip',
  podIPsAnnotation: 'tundra.dev/pod-ips',
} as const

export type Dataplane = 'tundra' | 'iptables' | 'none'
export const DATAPLANES: readonly Dataplane[] = ['tundra', 'iptables', 'none']

/**
 * Lab names become part of namespace names `tundra-<lab>-<x>`: no '-' (so one lab's prefix never matches another's),
 * and a leading letter (so the netns harness's `tundra-<pid>-` sweep never mistakes a lab for an abandoned topology).
 */
export const LAB_NAME_RE = /^[a-z][a-z0-9]{0,15}$/

export function labNameError(name: string): string | undefined {
  if (LAB_NAME_RE.test(name)) return undefined
  return `lab name ${JSON.stringify(name)} must be 1-16 lowercase letters and digits, starting with a letter`
}

export const labPrefix = (lab: string): string => `tundra-${lab}-`
export const nodeNsName = (lab: string, node: string): string => `${labPrefix(lab)}${node}`
/**
 * Kubernetes namespaces contain no '.', so `<ns>.<pod>` is unambiguous and never equals a node or role name. Pod names
 * may be 253 characters and namespace names are files (NAME_MAX 255): very long ones are cut and made unique by a hash.
 */
export function podNsName(lab: string, namespace: string, pod: string): string {
  const full = `${labPrefix(lab)}${namespace}.${pod}`
  if (full.length <= 128) return full
  return `${full.slice(0, 115)}-${createHash('sha1').update(full).digest('hex').slice(0, 12)}`
}
export const roleNsName = (lab: string, role: 'net' | 'ext' | 'dns'): string => `${labPrefix(lab)}${role}`

/** Calico's host-side interface name: `cali` + the first 11 hex digits of a SHA-1 of the workload (fits IFNAMSIZ). */
export function caliName(namespace: string, pod: string): string {
  return `cali${createHash('sha1').update(`${namespace}.${pod}`).digest('hex').slice(0, 11)}`
}

export const nodeName = (k: number): string => `node${k}`
export const nodeIP = (k: number): string => `172.18.0.${10 + k}`
export const nodePodCIDR = (k: number): string => `10.100.${LAB.firstPodSubnet + k - 1}.0/24`
export const nodePodCIDR6 = (k: number): string => `fd00:10:100:${k.toString(16)}::/64`

export interface PlannedNode {
  readonly index: number
  readonly name: string
  readonly ns: string
  readonly ip: string
  readonly podCIDR: string
  /** the node's IPv6 pod block, in a dual-stack lab */
  readonly podCIDR6?: string
  /** this node's port on the lab bridge, in the net namespace */
  readonly bridgePort: string
  /** labels from a Node object of this name in the lab's manifests (e.g. topology.kubernetes.io/zone) */
  readonly labels?: Readonly<Record<string, string>>
}

export function planNodes(lab: string, count: number, opts: { dualStack?: boolean } = {}): PlannedNode[] {
  const out: PlannedNode[] = []
  for (let k = 1; k <= count; k++) {
    out.push({
      index: k,
      name: nodeName(k),
      ns: nodeNsName(lab, nodeName(k)),
      ip: nodeIP(k),
      podCIDR: nodePodCIDR(k),
      ...(opts.dualStack === true ? { podCIDR6: nodePodCIDR6(k) } : {}),
      bridgePort: `p-${nodeName(k)}`,
    })
  }
  return out
}

export type Runtime = 'nginx' | 'netexec' | 'none'

export interface PlannedContainer {
  readonly name: string
  readonly image: string
  readonly runtime: Runtime
  readonly tcpPorts: readonly number[]
  readonly udpPorts: readonly number[]
}

export interface PlannedPod {
  readonly namespace: string
  readonly name: string
  /** network namespace */
  readonly ns: string
  readonly ip: string
  /** the pod's IPv6 address, in a dual-stack lab */
  readonly ip6?: string
  readonly node: string
  readonly hostVeth: string
  readonly hostname: string
  readonly subdomain?: string
  readonly containers: readonly PlannedContainer[]
}

/** What a container runs in the lab: nginx images a real nginx (port 80 when none is declared), others netexec on their ports. */
export function planContainer(c: Container, warnings: string[], where: string): PlannedContainer {
  const tcp: number[] = []
  const udp: number[] = []
  for (const p of c.ports ?? []) {
    if (typeof p.containerPort !== 'number') continue
    const proto = p.protocol ?? 'TCP'
    if (proto === 'TCP') {
      if (!tcp.includes(p.containerPort)) tcp.push(p.containerPort)
    } else if (proto === 'UDP') {
      if (!udp.includes(p.containerPort)) udp.push(p.containerPort)
    } else warnings.push(`${where}: container ${c.name ?? ''}: ${proto} port ${p.containerPort} is not served in the lab`)
  }
  const image = c.image ?? ''
  const name = c.name ?? ''
  if (isNginxImage(image)) {
    if (udp.length > 0) warnings.push(`${where}: container ${name}: nginx does not serve UDP; port(s) ${udp.join(',')} stay closed`)
    return { name, image, runtime: 'nginx', tcpPorts: tcp.length > 0 ? tcp : [80], udpPorts: [] }
  }
  return { name, image, runtime: tcp.length + udp.length > 0 ? 'netexec' : 'none', tcpPorts: tcp, udpPorts: udp }
}

// ---- IPAM ----

/** The node whose pod block holds `ip`, if any. */
function nodeOfIP(ip: ParsedIP, nodes: readonly PlannedNode[]): PlannedNode | undefined {
  return nodes.find(n => cidrContains(parseCIDR(n.podCIDR)!, ip))
}

/** Address `host` of a node's /24. */
const hostIP = (node: PlannedNode, host: number): string => {
  const bytes = Uint8Array.from(parseCIDR(node.podCIDR)!.ip.bytes)
  bytes[3] = host
  return formatIP({ family: 4, bytes })
}

/** A pod's IPv6 address on a node: the IPv4 host number in decimal digits as the last group (host 37 -> ::37). */
export const hostIP6 = (podCIDR6: string, host: number): string => `${podCIDR6.split('/')[0]!.replace(/::$/, '')}::${host}`

const FIRST_HOST = 2
const LAST_HOST = 254

/**
 * The host part a pod starts probing from: a hash of `<namespace>/<name>`, so a pod keeps its IP whatever else is in
 * the lab (collisions walk upward and wrap).
 */
export function preferredHost(namespace: string, name: string): number {
  return FIRST_HOST + (fnv32a(new TextEncoder().encode(`${namespace}/${name}`)) % (LAST_HOST - FIRST_HOST + 1))
}

export interface PodInput {
  readonly pod: Pod
  readonly file?: string
  /** an address the manifests ask for (annotation on the Pod, or the Deployment's list) and the field that said so */
  readonly wantIP?: { readonly ip: string; readonly field: string; readonly file?: string; readonly object: string }
}

export interface Placement {
  readonly pods: PlannedPod[]
  readonly problems: Problem[]
  readonly warnings: string[]
}

/**
 * Places pods on nodes and gives each an IP. spec.nodeName is honoured; a requested IP places the pod on the node
 * owning it; everything else goes round-robin in creation order. Requested IPs are reserved before any hashing.
 */
export function placePods(
  lab: string,
  nodes: readonly PlannedNode[],
  inputs: readonly PodInput[],
  existing: readonly { readonly namespace: string; readonly name: string; readonly ip: string; readonly node: string }[] = [],
): Placement {
  const problems: Problem[] = []
  const warnings: string[] = []
  const byName = new Map(nodes.map(n => [n.name, n]))
  const used = new Map<string, Set<number>>(nodes.map(n => [n.name, new Set<number>()]))
  const taken = new Map<string, string>()
  // pods already running (`lab apply`): their addresses are taken, and round-robin goes on where it stands
  for (const e of existing) {
    used.get(e.node)?.add(parseIP(e.ip)?.bytes[3] ?? 0)
    taken.set(e.ip, `Pod ${e.namespace}/${e.name}`)
  }
  const chosen: { node: PlannedNode; ip?: string }[] = []
  let rr = existing.length
  for (const input of inputs) {
    const pod = input.pod
    const ref = objectRef(pod)
    const at = input.file === undefined ? {} : { file: input.file }
    let node: PlannedNode | undefined
    const wanted = pod.spec?.nodeName
    if (wanted !== undefined && wanted !== '') {
      node = byName.get(wanted)
      if (!node) {
        problems.push({
          ...at,
          object: ref,
          field: 'spec.nodeName',
          reason: `no node ${JSON.stringify(wanted)} in this lab (nodes: ${nodes.map(n => n.name).join(', ')})`,
        })
        chosen.push({ node: nodes[0]! })
        continue
      }
    }
    let ip: string | undefined
    const w = input.wantIP
    if (w) {
      const wat = w.file === undefined ? {} : { file: w.file }
      const parsed = parseIP(w.ip)
      const owner = parsed?.family === 4 ? nodeOfIP(parsed, nodes) : undefined
      const host = parsed?.bytes[3] ?? 0
      if (parsed?.family !== 4) problems.push({ ...wat, object: w.object, field: w.field, reason: `${JSON.stringify(w.ip)} is not an IPv4 address` })
      else if (!owner)
        problems.push({
          ...wat,
          object: w.object,
          field: w.field,
          reason: `${w.ip} is in no node's pod CIDR (${nodes.map(n => `${n.name} ${n.podCIDR}`).join(', ')})`,
        })
      else if (host < FIRST_HOST || host > LAST_HOST)
        problems.push({ ...wat, object: w.object, field: w.field, reason: `${w.ip}: pods get .${FIRST_HOST}-.${LAST_HOST} of their node's /24` })
      else if (node && node !== owner)
        problems.push({
          ...wat,
          object: w.object,
          field: w.field,
          reason: `${w.ip} belongs to ${owner.name} (${owner.podCIDR}) but spec.nodeName is ${node.name}`,
        })
      else if (taken.has(w.ip)) problems.push({ ...wat, object: w.object, field: w.field, reason: `${w.ip} is already requested by ${taken.get(w.ip)}` })
      else {
        node = owner
        ip = w.ip
        taken.set(w.ip, ref)
        used.get(owner.name)!.add(host)
      }
    }
    if (!node) node = nodes[rr++ % nodes.length]!
    chosen.push(ip === undefined ? { node } : { node, ip })
  }
  const pods: PlannedPod[] = []
  inputs.forEach((input, i) => {
    const pod = input.pod
    const c = chosen[i]!
    const namespace = namespaceOf(pod)
    const name = pod.metadata?.name ?? ''
    let ip = c.ip
    if (ip === undefined) {
      const free = used.get(c.node.name)!
      const span = LAST_HOST - FIRST_HOST + 1
      const start = preferredHost(namespace, name)
      for (let k = 0; k < span; k++) {
        const host = FIRST_HOST + ((start - FIRST_HOST + k) % span)
        if (!free.has(host)) {
          free.add(host)
          ip = hostIP(c.node, host)
          break
        }
      }
      if (ip === undefined) {
        problems.push({
          ...(input.file === undefined ? {} : { file: input.file }),
          object: objectRef(pod),
          field: 'spec.nodeName',
          reason: `${c.node.name} has no free pod address left in ${c.node.podCIDR}`,
        })
        return
      }
    }
    const where = `${input.file === undefined ? '' : `${input.file}: `}${objectRef(pod)}`
    const hostname = pod.spec?.hostname !== undefined && pod.spec.hostname !== '' ? pod.spec.hostname : name.slice(0, 63)
    const subdomain = pod.spec?.subdomain
    const ip6 = c.node.podCIDR6 === undefined ? undefined : hostIP6(c.node.podCIDR6, parseIP(ip)!.bytes[3]!)
    pods.push({
      namespace,
      name,
      ns: podNsName(lab, namespace, name),
      ip,
      ...(ip6 === undefined ? {} : { ip6 }),
      node: c.node.name,
      hostVeth: caliName(namespace, name),
      hostname,
      ...(subdomain !== undefined && subdomain !== '' ? { subdomain } : {}),
      containers: (pod.spec?.containers ?? []).map(ctr => planContainer(ctr, warnings, where)),
    })
  })
  return { pods, problems, warnings }
}

/** A pod's /etc/hosts, as kubelet writes it (pkg/kubelet/kubelet_pods.go managedHostsFileContent). */
export function podHostsFile(p: Pick<PlannedPod, 'ip' | 'hostname' | 'namespace'> & { ip6?: string; subdomain?: string }, zone: string = LAB.zone): string {
  const names = p.subdomain !== undefined ? `${p.hostname}.${p.subdomain}.${p.namespace}.svc.${zone}\t${p.hostname}` : p.hostname
  const lines = [
    '# Kubernetes-managed hosts file.',
    '127.0.0.1\tlocalhost',
    '::1\tlocalhost ip6-localhost ip6-loopback',
    'fe00::0\tip6-localnet',
    'fe00::0\tip6-mcastprefix',
    'fe00::1\tip6-allnodes',
    'fe00::2\tip6-allrouters',
    `${p.ip}\t${names}`,
    ...(p.ip6 === undefined ? [] : [`${p.ip6}\t${names}`]),
  ]
  return lines.join('\n') + '\n'
}

/** A pod's /etc/resolv.conf under ClusterFirst DNS policy. */
export function podResolvConf(namespace: string, dnsIP: string = LAB.dnsIP, zone: string = LAB.zone): string {
  return `search ${namespace}.svc.${zone} svc.${zone} ${zone}\nnameserver ${dnsIP}\noptions ndots:5\n`
}

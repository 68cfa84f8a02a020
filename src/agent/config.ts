// What one node's tundra agent needs to run: written by `tundra lab up` (or a user), read by `tundra agent`.
import type { ConnectConfig } from '../nat/failover'

import type { SchedulerName } from '../nat/sched'

export interface VxlanPeer {
  readonly node: string
  /** the peer node's address on the node network */
  readonly ip: string
  readonly podCIDR: string
}

/** Bounds of the tun settings: the config file and the TUNDRA_* overrides (tunOverrides) are checked against them. */
const TUN_BOUNDS = {
  busyPollUs: [0, 1_000_000],
  queues: [1, 64],
  packetThreads: [1, 64],
} as const satisfies Record<string, readonly [number, number]>

/** The TUNDRA_* environment overrides of `tun` (for measuring one setting against another without editing a config). */
export interface TunOverrides {
  readonly io?: 'thread' | 'inline'
  readonly busyPollUs?: number
  readonly queues?: number
  readonly packetThreads?: number
}

/** Why `v` is no value for tun.<k> (`shown` as it was given), or undefined when it is one. */
export function tunValueError(k: keyof typeof TUN_BOUNDS, v: unknown, shown: unknown = v): string | undefined {
  const [lo, hi] = TUN_BOUNDS[k]
  if (Number.isInteger(v) && (v as number) >= lo && (v as number) <= hi) return undefined
  return `expected an integer ${lo}..${hi}${k === 'busyPollUs' ? ' (µs)' : ''}, got ${JSON.stringify(shown)}`
}

/** Why `v` is no value for tun.io, or undefined when it is one (or absent). */
export function tunIoError(v: unknown): string | undefined {
  return v === undefined || v === 'inline' || v === 'thread' ? undefined : `expected "inline" or "thread", got ${JSON.stringify(v)}`
}

/**
 * TUNDRA_TUN_IO, TUNDRA_BUSY_POLL_US, TUNDRA_TUN_QUEUES and TUNDRA_PACKET_THREADS, checked as the config file's fields
 * are: a value out of range is refused with the variable's name, never ignored.
 */
export function tunOverrides(env: Readonly<Record<string, string | undefined>> = process.env): TunOverrides {
  const int = (name: string, k: keyof typeof TUN_BOUNDS): number | undefined => {
    const v = env[name]
    if (v === undefined) return undefined
    const n = v.trim() === '' ? Number.NaN : Number(v)
    const err = tunValueError(k, n, v)
    if (err !== undefined) throw new Error(`${name}: ${err}`)
    return n
  }
  const io = env['TUNDRA_TUN_IO']
  const ioErr = tunIoError(io)
  if (ioErr !== undefined) throw new Error(`TUNDRA_TUN_IO: ${ioErr}`)
  const busyPollUs = int('TUNDRA_BUSY_POLL_US', 'busyPollUs')
  const queues = int('TUNDRA_TUN_QUEUES', 'queues')
  const packetThreads = int('TUNDRA_PACKET_THREADS', 'packetThreads')
  return {
    ...(io !== undefined ? { io: io as 'inline' | 'thread' } : {}),
    ...(busyPollUs !== undefined ? { busyPollUs } : {}),
    ...(queues !== undefined ? { queues } : {}),
    ...(packetThreads !== undefined ? { packetThreads } : {}),
  }
}

export interface AgentConfig {
  readonly node: {
    readonly name: string
    /** this node's address on the node network (NodePorts answer here; VXLAN source) */
    readonly ip: string
    readonly podCIDR: string
    /** interface on the node network (e.g. eth0): its ingress is steered into the TUN */
    readonly uplink: string
    /**
     * the node's other local addresses (after ip): what nodePortAddresses CIDRs select from, as kube-proxy selects
     * interface addresses; traffic from them is the node's own
     */
    readonly addresses?: readonly string[]
  }
  /** all pods of the cluster, e.g. 10.100.0.0/16 */
  readonly clusterCIDR: string
  readonly serviceCIDR: string
  /** dual-stack: all IPv6 pods of the cluster (e.g. fd00:10:100::/56); the node is wired for IPv6 when set */
  readonly clusterCIDR6?: string
  /** dual-stack: the IPv6 service CIDR (e.g. fd00:10:96::/112), routed into the TUN */
  readonly serviceCIDR6?: string
  /** manifest files/dirs: Services, EndpointSlices, Nodes, Pods (the lab writes computed EndpointSlices here) */
  readonly manifests: readonly string[]
  readonly dns: {
    readonly ip: string
    readonly zone: string
    readonly upstreams: readonly string[]
    readonly ttl?: number
  }
  readonly tun: {
    readonly name: string
    readonly vnetHdr: boolean
    /** IFF_MULTI_QUEUE queues; default 1 inline, 2 with reader threads (one thread is the limit at 4 streams) */
    readonly queues?: number
    /** who reads the TUN: the JS thread's event loop ('inline', default) or a native thread per queue (TunOptions.io) */
    readonly io?: 'thread' | 'inline'
    /** io 'inline': µs to keep polling after the last packet before sleeping (TunOptions.busyPollUs; default 100) */
    readonly busyPollUs?: number
    /**
     * packet threads, each reading its own TUN queue inline over a shared conntrack (default 1: the process's main
     * thread reads every packet). More than 1 needs as many queues (queues defaults to this then).
     */
    readonly packetThreads?: number
  }
  readonly vxlan: {
    readonly vni: number
    readonly port: number
    readonly peers: readonly VxlanPeer[]
  }
  /** unix socket for `tundra dump|trace|conntrack|services` against this agent */
  readonly control: string
  /** the live web view (src/web): off unless set; loopback only unless allowRemote */
  readonly web?: { readonly addr: string; readonly allowRemote?: boolean }
  readonly nodePortAddresses?: readonly string[]
  /** the kube-proxy mode whose NodePort rules tundra follows (what an empty nodePortAddresses means); default iptables */
  readonly proxyMode?: 'iptables' | 'nftables'
  /** iptables.localhostNodePorts: node processes reach NodePorts on 127.0.0.1 (IPv4, iptables mode); default false */
  readonly localhostNodePorts?: boolean
  /** kube-proxy's masqueradeAll: SNAT every connection to a ClusterIP */
  readonly masqueradeAll?: boolean
  readonly lb?: 'random' | 'maglev'
  /** endpoint scheduler of Services without a tundra.io/scheduler label (src/nat/sched.ts); default random (mh with lb maglev) */
  readonly scheduler?: SchedulerName
  /** kube-proxy's IPVS mode: graceful termination of leaving endpoints, and excludeCIDRs never touched */
  readonly ipvs?: { readonly excludeCIDRs?: readonly string[] }
  readonly icmp?: 'reply' | 'reject' | 'drop'
  /** ICMP errors tundra sends (port/host unreachable, time exceeded): at most `burst` at once, refilled at `perSecond`
   *  (default 1000 and 50, Linux's icmp_msgs_per_sec / icmp_msgs_burst); perSecond 0 sends none after the burst */
  readonly icmpRateLimit?: { readonly perSecond: number; readonly burst: number }
  /** conntrack state kept across restarts: written on graceful stop and every intervalSeconds (default: beside the control socket, 10 s) */
  readonly snapshot?: { readonly path?: string; readonly intervalSeconds?: number }
  /** connect-time failover (off by default; nat/failover.ts ConnectConfig, durations in seconds) */
  readonly failover?: ConnectConfig['failover']
  /** passive outlier ejection (off by default) */
  readonly outlierEjection?: ConnectConfig['outlierEjection']
  /** per-backend golden signals (on by default) */
  readonly signals?: ConnectConfig['signals']
}

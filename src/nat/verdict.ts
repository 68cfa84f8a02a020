// The NAT step's outcomes, defined once: the action codes the dataplane dispatches on and the counters behind them.
// Name arrays (metrics, capture) are generated from these objects so they cannot drift.

/**
 * What process() decided about a packet:
 *   PASS     not service traffic: untouched
 *   FORWARD  rewritten in place; route by the (new) destination
 *   REPLY    an answer was written in place (echo reply from a ClusterIP); its IP header has its length; send it back
 *   REJECT   untouched; call writeReject and send the ICMP port unreachable it writes
 *   DROP     discard; the reason is counted in NatEngine.counters (NatStat)
 */
export const NatAction = { PASS: 0, FORWARD: 1, REPLY: 2, REJECT: 3, DROP: 4 } as const
export type NatActionValue = (typeof NatAction)[keyof typeof NatAction]

/** Lower-case names of a { NAME: index } object, by index (throws if the indexes are not 0..n-1, each once). */
function namesOf(o: Readonly<Record<string, number>>): readonly string[] {
  const out: string[] = []
  for (const [k, v] of Object.entries(o)) {
    if (out[v] !== undefined) throw new Error(`${k} and ${out[v]} share index ${v}`)
    out[v] = k.toLowerCase()
  }
  for (let i = 0; i < out.length; i++) if (out[i] === undefined) throw new Error(`no name for index ${i}`)
  return Object.freeze(out)
}

/** Verdict names by NatAction code ('pass', 'forward', ...). */
export const NAT_ACTION_NAMES = namesOf(NatAction)

/** Indexes of NatEngine.counters. */
export const NatStat = {
  /** not service traffic */
  PASS: 0,
  /** new connections translated */
  NEW: 1,
  /** packets of tracked connections translated (either direction) */
  TRACKED: 2,
  /** ICMP errors about tracked connections translated */
  ICMP_ERROR: 3,
  /** non-first fragments translated */
  FRAGMENT: 4,
  /** echo requests to a ClusterIP answered */
  ECHO_REPLY: 5,
  /** new connections masqueraded */
  MASQUERADE: 6,
  /** of which because client == endpoint */
  HAIRPIN: 7,
  /** new connections that followed a ClientIP affinity pin */
  AFFINITY_HIT: 8,
  /** new connections whose reply tuple clashed and got a new source port */
  PORT_CLASH: 9,
  /** packets fitting no TCP state (dropped or passed per the invalid policy) */
  INVALID: 10,
  REJECT_NO_ENDPOINTS: 11,
  /** a ClusterIP on a port (or protocol) it does not serve */
  REJECT_NO_PORT: 12,
  /** echo request to a ClusterIP with icmpMode reject */
  REJECT_ICMP: 13,
  DROP_INVALID: 14,
  /** externalTrafficPolicy/internalTrafficPolicy Local and no endpoint on this node */
  DROP_NO_LOCAL_ENDPOINTS: 15,
  /** LoadBalancer traffic from outside loadBalancerSourceRanges */
  DROP_SOURCE_RANGE: 16,
  DROP_CONNTRACK_FULL: 17,
  /** no free masquerade source port toward that endpoint */
  DROP_NO_SNAT_PORT: 18,
  /** a fragment to a ClusterIP whose first fragment was not seen, or a fragmented echo request */
  DROP_FRAGMENT: 19,
  /** echo request to a ClusterIP with icmpMode drop */
  DROP_ICMP: 20,
  /** connections removed because their endpoint went away */
  STALE_FLUSHED: 21,
  RESET_QUEUED: 22,
  RESET_SENT: 23,
  /** resets not queued because the queue was full */
  RESET_OVERFLOW: 24,
  /** mid-stream TCP (a bare ACK with no entry) picked up as ESTABLISHED, like nf_conntrack_tcp_loose */
  LOOSE_PICKUP: 25,
  /** a reply from a serving endpoint with no entry re-adopted through the reverse index (entry lost in a crash) */
  REPLY_PICKUP: 26,
  /** a NodePort on 127.0.0.0/8 from a source that is not this node (localhostNodePorts) */
  DROP_LOCALHOST: 27,
  /** a closed translated connection removed because a new direct connection took its reply tuple (port reuse) */
  CLASH_EVICTED: 28,
  /** a direct connection whose reply tuple an open translated connection holds: its replies follow the old entry */
  CLASH_OPEN: 29,
} as const

/** 'pass', 'new', ... 'drop_no_local_endpoints', ...: metric names by NatStat index. */
export const NAT_STAT_NAMES: readonly string[] = namesOf(NatStat)

/** Why a new connection was masqueraded (0: it was not). */
export const MasqReason = { NONE: 0, MASQUERADE_ALL: 1, OFF_CLUSTER: 2, EXTERNAL_CLUSTER_POLICY: 3, LOCAL_SOURCE: 4, HAIRPIN: 5 } as const
export const MASQ_REASON_NAMES: readonly string[] = [
  'none',
  'masquerade-all',
  'source outside the cluster CIDRs',
  'external traffic with externalTrafficPolicy Cluster',
  'traffic from this node to an externalTrafficPolicy Local frontend',
  'hairpin (client is the chosen endpoint)',
]

// kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go), written once: which endpoints of a service port a
// connection may use. The NAT compile (nat/compile.ts) and the iptables/nftables renderers
// (kubeproxy/serviceports.ts) both call it, so tundra's dataplane and the rules it would render cannot drift.
//
// Topology (topologyModeFromHints): the EndpointSlice controller hints endpoints for zones (trafficDistribution
// PreferClose / PreferSameZone, topology-mode Auto) and nodes (PreferSameNode). When every ready endpoint of a port
// carries a node hint and one is hinted for this node, the cluster-wide choice keeps only those; failing that, the
// same with zone hints and this node's zone (its topology.kubernetes.io/zone label). Local traffic policy and the
// serving-terminating fallback ignore hints, as kube-proxy does.

import type { Cluster } from './cluster'

/** An endpoint's condition bits as usableEndpoints reads them. */
const EpCond = {
  READY: 1,
  SERVING: 2,
  TERMINATING: 4,
  LOCAL: 8,
  /** the endpoint has zone hints / one of them is this node's zone */
  ZONE_HINTS: 16,
  FOR_ZONE: 32,
  /** the endpoint has node hints / one of them is this node */
  NODE_HINTS: 64,
  FOR_NODE: 128,
} as const

/** Every bit hintBits may set: what a caller that stores hint bits beside its own flags keeps of them. */
export const HINT_BITS = EpCond.ZONE_HINTS | EpCond.FOR_ZONE | EpCond.NODE_HINTS | EpCond.FOR_NODE

/** Condition bits of an endpoint; `hints` from hintBits. */
export function epCond(ready: boolean, serving: boolean, terminating: boolean, local: boolean, hints = 0): number {
  return (ready ? EpCond.READY : 0) | (serving ? EpCond.SERVING : 0) | (terminating ? EpCond.TERMINATING : 0) | (local ? EpCond.LOCAL : 0) | hints
}

/** An endpoint's topology hint bits for the node `nodeName` in zone `zone` ('' when the node has no zone label). */
export function hintBits(zoneHints: readonly string[] | undefined, nodeHints: readonly string[] | undefined, zone: string, nodeName: string): number {
  let b = 0
  if (zoneHints !== undefined && zoneHints.length > 0) b |= zoneHints.includes(zone) ? EpCond.ZONE_HINTS | EpCond.FOR_ZONE : EpCond.ZONE_HINTS
  if (nodeHints !== undefined && nodeHints.length > 0) b |= nodeHints.includes(nodeName) ? EpCond.NODE_HINTS | EpCond.FOR_NODE : EpCond.NODE_HINTS
  return b
}

/** The zone of node `nodeName` (its topology.kubernetes.io/zone label), '' when unknown: what hints are matched to. */
export function nodeZone(cluster: Cluster, nodeName: string): string {
  for (const n of cluster.nodes) if (n.name === nodeName) return n.zone ?? ''
  return ''
}

/** How hints narrow a port's cluster-wide choice: kube-proxy's topology modes ('' none). */
export type TopologyMode = '' | 'PreferSameNode' | 'PreferSameZone'

/** topologyModeFromHints over positions 0..n-1, by their condition bits (as usableEndpoints applies it). */
export function topologyMode(n: number, cond: (j: number) => number): TopologyMode {
  const bit = topologyBit(n, cond)
  return bit === EpCond.FOR_NODE ? 'PreferSameNode' : bit === EpCond.FOR_ZONE ? 'PreferSameZone' : ''
}

/**
 * topologyModeFromHints over positions 0..n-1: the hint bit every chosen ready endpoint must carry (FOR_NODE,
 * FOR_ZONE), or 0 when topology does not narrow the choice.
 */
function topologyBit(n: number, cond: (j: number) => number): number {
  let ready = false
  let allNode = true
  let forNode = false
  let allZone = true
  let forZone = false
  for (let j = 0; j < n; j++) {
    const c = cond(j)
    if ((c & EpCond.READY) === 0) continue
    ready = true
    if ((c & EpCond.NODE_HINTS) === 0) allNode = false
    else if ((c & EpCond.FOR_NODE) !== 0) forNode = true
    if ((c & EpCond.ZONE_HINTS) === 0) allZone = false
    else if ((c & EpCond.FOR_ZONE) !== 0) forZone = true
  }
  if (!ready) return 0
  if (allNode && forNode) return EpCond.FOR_NODE
  if (allZone && forZone) return EpCond.FOR_ZONE
  return 0
}

/**
 * The usable endpoints among positions 0..n-1, by their condition bits `cond(j)`: the ready ones (the cluster-wide
 * choice narrowed by topology hints, above); when none is ready, those serving and terminating (never
 * serving=false). `localOnly` keeps only local endpoints, the fallback then judged among them. Writes the positions
 * into `out`; returns how many.
 */
export function usableEndpoints(n: number, cond: (j: number) => number, localOnly: boolean, out: { [j: number]: number }): number {
  const local = localOnly ? EpCond.LOCAL : 0
  const need = localOnly ? local : topologyBit(n, cond)
  let k = 0
  for (let j = 0; j < n; j++) {
    const c = cond(j)
    if ((c & EpCond.READY) !== 0 && (c & need) === need) out[k++] = j
  }
  if (k > 0) return k
  const fallback = EpCond.SERVING | EpCond.TERMINATING | local
  for (let j = 0; j < n; j++) if ((cond(j) & fallback) === fallback) out[k++] = j
  return k
}

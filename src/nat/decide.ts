// What happens to a new connection to a service, decided once: the engine's hot path and explain (tundra trace)
// both call these functions over the installed image (state.ts), so they cannot disagree.
//
//   frontendOf(fam, k, proto, dport) -> NO_FRONTEND | svcPortId * 4 + kind     the frontend map
//   isVip(fam, k, off) -> boolean                                                 a ClusterIP (any port)
//   decide(tb, fam, v, k, out) -> Decision                                        endpoint set, masquerade, verdict
//   isHairpin(set, idx, k) -> boolean                                             client == chosen endpoint
//
// `k` holds the tuple as conntrack keys it: source address words at 0, destination words at aw. The rules are
// kube-proxy's KUBE-SVC / KUBE-EXT / KUBE-FW chains: ClusterIP traffic uses the internalTrafficPolicy set and is
// masqueraded from outside the cluster CIDRs (or with masqueradeAll); external frontends check
// loadBalancerSourceRanges, then externalTrafficPolicy Local short-circuits pod and node sources to the
// cluster-wide set (the node's masqueraded) and keeps the rest on this node's endpoints; Cluster masquerades. An
// empty set drops when endpoints exist elsewhere and rejects when there are none at all. Nothing here allocates.

import type { Family } from '../model/cluster'
import { cidrContains, inAddrList, inCidrList } from './addr'
import type { NatTable, SvcPort } from './compile'
import { FrontendKind } from './compile'
import type { ConntrackEntry } from './ctview'
import { REC_WORDS, Rec, RecFlag, SetW, natImage } from './image'
import type { SetView } from './state'
import { Fam, Tables } from './state'
import { MasqReason } from './verdict'

/** The live state explain reports (the engine has it; a control thread asks the packet thread for it). */
export interface ExplainLive {
  findConntrack(
    family: Family,
    proto: number,
    src: string,
    dst: string,
    sport: number,
    dport: number,
    now: number,
  ): { entry: ConntrackEntry; direction: 'original' | 'reply' } | undefined
  findAffinity(sp: SvcPort, client: string, now: number): { endpoint: string; expiresIn: number } | undefined
}

const installed = new WeakMap<NatTable, Tables>()

/**
 * `table` installed as the engine would install it, for deciding off the packet path (explain, trace): built once
 * per table (O(table)), then each decision costs what it costs the engine.
 */
export function decisionTables(table: NatTable): Tables {
  let tb = installed.get(table)
  if (tb === undefined) {
    tb = new Tables(new Fam(4, 1, {}, 0), new Fam(6, 1, {}, 0))
    const img = natImage(table)
    tb.check(img)
    tb.apply(img)
    installed.set(table, tb)
  }
  return tb
}

/** frontendOf's answer when no frontend matches. */
export const NO_FRONTEND = 0xffffffff

/** decide's verdicts. */
export const Decision = {
  /** translate to an endpoint of the set in Decided.which */
  DNAT: 0,
  /** LoadBalancer traffic from outside loadBalancerSourceRanges */
  DROP_SOURCE_RANGE: 1,
  /** endpoints exist, none on this node (a Local policy) */
  DROP_NO_LOCAL_ENDPOINTS: 2,
  /** no usable endpoint anywhere */
  REJECT_NO_ENDPOINTS: 3,
  /** a NodePort on 127.0.0.0/8 from a source that is not this node (kube-proxy's "block incoming localnet") */
  DROP_LOCALHOST: 4,
} as const

/** 127.0.0.0/8: the top byte of an IPv4 address word (localhostNodePorts frontends live here) */
const LOOPBACK_NET = 127
export type DecisionValue = (typeof Decision)[keyof typeof Decision]

/** Why decide chose its endpoint set. */
export const SetReason = {
  /** ClusterIP: the internalTrafficPolicy set */
  INTERNAL: 0,
  /** external frontend, externalTrafficPolicy Cluster */
  EXTERNAL_CLUSTER: 1,
  /** externalTrafficPolicy Local: endpoints on this node */
  EXTERNAL_LOCAL: 2,
  /** externalTrafficPolicy Local, but the source is a pod: cluster-wide endpoints */
  LOCAL_FROM_POD: 3,
  /** externalTrafficPolicy Local, but the source is this node: cluster-wide endpoints, masqueraded */
  LOCAL_FROM_NODE: 4,
} as const

/** decide's scratch answer (one per caller, reused). */
export class Decided {
  /** service port id (record) */
  id = 0
  /** FrontendKind */
  kind = 0
  /** Rec.*_SET word of the chosen endpoint set */
  which: number = Rec.CLUSTER_SET
  /** MasqReason before hairpin (which depends on the endpoint picked) */
  masq: number = MasqReason.NONE
  /** SetReason */
  reason: number = SetReason.INTERNAL
  /** endpoints in the chosen set */
  count = 0
}

/** The frontend map's value for (dst, proto, dport): svcPortId * 4 + FrontendKind, or NO_FRONTEND. */
export function frontendOf(fam: Fam, k: Uint32Array, proto: number, dport: number): number {
  const fe = fam.fe
  const aw = fam.aw
  for (let i = 0; i < aw; i++) fe.key[i] = k[aw + i]!
  fe.key[aw] = ((proto << 16) | dport) >>> 0
  return fe.get(NO_FRONTEND)
}

/** Whether the address at (k, off) is a ClusterIP (kube-proxy rejects what no service port of it takes). */
export function isVip(fam: Fam, k: Uint32Array, off: number): boolean {
  const vip = fam.vip
  const aw = fam.aw
  for (let i = 0; i < aw; i++) vip.key[i] = k[off + i]!
  return vip.find() >= 0
}

/** Decides the endpoint set, masquerade and verdict of a new connection whose frontend value is `v`. */
export function decide(tb: Tables, fam: Fam, v: number, k: Uint32Array, out: Decided): DecisionValue {
  const id = v >>> 2
  const kind = v & 3
  const aw = fam.aw
  const rec = tb.rec
  const r = id * REC_WORDS
  out.id = id
  out.kind = kind
  let which: number
  let masq: number = MasqReason.NONE
  let reason: number
  const fromCluster = fam.hasClusterCidrs && inCidrList(fam.clusterCidrs, aw, k, 0)
  if (kind === FrontendKind.CLUSTER_IP) {
    which = Rec.INTERNAL_SET
    reason = SetReason.INTERNAL
    if (tb.masqueradeAll) masq = MasqReason.MASQUERADE_ALL
    else if (fam.hasClusterCidrs && !fromCluster) masq = MasqReason.OFF_CLUSTER
  } else {
    // localhostNodePorts: only the node's own processes reach a NodePort on loopback (their connections leave with
    // the node's address as source, and are masqueraded below like any node-sourced external traffic).
    if (aw === 1 && kind === FrontendKind.NODE_PORT && k[1]! >>> 24 === LOOPBACK_NET && !inAddrList(fam.nodeAddrs, aw, k, 0)) {
      out.which = Rec.CLUSTER_SET
      out.masq = MasqReason.NONE
      out.reason = SetReason.EXTERNAL_CLUSTER
      out.count = 0
      return Decision.DROP_LOCALHOST
    }
    if (kind === FrontendKind.LOAD_BALANCER && rec[r + Rec.RANGES_LEN]! > 0 && !lbSourceAllowed(tb, r, k, aw)) {
      out.which = Rec.CLUSTER_SET
      out.masq = MasqReason.NONE
      out.reason = SetReason.EXTERNAL_CLUSTER
      out.count = 0
      return Decision.DROP_SOURCE_RANGE
    }
    if ((rec[r + Rec.FLAGS]! & RecFlag.EXTERNAL_LOCAL) !== 0) {
      if (fromCluster) {
        which = Rec.CLUSTER_SET
        reason = SetReason.LOCAL_FROM_POD
      } else if (inAddrList(fam.nodeAddrs, aw, k, 0)) {
        which = Rec.CLUSTER_SET
        reason = SetReason.LOCAL_FROM_NODE
        masq = MasqReason.LOCAL_SOURCE
      } else {
        which = Rec.LOCAL_SET
        reason = SetReason.EXTERNAL_LOCAL
      }
    } else {
      which = Rec.CLUSTER_SET
      reason = SetReason.EXTERNAL_CLUSTER
      masq = MasqReason.EXTERNAL_CLUSTER_POLICY
    }
  }
  out.which = which
  out.masq = masq
  out.reason = reason
  const n = rec[r + which + SetW.COUNT]!
  out.count = n
  if (n > 0) return Decision.DNAT
  // Endpoints exist, just none here: kube-proxy drops. None at all: it rejects.
  return rec[r + Rec.CLUSTER_SET + SetW.COUNT]! > 0 ? Decision.DROP_NO_LOCAL_ENDPOINTS : Decision.REJECT_NO_ENDPOINTS
}

/** loadBalancerSourceRanges, or one of the LB's own addresses (allowFromNode), admits the client in k. */
function lbSourceAllowed(tb: Tables, r: number, k: Uint32Array, aw: number): boolean {
  const rec = tb.rec
  const data = tb.data[rec[r + Rec.CHUNK]!]!
  const stride = aw + 1
  for (let o = rec[r + Rec.RANGES]!, end = o + rec[r + Rec.RANGES_LEN]!; o < end; o += stride) {
    if (cidrContains(data, o, aw, k, 0)) return true
  }
  for (let o = rec[r + Rec.ALLOWED]!, end = o + rec[r + Rec.ALLOWED_LEN]!; o < end; o += aw) {
    let same = true
    for (let i = 0; i < aw; i++)
      if (data[o + i] !== k[i]) {
        same = false
        break
      }
    if (same) return true
  }
  return false
}

/** Whether endpoint idx of `set` is the client (source words at k[0..aw)): choosing it masquerades. */
export function isHairpin(set: SetView, idx: number, k: Uint32Array): boolean {
  const d = set.data
  const o = set.off + idx * (set.aw + 1)
  for (let i = 0; i < set.aw; i++) if (d[o + i] !== k[i]) return false
  return true
}

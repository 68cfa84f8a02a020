// kube-proxy's CategorizeEndpoints (pkg/proxy/topology.go), written once: which endpoints of a service port a
// connection may use. The NAT compile (nat/compile.ts) and the iptables/nftables renderers
// (kubeproxy/serviceports.ts) both call it, so tundra's dataplane and the rules it would render cannot drift.

/** An endpoint's condition bits as usableEndpoints reads them. */
const EpCond = { READY: 1, SERVING: 2, TERMINATING: 4, LOCAL: 8 } as const

/** Condition bits of an endpoint. */
export function epCond(ready: boolean, serving: boolean, terminating: boolean, local: boolean): number {
  return (ready ? EpCond.READY : 0) | (serving ? EpCond.SERVING : 0) | (terminating ? EpCond.TERMINATING : 0) | (local ? EpCond.LOCAL : 0)
}

/**
 * The usable endpoints among positions 0..n-1, by their condition bits `cond(j)`: the ready ones; when none is
 * ready, those serving and terminating (never serving=false). `localOnly` keeps only local endpoints, the fallback
 * then judged among them. Writes the positions into `out`; returns how many.
 */
export function usableEndpoints(n: number, cond: (j: number) => number, localOnly: boolean, out: { [j: number]: number }): number {
  const need = localOnly ? EpCond.LOCAL : 0
  let k = 0
  for (let j = 0; j < n; j++) {
    const c = cond(j)
    if ((c & EpCond.READY) !== 0 && (c & need) === need) out[k++] = j
  }
  if (k > 0) return k
  const fallback = EpCond.SERVING | EpCond.TERMINATING | need
  for (let j = 0; j < n; j++) if ((cond(j) & fallback) === fallback) out[k++] = j
  return k
}

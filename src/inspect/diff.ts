// `tundra diff`: shadow mode for a migration. A node's live kube-proxy ruleset and tundra's rendering of the same
// cluster (the rules `tundra dump` prints, in the same mode and family) are both read into the semantic model of
// kubeproxy/parse-model.ts by the same parser, and compared per service port; only differences are reported, each
// naming the kube-proxy chain it concerns.
import type { Family } from '../model/cluster'
import { dumpRules, type DumpOptions } from '../kubeproxy/dump'
import { parseRuleset } from '../kubeproxy/parse'
import type { RuleDispatch, RuleMode, RuleModel, RuleServicePort } from '../kubeproxy/parse-model'
import type { DataplaneView } from '../agent/view'
import { dumpOptions } from './model'

export interface Difference {
  /** `ns/name:port/proto`, or '' for a node-wide setting */
  readonly servicePort: string
  /** the kube-proxy chain the difference is in (KUBE-SVC-…, KUBE-SEP-…, service-…, endpoint-…, KUBE-MARK-MASQ) */
  readonly chain: string
  /** what differs, e.g. `endpoint 10.244.1.7:80` */
  readonly what: string
  /** the live rules' value; absent = missing in the live rules */
  readonly live?: string
  /** tundra's value; absent = not in tundra's rules */
  readonly tundra?: string
}

export interface DiffReport {
  readonly mode: RuleMode
  readonly family: Family
  readonly agree: boolean
  /** service ports compared (union of both sides) */
  readonly servicePorts: number
  readonly differences: readonly Difference[]
}

/** The rules tundra would have kube-proxy write for `view`'s cluster, in `mode` and `family` ('' when none). */
export function tundraRules(view: DataplaneView, mode: RuleMode, family: Family, proxy: DumpOptions = {}): string {
  const d = dumpRules(view.cluster(), { ...dumpOptions(view.natConfig()), ...proxy })
  const text = family === 4 ? (mode === 'nft' ? d.nft : d.iptables) : mode === 'nft' ? d.nft6 : d.ip6tables
  return text ?? ''
}

/**
 * Reads `liveText`, asks `ours(mode, family)` for tundra's rules in the same mode and family (`tundraRules` offline,
 * or a running agent's `dump`) and compares the two.
 */
export async function diffRules(liveText: string, ours: (mode: RuleMode, family: Family) => Promise<string> | string, family?: Family): Promise<DiffReport> {
  const live = parseRuleset(liveText, family !== undefined ? { family } : {})
  const text = await ours(live.mode, live.family)
  const model: RuleModel =
    text === '' ? { mode: live.mode, family: live.family, servicePorts: new Map() } : parseRuleset(text, { mode: live.mode, family: live.family })
  return compareModels(live, model)
}

function list(xs: readonly string[]): string {
  return xs.length === 0 ? 'none' : xs.join(', ')
}

function affinity(s: number): string {
  return s === 0 ? 'none' : `ClientIP ${s}s`
}

/** Every semantic difference between the live model and tundra's, sorted by service port. */
function compareModels(live: RuleModel, ours: RuleModel): DiffReport {
  const out: Difference[] = []
  const add = (sp: RuleServicePort | undefined, chain: string, what: string, l: string | undefined, t: string | undefined): void => {
    out.push({
      servicePort: sp === undefined ? '' : `${sp.name}/${sp.protocol}`,
      chain,
      what,
      ...(l !== undefined ? { live: l } : {}),
      ...(t !== undefined ? { tundra: t } : {}),
    })
  }
  if (live.masqueradeMark !== ours.masqueradeMark) {
    add(undefined, live.mode === 'nft' ? 'mark-for-masquerade' : 'KUBE-MARK-MASQ', 'masquerade mark', live.masqueradeMark, ours.masqueradeMark)
  }
  const keys = [...new Set([...live.servicePorts.keys(), ...ours.servicePorts.keys()])].sort()
  for (const key of keys) {
    const l = live.servicePorts.get(key)
    const t = ours.servicePorts.get(key)
    if (l === undefined || t === undefined) {
      const sp = (l ?? t)!
      const addr = sp.clusterIP !== undefined ? `${sp.clusterIP}:${sp.port ?? '?'}` : 'no cluster IP'
      add(sp, sp.cluster?.chain ?? sp.local?.chain ?? sp.chain, 'service port', l !== undefined ? addr : undefined, t !== undefined ? addr : undefined)
      continue
    }
    const scalar = (what: string, a: string | number | undefined, b: string | number | undefined, chain = t.chain): void => {
      if (a !== b) add(t, chain, what, a === undefined ? undefined : String(a), b === undefined ? undefined : String(b))
    }
    const sets = (what: string, a: readonly string[], b: readonly string[], chain = t.chain): void => {
      for (const x of b) if (!a.includes(x)) add(t, chain, `${what} ${x}`, undefined, 'present')
      for (const x of a) if (!b.includes(x)) add(t, chain, `${what} ${x}`, 'present', undefined)
    }
    scalar('cluster IP', l.clusterIP, t.clusterIP)
    scalar('port', l.port, t.port)
    sets('external IP', l.externalIPs, t.externalIPs)
    sets('load balancer IP', l.loadBalancerIPs, t.loadBalancerIPs)
    scalar('node port', l.nodePort, t.nodePort)
    scalar('health check node port', l.healthCheckNodePort, t.healthCheckNodePort)
    scalar('cluster IP traffic goes to', l.internalTarget, t.internalTarget)
    scalar('external traffic goes to', l.externalTarget, t.externalTarget)
    scalar('cluster IP masquerade', l.clusterIPMasquerade, t.clusterIPMasquerade, t.cluster?.chain ?? t.local?.chain ?? t.chain)
    scalar('external masquerade', l.externalMasquerade, t.externalMasquerade)
    if (l.firewallSources.join() !== t.firewallSources.join()) add(t, t.chain, 'loadBalancerSourceRanges', list(l.firewallSources), list(t.firewallSources))
    sets('no-endpoints rule', l.noEndpoints, t.noEndpoints)
    compareDispatch(t, 'cluster', l.cluster, t.cluster, add)
    compareDispatch(t, 'local', l.local, t.local, add)
  }
  return { mode: live.mode, family: live.family, agree: out.length === 0, servicePorts: keys.length, differences: out }
}

function compareDispatch(
  sp: RuleServicePort,
  kind: 'cluster' | 'local',
  l: RuleDispatch | undefined,
  t: RuleDispatch | undefined,
  add: (sp: RuleServicePort, chain: string, what: string, l: string | undefined, t: string | undefined) => void,
): void {
  if (l === undefined && t === undefined) return
  const chain = (t ?? l)!.chain
  if (l === undefined || t === undefined) {
    add(sp, chain, `${kind} endpoints chain`, l !== undefined ? 'present' : undefined, t !== undefined ? 'present' : undefined)
    return
  }
  if (l.affinitySeconds !== t.affinitySeconds) add(sp, chain, 'session affinity', affinity(l.affinitySeconds), affinity(t.affinitySeconds))
  const byAddr = new Map(l.endpoints.map(e => [e.addr, e]))
  const ours = new Set(t.endpoints.map(e => e.addr))
  for (const e of t.endpoints) {
    const le = byAddr.get(e.addr)
    if (le === undefined) {
      add(sp, chain, `endpoint ${e.addr} (${e.chain})`, undefined, 'present')
      continue
    }
    if (le.probability !== e.probability) add(sp, chain, `endpoint ${e.addr} probability`, le.probability, e.probability)
    if (le.chain !== e.chain) add(sp, chain, `endpoint ${e.addr} chain`, le.chain, e.chain)
    if (le.hairpin !== e.hairpin) add(sp, e.chain, `endpoint ${e.addr} hairpin masquerade`, String(le.hairpin), String(e.hairpin))
  }
  for (const e of l.endpoints) if (!ours.has(e.addr)) add(sp, chain, `endpoint ${e.addr} (${e.chain})`, 'present', undefined)
}

/** One line per difference, e.g. `default/web:http (KUBE-SVC-…): endpoint 10.244.1.7:80 missing in live rules`. */
function formatDifference(d: Difference): string {
  const who =
    d.servicePort === '' ? `node (${d.chain})` : `${d.servicePort.replace(/\/(tcp|udp|sctp)$/, p => (p === '/tcp' ? '' : ` ${p.slice(1)}`))} (${d.chain})`
  let how: string
  if (d.live === undefined) how = `${d.what} missing in live rules${d.tundra !== undefined && d.tundra !== 'present' ? ` (tundra: ${d.tundra})` : ''}`
  else if (d.tundra === undefined) how = `${d.what} only in live rules${d.live !== 'present' ? ` (${d.live})` : ''}`
  else how = `${d.what}: live ${d.live}, tundra ${d.tundra}`
  return `${who}: ${how}`
}

export function formatDiff(r: DiffReport): string {
  if (r.agree) return `agree: ${r.servicePorts} service port(s) in the live ${r.mode} rules (IPv${r.family}) match tundra's\n`
  const lines = r.differences.map(formatDifference)
  lines.push(`${r.differences.length} difference(s) between the live ${r.mode} rules (IPv${r.family}) and tundra's, ${r.servicePorts} service port(s) compared`)
  return `${lines.join('\n')}\n`
}

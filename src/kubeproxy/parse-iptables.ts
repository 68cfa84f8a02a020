// `iptables-save` output (nat and filter) read into the semantic model of parse-model.ts: the reverse of
// iptables.ts, reading the rules kube-proxy's iptables proxier writes (KUBE-SERVICES, KUBE-SVC/SVL/EXT/FW/SEP,
// KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES, KUBE-MARK-MASQ). Rules of other chains are ignored; a line that is not
// iptables-save syntax is a RulesetParseError naming it.
import type { Family } from '../model/cluster'
import { servicePortPolicyClusterChain } from './names'
import { iptablesSaveProbability } from './probability'
import { canonicalMark, RulesetParseError, servicePortEntry, type RuleDispatch, type RuleModel, type RuleServicePort } from './parse-model'
import { KUBE_EXTERNAL_SERVICES, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_SERVICES } from './iptrules'
import { endpointString } from '../model/names'

/** One `-A` rule, the parts kube-proxy's rules use. */
interface SavedRule {
  readonly line: number
  readonly table: string
  readonly chain: string
  src?: string
  srcNeg?: boolean
  dst?: string
  proto?: string
  comment?: string
  dport?: number
  probability?: string
  /** `-m recent --rcheck --seconds N` */
  rcheckSeconds?: number
  /** `-m addrtype --src-type LOCAL` */
  srcLocal?: boolean
  /** the -j target and its options, e.g. `DNAT --to-destination 10.1.2.3:80` */
  target?: string
  toDestination?: string
  setXmark?: string
}

/** Splits a rule line as iptables-save quotes it: double quotes with `\"` and `\\` escapes. */
function tokenize(line: string, lineNo: number): string[] {
  const out: string[] = []
  let i = 0
  while (i < line.length) {
    while (i < line.length && (line[i] === ' ' || line[i] === '\t')) i++
    if (i >= line.length) break
    let tok = ''
    if (line[i] === '"') {
      i++
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length) i++
        tok += line[i]
        i++
      }
      if (i >= line.length) throw new RulesetParseError(lineNo, 'unterminated quoted string')
      i++
    } else {
      while (i < line.length && line[i] !== ' ' && line[i] !== '\t') tok += line[i++]
    }
    out.push(tok)
  }
  return out
}

/** Without the host prefix length iptables-save always prints (/32, /128). */
function host(addr: string): string {
  return addr.replace(/\/(32|128)$/, '')
}

function num(tok: string | undefined, lineNo: number, what: string): number {
  if (tok === undefined || !/^\d+$/.test(tok)) throw new RulesetParseError(lineNo, `${what}: expected a number, got ${JSON.stringify(tok ?? '')}`)
  return Number(tok)
}

function parseRule(table: string, toks: string[], lineNo: number): SavedRule {
  const chain = toks[1]
  if (chain === undefined) throw new RulesetParseError(lineNo, '-A without a chain name')
  const r: SavedRule = { line: lineNo, table, chain }
  let neg = false
  let i = 2
  const arg = (): string => {
    const v = toks[++i]
    if (v === undefined) throw new RulesetParseError(lineNo, `${toks[i - 1]} without a value`)
    return v
  }
  for (; i < toks.length; i++) {
    const t = toks[i]!
    switch (t) {
      case '!':
        neg = true
        continue
      case '-s':
        r.src = arg()
        if (neg) r.srcNeg = true
        break
      case '-d':
        r.dst = arg()
        break
      case '-p':
        r.proto = arg()
        break
      case '--comment':
        r.comment = arg()
        break
      case '--dport':
        r.dport = num(arg(), lineNo, '--dport')
        break
      case '--probability':
        r.probability = arg()
        break
      case '--seconds':
        r.rcheckSeconds = num(arg(), lineNo, '--seconds')
        break
      case '--src-type':
        if (arg() === 'LOCAL') r.srcLocal = true
        break
      case '-j':
        r.target = toks.slice(i + 1).join(' ')
        for (let k = i + 1; k < toks.length - 1; k++) {
          if (toks[k] === '--to-destination') r.toDestination = toks[k + 1]!
          if (toks[k] === '--set-xmark') r.setXmark = toks[k + 1]!
        }
        i = toks.length
        break
      default:
        break
    }
    neg = false
  }
  return r
}

const SERVICE_CHAIN = /^KUBE-(SVC|SVL|EXT|FW)-([A-Z2-7]{16})$/

/** The hash part of a per-service-port chain, or undefined. */
function chainHash(chain: string | undefined): string | undefined {
  return chain === undefined ? undefined : SERVICE_CHAIN.exec(chain)?.[2]
}

/** Reads iptables-save text; `family` defaults to the family of the addresses found (IPv4 when none). */
export function parseIptablesSave(text: string, family?: Family): RuleModel {
  const rules: SavedRule[] = []
  let table: string | undefined
  let sawTable = false
  const lines = text.split('\n')
  lines.forEach((raw, idx) => {
    const lineNo = idx + 1
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) return
    if (line.startsWith('*')) {
      table = line.slice(1)
      sawTable = true
      return
    }
    if (line === 'COMMIT') {
      table = undefined
      return
    }
    if (line.startsWith(':')) {
      if (table === undefined) throw new RulesetParseError(lineNo, 'chain declaration outside a table')
      return
    }
    if (line.startsWith('-A ')) {
      if (table === undefined) throw new RulesetParseError(lineNo, 'rule outside a table (no *nat / *filter before it)')
      if (table === 'nat' || table === 'filter') rules.push(parseRule(table, tokenize(line, lineNo), lineNo))
      return
    }
    throw new RulesetParseError(lineNo, `not iptables-save output: ${JSON.stringify(line.length > 60 ? `${line.slice(0, 60)}…` : line)}`)
  })
  if (!sawTable) throw new RulesetParseError(0, 'no *nat or *filter table in the iptables-save text')

  const fam: Family = family ?? (rules.some(r => r.chain === KUBE_SERVICES && r.dst?.includes(':') === true) ? 6 : 4)
  const model: RuleModel = { mode: 'iptables', family: fam, servicePorts: new Map() }
  const entry = (name: string, proto: string): RuleServicePort => servicePortEntry(model, name, proto, servicePortPolicyClusterChain)
  const byChain = new Map<string, SavedRule[]>()
  for (const r of rules) {
    if (r.table !== 'nat') continue
    const list = byChain.get(r.chain) ?? []
    list.push(r)
    byChain.set(r.chain, list)
  }
  // hash of KUBE-SVC/SVL/EXT/FW → the service port that jumps there
  const byHash = new Map<string, RuleServicePort>()
  const claim = (chain: string | undefined, sp: RuleServicePort): void => {
    const h = chainHash(chain)
    if (h !== undefined && !byHash.has(h)) byHash.set(h, sp)
  }
  const nameOf = (r: SavedRule, suffix: string): string | undefined =>
    r.comment?.endsWith(suffix) === true ? r.comment.slice(0, r.comment.length - suffix.length) : undefined
  const need = <T>(v: T | undefined, r: SavedRule, what: string): T => {
    if (v === undefined) throw new RulesetParseError(r.line, `kube-proxy rule without ${what}`)
    return v
  }

  for (const r of rules) {
    if (r.table === 'nat' && r.chain === KUBE_SERVICES) {
      let name: string | undefined
      if ((name = nameOf(r, ' cluster IP')) !== undefined) {
        const sp = entry(name, need(r.proto, r, '-p'))
        sp.clusterIP = host(need(r.dst, r, '-d'))
        sp.port = need(r.dport, r, '--dport')
        sp.internalTarget = r.target
        claim(r.target, sp)
      } else if ((name = nameOf(r, ' external IP')) !== undefined) {
        const sp = entry(name, need(r.proto, r, '-p'))
        sp.externalIPs.push(host(need(r.dst, r, '-d')))
        claim(r.target, sp)
      } else if ((name = nameOf(r, ' loadbalancer IP')) !== undefined) {
        const sp = entry(name, need(r.proto, r, '-p'))
        sp.loadBalancerIPs.push(host(need(r.dst, r, '-d')))
        claim(r.target, sp)
      }
    } else if (r.table === 'nat' && r.chain === KUBE_NODEPORTS && r.comment !== undefined && r.dport !== undefined) {
      const sp = entry(r.comment, need(r.proto, r, '-p'))
      sp.nodePort = r.dport
      claim(r.target, sp)
    } else if (r.table === 'nat' && r.chain === KUBE_MARK_MASQ && r.setXmark !== undefined) {
      model.masqueradeMark = canonicalMark(r.setXmark.split('/')[0] ?? r.setXmark)
    } else if (r.table === 'filter' && (r.chain === KUBE_SERVICES || r.chain === KUBE_EXTERNAL_SERVICES)) {
      const name = nameOf(r, ' has no endpoints') ?? nameOf(r, ' has no local endpoints')
      if (name === undefined) continue
      const sp = entry(name, need(r.proto, r, '-p'))
      const verdict = r.target?.startsWith('REJECT') === true ? 'REJECT' : (r.target ?? 'fall through')
      const port = need(r.dport, r, '--dport')
      if (r.dst === undefined) {
        sp.noEndpoints.push(`node port ${port} ${verdict}`)
        sp.nodePort ??= port
      } else {
        sp.noEndpoints.push(`${endpointString(host(r.dst), port)} ${verdict}`)
        if (r.chain === KUBE_SERVICES) {
          sp.clusterIP ??= host(r.dst)
          sp.port ??= port
        }
      }
    } else if (r.table === 'filter' && r.chain === KUBE_NODEPORTS && r.comment !== undefined) {
      const name = nameOf(r, ' health check node port')
      if (name !== undefined && r.dport !== undefined) entry(name, 'tcp').healthCheckNodePort = r.dport
    }
  }
  // services whose chains carry comments but no KUBE-SERVICES rule claimed them (e.g. edited rules)
  for (const [chain, list] of byChain) {
    const h = chainHash(chain)
    if (h === undefined || byHash.has(h)) continue
    const c = list.find(r => r.comment !== undefined && !r.comment.includes(' '))?.comment
    const proto = list.find(r => r.proto !== undefined)?.proto
    if (c !== undefined) byHash.set(h, entry(c, proto ?? 'tcp'))
  }

  const sepOf = (chain: string): { addr: string; hairpin: boolean } => {
    const list = byChain.get(chain) ?? []
    const dnat = list.find(r => r.toDestination !== undefined)
    return { addr: dnat?.toDestination ?? `(no DNAT in ${chain})`, hairpin: list.some(r => r.target === KUBE_MARK_MASQ && r.src !== undefined) }
  }
  const dispatch = (chain: string, sp: RuleServicePort): RuleDispatch => {
    const d: RuleDispatch = { chain, endpoints: [], affinitySeconds: 0 }
    for (const r of byChain.get(chain) ?? []) {
      if (r.target === KUBE_MARK_MASQ) {
        if (r.dst !== undefined) sp.clusterIPMasquerade = r.src === undefined ? 'all' : `${r.srcNeg === true ? 'not from' : 'from'} ${r.src}`
      } else if (r.rcheckSeconds !== undefined) {
        d.affinitySeconds = r.rcheckSeconds
      } else if (r.target?.startsWith('KUBE-SEP-') === true) {
        const sep = sepOf(r.target)
        d.endpoints.push({ ...sep, chain: r.target, probability: r.probability === undefined ? 'rest' : iptablesSaveProbability(r.probability) })
      }
    }
    return d
  }
  for (const [chain] of byChain) {
    const m = SERVICE_CHAIN.exec(chain)
    if (m === null) continue
    const sp = byHash.get(m[2]!)
    if (sp === undefined) continue
    const kind = m[1]
    if (kind === 'SVC') sp.cluster = dispatch(chain, sp)
    else if (kind === 'SVL') sp.local = dispatch(chain, sp)
    else if (kind === 'EXT') {
      for (const r of byChain.get(chain) ?? []) {
        if (r.target === KUBE_MARK_MASQ) sp.externalMasquerade = r.srcLocal === true ? 'node-local' : 'all'
        else if (r.src === undefined && r.srcLocal !== true && r.target !== undefined) sp.externalTarget = r.target
      }
    } else if (kind === 'FW') {
      for (const r of byChain.get(chain) ?? []) if (r.src !== undefined && r.target !== undefined) sp.firewallSources.push(host(r.src))
    }
  }
  for (const sp of model.servicePorts.values()) {
    sp.externalIPs.sort()
    sp.loadBalancerIPs.sort()
    sp.firewallSources.sort()
    sp.noEndpoints.sort()
  }
  return model
}

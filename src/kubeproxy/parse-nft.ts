// `nft list ruleset` (or `nft list table ip kube-proxy`) output read into the semantic model of parse-model.ts: the
// reverse of nftables.ts, reading kube-proxy's nftables proxier's maps (service-ips, service-nodeports,
// no-endpoint-*, firewall-ips) and its service-/local-/external-/firewall-/endpoint- chains. Other tables are
// ignored; text that is not an nft ruleset is a RulesetParseError naming the line.
import type { Family } from '../model/cluster'
import { NFT_PREFIX, nftServicePortChainNameBase } from './names'
import { canonicalMark, RulesetParseError, servicePortEntry, type RuleDispatch, type RuleModel, type RuleServicePort } from './parse-model'

interface Block {
  readonly kind: 'set' | 'map' | 'chain'
  readonly name: string
  readonly line: number
  /** the body, one string per line, trimmed */
  readonly lines: string[]
}

function unquote(s: string): string {
  return s.length >= 2 && s.startsWith('"') && s.endsWith('"') ? s.slice(1, -1) : s
}

/** Brace depth change of a line, quotes skipped. */
function braceDelta(line: string): number {
  let d = 0
  let quoted = false
  for (const ch of line) {
    if (ch === '"') quoted = !quoted
    else if (!quoted && ch === '{') d++
    else if (!quoted && ch === '}') d--
  }
  return d
}

/** The sets, maps and chains of `table <fam> kube-proxy`. */
function tableBlocks(text: string, fam: 'ip' | 'ip6'): Block[] | undefined {
  const lines = text.split('\n')
  const blocks: Block[] = []
  let inTable = false
  let found = false
  let depth = 0
  let current: Block | undefined
  const head = new RegExp(`^table\\s+${fam}\\s+kube-proxy\\s*\\{$`)
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim()
    if (!inTable) {
      if (head.test(line)) {
        inTable = true
        found = true
        depth = 1
        blocks.length = 0
      }
      continue
    }
    const before = depth
    depth += braceDelta(line)
    if (depth < 0) throw new RulesetParseError(i + 1, 'unbalanced }')
    if (before === 1 && depth === 2) {
      const m = /^(set|map|chain)\s+(\S+)\s*\{$/.exec(line)
      if (m === null) throw new RulesetParseError(i + 1, `unexpected line in table ${fam} kube-proxy: ${JSON.stringify(line)}`)
      current = { kind: m[1] as Block['kind'], name: unquote(m[2]!), line: i + 1, lines: [] }
      blocks.push(current)
    } else if (depth === 0) {
      inTable = false
    } else if (before >= 2 && depth === 1) {
      current = undefined
    } else if (current !== undefined && line !== '') {
      current.lines.push(line)
    } else if (depth === 1 && line !== '' && !line.startsWith('comment ') && !line.startsWith('flags ')) {
      throw new RulesetParseError(i + 1, `unexpected line in table ${fam} kube-proxy: ${JSON.stringify(line)}`)
    }
  }
  if (inTable) throw new RulesetParseError(0, `table ${fam} kube-proxy is not closed (missing })`)
  return found ? blocks : undefined
}

/** The elements of a set or map block, split at top-level commas. */
function elementsOf(b: Block): string[] {
  const body = b.lines.join(' ')
  const start = body.indexOf('elements = {')
  if (start < 0) return []
  let i = start + 'elements = {'.length
  let depth = 1
  let quoted = false
  let cur = ''
  const out: string[] = []
  for (; i < body.length && depth > 0; i++) {
    const ch = body[i]!
    if (ch === '"') quoted = !quoted
    if (!quoted && ch === '{') depth++
    if (!quoted && ch === '}') {
      depth--
      if (depth === 0) break
    }
    if (!quoted && ch === ',' && depth === 1) {
      out.push(cur.trim())
      cur = ''
    } else cur += ch
  }
  if (cur.trim() !== '') out.push(cur.trim())
  return out.map(s => s.replace(/\s+/g, ' '))
}

/** nft's time format (3h, 1d, 1h1m40s, 10s) in seconds. */
function durationSeconds(text: string): number {
  let total = 0
  for (const m of text.matchAll(/(\d+)(d|h|m|s)/g)) total += Number(m[1]) * { d: 86400, h: 3600, m: 60, s: 1 }[m[2] as 'd' | 'h' | 'm' | 's']
  return total
}

const CHAIN_RE = /^(service|local|external|firewall|endpoint|affinity)-[A-Z2-7]{8}-(.+)$/

/** The service port of a per-service chain name: `ns/name/proto/portName` (endpoint: `…__ip/port`). */
function servicePortOfChain(chain: string): { name: string; protocol: string } | undefined {
  const m = CHAIN_RE.exec(chain)
  if (m === null) return undefined
  const base = m[2]!.split('__')[0]!
  const parts = base.split('/')
  if (parts.length < 4) return undefined
  const [ns, svc, protocol, ...rest] = parts
  const portName = rest.join('/')
  return { name: portName === '' ? `${ns}/${svc}` : `${ns}/${svc}:${portName}`, protocol: protocol! }
}

/** The cluster chain name of a service port name + protocol, for messages. */
function nftClusterChain(name: string, protocol: string): string {
  const slash = name.indexOf('/')
  const colon = name.indexOf(':', slash)
  const ns = name.slice(0, slash)
  const svc = colon < 0 ? name.slice(slash + 1) : name.slice(slash + 1, colon)
  const port = colon < 0 ? '' : name.slice(colon + 1)
  return NFT_PREFIX.cluster + nftServicePortChainNameBase(ns, svc, protocol, port)
}

/** Reads nft text; `family` picks table ip (4) or ip6 (6); by default ip, or ip6 when it is the only one. */
export function parseNftRuleset(text: string, family?: Family): RuleModel {
  let fam: Family = family ?? 4
  let blocks = tableBlocks(text, fam === 4 ? 'ip' : 'ip6')
  if (blocks === undefined && family === undefined) {
    fam = 6
    blocks = tableBlocks(text, 'ip6')
  }
  if (blocks === undefined) throw new RulesetParseError(0, `no table ${fam === 4 ? 'ip' : 'ip6'} kube-proxy in the nft ruleset`)
  const model: RuleModel = { mode: 'nft', family: fam, servicePorts: new Map() }
  const entry = (name: string, proto: string): RuleServicePort => servicePortEntry(model, name, proto, nftClusterChain)
  const byName = new Map<string, Block>()
  for (const b of blocks) byName.set(b.name, b)
  const elems = (name: string): string[] => {
    const b = byName.get(name)
    return b === undefined ? [] : elementsOf(b)
  }
  const clusterIPs = new Set(elems('cluster-ips'))
  const spOfChain = (chain: string, line: number): RuleServicePort => {
    const s = servicePortOfChain(chain)
    if (s === undefined) throw new RulesetParseError(line, `not a kube-proxy service chain name: ${chain}`)
    return entry(s.name, s.protocol)
  }
  const mapLine = (map: string): number => byName.get(map)?.line ?? 0

  // `<ip> . <proto> . <port> [comment "name"] : <verdict>`
  const ELEM3 = /^(\S+) \. (\w+) \. (\d+)(?: comment "([^"]*)")? : (.+)$/
  const ELEM2 = /^(\w+) \. (\d+)(?: comment "([^"]*)")? : (.+)$/
  for (const e of elems('service-ips')) {
    const m = ELEM3.exec(e)
    if (m === null) throw new RulesetParseError(mapLine('service-ips'), `unexpected service-ips element: ${e}`)
    const chain = m[5]!.replace(/^goto /, '')
    const sp = spOfChain(chain, mapLine('service-ips'))
    if (chain.startsWith(NFT_PREFIX.external)) sp.externalIPs.push(m[1]!)
    else {
      sp.clusterIP = m[1]!
      sp.port = Number(m[3])
      sp.internalTarget = chain
    }
  }
  for (const e of elems('service-nodeports')) {
    const m = ELEM2.exec(e)
    if (m === null) throw new RulesetParseError(mapLine('service-nodeports'), `unexpected service-nodeports element: ${e}`)
    spOfChain(m[4]!.replace(/^goto /, ''), mapLine('service-nodeports')).nodePort = Number(m[2])
  }
  const verdict = (v: string): string => (v === 'goto reject-chain' ? 'REJECT' : v.toUpperCase())
  for (const e of elems('no-endpoint-services')) {
    const m = ELEM3.exec(e)
    if (m === null || m[4] === undefined) throw new RulesetParseError(mapLine('no-endpoint-services'), `unexpected no-endpoint-services element: ${e}`)
    const sp = entry(m[4], m[2]!)
    const ip = m[1]!
    sp.noEndpoints.push(`${ip.includes(':') ? `[${ip}]` : ip}:${m[3]} ${verdict(m[5]!)}`)
    if (clusterIPs.has(ip)) {
      sp.clusterIP ??= ip
      sp.port ??= Number(m[3])
    }
  }
  for (const e of elems('no-endpoint-nodeports')) {
    const m = ELEM2.exec(e)
    if (m === null || m[3] === undefined) throw new RulesetParseError(mapLine('no-endpoint-nodeports'), `unexpected no-endpoint-nodeports element: ${e}`)
    const sp = entry(m[3], m[1]!)
    sp.noEndpoints.push(`node port ${m[2]} ${verdict(m[4]!)}`)
    sp.nodePort ??= Number(m[2])
  }
  for (const r of byName.get('mark-for-masquerade')?.lines ?? []) {
    const m = /^meta mark set meta mark \| (0x[0-9a-f]+)$/.exec(r)
    if (m !== null) model.masqueradeMark = canonicalMark(m[1]!)
  }

  const endpointOf = (chain: string): { addr: string; hairpin: boolean } => {
    const lines = byName.get(chain)?.lines ?? []
    const dnat = lines.map(l => /dnat to (\S+)/.exec(l)?.[1]).find(x => x !== undefined)
    return { addr: dnat ?? `(no dnat in ${chain})`, hairpin: lines.some(l => /saddr \S+ jump mark-for-masquerade$/.test(l)) }
  }
  const affinityTimeout = (set: string): number => {
    const t = byName.get(set)?.lines.find(l => l.startsWith('timeout '))
    return t === undefined ? 0 : durationSeconds(t.slice('timeout '.length))
  }
  const dispatch = (b: Block, sp: RuleServicePort): RuleDispatch => {
    const d: RuleDispatch = { chain: b.name, endpoints: [], affinitySeconds: 0 }
    for (const l of b.lines) {
      let m: RegExpExecArray | null
      if ((m = /daddr (\S+)(?: ip6? saddr (!= )?(\S+))? jump mark-for-masquerade$/.exec(l)) !== null) {
        sp.clusterIPMasquerade = m[3] === undefined ? 'all' : `${m[2] !== undefined ? 'not from' : 'from'} ${m[3]}`
      } else if ((m = /saddr @(\S+) goto /.exec(l)) !== null) {
        d.affinitySeconds = affinityTimeout(m[1]!)
      } else if ((m = /^numgen random mod (\d+) vmap \{(.*)\}$/.exec(l)) !== null) {
        const n = Number(m[1])
        for (const item of m[2]!.split(',')) {
          const chain = /goto (\S+)/.exec(item)?.[1]
          if (chain !== undefined) d.endpoints.push({ ...endpointOf(chain), chain, probability: `1/${n}` })
        }
      } else if ((m = /^goto (endpoint-\S+)$/.exec(l)) !== null) {
        d.endpoints.push({ ...endpointOf(m[1]!), chain: m[1]!, probability: '1/1' })
      }
    }
    return d
  }
  for (const b of blocks) {
    if (b.kind !== 'chain') continue
    const kind = CHAIN_RE.exec(b.name)?.[1]
    if (kind === undefined || kind === 'endpoint') continue
    const sp = spOfChain(b.name, b.line)
    if (kind === 'service') sp.cluster = dispatch(b, sp)
    else if (kind === 'local') sp.local = dispatch(b, sp)
    else if (kind === 'external') {
      for (const l of b.lines) {
        if (l === 'jump mark-for-masquerade') sp.externalMasquerade = 'all'
        else if (l.startsWith('fib saddr type local jump mark-for-masquerade')) sp.externalMasquerade = 'node-local'
        else {
          const m = /^goto (\S+)$/.exec(l)
          if (m !== null) sp.externalTarget = m[1]!
        }
      }
    } else if (kind === 'firewall') {
      for (const l of b.lines) {
        const m = /saddr != (\{ ([^}]*) \}|\S+) drop/.exec(l)
        if (m !== null) sp.firewallSources.push(...(m[2] ?? m[1]!).split(',').map(s => s.trim()))
      }
    }
  }
  for (const sp of model.servicePorts.values()) {
    sp.externalIPs.sort()
    sp.firewallSources.sort()
    sp.noEndpoints.sort()
  }
  return model
}

// The kernel's side of an incremental sync: from the rule dumps before and after a change, the partial update
// kube-proxy would send — `iptables-restore --noflush` input rewriting only changed chains (plus the chains kube-proxy
// always rewrites), and an `nft -f` transaction that flushes and refills changed chains and patches set elements.

/** iptables-save text as tables -> chains (declaration order) -> rule lines (`-A …`). */
export interface IptablesDump {
  readonly tables: Map<string, { chains: Map<string, { policy: string; rules: string[] }> }>
}

const BUILTIN = new Set(['INPUT', 'FORWARD', 'OUTPUT', 'PREROUTING', 'POSTROUTING'])

export function parseIptablesSave(text: string): IptablesDump {
  const tables: IptablesDump['tables'] = new Map()
  let cur: { chains: Map<string, { policy: string; rules: string[] }> } | undefined
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd()
    if (line === '' || line.startsWith('#')) continue
    if (line.startsWith('*')) {
      cur = { chains: new Map() }
      tables.set(line.slice(1), cur)
    } else if (line === 'COMMIT') {
      cur = undefined
    } else if (line.startsWith(':') && cur) {
      const [name, policy] = line.slice(1).split(' ')
      cur.chains.set(name!, { policy: policy ?? '-', rules: [] })
    } else if (line.startsWith('-A ') && cur) {
      const name = line.slice(3, line.indexOf(' ', 3) < 0 ? undefined : line.indexOf(' ', 3))
      let chain = cur.chains.get(name)
      if (!chain) {
        chain = { policy: '-', rules: [] }
        cur.chains.set(name, chain)
      }
      chain.rules.push(line)
    }
  }
  return { tables }
}

/** kube-proxy (MinimizeIPTablesRestore) rewrites these on every sync, changed or not. */
export const KUBE_PROXY_ALWAYS = [
  'KUBE-SERVICES',
  'KUBE-EXTERNAL-SERVICES',
  'KUBE-NODEPORTS',
  'KUBE-POSTROUTING',
  'KUBE-MARK-MASQ',
  'KUBE-FORWARD',
  'KUBE-PROXY-FIREWALL',
]

export interface IptablesDelta {
  /** iptables-restore --noflush input; '' when nothing changed */
  readonly text: string
  readonly changedChains: number
  readonly rules: number
}

/**
 * `--noflush` input turning `before` into `after`: each changed, new or always-written chain is declared (which
 * flushes a user chain) and refilled; removed chains are flushed and deleted after every rule that could jump to
 * them is rewritten. Built-in chains that changed are flushed with -F and refilled.
 */
export function iptablesDelta(
  beforeText: string | IptablesDump,
  afterText: string | IptablesDump,
  always: readonly string[] = KUBE_PROXY_ALWAYS,
): IptablesDelta {
  const before = typeof beforeText === 'string' ? parseIptablesSave(beforeText) : beforeText
  const after = typeof afterText === 'string' ? parseIptablesSave(afterText) : afterText
  const out: string[] = []
  let changedChains = 0
  let rules = 0
  const names = new Set([...before.tables.keys(), ...after.tables.keys()])
  for (const table of names) {
    const b = before.tables.get(table)?.chains ?? new Map<string, { policy: string; rules: string[] }>()
    const a = after.tables.get(table)?.chains ?? new Map<string, { policy: string; rules: string[] }>()
    const decl: string[] = []
    const body: string[] = []
    const removed: string[] = []
    for (const [name, chain] of a) {
      const old = b.get(name)
      const same = old !== undefined && old.rules.length === chain.rules.length && old.rules.every((r, i) => r === chain.rules[i])
      if (same && !always.includes(name)) continue
      if (!old || !same) changedChains++
      if (BUILTIN.has(name)) {
        if (same) continue
        body.push(`-F ${name}`)
      } else {
        decl.push(`:${name} - [0:0]`)
      }
      body.push(...chain.rules)
      rules += chain.rules.length
    }
    for (const name of b.keys()) {
      if (!a.has(name) && !BUILTIN.has(name)) {
        removed.push(name)
        changedChains++
      }
    }
    if (decl.length + body.length + removed.length === 0) continue
    out.push(`*${table}`, ...decl, ...removed.map(n => `:${n} - [0:0]`), ...body, ...removed.map(n => `-X ${n}`), 'COMMIT')
  }
  return { text: out.length === 0 ? '' : out.join('\n') + '\n', changedChains, rules }
}

/** An `nft list table`-style script as blocks: chains (rule lines) and sets/maps (element strings). */
export interface NftDump {
  readonly family: string
  readonly table: string
  readonly chains: Map<string, string[]>
  readonly sets: Map<string, { kind: 'set' | 'map'; elements: string[] }>
}

/** Reads the `table <family> <name> { … }` block of a script written in `nft list` form. */
export function parseNftScript(text: string): NftDump {
  const lines = text.split('\n')
  let family = 'ip'
  let table = ''
  const chains = new Map<string, string[]>()
  const sets = new Map<string, { kind: 'set' | 'map'; elements: string[] }>()
  let i = 0
  for (; i < lines.length; i++) {
    const m = /^table (\S+) (\S+) \{$/.exec(lines[i]!.trim())
    if (m) {
      family = m[1]!
      table = m[2]!
      i++
      break
    }
  }
  for (; i < lines.length; i++) {
    const line = lines[i]!.trim()
    const c = /^chain (\S+) \{$/.exec(line)
    const s = /^(set|map) (\S+) \{$/.exec(line)
    if (c) {
      const rules: string[] = []
      for (i++; i < lines.length && lines[i]!.trim() !== '}'; i++) {
        const r = lines[i]!.trim()
        if (r === '' || r.startsWith('type ') || r.startsWith('comment ')) continue
        rules.push(r)
      }
      chains.set(c[1]!, rules)
    } else if (s) {
      const elements: string[] = []
      let inElements = false
      for (i++; i < lines.length && lines[i]!.trim() !== '}'; i++) {
        let r = lines[i]!.trim()
        if (r.startsWith('elements = {')) {
          inElements = true
          r = r.slice('elements = {'.length).trim()
        }
        if (!inElements) continue
        const end = r.endsWith('}')
        if (end) r = r.slice(0, -1).trim()
        for (const e of r.split(/,\s*(?![^{]*\})/)) {
          const t = e.trim()
          if (t) elements.push(t)
        }
        if (end) inElements = false
      }
      sets.set(s[2]!, { kind: s[1] as 'set' | 'map', elements })
    }
  }
  return { family, table, chains, sets }
}

export interface NftDelta {
  readonly text: string
  readonly changedChains: number
  readonly elements: number
}

/** One nft transaction turning `before` into `after` (the way kube-proxy's nftables proxier syncs). */
export function nftDelta(beforeText: string | NftDump, afterText: string | NftDump): NftDelta {
  const b = typeof beforeText === 'string' ? parseNftScript(beforeText) : beforeText
  const a = typeof afterText === 'string' ? parseNftScript(afterText) : afterText
  const t = `${a.family} ${a.table}`
  const out: string[] = []
  let changedChains = 0
  let elements = 0
  for (const name of a.chains.keys()) {
    if (!b.chains.has(name)) {
      out.push(`add chain ${t} ${name}`)
      changedChains++
    }
  }
  for (const [name, set] of a.sets) {
    const old = new Set(b.sets.get(name)?.elements ?? [])
    const added = set.elements.filter(e => !old.has(e))
    if (added.length > 0) {
      out.push(`add element ${t} ${name} { ${added.join(', ')} }`)
      elements += added.length
    }
  }
  for (const [name, rules] of a.chains) {
    const old = b.chains.get(name)
    if (old !== undefined && old.length === rules.length && old.every((r, i) => r === rules[i])) continue
    if (old !== undefined) {
      out.push(`flush chain ${t} ${name}`)
      changedChains++
    }
    for (const r of rules) out.push(`add rule ${t} ${name} ${r}`)
  }
  for (const [name, set] of b.sets) {
    const now = new Set(a.sets.get(name)?.elements ?? [])
    const gone = set.elements.filter(e => !now.has(e))
    if (gone.length > 0) {
      const keys = gone.map(e => (set.kind === 'map' ? e.slice(0, e.lastIndexOf(' : ')) : e))
      out.push(`delete element ${t} ${name} { ${keys.join(', ')} }`)
      elements += gone.length
    }
  }
  for (const name of b.chains.keys()) {
    if (!a.chains.has(name)) {
      out.push(`flush chain ${t} ${name}`, `delete chain ${t} ${name}`)
      changedChains++
    }
  }
  return { text: out.length === 0 ? '' : out.join('\n') + '\n', changedChains, elements }
}

// ---- the state after a change without rendering the whole rule set again ----
// Rendering kube-proxy's rules for 20 000 services takes tens of seconds; a change to one service only touches that
// service's chains (and set elements). Rendering the changed services alone, before and after, says which chains and
// elements differ; applying that difference to the full dump gives the full state after the change.

const sameRules = (a: readonly string[] | undefined, b: readonly string[] | undefined): boolean =>
  a !== undefined && b !== undefined && a.length === b.length && a.every((r, i) => r === b[i])

/**
 * `full` with what differs between `before` and `after` (dumps of only the changed services) applied: chains whose
 * rules differ are replaced, chains only `before` has are removed, new ones added. Chains the two small dumps share
 * unchanged (KUBE-SERVICES and friends, whose full content lists every service) are left as `full` has them.
 */
export function patchIptables(full: IptablesDump, before: IptablesDump, after: IptablesDump): IptablesDump {
  const tables: IptablesDump['tables'] = new Map()
  for (const [name, table] of full.tables) {
    const b = before.tables.get(name)?.chains ?? new Map<string, { policy: string; rules: string[] }>()
    const a = after.tables.get(name)?.chains ?? new Map<string, { policy: string; rules: string[] }>()
    const changed = [...a].filter(([chain, c]) => !sameRules(b.get(chain)?.rules, c.rules))
    const gone = [...b.keys()].filter(chain => !a.has(chain))
    if (changed.length === 0 && gone.length === 0) {
      tables.set(name, table)
      continue
    }
    const chains = new Map(table.chains)
    for (const chain of gone) chains.delete(chain)
    for (const [chain, c] of changed) chains.set(chain, { policy: c.policy, rules: c.rules.slice() })
    tables.set(name, { chains })
  }
  return { tables }
}

/** The same for an nft script: chains as in patchIptables, set and map elements added and removed. */
export function patchNft(full: NftDump, before: NftDump, after: NftDump): NftDump {
  const chains = new Map(full.chains)
  for (const name of before.chains.keys()) if (!after.chains.has(name)) chains.delete(name)
  for (const [name, rules] of after.chains) if (!sameRules(before.chains.get(name), rules)) chains.set(name, rules.slice())
  const sets = new Map(full.sets)
  for (const name of new Set([...before.sets.keys(), ...after.sets.keys()])) {
    const was = new Set(before.sets.get(name)?.elements ?? [])
    const now = new Set(after.sets.get(name)?.elements ?? [])
    const removed = new Set([...was].filter(e => !now.has(e)))
    const added = [...now].filter(e => !was.has(e))
    if (removed.size === 0 && added.length === 0) continue
    const cur = sets.get(name) ?? { kind: after.sets.get(name)?.kind ?? before.sets.get(name)!.kind, elements: [] }
    sets.set(name, { kind: cur.kind, elements: [...cur.elements.filter(e => !removed.has(e)), ...added] })
  }
  return { family: full.family, table: full.table, chains, sets }
}

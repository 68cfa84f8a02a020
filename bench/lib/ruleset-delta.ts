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
      if (!chain) { chain = { policy: '-', rules: [] }; cur.chains.set(name, chain) }
      chain.rules.push(line)
    }
  }
  return { tables }
}

/** kube-proxy (MinimizeIPTablesRestore) rewrites these on every sync, changed or not. */
export const KUBE_PROXY_ALWAYS = ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ', 'KUBE-FORWARD', 'KUBE-PROXY-FIREWALL']

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
export function iptablesDelta(beforeText: string, afterText: string, always: readonly string[] = KUBE_PROXY_ALWAYS): IptablesDelta {
  const before = parseIptablesSave(beforeText)
  const after = parseIptablesSave(afterText)
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
      if (!a.has(name) && !BUILTIN.has(name)) { removed.push(name); changedChains++ }
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
    if (m) { family = m[1]!; table = m[2]!; i++; break }
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
        if (r.startsWith('elements = {')) { inElements = true; r = r.slice('elements = {'.length).trim() }
        if (!inElements) continue
        const end = r.endsWith('}')
        if (end) r = r.slice(0, -1).trim()
        for (const e of r.split(/,\s*(?![^{]*\})/)) { const t = e.trim(); if (t) elements.push(t) }
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
export function nftDelta(beforeText: string, afterText: string): NftDelta {
  const b = parseNftScript(beforeText)
  const a = parseNftScript(afterText)
  const t = `${a.family} ${a.table}`
  const out: string[] = []
  let changedChains = 0
  let elements = 0
  for (const name of a.chains.keys()) {
    if (!b.chains.has(name)) { out.push(`add chain ${t} ${name}`); changedChains++ }
  }
  for (const [name, set] of a.sets) {
    const old = new Set(b.sets.get(name)?.elements ?? [])
    const added = set.elements.filter(e => !old.has(e))
    if (added.length > 0) { out.push(`add element ${t} ${name} { ${added.join(', ')} }`); elements += added.length }
  }
  for (const [name, rules] of a.chains) {
    const old = b.chains.get(name)
    if (old !== undefined && old.length === rules.length && old.every((r, i) => r === rules[i])) continue
    if (old !== undefined) { out.push(`flush chain ${t} ${name}`); changedChains++ }
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
    if (!a.chains.has(name)) { out.push(`flush chain ${t} ${name}`, `delete chain ${t} ${name}`); changedChains++ }
  }
  return { text: out.length === 0 ? '' : out.join('\n') + '\n', changedChains, elements }
}

// The golden rule sets load into the real tools: `iptables-restore --test`, `nft -c`, and, in a throwaway network
// namespace (unshare -n), iptables-save / nft list give back the same text. Skipped without root or the tools.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

const goldenDir = join(__dirname, '..', 'fixtures', 'k8s', 'golden')
const files = readdirSync(goldenDir)

function run(cmd: string, args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', env: { ...process.env, PATH: `${process.env['PATH'] ?? ''}:/usr/sbin:/sbin` } })
  return { status: r.error ? -1 : r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? r.error?.message ?? '' }
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0
const hasIptables = run('iptables-restore', ['--version']).status === 0
const hasNft = run('nft', ['--version']).status === 0
const canUnshare = isRoot && run('unshare', ['-n', 'true']).status === 0

function stripComments(s: string): string {
  return s
    .split('\n')
    .filter(l => !l.startsWith('#'))
    .join('\n')
    .trim()
}

/** nft lists set elements in hash order and wraps them by width: compare them as sorted lists. */
function normalizeNft(s: string): string {
  let text = stripComments(s).replace(/^table (ip6?) kube-proxy\ndelete table \1 kube-proxy\n/, '')
  text = text.replace(/elements = \{([^}]*)\}/g, (_m, body: string) => {
    const items = body
      .replace(/\s+/g, ' ')
      .split(',')
      .map(x => x.trim())
      .filter(x => x !== '')
      .sort()
    return `elements = { ${items.join(', ')} }`
  })
  return text
}

t.test('iptables-restore --test accepts every iptables golden', { skip: !(isRoot && hasIptables) && 'needs root and iptables' }, async t => {
  for (const f of files.filter(x => x.endsWith('.iptables') || x.endsWith('.ip6tables'))) {
    const tool = f.endsWith('.ip6tables') ? 'ip6tables-restore' : 'iptables-restore'
    const r = run(tool, ['--test'], readFileSync(join(goldenDir, f), 'utf8'))
    t.equal(r.status, 0, `${f}: ${r.stderr}`)
  }
})

t.test(
  'loaded in a netns, iptables-save prints the golden back unchanged',
  { skip: !(canUnshare && hasIptables) && 'needs root, unshare and iptables' },
  async t => {
    for (const f of files.filter(x => x.endsWith('.iptables') || x.endsWith('.ip6tables'))) {
      const v = f.endsWith('.ip6tables') ? 'ip6tables' : 'iptables'
      const text = readFileSync(join(goldenDir, f), 'utf8')
      const r = run('unshare', ['-n', 'sh', '-c', `${v}-restore && ${v}-save`], text)
      t.equal(r.status, 0, `${f}: ${r.stderr}`)
      t.equal(stripComments(r.stdout), stripComments(text), f)
    }
  },
)

t.test('nft -c accepts every nftables golden', { skip: !(isRoot && hasNft) && 'needs root and nft' }, async t => {
  for (const f of files.filter(x => x.endsWith('.nft') || x.endsWith('.nft6'))) {
    const r = run('nft', ['-c', '-f', join(goldenDir, f)])
    t.equal(r.status, 0, `${f}: ${r.stderr}`)
  }
})

t.test(
  'loaded twice in a netns, nft list gives the golden back (elements compared as sets)',
  { skip: !(canUnshare && hasNft) && 'needs root, unshare and nft' },
  async t => {
    for (const f of files.filter(x => x.endsWith('.nft') || x.endsWith('.nft6'))) {
      const fam = f.endsWith('.nft6') ? 'ip6' : 'ip'
      const path = join(goldenDir, f)
      const r = run('unshare', ['-n', 'sh', '-c', `nft -f ${path} && nft -f ${path} && nft list table ${fam} kube-proxy`])
      t.equal(r.status, 0, `${f}: ${r.stderr}`)
      t.equal(normalizeNft(r.stdout), normalizeNft(readFileSync(path, 'utf8')), f)
    }
  },
)

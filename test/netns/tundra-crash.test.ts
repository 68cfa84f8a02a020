// Crash safety (issue 14, finding 6): a download through a ClusterIP survives `kill -9` of the agent and a restart
// without a conntrack snapshot (the entry is re-adopted: the client's ACK by loose pickup, the pod's data through
// the reverse index), or fails promptly; it never hangs until curl's own timeout.
import t from 'tap'
import { mkdtempSync, openSync, rmSync, writeFileSync, writeSync, closeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { labRestartAgent } from '../../src/lab/restart'
import { nginxServiceLab, sleep, tundraLab, waitFor } from '../fixtures/tundra/lab'

const skip = netnsSkip('nginx', 'curl', 'unshare')
const MB = 40
const VIP = '10.96.7.9'

const LAB = nginxServiceLab(VIP, ['web'])

t.test('a download through a ClusterIP survives kill -9 without a snapshot, or fails at once', { ...skip, timeout: 180_000 }, async t => {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-crash-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'lab.yaml'), LAB)
  const lab = await tundraLab(t, { prefix: 'tk', files: [join(dir, 'lab.yaml')], nodes: 1 })
  const node = lab.state.nodes[0]!
  const big = join(lab.state.dir, 'pods', 'default.web', 'nginx', 'html', 'big.bin')
  const fd = openSync(big, 'w')
  const chunk = Buffer.alloc(1 << 20, 0x5a)
  for (let i = 0; i < MB; i++) writeSync(fd, chunk)
  closeSync(fd)
  const small = await lab.pod('client', ['curl', '-s', '-m', '2', `http://${VIP}/`])
  t.match(small.stdout, /Welcome to nginx/, 'the Service answers')

  // ~5 s at 8 MB/s: the crash lands mid-transfer.
  const started = Date.now()
  const download = lab.pod(
    'client',
    ['curl', '-sS', '-o', '/dev/null', '-m', '30', '--limit-rate', '8M', '-w', '%{size_download} %{http_code}', `http://${VIP}/big.bin`],
    { timeoutMs: 40_000 },
  )
  await sleep(1000)
  const before = (await lab.counters(node.name))['conntrack_entries'] ?? 0
  t.ok(before >= 1, `the download is tracked (${before} entries)`)
  // No snapshot: the restarted agent knows nothing of the connection.
  rmSync(`${node.control}.conntrack`, { force: true })
  const r = await labRestartAgent({ name: lab.state.name, node: node.name, kill: true })
  const restarted = Date.now()
  t.comment(`agent down ${r.downMs} ms`)
  const out = await download
  const ended = Date.now()
  const [size, code] = out.stdout.trim().split(' ').map(Number)
  t.comment(`curl exit ${out.code}, ${size} bytes, HTTP ${code}, ${ended - started} ms in all, ${ended - restarted} ms after the restart`)
  if (out.code === 0) {
    t.equal(size, MB << 20, `the whole ${MB} MB arrived`)
  } else {
    t.ok(ended - restarted < 1500, `curl failed within ~1 s of the restart (${ended - restarted} ms): ${out.stderr.trim()}`)
  }
  t.ok(ended - started < 25_000, 'the transfer never ran into its own timeout')
  const counters = await waitFor('counters', () => lab.counters(node.name).catch(() => undefined), 10_000, 100)
  t.comment(
    `after: loose_pickup ${counters['nat_loose_pickup'] ?? counters['loose_pickup'] ?? 0}, reply_pickup ${counters['nat_reply_pickup'] ?? counters['reply_pickup'] ?? 0}`,
  )
})

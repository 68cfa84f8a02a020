// Two packet threads (tun.packetThreads 2, one TUN queue each, one shared conntrack), seen from a pod: a 100 MB
// download through a ClusterIP arrives intact, 200 curls through the Service all answer, cluster DNS answers, and
// the counters say both threads were there.
import t from 'tap'
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { createHash, randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { askAgent } from '../../src/agent/control'
import { nginxServiceLab, sleep, tundraLab, waitFor } from '../fixtures/tundra/lab'

const skip = netnsSkip('nginx', 'curl', 'dig', 'sha256sum', 'unshare')
const MB = 100
const VIP = '10.96.7.19'

const LAB = nginxServiceLab(VIP, ['web', 'web2'])

t.test('two packet threads: 100 MB, 200 curls and DNS through one Service', { ...skip, timeout: 240_000 }, async t => {
  process.env['TUNDRA_PACKET_THREADS'] = '2' // the agents the lab starts inherit it
  process.env['TUNDRA_TEST_HOOKS'] = '1'
  t.teardown(() => {
    delete process.env['TUNDRA_PACKET_THREADS']
    delete process.env['TUNDRA_TEST_HOOKS']
  })
  const dir = mkdtempSync(join(tmpdir(), 'tundra-mt-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'lab.yaml'), LAB)
  const lab = await tundraLab(t, { prefix: 'tm', files: [join(dir, 'lab.yaml')], nodes: 1 })
  const node = lab.state.nodes[0]!

  // the same random file behind both endpoints: whichever serves it, the sum is known
  const sum = createHash('sha256')
  const paths = ['web', 'web2'].map(p => join(lab.state.dir, 'pods', `default.${p}`, 'nginx', 'html', 'big.bin'))
  const fds = paths.map(p => openSync(p, 'w'))
  for (let i = 0; i < MB; i++) {
    const chunk = randomBytes(1 << 20)
    sum.update(chunk)
    for (const fd of fds) writeSync(fd, chunk)
  }
  for (const fd of fds) closeSync(fd)
  const want = sum.digest('hex')

  const big = await lab.pod('client', ['sh', '-c', `curl -sS -m 120 http://${VIP}/big.bin | sha256sum`], { timeoutMs: 130_000 })
  t.equal(big.code, 0, big.stderr)
  t.equal(big.stdout.split(' ')[0], want, `${MB} MB arrive intact through the ClusterIP (sha256)`)

  const loop = await lab.pod('client', ['sh', '-c', `for i in $(seq 200); do curl -s -m 2 -o /dev/null -w '%{http_code}\\n' http://${VIP}/; done`], {
    timeoutMs: 120_000,
  })
  const codes = loop.stdout.split('\n').filter(l => l !== '')
  t.equal(codes.length, 200, 'every curl ran')
  t.same(
    codes.filter(c => c !== '200'),
    [],
    'all 200 curls through the Service answered 200',
  )

  const dns = await lab.pod('client', ['dig', '+time=2', '+tries=2', '+short', 'web.default.svc.cluster.local'])
  t.equal(dns.stdout.trim(), VIP, 'cluster DNS answers from the pod')
  const fromNode = await lab.node(node.name, ['dig', '+time=2', '+tries=2', '+short', '@10.96.0.10', 'web.default.svc.cluster.local'])
  t.equal(fromNode.stdout.trim(), VIP, "and from the node's own namespace (the UDP socket on packet thread 0)")

  const c = await lab.counters(node.name)
  t.ok((c['device_packets_thread_0'] ?? 0) + (c['device_packets_thread_1'] ?? 0) > 0, 'packets counted per thread')
  t.comment(`packets per thread: ${c['device_packets_thread_0']} / ${c['device_packets_thread_1']}; new connections ${c['nat_new']}`)
  t.ok((c['nat_new'] ?? 0) >= 201, `every connection tracked once (${c['nat_new']} new)`)
  t.equal(c['packet_thread_restarts'], 0, 'no packet thread died')

  // Both packet threads fail, one after the other, during a rate-limited download (~5 s): the host restarts each
  // with the shared conntrack as it was, so the connection goes on wherever its packets land.
  const started = Date.now()
  const download = lab.pod('client', ['sh', '-c', `curl -sS -m 40 --limit-rate 20M http://${VIP}/big.bin | sha256sum`], { timeoutMs: 50_000 })
  await sleep(1000)
  for (const index of [0, 1]) {
    await askAgent(node.control!, 'test-crash-packet-thread', { index })
    await waitFor(`packet thread ${index} to be restarted`, async () => ((await lab.counters(node.name))['packet_thread_restarts'] ?? 0) > index, 10_000, 50)
  }
  const after = await download
  t.equal(after.code, 0, after.stderr)
  t.equal(after.stdout.split(' ')[0], want, `the download that spanned both restarts arrived intact (${Date.now() - started} ms)`)
  t.equal((await lab.counters(node.name))['packet_thread_restarts'], 2, 'both restarts counted')
  const again = await lab.pod('client', ['curl', '-s', '-m', '2', '-o', '/dev/null', '-w', '%{http_code}', `http://${VIP}/`])
  t.equal(again.stdout, '200', 'new connections work after the restarts')
})

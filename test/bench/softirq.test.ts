// The e2e section's count of a TUN forwarder's CPU (bench/lib/softirq.ts): softirq that ran in the forwarder's
// context is in both the softirq counter and the forwarder's stime, so its share is sampled with perf and counted once.
import t from 'tap'
import { join } from 'node:path'
import { netnsSkip, topology } from '../helpers/netns'
import { MIN_SAMPLES, forwarderCores, parseSoftirqSamples, sampleSoftirq } from '../../bench/lib/softirq'
import { forwarderCpuNote } from '../../bench/lib/results'
import type { BenchReport } from '../../bench/lib/report'

// `perf script -F tid,ip,sym` as perf 6.1 prints it: a header line per sample, one frame per line, blank lines between.
const SCRIPT = ` 7799 
\tffffffff81416950 __rcu_read_unlock
\tffffffff820541e7 ip_output
\tffffffff81df95a6 tun_get_user
\tffffffff8223df91 do_syscall_64

 7799 
\tffffffff81eafee5 __netif_receive_skb_core.constprop.0
\tffffffff81eb1bfe net_rx_action
\tffffffff81369c4d handle_softirqs
\tffffffff8136965b do_softirq.part.0
\tffffffff81369f44 __local_bh_enable_ip
\tffffffff81df91dd tun_get_user

 7800 
\tffffffff81eb1bfe net_rx_action
\tffffffff81369c4d __do_softirq+0x1a
\tffffffff81369f44 irq_exit_rcu

 7800 
\tffffffff81369c4d handle_softirqs_not_really
\tffffffff816dc794 vfs_read

`

t.test('parseSoftirqSamples counts the samples whose chain passes through the softirq entry', async t => {
  t.same(parseSoftirqSamples(SCRIPT), { samples: 4, softirq: 2 }, 'handle_softirqs (6.8+) and __do_softirq (before); a look-alike name is not one')
  t.same(parseSoftirqSamples(''), { samples: 0, softirq: 0 }, 'no samples')
  t.same(parseSoftirqSamples(' 1 \n\tffffffff81 handle_softirqs'), { samples: 1, softirq: 1 }, 'without a trailing blank line')
})

t.test('forwarderCores counts softirq once', async t => {
  // the hand measurement in lib/softirq.ts: 0.50 cores of softirq, an agent at 0.79 cores of which a third was softirq
  t.ok(Math.abs(forwarderCores(0.5, 0.79, 0.32) - (0.5 + 0.79 * 0.68)) < 1e-12, 'the share of the forwarder already in softirq is not added again')
  t.equal(forwarderCores(0.5, 0.79, undefined), 0.5 + 0.79, 'no share measured: the kernel counters as they are (an over-count)')
  t.equal(forwarderCores(0.5, 0.79, 1.5), 0.5 + 0.79, 'a share outside 0..1 is not used')
  t.equal(forwarderCores(0.5, NaN, 0.3), 0.5, 'no forwarder (a kernel contender): softirq only')
})

t.test('forwarderCpuNote says how the CPU rows counted the forwarder', async t => {
  const e2e = (forwarderCpu?: string): BenchReport =>
    ({ meta: {}, e2e: { rounds: 1, seconds: 1, contenders: [], ...(forwarderCpu ? { forwarderCpu } : {}) } }) as unknown as BenchReport
  t.match(forwarderCpuNote(e2e('perf')), /sampled with perf/)
  t.match(forwarderCpuNote(e2e('perf is not installed (Debian: linux-perf)')), /could not sample .*perf is not installed.*counted twice/)
  t.equal(forwarderCpuNote(e2e()), '', 'no forwarder measured: nothing to say')
  t.equal(forwarderCpuNote({ meta: {} } as unknown as BenchReport), '', 'no e2e section')
})

// A ping flood over a namespace's loopback does its receive work in softirq in the sender's own context (the loopback
// queues each packet and the backlog runs when the sender's send re-enables bottom halves); a JS loop does none.
const skip = netnsSkip('perf', 'ping')
t.test('sampleSoftirq on a real process: a loopback flood is partly softirq, a busy loop is not', { ...skip, timeout: 60_000 }, async t => {
  const topo = topology(t, 'sirq')
  const ns = await topo.ns('a')
  await topo.exec(ns, ['ip', 'link', 'set', 'lo', 'up'])
  const dir = t.testdir({})
  const flood = topo.spawn(ns, ['ping', '-f', '-q', '-w', '4', '127.0.0.1'])
  const loop = topo.spawn(ns, [process.execPath, '-e', 'const end = Date.now() + 4000; while (Date.now() < end) {}'])
  if (flood.pid === undefined || loop.pid === undefined) return t.fail('processes started')
  // ip netns exec replaces itself with the command, so these PIDs are ping's and node's own
  const [f, l] = await Promise.all([sampleSoftirq(flood.pid, 1.5, join(dir, 'f.data')).done(), sampleSoftirq(loop.pid, 1.5, join(dir, 'l.data')).done()])
  t.ok(f.samples >= MIN_SAMPLES, `the flood was sampled (${f.samples} samples ${f.why ?? ''})`)
  t.ok(f.share !== undefined && f.share > 0.1, `a good part of the flood is softirq (${f.share?.toFixed(3)})`)
  t.ok(l.samples >= MIN_SAMPLES, `the loop was sampled (${l.samples} samples ${l.why ?? ''})`)
  t.ok(l.share !== undefined && l.share < 0.05, `the busy loop is not softirq (${l.share?.toFixed(3)})`)
  const gone = await sampleSoftirq(2 ** 22 + 7, 0.2, join(dir, 'g.data')).done()
  t.equal(gone.share, undefined, 'a process that does not exist gives no share')
  t.match(gone.why, /perf record exited|only 0 samples/, `and says why (${gone.why})`)
})

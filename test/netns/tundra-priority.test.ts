// Thread priorities of a running agent, as a user sees them in /proc (top -H, ps -L): the control thread runs below
// the packet thread (a compile waits for the core, a packet does not), also after it was restarted.
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { netnsSkip } from '../helpers/netns'
import { askAgent } from '../../src/agent/control'
import { ROOT, tundraLab, waitFor } from '../fixtures/tundra/lab'

const SEED = join(ROOT, 'examples', 'seed', 'seed.yaml')
/** what the agent sets by default (src/daemon/priority.ts) and what `top -H` shows for its control thread */
const CONTROL_NICE = 5
const CONTROL_THREAD_NAME = 'tundra-control'
const skip = netnsSkip('nginx', 'curl', 'dnsmasq', 'unshare')

interface Task {
  readonly tid: number
  readonly comm: string
  readonly nice: number
}

/** The threads of a process as /proc/<pid>/task/<tid>/stat shows them (field 19: nice). */
function tasks(pid: number): Task[] {
  const out: Task[] = []
  for (const d of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${d}/stat`, 'utf8')
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
      const nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19 - 3])
      out.push({ tid: Number(d), comm, nice })
    } catch {
      /* the thread ended meanwhile */
    }
  }
  return out
}

t.test('the control thread runs at a lower priority than the packet thread', { ...skip, timeout: 180_000 }, async t => {
  process.env['TUNDRA_TEST_HOOKS'] = '1' // the agents the lab starts inherit it
  t.teardown(() => {
    delete process.env['TUNDRA_TEST_HOOKS']
  })
  const lab = await tundraLab(t, { prefix: 'tp', files: [SEED], nodes: 1 })
  const node = lab.state.nodes[0]!
  const { pid } = (await askAgent(node.control!, 'hello')) as { pid: number }

  const check = (when: string): number => {
    const all = tasks(pid)
    const control = all.filter(x => x.comm === CONTROL_THREAD_NAME)
    t.equal(control.length, 1, `${when}: one thread is named ${CONTROL_THREAD_NAME}`)
    t.equal(control[0]?.nice, CONTROL_NICE, `${when}: it runs at nice ${CONTROL_NICE}`)
    t.equal(all.find(x => x.tid === pid)?.nice, 0, `${when}: the packet thread (the main thread) runs at nice 0`)
    const helpers = all.filter(x => x.tid !== pid && x.comm === 'node')
    t.ok(helpers.length > 0, `${when}: the runtime's helper threads are there`)
    t.same(
      helpers.filter(x => x.nice !== CONTROL_NICE),
      [],
      `${when}: the runtime's helper threads (GC workers) run at nice ${CONTROL_NICE} too`,
    )
    return control[0]?.tid ?? -1
  }
  const first = check('at start')

  // a control thread that dies is replaced by one that lowers itself again
  await askAgent(node.control!, 'test-crash')
  await waitFor(
    'a new control thread to answer',
    async () => {
      try {
        return (await lab.counters(node.name))['control_restarts'] === 1
      } catch {
        return undefined
      }
    },
    20_000,
    100,
  )
  const second = check('after a control thread restart')
  t.not(second, first, 'it is a new thread')
})

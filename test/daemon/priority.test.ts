// Thread priorities (src/daemon/priority.ts): the control thread lowers only its own nice value, as /proc shows it.
import t from 'tap'
import { controlNice, lowerControlThread, lowerRuntimeHelpers, nameThread } from '../../src/daemon/priority'
import { readdirSync, readFileSync } from 'node:fs'

const linux = process.platform === 'linux'

/** A thread's nice value as /proc shows it (field 19 of /proc/<pid>/task/<tid>/stat; comm may hold ') '). */
function threadNice(pid: number, tid: number): number {
  const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19 - 3])
}

t.test('TUNDRA_CONTROL_NICE: 0..19 honoured, anything else refused', async t => {
  t.equal(controlNice(undefined), 5, 'the default')
  t.equal(controlNice(''), 5)
  t.equal(controlNice('0'), 0)
  t.equal(controlNice('19'), 19)
  for (const bad of ['-1', '20', '5.5', 'low']) t.throws(() => controlNice(bad), /TUNDRA_CONTROL_NICE: expected an integer 0\.\.19/, bad)
})

t.test('a thread that lowers itself: its nice changes, the other threads keep theirs', { skip: linux ? false : 'Linux only' }, async t => {
  // this test file's own process: its main thread plays the control thread (the runtime's helper threads are others)
  const tid = process.pid
  const others = readdirSync(`/proc/${process.pid}/task`)
    .map(Number)
    .filter(x => x !== tid)
  t.ok(others.length > 0, 'the runtime has helper threads')
  const before = others.map(x => threadNice(process.pid, x))
  const r = lowerControlThread(5)
  if ('error' in r) return t.fail(r.error)
  t.same(r, { tid, nice: 5 })
  t.equal(threadNice(process.pid, tid), 5, 'the calling thread runs at nice 5, as /proc shows')
  t.equal(readFileSync(`/proc/${process.pid}/task/${tid}/comm`, 'utf8').trim(), 'tundra-control', 'and is named')
  t.same(
    others.map(x => threadNice(process.pid, x)),
    before,
    'the other threads keep their nice values',
  )
})

t.test(
  'the runtime helper threads (still named "node") go below the packet thread; the caller and named threads do not',
  { skip: linux ? false : 'Linux only' },
  async t => {
    const pid = process.pid
    const comm = (tid: number): string => readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
    // the helpers carry the name the main thread had when they started (the test above renamed it: give it back)
    nameThread('node')
    const all = readdirSync(`/proc/${pid}/task`).map(Number)
    const helpers = all.filter(x => x !== pid && comm(x) === 'node')
    const named = all.filter(x => x !== pid && comm(x) !== 'node')
    nameThread('tundra-test') // helpers are found by the main thread's name: under another one, none match
    t.same(lowerRuntimeHelpers(7), { lowered: 0 }, "only threads with the main thread's name count as helpers")
    nameThread('node')
    t.ok(helpers.length > 0, 'the runtime has unnamed helper threads')
    const mainBefore = threadNice(pid, pid)
    const namedBefore = named.map(x => threadNice(pid, x))
    t.same(lowerRuntimeHelpers(0), { lowered: 0 }, 'nice 0 leaves them')
    t.same(
      helpers.map(x => threadNice(pid, x)),
      helpers.map(() => 0),
    )
    const r = lowerRuntimeHelpers(7)
    t.same(r, { lowered: helpers.length }, 'every helper is lowered')
    t.same(
      helpers.map(x => threadNice(pid, x)),
      helpers.map(() => 7),
      'at nice 7, as /proc shows',
    )
    t.equal(threadNice(pid, pid), mainBefore, 'the calling thread keeps its nice value')
    t.same(
      named.map(x => threadNice(pid, x)),
      namedBefore,
      'named threads keep theirs',
    )
    t.match(
      lowerRuntimeHelpers(3, '/nonexistent-task-dir'),
      { error: /cannot lower the runtime's helper threads to nice 3/ },
      'an unreadable task list is a line to log',
    )
  },
)

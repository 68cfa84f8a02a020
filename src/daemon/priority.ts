// Thread priorities of the agent process (ARCHITECTURE.md "Thread priorities"): the packet thread(s) keep nice 0, the
// control thread lowers its own to CONTROL_NICE, so on a busy core a packet that arrives while a change is being
// compiled is handled at once instead of after the compile's scheduler slice. Linux keeps the nice value per thread
// (setpriority(PRIO_PROCESS, tid) changes that thread only), which is what `os.setPriority(tid, nice)` calls.
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { setPriority } from 'node:os'

/**
 * The control thread's nice value. 5: a thread that wants the core back within its slice preempts a nice 5 thread
 * at once (weight 335 against 1024), yet within the agent's own group (a cgroup, or the session's autogroup) the
 * control thread still gets about a quarter of a core the packet thread keeps busy, and all of any core it leaves
 * idle. A quarter, not a tenth (nice 10): a change costs the control thread 1-9 ms of CPU at 20 000 services, and
 * at a tenth of a core that is up to 90 ms to the dataplane, past the 50 ms target (measured, ARCHITECTURE.md
 * "Thread priorities"). Other processes compete with the agent's group as a whole, whatever its threads' nice are.
 */
const CONTROL_NICE = 5
/** Most a nice value can be (Linux: -20..19); only lowering is done here, so 0..19. */
const MAX_NICE = 19
/** What `top -H` / /proc/<pid>/task/<tid>/comm shows for the control thread (15 characters at most). */
const CONTROL_THREAD_NAME = 'tundra-control'
/** Packet threads started as workers (tun.packetThreads > 1) are named this plus their index. */
export const PACKET_THREAD_NAME = 'tundra-packet'

/**
 * The control thread's nice value: TUNDRA_CONTROL_NICE (0..19; 0 leaves the thread as it is) when set, else
 * CONTROL_NICE. Anything else is refused.
 */
export function controlNice(env: string | undefined = process.env['TUNDRA_CONTROL_NICE']): number {
  if (env === undefined || env.trim() === '') return CONTROL_NICE
  const n = Number(env)
  if (!Number.isInteger(n) || n < 0 || n > MAX_NICE) throw new Error(`TUNDRA_CONTROL_NICE: expected an integer 0..${MAX_NICE}, got ${JSON.stringify(env)}`)
  return n
}

/** The calling thread's kernel id (Linux: /proc/thread-self links to <pid>/task/<tid>), or undefined elsewhere. */
function currentThreadId(): number | undefined {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop())
    return Number.isInteger(tid) && tid > 0 ? tid : undefined
  } catch {
    return undefined
  }
}

/** Names the calling thread (ps -L, top -H); best effort: a name is for people, nothing depends on it. */
export function nameThread(name: string): void {
  try {
    writeFileSync('/proc/thread-self/comm', name.slice(0, 15))
  } catch {
    /* not Linux, or /proc read-only: the thread keeps the runtime's name */
  }
}

/**
 * Names the calling thread the control thread and lowers its priority to `nice`. A refusal (no /proc, a seccomp
 * profile that forbids setpriority) is returned as a line to log once; the thread then runs at the priority it has.
 */
export function lowerControlThread(nice: number): { tid: number; nice: number } | { error: string } {
  nameThread(CONTROL_THREAD_NAME)
  if (nice === 0) return { error: 'TUNDRA_CONTROL_NICE is 0: the control thread keeps the packet thread’s priority' }
  const tid = currentThreadId()
  if (tid === undefined) return { error: 'cannot tell the control thread’s id (no /proc/thread-self): it keeps the packet thread’s priority' }
  try {
    setPriority(tid, nice)
  } catch (err) {
    return { error: `cannot lower the control thread’s priority to nice ${nice}: ${(err as Error).message}` }
  }
  return { tid, nice }
}

/**
 * Lowers the runtime's helper threads (V8's platform workers: concurrent marking, parallel compaction and sweeping
 * for every thread's heap) to `nice`. A helper is any thread other than the main one that still has the main thread's
 * name (the process's, `node`, which threads inherit when they start). Called by each control thread as it starts,
 * after it named itself: packet workers start only at its request and name themselves, and this also lowers a thread
 * started with the control worker, such as a module loader's hooks thread. Why: a major GC of the control thread's
 * heap (the whole cluster) ran its marking helpers at nice 0 on both CPUs, and the packet thread lost its core to
 * them for up to 26 ms (measured: ARCHITECTURE.md "Thread priorities"). The packet thread's own collections do not
 * wait for a helper that is not running: V8's main thread does the job's work itself. Returns how many were lowered,
 * or a line to log.
 */
export function lowerRuntimeHelpers(nice: number, taskDir = '/proc/self/task'): { lowered: number } | { error: string } {
  if (nice === 0) return { lowered: 0 }
  let lowered = 0
  try {
    const runtimeName = readFileSync(`${taskDir}/${process.pid}/comm`, 'utf8').trim()
    for (const d of readdirSync(taskDir)) {
      const tid = Number(d)
      if (!Number.isInteger(tid) || tid === process.pid) continue
      let comm: string
      try {
        comm = readFileSync(`${taskDir}/${d}/comm`, 'utf8').trim()
      } catch {
        continue // ended meanwhile
      }
      if (comm !== runtimeName) continue
      setPriority(tid, nice)
      lowered++
    }
  } catch (err) {
    return { error: `cannot lower the runtime's helper threads to nice ${nice}: ${(err as Error).message}` }
  }
  return { lowered }
}

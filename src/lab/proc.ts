// Processes that outlive `lab up`: started detached in a namespace, identified by PID plus start time, stopped by PID.
import { spawn } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs'

/** Field 22 of /proc/<pid>/stat (clock ticks after boot), or undefined when there is no such process or it is a zombie. */
export function procStartTime(pid: number): number | undefined {
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  // comm may hold spaces and parentheses: the fields after it start behind the last ')'
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined
  const t = Number(fields[19])
  return Number.isFinite(t) ? t : undefined
}

/** Alive and still the process we started (not a later process that reuses the PID). */
export function isOurs(p: { pid: number; startTime: number }): boolean {
  return procStartTime(p.pid) === p.startTime
}

/**
 * The wrapper that puts a command into a namespace with a hostname of its own: `ip netns exec` (which also bind-mounts
 * /etc/netns/<ns>/* over /etc), then a private UTS namespace. Every step execs, so the PID is the command's.
 */
export function inNamespace(ns: string, hostname: string, argv: readonly string[]): string[] {
  return ['ip', 'netns', 'exec', ns, 'unshare', '--uts', 'sh', '-c', 'hostname "$0" && exec "$@"', hostname, ...argv]
}

export interface Detached {
  readonly pid: number
  readonly startTime: number
}

/** Starts `argv` in its own session (so it survives us and our terminal), output appended to `log`. */
export async function startDetached(argv: readonly string[], log: string): Promise<Detached> {
  const fd = openSync(log, 'a')
  try {
    const [file, ...args] = argv
    const child = spawn(file!, args, { detached: true, stdio: ['ignore', fd, fd] })
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('error', reject)
      child.once('spawn', () => resolve(child.pid!))
    })
    child.unref()
    const startTime = procStartTime(pid)
    if (startTime === undefined) throw new Error(`${argv.join(' ')} exited at once; see ${log}`)
    return { pid, startTime }
  } finally {
    closeSync(fd)
  }
}

/** The last lines of a log, to put into an error message. */
export function logTail(path: string, lines = 8): string {
  if (!existsSync(path)) return ''
  const text = readFileSync(path, 'utf8').trimEnd()
  return text.split('\n').slice(-lines).join('\n')
}

const sleep = (ms: number): Promise<void> => new Promise(r => setTimeout(r, ms))

/** SIGTERM to each process that is still ours, SIGKILL after `graceMs` to those that stay. Returns the PIDs signalled. */
export async function stopProcesses(procs: readonly { pid: number; startTime: number }[], graceMs = 3000): Promise<number[]> {
  const live = procs.filter(isOurs)
  for (const p of live) {
    try {
      process.kill(p.pid, 'SIGTERM')
    } catch {
      /* exited meanwhile */
    }
  }
  const end = Date.now() + graceMs
  while (live.some(isOurs) && Date.now() < end) await sleep(25)
  for (const p of live.filter(isOurs)) {
    try {
      process.kill(p.pid, 'SIGKILL')
    } catch {
      /* exited meanwhile */
    }
  }
  const hardEnd = Date.now() + 2000
  while (live.some(isOurs) && Date.now() < hardEnd) await sleep(25)
  return live.map(p => p.pid)
}

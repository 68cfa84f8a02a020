// Network-namespace plumbing for labs, tests and benchmarks: every namespace, link and process made here is
// registered and removed again (on success, on failure, on signals, and by a sweep after a crash).
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'

export interface RunResult {
  code: number
  stdout: string
  stderr: string
}

export class CommandError extends Error {
  readonly code = 'ECOMMAND' as const
  constructor(
    readonly cmd: readonly string[],
    readonly result: RunResult,
  ) {
    super(`${cmd.join(' ')} exited ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`)
  }
}

/** Runs a command to completion; never throws for a non-zero exit (see `must`). */
export function run(cmd: readonly string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise(resolve => {
    const [file, ...args] = cmd
    const child = execFile(file!, args, { maxBuffer: 64 << 20, timeout: opts.timeoutMs ?? 60_000, env: opts.env ?? process.env }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err && code === 1 ? err.message : '') })
    })
    if (opts.input !== undefined) child.stdin?.end(opts.input)
  })
}

/** Runs a command and throws CommandError unless it exits 0. */
export async function must(cmd: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await run(cmd, opts)
  if (r.code !== 0) throw new CommandError(cmd, r)
  return r.stdout
}

export const isRoot = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0

export function haveCommand(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Namespace names carry the owner's PID so a later sweep can tell abandoned ones: `<prefix>-<pid>-<n>-<name>`. */
const NAME_RE = /^(tt|tundra)-(\d+)-/

export function listNamespaces(): string[] {
  try {
    return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map(l => l.split(' ')[0] ?? '')
      .filter(Boolean)
  } catch {
    return []
  }
}

/** Kills every process inside the namespace (they are ours: we made the namespace) and deletes it. */
export function deleteNamespaceSync(ns: string): void {
  for (let attempt = 0; attempt < 20; attempt++) {
    let pids: number[] = []
    try {
      pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).map(Number)
    } catch {
      /* gone */
    }
    if (pids.length === 0) break
    for (const pid of pids) {
      try {
        process.kill(pid, attempt < 3 ? 'SIGTERM' : 'SIGKILL')
      } catch {
        /* exited */
      }
    }
    execFileSync('sleep', ['0.05'])
  }
  try {
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' })
  } catch {
    /* already gone */
  }
}

/** Removes namespaces left by processes that died without cleaning up (test runs killed with SIGKILL). */
export function sweepAbandoned(prefix: 'tt' | 'tundra' = 'tt'): string[] {
  const swept: string[] = []
  for (const ns of listNamespaces()) {
    const m = NAME_RE.exec(ns)
    if (!m || m[1] !== prefix) continue
    if (pidAlive(Number(m[2]))) continue
    deleteNamespaceSync(ns)
    swept.push(ns)
  }
  return swept
}

const live = new Set<Topology>()
let hooked = false
function hookExit(): void {
  if (hooked) return
  hooked = true
  process.on('exit', () => {
    for (const t of live) t.cleanupSync()
  })
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const t of live) t.cleanupSync()
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1))
    })
  }
}

let counter = 0

/** A set of namespaces, links and processes with one owner and one cleanup. */
export class Topology {
  readonly id: string
  private readonly namespaces: string[] = []
  private readonly procs = new Set<ChildProcess>()

  constructor(
    readonly prefix: 'tt' | 'tundra' = 'tt',
    tag?: string,
  ) {
    this.id = `${prefix}-${process.pid}-${++counter}${tag ? `-${tag}` : ''}`
    live.add(this)
    hookExit()
  }

  /** Creates namespace `<id>-<name>` with loopback up; returns its full name. */
  async ns(name: string): Promise<string> {
    const full = `${this.id}-${name}`
    await must(['ip', 'netns', 'add', full])
    this.namespaces.push(full)
    await must(['ip', '-n', full, 'link', 'set', 'lo', 'up'])
    return full
  }

  /** A veth pair made directly inside the two namespaces (never in the root namespace). */
  async veth(nsA: string, ifA: string, nsB: string, ifB: string, opts: { mtu?: number } = {}): Promise<void> {
    await must(['ip', '-n', nsA, 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB])
    if (opts.mtu) {
      await must(['ip', '-n', nsA, 'link', 'set', ifA, 'mtu', String(opts.mtu)])
      await must(['ip', '-n', nsB, 'link', 'set', ifB, 'mtu', String(opts.mtu)])
    }
    await must(['ip', '-n', nsA, 'link', 'set', ifA, 'up'])
    await must(['ip', '-n', nsB, 'link', 'set', ifB, 'up'])
  }

  async addr(ns: string, dev: string, cidr: string): Promise<void> {
    await must(['ip', '-n', ns, 'addr', 'add', cidr, 'dev', dev])
  }

  /** `ip -n <ns> <args…>` */
  ip(ns: string, ...args: string[]): Promise<string> {
    return must(['ip', '-n', ns, ...args])
  }

  async sysctl(ns: string, key: string, value: string): Promise<void> {
    await must(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', `${key}=${value}`])
  }

  /** Runs a command inside the namespace to completion. */
  exec(ns: string, cmd: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> {
    return run(['ip', 'netns', 'exec', ns, ...cmd], opts)
  }

  /** Starts a long-running process inside the namespace; it is killed (by PID) at cleanup. */
  spawn(ns: string, cmd: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'], ...opts })
    this.procs.add(child)
    child.on('exit', () => this.procs.delete(child))
    return child
  }

  /** Stops a process this topology started: SIGTERM, then SIGKILL after `graceMs`. */
  async stop(child: ChildProcess, graceMs = 3000): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
    const done = new Promise<void>(resolve => child.once('exit', () => resolve()))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
    await done
    clearTimeout(timer)
  }

  get names(): readonly string[] {
    return this.namespaces
  }

  cleanupSync(): void {
    for (const child of this.procs) {
      try {
        child.kill('SIGKILL')
      } catch {
        /* exited */
      }
    }
    this.procs.clear()
    for (const ns of this.namespaces.splice(0).reverse()) deleteNamespaceSync(ns)
    live.delete(this)
  }

  async cleanup(): Promise<void> {
    for (const child of [...this.procs]) await this.stop(child, 1000)
    this.cleanupSync()
  }
}

/** Waits until `probe` resolves true, polling; throws with `what` after `timeoutMs`. */
export async function waitFor(what: string, probe: () => Promise<boolean> | boolean, timeoutMs = 10_000, everyMs = 50): Promise<void> {
  const end = Date.now() + timeoutMs
  for (;;) {
    if (await probe()) return
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise(r => setTimeout(r, everyMs))
  }
}

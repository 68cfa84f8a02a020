// `tundra lab exec`: runs a command as if inside a pod (its network namespace, resolv.conf, hosts file and hostname),
// on a node, or on the host outside the cluster.
import { spawn } from 'node:child_process'
import { constants } from 'node:os'
import { run, type RunResult } from '../netns/netns'
import { inNamespace } from './proc'
import { LabError, loadLabState, type LabState } from './state'

export type ExecTarget = { readonly pod: string; readonly namespace?: string } | { readonly node: string } | { readonly external: true }

export interface LabExecOptions {
  /** lab name; may be left out when exactly one lab is up */
  readonly name?: string
  readonly target: ExecTarget
  readonly cmd: readonly string[]
  readonly input?: string
  readonly timeoutMs?: number
}

/** The full argv that runs `cmd` at `target` (ip netns exec … unshare --uts … hostname … exec cmd). */
export function execArgv(state: LabState, target: ExecTarget, cmd: readonly string[]): string[] {
  if (cmd.length === 0) throw new LabError('give a command to run after --')
  if ('pod' in target) {
    const namespace = target.namespace ?? 'default'
    const pod = state.pods.find(p => p.name === target.pod && p.namespace === namespace)
    if (!pod) {
      const names = state.pods.map(p => `${p.namespace}/${p.name}`)
      throw new LabError(`no pod ${namespace}/${target.pod} in lab ${state.name} (pods: ${names.join(', ') || 'none'})`)
    }
    return inNamespace(pod.ns, pod.hostname, cmd)
  }
  if ('node' in target) {
    const node = state.nodes.find(n => n.name === target.node)
    if (!node) throw new LabError(`no node ${target.node} in lab ${state.name} (nodes: ${state.nodes.map(n => n.name).join(', ')})`)
    return inNamespace(node.ns, node.name, cmd)
  }
  return inNamespace(state.external.ns, 'external', cmd)
}

/** Runs the command to completion and returns its exit code and output (for tests and scripts). */
export async function labExec(opts: LabExecOptions): Promise<RunResult> {
  const argv = execArgv(loadLabState(opts.name), opts.target, opts.cmd)
  return run(argv, { ...(opts.input === undefined ? {} : { input: opts.input }), timeoutMs: opts.timeoutMs ?? 60_000 })
}

/** Runs the command with our stdin/stdout/stderr; resolves with its exit code (128+n when killed by signal n). */
export function labExecInteractive(opts: Omit<LabExecOptions, 'input' | 'timeoutMs'>): Promise<number> {
  const [file, ...args] = execArgv(loadLabState(opts.name), opts.target, opts.cmd)
  return new Promise((resolve, reject) => {
    const child = spawn(file!, args, { stdio: 'inherit' })
    child.once('error', reject)
    child.once('exit', (code, signal) => {
      if (code !== null) resolve(code)
      else resolve(128 + (signal ? constants.signals[signal] : 1))
    })
  })
}

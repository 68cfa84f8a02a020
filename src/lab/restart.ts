// `tundra lab restart`: stop a node's tundra (gracefully, or with SIGKILL) and start it again with the same command,
// as a rolling update of the DaemonSet would. Established flows should survive the graceful case.
import { existsSync } from 'node:fs'
import { waitFor } from '../netns/netns'
import { isOurs, logTail, startDetached, stopProcesses } from './proc'
import { LabError, loadLabState, saveState } from './state'
import { canConnect } from './up'

export interface RestartResult {
  readonly node: string
  readonly oldPid: number
  readonly pid: number
  readonly downMs: number
}

export async function labRestartAgent(opts: { name?: string; node?: string; kill?: boolean; timeoutMs?: number }): Promise<RestartResult> {
  const state = loadLabState(opts.name)
  const node = opts.node ? state.nodes.find(n => n.name === opts.node) : state.nodes[0]
  if (!node) throw new LabError(`no node ${opts.node} in lab ${state.name}`)
  const proc = state.processes.find(p => p.role === 'agent' && p.owner === node.name)
  if (!proc || !node.control) throw new LabError(`lab ${state.name} runs no tundra agent on ${node.name}`)
  const t0 = Date.now()
  if (opts.kill) {
    if (isOurs(proc)) process.kill(proc.pid, 'SIGKILL')
  }
  await stopProcesses([proc], opts.kill ? 0 : 5000)
  // argv was recorded with the namespace wrapper around it: start exactly the same thing.
  const started = await startDetached(proc.argv, proc.log)
  const next = { ...proc, pid: started.pid, startTime: started.startTime }
  state.processes = state.processes.map(p => (p === proc ? next : p))
  saveState(state)
  const control = node.control
  await waitFor(
    `the tundra agent on ${node.name} to answer again`,
    async () => {
      if (!isOurs(next)) throw new LabError(`the restarted agent on ${node.name} exited:\n${logTail(next.log)}`)
      return existsSync(control) && canConnect(control)
    },
    opts.timeoutMs ?? 30_000,
    20,
  )
  return { node: node.name, oldPid: proc.pid, pid: started.pid, downMs: Date.now() - t0 }
}

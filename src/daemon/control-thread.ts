// The agent's control thread (a worker_threads Worker started by host.ts): runs `tundra agent` or `tundra run`'s
// control plane and talks to the packet thread through the link. A failure to start is reported and ends the
// process (there is no dataplane to keep yet); a failure later ends only this thread, and the host starts another.
import { parentPort, workerData } from 'node:worker_threads'
import { Link } from '../agent/link'
import { Agent } from '../agent/agent'
import { readAgentConfig } from '../agent/config-file'
import { inspectHandlers } from '../inspect/handlers'
import { runNode } from './run-node'
import type { ControlEntry, HostEvent } from './host'
import { logLine } from './log'
import { startWebView } from '../web/server'
import { agentWebSettings } from '../web/settings'
import { controlNice, lowerControlThread, lowerRuntimeHelpers } from './priority'

const log = logLine
const { entry, restarts } = workerData as { entry: ControlEntry; restarts: number }
const link = new Link(parentPort!)
const testHooks = process.env['TUNDRA_TEST_HOOKS'] === '1'

async function main(): Promise<void> {
  // below the packet thread: a compile waits for the core, a packet does not (ARCHITECTURE.md "Thread priorities")
  const nice = controlNice()
  const prio = lowerControlThread(nice)
  if ('error' in prio) log(`[agent] ${prio.error}`)
  const helpers = lowerRuntimeHelpers(nice)
  if ('error' in helpers) log(`[agent] ${helpers.error}`)
  let running: { stop(): Promise<void> }
  let logStop: (signal: string) => void
  if (entry.kind === 'agent') {
    const cfg = readAgentConfig(entry.config)
    const agent = await Agent.start(cfg, { packet: link, cleanupOnExit: entry.cleanupOnExit, handlers: inspectHandlers, testHooks, log })
    running = agent
    const webCfg = agentWebSettings(entry.web, cfg.web)
    if (webCfg !== undefined) {
      const web = await startWebView(agent, { ...webCfg, log })
      running = { stop: () => Promise.all([web.close(), agent.stop()]).then(() => {}) }
    }
    logStop = sig => agent.log(`[agent] ${sig}: stopping`)
  } else {
    running = await runNode(entry.options, link, log, testHooks)
    logStop = sig => log(`[run] ${sig}: stopping (conntrack snapshot kept for the next start)`)
  }
  if (restarts > 0) log(`[agent] control thread restarted (${restarts}): desired state re-read and installed`)
  link.onEvent(body => {
    const ev = body as HostEvent
    if (ev.type !== 'signal') return
    logStop(ev.signal)
    running
      .stop()
      .then(
        () => link.call({ op: 'exit', code: 0 }),
        err => {
          log(`[agent] stop: ${(err as Error).message}`)
          return link.call({ op: 'exit', code: 1 })
        },
      )
      .catch(() => {
        /* the host is gone already */
      })
  })
}

main().catch((err: unknown) => {
  log(`tundra: ${(err as Error).message ?? String(err)}`)
  link.call({ op: 'exit', code: 1 }).catch(() => process.exit(1))
})

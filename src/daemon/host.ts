// The packet thread's side of a running agent (the process's main thread): it owns the TUN and the packet path, and
// runs the agent's control plane on a worker thread (control-thread.ts). If the control thread dies, the packet path
// keeps serving the last tables it installed; the death is logged and counted, and a new control thread takes over
// (it re-reads the desired state and installs it in full).
import { Worker } from 'node:worker_threads'
import { join } from 'node:path'
import { openTun, type TunDevice, type TunOptions } from '../device/tun'
import { Link } from '../agent/link'
import { PacketPath, type PacketInit, type PacketRequest } from '../agent/packet-path'
import { configureLogging, logLine, type LogFormat } from './log'

/** What the control thread runs: `tundra agent` (a config file) or `tundra run` (its parsed options). */
export type ControlEntry =
  | {
      readonly kind: 'agent'
      readonly config: string
      readonly cleanupOnExit: boolean
      readonly web?: { readonly addr: string; readonly allowRemote: boolean }
    }
  | { readonly kind: 'run'; readonly options: Record<string, unknown> }

/** Requests only the host answers (the rest go to the packet path). */
export type HostRequest =
  | { op: 'open'; tun: TunOptions }
  | { op: 'init'; init: PacketInit; localMac: Uint8Array }
  | { op: 'start'; dnsSockets?: { host: string; port: number } }
  | { op: 'exit'; code: number }
  | { op: 'logging'; format: LogFormat; verbosity: number }
  | PacketRequest

/** Events the host sends the control thread. */
export type HostEvent = { type: 'signal'; signal: string }

const RESTART_DELAY_MS = 1000

export function hostAgent(entry: ControlEntry): void {
  const log = logLine
  let dev: TunDevice | undefined
  let path: PacketPath | undefined
  let started = false
  let restarts = 0
  let exiting = false
  let current: { worker: Worker; link: Link } | undefined

  const exit = async (code: number): Promise<void> => {
    if (exiting) return
    exiting = true
    try {
      await path?.stop()
      await dev?.close()
    } finally {
      process.exit(code)
    }
  }

  const handle = async (body: unknown): Promise<unknown> => {
    const req = body as HostRequest
    switch (req.op) {
      case 'open':
        dev ??= await openTun(req.tun)
        return { name: dev.name, vnetHdr: dev.vnetHdr, offloadsAccepted: dev.offloadsAccepted }
      case 'init':
        if (dev === undefined) throw new Error('init before open')
        if (path === undefined) {
          path = new PacketPath(dev, req.init, log)
          path.setLocalMac(Buffer.from(req.localMac))
        } else {
          // a new control thread: its first tables replace the ones the packet path kept serving
          path.handle({ op: 'nat', install: req.init.nat })
          path.handle({ op: 'zone', install: req.init.zone })
          path.handle({ op: 'peers', peers: req.init.loop.peers })
        }
        return null
      case 'start':
        if (path === undefined) throw new Error('start before init')
        if (!started) {
          started = true
          await path.start(req.dnsSockets)
        }
        return null
      case 'logging':
        configureLogging(req)
        return null
      case 'exit':
        setImmediate(() => {
          void exit(req.code)
        })
        return null
      case 'counters': {
        if (path === undefined) throw new Error('the packet path is not running')
        return { ...path.counters(), control_restarts: restarts }
      }
      default:
        if (path === undefined) throw new Error('the packet path is not running')
        return path.handle(req)
    }
  }

  const spawn = (): void => {
    const worker = new Worker(join(__dirname, 'control-thread.js'), { workerData: { entry, restarts } })
    const link = new Link(worker)
    link.serve(handle)
    current = { worker, link }
    const gone = (why: string): void => {
      link.close(why)
      if (current?.worker !== worker) return
      current = undefined
      if (exiting) return
      if (path === undefined) {
        // it died before the dataplane ran: nothing to keep serving (bad config, say): exit as the old agent did
        log(`[agent] ${why}`)
        void exit(1)
        return
      }
      restarts++
      log(`[agent] control thread ${why}; the dataplane keeps serving the last tables (control restarts: ${restarts}); restarting it in ${RESTART_DELAY_MS} ms`)
      setTimeout(spawn, RESTART_DELAY_MS)
    }
    worker.on('error', err => gone(`failed: ${err.stack ?? err.message}`))
    worker.on('exit', code => gone(`exited with code ${code}`))
  }

  let signalled = false
  const onSignal = (signal: string): void => {
    if (signalled) {
      void exit(1)
      return
    }
    signalled = true
    if (current) current.link.emit({ type: 'signal', signal } satisfies HostEvent)
    else void exit(0)
  }
  process.on('SIGTERM', () => onSignal('SIGTERM'))
  process.on('SIGINT', () => onSignal('SIGINT'))
  spawn()
}

// The packet thread's side of a running agent (the process's main thread): it owns the TUN and the packet path, and
// runs the agent's control plane on a worker thread (control-thread.ts). If the control thread dies, the packet path
// keeps serving the last tables it installed; the death is logged and counted, and a new control thread takes over
// (it re-reads the desired state and installs it in full).
//
// With tun.packetThreads > 1 this thread moves no packets: it opens one TUN queue per packet thread (packet-thread.ts)
// and the conntrack they share, hands each thread a copy of every image, fans requests out (and sums counters), and
// restarts a packet thread that dies with the tables installed since and the shared conntrack as it is.
import { Worker } from 'node:worker_threads'
import { join } from 'node:path'
import { closeTunQueues, openTun, openTunQueues, type TunDevice, type TunOptions, type TunQueues } from '../device/tun'
import { Link } from '../agent/link'
import { mergeEndpointSnapshots, splitRelease, type EndpointSnapshot } from '../nat/signals'
import { PacketPath, mergeReplies, type PacketInit, type PacketRequest, type PeerSpec } from '../agent/packet-path'
import { isFullInstall, natInstallCopy, zoneInstallCopy, type NatInstall, type ZoneInstall } from '../agent/crossing'
import { Conntrack, sharedConntrack } from '../nat/conntrack'
import { sharedAffinity } from '../nat/select'
import type { SharedTables } from '../nat/engine'
import type { PacketThreadData, PacketThreadRequest } from './packet-thread'
import { configureLogging, logLine, type LogFormat, type LogSettings } from './log'

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
  | { op: 'open'; tun: TunOptions; packetThreads?: number }
  | { op: 'init'; init: PacketInit; localMac: Uint8Array }
  | { op: 'start'; dnsSockets?: { host: string; port: number } }
  | { op: 'exit'; code: number }
  | { op: 'logging'; format: LogFormat; verbosity: number }
  /** TUNDRA_TEST_HOOKS: packet thread `index` fails on purpose (tests of the restart) */
  | { op: 'testCrashPacketThread'; index: number }
  | PacketRequest

/** Events the host sends the control thread. */
export type HostEvent = { type: 'signal'; signal: string }

const RESTART_DELAY_MS = 1000
/** A packet thread that died is restarted this soon (packets wait in its TUN queue meanwhile). */
const PACKET_RESTART_DELAY_MS = 100
/** Most packet threads (one TUN queue each; the kernel allows 256 queues, the device layer 64). */
const MAX_PACKET_THREADS = 64

/**
 * sessionAffinity pins the packet threads share (a single thread's table grows; a shared one cannot): client x
 * service-port pairs at most, IPv4 / IPv6. Beyond, a new connection still gets an endpoint, without a pin.
 */
const AFFINITY_PINS = 65536
const AFFINITY_PINS6 = 16384

/** Requests the control thread makes that one packet thread answers for all (the conntrack is shared). */
const FIRST_THREAD_OPS = new Set(['ctChunk', 'ctDelete', 'lookups', 'capture'])
/** Requests every packet thread answers, the replies merged. */
const SUMMED_OPS = new Set(['counters', 'dnsMetrics', 'serviceCounters'])

/**
 * Several packet threads behind the host: one TUN queue each, one shared conntrack, a copy of each image per thread.
 * Keeps what a restarted thread needs: the images installed since the last full one, the peers.
 */
class PacketThreads {
  private readonly threads: ({ worker: Worker; link: Link; owner: number } | undefined)[]
  private readonly shared: SharedTables
  private readonly views: Conntrack[]
  private natLog: NatInstall[]
  private zoneLog: ZoneInstall[]
  private peers: readonly PeerSpec[]
  private restore: PacketInit['restore']
  private started: { dnsSockets?: { host: string; port: number } } | undefined
  private nextOwner = 1
  private stopping = false
  restarts = 0

  constructor(
    private readonly queues: TunQueues,
    private readonly init: PacketInit,
    private readonly localMac: Uint8Array,
    private readonly logging: () => LogSettings,
    private readonly log: (line: string) => void,
  ) {
    const e = init.engine
    this.shared = {
      v4: sharedConntrack(4, e.conntrackMax ?? 262144, e.seed),
      v6: sharedConntrack(6, e.conntrackMax6 ?? 65536, e.seed === undefined ? undefined : e.seed ^ 0x66),
      aff4: sharedAffinity(4, AFFINITY_PINS),
      aff6: sharedAffinity(6, AFFINITY_PINS6),
      owner: 0,
    }
    // the host's own views, only to release a lock a dead thread held
    this.views = [new Conntrack({ family: 4, shared: this.shared.v4 }), new Conntrack({ family: 6, shared: this.shared.v6 })]
    this.natLog = [init.nat]
    this.zoneLog = [init.zone]
    this.peers = init.loop.peers
    this.restore = init.restore
    this.threads = queues.fds.map(() => undefined)
    for (let i = 0; i < this.threads.length; i++) this.spawn(i)
  }

  private spawn(i: number): void {
    const owner = this.nextOwner++
    const [nat, ...replayNat] = this.natLog.map(img => natInstallCopy(img))
    const [zone, ...replayZone] = this.zoneLog.map(img => zoneInstallCopy(img))
    const { restore: _, ...init } = this.init
    const data: PacketThreadData = {
      index: i,
      queues: this.queues,
      shared: { ...this.shared, owner },
      // the conntrack snapshot is loaded once, by the first thread's first start
      init: {
        ...init,
        nat: nat!.install,
        zone: zone!.install,
        loop: { ...init.loop, peers: this.peers },
        ...(i === 0 && this.restore ? { restore: this.restore } : {}),
      },
      localMac: this.localMac,
      replayNat: replayNat.map(r => r.install),
      replayZone: replayZone.map(r => r.install),
      logging: this.logging(),
    }
    if (i === 0) this.restore = undefined
    const transfer = [nat!, ...replayNat, zone!, ...replayZone].flatMap(r => r.transfer)
    const worker = new Worker(join(__dirname, 'packet-thread.js'), { workerData: data, transferList: transfer })
    const link = new Link(worker)
    this.threads[i] = { worker, link, owner }
    const gone = (why: string): void => {
      link.close(why)
      if (this.threads[i]?.worker !== worker) return
      this.threads[i] = undefined
      for (const v of this.views) if (v.releaseIfHeldBy(owner)) this.log(`[agent] packet thread ${i} died holding the IPv${v.family} conntrack lock: released`)
      if (this.stopping) return
      this.restarts++
      this.log(`[agent] packet thread ${i} ${why}; restarting it in ${PACKET_RESTART_DELAY_MS} ms (packet thread restarts: ${this.restarts})`)
      setTimeout(() => {
        if (this.stopping) return
        this.spawn(i)
        if (this.started !== undefined)
          void this.call(i, { op: 'start', ...(i === 0 && this.started.dnsSockets ? { dnsSockets: this.started.dnsSockets } : {}) })
      }, PACKET_RESTART_DELAY_MS)
    }
    worker.on('error', err => gone(`failed: ${err.stack ?? err.message}`))
    worker.on('exit', code => gone(`exited with code ${code}`))
  }

  private call(i: number, req: PacketThreadRequest, transfer: ArrayBuffer[] = []): Promise<unknown> {
    const t = this.threads[i]
    if (t === undefined) return Promise.reject(new Error(`packet thread ${i} is restarting`))
    return t.link.call(req, transfer)
  }

  /** Test hook: thread i fails (it answers first). */
  crash(i: number): Promise<unknown> {
    return this.call(i, { op: 'testCrash' }).catch(() => null)
  }

  async start(dnsSockets?: { host: string; port: number }): Promise<void> {
    this.started = dnsSockets === undefined ? {} : { dnsSockets }
    await Promise.all(this.threads.map((_, i) => this.call(i, { op: 'start', ...(i === 0 && dnsSockets ? { dnsSockets } : {}) })))
  }

  async stop(): Promise<void> {
    this.stopping = true
    await Promise.allSettled(this.threads.map((_, i) => this.call(i, { op: 'stop' })))
    await Promise.allSettled(this.threads.map(t => t?.worker.terminate()))
    closeTunQueues(this.queues)
  }

  /** One request of the control thread: installs go to every thread (each its own copy), reads as FIRST/SUMMED_OPS say. */
  async handle(req: PacketRequest): Promise<unknown> {
    const n = this.threads.length
    switch (req.op) {
      case 'nat': {
        this.natLog = isFullInstall(req.install) ? [req.install] : [...this.natLog, req.install]
        const r = await Promise.all(
          this.threads.map((_, i) => {
            const c = natInstallCopy(req.install)
            return this.call(i, { op: 'nat', install: c.install }, c.transfer)
          }),
        )
        return r[0]
      }
      case 'zone': {
        this.zoneLog = isFullInstall(req.install) ? [req.install] : [...this.zoneLog, req.install]
        await Promise.all(
          this.threads.map((_, i) => {
            const c = zoneInstallCopy(req.install)
            return this.call(i, { op: 'zone', install: c.install }, c.transfer)
          }),
        )
        return null
      }
      case 'peers':
        this.peers = req.peers
        await Promise.all(this.threads.map((_, i) => this.call(i, req)))
        return null
      case 'endpoints': {
        // each thread's own book (per-engine slots); the release list splits back by thread (signals.ts)
        const settled = await Promise.allSettled(
          Array.from({ length: n }, (_, i) => this.call(i, { op: 'endpoints', release: splitRelease(req.release, i, n) })),
        )
        return mergeEndpointSnapshots(settled.map(r => (r.status === 'fulfilled' ? (r.value as EndpointSnapshot) : undefined)))
      }
      default: {
        if (FIRST_THREAD_OPS.has(req.op)) return this.call(0, req)
        if (!SUMMED_OPS.has(req.op)) throw new Error(`no packet-thread route for ${req.op}`)
        // a thread being restarted is left out (its counters started again from zero anyway)
        const settled = await Promise.allSettled(Array.from({ length: n }, (_, i) => this.call(i, req)))
        const replies = settled.map(r => (r.status === 'fulfilled' ? r.value : undefined))
        const answered = replies.filter(r => r !== undefined)
        if (answered.length === 0) throw (settled[0] as PromiseRejectedResult).reason
        const merged = mergeReplies(answered) as Record<string, number>
        // how the kernel spread packets over the queues (tun's automq steers by flow hash)
        if (req.op === 'counters')
          replies.forEach((r, i) => (merged[`device_packets_thread_${i}`] = (r as Record<string, number> | undefined)?.['device_packets'] ?? 0))
        return merged
      }
    }
  }
}

export function hostAgent(entry: ControlEntry): void {
  const log = logLine
  let dev: TunDevice | undefined
  let path: PacketPath | undefined
  /** tun.packetThreads > 1: the queues, then the threads (no `dev`/`path` on this thread) */
  let queues: TunQueues | undefined
  let threads: PacketThreads | undefined
  let logging: LogSettings = { format: process.env['TUNDRA_LOG_FORMAT'] === 'json' ? 'json' : 'text', verbosity: 0 }
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
      await threads?.stop()
      if (threads === undefined && queues !== undefined) closeTunQueues(queues)
    } finally {
      process.exit(code)
    }
  }

  const handle = async (body: unknown): Promise<unknown> => {
    const req = body as HostRequest
    switch (req.op) {
      case 'open': {
        const n = req.packetThreads ?? 1
        if (!(Number.isInteger(n) && n >= 1 && n <= MAX_PACKET_THREADS))
          throw new Error(`tun.packetThreads: expected an integer 1..${MAX_PACKET_THREADS}, got ${n}`)
        if (n > 1) {
          // each packet thread reads its own queue inline: as many queues as threads, at least
          queues ??= await openTunQueues({ ...req.tun, queues: Math.max(n, req.tun.queues ?? 1), io: 'inline', writeMode: 'js' })
          if (queues.fds.length !== n) {
            // more queues than threads: the extra ones would never be read
            throw new Error(`tun.queues (${queues.fds.length}) must equal tun.packetThreads (${n}) when packetThreads > 1`)
          }
          return { name: queues.name, vnetHdr: queues.vnetHdr, offloadsAccepted: { flags: queues.offloads }, qdisc: queues.qdisc, packetThreads: n }
        }
        dev ??= await openTun(req.tun)
        return { name: dev.name, vnetHdr: dev.vnetHdr, offloadsAccepted: dev.offloadsAccepted, qdisc: dev.qdisc }
      }
      case 'init':
        if (queues !== undefined) {
          if (threads === undefined) threads = new PacketThreads(queues, req.init, req.localMac, () => logging, log)
          else {
            await threads.handle({ op: 'nat', install: req.init.nat })
            await threads.handle({ op: 'zone', install: req.init.zone })
            await threads.handle({ op: 'peers', peers: req.init.loop.peers })
          }
          return null
        }
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
        if (threads !== undefined) {
          if (!started) {
            started = true
            await threads.start(req.dnsSockets)
          }
          return null
        }
        if (path === undefined) throw new Error('start before init')
        if (!started) {
          started = true
          await path.start(req.dnsSockets)
        }
        return null
      case 'logging':
        logging = configureLogging(req)
        return null
      case 'testCrashPacketThread':
        if (threads === undefined) throw new Error('there are no packet threads to crash (tun.packetThreads is 1)')
        return threads.crash(req.index)
      case 'exit':
        setImmediate(() => {
          void exit(req.code)
        })
        return null
      case 'counters': {
        if (threads !== undefined) {
          const c = (await threads.handle(req)) as Record<string, number>
          return { ...c, control_restarts: restarts, packet_thread_restarts: threads.restarts }
        }
        if (path === undefined) throw new Error('the packet path is not running')
        return { ...path.counters(), control_restarts: restarts }
      }
      default:
        if (threads !== undefined) return threads.handle(req)
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
      if (path === undefined && threads === undefined) {
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

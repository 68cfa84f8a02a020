// One packet thread of several (a worker_threads Worker started by host.ts when tun.packetThreads > 1): it adopts one
// queue of the multi-queue TUN, reads it inline, and runs its own Dataplane / NatEngine / DnsServer over its own copy
// of the installed tables and the conntrack every packet thread shares (ARCHITECTURE.md "Packet threads"). It answers
// the host's requests (the same PacketRequests a single packet thread answers) through a Link.
import { parentPort, workerData } from 'node:worker_threads'
import { adoptTunQueue, type TunQueues } from '../device/tun'
import { Link } from '../agent/link'
import { PacketPath, type PacketInit, type PacketRequest } from '../agent/packet-path'
import type { NatInstall, ZoneInstall } from '../agent/crossing'
import type { SharedTables } from '../nat/engine'
import { configureLogging, logLine, type LogFormat } from './log'
import { nameThread, PACKET_THREAD_NAME } from './priority'

/** What the host gives a packet thread when it starts it. */
export interface PacketThreadData {
  /** 0.. packetThreads-1: thread 0 also serves the DNS sockets and the conntrack requests */
  readonly index: number
  readonly queues: TunQueues
  readonly shared: SharedTables
  readonly init: PacketInit
  readonly localMac: Uint8Array
  /** images installed after init.nat / init.zone (a restarted thread catches up on them before it reads a packet) */
  readonly replayNat: readonly NatInstall[]
  readonly replayZone: readonly ZoneInstall[]
  readonly logging?: { format: LogFormat; verbosity: number }
}

/** Requests only a packet thread's host sends (the rest are PacketRequests). */
export type PacketThreadRequest = { op: 'start'; dnsSockets?: { host: string; port: number } } | { op: 'stop' } | { op: 'testCrash' } | PacketRequest

function main(): void {
  const data = workerData as PacketThreadData
  nameThread(`${PACKET_THREAD_NAME}${data.index}`)
  if (data.logging !== undefined) configureLogging(data.logging)
  const log = (line: string): void => logLine(line.replace(/^\[agent\] /, `[agent] packet thread ${data.index}: `))
  const dev = adoptTunQueue(data.queues, 0 + data.index, err => log(`[agent] ${err.message}`))
  const path = new PacketPath(dev, { ...data.init, engine: { ...data.init.engine, shared: data.shared } }, log)
  path.setLocalMac(Buffer.from(data.localMac))
  for (const install of data.replayNat) path.handle({ op: 'nat', install })
  for (const install of data.replayZone) path.handle({ op: 'zone', install })
  const link = new Link(parentPort!)
  link.serve(async body => {
    const req = body as PacketThreadRequest
    switch (req.op) {
      case 'start':
        await path.start(req.dnsSockets)
        return null
      case 'stop':
        await path.stop()
        await dev.close()
        return null
      case 'testCrash':
        if (process.env['TUNDRA_TEST_HOOKS'] !== '1') throw new Error('test hooks are off')
        // after the reply is on its way (an 'error' event would otherwise beat it to the host)
        setTimeout(() => {
          throw new Error(`test-crash: packet thread ${data.index} fails on purpose`)
        }, 20)
        return null
      default:
        return path.handle(req)
    }
  })
}

main()

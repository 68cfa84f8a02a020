// Shared by the inspect tests (not a test itself): the seed manifests, a live view over a real NatEngine, TCP
// packets built with src/wire, and the CLI run in-process or as a child process.
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { Command } from 'commander'
import { engineLive } from '../../../src/agent/live'
import type { DataplaneView } from '../../../src/agent/view'
import { offlineView, type OfflineOptions, type OfflineView } from '../../../src/inspect/offline'
import { NatEngine } from '../../../src/nat/engine'
import { PacketInfo, parsePacket } from '../../../src/wire/packet'
import { PASS } from '../../../src/wire/drop'
import { fillIpv4Checksum, parseIpv4 } from '../../../src/wire/ipv4'
import { fillTcpChecksum4, TCP_ACK, TCP_SYN } from '../../../src/wire/tcp'
import { registerInspect } from '../../../src/cli/inspect'

export const root = join(__dirname, '..', '..', '..')
export const SEED = join(root, 'examples/seed/seed.yaml')
// The seed with the document's exact pod addresses (moved from test/fixtures/lab/seed-pinned.yaml at some point).
export const PINNED =
  [join(root, 'examples/seed-as-documented/seed.yaml'), join(root, 'test/fixtures/lab/seed-pinned.yaml')].find(p => existsSync(p)) ??
  join(root, 'examples/seed-as-documented/seed.yaml')
export const CASES = join(root, 'test/fixtures/k8s/cases')

export const VIP = '10.96.125.237'
export const CLIENT = '10.100.85.247'
export const NGINX = ['10.100.85.246', '10.100.85.253']
export const SVC_CHAIN = 'KUBE-SVC-DDZHMK5AO3JF6KIZ'
export const SEP_CHAINS = ['KUBE-SEP-ATSP76LQOJHSORE7', 'KUBE-SEP-FXZXKRS4RXLGILD5']
export const NOW = 100_000

/** An offline view that keeps its problem lines instead of printing them. */
export function quietView(files: string[], opts: OfflineOptions = {}): { view: OfflineView; lines: string[] } {
  const lines: string[] = []
  return { view: offlineView(files, { ...opts, report: l => lines.push(l) }), lines }
}

/** What a running agent's view looks like: the offline snapshot plus a live engine on a fixed clock. */
export function liveView(files: string[] = [PINNED]): { view: DataplaneView; engine: NatEngine } {
  const { view: off } = quietView(files)
  const engine = new NatEngine(off.table(), { seed: 7 })
  const view: DataplaneView = {
    cluster: () => off.cluster(),
    table: () => engine.table,
    natConfig: () => engine.table.config,
    live: () =>
      engineLive(
        engine,
        () => NOW,
        () => ({ rx_packets: 0 }),
      ),
    dns: () => off.dns(),
    now: () => NOW,
  }
  return { view, engine }
}

/** IPv4 + TCP (20-byte header, no payload) with full checksums, from src/wire. */
export function tcp4(src: string, dst: string, sport: number, dport: number, flags: number, seq = 1000, ack = 0): Buffer {
  const b = Buffer.alloc(40)
  b[0] = 0x45
  b.writeUInt16BE(40, 2)
  b.writeUInt16BE(1, 4)
  b.writeUInt16BE(0x4000, 6)
  b[8] = 64
  b[9] = 6
  b.writeUInt32BE(parseIpv4(src)!, 12)
  b.writeUInt32BE(parseIpv4(dst)!, 16)
  fillIpv4Checksum(b, 0)
  b.writeUInt16BE(sport, 20)
  b.writeUInt16BE(dport, 22)
  b.writeUInt32BE(seq >>> 0, 24)
  b.writeUInt32BE(ack >>> 0, 28)
  b[32] = 5 << 4
  b[33] = flags
  b.writeUInt16BE(65535, 34)
  fillTcpChecksum4(b, 20, 20, parseIpv4(src)!, parseIpv4(dst)!)
  return b
}

/** Runs one packet through the engine the way the packet loop does; returns the action and the rewritten bytes. */
export function feed(engine: NatEngine, p: Buffer, now = NOW): { action: number; src: string; dst: string; sport: number; dport: number } {
  const info = new PacketInfo()
  if (parsePacket(p, 0, p.length, info) !== PASS) throw new Error('packet does not parse')
  const action = engine.process(p, 0, p.length, info, false, now)
  const ip = (o: number): string => [p[o], p[o + 1], p[o + 2], p[o + 3]].join('.')
  return { action, src: ip(12), dst: ip(16), sport: p.readUInt16BE(20), dport: p.readUInt16BE(22) }
}

/** A TCP handshake client -> VIP:8080 through the engine; returns the endpoint it was sent to. */
export function handshake(engine: NatEngine, sport: number): string {
  const syn = feed(engine, tcp4(CLIENT, VIP, sport, 8080, TCP_SYN, 1000))
  const ep = syn.dst
  feed(engine, tcp4(ep, CLIENT, 80, sport, TCP_SYN | TCP_ACK, 5000, 1001))
  feed(engine, tcp4(CLIENT, VIP, sport, 8080, TCP_ACK, 1001, 5001))
  return `${ep}:${syn.dport}`
}

export interface CliResult {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** The inspect commands in-process: output captured, an error's message returned as it would be printed. */
export async function cliInProcess(args: string[]): Promise<CliResult & { error?: string }> {
  const program = new Command('tundra').exitOverride().configureOutput({ writeOut: () => {}, writeErr: () => {} })
  registerInspect(program)
  let stdout = ''
  let stderr = ''
  const out = process.stdout.write.bind(process.stdout)
  const err = process.stderr.write.bind(process.stderr)
  process.stdout.write = ((c: string | Uint8Array) => {
    stdout += String(c)
    return true
  }) as typeof process.stdout.write
  process.stderr.write = ((c: string | Uint8Array) => {
    stderr += String(c)
    return true
  }) as typeof process.stderr.write
  try {
    await program.parseAsync(['node', 'tundra', ...args])
    return { code: 0, stdout, stderr }
  } catch (e) {
    return { code: 1, stdout, stderr, error: (e as Error).message }
  } finally {
    process.stdout.write = out
    process.stderr.write = err
  }
}

/** The real CLI as a child process: through tap's TypeScript loader when we run under it, else the compiled one. */
export function cliChild(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const loader = process.execArgv.filter(a => a.includes('@tapjs/typescript'))
  const argv = loader.length > 0 ? [...loader, join(root, 'src/cli/main.ts'), ...args] : [join(root, 'dist/src/cli/main.js'), ...args]
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, { cwd: root, env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', d => {
      stdout += d
    })
    child.stderr.setEncoding('utf8').on('data', d => {
      stderr += d
    })
    child.on('error', reject)
    child.on('close', code => resolve({ code, stdout, stderr }))
  })
}

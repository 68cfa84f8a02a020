// Run by the memory section in a fresh process: the packet path as an agent's packet thread wires it (PacketPath:
// Dataplane + NatEngine + DnsServer on the in-memory device) flooded with distinct SYNs to a ClusterIP until the
// conntrack table sits at its cap, then what the control thread does with a full table (a snapshot, a count), then
// the flood aged out by the reaper. Prints RSS at each step as one JSON line.
import { PacketPath, type PacketInit, type PacketRequest } from '../../src/agent/packet-path'
import { natInstall, zoneInstall } from '../../src/agent/crossing'
import { MemoryDevice } from '../../src/device/memory'
import { loadNative } from '../../src/device/native'
import { compileNat, resolveNatConfig } from '../../src/nat/compile'
import { CT_CHUNK, snapshotBody, snapshotHead } from '../../src/nat/ctview'
import { linkLive } from '../../src/agent/live'
import { Transfer, type Link } from '../../src/agent/link'
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ZoneCompiler } from '../../src/dns/image'
import { parseIpv4 } from '../../src/wire/ipv4'
import type { FloodResult } from '../sections/memory'
import { NAT_CONFIG, SERVICE_PORT, TCP_SYN, synthCluster, tcp4, vipOf } from '../lib/synth'

const gc = (globalThis as { gc?: () => void }).gc
const rss = (): number => {
  gc?.()
  return process.memoryUsage().rss
}

/** A packet-path answer as the link delivers it (a Transfer's value). */
const unwrap = (v: unknown): unknown => (v instanceof Transfer ? v.value : v)

/** Packets per batch, as the TUN reader hands them over. */
const BATCH = 256

async function main(): Promise<void> {
  const cap = Number(process.argv[2] ?? 262144)
  const syns = Number(process.argv[3] ?? Math.ceil(cap * 1.15))
  const cluster = synthCluster(1, 2)
  const table = compileNat(cluster, NAT_CONFIG)
  const dev = new MemoryDevice({ autoFlush: false, capture: false, poison: false }) // writes go nowhere
  const init: PacketInit = {
    loop: { nodeIp: parseIpv4('172.18.0.11')!, dnsIp: parseIpv4('10.96.0.10')!, dnsPort: 53, vni: 4096, peers: [] },
    engine: { conntrackMax: cap, seed: 7 },
    natConfig: resolveNatConfig(NAT_CONFIG),
    dns: { upstream: ['127.0.0.1:9'] },
    nat: natInstall(table).install,
    zone: zoneInstall(new ZoneCompiler({}).full(cluster)).install,
  }
  // The agent's process has the native addon loaded (it opens the TUN), and the addon sets the process's malloc
  // policy (native/tun.c Init): load it here too so the figures are the agent's.
  loadNative()
  const rssBefore = rss()
  const path = new PacketPath(dev, init, () => {})
  const rssBase = rss()
  // The SYNs are laid out in one reused slab and handed to the loop as the TUN reader does (native/tun.c reads into a
  // fixed slab): no per-packet garbage of the harness's own in the figures.
  const pkt = tcp4(parseIpv4('10.255.0.0')!, parseIpv4(vipOf(0))!, 1, SERVICE_PORT, TCP_SYN)
  const slab = Buffer.alloc(BATCH * pkt.length)
  const offsets = new Uint32Array(BATCH)
  const lengths = new Uint32Array(BATCH).fill(pkt.length)
  for (let i = 0; i < BATCH; i++) offsets[i] = i * pkt.length
  for (let k = 0; k < syns; ) {
    let n = 0
    for (; n < BATCH && k < syns; n++, k++) {
      const o = offsets[n]!
      slab.set(pkt, o)
      const host = 1 + (k >>> 14)
      slab[o + 14] = host >>> 8
      slab[o + 15] = host & 0xff
      const port = 1024 + (k & 0x3fff)
      slab[o + 20] = port >>> 8
      slab[o + 21] = port & 0xff
      // checksums left stale on purpose: the loop does not verify them, and the endpoint is not real
    }
    path.dp.onBatch({ buf: slab, count: n, offsets, lengths })
  }
  const eng = path.engine
  const rssAtCap = rss()
  const mu = process.memoryUsage()
  const entries = eng.v4.ct.count
  // What the control thread does every 10 s with a full table: a snapshot, streamed a chunk at a time as the agent
  // writes it (agent.ts saveSnapshot).
  const dir = mkdtempSync(join(tmpdir(), 'tundra-flood-'))
  try {
    const fd = openSync(join(dir, 'snap'), 'w')
    writeSync(fd, snapshotHead(table))
    for (let c = 0; c >= 0; ) {
      const r = unwrap(path.handle({ op: 'ctChunk', cursor: c, max: CT_CHUNK })) as { bytes: ArrayBuffer; next: number }
      writeSync(fd, snapshotBody(r.bytes))
      c = r.next
    }
    closeSync(fd)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  const rssAfterSnapshot = rss()
  // `tundra conntrack count`: the chunks' headers summed on the control side (live.ts).
  const link = { call: async (req: PacketRequest) => unwrap(path.handle(req)) } as unknown as Link
  const live = linkLive(link, () => table)
  const counted = await live.conntrackCount()
  if (counted !== entries) throw new Error(`count saw ${counted} of ${entries} entries`)
  const rssAfterCount = rss()
  // A filtered count or list: every entry decoded, one chunk at a time, nothing kept.
  let scanned = 0
  await live.conntrack(() => scanned++)
  if (scanned !== entries) throw new Error(`scan saw ${scanned} of ${entries} entries`)
  const rssAfterScan = rss()
  // Age the flood out: the reaper's clock moves past the SYN_SENT timeout; ticks as the 250 ms timer would run them.
  const later = (eng.v4.ct.expires.reduce((a, b) => Math.max(a, b), 0) as number) + 1
  for (let i = 0; i < (eng.v4.ct.capacity >>> 10) + 1; i++) eng.tick(later)
  const rssAgedOut = rss()
  await path.stop()
  const out: FloodResult = {
    cap,
    syns,
    entries,
    rssBefore,
    rssBase,
    rssAtCap,
    rssAfterSnapshot,
    rssAfterCount,
    rssAfterScan,
    rssAgedOut,
    entriesAgedOut: eng.v4.ct.count,
    ctBytes: eng.v4.ct.byteLength() + eng.v6.ct.byteLength(),
    heapAtCap: mu.heapUsed,
    rssPeak: process.resourceUsage().maxRSS * 1024,
    externalAtCap: mu.external + mu.arrayBuffers,
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

void main()

// Run by the memory section in a fresh process (so nothing else is on the heap): fills a NatEngine with N
// connections through its packet path and prints, as one JSON line, the RSS it cost and the engine's own bytes.
import { compileNat } from '../../src/nat/compile'
import { NatEngine } from '../../src/nat/engine'
import { NatAction } from '../../src/nat/verdict'
import { PacketInfo, parsePacket } from '../../src/wire/packet'
import { parseIpv4 } from '../../src/wire/ipv4'
import { NAT_CONFIG, SERVICE_PORT, TCP_SYN, synthCluster, tcp4, vipOf } from '../lib/synth'

const gc = (globalThis as { gc?: () => void }).gc
const rss = (): number => {
  gc?.()
  return process.memoryUsage().rss
}

function main(): void {
  const n = Number(process.argv[2] ?? 1_000_000)
  const table = compileNat(synthCluster(1, 2), NAT_CONFIG)
  const info = new PacketInfo()
  const pkt = tcp4(parseIpv4('10.255.0.0')!, parseIpv4(vipOf(0))!, 1, SERVICE_PORT, TCP_SYN)
  const rssBefore = rss()
  const eng = new NatEngine(table, { seed: 3, conntrackMax: n })
  const rssEmpty = rss()
  const ct = eng.v4.ct
  const work = new Uint8Array(40)
  const t0 = process.hrtime.bigint()
  for (let k = 0; k < n; k++) {
    work.set(pkt)
    // distinct client: 10.255.0.0/16 host (k >> 14), port 1024 + (k & 0x3fff)
    const host = 1 + (k >>> 14)
    work[14] = host >>> 8
    work[15] = host & 0xff
    const port = 1024 + (k & 0x3fff)
    work[20] = port >>> 8
    work[21] = port & 0xff
    parsePacket(work, 0, 40, info)
    if (eng.process(work, 0, 40, info, false, 1000) !== NatAction.FORWARD) throw new Error(`SYN ${k} not forwarded`)
  }
  const fillNs = Number(process.hrtime.bigint() - t0) / n
  const rssFull = rss()
  const ctBytes = ct.byteLength()
  const v6Bytes = eng.v6.ct.byteLength()
  process.stdout.write(
    JSON.stringify({
      entries: ct.count,
      capacity: ct.capacity,
      rssBefore,
      rssEmpty,
      rssFull,
      rssPerEntry: (rssFull - rssBefore) / ct.count,
      rssPerEntryIncremental: (rssFull - rssEmpty) / ct.count,
      engineBytes: ctBytes,
      engineBytesPerEntry: ctBytes / ct.count,
      engineBytesPerSlot: ctBytes / ct.capacity,
      v6TableBytes: v6Bytes,
      fillNsPerSyn: fillNs,
    }) + '\n',
  )
}

main()

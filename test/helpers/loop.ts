// The packet loop (src/dataplane/loop.ts) as the dataplane tests drive it on the in-memory device: one place for the
// options every test node shares (cluster DNS at 10.96.0.10:53, VNI 4096, its VXLAN MAC), so a new LoopOptions field
// is added here once.
import type { MemoryDevice } from '../../src/device/memory'
import { Dataplane, type LoopOptions, type PacketDns, type PacketNat } from '../../src/dataplane/loop'
import { vxlanMac } from '../../src/dataplane/vxlan'
import { ip4 } from '../nat/packets'

/** Cluster DNS that answers nothing in place and forwards nowhere. */
export const noDns: PacketDns = { answerInPlace: () => 0, forward: () => {} }

/** The options of a node at `node` (no VXLAN peers); `o` overrides or adds fields. */
export function loopOptions(node: string, o: Partial<LoopOptions> = {}): LoopOptions {
  return { nodeIp: ip4(node), dnsIp: ip4('10.96.0.10'), dnsPort: 53, vni: 4096, localMac: vxlanMac(ip4(node)), peers: [], ...o }
}

/** A Dataplane reading `dev`, started. */
export function startLoop(dev: MemoryDevice, nat: PacketNat, opts: LoopOptions, dns: PacketDns = noDns): Dataplane {
  const dp = new Dataplane(dev, nat, dns, opts)
  dev.start(dp.onBatch)
  return dp
}

// Wires a node namespace for the C reference contender exactly as the tundra agent wires it (src/agent/wiring.ts:
// the same ip rules, routes and sysctls; the TUN's qdisc as src/device/tun.ts sets it), so cref's lab differs from
// tundra's only in the program on the TUN. Run inside the node's namespace once cref has created the TUN:
// `cref-wire.js <agent config JSON> <tun>`. The lab's removal (deleting the namespace) undoes it.
import { wire } from '../../src/agent/wiring'
import { setNoqueue } from '../../src/device/tun'
import type { AgentConfig } from '../../src/agent/config'

async function main(): Promise<void> {
  const [json, tun] = process.argv.slice(2)
  if (!json || !tun) throw new Error('usage: cref-wire.js <agent config JSON> <tun>')
  await wire(JSON.parse(json) as AgentConfig, tun)
  // the qdisc tundra's openTun sets: the same TUN setup for both
  const qdisc = await setNoqueue(tun)
  if (qdisc !== 'noqueue') throw new Error(`the TUN for cref keeps the ${qdisc}`)
  process.stdout.write('wired\n')
}

main().catch(err => {
  process.stderr.write(`cref-wire: ${(err as Error).message}\n`)
  process.exit(1)
})

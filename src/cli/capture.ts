// `tundra capture`: ask a running tundra for a pcapng of what its packet loop sees, before and after translation.
import { resolve } from 'node:path'
import type { Command } from 'commander'
import { askAgent } from '../agent/control'
import { resolveSocket } from '../inspect/socket'

export function registerCapture(program: Command): void {
  program
    .command('capture')
    .description('write a pcapng of the packets tundra sees (pre- and post-NAT, verdict as a comment per packet)')
    .requiredOption('-w, --write <file>', 'pcapng file to write (open with tcpdump -r or Wireshark)')
    .option('-i, --target <pod|service|all>', 'a pod or service (name, or ns/name), or all', 'all')
    .option('--pre-nat', 'only packets as they arrived')
    .option('--post-nat', 'only packets as tundra sends them on')
    .option('-c, --count <n>', 'stop after n packets', v => Number(v), 1000)
    .option('--duration <seconds>', 'stop after this long', v => Number(v), 10)
    .option('--socket <path>', "the agent's control socket")
    .option('--lab <name>', 'the lab whose agent to ask (default: the only lab)')
    .option('--node <node>', 'the lab node (default: the first)')
    .action(
      async (o: {
        write: string
        target: string
        preNat?: boolean
        postNat?: boolean
        count: number
        duration: number
        socket?: string
        lab?: string
        node?: string
      }) => {
        const both = !o.preNat && !o.postNat
        const path = resolve(o.write)
        process.stderr.write(`capturing ${o.target} for up to ${o.duration} s or ${o.count} packets into ${path}…\n`)
        const r = (await askAgent(
          resolveSocket(o),
          'capture',
          {
            path,
            target: o.target,
            pre: both || o.preNat === true,
            post: both || o.postNat === true,
            count: o.count,
            durationMs: o.duration * 1000,
          },
          o.duration * 1000 + 5000,
        )) as { records: number }
        process.stdout.write(`${r.records} packets written to ${path}\n`)
      },
    )
}

// `tundra observe`: a running tundra's live flow stream, like `hubble observe`: new / closed / rejected / dropped
// flows with their reason, DNS queries and answers, failed connects and endpoint ejections. The agent records flows
// only while someone asks (the first call starts recording), so --last shows what came since.
import { Option, type Command } from 'commander'
import { askAgent } from '../agent/control'
import { resolveSocket } from '../inspect/socket'
import { formatFlow, type ObserveReply } from '../inspect/observe'

const VERDICTS = ['new', 'closed', 'rejected', 'dropped', 'dns', 'dns-query', 'dns-answer', 'connect-failed', 'ejected'] as const
/** How often --follow asks; how long a first call without --follow collects before it prints. */
const POLL_MS = 250
const FIRST_WAIT_MS = 1000

export function registerObserve(program: Command): void {
  program
    .command('observe')
    .description('live flows through tundra (new, closed, rejected, dropped, DNS, ejections), like `hubble observe`')
    .option('--pod <[ns/]name>', 'flows from, to or served by this pod')
    .option('--service <[ns/]name>', 'flows to this service')
    .option('--namespace <ns>', 'flows of pods or services in this namespace')
    .addOption(new Option('--verdict <kind>', 'only this kind of record').choices(VERDICTS))
    .addOption(new Option('--protocol <proto>', 'only this protocol').choices(['tcp', 'udp', 'sctp', 'icmp', 'icmpv6']))
    .option('-f, --follow', 'keep printing flows as they come (Ctrl-C stops)')
    .option('--last <n>', 'the last n flows recorded (default 20 without --follow)', v => Number(v))
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .option('--socket <path>', "the agent's control socket")
    .option('--lab <name>', 'the lab whose agent to ask (default: the only lab)')
    .option('--node <node>', 'the lab node (default: the first)')
    .action(
      async (o: {
        pod?: string
        service?: string
        namespace?: string
        verdict?: string
        protocol?: string
        follow?: boolean
        last?: number
        output: string
        socket?: string
        lab?: string
        node?: string
      }) => {
        const socket = resolveSocket(o)
        const filter = {
          ...(o.pod !== undefined ? { pod: o.pod } : {}),
          ...(o.service !== undefined ? { service: o.service } : {}),
          ...(o.namespace !== undefined ? { namespace: o.namespace } : {}),
          ...(o.verdict !== undefined ? { verdict: o.verdict } : {}),
          ...(o.protocol !== undefined ? { protocol: o.protocol } : {}),
        }
        const print = (r: ObserveReply): void => {
          for (const f of r.flows) process.stdout.write(o.output === 'json' ? `${JSON.stringify(f)}\n` : `${formatFlow(f)}\n`)
        }
        const ask = (args: Record<string, unknown>): Promise<ObserveReply> => askAgent(socket, 'observe', { ...filter, ...args }) as Promise<ObserveReply>
        let r = await ask(o.last !== undefined ? { last: o.last } : { since: Number.MAX_SAFE_INTEGER })
        if (!o.follow) {
          if (r.flows.length === 0) {
            // recording may have just started: collect a moment first
            await new Promise(res => setTimeout(res, FIRST_WAIT_MS))
            r = await ask({ last: o.last ?? 20 })
          }
          print(r)
          return
        }
        print(r)
        let since = r.next
        let stop = false
        process.once('SIGINT', () => {
          stop = true
        })
        while (!stop) {
          await new Promise(res => setTimeout(res, POLL_MS))
          r = await ask({ since })
          print(r)
          since = r.next
        }
      },
    )
}

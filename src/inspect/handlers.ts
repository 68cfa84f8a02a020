// The inspection commands as control-socket handlers: the running agent registers them on its socket, and the CLI
// calls the same functions in-process on an offline view (-f). Requests and replies are plain JSON; the CLI renders
// text from the reply, so online and offline output come from one formatter.
//
//   dump       { format?: 'iptables-save' | 'nft' | 'json' | 'ipvsadm', family?: 4 | 6 } -> string
//   trace      { src, dst?, proto?: 'tcp'|'udp'|'sctp'|'icmp', sport?, dport?, name? }     -> Trace
//   services   {}                                                                          -> ServicesReport
//   conntrack  { op?: 'list' | 'count' | 'flush', filter?: { src?, dst?, proto?, service?, port?, family? } }
//                                                                                         -> ConntrackResult
//   observe    { since?, last?, pod?, service?, namespace?, verdict?, protocol? }          -> ObserveReply
import type { DataplaneView } from '../agent/view'
import type { Handler } from '../agent/control'
import { InspectError, optChoice } from './common'
import type { DumpOptions } from '../kubeproxy/dump'
import { DUMP_FORMATS, dumpText, ipvsadmDump } from './dump'
import { parseTraceArgs, traceLive } from './trace'
import { servicesReport } from './services'
import { conntrackOp, parseConntrackArgs } from './conntrack'
import { observeOp } from './observe'

export const INSPECT_COMMANDS = ['dump', 'trace', 'services', 'conntrack', 'observe'] as const

export function inspectHandlers(view: DataplaneView): Record<(typeof INSPECT_COMMANDS)[number], Handler> {
  return {
    dump: args => {
      const format = optChoice(args, 'format', DUMP_FORMATS) ?? 'iptables-save'
      const family = args['family'] === undefined ? 4 : Number(args['family'])
      if (family !== 4 && family !== 6) throw new InspectError(`family must be 4 or 6, not ${JSON.stringify(args['family'])}`)
      const proxy = typeof args['proxy'] === 'object' && args['proxy'] !== null ? (args['proxy'] as DumpOptions) : {}
      if (format === 'ipvsadm') return ipvsadmDump(view, family)
      return dumpText(view, format, family, proxy)
    },
    trace: args => traceLive(view, parseTraceArgs(args)),
    services: async () => {
      const live = view.live()
      if (live === undefined) return servicesReport(view)
      return servicesReport(view, await live.serviceCounters(), (await live.endpointSignals?.()) ?? [])
    },
    conntrack: args => conntrackOp(view, parseConntrackArgs(args)),
    observe: args => observeOp(view, args),
  }
}

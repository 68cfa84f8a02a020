// The inspection tools as a library: what the agent (control handlers) and the CLI call.
export { inspectHandlers, INSPECT_COMMANDS } from './handlers'
export { offlineView, OFFLINE_DEFAULTS, type OfflineOptions, type OfflineView } from './offline'
export { dumpText, tableJson, DUMP_FORMATS, type DumpFormat } from './dump'
export { buildTrace, formatTrace, parseTraceArgs, resolveName, TRACE_PROTOCOLS, type Trace, type TraceArgs } from './trace'
export { servicesReport, formatServices, type ServicesReport, type ServiceRow } from './services'
export {
  conntrackOp,
  conntrackLine,
  formatConntrack,
  parseConntrackArgs,
  CONNTRACK_OPS,
  OFFLINE_CONNTRACK,
  type ConntrackArgs,
  type ConntrackResult,
  type ConntrackRow,
} from './conntrack'
export { resolveSocket, type SocketChoice } from './socket'
export { InspectError } from './common'

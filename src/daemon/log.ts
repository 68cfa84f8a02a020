// The daemon's log lines, on both threads: a timestamp and a level on every line, as text or as JSON (kube-proxy's
// `logging.format: json`, Kubernetes' structured-logging shape: ts in seconds, v, msg). Messages keep tundra's
// `[component] text` form; the component and the level are lifted out of it, so callers stay plain `(line) => void`.
//
//   text: 2026-12-07T02:04:37.123Z INFO  [run] node1: synced
//   json: {"ts":1796608477.123,"level":"info","v":0,"component":"run","msg":"node1: synced"}
//
// Each thread has its own copy of this module: the control thread parses the configuration and tells the packet
// thread (HostRequest 'logging'). TUNDRA_LOG_FORMAT (text | json) sets it from the start, for lines before that.
import { writeSync } from 'node:fs'

export type LogFormat = 'text' | 'json'
export type LogLevel = 'error' | 'warn' | 'info'

export interface LogSettings {
  readonly format: LogFormat
  /** lines logged with a higher verbosity (logV) are dropped; 0 = the default lines only */
  readonly verbosity: number
}

const LEVEL_TEXT: Readonly<Record<LogLevel, string>> = { error: 'ERROR', warn: 'WARN ', info: 'INFO ' }
const COMPONENT = /^\[([\w-]+)\] /

let settings: LogSettings = { format: process.env['TUNDRA_LOG_FORMAT'] === 'json' ? 'json' : 'text', verbosity: 0 }
/**
 * fd 2 directly: a worker's process.stderr is relayed through the main thread asynchronously, and a process that
 * exits right after logging why (a bad configuration, no API server) would lose the line.
 */
let sink: (s: string) => void = s => {
  try {
    writeSync(2, s)
  } catch {
    process.stderr.write(s)
  }
}

/** Checks and sets the format and verbosity; an error names what is wrong. */
export function configureLogging(next: { readonly format?: unknown; readonly verbosity?: unknown }): LogSettings {
  const format = next.format ?? settings.format
  if (format !== 'text' && format !== 'json') throw new Error(`logging.format: must be text or json, got ${JSON.stringify(format)}`)
  const verbosity = next.verbosity ?? settings.verbosity
  if (typeof verbosity !== 'number' || !Number.isInteger(verbosity) || verbosity < 0)
    throw new Error(`logging.verbosity: must be a whole number >= 0, got ${JSON.stringify(verbosity)}`)
  settings = { format, verbosity }
  return settings
}

/** Where lines go (default stderr); for tests. Returns the previous sink. */
export function setLogSink(next: (s: string) => void): (s: string) => void {
  const prev = sink
  sink = next
  return prev
}

/** The level a tundra log line has, from its words: `warning:` is a warning; failures and fatal errors are errors. */
function levelOf(line: string): LogLevel {
  const body = line.replace(COMPONENT, '')
  if (/^warning\b|: warning:|\bwarning: |\bretrying\b/i.test(body)) return 'warn'
  if (/^tundra: |\bfailed\b|\berror\b|exited with code [1-9]/i.test(line)) return 'error'
  return 'info'
}

/** Formats one line (no trailing newline). */
function formatLine(line: string, level: LogLevel, now: Date, v = 0): string {
  const m = COMPONENT.exec(line)
  const msg = m ? line.slice(m[0].length) : line
  if (settings.format === 'json') {
    return JSON.stringify({ ts: now.getTime() / 1000, level, v, ...(m ? { component: m[1] } : {}), msg })
  }
  return `${now.toISOString()} ${LEVEL_TEXT[level]} ${line}`
}

/** Logs a line at the level its words say (see levelOf). */
export function logLine(line: string): void {
  const level = levelOf(line)
  sink(formatLine(line, level, new Date()) + '\n')
}

/** Logs a line only when the verbosity is at least v (kube-proxy's -v). */
export function logV(v: number, line: string): void {
  if (v > settings.verbosity) return
  sink(formatLine(line, levelOf(line), new Date(), v) + '\n')
}

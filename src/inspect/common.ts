// Small pieces shared by the inspection tools: their error type, argument checks for control-socket requests
// (arguments arrive as untyped JSON), aligned text tables and address:port parsing.
import { ipFamily } from '../wire/addr'

/** A usage or input error: the CLI prints its message alone (no stack) and exits 1. */
export class InspectError extends Error {
  override readonly name = 'InspectError'
}

export function optString(args: Record<string, unknown>, key: string): string | undefined {
  const v = args[key]
  if (v === undefined || v === null || v === '') return undefined
  if (typeof v !== 'string') throw new InspectError(`${key} must be a string, not ${JSON.stringify(v)}`)
  return v
}

export function optPort(args: Record<string, unknown>, key: string): number | undefined {
  const v = args[key]
  if (v === undefined || v === null || v === '') return undefined
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 65535) {
    throw new InspectError(`${key} must be a port number 0-65535, not ${JSON.stringify(v)}`)
  }
  return n
}

export function optChoice<T extends string>(args: Record<string, unknown>, key: string, choices: readonly T[]): T | undefined {
  const v = optString(args, key)
  if (v === undefined) return undefined
  const lower = v.toLowerCase()
  const hit = choices.find(c => c.toLowerCase() === lower)
  if (hit === undefined) throw new InspectError(`${key} must be one of ${choices.join(', ')}, not ${JSON.stringify(v)}`)
  return hit
}

export function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw new InspectError(`${what}: ${JSON.stringify(text)} is not a port number`)
  return Number(text)
}

/** "ip", "ip:port", "[ip6]:port" or a bare IPv6 address; undefined when the text is not an address at all. */
export function splitAddress(text: string, what: string): { ip: string; port?: number } | undefined {
  const br = /^\[([^\]]+)\](?::(.*))?$/.exec(text)
  if (br) {
    if (ipFamily(br[1]!) !== 6) return undefined
    return br[2] === undefined ? { ip: br[1]! } : { ip: br[1]!, port: parsePort(br[2], what) }
  }
  if (ipFamily(text) !== undefined) return { ip: text }
  const colon = text.lastIndexOf(':')
  if (colon > 0 && ipFamily(text.slice(0, colon)) === 4) return { ip: text.slice(0, colon), port: parsePort(text.slice(colon + 1), what) }
  return undefined
}

/** "ip:port" or "[ip6]:port". */
export function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`
}

/**
 * Rows as aligned columns (3 spaces apart, last column unpadded). A cell may hold several lines: the row then spans
 * that many lines, the other cells blank below their first line.
 */
export function textTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const split = [header, ...rows].map(r => r.map(c => c.split('\n')))
  const widths = header.map((_, i) => Math.max(...split.map(r => Math.max(...(r[i] ?? ['']).map(l => l.length)))))
  const out: string[] = []
  for (const r of split) {
    const height = Math.max(...r.map(c => c.length))
    for (let k = 0; k < height; k++) {
      out.push(
        r
          .map((c, i) => (i === r.length - 1 ? (c[k] ?? '') : (c[k] ?? '').padEnd(widths[i]! + 3)))
          .join('')
          .trimEnd(),
      )
    }
  }
  return out.join('\n') + '\n'
}

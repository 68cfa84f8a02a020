// Agent settings `tundra lab up` passes to every node's agent config: connect-time failover and passive outlier
// ejection (`--failover`, `--outlier-ejection`). The fields and their ranges are the agent's (checkConnectConfig).
import type { AgentConfig } from '../agent/config'
import { checkConnectConfig } from '../agent/config-file'
import { LabError } from './state'

/** What a lab adds to each node's agent config. */
export type LabAgentSettings = Pick<AgentConfig, 'failover' | 'outlierEjection'>

type Section = 'failover' | 'outlierEjection'

const FLAG: Readonly<Record<Section, string>> = { failover: '--failover', outlierEjection: '--outlier-ejection' }

/** A value: true/false, seconds (`0.3`, `300ms`, `30s`), or a plain number (maxRetries, pool, counts, percents). */
function parseValue(flag: string, key: string, v: string): boolean | number {
  if (v === 'true' || v === 'false') return v === 'true'
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(v)
  if (m === null) throw new LabError(`${flag}: ${key}=${v}: expected a number, a duration (300ms, 30s) or true/false`)
  return m[2] === 'ms' ? Number(m[1]) / 1000 : Number(m[1])
}

/**
 * One `--failover` / `--outlier-ejection` value: `on` (also the bare flag), `off`, or comma-separated key=value
 * fields of the agent config's section (e.g. `synTimeout=300ms,maxRetries=2`), which turn it on unless
 * `enabled=false`. Unknown fields and values out of range are refused with the agent's own message.
 */
export function parseConnectFlag(section: Section, value: string | boolean): NonNullable<LabAgentSettings[Section]> {
  const flag = FLAG[section]
  if (value === true || value === 'on') return { enabled: true }
  if (value === false || value === 'off') return { enabled: false }
  const out: Record<string, boolean | number> = { enabled: true }
  for (const item of value.split(',')) {
    const eq = item.indexOf('=')
    if (eq <= 0) throw new LabError(`${flag}: ${JSON.stringify(item)}: expected on, off or key=value[,key=value…]`)
    const key = item.slice(0, eq)
    out[key] = parseValue(flag, key, item.slice(eq + 1))
  }
  const s = checkLabAgentSettings({ [section]: out })
  return s[section]!
}

/** The settings, checked as the agent checks them (a LabError naming the field otherwise). */
export function checkLabAgentSettings(s: LabAgentSettings): LabAgentSettings {
  try {
    checkConnectConfig(s)
  } catch (err) {
    throw new LabError(`agent settings: ${(err as Error).message}`)
  }
  return s
}

// Where the agent's web view listens, if anywhere: `tundra agent --web-addr` over TUNDRA_WEB_ADDR (the lab's agents
// inherit it; set it for a lab up to get a view in every node's namespace) over the agent config's `web` section.
import { parseWebAddr } from './server'

export interface WebSettings {
  readonly addr: string
  readonly allowRemote: boolean
}

/** The web view's settings, checked (a bad or non-loopback address without allowRemote throws); undefined = off. */
export function agentWebSettings(
  flags: { readonly addr: string; readonly allowRemote: boolean } | undefined,
  config: { readonly addr: string; readonly allowRemote?: boolean } | undefined,
  env: NodeJS.ProcessEnv = process.env,
): WebSettings | undefined {
  const fromEnv = env['TUNDRA_WEB_ADDR']
  const s =
    flags ??
    (fromEnv !== undefined && fromEnv !== ''
      ? { addr: fromEnv, allowRemote: env['TUNDRA_WEB_ALLOW_REMOTE'] === '1' }
      : config !== undefined
        ? { addr: config.addr, allowRemote: config.allowRemote === true }
        : undefined)
  if (s === undefined) return undefined
  parseWebAddr(s.addr, s.allowRemote)
  return s
}

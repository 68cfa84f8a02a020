// `tundra agent --config FILE`: one node's dataplane, as the lab (or a user) starts it. The packet path runs on this
// (the main) thread, the agent's control plane on a worker thread (src/daemon/control-thread.ts).
import type { Command } from 'commander'
import { hostAgent } from '../daemon/host'
import { readAgentConfig } from '../agent/config-file'
import { agentWebSettings } from '../web/settings'

export function registerAgent(program: Command): void {
  program
    .command('agent')
    .description("run one node's dataplane (TUN, Service NAT, cluster DNS, VXLAN) from an agent config")
    .requiredOption('--config <file>', 'agent config (JSON), as `tundra lab up` writes it')
    .option('--cleanup-on-exit', "remove the node wiring on exit (by default it stays, like kube-proxy's rules, so a restart keeps flows)")
    .option('--web-addr <ip:port>', 'serve the live web view here (off by default; loopback unless --web-allow-remote)')
    .option('--web-allow-remote', 'let --web-addr be an address other than loopback')
    .action((o: { config: string; cleanupOnExit?: boolean; webAddr?: string; webAllowRemote?: boolean }) => {
      const cfg = readAgentConfig(o.config) // bad config: a clear error before any thread starts
      if (o.webAllowRemote === true && o.webAddr === undefined) throw new Error('--web-allow-remote needs --web-addr')
      const flags = o.webAddr !== undefined ? { addr: o.webAddr, allowRemote: o.webAllowRemote === true } : undefined
      const web = agentWebSettings(flags, cfg.web)
      hostAgent({ kind: 'agent', config: o.config, cleanupOnExit: o.cleanupOnExit === true, ...(web !== undefined ? { web } : {}) })
    })
}

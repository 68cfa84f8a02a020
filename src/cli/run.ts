// `tundra run`: the node agent as a kube-proxy replacement. Desired state comes from the API server (or -f
// manifests), changes are batched like kube-proxy's minSyncPeriod and applied incrementally, and metrics and health
// are served where kube-proxy serves them. The packet path runs on this (the main) thread, everything else on the
// agent's control thread (src/daemon/run-node.ts there).
import type { Command } from 'commander'
import { writeFileSync } from 'node:fs'
import { stringify } from 'yaml'
import { hostAgent } from '../daemon/host'
import { cleanupNode } from '../daemon/cleanup'
import { logLine } from '../daemon/log'
import { mergeFlags, readKubeProxyConfig } from '../run/kpconfig'
import { RUN_FLAGS } from '../run/flags'
import { kubeProxyConfigurationOf, tundraVersion } from '../run/kpshape'

export function registerRun(program: Command): void {
  const cmd = program
    .command('run')
    .description('run as the node agent replacing kube-proxy (and CoreDNS): API watch or -f manifests, metrics, health, restarts that keep flows')
    .option('--config <file>', 'a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1), with an optional tundra: section')
    .option('-f, --filename <file|dir>', 'read desired state from manifests (re-read on change) instead of the API server', (v: string, p: string[] = []) => [
      ...p,
      v,
    ])
    .option('--version', 'print the version and exit')
    .option('--write-config-to <path>', 'write the resolved configuration (file, flags, defaults) as a KubeProxyConfiguration and exit')
  for (const f of RUN_FLAGS) {
    const names = f.alias !== undefined ? `${f.alias}, ${f.flag}` : f.flag
    // booleans take an optional value, as pflag's do: --iptables-localhost-nodeports=false
    cmd.option(f.type === 'bool' && f.arg === undefined ? `${names} [bool]` : `${names} ${f.arg ?? '<value>'}`, f.help)
  }
  cmd.action(async (o: Record<string, unknown>) => {
    if (o['version'] === true) {
      process.stdout.write(`tundra v${tundraVersion()}\n`)
      return
    }
    if (typeof o['writeConfigTo'] === 'string') {
      const file = typeof o['config'] === 'string' ? readKubeProxyConfig(o['config']) : undefined
      const cfg = mergeFlags(file, o)
      for (const w of cfg.warnings) process.stderr.write(`warning: ${w}\n`)
      writeFileSync(o['writeConfigTo'], stringify(kubeProxyConfigurationOf(cfg)))
      return
    }
    // kube-proxy's --cleanup (a bool flag of RUN_FLAGS, so --cleanup=false is honoured too)
    if (o['cleanup'] !== undefined && o['cleanup'] !== false && o['cleanup'] !== 'false') {
      try {
        for (const l of await cleanupNode(o)) logLine(`[cleanup] ${l}`)
        logLine('[cleanup] done: tundra left nothing on this node')
      } catch (err) {
        logLine(`tundra: cleanup: ${(err as Error).message}`)
        process.exitCode = 1
      }
      return
    }
    hostAgent({ kind: 'run', options: { ...o } })
  })
}

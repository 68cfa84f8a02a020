// `tundra run`: the node agent as a kube-proxy replacement. Desired state comes from the API server (or -f
// manifests), changes are batched like kube-proxy's minSyncPeriod and applied incrementally, and metrics and health
// are served where kube-proxy serves them. The packet path runs on this (the main) thread, everything else on the
// agent's control thread (src/daemon/run-node.ts there).
import type { Command } from 'commander'
import { hostAgent } from '../daemon/host'
import { cleanupNode } from '../daemon/cleanup'
import { logLine } from '../daemon/log'
import { RUN_FLAGS } from '../run/kpconfig'

export function registerRun(program: Command): void {
  const cmd = program.command('run')
    .description('run as the node agent replacing kube-proxy (and CoreDNS): API watch or -f manifests, metrics, health, restarts that keep flows')
    .option('--config <file>', 'a KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1), with an optional tundra: section')
    .option('-f, --filename <file|dir>', 'read desired state from manifests (re-read on change) instead of the API server', (v: string, p: string[] = []) => [...p, v])
    .option('--cleanup', "remove everything tundra made on this node (rules, routes, sysctls, TUN, state files) and exit, like kube-proxy's")
    .option('--master <url>', "the API server's address, overriding the kubeconfig's or the in-cluster one (kube-proxy's --master)")
  for (const f of RUN_FLAGS) {
    const spec = f.type === 'bool' ? f.flag : `${f.flag} ${f.arg ?? '<value>'}`
    cmd.option(spec, f.help)
  }
  cmd.action(async (o: Record<string, unknown>) => {
    if (o['cleanup'] === true) {
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

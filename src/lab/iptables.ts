// The kernel baseline for `--dataplane iptables`: kube-proxy's iptables rules, Calico-style NAT for traffic leaving the
// pod network, and kernel routes to the other nodes' pod CIDRs — the same topology tundra runs on, minus tundra.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { renderIptablesSave } from '../kubeproxy/iptables'
import { must } from '../netns/netns'
import type { LabPlan } from './compile'
import { LAB } from './plan'
import type { LabState } from './state'

/** Calico's natOutgoing: pods reaching anything outside the pod network leave with the node's address. */
export function natOutgoingRules(clusterCIDR: string = LAB.clusterCIDR): string {
  return [
    '*nat',
    ':cali-nat-outgoing - [0:0]',
    '-A POSTROUTING -m comment --comment "cali:nat-outgoing" -j cali-nat-outgoing',
    `-A cali-nat-outgoing -s ${clusterCIDR} ! -d ${clusterCIDR} -j MASQUERADE --random-fully`,
    'COMMIT',
    '',
  ].join('\n')
}

export async function loadIptables(state: LabState, plan: LabPlan, backend: 'nft' | 'legacy'): Promise<void> {
  const restore = backend === 'legacy' ? 'iptables-legacy-restore' : 'iptables-restore'
  for (const n of plan.nodes) {
    const rules = renderIptablesSave(plan.cluster, { clusterCIDR: LAB.clusterCIDR, nodeName: n.name, nodeIPs: [n.ip] })
    writeFileSync(join(state.dir, `${n.name}.iptables`), rules)
    // A 20 000-service rule set takes iptables-restore minutes on a busy machine: allow 1 ms per line, at least 60 s.
    const lines = rules.split('\n').length
    await must(['ip', 'netns', 'exec', n.ns, restore], { input: rules, timeoutMs: Math.max(60_000, lines) })
    await must(['ip', 'netns', 'exec', n.ns, restore, '--noflush'], { input: natOutgoingRules() })
    for (const m of plan.nodes) {
      if (m !== n) await must(['ip', '-n', n.ns, 'route', 'add', m.podCIDR, 'via', m.ip, 'dev', LAB.uplink])
    }
  }
}

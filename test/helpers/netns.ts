// Test-side entry to the namespace harness: skip cleanly when not root, sweep what crashed runs left behind.
import type {} from 'tap'

import { isRoot, haveCommand, sweepAbandoned, Topology } from '../../src/netns/netns'
export * from '../../src/netns/netns'

/** Options for t.test(): skip with a clear message unless we can make namespaces. */
export function netnsSkip(...commands: string[]): { skip: string | false } {
  if (!isRoot()) return { skip: 'network-namespace tests need root (CI runs as root)' }
  for (const c of ['ip', ...commands]) if (!haveCommand(c)) return { skip: `needs ${c} (scripts/bootstrap installs it)` }
  return { skip: false }
}

/** A Topology that is torn down when the current test ends, whatever happens. */
export function topology(tt: tap.Test, tag?: string): Topology {
  sweepAbandoned('tt')
  const topo = new Topology('tt', tag)
  tt.teardown(() => topo.cleanup())
  return topo
}

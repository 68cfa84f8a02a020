// placeholder: filled in by the agent work
import type { Command } from 'commander'
export function registerAgent(_program: Command): void { /* not yet */ }

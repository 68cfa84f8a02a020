// placeholder: filled in by the inspect work
import type { Command } from 'commander'
export function registerInspect(_program: Command): void { /* not yet */ }

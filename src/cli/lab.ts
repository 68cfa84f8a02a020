// placeholder: filled in by the lab work
import type { Command } from 'commander'
export function registerLab(_program: Command): void { /* not yet */ }

#!/usr/bin/env node
// The `tundra` command: each subcommand lives in its own module and registers itself here.
import { Command } from 'commander'
import { registerLab } from './lab'
import { registerAgent } from './agent'
import { registerInspect } from './inspect'
import { registerStart } from './start'
import { registerCapture } from './capture'
import { registerRun } from './run'
import { registerObserve } from './observe'

export function buildProgram(): Command {
  const program = new Command('tundra')
    .description('A userspace Kubernetes node dataplane: Service NAT, cluster DNS and pod routing on a TUN device')
    .showHelpAfterError()
  registerLab(program)
  registerAgent(program)
  registerInspect(program)
  registerStart(program)
  registerCapture(program)
  registerRun(program)
  registerObserve(program)
  return program
}

if (require.main === module) {
  buildProgram()
    .parseAsync(process.argv)
    .catch((err: unknown) => {
      const e = err as { message?: string }
      process.stderr.write(`tundra: ${e.message ?? String(err)}\n`)
      process.exit(1)
    })
}

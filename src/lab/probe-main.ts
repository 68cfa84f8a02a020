// `node dist/src/lab/probe-main.js --timeout MS tcp:IP:PORT udp:IP:PORT dns:IP:PORT …`, run inside a node's namespace:
// prints `ready <target>` as each answers; exits 0 when all did, 1 (listing the rest) on timeout.
import { formatTarget, parseTarget, probeAll } from './probe'

async function main(): Promise<number> {
  const argv = process.argv.slice(2)
  let timeoutMs = 30_000
  const targets = []
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--timeout') timeoutMs = Number(argv[++i])
    else targets.push(parseTarget(argv[i]!))
  }
  const rest = await probeAll(targets, timeoutMs, t => process.stdout.write(`ready ${formatTarget(t)}\n`))
  for (const t of rest) process.stdout.write(`unready ${formatTarget(t)}\n`)
  return rest.length === 0 ? 0 : 1
}

main().then(
  code => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`probe: ${(err as Error).message}\n`)
    process.exit(2)
  },
)

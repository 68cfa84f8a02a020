// Entry point of the lab's netexec backend: `node dist/src/lab/netexec-main.js --http-port 8080 --udp-port 8081`.
import { parseNetexecArgs, startNetexec } from './netexec'

async function main(): Promise<void> {
  const opts = parseNetexecArgs(process.argv.slice(2))
  if (opts.httpPorts.length + opts.udpPorts.length === 0) throw new Error('give at least one --http-port or --udp-port')
  const server = await startNetexec(opts)
  process.stderr.write(`netexec: serving http ${server.httpPorts.join(',') || '-'} udp ${server.udpPorts.join(',') || '-'}\n`)
  const stop = (): void => {
    void server.close().then(() => process.exit(0))
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

main().catch((err: unknown) => {
  process.stderr.write(`netexec: ${(err as Error).message}\n`)
  process.exit(1)
})

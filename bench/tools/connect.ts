// New-connection load generator, run inside a pod's namespace: `concurrency` loops each opening a TCP connection,
// (http mode) sending `GET / HTTP/1.0` and reading until the server closes, then starting the next — no keep-alive,
// so every request is a new connection (a SYN through the dataplane's new-flow path). Bounded by time and count;
// prints one JSON line: {connections, errors, seconds, perSecond, p50Ms, p99Ms}.
import { connect, type Socket } from 'node:net'

interface Opts {
  host: string
  port: number
  seconds: number
  concurrency: number
  max: number
  mode: 'http' | 'tcp'
  timeoutMs: number
}

function parse(argv: readonly string[]): Opts {
  const o: Opts = { host: '', port: 80, seconds: 3, concurrency: 16, max: 1_000_000, mode: 'http', timeoutMs: 3000 }
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]!
    const v = argv[i + 1]
    if (v === undefined) throw new Error(`${k} needs a value`)
    if (k === '--host') o.host = v
    else if (k === '--port') o.port = Number(v)
    else if (k === '--seconds') o.seconds = Number(v)
    else if (k === '--concurrency') o.concurrency = Number(v)
    else if (k === '--max') o.max = Number(v)
    else if (k === '--mode') o.mode = v === 'tcp' ? 'tcp' : 'http'
    else if (k === '--timeout-ms') o.timeoutMs = Number(v)
    else throw new Error(`unknown argument ${k}`)
  }
  if (!o.host) throw new Error('--host is required')
  return o
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2))
  const request = Buffer.from(`GET / HTTP/1.0\r\nHost: ${o.host}\r\nUser-Agent: tundra-bench\r\n\r\n`)
  const start = process.hrtime.bigint()
  const end = start + BigInt(Math.round(o.seconds * 1e9))
  let started = 0
  let done = 0
  let errors = 0
  const lat: number[] = []
  const one = (): Promise<void> =>
    new Promise(resolve => {
      const t0 = process.hrtime.bigint()
      let got = 0
      let finished = false
      const s: Socket = connect({ host: o.host, port: o.port, noDelay: true })
      const finish = (ok: boolean): void => {
        if (finished) return
        finished = true
        clearTimeout(timer)
        s.destroy()
        if (ok) {
          done++
          if (lat.length < 200_000) lat.push(Number(process.hrtime.bigint() - t0) / 1e6)
        } else errors++
        resolve()
      }
      const timer = setTimeout(() => finish(false), o.timeoutMs)
      s.once('connect', () => {
        if (o.mode === 'tcp') {
          s.end()
          return
        }
        s.write(request)
      })
      s.on('data', d => {
        got += d.length
      })
      s.once('close', hadError => finish(!hadError && (o.mode === 'tcp' || got > 0)))
      s.once('error', () => finish(false))
    })
  const loop = async (): Promise<void> => {
    while (process.hrtime.bigint() < end && started < o.max) {
      started++
      await one()
    }
  }
  await Promise.all(Array.from({ length: o.concurrency }, loop))
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  lat.sort((a, b) => a - b)
  const q = (p: number): number => (lat.length ? lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))]! : NaN)
  process.stdout.write(JSON.stringify({ connections: done, errors, seconds, perSecond: done / seconds, p50Ms: q(50), p99Ms: q(99) }) + '\n')
}

main().catch(err => {
  process.stderr.write(`connect: ${(err as Error).message}\n`)
  process.exit(1)
})

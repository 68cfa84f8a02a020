// UDP round-trip probe for the churn section, run inside the client pod's namespace: `rate` probes per second to
// host:port (netexec answers "hostname" with its pod's name), each from its own socket bound to the next port of
// [portBase, 61000), so every probe is a new flow and no conntrack entry from an earlier probe decides its endpoint.
// Bounded by time (`seconds`, then `timeoutMs` for the last replies) and by the sockets open at once.
// While it runs it prints `switch <sendNs> <name>` when a reply comes from another endpoint than the one before
// (sendNs: CLOCK_MONOTONIC of the probe's send, comparable with the bench's process.hrtime); at the end one JSON line:
// {sent, replied, lost, skipped (not sent: the client fell behind), stalled (not sent: maxOpen sockets waited), seconds, rttUs: [...], switches: [...]}.
import { createSocket, type Socket } from 'node:dgram'

interface Opts {
  host: string
  port: number
  rate: number
  seconds: number
  portBase: number
  timeoutMs: number
  maxOpen: number
}

const PORT_END = 61000 // the client's ephemeral range starts here (the bench sets it), so bound ports never collide
const MAX_BURST = 20 // probes sent in one tick when the loop fell behind

function parse(argv: readonly string[]): Opts {
  const o: Opts = { host: '', port: 9000, rate: 1000, seconds: 5, portBase: 10000, timeoutMs: 1000, maxOpen: 5000 }
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]!
    const v = Number(argv[i + 1])
    if (argv[i + 1] === undefined) throw new Error(`${k} needs a value`)
    if (k === '--host') o.host = argv[i + 1]!
    else if (k === '--port') o.port = v
    else if (k === '--rate') o.rate = v
    else if (k === '--seconds') o.seconds = v
    else if (k === '--port-base') o.portBase = v
    else if (k === '--timeout-ms') o.timeoutMs = v
    else if (k === '--max-open') o.maxOpen = v
    else throw new Error(`unknown argument ${k}`)
  }
  if (!o.host) throw new Error('--host is required')
  if (!(o.rate > 0) || !(o.seconds > 0) || !(o.portBase >= 1024 && o.portBase < PORT_END)) throw new Error('bad --rate, --seconds or --port-base')
  return o
}

function main(): void {
  const o = parse(process.argv.slice(2))
  const msg = Buffer.from('hostname')
  const start = process.hrtime.bigint()
  const stopAt = start + BigInt(Math.round(o.seconds * 1e9))
  const total = Math.round(o.seconds * o.rate)
  const rtt: number[] = []
  const switches: { sendNs: string; name: string }[] = []
  let sent = 0
  let replied = 0
  let lost = 0
  let skipped = 0
  let stalled = 0
  let open = 0
  let port = o.portBase
  let last = ''
  let done = false

  const finish = (): void => {
    if (done) return
    done = true
    process.stdout.write(
      JSON.stringify({
        sent,
        replied,
        lost,
        skipped,
        stalled,
        seconds: Number(process.hrtime.bigint() - start) / 1e9,
        rttUs: rtt.map(v => Math.round(v * 10) / 10),
        switches,
      }) + '\n',
    )
    process.exit(0)
  }
  const maybeFinish = (): void => {
    if (sent + skipped + stalled >= total && open === 0) finish()
  }

  const probe = (): void => {
    if (open >= o.maxOpen) {
      stalled++
      return
    }
    const p = port
    port = port + 1 >= PORT_END ? o.portBase : port + 1
    const s: Socket = createSocket('udp4')
    open++
    let t0 = 0n
    let closed = false
    const close = (): void => {
      if (closed) return
      closed = true
      clearTimeout(timer)
      s.close()
      open--
      maybeFinish()
    }
    const timer = setTimeout(() => {
      lost++
      close()
    }, o.timeoutMs)
    s.on('error', () => {
      lost++
      close()
    })
    s.on('message', buf => {
      if (closed) return
      rtt.push(Number(process.hrtime.bigint() - t0) / 1000)
      replied++
      const name = buf.toString('utf8').trim()
      if (name !== last) {
        last = name
        switches.push({ sendNs: String(t0), name })
        process.stdout.write(`switch ${t0} ${name}\n`)
      }
      close()
    })
    s.bind(p, () => {
      t0 = process.hrtime.bigint()
      s.send(msg, o.port, o.host)
    })
    sent++
  }

  // Paced by elapsed time: each tick sends what is due (at most MAX_BURST), so timer jitter does not lower the rate.
  const tick = (): void => {
    const now = process.hrtime.bigint()
    if (now >= stopAt || sent + skipped + stalled >= total) {
      skipped += Math.max(0, total - sent - skipped - stalled)
      maybeFinish()
      return
    }
    const due = Math.min(total, Math.floor((Number(now - start) / 1e9) * o.rate) + 1)
    for (let k = 0; k < MAX_BURST && sent + skipped + stalled < due; k++) probe()
    setTimeout(tick, 0)
  }
  tick()
  // a hard bound whatever happens
  setTimeout(finish, o.seconds * 1000 + o.timeoutMs + 5000).unref()
}

main()

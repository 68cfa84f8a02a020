// A small test backend modelled on agnhost netexec: what a lab pod with containerPorts (and not nginx) runs.
//
//   HTTP  GET /hostname     -> the pod's hostname          UDP "hostname"  -> the pod's hostname
//         GET /clientip     -> caller ip:port              UDP "clientip"  -> caller ip:port
//         GET /echo?msg=X   -> X                           UDP "echo X"    -> X
//         GET /healthz      -> ok
//         GET /             -> NOW: <time>                 (as agnhost answers)
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createSocket, type Socket } from 'node:dgram'
import { hostname as osHostname } from 'node:os'

export interface NetexecOptions {
  readonly httpPorts: readonly number[]
  readonly udpPorts: readonly number[]
  /** what /hostname answers; defaults to the UTS hostname (the lab sets it to the pod's name) */
  readonly hostname?: string
  /** address to bind; 0.0.0.0 keeps /clientip free of IPv4-mapped IPv6 addresses */
  readonly host?: string
  /** also serve on IPv6 (`::`, IPv6 only, so IPv4 callers keep plain addresses): a dual-stack pod */
  readonly ipv6?: boolean
}

export interface Netexec {
  /** the bound ports, in the order given (useful with port 0) */
  readonly httpPorts: readonly number[]
  readonly udpPorts: readonly number[]
  close(): Promise<void>
}

/** Answers one HTTP request; exported for tests that do not want sockets. */
export function answerHttp(url: string, peer: string, hostname: string): { status: number; body: string } {
  const u = new URL(url, 'http://netexec')
  switch (u.pathname) {
    case '/hostname':
      return { status: 200, body: hostname }
    case '/clientip':
      return { status: 200, body: peer }
    case '/echo':
      return { status: 200, body: u.searchParams.get('msg') ?? '' }
    case '/healthz':
      return { status: 200, body: 'ok' }
    case '/':
      return { status: 200, body: `NOW: ${new Date().toISOString()}` }
    default:
      return { status: 404, body: `404 page not found: ${u.pathname}\n` }
  }
}

/** Answers one UDP datagram, or undefined for a command netexec does not know (agnhost stays silent too). */
export function answerUdp(msg: string, peer: string, hostname: string): string | undefined {
  const text = msg.replace(/\r?\n$/, '')
  if (text === 'hostname') return hostname
  if (text === 'clientip') return peer
  if (text.startsWith('echo ')) return text.slice(5)
  return undefined
}

const portOf = (a: ReturnType<Server['address']>): number => (a && typeof a === 'object' ? a.port : 0)

export async function startNetexec(opts: NetexecOptions): Promise<Netexec> {
  const host = opts.host ?? '0.0.0.0'
  const name = (): string => opts.hostname ?? osHostname()
  const https: Server[] = []
  const udps: Socket[] = []
  const close = async (): Promise<void> => {
    await Promise.all(
      https.map(
        s =>
          new Promise<void>(r => {
            s.closeAllConnections()
            s.close(() => r())
          }),
      ),
    )
    await Promise.all(udps.map(s => new Promise<void>(r => s.close(() => r()))))
  }
  const http = async (port: number, on: string, ipv6Only: boolean): Promise<Server> => {
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const peer = `${req.socket.remoteAddress ?? ''}:${req.socket.remotePort ?? 0}`
      const { status, body } = answerHttp(req.url ?? '/', peer, name())
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
    https.push(server)
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen({ port, host: on, ipv6Only }, () => resolve())
    })
    return server
  }
  const udp = async (port: number, on: string, v6: boolean): Promise<Socket> => {
    const sock = v6 ? createSocket({ type: 'udp6', ipv6Only: true }) : createSocket('udp4')
    udps.push(sock)
    sock.on('message', (msg, rinfo) => {
      const reply = answerUdp(msg.toString('utf8'), `${rinfo.address}:${rinfo.port}`, name())
      if (reply !== undefined) sock.send(reply, rinfo.port, rinfo.address)
    })
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject)
      sock.bind(port, on, () => resolve())
    })
    return sock
  }
  const v4https: Server[] = []
  const v4udps: Socket[] = []
  try {
    for (const port of opts.httpPorts) v4https.push(await http(port, host, false))
    for (const port of opts.udpPorts) v4udps.push(await udp(port, host, false))
    if (opts.ipv6 === true) {
      // the same port numbers (port 0: the ones the IPv4 sockets got)
      for (const [i, port] of opts.httpPorts.entries()) await http(port === 0 ? portOf(v4https[i]!.address()) : port, '::', true)
      for (const [i, port] of opts.udpPorts.entries()) await udp(port === 0 ? v4udps[i]!.address().port : port, '::', true)
    }
  } catch (err) {
    await close()
    throw err
  }
  return {
    httpPorts: v4https.map(s => portOf(s.address())),
    udpPorts: v4udps.map(s => s.address().port),
    close,
  }
}

/** Parses `--http-port N --udp-port N --hostname H --ipv6` (each port flag may repeat; `--flag=value` works too). */
export function parseNetexecArgs(argv: readonly string[]): NetexecOptions {
  const httpPorts: number[] = []
  const udpPorts: number[] = []
  let hostname: string | undefined
  let ipv6 = false
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const eq = arg.indexOf('=')
    const flag = eq >= 0 ? arg.slice(0, eq) : arg
    const value = (): string => {
      const v = eq >= 0 ? arg.slice(eq + 1) : argv[++i]
      if (v === undefined) throw new Error(`${flag} needs a value`)
      return v
    }
    const port = (): number => {
      const v = value()
      const n = Number(v)
      if (!/^\d+$/.test(v) || n > 65535) throw new Error(`${flag}: not a port: ${v}`)
      return n
    }
    if (flag === '--http-port') httpPorts.push(port())
    else if (flag === '--udp-port') udpPorts.push(port())
    else if (flag === '--hostname') hostname = value()
    else if (arg === '--ipv6') ipv6 = true
    else throw new Error(`unknown argument ${arg}`)
  }
  return { httpPorts, udpPorts, ...(hostname === undefined ? {} : { hostname }), ...(ipv6 ? { ipv6 } : {}) }
}

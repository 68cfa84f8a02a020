// The lab's netexec backend and readiness probes, over loopback sockets (no root needed).
import t from 'tap'
import { createSocket } from 'node:dgram'
import { request } from 'node:http'
import { createServer } from 'node:net'
import { answerUdp, parseNetexecArgs, startNetexec } from '../../src/lab/netexec'
import { dnsQuery, parseTarget, probeAll, probeOnce } from '../../src/lab/probe'

function get(port: number, path: string): Promise<{ status: number; body: string; local: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, res => {
      const local = `${res.socket.localAddress}:${res.socket.localPort}`
      let body = ''
      res
        .setEncoding('utf8')
        .on('data', d => {
          body += d
        })
        .on('end', () => resolve({ status: res.statusCode ?? 0, body, local }))
    })
    req.on('error', reject)
    req.end()
  })
}

/** Sends datagrams in order and collects the first `want` replies (loopback keeps order). */
function udp(port: number, msgs: string[], want: number): Promise<{ replies: string[]; local: string }> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4')
    const replies: string[] = []
    const timer = setTimeout(() => {
      s.close()
      reject(new Error(`only ${replies.length} replies`))
    }, 5000)
    s.on('message', m => {
      replies.push(m.toString())
      if (replies.length === want) {
        clearTimeout(timer)
        const a = s.address()
        s.close()
        resolve({ replies, local: `${a.address}:${a.port}` })
      }
    })
    s.bind(0, '127.0.0.1', () => {
      for (const m of msgs) s.send(m, port, '127.0.0.1')
    })
  })
}

t.test('HTTP: /hostname /clientip /echo /healthz, 404 otherwise', async t => {
  const ne = await startNetexec({ httpPorts: [0], udpPorts: [], hostname: 'pod-a', host: '127.0.0.1' })
  t.teardown(() => ne.close())
  const port = ne.httpPorts[0]!
  t.same(await get(port, '/hostname').then(r => [r.status, r.body]), [200, 'pod-a'])
  t.same(await get(port, '/echo?msg=hello%20lab').then(r => [r.status, r.body]), [200, 'hello lab'])
  t.same(await get(port, '/healthz').then(r => [r.status, r.body]), [200, 'ok'])
  t.equal((await get(port, '/nope')).status, 404)
  const r = await get(port, '/clientip')
  t.equal(r.body, r.local, 'the caller as the server saw it')
  t.match(r.body, /^127\.0\.0\.1:\d+$/)
})

t.test('UDP: hostname, echo, clientip; unknown commands get no answer', async t => {
  const ne = await startNetexec({ httpPorts: [], udpPorts: [0], hostname: 'pod-b', host: '127.0.0.1' })
  t.teardown(() => ne.close())
  const { replies, local } = await udp(ne.udpPorts[0]!, ['bogus', 'hostname', 'echo a b c', 'clientip'], 3)
  t.same(replies, ['pod-b', 'a b c', local])
  t.equal(answerUdp('hostname\n', 'x', 'h'), 'h', 'a trailing newline (nc) is fine')
})

t.test('several ports, and a port in use is an error', async t => {
  const a = await startNetexec({ httpPorts: [0, 0], udpPorts: [0], host: '127.0.0.1' })
  t.teardown(() => a.close())
  t.equal(a.httpPorts.length, 2)
  await t.rejects(startNetexec({ httpPorts: [a.httpPorts[0]!], udpPorts: [], host: '127.0.0.1' }), { code: 'EADDRINUSE' })
})

t.test('argument parsing', async t => {
  t.same(parseNetexecArgs(['--http-port', '80', '--http-port=8080', '--udp-port', '53', '--hostname=x']), {
    httpPorts: [80, 8080],
    udpPorts: [53],
    hostname: 'x',
  })
  t.throws(() => parseNetexecArgs(['--http-port', '70000']), /not a port/)
  t.throws(() => parseNetexecArgs(['--http-port']), /needs a value/)
  t.throws(() => parseNetexecArgs(['--bogus']), /unknown argument/)
})

t.test('probes: tcp connects, udp needs a reply, dns needs a response to our id', async t => {
  const ne = await startNetexec({ httpPorts: [0], udpPorts: [0], host: '127.0.0.1' })
  t.teardown(() => ne.close())
  t.equal(await probeOnce({ kind: 'tcp', ip: '127.0.0.1', port: ne.httpPorts[0]! }), true)
  t.equal(await probeOnce({ kind: 'udp', ip: '127.0.0.1', port: ne.udpPorts[0]! }), true)
  // a closed TCP port is refused at once; a silent UDP port times out
  const closed = createServer()
  await new Promise<void>(r => closed.listen(0, '127.0.0.1', () => r()))
  const closedPort = (closed.address() as { port: number }).port
  await new Promise<void>(r => closed.close(() => r()))
  t.equal(await probeOnce({ kind: 'tcp', ip: '127.0.0.1', port: closedPort }), false)
  const silent = createSocket('udp4')
  await new Promise<void>(r => silent.bind(0, '127.0.0.1', () => r()))
  t.teardown(() => silent.close())
  t.equal(await probeOnce({ kind: 'udp', ip: '127.0.0.1', port: silent.address().port }, 100), false)

  // a resolver: answers with the query id and QR set
  const dns = createSocket('udp4')
  dns.on('message', (m, r) => {
    const out = Buffer.from(m)
    out.writeUInt16BE(out.readUInt16BE(2) | 0x8000, 2)
    dns.send(out, r.port, r.address)
  })
  await new Promise<void>(r => dns.bind(0, '127.0.0.1', () => r()))
  t.teardown(() => dns.close())
  t.equal(await probeOnce({ kind: 'dns', ip: '127.0.0.1', port: dns.address().port }), true)
  t.equal(await probeOnce({ kind: 'dns', ip: '127.0.0.1', port: ne.udpPorts[0]! }, 200), false, 'netexec does not speak DNS')

  const q = dnsQuery(0x1234)
  t.equal(q.readUInt16BE(0), 0x1234)
  t.equal(q.readUInt16BE(4), 1, 'one question')
  t.same([...q.subarray(12, 26)], [7, ...Buffer.from('example'), 4, ...Buffer.from('test'), 0])

  const seen: string[] = []
  const rest = await probeAll([parseTarget(`tcp:127.0.0.1:${ne.httpPorts[0]}`), parseTarget(`tcp:127.0.0.1:${closedPort}`)], 300, x => seen.push(`${x.port}`))
  t.same(seen, [String(ne.httpPorts[0])])
  t.same(
    rest.map(x => x.port),
    [closedPort],
  )
  t.throws(() => parseTarget('tcp:host:1'), /not a probe target/)
})

t.test('--ipv6: the same ports on ::, IPv6 only, so IPv4 callers stay plain', async t => {
  t.same(parseNetexecArgs(['--http-port', '80', '--ipv6']), { httpPorts: [80], udpPorts: [], ipv6: true })
  const ne = await startNetexec({ httpPorts: [0], udpPorts: [0], hostname: 'pod-6', ipv6: true })
  t.teardown(() => ne.close())
  const body = await new Promise<string>((resolve, reject) => {
    const req = request({ host: '::1', port: ne.httpPorts[0]!, path: '/clientip', agent: false }, res => {
      let b = ''
      res
        .setEncoding('utf8')
        .on('data', d => {
          b += d
        })
        .on('end', () => resolve(b))
    })
    req.on('error', reject)
    req.end()
  })
  t.match(body, /^::1:\d+$/, 'an IPv6 caller')
  t.match((await get(ne.httpPorts[0]!, '/clientip')).body, /^127\.0\.0\.1:\d+$/, 'an IPv4 caller, not ::ffff:')
  const reply = await new Promise<string>((resolve, reject) => {
    const s = createSocket('udp6')
    const timer = setTimeout(() => {
      s.close()
      reject(new Error('no UDP reply over IPv6'))
    }, 5000)
    s.on('message', m => {
      clearTimeout(timer)
      s.close()
      resolve(m.toString())
    })
    s.send('hostname', ne.udpPorts[0]!, '::1')
  })
  t.equal(reply, 'pod-6')
})

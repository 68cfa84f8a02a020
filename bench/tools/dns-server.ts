// tundra's cluster DNS on a kernel UDP socket, for the DNS section: the zone of a lab manifest (the same records
// dnsmasq gets), answered by DnsServer.answerInPlace behind listenUdp. Prints "listening <addr>:<port>" when ready.
import { compileLab } from '../../src/lab/compile'
import { DnsServer } from '../../src/dns/server'

async function main(): Promise<void> {
  const [file, host, port] = process.argv.slice(2)
  if (!file || !host || !port) throw new Error('usage: dns-server.js <manifest> <address> <port>')
  const cluster = compileLab({ name: 'bndns', files: [file], nodes: 1, dataplane: 'none' }).cluster
  const dns = new DnsServer({ upstream: ['127.0.0.1:9'], dnsIP: '10.96.0.10', zone: 'cluster.local' })
  dns.setCluster(cluster)
  const a = await dns.listenUdp(host, Number(port))
  process.stdout.write(`listening ${a.address}:${a.port}\n`)
  const stop = (): void => {
    void dns.close().then(() => process.exit(0))
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

main().catch(err => {
  process.stderr.write(`dns-server: ${(err as Error).message}\n`)
  process.exit(1)
})

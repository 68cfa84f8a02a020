// When the TUN cannot be opened, the error names the fix: without CAP_NET_ADMIN (an unprivileged process, as in a
// container without NET_ADMIN), and without /dev/net/tun (a container whose runtime does not provide the device). Both
// run in a namespace this test makes; docker is not available here, so the container cases are reproduced with
// setpriv (capabilities dropped) and a mount namespace hiding /dev/net.
import t from 'tap'
import { netnsSkip, topology } from '../helpers/netns'
import { run } from '../../src/netns/netns'
import { fixtureCommand } from './fixtures/launch'

const skip = netnsSkip('setpriv', 'unshare')

t.test('opening the TUN fails with a message that names the fix', { ...skip, timeout: 60_000 }, async t => {
  const topo = topology(t, 'tun')
  const ns = await topo.ns('n')
  const open = async (prefix: string[]): Promise<{ ok?: boolean; code?: string; syscall?: string; message?: string }> => {
    const r = await run(['ip', 'netns', 'exec', ns, ...prefix, ...fixtureCommand('tun-open', ns)])
    t.equal(r.code, 0, `the fixture ran (${r.stderr.trim()})`)
    return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { ok?: boolean }
  }

  const ok = await open([])
  t.same(ok, { ok: true }, 'as root in the namespace it opens')

  const noCap = await open(['setpriv', '--inh-caps=-net_admin', '--bounding-set=-net_admin', '--'])
  t.equal(noCap.code, 'EPERM', 'without CAP_NET_ADMIN the kernel says EPERM')
  t.match(noCap.message, /needs CAP_NET_ADMIN/, 'and the message says what is missing')
  t.match(noCap.message, /privileged|NET_ADMIN/, 'and how a container gets it')

  // a mount namespace where /dev/net is an empty tmpfs: what a container without the device sees
  const noDev = await open(['unshare', '--mount', 'sh', '-c', 'mount -t tmpfs none /dev/net && exec "$@"', 'sh'])
  t.equal(noDev.code, 'ENOENT', 'without the device node the kernel says ENOENT')
  t.match(noDev.message, /no \/dev\/net\/tun/, 'and the message says so')
  t.match(noDev.message, /privileged.*mknod \/dev\/net\/tun c 10 200/s, 'and names both fixes')
})

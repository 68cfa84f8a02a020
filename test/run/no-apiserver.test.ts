// Without --kubeconfig, outside a pod and with no kubeconfig file, `tundra run` says so and how to fix it, instead
// of retrying forever against client-node's default (http://localhost:8080) with an unrelated message.
import t from 'tap'
import { join } from 'node:path'
import { loadKubeConfig } from '../../src/run/watch'
import { tempDir } from '../helpers/tmp'

t.test('no kubeconfig and no in-cluster config: a clear error', async t => {
  const dir = tempDir(t)
  const saved = { ...process.env }
  t.teardown(() => {
    process.env = saved
  })
  delete process.env['KUBERNETES_SERVICE_HOST']
  process.env['KUBECONFIG'] = join(dir, 'missing')
  await t.rejects(loadKubeConfig(), {
    code: 'ERR_NO_API_SERVER',
    message: /no API server.*KUBERNETES_SERVICE_HOST is unset.*--kubeconfig FILE, or -f MANIFESTS/,
  })
})

t.test('--master replaces the server of the kubeconfig', async t => {
  const dir = tempDir(t, {
    kc: [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: c',
      '  cluster: {server: "https://10.96.0.1:443"}',
      'users:',
      '- name: u',
      '  user: {token: t}',
      'contexts:',
      '- name: x',
      '  context: {cluster: c, user: u}',
      'current-context: x',
      '',
    ].join('\n'),
  })
  const kc = await loadKubeConfig(join(dir, 'kc'), 'https://192.0.2.10:6443')
  t.equal(kc.getCurrentCluster()?.server, 'https://192.0.2.10:6443')
  t.equal((await loadKubeConfig(join(dir, 'kc'), '192.0.2.10:6443')).getCurrentCluster()?.server, 'https://192.0.2.10:6443', 'host:port means https')
  t.equal((await loadKubeConfig(join(dir, 'kc'))).getCurrentCluster()?.server, 'https://10.96.0.1:443', "without it, the kubeconfig's")
})

t.test('--master and logging.format: json are taken, not refused', async t => {
  const { mergeFlags, parseKubeProxyConfig } = await import('../../src/run/kpconfig')
  t.equal(mergeFlags(undefined, { master: 'https://192.0.2.10:6443' }).master, 'https://192.0.2.10:6443')
  const file = parseKubeProxyConfig(
    'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nlogging: {format: json, verbosity: 2}\n',
    'c.yaml',
  )
  t.same(mergeFlags(file, {}).logging, { format: 'json', verbosity: 2 })
  t.equal(mergeFlags(undefined, { loggingFormat: 'json' }).logging.format, 'json', '--logging-format json')
})

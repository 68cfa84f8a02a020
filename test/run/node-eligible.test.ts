// /healthz's node rule, as kube-proxy's ProxyHealthServer: not eligible while the Node is being deleted or carries
// the cluster autoscaler's ToBeDeletedByClusterAutoscaler taint; the store keeps the taints it needs for that.
import t from 'tap'
import { nodeEligible } from '../../src/run/sync'

const TAINT_TO_BE_DELETED = 'ToBeDeletedByClusterAutoscaler'
import { trimObject } from '../../src/run/store'
import type { KubeObject } from '../../src/k8s/types'

const node = (extra: Record<string, unknown> = {}, spec: Record<string, unknown> = {}): KubeObject =>
  ({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1', ...extra }, spec: { podCIDR: '10.0.0.0/24', ...spec } }) as unknown as KubeObject

t.test('deletion and the autoscaler taint make a node ineligible', async t => {
  t.equal(nodeEligible(undefined), true, 'no Node object: eligible')
  t.equal(nodeEligible(node() as never), true)
  t.equal(nodeEligible(node({ deletionTimestamp: '2026-01-01T00:00:00Z' }) as never), false)
  const tainted = node({}, { taints: [{ key: TAINT_TO_BE_DELETED, value: '1700000000', effect: 'NoSchedule' }] })
  t.equal(nodeEligible(tainted as never), false, 'ToBeDeletedByClusterAutoscaler')
  t.equal(
    nodeEligible(node({}, { taints: [{ key: 'DeletionCandidateOfClusterAutoscaler', effect: 'PreferNoSchedule' }] }) as never),
    true,
    'only the ToBeDeleted taint counts, as in kube-proxy',
  )
  t.equal(nodeEligible(trimObject(tainted) as never), false, 'the store keeps the taints')
})

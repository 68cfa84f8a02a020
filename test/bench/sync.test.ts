// The sync section's plan: which kernel loaders run at which size, and the time caps that bound them.
import t from 'tap'
import { capsAt, loadersAt } from '../../bench/sections/sync'

t.test('nft -f up to 10 000 services, iptables-restore (both backends) at every size', async t => {
  t.same(loadersAt(1000, false), ['iptables-nft', 'iptables-legacy', 'nftables'])
  t.same(loadersAt(10_000, false), ['iptables-nft', 'iptables-legacy', 'nftables'])
  t.same(loadersAt(20_000, false), ['iptables-nft', 'iptables-legacy'])
  t.same(loadersAt(20_000, true), ['iptables-nft', 'iptables-legacy', 'nftables'], '--nft20k')
})

t.test('caps grow with the rule set: the given cap at 20 000 services, at least 20 s (10 s for a partial sync)', async t => {
  t.same(capsAt(20_000, 120_000), { full: 120_000, delta: 60_000 })
  t.same(capsAt(10_000, 120_000), { full: 60_000, delta: 30_000 })
  t.same(capsAt(1000, 120_000), { full: 20_000, delta: 10_000 })
  t.same(capsAt(1000, 5000), { full: 5000, delta: 10_000 }, 'a cap below 20 s is taken as given')
})

// Bench helpers: medians, percentiles and number formatting (no timings are asserted anywhere in test/bench).
import t from 'tap'
import { fixed, mean, median, percentile, ratio, si } from '../../bench/lib/stats'

t.test('median', async t => {
  t.equal(median([3, 1, 2]), 2)
  t.equal(median([4, 1, 3, 2]), 2.5)
  t.equal(median([5]), 5)
  t.ok(Number.isNaN(median([])))
  t.equal(median([NaN, 1, Infinity, 3]), 2, 'non-finite values are left out')
})

t.test('percentile interpolates between ranks', async t => {
  const v = [10, 20, 30, 40, 50]
  t.equal(percentile(v, 0), 10)
  t.equal(percentile(v, 50), 30)
  t.equal(percentile(v, 100), 50)
  t.equal(percentile(v, 25), 20)
  t.equal(percentile([1, 2], 50), 1.5)
  t.equal(percentile([7], 99), 7)
  t.ok(Number.isNaN(percentile([], 50)))
})

t.test('mean and ratio', async t => {
  t.equal(mean([1, 2, 3, NaN]), 2)
  t.equal(ratio(3, 2), 1.5)
  t.ok(Number.isNaN(ratio(1, 0)))
  t.ok(Number.isNaN(ratio(NaN, 2)))
})

t.test('si and fixed', async t => {
  t.equal(si(1234567), '1.23M')
  t.equal(si(999), '999')
  t.equal(si(0.00042, 's'), '420 µs')
  t.equal(si(12_500, 'pps'), '12.5 kpps')
  t.equal(si(0), '0')
  t.equal(si(NaN), '–')
  t.equal(fixed(1.005, 1), '1.0')
  t.equal(fixed(NaN), '–')
})

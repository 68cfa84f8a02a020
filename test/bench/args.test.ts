// `npm run bench` option parsing.
import t from 'tap'
import { ArgsError, parseArgs, SECTIONS } from '../../bench/lib/args'

t.test('defaults and --quick', async t => {
  const a = parseArgs([], '/out')
  t.same(a.sections, SECTIONS)
  t.equal(a.rounds, 3)
  t.equal(a.seconds, 3)
  t.equal(a.out, '/out')
  t.equal(a.loadCap, 120)
  t.equal(a.writeResults, false)
  t.equal(a.resultsFrom, undefined)
  const q = parseArgs(['--quick'], '/out')
  t.equal(q.quick, true)
  t.equal(q.rounds, 1)
  t.equal(q.seconds, 1)
  t.equal(q.loadCap, 120)
})

t.test('results: --write-results, --results with and without a file, --note, --load-cap', async t => {
  t.equal(parseArgs(['--write-results'], '/o').writeResults, true)
  t.equal(parseArgs(['--results'], '/o').resultsFrom, '/o/latest.json')
  t.equal(parseArgs(['--results', 'x.json'], '/o').resultsFrom, 'x.json')
  t.equal(parseArgs(['--results=y.json'], '/o').resultsFrom, 'y.json')
  const a = parseArgs(['--results', '--note', 'loaded'], '/o')
  t.equal(a.resultsFrom, '/o/latest.json', 'a flag after --results is not its file')
  t.equal(a.note, 'loaded')
  t.equal(parseArgs(['--load-cap', '300'], '/o').loadCap, 300)
  t.throws(() => parseArgs(['--load-cap', '0'], '/o'), ArgsError)
})

t.test('--only takes sections, lists and the control alias, in canonical order', async t => {
  t.same(parseArgs(['--only', 'dns,micro'], '/o').sections, ['micro', 'dns'])
  t.same(parseArgs(['--only=control'], '/o').sections, ['sync', 'firstpacket'])
  t.same(parseArgs(['--only', 'e2e', '--only', 'memory'], '/o').sections, ['memory', 'e2e'])
  t.throws(() => parseArgs(['--only', 'nope'], '/o'), ArgsError)
})

t.test('contenders, numbers, unknown flags', async t => {
  t.same(parseArgs(['--contenders', 'iptables-nft,tundra'], '/o').contenders, ['iptables-nft', 'tundra'])
  t.throws(() => parseArgs(['--contenders', 'ipvs'], '/o'), ArgsError)
  t.equal(parseArgs(['--rounds', '5', '--seconds=1.5'], '/o').seconds, 1.5)
  t.throws(() => parseArgs(['--rounds', '0'], '/o'), ArgsError)
  t.throws(() => parseArgs(['--rounds'], '/o'), ArgsError)
  t.throws(() => parseArgs(['--bogus'], '/o'), ArgsError)
})

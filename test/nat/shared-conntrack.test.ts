// One conntrack table in a SharedArrayBuffer, changed by two worker threads at once: no entry lost or duplicated.
// The workers load the built module (dist/, as the packet threads do): run `npx tsc -p tsconfig.json` first.
import t from 'tap'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { existsSync } from 'node:fs'
import { Conntrack, CtFlag, sharedConntrack } from '../../src/nat/conntrack'

const MODULE = join(__dirname, '../../dist/src/nat/conntrack.js')
const KEYS = 3000
const OPS = 40000
const PROTO = 17

// Each op takes a random key of a pool both workers draw from: absent -> create (orig + reply tuple), present ->
// delete it one time in three. The counts each worker made come back for the totals.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const { Conntrack } = require(workerData.module)
const ct = new Conntrack({ family: 4, shared: workerData.table, lockOwner: workerData.owner })
let seed = workerData.seed
const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296)
let created = 0, deleted = 0, full = 0
for (let i = 0; i < workerData.ops; i++) {
  const k = Math.floor(rnd() * workerData.keys)
  ct.lock()
  ct.key[0] = 0x0a640000 + k; ct.key[1] = 0x0a600014; ct.key[2] = ((40000 + (k & 0xfff)) << 16 | 53) >>> 0
  const ref = ct.lookup(${PROTO})
  if (ref < 0) {
    ct.tk[0] = ct.key[0]; ct.tk[1] = ct.key[1]; ct.tk[2] = ct.key[2]
    ct.tk[3] = 0x0a640102; ct.tk[4] = ct.key[0]; ct.tk[5] = ((53 << 16) | (40000 + (k & 0xfff))) >>> 0
    if (ct.create(${PROTO}, 0, 0, 1000) >= 0) created++; else full++
  } else if (rnd() < 1 / 3) { ct.delete(ref >>> 1); deleted++ }
  ct.unlock()
}
parentPort.postMessage({ created, deleted, full })
`

function runWorker(table: unknown, owner: number, seed: number): Promise<{ created: number; deleted: number; full: number }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(WORKER, { eval: true, workerData: { module: MODULE, table, owner, seed, ops: OPS, keys: KEYS } })
    w.once('message', resolve)
    w.once('error', reject)
    w.once('exit', code => (code === 0 ? undefined : reject(new Error(`worker exited with ${code}`))))
  })
}

t.test('two threads inserting and deleting overlapping tuples: every key once, counts match', { skip: !existsSync(MODULE) && 'dist/ not built' }, async tt => {
  const table = sharedConntrack(4, 4096, 99)
  const [a, b] = await Promise.all([runWorker(table, 1, 1), runWorker(table, 2, 2)])
  const ct = new Conntrack({ family: 4, shared: table, lockOwner: 3 })
  tt.equal(a.full + b.full, 0, 'never full')
  tt.ok(a.created > 1000 && b.created > 1000, `both threads created entries (${a.created}, ${b.created})`)
  tt.equal(ct.count, a.created + b.created - a.deleted - b.deleted, 'count = created - deleted over both threads')
  const seen = new Set<string>()
  const problems: string[] = []
  let live = 0
  for (const e of ct.entries()) {
    live++
    const o = ct.tupleOff(e, 0)
    const key = `${ct.tuples[o]}/${ct.tuples[o + 2]}`
    if (seen.has(key)) problems.push(`key ${key} twice`)
    seen.add(key)
    for (const dir of [0, 1]) if (ct.find(ct.tuples, ct.tupleOff(e, dir), PROTO) !== e * 2 + dir) problems.push(`entry ${e} not found by tuple ${dir}`)
  }
  tt.same(problems.slice(0, 10), [], 'every key once, found by both its tuples')
  tt.equal(live, ct.count, 'live entries = count')
  let used = 0
  for (let s = 0; s < ct.slots.length; s++) if (ct.slots[s] !== 0) used++
  tt.equal(used, 2 * ct.count, 'two hash slots per entry, none leaked')
  // every free entry is reusable: fill the table up to max with fresh keys
  let added = 0
  while (ct.count < ct.max) {
    ct.tk.set([0x0b000000 + added, 1, 2, 3, 0x0b000000 + added, 4])
    if (ct.create(PROTO, 0, 0, 1000) < 0) break
    added++
  }
  tt.equal(ct.count, ct.max, `free list intact: ${added} more entries fit`)
  tt.equal(ct.flags.filter(f => (f & CtFlag.USED) !== 0).length, ct.max)
})

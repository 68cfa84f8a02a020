// The daemon's log lines: timestamp and level on every line, text or JSON, verbosity, bad settings refused.
import t from 'tap'
import { configureLogging, logLine, logV, setLogSink } from '../../src/daemon/log'

function capture(t: { teardown(fn: () => void): void }): string[] {
  const lines: string[] = []
  const prev = setLogSink(s => {
    lines.push(s)
  })
  const settings = configureLogging({})
  t.teardown(() => {
    setLogSink(prev)
    configureLogging(settings)
  })
  return lines
}

t.test('text: ISO timestamp, level, the line as written', async t => {
  const lines = capture(t)
  configureLogging({ format: 'text', verbosity: 0 })
  logLine('[run] node1: synced')
  logLine('[run] warning: iptables.masqueradeBit: ignored')
  logLine('[watch] Service: connect ECONNREFUSED; keeping the last state, retrying in 800 ms')
  logLine('tundra: config.yaml: bad')
  t.match(lines[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO {2}\[run\] node1: synced\n$/)
  t.match(lines[1], / WARN {2}\[run\] warning: /)
  t.match(lines[2], / WARN {2}\[watch\] /, 'a retry is a warning')
  t.match(lines[3], / ERROR tundra: config.yaml: bad/)
})

t.test('json: one object per line with ts, level, v, component, msg', async t => {
  const lines = capture(t)
  configureLogging({ format: 'json' })
  logLine('[agent] tundra0 open')
  const o = JSON.parse(lines[0]!) as Record<string, unknown>
  t.same(Object.keys(o), ['ts', 'level', 'v', 'component', 'msg'])
  t.equal(o['level'], 'info')
  t.equal(o['component'], 'agent')
  t.equal(o['msg'], 'tundra0 open')
  t.ok(Math.abs((o['ts'] as number) - Date.now() / 1000) < 60, 'ts is seconds since the epoch')
  logLine('line with "quotes"\nand a newline')
  t.equal((JSON.parse(lines[1]!) as { msg: string }).msg, 'line with "quotes"\nand a newline', 'escaped, one line')
  t.equal(lines[1]!.split('\n').length, 2, 'still one line')
})

t.test('verbosity: logV lines only up to the configured level', async t => {
  const lines = capture(t)
  configureLogging({ format: 'text', verbosity: 2 })
  logV(2, '[run] detail')
  logV(3, '[run] more detail')
  t.equal(lines.length, 1)
})

t.test('bad settings are refused with the field named', async t => {
  t.throws(() => configureLogging({ format: 'xml' }), /logging.format: must be text or json/)
  t.throws(() => configureLogging({ verbosity: -1 }), /logging.verbosity/)
})

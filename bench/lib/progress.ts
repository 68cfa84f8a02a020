// One progress line per step on stderr (stdout is kept for the final table).

let step = 0
const t0 = Date.now()

export function progress(section: string, text: string): void {
  step++
  const secs = ((Date.now() - t0) / 1000).toFixed(0).padStart(4)
  process.stderr.write(`[bench ${secs}s #${step} ${section}] ${text}\n`)
}

/** Logger for labUp/labDown that prefixes the lab's own progress lines (only the interesting ones). */
export function labLog(section: string): (line: string) => void {
  return line => {
    if (/waiting for pods… \d+\/\d+|creating namespaces…|wiring pods…|deleting namespaces…/.test(line) && !/(\d+)\/\1/.test(line)) return
    progress(section, line.replace(/^\[lab\] /, 'lab: '))
  }
}

/** One line for a report: the message's first line plus the lines of a quoted log that name an error. */
export function errorSummary(err: unknown): string {
  const lines = (err instanceof Error ? err.message : String(err))
    .split('\n')
    .map(l => l.trim())
    .filter(Boolean)
  const head = lines[0] ?? 'unknown error'
  const errs = lines
    .slice(1)
    .filter(l => /error|cannot|failed|not found|EADDR|ENO/i.test(l) && !/^at /.test(l))
    .slice(0, 3)
  return [head, ...errs].join(' | ')
}

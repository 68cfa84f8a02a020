// A private temporary directory per test (t.testdir's fixed path clashes when the same file runs twice at once).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export function tempDir(t: { teardown(fn: () => void): void }, files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'tundra-test-'))
  for (const [name, body] of Object.entries(files)) writeFileSync(join(dir, name), body)
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

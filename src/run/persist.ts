// The last known Services, EndpointSlices and Nodes, kept on disk beside the conntrack snapshot so that `tundra run`
// can program the dataplane before its first LIST: the API server is often reached through a Service VIP that tundra
// itself provides (in-cluster config), and without a table that LIST could never succeed.
//
// The file is written atomically (temporary file + rename), bounded in size, and validated on read: version, a
// SHA-256 of the objects, and each object's kind and name. Anything else is refused with a reason, never half-used.
import { createHash } from 'node:crypto'
import { readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import type { KubeObject } from '../k8s/types'

const VERSION = 1
/** default bound of the file: far above any cluster tundra serves (objects are trimmed), far below the memory */
const LAST_STATE_MAX_BYTES = 64 << 20
/** the kinds kept: what `tundra run` lists */
export const LAST_STATE_KINDS = ['Service', 'EndpointSlice', 'Node'] as const

export interface LastState {
  readonly savedAt: string
  readonly objects: readonly KubeObject[]
}

function digest(objects: string): string {
  return createHash('sha256').update(objects).digest('hex')
}

/** Writes the objects of LAST_STATE_KINDS atomically; returns the bytes written, or throws (too big, I/O). */
export function saveLastState(path: string, objects: readonly KubeObject[], maxBytes = LAST_STATE_MAX_BYTES): number {
  const kinds = new Set<string>(LAST_STATE_KINDS)
  const body = JSON.stringify(objects.filter(o => kinds.has(o.kind)))
  const text = `{"version":${VERSION},"savedAt":${JSON.stringify(new Date().toISOString())},"sha256":"${digest(body)}","objects":${body}}\n`
  const bytes = Buffer.byteLength(text)
  if (bytes > maxBytes) throw new Error(`last state: ${bytes} bytes is over the bound of ${maxBytes}; not saved`)
  const tmp = `${path}.tmp`
  writeFileSync(tmp, text, { mode: 0o600 })
  renameSync(tmp, path)
  return bytes
}

/** The saved state, `undefined` when there is no file, or an error saying why the file cannot be used. */
export function loadLastState(path: string, maxBytes = LAST_STATE_MAX_BYTES): LastState | Error | undefined {
  let size: number
  try {
    size = statSync(path).size
  } catch {
    return undefined
  }
  if (size > maxBytes) return new Error(`${path}: ${size} bytes is over the bound of ${maxBytes}`)
  let j: { version?: unknown; savedAt?: unknown; sha256?: unknown; objects?: unknown }
  try {
    j = JSON.parse(readFileSync(path, 'utf8')) as typeof j
  } catch (err) {
    return new Error(`${path}: not JSON (${(err as Error).message})`)
  }
  if (j === null || typeof j !== 'object' || j.version !== VERSION) return new Error(`${path}: not a tundra last-state file (version ${VERSION})`)
  if (!Array.isArray(j.objects) || typeof j.sha256 !== 'string' || typeof j.savedAt !== 'string') return new Error(`${path}: fields missing`)
  if (digest(JSON.stringify(j.objects)) !== j.sha256) return new Error(`${path}: checksum mismatch (a partial or edited file)`)
  const kinds = new Set<string>(LAST_STATE_KINDS)
  for (const [i, o] of (j.objects as unknown[]).entries()) {
    const obj = o as { kind?: unknown; metadata?: { name?: unknown } } | null
    if (
      obj === null ||
      typeof obj !== 'object' ||
      typeof obj.kind !== 'string' ||
      !kinds.has(obj.kind) ||
      typeof obj.metadata?.name !== 'string' ||
      obj.metadata.name === ''
    ) {
      return new Error(`${path}: objects[${i}]: not a Service, EndpointSlice or Node with a name`)
    }
  }
  return { savedAt: j.savedAt, objects: j.objects as KubeObject[] }
}

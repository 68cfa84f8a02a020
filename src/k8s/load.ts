// Reads Kubernetes manifests (files, directories, multi-document YAML, JSON, `kind: List`) into typed objects with their source.
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { extname, join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import type { Problem } from '../model/cluster'
import { API_VERSION, objectRef, type Kind, type KubeObject, type LoadedObject } from './types'

export interface LoadResult {
  readonly objects: LoadedObject[]
  /** documents that could not be read at all (syntax errors, not an object, no kind) */
  readonly problems: Problem[]
  /** things skipped on purpose: kinds and apiVersions tundra does not use */
  readonly warnings: string[]
}

const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json'])

/** Whether a file in a manifests directory is read (by its extension, as manifestFiles picks them). */
export function isManifestFile(name: string): boolean {
  return MANIFEST_EXTENSIONS.has(extname(name).toLowerCase())
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** Files under `path` with a manifest extension, recursively, sorted; a file given directly is taken whatever its name. */
export function manifestFiles(path: string): string[] {
  const st = statSync(path)
  if (!st.isDirectory()) return [path]
  const out: string[] = []
  for (const name of readdirSync(path).sort(byCodeUnit)) {
    const p = join(path, name)
    if (statSync(p).isDirectory()) out.push(...manifestFiles(p))
    else if (isManifestFile(name)) out.push(p)
  }
  return out
}

/** Loads every manifest under the given paths, in order: each path's files sorted, paths as given. */
export function loadPaths(paths: readonly string[]): LoadResult {
  const result: LoadResult = { objects: [], problems: [], warnings: [] }
  for (const path of paths) {
    let files: string[]
    try {
      files = manifestFiles(path)
    } catch (err) {
      result.problems.push({ file: path, object: '', field: '', reason: `cannot read: ${(err as Error).message}` })
      continue
    }
    for (const file of files) {
      let text: string
      try {
        text = readFileSync(file, 'utf8')
      } catch (err) {
        result.problems.push({ file, object: '', field: '', reason: `cannot read: ${(err as Error).message}` })
        continue
      }
      const one = parseManifests(text, file)
      result.objects.push(...one.objects)
      result.problems.push(...one.problems)
      result.warnings.push(...one.warnings)
    }
  }
  return result
}

/**
 * Parses manifest text. YAML is read as YAML 1.1, as kubectl's decoder does (so `yes` is a boolean and an
 * unquoted label value `yes` is an error, like in kubectl); a `.json` file is read with JSON.parse.
 */
export function parseManifests(text: string, file?: string): LoadResult {
  const result: LoadResult = { objects: [], problems: [], warnings: [] }
  const where = file === undefined ? {} : { file }
  const docs: unknown[] = []
  if (file !== undefined && extname(file).toLowerCase() === '.json') {
    try {
      docs.push(JSON.parse(text))
    } catch (err) {
      result.problems.push({ ...where, object: 'document 1', field: '', reason: `invalid JSON: ${(err as Error).message}` })
      return result
    }
  } else {
    const parsed = parseAllDocuments(text, { version: '1.1' })
    let n = 0
    for (const doc of parsed) {
      n++
      if (doc.errors.length > 0) {
        const reason = `invalid YAML: ${firstLine(doc.errors[0]?.message ?? 'parse error')}`
        result.problems.push({ ...where, object: `document ${n}`, field: '', reason })
        docs.push(undefined)
        continue
      }
      try {
        docs.push(doc.toJS({ maxAliasCount: 1000 }))
      } catch (err) {
        result.problems.push({ ...where, object: `document ${n}`, field: '', reason: `invalid YAML: ${(err as Error).message}` })
        docs.push(undefined)
      }
    }
  }
  docs.forEach((value, index) => {
    if (value === undefined) return // already reported
    addDocument(result, value, index, file)
  })
  return result
}

function firstLine(s: string): string {
  const i = s.indexOf('\n')
  const line = i < 0 ? s : s.slice(0, i)
  return line.replace(/:$/, '')
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function addDocument(result: LoadResult, value: unknown, index: number, file: string | undefined): void {
  const where = file === undefined ? {} : { file }
  const docName = `document ${index + 1}`
  if (value === null) return // an empty document (`---` with nothing after it) is fine
  if (!isRecord(value)) {
    result.problems.push({ ...where, object: docName, field: '', reason: 'must be an object (a mapping with apiVersion and kind)' })
    return
  }
  const kind = value['kind']
  if (typeof kind !== 'string' || kind === '') {
    result.problems.push({ ...where, object: docName, field: 'kind', reason: 'Required value: kind must be set' })
    return
  }
  if (typeof value['apiVersion'] !== 'string' || value['apiVersion'] === '') {
    result.problems.push({ ...where, object: docName, field: 'apiVersion', reason: 'Required value: apiVersion must be set' })
    return
  }
  if (kind.endsWith('List') && 'items' in value) {
    const items = value['items']
    if (items === null || items === undefined) return
    if (!Array.isArray(items)) {
      result.problems.push({ ...where, object: docName, field: 'items', reason: 'must be a list' })
      return
    }
    items.forEach((item, i) => {
      if (!isRecord(item) || typeof item['kind'] !== 'string' || typeof item['apiVersion'] !== 'string') {
        result.problems.push({ ...where, object: `${docName} items[${i}]`, field: '', reason: 'must be an object with apiVersion and kind' })
        return
      }
      addObject(result, item, index, file)
    })
    return
  }
  addObject(result, value, index, file)
}

function addObject(result: LoadResult, value: Record<string, unknown>, index: number, file: string | undefined): void {
  const kind = value['kind'] as string
  const apiVersion = value['apiVersion'] as string
  const ref = objectRef(value as { kind: string })
  const prefix = file === undefined ? '' : `${file}: `
  if (!(kind in API_VERSION)) {
    result.warnings.push(`${prefix}skipped ${ref}: kind ${kind} is not used by tundra`)
    return
  }
  const want = API_VERSION[kind as Kind]
  if (apiVersion !== want) {
    result.warnings.push(`${prefix}skipped ${ref}: apiVersion ${apiVersion} is not supported for ${kind} (use ${want})`)
    return
  }
  const loaded: LoadedObject =
    file === undefined ? { object: value as unknown as KubeObject, doc: index } : { object: value as unknown as KubeObject, file, doc: index }
  result.objects.push(loaded)
}

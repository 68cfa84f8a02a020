// What crosses from the control thread to the packet thread, decided in one place: compiled tables as images whose
// buffers are transferred (src/nat/image.ts, src/dns/installed.ts), never object graphs. A full image is installed by
// wrapping its buffers, a delta in O(change) (ARCHITECTURE.md).
import type { Service } from '../model/cluster'
import { ImageKind, natImage, natImageTransfer, type NatImage } from '../nat/image'
import type { NatTable } from '../nat/compile'
import type { ServiceRef } from '../nat/update'
import { type ZoneImage } from '../dns/image'
import { zoneImageTransfer } from '../dns/installed'

export type NatInstall = NatImage
export type ZoneInstall = ZoneImage

/** The NAT image of `next` for a packet thread that has `prev` installed (a delta when next = updateNat(prev)). */
export function natInstall(next: NatTable, prev?: NatTable): { install: NatInstall; transfer: ArrayBuffer[] } {
  const img = natImage(next, prev)
  return { install: img, transfer: natImageTransfer(img) }
}

export function zoneInstall(img: ZoneImage): { install: ZoneInstall; transfer: ArrayBuffer[] } {
  return { install: img, transfer: zoneImageTransfer(img) }
}

/**
 * A copy of an image for one more packet thread (tun.packetThreads > 1) and its transfer list: each thread installs
 * and then changes its own copy (a delta writes map slots in place), so threads never share installed tables.
 * Copied on the host thread, transferred to the packet thread: the packet thread never copies a table.
 */
export function natInstallCopy(img: NatInstall): { install: NatInstall; transfer: ArrayBuffer[] } {
  const copy = structuredClone(img)
  return { install: copy, transfer: natImageTransfer(copy) }
}

export function zoneInstallCopy(img: ZoneInstall): { install: ZoneInstall; transfer: ArrayBuffer[] } {
  const copy = structuredClone(img)
  return { install: copy, transfer: zoneImageTransfer(copy) }
}

/** Whether an image replaces the whole table (a packet thread started later needs nothing older). */
export function isFullInstall(img: NatInstall | ZoneInstall): boolean {
  return 'maps' in img ? img.kind === ImageKind.FULL : img.kind === 'full'
}

/** The services of `base` with `changed` replacing or adding by namespace/name and `deleted` removed. */
export function mergeServices(base: readonly Service[], changed: readonly Service[], deleted: readonly ServiceRef[]): Service[] {
  const gone = new Set(deleted.map(d => `${d.namespace}/${d.name}`))
  const byKey = new Map(changed.map(svc => [`${svc.namespace}/${svc.name}`, svc]))
  const out: Service[] = []
  for (const svc of base) {
    const key = `${svc.namespace}/${svc.name}`
    if (gone.has(key)) continue
    const next = byKey.get(key)
    out.push(next ?? svc)
    byKey.delete(key)
  }
  out.push(...byKey.values())
  return out
}

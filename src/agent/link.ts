// The message protocol between an agent's control thread and its packet thread: numbered requests, one reply each.
// Requests carry plain data and transferable buffers; a reply is the value or an error message. Nothing here
// knows what the requests mean (packet-path.ts and host.ts do).
import type { MessagePort } from 'node:worker_threads'

/** What either side can post: a request, a reply, or a one-way event. */
export type LinkMessage =
  | { readonly kind: 'req'; readonly id: number; readonly body: unknown }
  | { readonly kind: 'res'; readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly kind: 'res'; readonly id: number; readonly ok: false; readonly error: string }
  | { readonly kind: 'event'; readonly body: unknown }

export interface Port {
  postMessage(msg: unknown, transfer?: readonly ArrayBuffer[]): void
  on(event: 'message', cb: (msg: unknown) => void): unknown
}

class LinkError extends Error {
  override readonly name = 'LinkError'
}

/** One side of the link: call() the other side, serve() its calls, hear its events. */
export class Link {
  private seq = 0
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>()
  private server: ((body: unknown) => unknown) | undefined
  private readonly listeners: ((body: unknown) => void)[] = []
  private closedWith: string | undefined

  constructor(private readonly port: Port | MessagePort) {
    port.on('message', (m: unknown) => this.receive(m as LinkMessage))
  }

  call<T>(body: unknown, transfer: readonly ArrayBuffer[] = []): Promise<T> {
    if (this.closedWith !== undefined) return Promise.reject(new LinkError(this.closedWith))
    const id = ++this.seq
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.port.postMessage({ kind: 'req', id, body } satisfies LinkMessage, transfer as ArrayBuffer[])
    })
  }

  emit(body: unknown): void {
    if (this.closedWith === undefined) this.port.postMessage({ kind: 'event', body } satisfies LinkMessage)
  }

  /** Answers the other side's calls; a handler may return a promise, and `{ value, transfer }` via reply(). */
  serve(handler: (body: unknown) => unknown): void {
    this.server = handler
  }

  onEvent(cb: (body: unknown) => void): void {
    this.listeners.push(cb)
  }

  /** The other side is gone: every call waiting for it fails with `why`, and later calls fail at once. */
  close(why: string): void {
    this.closedWith = why
    for (const p of this.pending.values()) p.reject(new LinkError(why))
    this.pending.clear()
  }

  private receive(m: LinkMessage): void {
    if (m.kind === 'res') {
      const p = this.pending.get(m.id)
      if (p === undefined) return
      this.pending.delete(m.id)
      if (m.ok) p.resolve(m.value)
      else p.reject(new LinkError(m.error))
    } else if (m.kind === 'event') {
      for (const cb of this.listeners) cb(m.body)
    } else {
      void this.answer(m.id, m.body)
    }
  }

  private async answer(id: number, body: unknown): Promise<void> {
    let msg: LinkMessage
    let transfer: ArrayBuffer[] = []
    try {
      if (this.server === undefined) throw new LinkError('nothing serves requests on this side')
      const r = await this.server(body)
      if (r instanceof Transfer) {
        msg = { kind: 'res', id, ok: true, value: r.value }
        transfer = [...r.buffers]
      } else msg = { kind: 'res', id, ok: true, value: r }
    } catch (err) {
      msg = { kind: 'res', id, ok: false, error: (err as Error).message }
    }
    if (this.closedWith === undefined) this.port.postMessage(msg, transfer)
  }
}

/** A reply whose buffers move to the other thread instead of being copied. */
export class Transfer {
  constructor(
    readonly value: unknown,
    readonly buffers: readonly ArrayBuffer[],
  ) {}
}

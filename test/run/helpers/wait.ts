// Waiting on a condition with a deadline (never a bare sleep): re-checked on every event given and every few ms.
export interface Subscribable {
  on(event: string, cb: (...args: unknown[]) => void): unknown
  off(event: string, cb: (...args: unknown[]) => void): unknown
}

export function waitFor(what: string, check: () => boolean, timeoutMs = 5000, events: readonly [Subscribable, string][] = []): Promise<void> {
  if (check()) return Promise.resolve()
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      clearInterval(poll)
      clearTimeout(timer)
      for (const [e, name] of events) e.off(name, recheck)
    }
    const recheck = (): void => {
      let ok = false
      try {
        ok = check()
      } catch (err) {
        cleanup()
        reject(err as Error)
        return
      }
      if (ok) {
        cleanup()
        resolve()
      }
    }
    const poll = setInterval(recheck, 5)
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
    }, timeoutMs)
    for (const [e, name] of events) e.on(name, recheck)
  })
}

/** Resolves with the first value `subscribe` hands its callback that satisfies `pred`. */
export function nextEvent<T>(what: string, subscribe: (cb: (v: T) => void) => () => void, pred: (v: T) => boolean = () => true, timeoutMs = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    // eslint-disable-next-line prefer-const
    let unsub: () => void
    const timer = setTimeout(() => {
      unsub()
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
    }, timeoutMs)
    unsub = subscribe(v => {
      if (!pred(v)) return
      clearTimeout(timer)
      unsub()
      resolve(v)
    })
  })
}

// The clock conntrack, ClientIP affinity and the packet loop run on: whole seconds of this thread's monotonic clock
// (performance.now()). A step of the wall clock (NTP, an operator's `date -s`) then neither expires nor extends every
// entry at once. Snapshots store remaining lifetimes (ctview.ts), so they cross a restart whatever either clock did.

/** Seconds since this thread started, plus one (an expiry of 0 never reads as "now"). */
export function monoSeconds(): number {
  return Math.floor(performance.now() / 1000) + 1
}

/** Milliseconds of the same monotonic clock (connect times and connect timeouts, which need more than seconds). */
export function monoMs(): number {
  return performance.now()
}

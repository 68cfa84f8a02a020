// Stale flows after an install, removed in bounded slices so a table of a million connections never holds the
// packet thread for long: step(budget) visits at most `budget` conntrack entries / affinity slots per call.
//
// An install hands over what the control side decided (NatImage.staleIds, staleEps). An entry is a candidate when
// its service-port id is in staleIds, or (id, reply source address, reply source port) is in staleEps; a candidate
// is removed when, at the time it is visited, its id holds no service port or its endpoint is not in the id's
// current serving set. Checking against the current image (not the one that made the list) keeps flows that a
// later install made valid again: an endpoint that came back, or a new service port that took the id since.
// A removed TCP connection that is still open gets a reset queued (the engine's queue).

import type { Fam, SetView, Tables } from './state'
import { IPPROTO_TCP } from '../wire/proto'
import { REPLY, TcpState } from './conntrack'
import { U32Map } from './hash'
import { REC_WORDS, Rec, STALE_EP_WORDS, SetW } from './image'
import type { NatImage } from './image'
import { findEndpoint } from './select'

export interface FlushSink {
  /** queues a reset for entry e of fam; false when the queue is full */
  queueReset(fam: Fam, e: number): boolean
}

export class StaleFlush {
  private ids: U32Map | null = null
  private eps: U32Map | null = null
  /** slots still to visit in this round (a new list restarts the round: every slot is visited after it) */
  private left = 0
  private cursor = 0
  /** this round visits the conntrack slots too (some stale id had entries); else only the affinity slots */
  private ctRound = false
  flushed = 0
  resets = 0

  constructor(
    private readonly t: Tables,
    private readonly v4: Fam,
    private readonly v6: Fam,
    private readonly view: SetView,
  ) {}

  /** Whether a flush is under way. */
  get pending(): boolean {
    return this.left > 0
  }

  private total(): number {
    return this.v4.ct.capacity + this.v6.ct.capacity + this.v4.aff.map.cap + this.v6.aff.map.cap
  }

  /** Adds an image's stale lists (O(their length)). */
  add(img: NatImage): void {
    if (img.staleIds.length === 0 && img.staleEps.length === 0) return
    const ids = (this.ids ??= new U32Map(1, 1, 16))
    const eps = (this.eps ??= new U32Map(STALE_EP_WORDS, 1, 16))
    for (let i = 0; i < img.staleIds.length; i++) {
      ids.key[0] = img.staleIds[i]!
      ids.set(1)
    }
    for (let o = 0; o + STALE_EP_WORDS <= img.staleEps.length; o += STALE_EP_WORDS) {
      for (let w = 0; w < STALE_EP_WORDS; w++) eps.key[w] = img.staleEps[o + w]!
      eps.set(1)
    }
    // A service port with no connections has nothing to flush in conntrack: the usual case under endpoint churn.
    // Then only the (small) affinity table is walked instead of every conntrack slot.
    this.ctRound = (this.ctRound && this.left > 0) || this.hasEntries(img)
    const c = this.v4.ct.capacity + this.v6.ct.capacity
    if (this.ctRound) this.left = this.total()
    else {
      this.cursor = c
      this.left = this.total() - c
    }
  }

  private hasEntries(img: NatImage): boolean {
    const live = (id: number): boolean => this.v4.ct.entriesOf(id) + this.v6.ct.entriesOf(id) > 0
    for (let i = 0; i < img.staleIds.length; i++) if (live(img.staleIds[i]!)) return true
    for (let o = 0; o + STALE_EP_WORDS <= img.staleEps.length; o += STALE_EP_WORDS) if (live(img.staleEps[o]!)) return true
    return false
  }

  /** Whether service port `id`'s flows to (words at off, port) are stale now; `hint` is the endpoint index. */
  private staleNow(id: number, words: Uint32Array, off: number, port: number, hint: number): boolean {
    if (!this.t.present(id)) return true
    return findEndpoint(this.t.view(this.view, id, Rec.SERVING_SET), words, off, port, hint) < 0
  }

  private candidate(id: number, aw: number, words: Uint32Array, off: number, port: number): boolean {
    if (id < 0) return false
    const ids = this.ids!
    ids.key[0] = id
    if (ids.find() >= 0) return true
    const eps = this.eps!
    if (eps.size === 0) return false
    eps.key[0] = id
    for (let w = 0; w < 4; w++) eps.key[1 + w] = w < aw ? words[off + w]! : 0
    eps.key[5] = port
    return eps.find() >= 0
  }

  /** Visits up to `budget` slots; returns how many entries it removed. */
  step(budget: number, sink: FlushSink): number {
    if (this.left <= 0) return 0
    let removed = 0
    const c4 = this.v4.ct.capacity
    const c6 = this.v6.ct.capacity
    while (budget > 0 && this.left > 0) {
      let c = this.cursor
      const a4 = this.v4.aff.map.cap
      const a6 = this.v6.aff.map.cap
      if (c >= c4 + c6 + a4 + a6) c = this.cursor = 0
      budget--
      if (c < c4 + c6) {
        const fam = c < c4 ? this.v4 : this.v6
        const e = c < c4 ? c : c - c4
        const ct = fam.ct
        if (ct.isUsed(e)) {
          const id = ct.svcPort[e]!
          const r = ct.tupleOff(e, REPLY)
          const port = ct.tuples[r + 2 * fam.aw]! >>> 16
          if (this.candidate(id, fam.aw, ct.tuples, r, port)) {
            budget -= this.t.present(id) ? this.t.rec[id * REC_WORDS + Rec.SERVING_SET + SetW.COUNT]! >> 4 : 0
            if (this.staleNow(id, ct.tuples, r, port, ct.endpoint[e]!)) {
              if (ct.proto[e] === IPPROTO_TCP) {
                const s = ct.state[e]!
                if (s !== TcpState.TIME_WAIT && s !== TcpState.CLOSE && s !== TcpState.NONE && sink.queueReset(fam, e)) this.resets++
              }
              ct.delete(e)
              removed++
            }
          }
        }
      } else {
        const fam = c < c4 + c6 + a4 ? this.v4 : this.v6
        const s = c < c4 + c6 + a4 ? c - c4 - c6 : c - c4 - c6 - a4
        const aff = fam.aff
        const m = aff.map
        if (m.used[s] !== 0) {
          const id = m.keys[s * m.kw]!
          const ids = this.ids!
          ids.key[0] = id
          if (ids.find() >= 0 && this.staleNow(id, aff.vals, aff.valOff(s), aff.portOf(s), aff.hintOf(s))) {
            // The backward shift may move a live pin into this slot: look at it again.
            m.removeAt(s)
            continue
          }
        }
      }
      this.cursor = c + 1
      this.left--
    }
    this.flushed += removed
    if (this.left <= 0) {
      this.ids = null
      this.eps = null
      this.ctRound = false
    }
    return removed
  }
}

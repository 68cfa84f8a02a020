// Per-endpoint counters (tundra_endpoint_*): packets and new connections of each (service port, endpoint), kept on
// the packet thread beside conntrack.
//
//   attach(fi, ct, e, isNew)   an entry got its endpoint (new connection, reply pickup, restore): one hash lookup
//   packet(fi, e)              one packet of entry e: two array reads and an increment, no lookup
//   snapshot()                 copies for the control thread, which names the rows with its NAT table
//   release(slots)             the control thread's list of endpoints no longer in the table (bounded batch)
//
// An endpoint is keyed by (service-port id and uid, address words, port), read from the entry's reply tuple, so every
// way an entry is made (new connection, reply pickup, restore) finds the same counters, and a service port that takes
// a freed id never inherits the counts of the one before. A counter slot is reused after
// release; an entry remembers its slot with the slot's generation (gen << SLOT_BITS | slot), so an old entry of a
// released slot counts nowhere instead of into the next endpoint that gets it.
//
// Memory: 4 B per conntrack entry of capacity per family (1 MiB at the default 262,144 IPv4 entries), plus per
// counted endpoint 24 B key + 16 B counters + 2 B generation + 4 B free list + its hash slot (up to 65,536 endpoints).
import { REPLY, type Conntrack } from './conntrack'
import { U32Map } from './hash'
import { wordsToString } from './addr'
import { endpointString } from '../model/names'
import type { Family } from '../model/cluster'

/** key words: id, uid, address (4 words, IPv4 padded with zeros), port */
const EP_KEY_WORDS = 7
const SLOT_BITS = 16
/** at most this many endpoints are counted at once; more are counted in `overflow` only */
const MAX_SLOTS = 1 << SLOT_BITS
const SLOT_MASK = MAX_SLOTS - 1
const GEN_MASK = 0x7fff
const NONE = -1

/** What snapshot() hands over: per slot, key words and counters; slots with used 0 are free. */
export interface EndpointCounterSnapshot {
  readonly keys: Uint32Array
  readonly used: Uint8Array
  readonly packets: Float64Array
  readonly connections: Float64Array
  /** attaches that found no free slot */
  readonly overflow: number
}

/** The service-port id of a snapshot slot. */
export function slotServicePort(snap: EndpointCounterSnapshot, slot: number): number {
  return snap.keys[slot * EP_KEY_WORDS]!
}

/** The service-port uid of a snapshot slot (SvcPort.uid: tells a slot's service port from a later one at its id). */
export function slotServicePortUid(snap: EndpointCounterSnapshot, slot: number): number {
  return snap.keys[slot * EP_KEY_WORDS + 1]!
}

/** "ip:port" (or "[ip6]:port") of a snapshot slot, as kube-proxy names an endpoint. */
export function slotEndpoint(snap: EndpointCounterSnapshot, slot: number, family: Family): string {
  const k = slot * EP_KEY_WORDS
  return endpointString(wordsToString(snap.keys, k + 2, family), snap.keys[k + 6]!)
}

export class EndpointCounters {
  private readonly map = new U32Map(EP_KEY_WORDS, 1, 64)
  /** per family (0 IPv4, 1 IPv6), per conntrack entry: gen << SLOT_BITS | slot, or NONE */
  private readonly bySlot: [Int32Array, Int32Array]
  private keys = new Uint32Array(64 * EP_KEY_WORDS)
  private used = new Uint8Array(64)
  private gen = new Uint16Array(64)
  private packets = new Float64Array(64)
  private connections = new Float64Array(64)
  /** free slots below `top` (a stack), then the never-used ones from `top` */
  private free = new Int32Array(64)
  private freeCount = 0
  private top = 0
  private overflow = 0

  constructor(capacity4: number, capacity6: number) {
    this.bySlot = [new Int32Array(capacity4).fill(NONE), new Int32Array(capacity6).fill(NONE)]
  }

  /**
   * Entry e of family fi now has its endpoint (its reply tuple's source) in the service port of uid `uid`; a new
   * connection is counted when isNew.
   */
  attach(fi: number, ct: Conntrack, e: number, uid: number, isNew: boolean): void {
    const arr = this.bySlot[fi]!
    const id = ct.svcPort[e]!
    if (id < 0) {
      arr[e] = NONE
      return
    }
    const aw = ct.aw
    const r = ct.tupleOff(e, REPLY)
    const t = ct.tuples
    const k = this.map.key
    k[0] = id
    k[1] = uid
    for (let i = 0; i < 4; i++) k[2 + i] = i < aw ? t[r + i]! : 0
    k[6] = t[r + 2 * aw]! >>> 16
    let ms = this.map.find()
    let slot: number
    if (ms >= 0) slot = this.map.vals[ms]!
    else {
      slot = this.take()
      if (slot < 0) {
        this.overflow++
        arr[e] = NONE
        return
      }
      ms = this.map.insert()
      this.map.vals[ms] = slot
      for (let i = 0; i < EP_KEY_WORDS; i++) this.keys[slot * EP_KEY_WORDS + i] = k[i]!
      this.used[slot] = 1
    }
    arr[e] = (this.gen[slot]! << SLOT_BITS) | slot
    if (isNew) this.connections[slot]!++
  }

  /** One packet of entry e (family fi). */
  packet(fi: number, e: number): void {
    const v = this.bySlot[fi]![e]!
    if (v === NONE) return
    const slot = v & SLOT_MASK
    if (this.gen[slot] === v >>> SLOT_BITS) this.packets[slot]!++
  }

  /** Copies of the counters in use (O(slots) copying, as the per-service counters are copied). */
  snapshot(): EndpointCounterSnapshot {
    const n = this.top
    return {
      keys: this.keys.slice(0, n * EP_KEY_WORDS),
      used: this.used.slice(0, n),
      packets: this.packets.slice(0, n),
      connections: this.connections.slice(0, n),
      overflow: this.overflow,
    }
  }

  /** Frees these slots (endpoints gone from the table); returns how many were in use. */
  release(slots: readonly number[]): number {
    let n = 0
    const k = this.map.key
    for (const slot of slots) {
      if (!Number.isInteger(slot) || slot < 0 || slot >= this.top || this.used[slot] !== 1) continue
      for (let i = 0; i < EP_KEY_WORDS; i++) k[i] = this.keys[slot * EP_KEY_WORDS + i]!
      this.map.delete()
      this.used[slot] = 0
      this.gen[slot] = (this.gen[slot]! + 1) & GEN_MASK
      this.packets[slot] = 0
      this.connections[slot] = 0
      this.free[this.freeCount++] = slot
      n++
    }
    return n
  }

  private take(): number {
    if (this.freeCount > 0) return this.free[--this.freeCount]!
    if (this.top >= MAX_SLOTS) return -1
    if (this.top >= this.used.length) this.grow()
    return this.top++
  }

  /** Doubles the per-slot arrays (an allocation per doubling, on a new endpoint only). */
  private grow(): void {
    const n = Math.min(MAX_SLOTS, this.used.length * 2)
    const keys = new Uint32Array(n * EP_KEY_WORDS)
    keys.set(this.keys)
    this.keys = keys
    const used = new Uint8Array(n)
    used.set(this.used)
    this.used = used
    const gen = new Uint16Array(n)
    gen.set(this.gen)
    this.gen = gen
    const packets = new Float64Array(n)
    packets.set(this.packets)
    this.packets = packets
    const connections = new Float64Array(n)
    connections.set(this.connections)
    this.connections = connections
    const free = new Int32Array(n)
    free.set(this.free)
    this.free = free
  }
}

import type { Entry } from "../../Cache.js"
import * as VersionGuard from "../versionGuard.js"

// The in-process tier in front of Redis: versioned entries, least recently used out first,
// bounded by count and by an estimate of their bytes.
//
// Every slot also keeps a floor: the highest version another process announced for the key. An
// entry below the floor is never served or stored, so a Redis read that was in flight when the
// announcement arrived cannot bring the old value back.

interface Slot {
  entry: Entry | undefined
  floor: number
  bytes: number
  expiresAt: number
}

export interface NearTier {
  readonly get: (key: string, now: number) => Entry | undefined
  /** Keeps an entry read from Redis, unless the tier knows of a newer version. */
  readonly put: (key: string, entry: Entry, now: number) => void
  /**
   * Keeps what Redis just accepted from this process. Replies may settle out of order (a pipeline's
   * after a later single write's), so an entry older than the tier's stays out, unless the write
   * was a repair (`replacing`), which may lower the version.
   */
  readonly accept: (key: string, entry: Entry, now: number, replacing: boolean) => void
  /** Another process wrote `version`: older local entries go, and none below it comes back. */
  readonly announce: (key: string, version: number) => void
  /**
   * Redis refused a write of this process because it holds the entry's version or a newer one (a
   * write of another process, whose announcement may still be on its way): as `announce`, so that
   * an older write of ours whose reply settles later, or a late read, cannot put an older version back.
   */
  readonly outranked: (key: string, entry: Entry) => void
  /**
   * Whether the tier keeps an entry of the key, served or not (expired, say), or may keep one: a
   * call that may bring one back is in flight (between `expect` and `settled`).
   */
  readonly holds: (key: string) => boolean
  readonly expect: (key: string) => void
  readonly settled: (key: string) => void
  /** Forgets the key's entry but not its floor: a write this process could not vouch for. */
  readonly drop: (key: string) => void
  /** Forgets everything: announcements may have been missed. */
  readonly clear: () => void
  /** Counts the clears: a read that began before one may not keep what it found, its floor gone. */
  readonly generation: () => number
  readonly size: () => number
  readonly bytes: () => number
}

// The lowest version that may still be served once `entry` is known to be in Redis, or outranked
// there: a tombstone also outranks a value of its own version.
const floorOf = (entry: Entry) => (entry._tag === "Tombstone" ? entry.version + 1 : entry.version)

// UTF-16 strings, plus the slot and map overhead, roughly.
const estimate = (key: string, entry: Entry | undefined) =>
  96 + 2 * key.length + (entry !== undefined && entry._tag === "Value" ? 2 * entry.payload.length : 0)

export const make = (options: {
  readonly maxEntries: number
  readonly maxBytes: number
  readonly ttlMillis: number
}): NearTier => {
  const slots = new Map<string, Slot>()
  let bytes = 0
  let generation = 0
  const expected = new Map<string, number>()

  const remove = (key: string) => {
    const slot = slots.get(key)
    if (slot === undefined) return
    bytes -= slot.bytes
    slots.delete(key)
  }

  // Keeps the slot, and so its floor, without its entry.
  const empty = (key: string, slot: Slot) => {
    if (slot.entry === undefined) return
    const floorOnly = estimate(key, undefined)
    bytes -= slot.bytes - floorOnly
    slot.bytes = floorOnly
    slot.entry = undefined
  }

  const store = (key: string, slot: Slot) => {
    remove(key)
    slots.set(key, slot)
    bytes += slot.bytes
    // Map iteration is insertion order: the first keys are the least recently used.
    for (const oldest of slots.keys()) {
      if (slots.size <= options.maxEntries && bytes <= options.maxBytes) break
      remove(oldest)
    }
  }

  // Whether `entry` may replace what the slot holds, by the guard's rules.
  const newer = (slot: Slot | undefined, entry: Entry, now: number) => {
    const current = slot?.entry !== undefined && slot.expiresAt > now ? slot.entry : undefined
    return entry._tag === "Value"
      ? VersionGuard.acceptsValue(current, entry.version, undefined)
      : VersionGuard.acceptsTombstone(current, entry.version)
  }

  const raiseFloor = (key: string, version: number) => {
    const slot = slots.get(key)
    if (slot === undefined) {
      store(key, { entry: undefined, floor: version, bytes: estimate(key, undefined), expiresAt: 0 })
      return
    }
    slot.floor = Math.max(slot.floor, version)
    if (slot.entry !== undefined && slot.entry.version < slot.floor) empty(key, slot)
  }

  return {
    get: (key, now) => {
      const slot = slots.get(key)
      if (slot === undefined || slot.entry === undefined) return undefined
      if (slot.expiresAt <= now) {
        empty(key, slot)
        return undefined
      }
      slots.delete(key)
      slots.set(key, slot)
      return slot.entry
    },
    put: (key, entry, now) => {
      const slot = slots.get(key)
      const floor = slot?.floor ?? 0
      if (entry.version < floor) return
      if (!newer(slot, entry, now)) return
      store(key, { entry, floor, bytes: estimate(key, entry), expiresAt: now + options.ttlMillis })
    },
    accept: (key, entry, now, replacing) => {
      const slot = slots.get(key)
      const floor = slot?.floor ?? 0
      if (entry.version < floor) {
        // A repair below a known version: let reads ask Redis. Another write: something newer is known.
        if (replacing && slot !== undefined) empty(key, slot)
        return
      }
      if (replacing) {
        store(key, { entry, floor, bytes: estimate(key, entry), expiresAt: now + options.ttlMillis })
        return
      }
      // What this process wrote is known to be in Redis: nothing older may come back, not even a
      // Redis read that was in flight and answers after a later write of ours dropped the entry.
      const raised = Math.max(floor, floorOf(entry))
      if (!newer(slot, entry, now)) {
        if (slot !== undefined) slot.floor = Math.max(slot.floor, raised)
        return
      }
      store(key, { entry, floor: raised, bytes: estimate(key, entry), expiresAt: now + options.ttlMillis })
    },
    announce: (key, version) => raiseFloor(key, version),
    outranked: (key, entry) => raiseFloor(key, floorOf(entry)),
    holds: (key) => slots.get(key)?.entry !== undefined || expected.has(key),
    expect: (key) => void expected.set(key, (expected.get(key) ?? 0) + 1),
    settled: (key) => {
      const calls = expected.get(key) ?? 0
      if (calls <= 1) expected.delete(key)
      else expected.set(key, calls - 1)
    },
    drop: (key) => {
      const slot = slots.get(key)
      if (slot !== undefined) empty(key, slot)
    },
    clear: () => {
      slots.clear()
      bytes = 0
      generation++
    },
    generation: () => generation,
    size: () => slots.size,
    bytes: () => bytes
  }
}

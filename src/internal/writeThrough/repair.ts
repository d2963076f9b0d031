// The tombstones this process owes the cache: a key whose committed write could not reach the
// cache (a StaleCacheError, a fence that did not land, a write while the cache's breaker was open)
// may still hold an older value there. Until its tombstone lands, this process reads the key from
// the store; a background fiber retries the tombstones every `repairInterval`, until each lands or
// whatever the cache held has expired anyway (the TTL stays the bound for other processes, and for
// this one should it die).
//
// The ledger is bounded by count and bytes. Past the bound it stops counting keys and owes the
// whole entity instead: every read goes to the store until an audit of the entity's namespace,
// begun after the last key it dropped, has tombstoned every entry older than its row, or until the
// TTL has run out since that key. Fences (writes of unknown outcome) are always kept: the commit
// may still land after any audit.
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { type Cache, type CacheError, FENCE_VERSION } from "../../Cache.js"
import { isCircuitOpen } from "../../CircuitBreaker.js"

export interface Repairs {
  /**
   * Owes `key` a tombstone of `version`, retried in the background until it lands or the key's TTL
   * has passed. A `bestEffort` one (for monotonic reads, not for a write's sake) is dropped rather
   * than overflowing the ledger.
   */
  readonly schedule: (key: string, version: number, bestEffort?: boolean) => Effect.Effect<void>
  /** Whether the cache may hold a value of `key` older than a write this process acknowledged. */
  readonly owes: (key: string) => boolean
}

export interface Bounds {
  readonly maxKeys: number
  readonly maxBytes: number
}

interface Pending {
  readonly version: number
  readonly until: number
}

export interface Ledger extends Repairs {
  readonly pending: Map<string, Pending>
  bytes: number
  /** Keys left out past the bound; the entity is owed whole while this is set. */
  overflow: { dropped: number; until: number } | undefined
}

// A Map entry, its object and the key's string, roughly: what the bound counts per key.
const bytesOf = (key: string) => 96 + 2 * key.length

export const make = (bounds: Bounds, maxTtl: Duration.Duration, entity: string): Ledger => {
  const ledger: Ledger = {
    pending: new Map(),
    bytes: 0,
    overflow: undefined,
    owes: (key) => ledger.overflow !== undefined || (ledger.pending.size > 0 && ledger.pending.has(key)),
    schedule: (key, version, bestEffort = false) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const until = now + Duration.toMillis(maxTtl)
        const earlier = ledger.pending.get(key)
        if (earlier !== undefined) {
          ledger.pending.set(key, { version: Math.max(version, earlier.version), until })
          return Effect.void
        }
        const bytes = ledger.bytes + bytesOf(key)
        const full = ledger.pending.size >= bounds.maxKeys || bytes > bounds.maxBytes
        if (version !== FENCE_VERSION && (ledger.overflow !== undefined || full))
          return bestEffort ? Effect.void : overflowed(ledger, until, entity)
        ledger.pending.set(key, { version, until })
        ledger.bytes = bytes
        return Effect.void
      })
  }
  return ledger
}

const overflowed = (ledger: Ledger, until: number, entity: string): Effect.Effect<void> => {
  const first = ledger.overflow === undefined
  ledger.overflow = { dropped: (ledger.overflow?.dropped ?? 0) + 1, until }
  return first
    ? Effect.logWarning(
        "too many keys are owed a tombstone: every read of the entity goes to the store until an audit of its cache namespace repaired it"
      ).pipe(Effect.annotateLogs({ entity, owed: ledger.pending.size, bytes: ledger.bytes }))
    : Effect.void
}

/** What the background fiber needs of the entity. */
export interface Repairer {
  readonly cache: Cache.Service
  readonly prefix: string
  readonly boundCache: <X>(
    call: string,
    key: string,
    effect: Effect.Effect<X, CacheError>
  ) => Effect.Effect<X, CacheError>
  readonly settings: { readonly tombstoneTtl: Duration.Duration; readonly repairInterval: Duration.Duration }
  /** An audit of the entity's namespace that tombstones every entry older than its row. */
  readonly sweep: Effect.Effect<unknown, unknown>
}

/** Starts the background fiber, which the scope stops. */
export const run = (ledger: Ledger, repairer: Repairer): Effect.Effect<void, never, Scope.Scope> =>
  Effect.asVoid(
    Effect.forkScoped(
      Effect.repeat(
        Effect.zipRight(retryOwed(ledger, repairer), sweepOverflow(ledger, repairer)),
        Schedule.spaced(repairer.settings.repairInterval)
      )
    )
  )

// One pass over the owed keys. The first goes alone: while the cache's breaker is open it is the
// probe, or is refused, and then so would every other be; once it landed, the rest go 8 at a time.
const retryOwed = (ledger: Ledger, repairer: Repairer): Effect.Effect<void> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const [first, ...rest] = ledger.pending
    if (first === undefined) return Effect.void
    const retry = ([key, pending]: readonly [string, Pending]) => retryOne(ledger, repairer, key, pending, now)
    return Effect.zipRight(
      retry(first),
      Effect.forEach(rest, (entry) => Effect.ignore(retry(entry)), { concurrency: 8, discard: true })
    )
  }).pipe(Effect.ignore)

const retryOne = (
  ledger: Ledger,
  { boundCache, cache, prefix, settings }: Repairer,
  key: string,
  pending: Pending,
  now: number
): Effect.Effect<void, CacheError> =>
  now > pending.until
    ? Effect.sync(() => settle(ledger, key, pending))
    : boundCache("invalidate", key, cache.invalidate(prefix + key, pending.version, settings.tombstoneTtl)).pipe(
        Effect.matchEffect({
          onSuccess: () => Effect.sync(() => settle(ledger, key, pending)),
          onFailure: (error) =>
            error.reason === "Timeout" || isCircuitOpen(error.cause) ? Effect.fail(error) : Effect.void
        })
      )

// Settled unless a newer write owed the key again meanwhile.
const settle = (ledger: Ledger, key: string, pending: Pending) => {
  if (ledger.pending.get(key) !== pending) return
  ledger.pending.delete(key)
  ledger.bytes -= bytesOf(key)
}

// The audit must begin after the last key left out: its store reads then see that key's commit.
const sweepOverflow = (ledger: Ledger, repairer: Repairer): Effect.Effect<void> =>
  Effect.suspend(() => {
    const overflow = ledger.overflow
    if (overflow === undefined) return Effect.void
    const dropped = overflow.dropped
    const clearIfUnchanged = Effect.sync(() => {
      if (ledger.overflow?.dropped === dropped) ledger.overflow = undefined
    })
    return Effect.flatMap(Clock.currentTimeMillis, (now) =>
      now > overflow.until ? clearIfUnchanged : Effect.zipRight(repairer.sweep, clearIfUnchanged)
    ).pipe(Effect.ignore)
  })

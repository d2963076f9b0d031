// Keys the cache may still serve stale because neither the update nor the invalidation got
// through: a tombstone is retried in the background until it lands or until whatever the cache
// held has expired anyway. This narrows the staleness a StaleCacheError reports; it cannot
// survive this process, so the TTL stays the bound.
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { Cache, CacheError } from "../../Cache.js"

export interface Repairs {
  /** Retries a tombstone of `version` for `key` in the background, until the key's TTL has passed. */
  readonly schedule: (key: string, version: number) => Effect.Effect<void>
}

interface Pending {
  readonly version: number
  readonly until: number
}

/** Starts the background fiber, which the scope stops. */
export const start = (entity: {
  readonly cache: Cache.Service
  readonly prefix: string
  readonly boundCache: <X>(
    call: string,
    key: string,
    effect: Effect.Effect<X, CacheError>
  ) => Effect.Effect<X, CacheError>
  readonly settings: {
    readonly maxTtl: Duration.Duration
    readonly tombstoneTtl: Duration.Duration
    readonly repairInterval: Duration.Duration
  }
}): Effect.Effect<Repairs, never, Scope.Scope> =>
  Effect.gen(function* () {
    const pending = new Map<string, Pending>()
    yield* Effect.forkScoped(
      Effect.repeat(
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.forEach([...pending], ([key, repair]) => retry(entity, pending, key, repair, now), {
            concurrency: 8,
            discard: true
          })
        ),
        Schedule.spaced(entity.settings.repairInterval)
      )
    )
    return {
      schedule: (key, version) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.sync(() => {
            const earlier = pending.get(key)
            pending.set(key, {
              version: Math.max(version, earlier?.version ?? 0),
              until: now + Duration.toMillis(entity.settings.maxTtl)
            })
          })
        )
    }
  })

const retry = (
  entity: Parameters<typeof start>[0],
  pending: Map<string, Pending>,
  key: string,
  repair: Pending,
  now: number
): Effect.Effect<void> =>
  now > repair.until
    ? Effect.sync(() => pending.delete(key))
    : entity
        .boundCache(
          "invalidate",
          key,
          entity.cache.invalidate(entity.prefix + key, repair.version, entity.settings.tombstoneTtl)
        )
        .pipe(
          Effect.zipRight(
            Effect.sync(() => {
              if (pending.get(key) === repair) pending.delete(key)
            })
          ),
          Effect.ignore
        )

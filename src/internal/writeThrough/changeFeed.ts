// The change feed's consumer: brings every committed change of the entity's rows, by anyone, to
// the cache, as a guarded tombstone that replaces whatever the cache holds of the key older than
// the change. For a write of version v the tombstone is v - 1, so the write's own entry (version v,
// which the write path publishes at once, before the feed gets there) stays and a reader keeps
// hitting it; an older entry, or none, gives way, and the next reader fills v from the store. For a
// deletion it is the deleted row's version, which outranks that row and nothing written after it.
//
// Every process runs this fiber; the store lets one of them consume an entity's feed at a time.
// A page is committed only once all its tombstones landed: a cache or store failure leaves it to
// the next pull, and applying a change twice is no harm.
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import type { CacheError } from "../../Cache.js"
import * as Metrics from "../../Metrics.js"
import type { Change, Store, StoreError } from "../../Store.js"
import * as LabelledMetric from "../labelledMetric.js"
import type { Entity } from "./entity.js"

/** What the consumer needs of the entity. */
export type Consumer = Pick<Entity<unknown, unknown, unknown>, "name" | "prefix" | "cache" | "boundCache" | "settings">

/**
 * Starts the consumer when the store captures the entity's changes; the scope stops it, and gives
 * the feed up so that another process takes it over at once (within a bound: a store that does not
 * answer leaves it to the claim's running out).
 */
export const run = (entity: Consumer, feed: Store.ChangeFeed | undefined): Effect.Effect<void, never, Scope.Scope> =>
  feed === undefined
    ? Effect.void
    : Effect.zipRight(
        Effect.addFinalizer(() => feed.release.pipe(Effect.timeout(entity.settings.storeTimeout), Effect.ignore)),
        Effect.asVoid(Effect.forkScoped(consume(entity, feed)))
      )

interface Health {
  failing: boolean
  behind: boolean
}

const consume = (entity: Consumer, feed: Store.ChangeFeed): Effect.Effect<never> => {
  const labels = [["entity", entity.name]] as const
  const applied = LabelledMetric.counter(Metrics.changesApplied, labels)
  const lag = LabelledMetric.make(Metrics.changeLag as Metric.Metric<unknown, number, unknown>, labels)
  const consuming = LabelledMetric.make(Metrics.changeFeedConsuming as Metric.Metric<unknown, number, unknown>, labels)
  const health: Health = { failing: false, behind: false }
  const warnAfter = Duration.toMillis(feed.warnAfter)

  const step: Effect.Effect<boolean, StoreError | CacheError> = Effect.gen(function* () {
    const changes = yield* feed.pull
    yield* consuming.update(changes === undefined ? 0 : 1)
    if (changes === undefined || changes.length === 0) return false
    const pulledAt = yield* Clock.currentTimeMillis
    yield* tombstone(entity, changes)
    yield* feed.commit
    const elapsed = (yield* Clock.currentTimeMillis) - pulledAt
    let oldest = 0
    for (const change of changes) {
      const age = change.age + elapsed
      lag.unsafeUpdate(age)
      oldest = Math.max(oldest, age)
    }
    yield* applied.incrementBy(changes.length)
    yield* reportLag(entity.name, health, oldest, warnAfter)
    return changes.length >= feed.batchSize
  })

  const recovered = Effect.suspend(() => {
    if (!health.failing) return Effect.void
    health.failing = false
    return Effect.logInfo("the change feed reaches the store and the cache again").pipe(
      Effect.annotateLogs({ entity: entity.name })
    )
  })

  const failed = (error: StoreError | CacheError) =>
    Effect.suspend(() => {
      if (health.failing) return Effect.void
      health.failing = true
      return Effect.logWarning("the change feed is held up; it retries every poll interval").pipe(
        Effect.annotateLogs({ entity: entity.name, error: error.message })
      )
    })

  // A pass that took part of the poll interval waits only for the rest of it: under load, a pass
  // that applied many changes is followed by the next pull that much sooner.
  const interval = Duration.toMillis(feed.pollInterval)
  return Effect.forever(
    Effect.flatMap(Clock.currentTimeMillis, (startedAt) =>
      step.pipe(
        Effect.tap(() => recovered),
        Effect.catchAll((error) => Effect.as(failed(error), false)),
        Effect.flatMap((more) =>
          more
            ? Effect.void
            : Effect.flatMap(Clock.currentTimeMillis, (now) =>
                Effect.sleep(Duration.millis(Math.max(0, interval - (now - startedAt))))
              )
        )
      )
    )
  )
}

// One tombstone per key: the highest any of its changes asks for.
const tombstone = (entity: Consumer, changes: ReadonlyArray<Change>): Effect.Effect<void, CacheError> => {
  const versions = new Map<string, number>()
  for (const change of changes) {
    const version = change.deleted ? change.version : change.version - 1
    if (!((versions.get(change.key) ?? -1) >= version)) versions.set(change.key, version)
  }
  const { tombstoneTtl } = entity.settings
  return Effect.forEach(
    versions,
    ([key, version]) =>
      entity.boundCache("invalidate", key, entity.cache.invalidate(entity.prefix + key, version, tombstoneTtl)),
    { concurrency: 16, discard: true }
  )
}

const reportLag = (entity: string, health: Health, oldest: number, warnAfter: number): Effect.Effect<void> => {
  if (oldest > warnAfter && !health.behind) {
    health.behind = true
    return Effect.logWarning("the change feed is falling behind").pipe(
      Effect.annotateLogs({ entity, lagMillis: Math.round(oldest) })
    )
  }
  if (oldest <= warnAfter && health.behind) {
    health.behind = false
    return Effect.logInfo("the change feed has caught up").pipe(
      Effect.annotateLogs({ entity, lagMillis: Math.round(oldest) })
    )
  }
  return Effect.void
}

/**
 * The library's metrics, each tagged with `entity` and `operation` (`get`, `getMany`, `set`,
 * `delete`, `transaction`, `audit`).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricState from "effect/MetricState"

// Effect's metrics do not expose their names; `total` needs them to find a counter in a snapshot.
const names = new WeakMap<Metric.Metric.Counter<number>, string>()
const counter = (name: string, description: string): Metric.Metric.Counter<number> => {
  const metric = Metric.counter(name, { description })
  names.set(metric, name)
  return metric
}

/** @since 0.1.0 @category metrics */
export const cacheHits = counter("write_through_cache_hits", "reads served by the cache")
/** @since 0.1.0 @category metrics */
export const cacheMisses = counter(
  "write_through_cache_misses",
  "reads that went to the store because the cache held nothing or a tombstone"
)
/** @since 0.1.0 @category metrics */
export const corruptEntries = counter(
  "write_through_corrupt_entries",
  "cache entries whose payload failed to decode; repaired from the store"
)
/** @since 0.1.0 @category metrics */
export const degradedReads = counter(
  "write_through_degraded_reads",
  "reads served by the store because the cache failed or timed out"
)
/** @since 0.2.0 @category metrics */
export const cacheFills = counter(
  "write_through_cache_fills",
  "entries written into the cache by reads that missed (refused fills, say for a newer version there, not counted)"
)
/**
 * Tagged with the cache call that failed (`get`, `getMany`, `set`, `setMany`, `invalidate`, `lease`,
 * `scan`) as `operation`, rather than the public operation that made it.
 *
 * @since 0.2.0
 * @category metrics
 */
export const cacheErrors = counter(
  "write_through_cache_errors",
  "cache calls that failed or timed out (each retry counts), by cache call"
)
/** @since 0.1.0 @category metrics */
export const fillFailures = counter(
  "write_through_fill_failures",
  "miss fills that the cache failed to take (the read still succeeded)"
)
/** @since 0.1.0 @category metrics */
export const cacheWriteRetries = counter(
  "write_through_cache_write_retries",
  "retries of cache writes and invalidations after a failure"
)
/** @since 0.1.0 @category metrics */
export const invalidationFallbacks = counter(
  "write_through_invalidation_fallbacks",
  "writes whose cache update failed and whose key was invalidated instead"
)
/** @since 0.1.0 @category metrics */
export const staleWrites = counter(
  "write_through_stale",
  "committed writes that left the cache possibly stale (StaleCacheError)"
)
/** @since 0.1.0 @category metrics */
export const leaseWaits = counter(
  "write_through_lease_waits",
  "misses that waited for another process's fill instead of reading the store"
)
/** @since 0.1.0 @category metrics */
export const inconsistentWrites = counter(
  "write_through_inconsistent",
  "writes with an unknown store outcome (InconsistentCacheError)"
)
/**
 * Calls refused at once because a circuit breaker was open, tagged with the breaker's `tier`
 * (`cache` or `store`) and `target` (the cache's URL, its password masked, or the store's name):
 * none of them waited on the dependency.
 *
 * @since 0.2.0
 * @category metrics
 */
export const breakerShortCircuits = counter(
  "write_through_breaker_short_circuits",
  "calls refused at once while a circuit breaker was open"
)
/**
 * Transitions of a circuit breaker, tagged with its `tier`, `target` and the `state` it moved to
 * (`open` or `closed`).
 *
 * @since 0.2.0
 * @category metrics
 */
export const breakerTransitions = counter(
  "write_through_breaker_transitions",
  "transitions of a circuit breaker, by the state it moved to"
)
/**
 * 1 while a circuit breaker is open (or probing), 0 while it is closed; tagged with its `tier` and `target`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const breakerOpen = Metric.gauge("write_through_breaker_open", {
  description: "1 while a circuit breaker is open, 0 while it is closed"
})
/**
 * Changes of the store (by anyone) that the change feed brought to the cache, tagged with `entity`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const changesApplied = counter(
  "write_through_changes_applied",
  "committed changes of the store brought to the cache by the change feed"
)
/**
 * How long after its statement each change reached the cache, in milliseconds, tagged with
 * `entity`: from 1 ms to about 16 s in doubling buckets.
 *
 * @since 0.2.0
 * @category metrics
 */
export const changeLag = Metric.histogram(
  "write_through_change_lag_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 15 }),
  "time from a change's statement to its tombstone in the cache, in milliseconds"
)
/**
 * 1 while this process consumes an entity's change feed, 0 while another does; tagged with `entity`.
 *
 * @since 0.2.0
 * @category metrics
 */
export const changeFeedConsuming = Metric.gauge("write_through_change_feed_consuming", {
  description: "1 while this process consumes the entity's change feed"
})

/**
 * The other processes a strict near tier's write waited for, tagged with `outcome`:
 * `acknowledged` (it dropped what the write superseded) or `lease_expired` (silent: frozen, cut
 * off from Redis, or gone, and so no longer serving from its tier).
 *
 * @since 0.2.0
 * @category metrics
 */
export const nearTierHolders = counter(
  "write_through_near_tier_holders",
  "other processes a strict near tier's write waited for, by outcome"
)
/**
 * How long each strict near tier's write that had anyone to wait for waited, in milliseconds,
 * after Redis answered: from 50 us to about 1.6 s in doubling buckets.
 *
 * @since 0.2.0
 * @category metrics
 */
export const nearTierWriteWait = Metric.histogram(
  "write_through_near_tier_write_wait_ms",
  MetricBoundaries.exponential({ start: 0.05, factor: 2, count: 16 }),
  "time a strict near tier's write waited for other processes after Redis answered, in milliseconds"
)

/**
 * The time each public operation took, in milliseconds, failures included: from 50 us to about
 * 1.6 s in doubling buckets.
 *
 * @since 0.2.0
 * @category metrics
 */
export const latency = Metric.histogram(
  "write_through_latency_ms",
  MetricBoundaries.exponential({ start: 0.05, factor: 2, count: 16 }),
  "time taken by each public operation, in milliseconds"
)

/**
 * One of this module's counters: its total over every tag set that carries all of `tags`: for example the cache hits of
 * one entity, whatever the operation, with `Metrics.total(Metrics.cacheHits, { entity: "users" })`.
 *
 * @since 0.2.0
 * @category getters
 */
export const total = (
  metric: Metric.Metric.Counter<number>,
  tags: Readonly<Record<string, string>>
): Effect.Effect<number> =>
  Effect.map(Metric.snapshot, (pairs) => {
    const name = names.get(metric)
    let sum = 0
    for (const pair of pairs) {
      if (pair.metricKey.name !== name) continue
      const keyTags = new Map(pair.metricKey.tags.map((tag) => [tag.key, tag.value] as const))
      if (!Object.entries(tags).every(([key, value]) => keyTags.get(key) === value)) continue
      if (MetricState.isCounterState(pair.metricState)) sum += Number(pair.metricState.count)
    }
    return sum
  })

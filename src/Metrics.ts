/**
 * The library's metrics, each tagged with `entity`.
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"

/** @since 0.1.0 @category metrics */
export const cacheHits = Metric.counter("write_through_cache_hits", { description: "reads served by the cache" })
/** @since 0.1.0 @category metrics */
export const cacheMisses = Metric.counter("write_through_cache_misses", {
  description: "reads that went to the store because the cache held nothing or a tombstone"
})
/** @since 0.1.0 @category metrics */
export const corruptEntries = Metric.counter("write_through_corrupt_entries", {
  description: "cache entries whose payload failed to decode; repaired from the store"
})
/** @since 0.1.0 @category metrics */
export const degradedReads = Metric.counter("write_through_degraded_reads", {
  description: "reads served by the store because the cache failed or timed out"
})
/** @since 0.1.0 @category metrics */
export const fillFailures = Metric.counter("write_through_fill_failures", {
  description: "miss fills that the cache failed to take (the read still succeeded)"
})
/** @since 0.1.0 @category metrics */
export const cacheWriteRetries = Metric.counter("write_through_cache_write_retries", {
  description: "retries of cache writes and invalidations after a failure"
})
/** @since 0.1.0 @category metrics */
export const invalidationFallbacks = Metric.counter("write_through_invalidation_fallbacks", {
  description: "writes whose cache update failed and whose key was invalidated instead"
})
/** @since 0.1.0 @category metrics */
export const staleWrites = Metric.counter("write_through_stale", {
  description: "committed writes that left the cache possibly stale (StaleCacheError)"
})
/** @since 0.1.0 @category metrics */
export const leaseWaits = Metric.counter("write_through_lease_waits", {
  description: "misses that waited for another process's fill instead of reading the store"
})
/** @since 0.1.0 @category metrics */
export const inconsistentWrites = Metric.counter("write_through_inconsistent", {
  description: "writes with an unknown store outcome (InconsistentCacheError)"
})

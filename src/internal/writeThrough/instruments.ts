// What an entity reports of itself: counters per operation, a latency histogram, spans, and the
// retry schedule that counts its retries.
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import type { CacheError } from "../../Cache.js"
import { isCircuitOpen } from "../../CircuitBreaker.js"
import * as Metrics from "../../Metrics.js"
import type { Operation } from "../../WriteThroughError.js"
import * as LabelledMetric from "../labelledMetric.js"
import * as OperationSpan from "../operationSpan.js"

const operations: ReadonlyArray<Operation> = ["get", "getMany", "set", "setMany", "delete", "transaction", "audit"]

export type OperationMetrics = ReturnType<typeof metricsOf>

export interface Instruments {
  readonly metrics: Readonly<Record<Operation, OperationMetrics>>
  /** Runs `build` as the operation: in its span when a tracer is installed, its latency recorded. */
  readonly observed: <X, E, R>(
    operation: Operation,
    build: (outcome: (outcome: string) => void, fiber: Fiber.RuntimeFiber<unknown, unknown>) => Effect.Effect<X, E, R>
  ) => Effect.Effect<X, E, R>
  /** Counts a failed cache call, by the call's name. */
  readonly countCacheError: (call: string) => Effect.Effect<void>
}

/**
 * An operation waits on the cache for at most one `cacheTimeout`: after a call timed out, or was
 * refused by the cache's circuit breaker, it makes no further cache call (no retry, no
 * invalidation fallback) and leaves the key to the background repair.
 */
export const worthAnotherCall = (error: CacheError): boolean =>
  error.reason !== "Timeout" && !isCircuitOpen(error.cause)

// Tagged once per operation, not per call.
const metricsOf = (entity: string, operation: Operation, retry: Schedule.Schedule<unknown, CacheError>) => {
  const labels = [
    ["entity", entity],
    ["operation", operation]
  ] as const
  const tags = (metric: Metric.Metric.Counter<number>) => LabelledMetric.counter(metric, labels)
  const retries = tags(Metrics.cacheWriteRetries)
  const retrySchedule = retry.pipe(Schedule.tapInput(() => retries.increment))
  return {
    hits: tags(Metrics.cacheHits),
    misses: tags(Metrics.cacheMisses),
    corrupt: tags(Metrics.corruptEntries),
    degraded: tags(Metrics.degradedReads),
    fillFailures: tags(Metrics.fillFailures),
    fills: tags(Metrics.cacheFills),
    fallbacks: tags(Metrics.invalidationFallbacks),
    stale: tags(Metrics.staleWrites),
    inconsistent: tags(Metrics.inconsistentWrites),
    leaseWaits: tags(Metrics.leaseWaits),
    latency: LabelledMetric.make(Metrics.latency as Metric.Metric<unknown, number, unknown>, labels),
    // Effect.retry sets up the schedule's state on every call; most calls succeed at once, so the
    // schedule is only set up after a first failure, which it then sees as its first input.
    retry: <X>(effect: Effect.Effect<X, CacheError>): Effect.Effect<X, CacheError> =>
      Effect.catchAll(effect, (first) => {
        if (!worthAnotherCall(first)) return Effect.fail(first)
        let replayed = false
        return Effect.retry(
          Effect.suspend(() => {
            if (replayed) return effect
            replayed = true
            return Effect.fail(first)
          }),
          { schedule: retrySchedule, while: worthAnotherCall }
        )
      })
  }
}

export const make = (entity: string, retry: Schedule.Schedule<unknown, CacheError>): Instruments => {
  const metrics = Object.fromEntries(
    operations.map((operation) => [operation, metricsOf(entity, operation, retry)])
  ) as Record<Operation, OperationMetrics>
  const spanAttributes = Object.fromEntries(
    operations.map((operation) => [operation, { entity, operation }])
  ) as Record<Operation, { readonly entity: string; readonly operation: Operation }>
  return {
    metrics,
    observed: (operation, build) =>
      OperationSpan.observe(`WriteThrough.${operation}`, spanAttributes[operation], metrics[operation].latency, build),
    countCacheError: cacheErrorCounter(entity)
  }
}

// Counted by the cache call that failed: built once per call name.
const cacheErrorCounter = (entity: string) => {
  const counters = new Map<string, ReturnType<typeof LabelledMetric.counter>>()
  return (call: string) => {
    let counter = counters.get(call)
    if (counter === undefined) {
      counter = LabelledMetric.counter(Metrics.cacheErrors, [
        ["entity", entity],
        ["operation", call]
      ])
      counters.set(call, counter)
    }
    return counter.increment
  }
}

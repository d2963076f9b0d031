// A circuit breaker on a cache connection, shared by every entity on that cache. After a run of
// failed calls it opens: reads (get, getMany, lease) fail at once instead of waiting on a dead
// cache, so the write-through serves them from the store at the store's speed, without a lease or
// a fill. Writes (set, setMany, invalidate, ticket, scan) always go through: their guards, retries
// and invalidation fallbacks are what keeps a committed write from being forgotten, and their
// outcomes tell the breaker when the cache is back. After `interval` one read goes through as a
// probe; its success closes the breaker.
//
// Skipping the cache on a read is always safe: the store is the source of truth. It costs only the
// speed of the cache while the breaker is open, never a stale value.
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { Cache, CacheError } from "../Cache.js"
import * as Metrics from "../Metrics.js"

export interface Options {
  /** Consecutive failed calls that open the breaker. Default 3. */
  readonly failures?: number | undefined
  /** How long it stays open before a read probes the cache again. Default 5 seconds. */
  readonly interval?: Duration.DurationInput | undefined
}

/** The cause of a read refused while the breaker is open. */
export class CircuitOpen extends Data.TaggedError("CircuitOpen")<{ readonly until: number }> {
  override get message(): string {
    return `the cache's circuit breaker is open until ${new Date(this.until).toISOString()}`
  }
}

type State =
  | { readonly _tag: "Closed"; readonly failures: number }
  | { readonly _tag: "Open"; readonly until: number }
  | { readonly _tag: "Probing" }

/**
 * `cache` behind a breaker; `url` names the cache in the metrics' tags and the log lines. `onOpen`
 * runs as it opens: an in-process tier in front of the cache drops what it holds, since it cannot
 * hear other processes' writes while the cache is unreachable.
 */
export const wrap = (
  cache: Cache.Service,
  options: Options,
  url: string,
  onOpen: () => void = () => {}
): Cache.Service => {
  const threshold = Math.max(1, options.failures ?? 3)
  const interval = Duration.toMillis(options.interval ?? "5 seconds")
  const instruments = instrumentsOf(url)
  let state: State = closed

  const moveTo = (next: State): Effect.Effect<void> => {
    const from = state
    state = next
    if (next._tag === "Closed") {
      return from._tag === "Closed" ? Effect.void : instruments.closed
    }
    if (next._tag === "Open") {
      onOpen()
      return from._tag === "Probing" ? instruments.probeFailed(interval) : instruments.opened(threshold, interval)
    }
    return Effect.void
  }

  const succeeded = (): Effect.Effect<void> => (state === closed ? Effect.void : moveTo(closed))
  const failed = (): Effect.Effect<void> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      state._tag === "Closed" && state.failures + 1 < threshold
        ? moveTo({ _tag: "Closed", failures: state.failures + 1 })
        : state._tag === "Open"
          ? Effect.void
          : moveTo({ _tag: "Open", until: now + interval })
    )
  const recorded = <A>(effect: Effect.Effect<A, CacheError>): Effect.Effect<A, CacheError> =>
    Effect.tapBoth(effect, { onSuccess: succeeded, onFailure: failed })

  // While closed, a read costs one check of the state: this is on every cache hit.
  const read =
    (operation: string) =>
    <A>(key: string, effect: Effect.Effect<A, CacheError>): Effect.Effect<A, CacheError> =>
      Effect.suspend(() =>
        state === closed
          ? Effect.tapError(effect, failed)
          : state._tag === "Closed"
            ? recorded(effect)
            : Effect.flatMap(Clock.currentTimeMillis, (now) => {
                if (state._tag === "Open" && now >= state.until)
                  return Effect.zipRight(moveTo(probing), recorded(effect))
                const until = state._tag === "Open" ? state.until : now + interval
                return Effect.zipRight(
                  instruments.shortCircuited,
                  Effect.fail(
                    new CacheError({ operation, key, reason: "Unavailable", cause: new CircuitOpen({ until }) })
                  )
                )
              })
      )

  const get = read("get")
  const getMany = read("getMany")
  const lease = read("lease")
  return Cache.of({
    ...cache,
    get: (key) => get(key, cache.get(key)),
    getMany: (keys) => getMany(keys[0] ?? "", cache.getMany(keys)),
    lease: (key, ttl) => lease(key, cache.lease(key, ttl)),
    set: (key, entry, setOptions) => recorded(cache.set(key, entry, setOptions)),
    setMany: (items) => recorded(cache.setMany(items)),
    invalidate: (key, version, ttl) => recorded(cache.invalidate(key, version, ttl))
  })
}

/** `cache` behind a breaker unless it is turned off. */
export const around = (
  cache: Cache.Service,
  options: Options | false | undefined,
  url: string,
  onOpen?: () => void
): Cache.Service => (options === false ? cache : wrap(cache, options ?? {}, url, onOpen))

const closed: State = { _tag: "Closed", failures: 0 }
const probing: State = { _tag: "Probing" }

// Tagged once per cache, not per transition.
const instrumentsOf = (url: string) => {
  const tagged = <Type, In, Out>(metric: Metric.Metric<Type, In, Out>) => Metric.tagged(metric, "url", url)
  const gauge = tagged(Metrics.cacheBreakerOpen)
  const toOpen = Metric.tagged(tagged(Metrics.cacheBreakerTransitions), "state", "open")
  const toClosed = Metric.tagged(tagged(Metrics.cacheBreakerTransitions), "state", "closed")
  const annotated = Effect.annotateLogs({ url })
  return {
    shortCircuited: Metric.increment(tagged(Metrics.cacheShortCircuits)),
    closed: Effect.all(
      [
        Metric.increment(toClosed),
        Metric.set(gauge, 0),
        annotated(Effect.logInfo("the cache answers again: its circuit breaker closed"))
      ],
      { discard: true }
    ),
    opened: (threshold: number, interval: number) =>
      Effect.all(
        [
          Metric.increment(toOpen),
          Metric.set(gauge, 1),
          annotated(
            Effect.logWarning(
              `${threshold} cache calls failed in a row: its circuit breaker opened; reads go to the store for ${Duration.format(interval)}`
            )
          )
        ],
        { discard: true }
      ),
    probeFailed: (interval: number) =>
      annotated(
        Effect.logWarning(`the cache still fails: its circuit breaker stays open for ${Duration.format(interval)}`)
      )
  }
}

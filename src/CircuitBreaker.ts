/**
 * The circuit breaker in front of a cache connection (`RedisCache`, `RedisClusterCache`) and of a
 * store (`SqlStore`): after a run of failed calls it opens, and for an interval every call fails at
 * once, with the tier's error (`CacheError` or `StoreError`, reason `Unavailable`) whose `cause`
 * is a `CircuitOpen`, instead of waiting on a dependency that does not answer. Then one call goes
 * through as a probe: its success closes the breaker, its failure keeps it open for another
 * interval.
 *
 * What a refused call means to the write-through: a read of a cache whose breaker is open goes to
 * the store at once, without a lease or a fill; a write commits to the store and returns at once
 * with `StaleCacheError`, the key owed a tombstone that this process sends when the cache answers
 * again, and reads of it in this process go to the store until it landed. A refused store call
 * writes nothing: the caller gets `StoreError` `Unavailable` and may retry.
 *
 * @since 0.2.0
 */
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Option from "effect/Option"

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** Consecutive failed calls that open the breaker. A whole number, 1 or more. Default 3. */
  readonly failures?: number | undefined
  /** How long it stays open before one call probes the dependency again. Default 5 seconds. */
  readonly interval?: Duration.DurationInput | undefined
}

/**
 * The `cause` of a call refused while the breaker was open; `until` is when it lets a probe through.
 *
 * @since 0.2.0
 * @category errors
 */
export class CircuitOpen extends Data.TaggedError("CircuitOpen")<{
  readonly tier: "cache" | "store"
  readonly until: number
}> {
  override get message(): string {
    return `the ${this.tier}'s circuit breaker is open until ${new Date(this.until).toISOString()}`
  }
}

/**
 * Whether `u` is a `CircuitOpen`: a call that was refused without reaching the dependency.
 *
 * @since 0.2.0
 * @category refinements
 */
export const isCircuitOpen = (u: unknown): u is CircuitOpen =>
  typeof u === "object" && u !== null && "_tag" in u && u._tag === "CircuitOpen"

/**
 * The options from configuration: `FAILURES` and `INTERVAL`, both optional, for example under
 * `Config.nested("CACHE_BREAKER")`.
 *
 * @since 0.2.0
 * @category config
 */
export const config: Config.Config<Options> = Config.all({
  failures: Config.option(
    Config.integer("FAILURES").pipe(
      Config.validate({ message: "must be a whole number of failed calls, 1 or more", validation: (n) => n >= 1 })
    )
  ),
  interval: Config.option(Config.duration("INTERVAL"))
}).pipe(
  Config.map(({ failures, interval }) => ({
    failures: Option.getOrUndefined(failures),
    interval: Option.getOrUndefined(interval)
  }))
)

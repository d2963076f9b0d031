// The figures of an entity that belong to its deployment: the default retry, and Settings read
// from configuration.
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type { CacheError } from "../../Cache.js"
import type { Settings } from "../../WriteThrough.js"

export const defaultRetry: Schedule.Schedule<unknown, CacheError> = Schedule.exponential("20 millis").pipe(
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(3)),
  Schedule.upTo("2 seconds")
)

export const retrySchedule = (policy: {
  readonly times: number
  readonly base: Duration.DurationInput
  readonly within: Duration.DurationInput
}): Schedule.Schedule<unknown, CacheError> =>
  Schedule.exponential(policy.base).pipe(
    Schedule.jittered,
    Schedule.intersect(Schedule.recurs(policy.times)),
    Schedule.upTo(policy.within)
  )

const positiveDuration = (name: string) =>
  Config.duration(name).pipe(
    Config.validate({
      message: "must be a duration above zero",
      validation: (d) => Duration.greaterThan(d, Duration.zero)
    })
  )

export const settings: Config.Config<Settings> = Config.all({
  ttl: Config.option(positiveDuration("TTL")),
  ttlJitter: Config.option(
    Config.number("TTL_JITTER").pipe(
      Config.validate({ message: "must be a fraction from 0 to 1", validation: (n) => n >= 0 && n <= 1 })
    )
  ),
  tombstoneTtl: Config.option(positiveDuration("TOMBSTONE_TTL")),
  cacheTimeout: Config.option(positiveDuration("CACHE_TIMEOUT")),
  storeTimeout: Config.option(positiveDuration("STORE_TIMEOUT")),
  retryTimes: Config.option(
    Config.integer("RETRY_TIMES").pipe(
      Config.validate({ message: "must be a whole number of retries, 0 or more", validation: (n) => n >= 0 })
    )
  ),
  retryBase: Config.option(positiveDuration("RETRY_BASE")),
  retryWithin: Config.option(positiveDuration("RETRY_WITHIN"))
}).pipe(
  Config.mapOrFail((read) => {
    const out: { -readonly [K in keyof Settings]: Settings[K] } = {}
    if (Option.isSome(read.ttl)) out.ttl = read.ttl.value
    if (Option.isSome(read.ttlJitter)) out.ttlJitter = read.ttlJitter.value
    if (Option.isSome(read.tombstoneTtl)) out.tombstoneTtl = read.tombstoneTtl.value
    if (Option.isSome(read.cacheTimeout)) out.cacheTimeout = read.cacheTimeout.value
    if (Option.isSome(read.storeTimeout)) out.storeTimeout = read.storeTimeout.value
    const { retryBase, retryTimes, retryWithin } = read
    if (Option.isSome(retryTimes) && Option.isSome(retryBase) && Option.isSome(retryWithin)) {
      out.retry = retrySchedule({ times: retryTimes.value, base: retryBase.value, within: retryWithin.value })
    } else if (Option.isSome(retryTimes) || Option.isSome(retryBase) || Option.isSome(retryWithin)) {
      return Either.left(
        ConfigError.InvalidData([], "RETRY_TIMES, RETRY_BASE and RETRY_WITHIN go together: set all three or none")
      )
    }
    return Either.right(out as Settings)
  })
)

/**
 * The `Cache` on Redis, through ioredis.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import type { RedisOptions } from "ioredis"
import { Cache, type CacheConnectionError } from "./Cache.js"
import type * as CircuitBreaker from "./CircuitBreaker.js"
import * as NearCache from "./internal/redis/nearCache.js"
import * as internal from "./internal/redis/redisCache.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** `redis://[user:password@]host:port[/db]`. Default `redis://127.0.0.1:6379`. */
  readonly url?: string | Redacted.Redacted | undefined
  /** Prepended to every key, to share one Redis between applications or tests. */
  readonly keyPrefix?: string | undefined
  /** The bound on every command, queued ones included. Default 1 second. */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /** The bound on connecting when the layer is built. Default 5 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Further ioredis options; the ones above take precedence. */
  readonly redis?: Omit<RedisOptions, "keyPrefix" | "commandTimeout" | "lazyConnect"> | undefined
  /**
   * An in-process tier in front of Redis (off by default). Every write through any process
   * announces the key and its version on a Redis channel; each process drops what the
   * announcement supersedes, and drops the whole tier when its subscription reconnects.
   * A process reads its own writes at once. In the default `bounded` mode another process's write
   * reaches it after the announcement does (docs/performance.md gives the measured bound); in
   * `strict` mode a write returns only once every process whose tier may hold the key dropped it,
   * or stopped serving from its tier (README, "The near tier: bounded or strict").
   */
  readonly near?: NearTierOptions | undefined
  /**
   * A circuit breaker on this connection, shared by every entity on this cache: once `failures`
   * cache calls in a row failed (default 3) it opens, and for `interval` (default 5 seconds) no
   * call waits on Redis: reads go to the store at once, without a lease or a fill; writes commit to
   * the store and fail at once with `StaleCacheError`, their keys owed a tombstone that this
   * process reads past until it landed. Then one call probes Redis, and its success closes the
   * breaker. `false` turns it off. See `CircuitBreaker`.
   */
  readonly breaker?: BreakerOptions | false | undefined
}

/**
 * The circuit breaker's figures: `failures` and `interval` (see each for its default).
 *
 * @since 0.2.0
 * @category models
 */
export interface BreakerOptions extends CircuitBreaker.Options {}

/**
 * The in-process tier's bounds, `maxEntries`, `maxBytes` and `ttl`, and its `mode` and `lease`
 * (see each for its default).
 *
 * @since 0.2.0
 * @category models
 */
export interface NearTierOptions extends NearCache.Options {}

/**
 * What strict mode's writers of this process waited for, since the layer was built.
 *
 * @since 0.2.0
 * @category models
 */
export interface HolderCounts {
  /** Other processes' acknowledgements that they dropped a key this process wrote. */
  readonly acknowledged: number
  /** Holders that did not acknowledge within their lease (frozen, cut off from Redis, or gone). */
  readonly leaseExpired: number
  /** Writes that waited for a fresh or restarted Redis's memory to be a lease old. */
  readonly youngMemoryWaits: number
}

/**
 * The in-process tier's size and state, for metrics and tests. Zero when it is off.
 * `serving` (since 0.2.0) is whether the tier may serve now: its subscription hears every
 * announcement and, in strict mode, its lease runs. `holders` (since 0.2.0): see `HolderCounts`.
 *
 * @since 0.1.0
 * @category tags
 */
export class NearTierStats extends Context.Tag("effect-write-through/RedisCache/NearTierStats")<
  NearTierStats,
  {
    readonly enabled: boolean
    readonly mode: "off" | "bounded" | "strict"
    readonly entries: Effect.Effect<number>
    readonly bytes: Effect.Effect<number>
    readonly serving: Effect.Effect<boolean>
    readonly holders: Effect.Effect<HolderCounts>
  }
>() {}

/**
 * Connects to Redis for the lifetime of the scope. Fails with a
 * `CacheConnectionError` naming the URL when Redis does not answer in time.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Cache.Service, CacheConnectionError, Scope.Scope> =>
  Effect.map(internal.makeWithStats(options), ([cache]) => cache)

const makeContext = (
  options: Options
): Effect.Effect<Context.Context<Cache | NearTierStats>, CacheConnectionError, Scope.Scope> =>
  NearCache.withStats(internal.makeWithStats(options), NearTierStats)

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Cache | NearTierStats, CacheConnectionError> =>
  Layer.scopedContext(makeContext(options))

/**
 * For example `RedisCache.layerConfig({ url: Config.redacted("REDIS_URL") })`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<Cache | NearTierStats, CacheConnectionError | ConfigError.ConfigError> =>
  Layer.scopedContext(Effect.flatMap(Config.unwrap(options), makeContext))

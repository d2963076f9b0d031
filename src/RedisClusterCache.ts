/**
 * The `Cache` on a Redis Cluster, through ioredis's `Cluster`.
 *
 * Entries are guarded per key as in `RedisCache`. What differs is the cache's memory: a script may
 * only touch keys of one hash slot, so each slot has a memory marker of its own, named with a
 * hash tag that puts it in that slot, and holding the time it was created. A ticket is the time it
 * was issued, and a ticketed write lands only where the slot's marker is older than the ticket:
 * a node that restarted, or a slot that was flushed, since the ticket was issued refuses it, and
 * the write-through invalidates instead. Multi-key reads are one `MGET` per hash slot, sent
 * together (auto-pipelined per node).
 *
 * @since 0.2.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import type * as ConfigError from "effect/ConfigError"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { ClusterOptions, RedisOptions } from "ioredis"
import { Cache, type CacheConnectionError } from "./Cache.js"
import type * as CircuitBreaker from "./CircuitBreaker.js"
import * as NearCache from "./internal/redis/nearCache.js"
import * as internal from "./internal/redis/redisClusterCache.js"
import { NearTierStats } from "./RedisCache.js"

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /**
   * Some of the cluster's nodes, `host:port` or `redis://host:port`: ioredis discovers the rest.
   * Passwords go in `redis`.
   */
  readonly nodes: ReadonlyArray<string>
  /** Prepended to every key, to share one cluster between applications or tests. */
  readonly keyPrefix?: string | undefined
  /**
   * The bound on every call, including the time a command waits while the cluster is failing
   * over or refreshing its slots. Default 1 second.
   */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /** The bound on connecting and marking the slots when the layer is built. Default 10 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /**
   * How far the application's clock may run ahead of the Redis nodes' clocks. A ticket holds
   * only for a slot whose memory is older than the ticket by this much. Default 0: the clocks
   * agree (NTP); the same assumption as the ticket deadlines of `RedisCache`.
   */
  readonly clockSkew?: Duration.DurationInput | undefined
  /** Further ioredis `Cluster` options; the ones above take precedence. */
  readonly cluster?: Omit<ClusterOptions, "redisOptions" | "lazyConnect" | "keyPrefix"> | undefined
  /**
   * The in-process tier, as `RedisCache`'s (off by default): every write announces its key and
   * version on a channel, which the cluster carries to every node; a process drops its whole tier
   * when a node fails, joins or leaves, since an announcement may have been lost with it.
   */
  readonly near?: NearCache.Options | undefined
  /**
   * A circuit breaker on this connection, shared by every entity on this cache: once `failures`
   * cache calls in a row failed (default 3) it opens, and for `interval` (default 5 seconds) no
   * call waits on Redis: reads go to the store at once, without a lease or a fill; writes commit to
   * the store and fail at once with `StaleCacheError`, their keys owed a tombstone that this
   * process reads past until it landed. Then one call probes Redis, and its success closes the
   * breaker. `false` turns it off. See `CircuitBreaker`.
   */
  readonly breaker?: CircuitBreaker.Options | false | undefined
  /** Options for each node's connection (a password, TLS...). */
  readonly redis?: Omit<RedisOptions, "keyPrefix" | "commandTimeout" | "lazyConnect" | "host" | "port"> | undefined
}

/**
 * Connects to the cluster for the lifetime of the scope and marks the memory of every slot the
 * keys may land in. Fails with a `CacheConnectionError` naming the nodes when the cluster does
 * not answer in time.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Cache.Service, CacheConnectionError, Scope.Scope> =>
  Effect.map(internal.makeWithStats(options), ([cache]) => cache)

const makeContext = (
  options: Options
): Effect.Effect<Context.Context<Cache | NearTierStats>, CacheConnectionError, Scope.Scope> =>
  NearCache.withStats(internal.makeWithStats(options), NearTierStats)

/**
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Cache | NearTierStats, CacheConnectionError> =>
  Layer.scopedContext(makeContext(options))

/**
 * For example
 * `RedisClusterCache.layerConfig({ nodes: Config.array(Config.string(), "REDIS_CLUSTER_NODES") })`,
 * with `REDIS_CLUSTER_NODES=10.0.0.1:7000,10.0.0.2:7000`.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<Cache | NearTierStats, CacheConnectionError | ConfigError.ConfigError> =>
  Layer.scopedContext(Effect.flatMap(Config.unwrap(options), makeContext))

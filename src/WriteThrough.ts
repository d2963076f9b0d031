/**
 * Write-through over a `Cache` and a `Store`: writes go to the store first and then to the cache,
 * and succeed only when both did; reads come from the cache and, on a miss, from the store,
 * filling the cache.
 *
 * This module is the sheet: the options, the operations and their errors, settings, `Service`,
 * `make` and `transaction`. The read path is `internal/writeThrough/read.ts`, the write path
 * `internal/writeThrough/write.ts`.
 *
 * @since 0.1.0
 */
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import type * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { Cache, CacheError } from "./Cache.js"
import * as internal from "./internal/writeThrough/make.js"
import * as internalSettings from "./internal/writeThrough/settings.js"
import * as internalTransaction from "./internal/writeThrough/transaction.js"
import type { Store, StoreError, Table } from "./Store.js"
import type { InconsistentCacheError, StaleCacheError, ValidationError } from "./WriteThroughError.js"

/**
 * One entity: its key, its value, where it lives and how the cache treats it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<K, A, I> {
  /** The key's schema; it must encode to a string. */
  readonly key: Schema.Schema<K, string>
  /** The value's schema. Its encoded form is what the store holds and, as JSON, what the cache holds. */
  readonly value: Schema.Schema<A, I>
  /**
   * The entity's name: the cache namespace and the name in errors. Default the table's name,
   * qualified by its schema when one is given (`archive.users`), else the service id. Two entities
   * on one `Cache` must have distinct names: building the second one fails, naming both.
   */
  readonly entity?: string | undefined
  /** A real table to map the value's fields onto; absent, the store's generic key/JSON table. */
  readonly table?: Table | undefined
  /** The safety net on every cache entry. Default 1 hour. */
  readonly ttl?: Duration.DurationInput | undefined
  /** Up to this fraction is added to each TTL at random, so a burst of writes does not expire together. Default 0.1. */
  readonly ttlJitter?: number | undefined
  /** How long a delete's or an invalidation's tombstone stays. Default 30 seconds. */
  readonly tombstoneTtl?: Duration.DurationInput | undefined
  /** Retries of a failed cache write, then of the invalidation that replaces it. Default `defaultRetry`. */
  readonly retry?: Schedule.Schedule<unknown, CacheError> | undefined
  /** The bound on one cache call. Default 1 second. */
  readonly cacheTimeout?: Duration.DurationInput | undefined
  /** The bound on one store call. Default 5 seconds. */
  readonly storeTimeout?: Duration.DurationInput | undefined
  /**
   * The most entries one `setMany` takes; more are refused before any I/O. `SqlStore` locks every
   * key of a batch in one transaction, and PostgreSQL's lock table is shared by all sessions
   * (`max_locks_per_transaction` × connections, 6,400 by default). Default 500.
   */
  readonly maxBatchSize?: number | undefined
  /** Longer keys (in UTF-8 bytes, once encoded) are refused. Default 1024. */
  readonly maxKeyBytes?: number | undefined
  /** How often invalidations that failed after a committed write are retried in the background. Default 1 second. */
  readonly repairInterval?: Duration.DurationInput | undefined
  /**
   * A write that committed but could not reach the cache (`StaleCacheError`, or the cache's circuit
   * breaker open) leaves its key owed a tombstone: this process reads the key from the store until
   * the tombstone, retried every `repairInterval`, lands. Past `maxKeys` owed keys or `maxBytes` of
   * them, the entity is owed whole: every read goes to the store until an audit of its cache
   * namespace repaired it (or the TTL ran out). Default `{ maxKeys: 10_000, maxBytes: 4 MiB }`.
   */
  readonly owedTombstones?:
    { readonly maxKeys?: number | undefined; readonly maxBytes?: number | undefined } | undefined
  /**
   * Stampede protection across processes: after a miss, a process asks the cache for a short
   * lease on the key; the holder reads the store and fills, the others poll the cache for the
   * fill and go to the store themselves when `wait` runs out. `false` turns it off.
   * Default `{ ttl: "2 seconds", wait: "250 millis", poll: "5 millis" }`.
   */
  readonly lease?:
    | false
    | {
        readonly ttl?: Duration.DurationInput | undefined
        readonly wait?: Duration.DurationInput | undefined
        readonly poll?: Duration.DurationInput | undefined
      }
    | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export type ReadError = ValidationError | StoreError

/**
 * @since 0.1.0
 * @category models
 */
export type WriteError = ValidationError | StoreError | StaleCacheError | InconsistentCacheError

/**
 * The operations on one entity.
 *
 * @since 0.1.0
 * @category models
 */
export interface WriteThrough<K, A> {
  readonly entity: string
  /** The cache, else the store (filling the cache). `None` when the store has no such key. */
  readonly get: (key: K) => Effect.Effect<Option.Option<A>, ReadError>
  /**
   * Many keys at once: one cache round trip for all of them, one store query for
   * the misses, one pipelined fill. The results in the keys' order.
   */
  readonly getMany: (keys: Iterable<K>) => Effect.Effect<ReadonlyArray<Option.Option<A>>, ReadError>
  /**
   * `get` as an Effect `Request`: `Effect.forEach(keys, users.getBatched, { batching: true })`
   * turns concurrent lookups into `getMany` batches. Outside a batching context prefer `get`:
   * Effect 3 runs every request through a forked fiber, which costs far more than a cache hit.
   */
  readonly getBatched: (key: K) => Effect.Effect<Option.Option<A>, ReadError>
  /** Validates, writes the store, then the cache. */
  readonly set: (key: K, value: A) => Effect.Effect<void, WriteError>
  /**
   * `set` for many keys: every entry is validated first (one invalid, nothing written), then one
   * store statement writes them all or none, then one pipelined cache write publishes them. A
   * key's cache update that fails is retried and falls back to invalidation as `set`'s does; the
   * first `StaleCacheError` is the error, once every key was tried. An unknown store outcome fences
   * every key: `InconsistentCacheError` with operation `"setMany"` and `keys`.
   */
  readonly setMany: (entries: Iterable<readonly [K, A]>) => Effect.Effect<void, WriteError>
  /** Deletes from the store, then leaves a tombstone in the cache. Deleting an absent key succeeds. */
  readonly delete: (key: K) => Effect.Effect<void, WriteError>
  /**
   * Scans the entity's cache entries (SCAN, page by page), compares each value's version with
   * the store's, and reports how consistent the cache is; with `repair`, replaces each entry
   * that disagrees with a tombstone, so the next read refills it from the store.
   */
  readonly audit: (options?: {
    readonly repair?: boolean | undefined
  }) => Effect.Effect<AuditReport, CacheError | StoreError>
}

/**
 * What `audit` found. Tombstones and absent keys serve no value and are not judged.
 *
 * @since 0.1.0
 * @category models
 */
export interface AuditReport {
  readonly entity: string
  /** Keys seen in the cache. */
  readonly scanned: number
  /** Value entries judged against the store. */
  readonly values: number
  readonly consistent: number
  /** Values older than the store's row, or present while the row is gone: what a reader could be served stale. */
  readonly stale: number
  /** Values newer than the store's row: written by something other than this library. */
  readonly ahead: number
  readonly repaired: number
  /** -log10 of the inconsistent share of values; `Infinity` when none is. */
  readonly nines: number
}

/**
 * Jittered exponential backoff from 20 ms, at most 3 retries, within 2 seconds.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultRetry: Schedule.Schedule<unknown, CacheError> = internalSettings.defaultRetry

/**
 * Jittered exponential backoff from `base`, at most `times` retries, within `within`: the shape of
 * `defaultRetry`, with figures that can come from configuration.
 *
 * @since 0.2.0
 * @category constructors
 */
export const retrySchedule: (policy: {
  readonly times: number
  readonly base: Duration.DurationInput
  readonly within: Duration.DurationInput
}) => Schedule.Schedule<unknown, CacheError> = internalSettings.retrySchedule

/**
 * The options of an entity that belong to its deployment rather than its code.
 *
 * @since 0.2.0
 * @category models
 */
export type Settings = Pick<
  Options<unknown, unknown, unknown>,
  "ttl" | "ttlJitter" | "tombstoneTtl" | "cacheTimeout" | "storeTimeout" | "retry"
>

/**
 * `Settings` read from configuration, each optional (absent: the default): `TTL`, `TTL_JITTER`
 * (a fraction from 0 to 1), `TOMBSTONE_TTL`, `CACHE_TIMEOUT`, `STORE_TIMEOUT`, and the retry as
 * `RETRY_TIMES`, `RETRY_BASE`, `RETRY_WITHIN` (all three, or none). Durations are Effect duration
 * strings such as `"10 minutes"`. A bad value fails with a `ConfigError` naming it. Nest it per
 * entity: `Config.nested(WriteThrough.settings, "USERS")` reads `USERS_TTL` from the environment.
 *
 * @since 0.2.0
 * @category config
 */
export const settings: Config.Config<Settings> = internalSettings.settings

/**
 * Builds the operations of one entity. Fails with a `StoreError` when the store
 * does not fit the entity, for example a table without its version column.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <K, A, I>(
  options: Options<K, A, I> & { readonly entity: string }
): Effect.Effect<WriteThrough<K, A>, StoreError, Cache | Store | Scope.Scope> => internal.make(options)

/**
 * Runs `effect` in one SQL transaction of the `Store` and defers the cache updates of every
 * write-through `set` and `delete` inside it, of any entity, until the `COMMIT` succeeded:
 *
 * ```ts
 * yield* WriteThrough.transaction(
 *   Effect.all([users.set("1", ada), accounts.set("1", account)])
 * )
 * ```
 *
 * - `effect` fails, or is interrupted: the transaction rolls back and the cache is not touched.
 * - The `COMMIT` succeeded: each written key's cache entry is updated (the last write of a key
 *   wins) under the same retry, invalidation fallback and `StaleCacheError` as a single write;
 *   the first `StaleCacheError` is the transaction's error, after all were tried.
 * - `effect` succeeded but the `COMMIT` failed (a defect in `@effect/sql`, say a lost connection):
 *   the outcome is unknown, every written key is fenced, and the error is an
 *   `InconsistentCacheError` with operation `"transaction"` listing the keys.
 *
 * Inside it, reads of keys it wrote come from the store (the transaction's own rows), and no
 * read fills the cache. A nested `WriteThrough.transaction` joins the outer one. It cannot begin
 * inside a bare `sql.withTransaction` (a `StoreError` with reason `"Transaction"`): that
 * transaction's COMMIT, not this one's, would decide the writes.
 *
 * @since 0.2.0
 * @category combinators
 */
export const transaction: <A, E, R>(
  effect: Effect.Effect<A, E, R>
) => Effect.Effect<A, E | StoreError | StaleCacheError | InconsistentCacheError, R | Store> =
  internalTransaction.transaction

/**
 * The class returned by `Service`: a tag for the entity's operations with a
 * `Default` layer that builds them from `Cache` and `Store`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServiceClass<Self, Id extends string, K, A> extends Context.TagClass<Self, Id, WriteThrough<K, A>> {
  readonly Default: Layer.Layer<Self, StoreError, Cache | Store>
  /**
   * `Default` with `Settings` from configuration over the ones in code, by default
   * `WriteThrough.settings`: `Users.layerConfig(Config.nested(WriteThrough.settings, "USERS"))`.
   */
  readonly layerConfig: (
    config?: Config.Config<Settings>
  ) => Layer.Layer<Self, StoreError | ConfigError.ConfigError, Cache | Store>
  readonly entity: string
}

/**
 * Declares an entity as a service:
 *
 * ```ts
 * class Users extends WriteThrough.Service<Users>()("app/Users", {
 *   key: Schema.String,
 *   value: User,
 *   table: { name: "users", primaryKey: "id" }
 * }) {}
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const Service =
  <Self = never>() =>
  <const Id extends string, K, A, I>(id: Id, options: Options<K, A, I>): ServiceClass<Self, Id, K, A> => {
    const entity = options.entity ?? (options.table === undefined ? id : internal.qualifiedTableName(options.table))
    const owner = internal.describeOwner({ entity, table: options.table }, id)
    const Tag = Context.Tag(id)<Self, WriteThrough<K, A>>()
    const layer = Layer.scoped(Tag, internal.make({ ...options, entity }, owner))
    const layerConfig = (config: Config.Config<Settings> = settings) =>
      Layer.scoped(
        Tag,
        Effect.flatMap(config, (configured) => internal.make({ ...options, ...configured, entity }, owner))
      )
    return Object.assign(Tag, { Default: layer, layerConfig, entity }) as unknown as ServiceClass<Self, Id, K, A>
  }

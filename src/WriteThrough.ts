/**
 * Write-through over a `Cache` and a `Store`: writes go to the store first and
 * then to the cache, and succeed only when both did; reads come from the cache
 * and, on a miss, from the store, filling the cache.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Random from "effect/Random"
import * as Request from "effect/Request"
import * as RequestResolver from "effect/RequestResolver"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as SchemaAST from "effect/SchemaAST"
import type * as Scope from "effect/Scope"
import { Cache, CacheError, Entry, FENCE_VERSION, type Ticket, type WriteOutcome } from "./Cache.js"
import * as CacheNamespace from "./internal/cacheNamespace.js"
import * as Deadline from "./internal/deadline.js"
import * as LabelledMetric from "./internal/labelledMetric.js"
import * as OperationSpan from "./internal/operationSpan.js"
import { findUnstorableString } from "./internal/storableValue.js"
import { currentPublications, type DeferredUpdate, type Publications } from "./internal/transactionContext.js"
import * as Metrics from "./Metrics.js"
import { Store, StoreError, type StoreOutcomeUnknownError, type Table } from "./Store.js"
import { InconsistentCacheError, StaleCacheError, ValidationError } from "./WriteThroughError.js"

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
export const defaultRetry: Schedule.Schedule<unknown, CacheError> = Schedule.exponential("20 millis").pipe(
  Schedule.jittered,
  Schedule.intersect(Schedule.recurs(3)),
  Schedule.upTo("2 seconds")
)

/**
 * Jittered exponential backoff from `base`, at most `times` retries, within `within`: the shape of
 * `defaultRetry`, with figures that can come from configuration.
 *
 * @since 0.2.0
 * @category constructors
 */
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

const positiveDuration = (name: string) =>
  Config.duration(name).pipe(
    Config.validate({
      message: "must be a duration above zero",
      validation: (d) => Duration.greaterThan(d, Duration.zero)
    })
  )

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

const entityPattern = /^[A-Za-z0-9_./-]+$/

/** The `operation` tag of metrics and spans. */
type Operation = "get" | "getMany" | "set" | "setMany" | "delete" | "transaction" | "audit"

// The encoded value's field names when it encodes to an object; the SQL store maps them onto columns.
const encodedFields = (schema: Schema.Schema.AnyNoContext): ReadonlyArray<string> | undefined => {
  const ast = Schema.encodedSchema(schema).ast
  if (!SchemaAST.isTypeLiteral(ast)) return undefined
  return SchemaAST.getPropertySignatures(ast).map((property) => String(property.name))
}

const describeKey = (key: unknown): string => {
  if (typeof key !== "string") return `<${typeof key}>`
  return key.length > 64 ? `${JSON.stringify(key.slice(0, 64))}... (${key.length} characters)` : JSON.stringify(key)
}

/**
 * Builds the operations of one entity. Fails with a `StoreError` when the store
 * does not fit the entity, for example a table without its version column.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <K, A, I>(
  options: Options<K, A, I> & { readonly entity: string }
): Effect.Effect<WriteThrough<K, A>, StoreError, Cache | Store | Scope.Scope> =>
  makeOwned(options, describeOwner(options))

const describeOwner = (options: { readonly entity: string; readonly table?: Table | undefined }, service?: string) =>
  [
    service === undefined ? undefined : `service ${JSON.stringify(service)}`,
    `entity ${JSON.stringify(options.entity)}`,
    options.table === undefined ? undefined : `(table ${qualifiedTableName(options.table)})`
  ]
    .filter((part) => part !== undefined)
    .join(" ")

const qualifiedTableName = (table: Table): string =>
  table.schema === undefined ? table.name : `${table.schema}.${table.name}`

const makeOwned = <K, A, I>(
  options: Options<K, A, I> & { readonly entity: string },
  owner: string
): Effect.Effect<WriteThrough<K, A>, StoreError, Cache | Store | Scope.Scope> =>
  Effect.gen(function* () {
    const entity = options.entity
    if (!entityPattern.test(entity)) {
      return yield* Effect.dieMessage(`WriteThrough: entity ${JSON.stringify(entity)} must match ${entityPattern}`)
    }
    const cache = yield* Cache
    const prefix = `${entity}:`
    yield* CacheNamespace.claim(cache, prefix, owner)
    const fields = encodedFields(options.value)
    const store = yield* Store
    const collection = yield* store.collection({ entity, fields, table: options.table })

    const ttl = Duration.decode(options.ttl ?? "1 hour")
    const ttlJitter = options.ttlJitter ?? 0.1
    const maxTtl = Duration.times(ttl, 1 + ttlJitter)
    const tombstoneTtl = Duration.decode(options.tombstoneTtl ?? "30 seconds")
    const cacheTimeout = Duration.decode(options.cacheTimeout ?? "1 second")
    const storeTimeout = Duration.decode(options.storeTimeout ?? "5 seconds")
    const maxKeyBytes = options.maxKeyBytes ?? 1024
    const maxBatchSize = options.maxBatchSize ?? 500
    const repairInterval = Duration.decode(options.repairInterval ?? "1 second")
    const lease =
      options.lease === false
        ? undefined
        : {
            ttl: Duration.decode(options.lease?.ttl ?? "2 seconds"),
            wait: Duration.toMillis(options.lease?.wait ?? "250 millis"),
            poll: Duration.decode(options.lease?.poll ?? "5 millis")
          }
    // Tagged once per operation, not per call.
    const metricsOf = (operation: Operation) => {
      const labels = [
        ["entity", entity],
        ["operation", operation]
      ] as const
      const tags = (metric: Metric.Metric.Counter<number>) => LabelledMetric.counter(metric, labels)
      const retries = tags(Metrics.cacheWriteRetries)
      const retrySchedule = (options.retry ?? defaultRetry).pipe(Schedule.tapInput(() => retries.increment))
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
            let replayed = false
            return Effect.retry(
              Effect.suspend(() => {
                if (replayed) return effect
                replayed = true
                return Effect.fail(first)
              }),
              retrySchedule
            )
          })
      }
    }
    const observed = <X, E, R>(
      operation: Operation,
      build: (outcome: (outcome: string) => void, fiber: Fiber.RuntimeFiber<unknown, unknown>) => Effect.Effect<X, E, R>
    ): Effect.Effect<X, E, R> =>
      OperationSpan.observe(`WriteThrough.${operation}`, spanAttributes[operation], metrics[operation].latency, build)
    const spanAttributes = {
      get: { entity, operation: "get" },
      getMany: { entity, operation: "getMany" },
      set: { entity, operation: "set" },
      setMany: { entity, operation: "setMany" },
      delete: { entity, operation: "delete" },
      transaction: { entity, operation: "transaction" },
      audit: { entity, operation: "audit" }
    }
    const metrics = {
      get: metricsOf("get"),
      getMany: metricsOf("getMany"),
      set: metricsOf("set"),
      setMany: metricsOf("setMany"),
      delete: metricsOf("delete"),
      transaction: metricsOf("transaction"),
      audit: metricsOf("audit")
    }

    // Compiled once: no schema work is repeated per call beyond running these.
    const encodeKey = ParseResult.encodeEither(options.key)
    const encodeValue = ParseResult.encodeEither(options.value)
    const decodeValue = ParseResult.decodeUnknownEither(options.value)
    const table = options.table
    const keyField =
      table === undefined || fields === undefined
        ? undefined
        : fields.find((field) => (table.columns?.[field] ?? field) === table.primaryKey)

    const invalid = (key: unknown, field: "key" | "value", detail: string, cause?: unknown) =>
      Either.left(new ValidationError({ entity, key: describeKey(key), field, detail, cause }))

    const checkKey = (key: K): Either.Either<string, ValidationError> => {
      const encoded = encodeKey(key)
      if (Either.isLeft(encoded)) return invalid(key, "key", "the key does not fit its schema", encoded.left)
      const text = encoded.right
      if (typeof text !== "string" || text.length === 0)
        return invalid(key, "key", "the key must encode to a non-empty string")
      if (!text.isWellFormed()) return invalid(text, "key", "the key holds an unpaired surrogate")
      if (text.includes("\u0000")) return invalid(text, "key", "the key holds a NUL character")
      const bytes = Buffer.byteLength(text, "utf8")
      if (bytes > maxKeyBytes)
        return invalid(text, "key", `the key is ${bytes} bytes long, over the limit of ${maxKeyBytes}`)
      return Either.right(text)
    }

    const checkValue = (key: string, value: A): Either.Either<{ encoded: I; payload: string }, ValidationError> => {
      const encoded = encodeValue(value)
      if (Either.isLeft(encoded)) {
        return invalid(key, "value", ParseResult.TreeFormatter.formatIssueSync(encoded.left), encoded.left)
      }
      if (keyField !== undefined) {
        const inValue = (encoded.right as Record<string, unknown>)[keyField]
        if (String(inValue) !== key) {
          return invalid(
            key,
            "value",
            `field ${keyField} is ${JSON.stringify(inValue)}, but the key is ${JSON.stringify(key)}`
          )
        }
      }
      const unstorable = findUnstorableString(encoded.right)
      if (unstorable !== undefined) {
        return invalid(key, "value", `${unstorable}, which the store cannot hold as given`)
      }
      try {
        return Either.right({ encoded: encoded.right, payload: JSON.stringify(encoded.right) })
      } catch (cause) {
        return invalid(key, "value", "the encoded value cannot be written as JSON", cause)
      }
    }

    // A timeout costs a fiber per call: only for a cache that does not bound its calls itself.
    // Counted by the cache call that failed: built once per call name.
    const cacheErrors = new Map<string, ReturnType<typeof LabelledMetric.counter>>()
    const countCacheError = (operation: string) => {
      let counter = cacheErrors.get(operation)
      if (counter === undefined) {
        counter = LabelledMetric.counter(Metrics.cacheErrors, [
          ["entity", entity],
          ["operation", operation]
        ])
        cacheErrors.set(operation, counter)
      }
      return counter.increment
    }
    const boundCache = cache.selfBounded
      ? <X>(operation: string, _key: string, effect: Effect.Effect<X, CacheError>) =>
          Effect.tapError(effect, () => countCacheError(operation))
      : <X>(operation: string, key: string, effect: Effect.Effect<X, CacheError>) =>
          Effect.tapError(
            Deadline.timeoutFail(effect, cacheTimeout, () => new CacheError({ operation, key, reason: "Timeout" })),
            () => countCacheError(operation)
          )

    const ttlWithJitter = Effect.map(Random.next, (r) => Duration.times(ttl, 1 + r * ttlJitter))

    // Taken before the store is read or written, and carried by the cache write that publishes the
    // result: the cache refuses it if it lost its memory since, or if it lands after any tombstone
    // written meanwhile could have expired.
    const takeTicket: Effect.Effect<Ticket> = cache.ticket(tombstoneTtl)

    const invalidate = (operation: "set" | "setMany" | "delete" | "transaction", key: string, version: number) =>
      metrics[operation].retry(boundCache("invalidate", key, cache.invalidate(prefix + key, version, tombstoneTtl)))

    // Keys the cache may still serve stale because neither the update nor the invalidation got
    // through: a tombstone is retried in the background until it lands or until whatever the cache
    // held has expired anyway. This narrows the staleness a StaleCacheError reports; it cannot
    // survive this process, so the TTL stays the bound.
    const repairs = new Map<string, { readonly version: number; readonly until: number }>()
    const scheduleRepair = (key: string, version: number, now: number) =>
      Effect.sync(() => {
        const pending = repairs.get(key)
        repairs.set(key, {
          version: Math.max(version, pending?.version ?? 0),
          until: now + Duration.toMillis(maxTtl)
        })
      })
    yield* Effect.forkScoped(
      Effect.repeat(
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          Effect.forEach(
            [...repairs],
            ([key, pending]) =>
              now > pending.until
                ? Effect.sync(() => repairs.delete(key))
                : boundCache("invalidate", key, cache.invalidate(prefix + key, pending.version, tombstoneTtl)).pipe(
                    Effect.zipRight(
                      Effect.sync(() => {
                        if (repairs.get(key) === pending) repairs.delete(key)
                      })
                    ),
                    Effect.ignore
                  ),
            { concurrency: 8, discard: true }
          )
        ),
        Schedule.spaced(repairInterval)
      )
    )

    // The write is committed at `version`: make the cache hold it, or fence the old value off with a
    // tombstone, or say that it may be stale.
    const publish = (
      operation: "set" | "delete",
      key: string,
      version: number,
      update: Effect.Effect<WriteOutcome, CacheError>
    ): Effect.Effect<void, StaleCacheError> =>
      boundCache(operation, key, update).pipe(
        (effect) => metrics[operation].retry(effect),
        Effect.either,
        Effect.flatMap((updated) => {
          if (Either.isRight(updated) && updated.right !== "outdated") return Effect.void
          // Failed, or refused because the guard cannot vouch for it: a tombstone is always safe.
          const updateError = Either.isLeft(updated) ? updated.left : undefined
          return invalidate(operation, key, version).pipe(
            Effect.matchEffect({
              onSuccess: () =>
                Effect.zipRight(
                  metrics[operation].fallbacks.increment,
                  updateError === undefined
                    ? Effect.void
                    : Effect.logWarning("cache update failed; invalidated the key instead").pipe(
                        Effect.annotateLogs({ entity, operation, version })
                      )
                ),
              onFailure: (invalidateError) =>
                Effect.flatMap(Clock.currentTimeMillis, (now) =>
                  Effect.zipRight(
                    Effect.all([
                      metrics[operation].stale.increment,
                      scheduleRepair(key, version, now),
                      Effect.logError(
                        "cache update and invalidation failed after a commit; the cache may be stale"
                      ).pipe(Effect.annotateLogs({ entity, operation, version, maxStaleness: Duration.format(maxTtl) }))
                    ]),
                    Effect.fail(
                      new StaleCacheError({
                        entity,
                        key,
                        operation,
                        version,
                        maxStaleness: maxTtl,
                        staleUntil: now + Duration.toMillis(maxTtl),
                        cause: updateError === undefined ? [invalidateError] : [updateError, invalidateError]
                      })
                    )
                  )
                )
            })
          )
        })
      )

    // The store may or may not have committed: fence the key so no reader trusts the cache for it.
    // True when the fence landed; otherwise it is retried in the background.
    const fenceKey = (operation: "set" | "setMany" | "delete" | "transaction", key: string): Effect.Effect<boolean> =>
      invalidate(operation, key, FENCE_VERSION).pipe(
        Effect.as(true),
        Effect.catchAll(() =>
          Effect.as(
            Effect.flatMap(Clock.currentTimeMillis, (now) => scheduleRepair(key, FENCE_VERSION, now)),
            false
          )
        )
      )

    const fence = (
      operation: "set" | "delete",
      key: string,
      cause: unknown
    ): Effect.Effect<never, InconsistentCacheError> =>
      fenceKey(operation, key).pipe(
        Effect.tap((invalidated) =>
          Effect.zipRight(
            metrics[operation].inconsistent.increment,
            Effect.logError("the store's outcome is unknown; the key was fenced in the cache").pipe(
              Effect.annotateLogs({ entity, operation, invalidated })
            )
          )
        ),
        Effect.flatMap((invalidated) =>
          Effect.fail(new InconsistentCacheError({ entity, key, operation, invalidated, cause }))
        )
      )

    // Cache work that must finish whatever happens to the caller runs uninterruptibly. A cache that
    // bounds its own calls needs nothing more; otherwise the work runs in a fiber of its own,
    // interruptible so that the timeouts work, and the caller waits for it uninterruptibly.
    const detached: <X, E>(effect: Effect.Effect<X, E>) => Effect.Effect<X, E> = cache.selfBounded
      ? (effect) => effect
      : (effect) => Effect.flatMap(Effect.forkDaemon(Effect.interruptible(effect)), Fiber.join)

    // Writes the store, then publishes the committed version to the cache. Once the store call has
    // begun, the outcome is unknown until it answers: a timeout, a lost connection or a defect (such
    // as a failing COMMIT) fences the key, and so does an interruption of the caller; once the store
    // answered, publishing runs to its end, within its own bounds.
    const writeThrough = <V>(
      operation: "set" | "delete" | "setMany",
      keys: ReadonlyArray<string>,
      write: Effect.Effect<V, StoreError | StoreOutcomeUnknownError>,
      fenceAll: (cause: unknown) => Effect.Effect<never, InconsistentCacheError>,
      publishWritten: (written: V) => Effect.Effect<void, StaleCacheError>
    ): Effect.Effect<void, WriteError> =>
      Effect.uninterruptibleMask((restore) =>
        restore(
          Deadline.timeoutFail(
            write,
            storeTimeout,
            () => new Cause.TimeoutException(`no answer from the store within ${Duration.format(storeTimeout)}`)
          )
        ).pipe(
          Effect.onInterrupt(() =>
            Effect.zipRight(
              metrics[operation].inconsistent.incrementBy(keys.length),
              detached(Effect.ignore(Effect.forEach(keys, (key) => invalidate(operation, key, FENCE_VERSION))))
            )
          ),
          Effect.catchTags({
            TimeoutException: (timeout) => detached(fenceAll(timeout)),
            StoreOutcomeUnknownError: (unknown) => detached(fenceAll(unknown))
          }),
          Effect.catchAllDefect((defect) => detached(fenceAll(defect))),
          Effect.flatMap((written) => detached(publishWritten(written)))
        )
      )

    // Inside WriteThrough.transaction: the store write joins the transaction, and its cache update
    // waits for the COMMIT. A write that fails here leaves the transaction unable to commit, so its
    // outcome is known (nothing of it will commit) and no fence is needed.
    const writeInTransaction = <V>(
      publications: Publications,
      operation: "set" | "delete" | "setMany",
      key: string,
      write: Effect.Effect<V, StoreError | StoreOutcomeUnknownError>,
      defer: (
        written: V
      ) => ReadonlyArray<{ readonly key: string; readonly publish: Effect.Effect<void, StaleCacheError> }>
    ): Effect.Effect<void, StoreError> =>
      Deadline.timeoutFail(
        write,
        storeTimeout,
        () =>
          new StoreError({
            entity,
            key,
            operation,
            reason: "Timeout",
            detail: `no answer within ${Duration.format(storeTimeout)}; the transaction will not commit`
          })
      ).pipe(
        Effect.catchTag("StoreOutcomeUnknownError", (lost) =>
          Effect.fail(
            new StoreError({
              entity,
              key,
              operation,
              reason: "Unavailable",
              detail: "the transaction lost its connection and will not commit",
              cause: lost
            })
          )
        ),
        Effect.tapError(() =>
          Effect.sync(() => {
            publications.failed = true
          })
        ),
        Effect.map((written) => {
          for (const { key, publish } of defer(written)) {
            const id = prefix + key
            // A later write of the same key in the transaction has the higher version: it alone is published.
            publications.updates.delete(id)
            publications.updates.set(id, {
              id,
              entity,
              key,
              // Run after the COMMIT in the combinator's uninterruptible region: detached, so that the
              // cache call's bound can still interrupt it.
              publish: detached(publish),
              fence: Effect.tap(detached(fenceKey("transaction", key)), (invalidated) =>
                Effect.zipRight(
                  metrics.transaction.inconsistent.increment,
                  Effect.logError("a transaction's outcome is unknown; the key was fenced in the cache").pipe(
                    Effect.annotateLogs({ entity, operation: "transaction", invalidated })
                  )
                )
              )
            })
          }
        })
      )

    const writeOrDefer = (
      operation: "set" | "delete",
      key: string,
      write: Effect.Effect<number, StoreError | StoreOutcomeUnknownError>,
      publishVersion: (version: number) => Effect.Effect<void, StaleCacheError>
    ): Effect.Effect<void, WriteError> =>
      Effect.flatMap(FiberRef.get(currentPublications), (publications) =>
        publications === undefined
          ? writeThrough(operation, [key], write, (cause) => fence(operation, key, cause), publishVersion)
          : writeInTransaction(publications, operation, key, write, (version) => [
              { key, publish: publishVersion(version) }
            ])
      )

    const storeReadTimeout = (key: string) =>
      new StoreError({
        entity,
        key,
        operation: "get",
        reason: "Timeout",
        detail: `no answer within ${Duration.format(storeTimeout)}`
      })

    const decodeRow = (key: string, encoded: unknown): Either.Either<A, StoreError> =>
      Either.mapLeft(
        decodeValue(encoded),
        (issue) =>
          new StoreError({
            entity,
            key,
            operation: "get",
            reason: "Decode",
            detail: ParseResult.TreeFormatter.formatIssueSync(issue),
            cause: issue
          })
      )

    interface Loaded {
      readonly version: number
      readonly value: A
      /** Found in the cache, filled by the lease's holder: nothing to fill. */
      readonly cached?: boolean
    }

    const storeRead = (key: string): Effect.Effect<Option.Option<Loaded>, StoreError> =>
      Deadline.timeoutFail(collection.get(key), storeTimeout, () => storeReadTimeout(key)).pipe(
        Effect.flatMap((row) => {
          if (Option.isNone(row)) return Effect.succeedNone
          const decoded = decodeRow(key, row.value.value)
          return Either.isRight(decoded)
            ? Effect.succeed(Option.some({ version: row.value.version, value: decoded.right }))
            : Effect.fail(decoded.left)
        })
      )

    // Single flight: concurrent misses of one key share one store read, but a reader joins only a
    // read sent after it was invoked. One sent earlier may predate a write (from this process or
    // any other) that was acknowledged before the reader began, and would hand it an older value.
    // Times are logical: a counter, advanced as readers begin and as loads start.
    let logicalTime = 0
    const loads = new Map<
      string,
      { readonly sentAt: number; readonly result: Deferred.Deferred<Option.Option<Loaded>, StoreError> }
    >()

    // The lease's holder reads the store; the others wait for its fill, within bounds. Whatever
    // shows up in the cache after a write was acknowledged is at least as new as that write (the
    // guard saw to it), so a waiter may take it.
    const leasedRead = (key: string): Effect.Effect<Option.Option<Loaded>, StoreError> =>
      lease === undefined
        ? storeRead(key)
        : boundCache("lease", key, cache.lease(prefix + key, lease.ttl)).pipe(
            Effect.orElseSucceed(() => true),
            Effect.flatMap((granted) => (granted ? storeRead(key) : awaitFill(key, lease)))
          )

    const awaitFill = (
      key: string,
      { poll, wait }: { readonly poll: Duration.Duration; readonly wait: number }
    ): Effect.Effect<Option.Option<Loaded>, StoreError> =>
      Effect.gen(function* () {
        yield* metrics.get.leaseWaits.increment
        const giveUpAt = (yield* Clock.currentTimeMillis) + wait
        while ((yield* Clock.currentTimeMillis) < giveUpAt) {
          yield* Effect.sleep(poll)
          const cached = yield* Effect.either(boundCache("get", key, cache.get(prefix + key)))
          if (Either.isLeft(cached) || Option.isNone(cached.right)) continue
          const entry = cached.right.value
          if (entry._tag === "Tombstone") break
          const decoded = decodeEntry(entry)
          if (Either.isLeft(decoded)) break
          return Option.some({ version: entry.version, value: decoded.right, cached: true })
        }
        return yield* storeRead(key)
      })

    const sharedRead = (key: string, invokedAt: number): Effect.Effect<Option.Option<Loaded>, StoreError> =>
      Effect.suspend(() => {
        const current = loads.get(key)
        if (current !== undefined && current.sentAt > invokedAt) {
          // A load whose reader was interrupted tells the others nothing: they read for themselves.
          return Effect.catchAllCause(Deferred.await(current.result), (cause) =>
            Cause.isInterruptedOnly(cause) ? storeRead(key) : Effect.failCause(cause)
          )
        }
        const load = {
          sentAt: ++logicalTime,
          result: Deferred.unsafeMake<Option.Option<Loaded>, StoreError>(FiberId.none)
        }
        loads.set(key, load)
        return Effect.onExit(leasedRead(key), (exit) => {
          if (loads.get(key) === load) loads.delete(key)
          return Deferred.done(load.result, exit)
        })
      })

    // Reads the store and, unless the cache just failed, fills it under a ticket taken before the
    // read; `replacing` is an entry that failed to decode.
    const readThrough = (
      key: string,
      invokedAt: number,
      fill: boolean,
      replacing?: Entry
    ): Effect.Effect<Option.Option<A>, StoreError> =>
      Effect.flatMap(store.inTransaction, (inside) =>
        inside
          ? // The transaction's view: not for the cache, nor for readers outside it.
            Effect.map(
              storeRead(key),
              Option.map((loaded) => loaded.value)
            )
          : readThroughCommitted(key, invokedAt, fill, replacing)
      )

    const readThroughCommitted = (
      key: string,
      invokedAt: number,
      fill: boolean,
      replacing?: Entry
    ): Effect.Effect<Option.Option<A>, StoreError> =>
      Effect.flatMap(takeTicket, (ticket) =>
        Effect.flatMap(sharedRead(key, invokedAt), (loaded) => {
          if (Option.isNone(loaded)) return Effect.succeedNone
          const value = Option.some(loaded.value.value)
          if (!fill || loaded.value.cached === true) return Effect.succeed(value)
          const encoded = encodeValue(loaded.value.value)
          if (Either.isLeft(encoded)) return Effect.succeed(value)
          const entry = Entry.Value({ version: loaded.value.version, payload: JSON.stringify(encoded.right) })
          return ttlWithJitter.pipe(
            Effect.flatMap((entryTtl) =>
              boundCache("set", key, cache.set(prefix + key, entry, { ttl: entryTtl, replacing, ticket }))
            ),
            Effect.flatMap((outcome) => (outcome === "written" ? metrics.get.fills.increment : Effect.void)),
            Effect.catchAll(() => metrics.get.fillFailures.increment),
            Effect.as(value)
          )
        })
      )

    // An in-process tier hands back the same entry object on every hit: decode it once. Values
    // are shared between readers from then on, as with any in-process cache.
    const decodedEntries = new WeakMap<Entry, A>()
    const reusesEntries = cache.reusesEntries
    const decodeEntry = (entry: Entry & { readonly payload: string }): Either.Either<A, unknown> => {
      if (reusesEntries && decodedEntries.has(entry)) return Either.right(decodedEntries.get(entry)!)
      let json: unknown
      try {
        json = JSON.parse(entry.payload)
      } catch (error) {
        return Either.left(error)
      }
      const decoded = decodeValue(json)
      if (reusesEntries && Either.isRight(decoded)) decodedEntries.set(entry, decoded.right)
      return decoded
    }

    const fillMany = (
      ticket: Ticket,
      loaded: ReadonlyArray<{
        readonly key: string
        readonly version: number
        readonly value: A
        readonly replacing?: Entry
      }>
    ) =>
      Effect.flatMap(ttlWithJitter, (entryTtl) => {
        const items = loaded.flatMap(({ key, replacing, value, version }) => {
          const encoded = encodeValue(value)
          return Either.isLeft(encoded)
            ? []
            : [
                {
                  key: prefix + key,
                  entry: Entry.Value({ version, payload: JSON.stringify(encoded.right) }),
                  options: { ttl: entryTtl, ticket, replacing }
                }
              ]
        })
        return items.length === 0
          ? Effect.void
          : boundCache("setMany", loaded[0]!.key, cache.setMany(items)).pipe(
              Effect.flatMap((outcomes) =>
                metrics.getMany.fills.incrementBy(outcomes.filter((outcome) => outcome === "written").length)
              ),
              Effect.catchAll(() => metrics.getMany.fillFailures.incrementBy(items.length)),
              Effect.asVoid
            )
      })

    const getMany = (keys: Iterable<K>): Effect.Effect<ReadonlyArray<Option.Option<A>>, ReadError> =>
      observed("getMany", (outcome) =>
        Effect.gen(function* () {
          const texts: Array<string> = []
          for (const key of keys) texts.push(yield* checkKey(key))
          const unique = [...new Set(texts)]
          if (unique.length === 0) return []
          const ticket = yield* takeTicket
          const found = new Map<string, A>()
          const cached = yield* Effect.either(
            boundCache("getMany", unique[0]!, cache.getMany(unique.map((key) => prefix + key)))
          )
          const misses: Array<{ readonly key: string; readonly replacing?: Entry }> = []
          if (Either.isLeft(cached)) {
            outcome("degraded")
            yield* metrics.getMany.degraded.incrementBy(unique.length)
            for (const key of unique) misses.push({ key })
          } else {
            unique.forEach((key, i) => {
              const entry = cached.right[i]!
              if (Option.isSome(entry) && entry.value._tag === "Value") {
                const decoded = decodeEntry(entry.value)
                if (Either.isRight(decoded)) return void found.set(key, decoded.right)
                misses.push({ key, replacing: entry.value })
              } else {
                misses.push({ key })
              }
            })
            // "hit" only when every key was served by the cache.
            outcome(misses.length === 0 ? "hit" : "miss")
            yield* metrics.getMany.hits.incrementBy(found.size)
            yield* metrics.getMany.misses.incrementBy(misses.length)
          }
          if (misses.length > 0) {
            const rows = yield* Deadline.timeoutFail(
              collection.getMany(misses.map(({ key }) => key)),
              storeTimeout,
              () => storeReadTimeout(misses[0]!.key)
            )
            const loaded: Array<{ key: string; version: number; value: A; replacing?: Entry }> = []
            for (const { key, replacing } of misses) {
              const row = rows.get(key)
              if (row === undefined) continue
              const decoded = decodeRow(key, row.value)
              if (Either.isLeft(decoded)) return yield* decoded.left
              found.set(key, decoded.right)
              loaded.push({
                key,
                version: row.version,
                value: decoded.right,
                ...(replacing === undefined ? {} : { replacing })
              })
            }
            // A read inside a database transaction may see rows that are not committed: not for the cache.
            if (Either.isRight(cached) && !(yield* store.inTransaction)) yield* fillMany(ticket, loaded)
          }
          return texts.map((key) => Option.fromNullable(found.get(key)))
        })
      )

    interface GetRequest extends Request.Request<Option.Option<A>, ReadError> {
      readonly key: K
    }
    const GetRequest = Request.of<GetRequest>()
    const resolver = RequestResolver.makeBatched((requests: ReadonlyArray<GetRequest>) =>
      getMany(requests.map((request) => request.key)).pipe(
        Effect.flatMap((results) =>
          Effect.forEach(requests, (request, i) => Request.succeed(request, results[i]!), { discard: true })
        ),
        // One bad key fails its own request only: the others are looked up without it.
        Effect.catchAll(() =>
          Effect.forEach(requests, (request) => Request.completeEffect(request, get(request.key)), {
            concurrency: "unbounded",
            discard: true
          })
        )
      )
    )

    // Inside WriteThrough.transaction a read never fills the cache (the store may answer with the
    // transaction's own uncommitted rows), and a key the transaction wrote is read from the store.
    const getInTransaction = (publications: Publications, key: string): Effect.Effect<Option.Option<A>, ReadError> =>
      publications.updates.has(prefix + key)
        ? Effect.map(
            storeRead(key),
            Option.map((loaded) => loaded.value)
          )
        : Effect.flatMap(Effect.either(boundCache("get", key, cache.get(prefix + key))), (cached) => {
            if (Either.isRight(cached) && Option.isSome(cached.right) && cached.right.value._tag === "Value") {
              const decoded = decodeEntry(cached.right.value)
              if (Either.isRight(decoded)) return Effect.succeedSome(decoded.right)
            }
            return Effect.map(
              storeRead(key),
              Option.map((loaded) => loaded.value)
            )
          })

    const get = (key: K): Effect.Effect<Option.Option<A>, ReadError> =>
      observed("get", (outcome, fiber) => {
        const publications = fiber.getFiberRef(currentPublications)
        return Effect.flatMap(checkKey(key), (text) =>
          publications === undefined ? getOutsideTransaction(text, outcome) : getInTransaction(publications, text)
        )
      })

    const getOutsideTransaction = (
      text: string,
      outcome: (outcome: "hit" | "miss" | "degraded") => void
    ): Effect.Effect<Option.Option<A>, ReadError> => {
      const invokedAt = ++logicalTime
      return Effect.flatMap(Effect.either(boundCache("get", text, cache.get(prefix + text))), (cached) => {
        if (Either.isLeft(cached)) {
          outcome("degraded")
          return Effect.zipRight(metrics.get.degraded.increment, readThrough(text, invokedAt, false))
        }
        const entry = cached.right
        if (Option.isSome(entry) && entry.value._tag === "Value") {
          const decoded = decodeEntry(entry.value)
          if (Either.isRight(decoded)) {
            outcome("hit")
            return Effect.as(metrics.get.hits.increment, Option.some(decoded.right))
          }
          outcome("miss")
          return Effect.zipRight(metrics.get.corrupt.increment, readThrough(text, invokedAt, true, entry.value))
        }
        outcome("miss")
        return Effect.zipRight(metrics.get.misses.increment, readThrough(text, invokedAt, true))
      })
    }

    const set = (key: K, value: A): Effect.Effect<void, WriteError> =>
      observed("set", () =>
        Effect.flatMap(checkKey(key), (text) =>
          Effect.flatMap(checkValue(text, value), ({ encoded, payload }) =>
            Effect.flatMap(takeTicket, (ticket) =>
              writeOrDefer("set", text, collection.put(text, encoded), (version) =>
                publish(
                  "set",
                  text,
                  version,
                  Effect.flatMap(ttlWithJitter, (entryTtl) =>
                    cache.set(prefix + text, Entry.Value({ version, payload }), { ttl: entryTtl, ticket })
                  )
                )
              )
            )
          )
        )
      )

    // Many keys: one store statement (all or nothing), one pipelined cache write; a key whose cache
    // write failed or was refused for its ticket then goes the way of a single set (retries, then
    // invalidation, then StaleCacheError). An unknown store outcome fences every key.
    const setMany = (entries: Iterable<readonly [K, A]>): Effect.Effect<void, WriteError> =>
      observed("setMany", () =>
        Effect.gen(function* () {
          const items = new Map<string, { readonly encoded: unknown; readonly payload: string }>()
          for (const [key, value] of entries) {
            const text = yield* checkKey(key)
            const checked = yield* checkValue(text, value)
            // The last value of a key wins, as with sets one after the other.
            items.delete(text)
            items.set(text, checked)
          }
          if (items.size === 0) return
          const keys = [...items.keys()]
          if (keys.length > maxBatchSize) {
            return yield* new ValidationError({
              entity,
              key: describeKey(keys[0]),
              field: "key",
              detail: `a setMany of ${keys.length} keys is over the limit of ${maxBatchSize} (maxBatchSize); split it`
            })
          }
          const ticket = yield* takeTicket
          const publishOne = (key: string, version: number) =>
            publish(
              "set",
              key,
              version,
              Effect.flatMap(ttlWithJitter, (entryTtl) =>
                cache.set(prefix + key, Entry.Value({ version, payload: items.get(key)!.payload }), {
                  ttl: entryTtl,
                  ticket
                })
              )
            )
          const write = collection.putMany(keys.map((key) => [key, items.get(key)!.encoded] as const))
          const publications = yield* FiberRef.get(currentPublications)
          if (publications !== undefined) {
            return yield* writeInTransaction(publications, "setMany", keys[0]!, write, (versions) =>
              keys.map((key) => ({ key, publish: publishOne(key, versions.get(key)!) }))
            )
          }
          const publishAll = (versions: ReadonlyMap<string, number>): Effect.Effect<void, StaleCacheError> =>
            Effect.gen(function* () {
              const ttls = yield* Effect.forEach(keys, () => ttlWithJitter)
              const outcomes = yield* Effect.either(
                boundCache(
                  "setMany",
                  keys[0]!,
                  cache.setMany(
                    keys.map((key, i) => ({
                      key: prefix + key,
                      entry: Entry.Value({ version: versions.get(key)!, payload: items.get(key)!.payload }),
                      options: { ttl: ttls[i]!, ticket }
                    }))
                  )
                )
              )
              const again = Either.isLeft(outcomes) ? keys : keys.filter((_, i) => outcomes.right[i] === "outdated")
              const published = yield* Effect.forEach(
                again,
                (key) => Effect.either(publishOne(key, versions.get(key)!)),
                { concurrency: 16 }
              )
              const failed = published.find(Either.isLeft)
              if (failed !== undefined) return yield* failed.left
            })
          const fenceAll = (cause: unknown) =>
            Effect.flatMap(
              Effect.forEach(keys, (key) => fenceKey("setMany", key), { concurrency: 16 }),
              (fenced) => {
                const invalidated = fenced.every((landed) => landed)
                return Effect.zipRight(
                  Effect.zipRight(
                    metrics.setMany.inconsistent.incrementBy(keys.length),
                    Effect.logError("the store's outcome is unknown; the keys were fenced in the cache").pipe(
                      Effect.annotateLogs({ entity, operation: "setMany", invalidated })
                    )
                  ),
                  Effect.fail(
                    new InconsistentCacheError({
                      entity,
                      key: keys[0]!,
                      operation: "setMany",
                      invalidated,
                      keys: keys.map((key) => ({ entity, key })),
                      cause
                    })
                  )
                )
              }
            )
          return yield* writeThrough("setMany", keys, write, fenceAll, publishAll)
        })
      )

    const remove = (key: K): Effect.Effect<void, WriteError> =>
      observed("delete", () =>
        Effect.flatMap(checkKey(key), (text) =>
          writeOrDefer("delete", text, collection.delete(text), (version) =>
            publish("delete", text, version, cache.invalidate(prefix + text, version, tombstoneTtl))
          )
        )
      )

    const audit = (auditOptions?: { readonly repair?: boolean | undefined }) =>
      observed("audit", () =>
        Effect.gen(function* () {
          let cursor = "0"
          const seen = new Set<string>()
          const counts = { values: 0, consistent: 0, stale: 0, ahead: 0, repaired: 0 }
          do {
            const [next, page] = yield* boundCache("scan", entity, cache.scan(prefix, cursor))
            cursor = next
            const keys = page.filter((key) => !seen.has(key))
            for (const key of keys) seen.add(key)
            if (keys.length === 0) continue
            const entries = yield* boundCache("getMany", keys[0]!, cache.getMany(keys))
            const texts = keys.map((key) => key.slice(prefix.length))
            const rows = yield* collection.getMany(texts)
            for (let i = 0; i < keys.length; i++) {
              const entry = entries[i]!
              if (Option.isNone(entry) || entry.value._tag === "Tombstone") continue
              counts.values++
              const row = rows.get(texts[i]!)
              const cached = entry.value.version
              if (row !== undefined && row.version === cached) {
                counts.consistent++
                continue
              }
              if (row !== undefined && cached > row.version) counts.ahead++
              else counts.stale++
              if (auditOptions?.repair === true) {
                // A tombstone at the higher of the two versions replaces the entry whichever way it is off.
                const outcome = yield* boundCache(
                  "invalidate",
                  texts[i]!,
                  cache.invalidate(keys[i]!, Math.max(cached, row?.version ?? 0), tombstoneTtl)
                )
                if (outcome === "written") counts.repaired++
              }
            }
          } while (cursor !== "0")
          const inconsistent = counts.stale + counts.ahead
          return {
            entity,
            scanned: seen.size,
            ...counts,
            nines: inconsistent === 0 ? Infinity : -Math.log10(inconsistent / counts.values)
          } satisfies AuditReport
        })
      )

    return {
      entity,
      audit,
      get,
      // Inside a transaction, reads go one by one: they must not fill the cache, and batching gains little there.
      getMany: (keys: Iterable<K>) =>
        Effect.flatMap(FiberRef.get(currentPublications), (publications) =>
          publications === undefined ? getMany(keys) : Effect.forEach(keys, get)
        ),
      getBatched: (key: K) =>
        Effect.flatMap(FiberRef.get(currentPublications), (publications) =>
          publications === undefined ? Effect.request(GetRequest({ key }), resolver) : get(key)
        ),
      set,
      setMany,
      delete: remove
    }
  })

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
export const transaction = <A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E | StoreError | StaleCacheError | InconsistentCacheError, R | Store> =>
  Effect.flatMap(FiberRef.get(currentPublications), (outer) =>
    outer !== undefined
      ? effect
      : OperationSpan.observe("WriteThrough.transaction", transactionAttributes, transactionLatency, () =>
          Effect.flatMap(Store, (store) =>
            Effect.uninterruptibleMask((restore) => {
              const publications: Publications = { updates: new Map(), failed: false }
              let succeeded = false
              const body = Effect.locally(
                Effect.tap(effect, () => {
                  if (publications.failed) return Effect.fail(abortedByFailedWrite())
                  succeeded = true
                  return Effect.void
                }),
                currentPublications,
                publications
              )
              return Effect.flatMap(
                Effect.exit(restore(store.transaction(body))),
                (exit): Effect.Effect<A, E | StoreError | StaleCacheError | InconsistentCacheError, R> => {
                  const updates = [...publications.updates.values()]
                  if (Exit.isSuccess(exit)) return Effect.as(publishAll(updates), exit.value)
                  // Failed before COMMIT, or the store says it did not commit (a typed failure): rolled
                  // back, nothing to publish. Only a defect or an interruption after the body leaves the
                  // COMMIT's outcome unknown.
                  if (!succeeded || updates.length === 0 || Option.isSome(Cause.failureOption(exit.cause))) return exit
                  return fenceAll(updates, Cause.squash(exit.cause))
                }
              )
            })
          )
        )
  )

// Failing the body makes the store roll back, whatever it would have done with the failed write.
const abortedByFailedWrite = () =>
  new StoreError({
    entity: "*",
    key: "",
    operation: "transaction",
    reason: "Transaction",
    detail: "a write inside the transaction failed, so it cannot commit: it was rolled back and nothing was published"
  })

const transactionAttributes = { operation: "transaction" }
const transactionLatency = LabelledMetric.make(Metrics.latency as Metric.Metric<unknown, number, unknown>, [
  ["operation", "transaction"]
])

const publishAll = (updates: ReadonlyArray<DeferredUpdate>): Effect.Effect<void, StaleCacheError> =>
  Effect.flatMap(
    Effect.forEach(updates, (update) => Effect.either(update.publish), { concurrency: 16 }),
    (results) => {
      const failed = results.find(Either.isLeft)
      return failed === undefined ? Effect.void : Effect.fail(failed.left)
    }
  )

const fenceAll = (
  updates: ReadonlyArray<DeferredUpdate>,
  cause: unknown
): Effect.Effect<never, InconsistentCacheError> =>
  Effect.flatMap(
    Effect.forEach(updates, (update) => update.fence, { concurrency: 16 }),
    (fenced) =>
      Effect.fail(
        new InconsistentCacheError({
          entity: updates[0]!.entity,
          key: updates[0]!.key,
          operation: "transaction",
          invalidated: fenced.every((landed) => landed),
          keys: updates.map(({ entity, key }) => ({ entity, key })),
          cause
        })
      )
  )

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
    const entity = options.entity ?? (options.table === undefined ? id : qualifiedTableName(options.table))
    const owner = describeOwner({ entity, table: options.table }, id)
    const Tag = Context.Tag(id)<Self, WriteThrough<K, A>>()
    const layer = Layer.scoped(Tag, makeOwned({ ...options, entity }, owner))
    const layerConfig = (config: Config.Config<Settings> = settings) =>
      Layer.scoped(
        Tag,
        Effect.flatMap(config, (configured) => makeOwned({ ...options, ...configured, entity }, owner))
      )
    return Object.assign(Tag, { Default: layer, layerConfig, entity }) as unknown as ServiceClass<Self, Id, K, A>
  }

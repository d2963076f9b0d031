/**
 * The cache tier: a versioned key/entry store with guarded writes.
 *
 * Every entry carries the version the store assigned to the value it holds, and
 * every write replaces only an older version. That is what keeps a slow miss fill
 * or a late writer from overwriting a newer value (docs/consistency.md states the guarantee).
 *
 * @since 0.1.0
 */
import { TypeIdError } from "./internal/typeIdError.js"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { isWriteThroughError, WriteThroughErrorTypeId } from "./WriteThroughError.js"

/**
 * A cache entry: the encoded value committed at `version`, or a tombstone that
 * fences off every value up to and including `version`.
 *
 * @since 0.1.0
 * @category models
 */
export type Entry = Data.TaggedEnum<{
  Value: { readonly version: number; readonly payload: string }
  Tombstone: { readonly version: number }
}>

/**
 * @since 0.1.0
 * @category constructors
 */
export const Entry = Data.taggedEnum<Entry>()

/**
 * The version of a tombstone that fences a key whatever version the store holds.
 * Used when a commit's outcome is unknown and so is the version it may have written.
 *
 * @since 0.1.0
 * @category constants
 */
export const FENCE_VERSION = Number.MAX_SAFE_INTEGER

/**
 * What a guarded write did: `written`; `rejected` because the cache already
 * holds the same or a newer version (not a failure); or `outdated` because its
 * ticket expired or the cache lost its memory since the ticket was taken, so the
 * version guard cannot vouch for it (a writer then invalidates instead).
 *
 * @since 0.1.0
 * @category models
 */
export type WriteOutcome = "written" | "rejected" | "outdated"

/**
 * Taken before the store is read or written, carried by the cache write that
 * publishes the result.
 *
 * `epoch` names the cache's memory: it changes when the cache loses its contents
 * (a Redis restart), which also erases the versions the guard compares against.
 * `notAfter` (epoch milliseconds) bounds how late the write may land: a write
 * delayed past it could find a newer tombstone already expired.
 *
 * @since 0.1.0
 * @category models
 */
export interface Ticket {
  readonly epoch: string
  readonly notAfter: number
}

/**
 * What `getOrLease` found: the entry, and whether the lease was granted. The lease is asked for
 * only when the entry holds no value (none, or a tombstone); `leased` is undefined when it was not.
 *
 * @since 0.2.0
 * @category models
 */
export interface Lookup {
  readonly entry: Option.Option<Entry>
  readonly leased: boolean | undefined
}

/**
 * `getOrLease` made of two calls, `get` and then, when it found no value, `lease`: for a cache that
 * cannot do both in one round trip, and for a decorator that treats the two calls apart (counts,
 * holds or fails them one by one).
 *
 * @since 0.2.0
 * @category constructors
 */
export const getThenLease =
  (cache: Pick<Cache.Service, "get" | "lease">): Cache.Service["getOrLease"] =>
  (key, ttl) =>
    Effect.flatMap(cache.get(key), (entry): Effect.Effect<Lookup, CacheError> =>
      Option.isSome(entry) && entry.value._tag === "Value"
        ? Effect.succeed({ entry, leased: undefined })
        : Effect.map(cache.lease(key, ttl), (leased) => ({ entry, leased }))
    )

/**
 * @since 0.1.0
 * @category models
 */
export interface SetOptions {
  readonly ttl: Duration.Duration
  /**
   * An entry that may be overwritten even if its version is not older: used to
   * repair an entry whose payload no longer decodes. The swap is atomic.
   */
  readonly replacing?: Entry | undefined
  /** Without a ticket only the version guard applies. */
  readonly ticket?: Ticket | undefined
}

/**
 * @since 0.1.0
 * @category errors
 */
export class CacheError extends TypeIdError(WriteThroughErrorTypeId, "CacheError")<{
  readonly operation: string
  readonly key: string
  readonly reason: "Timeout" | "Unavailable"
  readonly cause?: unknown
}> {
  override get message(): string {
    return `cache ${this.operation} failed (${this.reason}) for key ${JSON.stringify(this.key)}`
  }
}

/**
 * The cache could not be reached when its layer was built.
 *
 * @since 0.1.0
 * @category errors
 */
export class CacheConnectionError extends TypeIdError(WriteThroughErrorTypeId, "CacheConnectionError")<{
  readonly url: string
  readonly cause: unknown
}> {
  override get message(): string {
    return `cannot connect to the cache at ${this.url}: ${String((this.cause as Error | undefined)?.message ?? this.cause)}`
  }
}

/**
 * @since 0.2.0
 * @category guards
 */
export const isCacheError = (u: unknown): u is CacheError => isWriteThroughError(u) && u._tag === "CacheError"

/**
 * @since 0.2.0
 * @category guards
 */
export const isCacheConnectionError = (u: unknown): u is CacheConnectionError =>
  isWriteThroughError(u) && u._tag === "CacheConnectionError"

/**
 * @since 0.1.0
 * @category models
 */
export declare namespace Cache {
  /**
   * Every operation must complete or fail within a bounded time.
   *
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /**
     * True when every call completes or fails within a bound of the cache's own
     * (RedisCache: its command timeout; MemoryCache: it never waits). Otherwise the
     * write-through bounds each call with its `cacheTimeout`, at the cost of a
     * fiber per call.
     */
    readonly selfBounded: boolean
    /**
     * True when `get` may hand out the same `Entry` object more than once (an in-process tier
     * does), so that a reader gains by memoizing what it derives from an entry, such as the
     * decoded value. A cache that builds a fresh entry per read says false: memoizing those would
     * cost a weak-map insertion per read for nothing.
     */
    readonly reusesEntries: boolean
    readonly get: (key: string) => Effect.Effect<Option.Option<Entry>, CacheError>
    /**
     * The entry this instance holds for `key` in process memory, found without I/O, or undefined:
     * what an in-process tier serves a hit from (RedisCache's near tier). The write-through looks
     * here before it calls `get` or `getOrLease`, and takes a value found here as a hit. A cache
     * without such a memory leaves it out.
     *
     * @since 0.2.0
     */
    readonly peek?: ((key: string) => Entry | undefined) | undefined
    /** One round trip for many keys (an `MGET` in Redis); the entries in the keys' order. */
    readonly getMany: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Option.Option<Entry>>, CacheError>
    /**
     * A ticket good for `validFor` from now, on the cache's own clock, under the
     * cache's current epoch as this process knows it: cheap, no round trip.
     */
    readonly ticket: (validFor: Duration.Duration) => Effect.Effect<Ticket>
    /**
     * Writes a value entry when the cache holds nothing, something undecodable, or
     * an older version, and the ticket (if any) is still good.
     */
    readonly set: (
      key: string,
      entry: Extract<Entry, { _tag: "Value" }>,
      options: SetOptions
    ) => Effect.Effect<WriteOutcome, CacheError>
    /**
     * Writes a tombstone at `version`. It replaces values up to and including
     * `version`, so a late fill of the same version loses.
     */
    /** Many guarded sets in one round trip (a pipeline in Redis); the outcomes in the items' order. */
    readonly setMany: (
      items: ReadonlyArray<{
        readonly key: string
        readonly entry: Extract<Entry, { _tag: "Value" }>
        readonly options: SetOptions
      }>
    ) => Effect.Effect<ReadonlyArray<WriteOutcome>, CacheError>
    /**
     * Asks for the right to fill `key` after a miss, for `ttl`: granted to one holder at a time
     * (this instance holds it again at will), so that of many processes missing the same cold key
     * one reads the store while the others wait for its fill.
     */
    readonly lease: (key: string, ttl: Duration.Duration) => Effect.Effect<boolean, CacheError>
    /**
     * `get`, and when it finds no value, `lease` for `ttl`, in one call: what a miss costs one round
     * trip less for (RedisCache does both in one script). A cache that cannot may use
     * `getThenLease`.
     *
     * @since 0.2.0
     */
    readonly getOrLease: (key: string, ttl: Duration.Duration) => Effect.Effect<Lookup, CacheError>
    /**
     * One page of the keys starting with `prefix` (SCAN in Redis, never KEYS): pass the
     * returned cursor back until it is "0". Keys may repeat across pages.
     */
    readonly scan: (
      prefix: string,
      cursor: string
    ) => Effect.Effect<readonly [cursor: string, keys: ReadonlyArray<string>], CacheError>
    readonly invalidate: (
      key: string,
      version: number,
      ttl: Duration.Duration
    ) => Effect.Effect<WriteOutcome, CacheError>
  }
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Cache extends Context.Tag("effect-write-through/Cache")<Cache, Cache.Service>() {}

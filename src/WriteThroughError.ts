/**
 * The errors a write-through operation fails with, apart from the store's own
 * `StoreError`. Handle them by tag: `Effect.catchTag("StaleCacheError", ...)`.
 * Every error of the library, the store's and the cache's included, carries
 * `WriteThroughErrorTypeId`, which `isWriteThroughError` tests.
 *
 * @since 0.1.0
 */
import { TypeIdError } from "./internal/typeIdError.js"
import * as Duration from "effect/Duration"
import * as Predicate from "effect/Predicate"
import type { CacheConnectionError, CacheError } from "./Cache.js"
import type { StoreError, StoreOutcomeUnknownError } from "./Store.js"

/**
 * Carried by every error class of the library, as `@effect/sql` marks its `SqlError`: it tells the
 * library's errors from any other, even across two copies of the package, where `instanceof` fails.
 *
 * @since 0.2.0
 * @category type ids
 */
export const WriteThroughErrorTypeId: unique symbol = Symbol.for("effect-write-through/WriteThroughError")

/**
 * @since 0.2.0
 * @category type ids
 */
export type WriteThroughErrorTypeId = typeof WriteThroughErrorTypeId

/**
 * Any error of the library: those of this module, the store's and the cache's.
 *
 * @since 0.2.0
 * @category models
 */
export type WriteThroughError =
  | ValidationError
  | StaleCacheError
  | InconsistentCacheError
  | StoreError
  | StoreOutcomeUnknownError
  | CacheError
  | CacheConnectionError

/**
 * True for any error of the library, false for anything else (a `SqlError`, a plain `Error`...).
 *
 * @since 0.2.0
 * @category guards
 */
export const isWriteThroughError = (u: unknown): u is WriteThroughError =>
  Predicate.hasProperty(u, WriteThroughErrorTypeId)

/**
 * A public operation of a write-through entity, as the `operation` tag of its metrics and spans
 * names it.
 *
 * @since 0.2.0
 * @category models
 */
export type Operation = "get" | "getMany" | "set" | "setMany" | "delete" | "transaction" | "audit"

/**
 * An operation that writes the store: the ones whose outcome can be unknown (`InconsistentCacheError`).
 *
 * @since 0.2.0
 * @category models
 */
export type WriteOperation = Extract<Operation, "set" | "setMany" | "delete" | "transaction">

/**
 * A write of one key: the ones that publish a single version to the cache (`StaleCacheError`).
 *
 * @since 0.2.0
 * @category models
 */
export type KeyWriteOperation = Extract<WriteOperation, "set" | "delete">

/**
 * A key or value was refused before any I/O: nothing was written.
 *
 * @since 0.1.0
 * @category errors
 */
export class ValidationError extends TypeIdError(WriteThroughErrorTypeId, "ValidationError")<{
  readonly entity: string
  /** The key as given, or its description when it cannot be shown. */
  readonly key: string
  readonly field: "key" | "value"
  readonly detail: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `invalid ${this.field} for ${this.entity} ${this.key}: ${this.detail}`
  }
}

/**
 * The write is committed in the store, but neither the cache update nor the
 * invalidation that follows a failed update went through. Until `staleUntil`
 * (at most the entity's TTL from now) the cache may serve the previous value.
 *
 * What to do: nothing is lost; retry the write to refresh the cache sooner, or
 * accept the bounded staleness.
 *
 * @since 0.1.0
 * @category errors
 */
export class StaleCacheError extends TypeIdError(WriteThroughErrorTypeId, "StaleCacheError")<{
  readonly entity: string
  readonly key: string
  readonly operation: KeyWriteOperation
  /** The committed version the cache failed to receive. */
  readonly version: number
  /** How long the cache may serve the previous value, at most. */
  readonly maxStaleness: Duration.Duration
  /** Epoch milliseconds after which the previous value has certainly expired. */
  readonly staleUntil: number
  readonly cause: unknown
}> {
  override get message(): string {
    return (
      `${this.operation} of ${this.entity} ${JSON.stringify(this.key)} committed at version ${this.version}, ` +
      `but the cache may serve the previous value for up to ${Duration.format(this.maxStaleness)}`
    )
  }
}

/**
 * The library cannot vouch for the key: the store's outcome is unknown (the
 * connection was lost or the call timed out while committing), so the write may
 * or may not have happened. The key was fenced in the cache when `invalidated`
 * is true, so reads go to the store until the fence expires.
 *
 * What to do: read the key back (from the store, through `get`) to learn the
 * outcome, then retry the write if it is needed; writes are idempotent upserts.
 *
 * @since 0.1.0
 * @category errors
 */
export class InconsistentCacheError extends TypeIdError(WriteThroughErrorTypeId, "InconsistentCacheError")<{
  readonly entity: string
  /** For a transaction or a setMany, its first written key; `keys` lists them all. */
  readonly key: string
  readonly operation: WriteOperation
  /** True when every key concerned was fenced in the cache. */
  readonly invalidated: boolean
  /** For a transaction or a setMany: every key it wrote, each fenced. */
  readonly keys?: ReadonlyArray<{ readonly entity: string; readonly key: string }> | undefined
  readonly cause: unknown
}> {
  override get message(): string {
    if (this.operation === "transaction" || this.operation === "setMany") {
      return (
        (this.operation === "transaction"
          ? `a transaction writing ${this.keys?.length ?? 1} key(s) has an unknown outcome (its COMMIT failed)`
          : `a setMany of ${this.keys?.length ?? 1} key(s) of ${this.entity} has an unknown outcome`) +
        (this.invalidated ? "; every key was invalidated in the cache" : "; some keys could not be invalidated")
      )
    }
    return (
      `${this.operation} of ${this.entity} ${JSON.stringify(this.key)} has an unknown outcome` +
      (this.invalidated ? "; the key was invalidated in the cache" : "; the key could not be invalidated either")
    )
  }
}

/**
 * @since 0.2.0
 * @category guards
 */
export const isValidationError = (u: unknown): u is ValidationError =>
  isWriteThroughError(u) && u._tag === "ValidationError"

/**
 * @since 0.2.0
 * @category guards
 */
export const isStaleCacheError = (u: unknown): u is StaleCacheError =>
  isWriteThroughError(u) && u._tag === "StaleCacheError"

/**
 * @since 0.2.0
 * @category guards
 */
export const isInconsistentCacheError = (u: unknown): u is InconsistentCacheError =>
  isWriteThroughError(u) && u._tag === "InconsistentCacheError"

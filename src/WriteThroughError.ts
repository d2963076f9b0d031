/**
 * The errors a write-through operation fails with, apart from the store's own
 * `StoreError`. Handle them by tag: `Effect.catchTag("StaleCacheError", ...)`.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"

/**
 * A key or value was refused before any I/O: nothing was written.
 *
 * @since 0.1.0
 * @category errors
 */
export class ValidationError extends Data.TaggedError("ValidationError")<{
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
export class StaleCacheError extends Data.TaggedError("StaleCacheError")<{
  readonly entity: string
  readonly key: string
  readonly operation: "set" | "delete"
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
export class InconsistentCacheError extends Data.TaggedError("InconsistentCacheError")<{
  readonly entity: string
  /** For a transaction or a setMany, its first written key; `keys` lists them all. */
  readonly key: string
  readonly operation: "set" | "setMany" | "delete" | "transaction"
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

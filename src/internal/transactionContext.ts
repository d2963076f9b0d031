import type * as Effect from "effect/Effect"
import type { StaleCacheError } from "../WriteThroughError.js"
import * as FiberRef from "effect/FiberRef"
import { globalValue } from "effect/GlobalValue"

/**
 * Set by a store's `transaction` around the effect it runs, to a token of that transaction. Its
 * collections write only when the transaction they find themselves in is that one: a write inside
 * some other transaction (a bare `sql.withTransaction`, a savepoint) could roll back after the
 * cache was told about it.
 */
export const currentStoreTransaction = globalValue(Symbol.for("effect-write-through/currentStoreTransaction"), () =>
  FiberRef.unsafeMake<unknown>(undefined)
)

/** A committed write's cache update, run once the transaction it belongs to has committed. */
export interface DeferredUpdate {
  /** Entity and key, which identify the cache entry: a later update of the same entry replaces it. */
  readonly id: string
  readonly entity: string
  readonly key: string
  /** Makes the cache hold the committed version, or fails with the write-through's StaleCacheError. */
  readonly publish: Effect.Effect<void, StaleCacheError>
  /** For an unknown outcome: fences the key; true when the fence landed. */
  readonly fence: Effect.Effect<boolean>
}

/** What `WriteThrough.transaction` collects from the operations run inside it. */
export interface Publications {
  readonly updates: Map<string, DeferredUpdate>
  /**
   * A write inside failed. PostgreSQL then aborts the transaction and turns its COMMIT into a
   * ROLLBACK without an error, so a body that caught the failure must not be taken for committed.
   */
  failed: boolean
}

export const currentPublications = globalValue(Symbol.for("effect-write-through/currentPublications"), () =>
  FiberRef.unsafeMake<Publications | undefined>(undefined)
)

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

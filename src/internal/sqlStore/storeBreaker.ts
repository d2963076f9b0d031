// A circuit breaker on the store, shared by every entity on it. While it is open every call fails
// at once with StoreError `Unavailable` (cause `CircuitOpen`) having written nothing, instead of
// waiting out the write-through's `storeTimeout` on a database that does not answer; a transaction
// does not begin. After the interval one call probes the database; its success closes the breaker.
//
// A failure is a call the database did not answer: not reached, timed out, a write whose connection
// went away (StoreOutcomeUnknownError, passed on unchanged, so that the write-through fences its
// key), or an interrupted call, since the write-through bounds store calls from outside and a
// database gone silent ends them by interruption. A statement PostgreSQL refused or a row that does
// not decode is the database answering.
import type * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type { Options } from "../../CircuitBreaker.js"
import { isStoreError, isStoreOutcomeUnknownError, Store, type StoreError } from "../../Store.js"
import * as CircuitBreaker from "../circuitBreaker.js"
import { type Site, storeWide, unavailable } from "../storeError.js"

/**
 * Set inside a transaction a breaker let through. Its statements are counted with it, as one
 * call: guarded one by one, they would be refused while it is the probe, and a lost connection
 * would count once for the statement and again for the transaction.
 */
const guardedTransaction = FiberRef.unsafeMake<CircuitBreaker.Breaker | undefined>(undefined)

const isOutage = (error: unknown): boolean =>
  isStoreOutcomeUnknownError(error) ||
  (isStoreError(error) && (error.reason === "Unavailable" || error.reason === "Timeout"))

const policyAt = <E>(site: Site, skipped: string): CircuitBreaker.Policy<E | StoreError> => ({
  refuse: (open) => unavailable(site, { detail: `the store's circuit breaker is open: ${skipped}`, cause: open }),
  isOutage,
  interruptionIsOutage: true
})

const notSent = "the call was not sent and nothing was written"

/** `store` behind a breaker; `name` names the store in the metrics' `target` tag and the log lines. */
export const wrap = (store: Store.Service, options: Options, name: string): Store.Service => {
  const breaker = CircuitBreaker.make(options, { tier: "store", name })

  const guarded = <A, E>(site: Site, effect: Effect.Effect<A, E>): Effect.Effect<A, E | StoreError> =>
    Effect.withFiberRuntime((fiber) =>
      fiber.getFiberRef(guardedTransaction) === breaker ? effect : breaker.guard(effect, policyAt<E>(site, notSent))
    )

  // Counted as a whole, its interruption too: a BEGIN or COMMIT sent to a database gone silent
  // ends only by its caller's bound.
  const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
    Effect.contextWithEffect((context: Context.Context<R>) =>
      breaker.guard(
        Effect.provide(store.transaction(Effect.locally(effect, guardedTransaction, breaker)), context),
        policyAt<E>(storeWide("transaction"), "the transaction did not begin and nothing was written")
      )
    )

  return Store.of({
    // Made when an entity's layer is built, and made whatever the breaker's state: it checks the
    // schema once, and an entity built while the database is away is ready when it is back.
    collection: (target) =>
      Effect.map(store.collection(target), (collection) => guardCollection(collection, target.entity, guarded)),
    transaction,
    // Reaches no database: it looks at the fiber's context.
    inTransaction: store.inTransaction
  })
}

type Guarded = <A, E>(site: Site, effect: Effect.Effect<A, E>) => Effect.Effect<A, E | StoreError>

const guardCollection = (collection: Store.Collection, entity: string, guarded: Guarded): Store.Collection => {
  const at = (operation: string, key: string): Site => ({ entity, key, operation })
  return {
    get: (key) => guarded(at("get", key), collection.get(key)),
    // An empty batch reaches no database: its success must not close a breaker that is probing.
    getMany: (keys) =>
      keys.length === 0 ? collection.getMany(keys) : guarded(at("get", keys[0]!), collection.getMany(keys)),
    put: (key, value) => guarded(at("put", key), collection.put(key, value)),
    putMany: (entries) =>
      entries.length === 0
        ? collection.putMany(entries)
        : guarded(at("put", entries[0]![0]), collection.putMany(entries)),
    delete: (key) => guarded(at("delete", key), collection.delete(key)),
    deletions: collection.deletions && guardDeletions(collection.deletions, entity, guarded),
    changes: collection.changes && guardFeed(collection.changes, at("changes", ""), guarded)
  }
}

const guardDeletions =
  (deletions: NonNullable<Store.Collection["deletions"]>, entity: string, guarded: Guarded) =>
  (keys: ReadonlyArray<string>) =>
    guarded({ entity, key: keys[0] ?? "", operation: "get" }, deletions(keys))

const guardFeed = (feed: Store.ChangeFeed, site: Site, guarded: Guarded): Store.ChangeFeed => ({
  ...feed,
  pull: guarded(site, feed.pull),
  commit: guarded(site, feed.commit),
  release: guarded(site, feed.release)
})

/** `store` behind a breaker unless it is turned off. */
export const around = (store: Store.Service, options: Options | false | undefined, name: string): Store.Service =>
  options === false ? store : wrap(store, options ?? {}, name)

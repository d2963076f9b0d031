// WriteThrough.transaction: one SQL transaction of the Store for the writes of any entities, their
// cache updates held back until the COMMIT succeeded, none published on a rollback, and every
// written key fenced when the COMMIT's outcome is unknown.
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import { globalValue } from "effect/GlobalValue"
import type * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Metrics from "../../Metrics.js"
import { Store, type StoreError } from "../../Store.js"
import { InconsistentCacheError, type StaleCacheError } from "../../WriteThroughError.js"
import * as LabelledMetric from "../labelledMetric.js"
import * as OperationSpan from "../operationSpan.js"
import * as StoreErrors from "../storeError.js"

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

/** Set inside `WriteThrough.transaction`: the one place a call learns whether it runs in one. */
export const currentPublications = globalValue(Symbol.for("effect-write-through/currentPublications"), () =>
  FiberRef.unsafeMake<Publications | undefined>(undefined)
)

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
  StoreErrors.transactionRefused(StoreErrors.storeWide("transaction"), {
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

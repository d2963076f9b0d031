/**
 * A `Store` decorator that injects faults, for testing how a program handles a
 * failing store or a commit whose outcome is lost. Provide the real store underneath:
 *
 * ```ts
 * const TestStore = FaultyStore.layer.pipe(Layer.provide(SqlStore.layer()), Layer.provide(PgLive))
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as FaultPlan from "./internal/faultPlan.js"
import { Store, StoreError, StoreOutcomeUnknownError } from "./Store.js"

/**
 * @since 0.1.0
 * @category models
 */
export type Operation = "get" | "put" | "delete" | "commit"

/**
 * With no operations named, a fault applies to all of them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Controls {
  /** The next `times` calls fail with a `StoreError` and do not reach the store. */
  readonly failNext: (times: number, ...operations: ReadonlyArray<Operation>) => Effect.Effect<void>
  /** Every call fails until `heal`. */
  readonly failAlways: (...operations: ReadonlyArray<Operation>) => Effect.Effect<void>
  /**
   * The next call of each named write (both `put` and `delete` when none is
   * named) loses its connection while committing: it fails with a
   * `StoreOutcomeUnknownError`, after committing when `committed` is true.
   * With `defect`, it dies instead, as a failing `COMMIT` does in `@effect/sql`.
   * Named `commit`, the next `transaction` dies at its COMMIT (with or without `defect`), after
   * committing its writes when `committed` is true, after rolling them back otherwise.
   */
  readonly loseConnectionOnCommit: (
    options: { readonly committed: boolean; readonly defect?: boolean | undefined },
    ...operations: ReadonlyArray<"put" | "delete" | "commit">
  ) => Effect.Effect<void>
  /** Every call hangs until interrupted, until `heal`. */
  readonly hang: (...operations: ReadonlyArray<Operation>) => Effect.Effect<void>
  /**
   * Holds the next `times` calls (default 1): `before` they reach the store, or
   * `after` it answered, with the answer held back. For forcing interleavings.
   */
  readonly pause: (
    options: { readonly times?: number | undefined; readonly when: "before" | "after" },
    ...operations: ReadonlyArray<Operation>
  ) => Effect.Effect<Pause>
  readonly heal: Effect.Effect<void>
  /** How many calls of the operation arrived, faulted or not. */
  readonly calls: (operation: Operation) => Effect.Effect<number>
}

/**
 * Calls held by `pause`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Pause {
  /** Completes once a call is being held. */
  readonly reached: Effect.Effect<void>
  /** Lets every held call, and every later one of this pause, go on. */
  readonly release: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class FaultyStore extends Context.Tag("effect-write-through/FaultyStore")<FaultyStore, Controls>() {}

type Mode =
  | "fail"
  | "hang"
  | "lostBeforeCommit"
  | "lostAfterCommit"
  | "diedBeforeCommit"
  | "diedAfterCommit"
  | "pauseBefore"
  | "pauseAfter"

/**
 * Provides a faulty `Store` over the `Store` it is given, and its `FaultyStore` controls.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Store | FaultyStore, never, Store> = Layer.effectContext(
  Effect.gen(function* () {
    const store = yield* Store
    const plan = FaultPlan.make<Operation, Mode>(["get", "put", "delete", "commit"])
    const commitFailed = () => new Error("injected: COMMIT failed")
    // Fails the transaction's effect so that the store rolls it back, then dies as at COMMIT.
    const rollBack = Symbol("rollBack")
    const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
      Effect.suspend((): Effect.Effect<A, E | StoreError, R> => {
        const fault = plan.take("commit")
        switch (fault?.mode) {
          case undefined:
            return store.transaction(effect)
          case "fail":
            return Effect.fail(new StoreError({ entity: "*", key: "", operation: "commit", reason: "Injected" }))
          case "hang":
            return Effect.never
          case "lostBeforeCommit":
          case "diedBeforeCommit":
            return store.transaction(Effect.zipRight(effect, Effect.fail(rollBack))).pipe(
              Effect.catchIf(
                (error): error is typeof rollBack => error === rollBack,
                () => Effect.die(commitFailed())
              )
            )
          case "lostAfterCommit":
          case "diedAfterCommit":
            return Effect.zipRight(store.transaction(effect), Effect.die(commitFailed()))
          case "pauseBefore":
            return Effect.zipRight(FaultPlan.hold(fault.gate!), store.transaction(effect))
          case "pauseAfter":
            return Effect.zipLeft(store.transaction(effect), FaultPlan.hold(fault.gate!))
        }
      })
    const faulty = Store.of({
      collection: (target) =>
        Effect.map(store.collection(target), (collection) => {
          const entity = target.entity
          const inject = <A, E>(
            operation: Operation,
            key: string,
            effect: Effect.Effect<A, E>,
            lost: () => E
          ): Effect.Effect<A, E | StoreError> =>
            Effect.suspend((): Effect.Effect<A, E | StoreError> => {
              const fault = plan.take(operation)
              switch (fault?.mode) {
                case undefined:
                  return effect
                case "fail":
                  return Effect.fail(new StoreError({ entity, key, operation, reason: "Injected" }))
                case "hang":
                  return Effect.never
                case "lostBeforeCommit":
                  return Effect.fail(lost())
                case "lostAfterCommit":
                  return Effect.zipRight(effect, Effect.fail(lost()))
                case "diedBeforeCommit":
                  return Effect.die(commitFailed())
                case "diedAfterCommit":
                  return Effect.zipRight(effect, Effect.die(commitFailed()))
                case "pauseBefore":
                  return Effect.zipRight(FaultPlan.hold(fault.gate!), effect)
                case "pauseAfter":
                  return Effect.zipLeft(effect, FaultPlan.hold(fault.gate!))
              }
            })
          const lostWrite = (operation: Operation, key: string) => () =>
            new StoreOutcomeUnknownError({
              entity,
              key,
              operation,
              cause: new Error("injected: connection lost during commit")
            })
          return {
            get: (key) =>
              inject(
                "get",
                key,
                collection.get(key),
                () => new StoreError({ entity, key, operation: "get", reason: "Injected" })
              ),
            // A batch is one call of the operation it batches.
            getMany: (keys) =>
              inject(
                "get",
                keys[0] ?? "",
                collection.getMany(keys),
                () => new StoreError({ entity, key: keys[0] ?? "", operation: "get", reason: "Injected" })
              ),
            put: (key, value) => inject("put", key, collection.put(key, value), lostWrite("put", key)),
            // A batch is one call of the operation it batches.
            putMany: (entries) =>
              inject(
                "put",
                entries[0]?.[0] ?? "",
                collection.putMany(entries),
                lostWrite("put", entries[0]?.[0] ?? "")
              ),
            delete: (key) => inject("delete", key, collection.delete(key), lostWrite("delete", key))
          } satisfies Store.Collection
        }),
      transaction,
      inTransaction: store.inTransaction
    })
    const controls: Controls = {
      failNext: (times, ...operations) => Effect.sync(() => plan.arm("fail", times, operations)),
      failAlways: (...operations) => Effect.sync(() => plan.arm("fail", Infinity, operations)),
      loseConnectionOnCommit: ({ committed, defect = false }, ...operations) =>
        Effect.sync(() =>
          plan.arm(
            defect
              ? committed
                ? "diedAfterCommit"
                : "diedBeforeCommit"
              : committed
                ? "lostAfterCommit"
                : "lostBeforeCommit",
            1,
            operations.length === 0 ? ["put", "delete"] : operations
          )
        ),
      hang: (...operations) => Effect.sync(() => plan.arm("hang", Infinity, operations)),
      pause: ({ times = 1, when }, ...operations) =>
        FaultPlan.pause(plan, when === "before" ? "pauseBefore" : "pauseAfter", times, operations),
      heal: Effect.sync(() => plan.clear()),
      calls: (operation) => Effect.sync(() => plan.calls(operation))
    }
    return Context.make(Store, faulty).pipe(Context.add(FaultyStore, controls))
  })
)

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

// Spelled once: the plan needs them as values, the controls as a type.
const operations = ["get", "put", "delete", "commit"] as const

/**
 * @since 0.1.0
 * @category models
 */
export type Operation = (typeof operations)[number]

/**
 * The operations that commit: a `put`, a `delete`, or a `transaction`'s COMMIT.
 *
 * @since 0.2.0
 * @category models
 */
export type CommitOperation = Exclude<Operation, "get">

/**
 * With no operations named, a fault applies to all of them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Controls extends FaultPlan.SharedControls<Operation> {
  /**
   * The next `times` calls do not reach the store: each fails as an unreachable store does, with a
   * `StoreError` whose cause is an `InjectedFault` (`refused`). Its reason is `Unavailable`, or
   * for `commit` `Transaction`, as for a transaction that could not begin (nothing of it ran).
   */
  readonly failNext: (times: number, ...operations: ReadonlyArray<Operation>) => Effect.Effect<void>
  /** Every call fails as with `failNext`, until `heal`. */
  readonly failAlways: (...operations: ReadonlyArray<Operation>) => Effect.Effect<void>
  /**
   * The next call of each named write (both `put` and `delete` when none is
   * named) loses its connection while committing: it fails with a
   * `StoreOutcomeUnknownError`, after committing when `committed` is true.
   * With `defect`, it dies instead, as a failing `COMMIT` does in `@effect/sql`.
   * Named `commit`, the next `transaction` dies at its COMMIT (with or without `defect`), after
   * committing its writes when `committed` is true, after rolling them back otherwise.
   * The error's cause, or the defect, is an `InjectedFault` (`connectionLost`, or `commitFailed`
   * for a defect).
   */
  readonly loseConnectionOnCommit: (
    options: { readonly committed: boolean; readonly defect?: boolean | undefined },
    ...operations: ReadonlyArray<CommitOperation>
  ) => Effect.Effect<void>
}

/**
 * Calls held by `pause`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Pause extends FaultPlan.Pause {}

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

// The error production raises for the same fault, so code under test handles it as it would there;
// only its cause tells that it was injected.
const injected = (
  entity: string,
  key: string,
  operation: Operation,
  reason: StoreError["reason"],
  fault: FaultPlan.InjectedFault["fault"]
): StoreError => new StoreError({ entity, key, operation, reason, cause: new FaultPlan.InjectedFault({ fault }) })

/**
 * Provides a faulty `Store` over the `Store` it is given, and its `FaultyStore` controls.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Store | FaultyStore, never, Store> = Layer.effectContext(
  Effect.gen(function* () {
    const store = yield* Store
    const plan = FaultPlan.make<Operation, Mode>(operations)
    const commitFailed = () => new FaultPlan.InjectedFault({ fault: "commitFailed" })
    // Fails the transaction's effect so that the store rolls it back, then dies as at COMMIT.
    const rollBack = Symbol("rollBack")
    const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
      Effect.suspend((): Effect.Effect<A, E | StoreError, R> => {
        const fault = plan.take("commit")
        switch (fault?.mode) {
          case undefined:
            return store.transaction(effect)
          case "fail":
            return Effect.fail(injected("*", "", "commit", "Transaction", "refused"))
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
                  return Effect.fail(injected(entity, key, operation, "Unavailable", "refused"))
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
              cause: new FaultPlan.InjectedFault({ fault: "connectionLost" })
            })
          // A read that loses its connection is not in doubt: the store reports it unreachable.
          const lostRead = (key: string) => () => injected(entity, key, "get", "Unavailable", "connectionLost")
          return {
            get: (key) => inject("get", key, collection.get(key), lostRead(key)),
            // A batch is one call of the operation it batches.
            getMany: (keys) => inject("get", keys[0] ?? "", collection.getMany(keys), lostRead(keys[0] ?? "")),
            put: (key, value) => inject("put", key, collection.put(key, value), lostWrite("put", key)),
            // A batch is one call of the operation it batches.
            putMany: (entries) =>
              inject(
                "put",
                entries[0]?.[0] ?? "",
                collection.putMany(entries),
                lostWrite("put", entries[0]?.[0] ?? "")
              ),
            delete: (key) => inject("delete", key, collection.delete(key), lostWrite("delete", key)),
            deletions: collection.deletions,
            changes: collection.changes
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

/**
 * A `Cache` decorator that injects faults, for testing how a program handles a
 * failing or hung cache. Provide the real cache underneath:
 *
 * ```ts
 * const TestCache = FaultyCache.layer.pipe(Layer.provide(RedisCache.layer()))
 * // then, in a test: yield* FaultyCache.FaultyCache.pipe(Effect.flatMap((f) => f.failAlways("set")))
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Cache, CacheError, getThenLease } from "./Cache.js"
import * as FaultPlan from "./internal/faultPlan.js"

// Spelled once: the plan needs them as values, the controls as a type.
const operations = ["get", "set", "invalidate", "lease"] as const

/**
 * @since 0.1.0
 * @category models
 */
export type Operation = (typeof operations)[number]

/**
 * With no operations named, a fault applies to all of them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Controls extends FaultPlan.SharedControls<Operation> {
  /**
   * The next `times` calls do not reach the cache: each fails as an unreachable cache does, with a
   * `CacheError` of reason `Unavailable` whose cause is an `InjectedFault` (`refused`).
   */
  readonly failNext: (times: number, ...operations: ReadonlyArray<Operation>) => Effect.Effect<void>
  /** Every call fails as with `failNext`, until `heal`. */
  readonly failAlways: (...operations: ReadonlyArray<Operation>) => Effect.Effect<void>
  /**
   * The next `times` calls reach the cache, then fail as if the reply was lost: as a command whose
   * reply never came, with a `CacheError` of reason `Timeout` whose cause is an `InjectedFault`
   * (`replyLost`).
   */
  readonly failAfterNext: (times: number, ...operations: ReadonlyArray<Operation>) => Effect.Effect<void>
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
export class FaultyCache extends Context.Tag("effect-write-through/FaultyCache")<FaultyCache, Controls>() {}

type Mode = "fail" | "failAfter" | "hang" | "pauseBefore" | "pauseAfter"

// The error production raises for the same fault, so code under test handles it as it would there;
// only its cause tells that it was injected.
const injected = (
  operation: Operation,
  key: string,
  reason: CacheError["reason"],
  fault: FaultPlan.InjectedFault["fault"]
): CacheError => new CacheError({ operation, key, reason, cause: new FaultPlan.InjectedFault({ fault }) })

/**
 * Provides a faulty `Cache` over the `Cache` it is given, and its `FaultyCache` controls.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Cache | FaultyCache, never, Cache> = Layer.effectContext(
  Effect.gen(function* () {
    const cache = yield* Cache
    const plan = FaultPlan.make<Operation, Mode>(operations)
    const inject = <A>(operation: Operation, key: string, effect: Effect.Effect<A, CacheError>) =>
      Effect.suspend((): Effect.Effect<A, CacheError> => {
        const fault = plan.take(operation)
        switch (fault?.mode) {
          case undefined:
            return effect
          case "fail":
            return Effect.fail(injected(operation, key, "Unavailable", "refused"))
          case "failAfter":
            return Effect.zipRight(effect, Effect.fail(injected(operation, key, "Timeout", "replyLost")))
          case "hang":
            return Effect.never
          case "pauseBefore":
            return Effect.zipRight(FaultPlan.hold(fault.gate!), effect)
          case "pauseAfter":
            return Effect.zipLeft(effect, FaultPlan.hold(fault.gate!))
        }
      })
    const get: Cache.Service["get"] = (key) => inject("get", key, cache.get(key))
    const lease: Cache.Service["lease"] = (key, ttl) => inject("lease", key, cache.lease(key, ttl))
    const faulty = Cache.of({
      // It can hang on purpose.
      selfBounded: false,
      reusesEntries: cache.reusesEntries,
      get,
      // A batch is one call of the operation it batches.
      getMany: (keys) => inject("get", keys[0] ?? "", cache.getMany(keys)),
      ticket: cache.ticket,
      set: (key, entry, options) => inject("set", key, cache.set(key, entry, options)),
      setMany: (items) => inject("set", items[0]?.key ?? "", cache.setMany(items)),
      invalidate: (key, version, ttl) => inject("invalidate", key, cache.invalidate(key, version, ttl)),
      lease,
      // Two calls, each under its own faults, as the fault plan names them.
      getOrLease: getThenLease({ get, lease }),
      scan: (prefix, cursor) => inject("get", prefix, cache.scan(prefix, cursor))
    })
    const controls: Controls = {
      failNext: (times, ...operations) => Effect.sync(() => plan.arm("fail", times, operations)),
      failAlways: (...operations) => Effect.sync(() => plan.arm("fail", Infinity, operations)),
      failAfterNext: (times, ...operations) => Effect.sync(() => plan.arm("failAfter", times, operations)),
      hang: (...operations) => Effect.sync(() => plan.arm("hang", Infinity, operations)),
      pause: ({ times = 1, when }, ...operations) =>
        FaultPlan.pause(plan, when === "before" ? "pauseBefore" : "pauseAfter", times, operations),
      heal: Effect.sync(() => plan.clear()),
      calls: (operation) => Effect.sync(() => plan.calls(operation))
    }
    return Context.make(Cache, faulty).pipe(Context.add(FaultyCache, controls))
  })
)

// The schedule of injected faults shared by FaultyCache and FaultyStore:
// per operation, what the next calls do and how many calls arrived.
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"

const faultMessages = {
  refused: "injected: the call was refused before it was sent",
  replyLost: "injected: the call was carried out, its reply was lost",
  connectionLost: "injected: connection lost while the call was in flight",
  commitFailed: "injected: COMMIT failed"
} as const

/**
 * The cause of every failure `FaultyCache` and `FaultyStore` inject, and the defect of an injected
 * failing COMMIT. The error around it is the one production raises for the same fault (a
 * `CacheError` or `StoreError` with a real `reason`, a `StoreOutcomeUnknownError`), so code under
 * test handles it as it would in production; a test tells an injected failure by this cause.
 *
 * `fault`: `refused`, the call did not reach the cache or store; `replyLost`, it did, and its
 * reply was lost; `connectionLost`, the connection was lost while it was in flight (a write committing);
 * `commitFailed`, the COMMIT failed (a defect, as in `@effect/sql`).
 *
 * @since 0.2.0
 * @category errors
 */
export class InjectedFault extends Data.TaggedError("InjectedFault")<{
  readonly fault: keyof typeof faultMessages
}> {
  override get message(): string {
    return faultMessages[this.fault]
  }
}

/** Calls held by `pause`. */
export interface Pause {
  /** Completes once a call is being held. */
  readonly reached: Effect.Effect<void>
  /** Lets every held call, and every later one of this pause, go on. */
  readonly release: Effect.Effect<void>
}

/** The controls FaultyCache and FaultyStore share, over their own operations. */
export interface SharedControls<Operation extends string> {
  /**
   * Every call hangs until interrupted, until `heal`. It fails with nothing of its own: the
   * caller's bound ends it (the write-through's `cacheTimeout` or `storeTimeout`).
   */
  readonly hang: (...operations: ReadonlyArray<Operation>) => Effect.Effect<void>
  /**
   * Holds the next `times` calls (default 1): `before` they reach the cache or store, or
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

export interface Fault<Mode extends string> {
  readonly mode: Mode
  readonly gate: Gate | undefined
  remaining: number
}

/** Holds calls until released; `reached` completes once the first one is held. */
export interface Gate {
  readonly reached: Deferred.Deferred<void>
  readonly released: Deferred.Deferred<void>
}

export const makeGate = Effect.zipWith(Deferred.make<void>(), Deferred.make<void>(), (reached, released): Gate => ({
  reached,
  released
}))

/** Arms a pause and hands back its controls, as FaultyCache and FaultyStore expose them. */
export const pause = <Op extends string, Mode extends string>(
  plan: FaultPlan<Op, Mode>,
  mode: Mode,
  times: number,
  operations: ReadonlyArray<Op>
): Effect.Effect<{ readonly reached: Effect.Effect<void>; readonly release: Effect.Effect<void> }> =>
  Effect.map(makeGate, (gate) => {
    plan.arm(mode, times, operations, gate)
    return { reached: Deferred.await(gate.reached), release: Effect.asVoid(Deferred.succeed(gate.released, undefined)) }
  })

export const hold = (gate: Gate): Effect.Effect<void> =>
  Effect.zipRight(Deferred.succeed(gate.reached, undefined), Deferred.await(gate.released))

export interface FaultPlan<Op extends string, Mode extends string> {
  readonly arm: (mode: Mode, times: number, operations: ReadonlyArray<Op>, gate?: Gate) => void
  /** The fault for this call, if any; counts the call. */
  readonly take: (operation: Op) => Fault<Mode> | undefined
  readonly calls: (operation: Op) => number
  readonly clear: () => void
}

export const make = <Op extends string, Mode extends string>(all: ReadonlyArray<Op>): FaultPlan<Op, Mode> => {
  const faults = new Map<Op, Fault<Mode>>()
  const counts = new Map<Op, number>()
  return {
    arm: (mode, times, operations, gate) => {
      for (const operation of operations.length === 0 ? all : operations) {
        faults.set(operation, { mode, gate, remaining: times })
      }
    },
    take: (operation) => {
      counts.set(operation, (counts.get(operation) ?? 0) + 1)
      const fault = faults.get(operation)
      if (fault === undefined) return undefined
      if (--fault.remaining <= 0) faults.delete(operation)
      return fault
    },
    calls: (operation) => counts.get(operation) ?? 0,
    clear: () => faults.clear()
  }
}

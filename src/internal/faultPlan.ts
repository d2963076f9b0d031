// The schedule of injected faults shared by FaultyCache and FaultyStore:
// per operation, what the next calls do and how many calls arrived.
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"

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

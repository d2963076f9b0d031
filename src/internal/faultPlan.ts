// The schedule of injected faults shared by FaultyCache and FaultyStore:
// per operation, what the next calls do and how many calls arrived.

export type Fault<Mode extends string> = { readonly mode: Mode; remaining: number }

export interface FaultPlan<Op extends string, Mode extends string> {
  readonly arm: (mode: Mode, times: number, operations: ReadonlyArray<Op>) => void
  /** The fault for this call, if any; counts the call. */
  readonly take: (operation: Op) => Mode | undefined
  readonly calls: (operation: Op) => number
  readonly clear: () => void
}

export const make = <Op extends string, Mode extends string>(all: ReadonlyArray<Op>): FaultPlan<Op, Mode> => {
  const faults = new Map<Op, Fault<Mode>>()
  const counts = new Map<Op, number>()
  return {
    arm: (mode, times, operations) => {
      for (const operation of operations.length === 0 ? all : operations)
        faults.set(operation, { mode, remaining: times })
    },
    take: (operation) => {
      counts.set(operation, (counts.get(operation) ?? 0) + 1)
      const fault = faults.get(operation)
      if (fault === undefined) return undefined
      if (--fault.remaining <= 0) faults.delete(operation)
      return fault.mode
    },
    calls: (operation) => counts.get(operation) ?? 0,
    clear: () => faults.clear()
  }
}

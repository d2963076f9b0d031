// Timing a run of calls for the outage measurements (bench/outage.ts, bench/strictOutage.ts): the
// time of each call and what it returned, and a line that sums them up.
import { Effect, Exit } from "effect"

export interface Timing {
  readonly millis: ReadonlyArray<number>
  readonly outcomes: ReadonlyMap<string, number>
}

/** Calls of two kinds in turn: the outcomes of the even calls and of the odd ones. */
export interface Interleaved extends Timing {
  readonly kinds: readonly [ReadonlyMap<string, number>, ReadonlyMap<string, number>]
}

// Runs `op` `times` times in a row; the time of each and what each returned (an error's tag).
export const timed = <A, E extends { readonly _tag: string }>(
  times: number,
  op: (i: number) => Effect.Effect<A, E>
): Effect.Effect<Interleaved> =>
  Effect.gen(function* () {
    const millis: Array<number> = []
    const outcomes = new Map<string, number>()
    const kinds = [new Map<string, number>(), new Map<string, number>()] as const
    for (let i = 0; i < times; i++) {
      const started = performance.now()
      const exit = yield* Effect.exit(op(i))
      millis.push(performance.now() - started)
      const outcome = Exit.isSuccess(exit)
        ? "ok"
        : Exit.isFailure(exit) && exit.cause._tag === "Fail"
          ? `${exit.cause.error._tag}${"reason" in exit.cause.error ? ` ${String(exit.cause.error.reason)}` : ""}`
          : "defect"
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1)
      kinds[i % 2]!.set(outcome, (kinds[i % 2]!.get(outcome) ?? 0) + 1)
    }
    return { millis, outcomes, kinds }
  })

export const format = ({ millis, outcomes }: Timing): string => {
  const sorted = [...millis].sort((a, b) => a - b)
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
  const ms = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(2))
  const what = [...outcomes].map(([outcome, n]) => `${n}× ${outcome}`).join(", ")
  return `${millis.length} calls: p50 ${ms(at(0.5))} ms, max ${ms(sorted[sorted.length - 1]!)} ms (${what})`
}

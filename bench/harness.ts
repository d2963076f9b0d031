// The measuring machinery of `npm run bench`: cases, interleaved rounds, medians, ratios against
// baselines, targets, the printed table and bench/results.json. It knows nothing of Redis or
// PostgreSQL; the cases (bench/cases.ts) and their shared fixture (bench/fixture.ts) do.
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"

/**
 * Sequential: one operation at a time; every operation's latency is recorded and a round reports
 * their median. Concurrent: `inFlight` operations at a time; a round reports only its wall time,
 * as microseconds per operation (wall time / operations) and operations per second. In fiber: the
 * round's operations are handed to the case at once (`Runner.batch`), which runs them in one
 * Effect program, `inFlight` at a time (an `Effect.forEach` with that concurrency inside a single
 * `runPromise`), as an Effect application calls the library; a round reports its wall time, as
 * microseconds per operation and operations per second, as a concurrent one does. Samples: one
 * operation at a time, each of which measures a figure itself and resolves to it, in microseconds
 * (e.g. how long a change took to reach the cache, which is not the operation's own duration);
 * every measured sample of every round is kept, and the case reports their distribution (p50, p90,
 * p99, max) over the whole run.
 */
export type Kind =
  | { readonly _tag: "sequential" }
  | { readonly _tag: "concurrent"; readonly inFlight: number }
  | { readonly _tag: "inFiber"; readonly inFlight: number }
  | { readonly _tag: "samples" }

export const sequential: Kind = { _tag: "sequential" }
export const concurrent = (inFlight: number): Kind => ({ _tag: "concurrent", inFlight })
export const samples: Kind = { _tag: "samples" }
/** The round's operations in one Effect program, `inFlight` at a time (1: one after the other); see `Runner.batch`. */
export const inFiber = (inFlight: number): Kind => ({ _tag: "inFiber", inFlight })

/** What a case's figures are compared on, where lower is better. */
export type LowerIsBetter = "latency" | "1/throughput"

export const lowerIsBetter = (kind: Kind): LowerIsBetter =>
  kind._tag === "concurrent" || kind._tag === "inFiber" ? "1/throughput" : "latency"

/** What a case reports, for a target to judge. `ratio` is null without a baseline (or if the baseline failed). */
export interface Figures {
  readonly medianMicros: number
  readonly opsPerSecond: number
  readonly ratio: number | null
  /** The baseline's `medianMicros`, for a target on the difference; null as `ratio` is. */
  readonly baselineMicros: number | null
  readonly extras: Readonly<Record<string, number>>
  /** A `samples` case's measured samples over all rounds, in microseconds, sorted; empty for the other kinds. */
  readonly samples: ReadonlyArray<number>
}

export interface Target {
  /** As printed and written to results.json, e.g. "ratio <= 1.10". */
  readonly description: string
  readonly meets: (figures: Figures) => boolean
  /** The figure it judged, as printed and written to results.json (`measured`); default the ratio. */
  readonly measured?: ((figures: Figures) => string | undefined) | undefined
}

/** Ours / baseline on the lower-is-better figure is at most `max` (1.10: at most 10% slower). */
export const ratioAtMost = (max: number): Target => ({
  description: `ratio <= ${max.toFixed(2)}`,
  meets: (f) => f.ratio !== null && f.ratio <= max
})

/** Strictly ahead of the baseline: ratio below 1. */
export const ahead: Target = {
  description: "ratio < 1.00 (ahead)",
  meets: (f) => f.ratio !== null && f.ratio < 1
}

/**
 * Ours minus the baseline, on `medianMicros`, is at most `millis`: for a cost the issue states as a
 * fixed amount on top of the baseline's (a ratio would tighten or loosen it with the baseline).
 */
export const extraMillisAtMost = (millis: number): Target => ({
  description: `median - baseline <= ${millis} ms`,
  meets: (f) => f.baselineMicros !== null && f.medianMicros - f.baselineMicros <= millis * 1000,
  measured: (f) => {
    if (f.baselineMicros === null) return undefined
    const extra = (f.medianMicros - f.baselineMicros) / 1000
    return `${extra >= 0 ? "+" : ""}${extra.toFixed(2)} ms`
  }
})

const formatMillis = (micros: number): string => `${(micros / 1000).toFixed(micros >= 100_000 ? 0 : 1)} ms`

/**
 * For a `samples` case: each given quantile of the samples over the whole run (1 is the maximum)
 * is at most its bound in milliseconds, e.g. `[[0.99, 100], [1, 1000]]`.
 */
export const samplesAtMost = (bounds: ReadonlyArray<readonly [quantile: number, millis: number]>): Target => ({
  description: bounds.map(([q, millis]) => `${quantileName(q)} <= ${millis} ms`).join(", "),
  meets: (f) => f.samples.length > 0 && bounds.every(([q, millis]) => quantile(f.samples, q) <= millis * 1000),
  measured: (f) =>
    f.samples.length === 0
      ? undefined
      : bounds.map(([q]) => `${quantileName(q)} ${formatMillis(quantile(f.samples, q))}`).join(", ")
})

/** An extra figure (see `Runner.afterRound`, aggregated as the worst round: the maximum) is at most `max`. */
export const extraAtMost = (field: string, max: number): Target => ({
  description: `${field} <= ${max}`,
  meets: (f) => f.extras[field] !== undefined && f.extras[field] <= max
})

/** A case, set up once per run. */
export interface Runner {
  /**
   * One operation. `i` counts this case's operations over the whole run, warm-ups included, and
   * never repeats, so a case can hand out a fresh key per operation (a miss, a cold key).
   * A rejection fails the case (and makes the process exit non-zero). In a `samples` case it
   * resolves to the sample it measured, in microseconds (anything but a finite number fails it).
   * Required by every kind but `inFiber`.
   */
  readonly op?: ((i: number) => Promise<unknown>) | undefined
  /**
   * An `inFiber` case's operations `start` to `start + count - 1` (numbered as `op`'s `i`), all in
   * one program (one `runPromise`), `inFlight` at a time; resolves when all are done. A rejection
   * fails the case. Required by an `inFiber` case, and only used by one.
   */
  readonly batch?: ((start: number, count: number) => Promise<unknown>) | undefined
  /** Before each round's warm-up. */
  readonly beforeRound?: (round: number) => void | Promise<void>
  /**
   * After each round's measured operations: extra figures, such as `{ storeQueries: 1 }`. Each is
   * written to results.json as its worst (maximum) round, plus `<field>PerRound`.
   */
  readonly afterRound?: (round: number) => Readonly<Record<string, number>> | Promise<Readonly<Record<string, number>>>
  /** Once, after the last round. */
  readonly teardown?: () => Promise<void>
}

export interface Comparison {
  /** The name of another case. */
  readonly baseline: string
  readonly target?: Target | undefined
}

export interface Case<F> {
  readonly case: string
  readonly kind: Kind
  /**
   * Measured operations per round. Default: calibrated once, before the first round, to fill the
   * run's time budget per round (`RunOptions.budgetMillis`), within `maxOps`.
   */
  readonly ops?: number | undefined
  /** The most operations a calibrated round may run (e.g. when each takes a fresh key). */
  readonly maxOps?: number | undefined
  /** Unmeasured operations before them, every round. Default a tenth of `ops`. */
  readonly warmup?: number | undefined
  /**
   * The most operations the case's warm-up before calibration may run (see `RunOptions.warmupMillis`),
   * e.g. when each takes a fresh key. Default: as many as fit the time.
   */
  readonly maxWarmupOps?: number | undefined
  /** What one operation is, when it is not one call (e.g. "100 reads"). Default "op". */
  readonly unit?: string | undefined
  /** The case this one is compared with (the `ratio` in results.json), or null. */
  readonly baseline: string | null
  /** On the ratio against `baseline`, or on an extra figure. */
  readonly target?: Target | undefined
  /** Further baselines, printed under the case and written to results.json as `comparisons`. */
  readonly also?: ReadonlyArray<Comparison> | undefined
  readonly note?: string | undefined
  readonly setup: (fixture: F) => Promise<Runner>
}

export interface ComparisonResult {
  readonly baseline: string
  readonly ratio: number | null
  /** The median over rounds of each round's own ratio (the two measured in the same round): less sensitive to drift. */
  readonly pairedRatio: number | null
  /** Ours / baseline on the process's CPU time per operation (`Result.cpuMicros`). */
  readonly cpuRatio: number | null
  readonly target?: string
  readonly meetsTarget?: boolean
  readonly measured?: string
}

/** A `samples` case's distribution over all its measured samples, in milliseconds. */
export interface SampleMillis {
  readonly count: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
}

/** One entry of bench/results.json. */
export interface Result {
  readonly case: string
  readonly kind: "sequential" | "concurrent" | "inFiber" | "samples"
  readonly inFlight: number
  readonly unit: string
  /**
   * Median over rounds of: the median latency (sequential), or wall time / operations (concurrent, in fiber);
   * for a `samples` case, the median of all its samples.
   */
  readonly medianMicros: number | null
  /** Median over rounds of operations per second (null for a `samples` case: its operations are probes). */
  readonly opsPerSecond: number | null
  /**
   * Median over rounds of this process's CPU time per operation (every thread of it, not Redis's or
   * PostgreSQL's): far steadier than wall time on a shared machine, and what the library adds.
   */
  readonly cpuMicros: number | null
  /** Ours / baseline on `cpuMicros`. */
  readonly cpuRatio: number | null
  /** A `samples` case's distribution. */
  readonly sampleMillis?: SampleMillis
  /** The figure the ratio compares, lower is better: latency for sequential cases, 1/throughput for concurrent and in-fiber ones. */
  readonly lowerIsBetter: LowerIsBetter
  readonly baseline: string | null
  /** Ours / baseline on the lower-is-better figure (of the medians): below 1 means ahead of the baseline. */
  readonly ratio: number | null
  /** The median over rounds of each round's own ratio (the two measured in the same round): less sensitive to drift. */
  readonly pairedRatio: number | null
  readonly target?: string
  readonly meetsTarget?: boolean
  /** What the target judged, where it is not the ratio (e.g. "+1.20 ms"). */
  readonly measured?: string
  readonly comparisons: ReadonlyArray<ComparisonResult>
  readonly rounds: number
  readonly opsPerRound: number
  readonly warmupPerRound: number
  /** Relative interquartile range of the per-round figures: a noise indicator. */
  readonly spread: number | null
  readonly roundMicros: ReadonlyArray<number>
  readonly roundOpsPerSecond: ReadonlyArray<number>
  readonly note?: string
  readonly error?: string
  readonly [extra: string]: unknown
}

const now = (): bigint => process.hrtime.bigint()

const median = (values: ArrayLike<number>): number => {
  const sorted = Float64Array.from(values).sort()
  const n = sorted.length
  if (n === 0) return Number.NaN
  return n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2
}

const quantile = (values: ArrayLike<number>, q: number): number => {
  const sorted = Float64Array.from(values).sort()
  if (sorted.length === 0) return Number.NaN
  const position = (sorted.length - 1) * q
  const low = Math.floor(position)
  const high = Math.ceil(position)
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (position - low)
}

/** 0.99 is "p99", 1 is "max". */
const quantileName = (q: number): string => (q === 1 ? "max" : `p${Math.round(q * 1000) / 10}`)

/** `gc()`: from `--expose-gc`, or enabled at run time through V8's flags; undefined if neither works. */
export const findGc = (): (() => void) | undefined => {
  const exposed = (globalThis as { gc?: () => void }).gc
  if (typeof exposed === "function") return exposed
  try {
    setFlagsFromString("--expose-gc")
    const gc = runInNewContext("gc") as unknown
    return typeof gc === "function" ? (gc as () => void) : undefined
  } catch {
    return undefined
  }
}

interface RoundFigures {
  readonly micros: number
  readonly opsPerSecond: number
  /** This process's CPU time (every thread: the run loop, GC, the compiler) per operation. */
  readonly cpuMicros: number
}

/** `run`'s figures, with the process's CPU time per operation over it. */
const withCpu = async (count: number, run: () => Promise<Omit<RoundFigures, "cpuMicros">>): Promise<RoundFigures> => {
  const before = process.cpuUsage()
  const figures = await run()
  const used = process.cpuUsage(before)
  return { ...figures, cpuMicros: count === 0 ? Number.NaN : (used.user + used.system) / count }
}

// Runs `count` operations from `start` the case's way; returns the round's figures. Concurrent
// workers stop taking operations as soon as one fails.
const runOps = (
  kind: Kind,
  runner: Runner,
  start: number,
  count: number,
  latencies: Float64Array
): Promise<RoundFigures> => withCpu(count, () => timeOps(kind, runner, start, count, latencies))

const timeOps = async (
  kind: Kind,
  runner: Runner,
  start: number,
  count: number,
  latencies: Float64Array
): Promise<Omit<RoundFigures, "cpuMicros">> => {
  if (kind._tag === "inFiber") {
    if (count === 0) return { micros: Number.NaN, opsPerSecond: Number.NaN }
    const began = now()
    await runner.batch!(start, count)
    const wall = Number(now() - began) / 1000
    return { micros: wall / count, opsPerSecond: (count * 1e6) / wall }
  }
  const op = runner.op!
  if (kind._tag === "sequential") {
    const began = now()
    for (let k = 0; k < count; k++) {
      const t0 = now()
      await op(start + k)
      latencies[k] = Number(now() - t0) / 1000
    }
    const wall = Number(now() - began) / 1000
    return { micros: median(latencies.subarray(0, count)), opsPerSecond: (count * 1e6) / wall }
  }
  if (kind._tag === "samples") {
    const began = now()
    for (let k = 0; k < count; k++) {
      const sample = await op(start + k)
      if (typeof sample !== "number" || !Number.isFinite(sample)) {
        throw new Error(`operation ${start + k} resolved to ${String(sample)}, not a sample in microseconds`)
      }
      latencies[k] = sample
    }
    const wall = Number(now() - began) / 1000
    return { micros: median(latencies.subarray(0, count)), opsPerSecond: (count * 1e6) / wall }
  }
  let next = 0
  let failure: { readonly error: unknown } | undefined
  const worker = async () => {
    while (next < count) {
      const k = next++
      try {
        await op(start + k)
      } catch (error) {
        failure ??= { error }
        next = count
      }
    }
  }
  const began = now()
  await Promise.all(Array.from({ length: Math.min(kind.inFlight, count) }, worker))
  const wall = Number(now() - began) / 1000
  if (failure !== undefined) throw failure.error
  return { micros: wall / count, opsPerSecond: (count * 1e6) / wall }
}

interface State<F> {
  readonly spec: Case<F>
  runner: Runner | undefined
  cursor: number
  ops: number
  warmup: number
  readonly rounds: Array<RoundFigures>
  readonly extras: Map<string, Array<number>>
  /** A `samples` case's measured samples, all rounds. */
  readonly samples: Array<number>
  error: string | undefined
}

const describeError = (error: unknown): string =>
  error instanceof Error ? `${error.name}: ${error.message}` : typeof error === "string" ? error : JSON.stringify(error)

export interface RunOptions {
  readonly rounds: number
  /** The measured time a calibrated case aims for in each round, in milliseconds. */
  readonly budgetMillis: number
  /** How long each calibrated case runs, unmeasured, before it is calibrated (see `warmUp`). */
  readonly warmupMillis: number
  /** Called as progress is made (one line per round). */
  readonly log: (line: string) => void
  readonly gc: (() => void) | undefined
}

// The first operations of a path cost two to three times the later ones while V8 optimizes it, and
// its compiler threads compete with Redis and PostgreSQL for the cores: measured, a miss took
// about 2,500 reads in one process to settle (1.6 ms, then 1.0 ms, then 0.6 ms a read, a thousand
// reads each). A round's own warm-up is a tenth of its operations, far too short; so each
// calibrated case first runs for `millis`, in batches growing to at most 512 operations.
const warmUp = async <F>(state: State<F>, millis: number, latencies: Float64Array): Promise<void> => {
  const spec = state.spec
  const max = spec.maxWarmupOps ?? Number.POSITIVE_INFINITY
  let count = spec.kind._tag === "concurrent" || spec.kind._tag === "inFiber" ? spec.kind.inFlight * 2 : 4
  let done = 0
  const began = now()
  while (done < max && Number(now() - began) / 1e6 < millis) {
    const batch = Math.min(count, max - done, latencies.length)
    await runOps(spec.kind, state.runner!, state.cursor, batch, latencies)
    state.cursor += batch
    done += batch
    count = Math.min(count * 2, Math.max(512, count))
  }
}

// Operations per round for a case without a fixed count: run it (this also warms it up) with a
// doubling count until a batch takes an eighth of the budget, then scale to the budget.
const calibrate = async <F>(state: State<F>, budgetMillis: number, latencies: Float64Array): Promise<number> => {
  const spec = state.spec
  const max = spec.maxOps ?? 1_000_000
  const inFlight = spec.kind._tag === "concurrent" || spec.kind._tag === "inFiber" ? spec.kind.inFlight : 1
  const min = inFlight > 1 ? Math.min(max, inFlight * 4) : 5
  let count = inFlight > 1 ? inFlight * 2 : 4
  for (;;) {
    count = Math.min(count, max, latencies.length)
    const began = now()
    await runOps(spec.kind, state.runner!, state.cursor, count, latencies)
    state.cursor += count
    const millis = Number(now() - began) / 1e6
    if (millis >= budgetMillis / 8 || count >= max || count >= latencies.length) {
      return Math.max(min, Math.min(max, Math.round((count * budgetMillis) / Math.max(millis, 1e-3))))
    }
    count *= 2
  }
}

/**
 * Sets every case up and calibrates the ones without a fixed operation count, then runs `rounds`
 * rounds, round-robin over the cases; each round of a case is a GC, its warm-up, then its
 * measured operations. A case that throws is reported with its error and left out of the
 * remaining rounds; the others go on.
 */
export const runCases = async <F>(
  cases: ReadonlyArray<Case<F>>,
  fixture: F,
  options: RunOptions
): Promise<ReadonlyArray<Result>> => {
  const names = new Set<string>()
  for (const spec of cases) {
    if (names.has(spec.case)) throw new Error(`two cases are named ${JSON.stringify(spec.case)}`)
    names.add(spec.case)
  }
  for (const spec of cases) {
    for (const baseline of [spec.baseline, ...(spec.also ?? []).map((c) => c.baseline)]) {
      if (baseline !== null && !names.has(baseline)) {
        throw new Error(`case ${JSON.stringify(spec.case)}: no baseline case named ${JSON.stringify(baseline)}`)
      }
    }
  }
  const states: Array<State<F>> = cases.map((spec) => ({
    spec,
    runner: undefined,
    cursor: 0,
    ops: spec.ops ?? 0,
    warmup: spec.warmup ?? 0,
    rounds: [],
    extras: new Map(),
    samples: [],
    error: undefined
  }))
  for (const state of states) {
    try {
      const runner = await state.spec.setup(fixture)
      const needs = state.spec.kind._tag === "inFiber" ? "batch" : "op"
      if (runner[needs] === undefined) throw new Error(`a ${state.spec.kind._tag} case's runner needs \`${needs}\``)
      state.runner = runner
    } catch (error) {
      state.error = `setup: ${describeError(error)}`
      options.log(`  ! ${state.spec.case}: ${state.error}`)
    }
  }
  let latencies = new Float64Array(1 << 16)
  for (const state of states) {
    if (state.runner === undefined || state.error !== undefined) continue
    try {
      if (state.spec.ops === undefined) {
        await warmUp(state, options.warmupMillis, latencies)
        state.ops = await calibrate(state, options.budgetMillis, latencies)
      }
      state.warmup = state.spec.warmup ?? Math.ceil(state.ops / 10)
      options.log(`  ${state.spec.case}: ${state.ops} operations per round, after ${state.warmup}`)
    } catch (error) {
      state.error = `calibration: ${describeError(error)}`
      options.log(`  ! ${state.spec.case}: ${state.error}`)
    }
  }
  latencies = new Float64Array(Math.max(latencies.length, ...states.map((s) => Math.max(s.ops, s.warmup))))
  for (let round = 0; round < options.rounds; round++) {
    const began = now()
    for (const state of states) {
      const runner = state.runner
      if (runner === undefined || state.error !== undefined) continue
      const spec = state.spec
      try {
        await runner.beforeRound?.(round)
        options.gc?.()
        await runOps(spec.kind, runner, state.cursor, state.warmup, latencies)
        state.cursor += state.warmup
        const figures = await runOps(spec.kind, runner, state.cursor, state.ops, latencies)
        state.cursor += state.ops
        state.rounds.push(figures)
        if (spec.kind._tag === "samples") state.samples.push(...latencies.subarray(0, state.ops))
        const extras = (await runner.afterRound?.(round)) ?? {}
        for (const [field, value] of Object.entries(extras)) {
          const values = state.extras.get(field) ?? []
          values.push(value)
          state.extras.set(field, values)
        }
      } catch (error) {
        state.error = `round ${round + 1}: ${describeError(error)}`
        options.log(`  ! ${spec.case}: ${state.error}`)
      }
    }
    options.log(`  round ${round + 1}/${options.rounds} done in ${(Number(now() - began) / 1e9).toFixed(1)} s`)
  }
  for (const state of states) {
    try {
      await state.runner?.teardown?.()
    } catch (error) {
      state.error ??= `teardown: ${describeError(error)}`
    }
  }

  const figuresOf = new Map<string, Figures & { readonly kind: Kind; readonly rounds: ReadonlyArray<RoundFigures> }>()
  for (const state of states) {
    if (state.error !== undefined || state.rounds.length === 0) continue
    const extras: Record<string, number> = {}
    for (const [field, values] of state.extras) extras[field] = Math.max(...values)
    const sorted = Array.from(Float64Array.from(state.samples).sort())
    figuresOf.set(state.spec.case, {
      kind: state.spec.kind,
      medianMicros: state.spec.kind._tag === "samples" ? median(sorted) : median(state.rounds.map((r) => r.micros)),
      opsPerSecond: median(state.rounds.map((r) => r.opsPerSecond)),
      ratio: null,
      baselineMicros: null,
      extras,
      samples: sorted,
      rounds: state.rounds
    })
  }
  const ratio = (ours: string, baseline: string): number | null => {
    const a = figuresOf.get(ours)
    const b = figuresOf.get(baseline)
    if (a === undefined || b === undefined) return null
    return lowerIsBetter(a.kind) === "1/throughput" ? b.opsPerSecond / a.opsPerSecond : a.medianMicros / b.medianMicros
  }
  const pairedRatio = (ours: string, baseline: string): number | null => {
    const a = figuresOf.get(ours)
    const b = figuresOf.get(baseline)
    if (a === undefined || b === undefined) return null
    const n = Math.min(a.rounds.length, b.rounds.length)
    const ratios = Array.from({ length: n }, (_, r) =>
      lowerIsBetter(a.kind) === "1/throughput"
        ? b.rounds[r]!.opsPerSecond / a.rounds[r]!.opsPerSecond
        : a.rounds[r]!.micros / b.rounds[r]!.micros
    )
    return n === 0 ? null : median(ratios)
  }
  const cpuOf = (figures: { readonly rounds: ReadonlyArray<RoundFigures> }) =>
    median(figures.rounds.map((r) => r.cpuMicros))
  const cpuRatio = (ours: string, baseline: string): number | null => {
    const a = figuresOf.get(ours)
    const b = figuresOf.get(baseline)
    return a === undefined || b === undefined ? null : cpuOf(a) / cpuOf(b)
  }
  const judge = (figures: Figures | undefined, target: Target | undefined) => {
    if (target === undefined) return {}
    const measured = figures === undefined ? undefined : target.measured?.(figures)
    return {
      target: target.description,
      meetsTarget: figures !== undefined && target.meets(figures),
      ...(measured === undefined ? {} : { measured })
    }
  }

  return states.map((state): Result => {
    const spec = state.spec
    const own = figuresOf.get(spec.case)
    const mainRatio = spec.baseline === null ? null : ratio(spec.case, spec.baseline)
    const against = (baseline: string, r: number | null): Figures | undefined =>
      own === undefined
        ? undefined
        : { ...own, ratio: r, baselineMicros: r === null ? null : figuresOf.get(baseline)!.medianMicros }
    const roundMicros = state.rounds.map((r) => r.micros)
    const roundOps = state.rounds.map((r) => r.opsPerSecond)
    const main = lowerIsBetter(spec.kind) === "latency" ? roundMicros : roundOps
    const extras: Record<string, unknown> = {}
    for (const [field, values] of state.extras) {
      extras[field] = Math.max(...values)
      extras[`${field}PerRound`] = values
    }
    const isSamples = spec.kind._tag === "samples"
    const inMillis = (q: number) => Math.round(quantile(own!.samples, q)) / 1000
    return {
      case: spec.case,
      kind: spec.kind._tag,
      inFlight: spec.kind._tag === "concurrent" || spec.kind._tag === "inFiber" ? spec.kind.inFlight : 1,
      unit: spec.unit ?? "op",
      medianMicros: own?.medianMicros ?? null,
      opsPerSecond: isSamples ? null : (own?.opsPerSecond ?? null),
      cpuMicros: own === undefined ? null : cpuOf(own),
      cpuRatio: spec.baseline === null ? null : cpuRatio(spec.case, spec.baseline),
      ...(isSamples && own !== undefined && own.samples.length > 0
        ? {
            sampleMillis: {
              count: own.samples.length,
              p50: inMillis(0.5),
              p90: inMillis(0.9),
              p99: inMillis(0.99),
              max: inMillis(1)
            }
          }
        : {}),
      lowerIsBetter: lowerIsBetter(spec.kind),
      baseline: spec.baseline,
      ratio: mainRatio,
      pairedRatio: spec.baseline === null ? null : pairedRatio(spec.case, spec.baseline),
      ...judge(spec.baseline === null ? own : against(spec.baseline, mainRatio), spec.target),
      comparisons: (spec.also ?? []).map((c) => {
        const r = ratio(spec.case, c.baseline)
        return {
          baseline: c.baseline,
          ratio: r,
          pairedRatio: pairedRatio(spec.case, c.baseline),
          cpuRatio: cpuRatio(spec.case, c.baseline),
          ...judge(against(c.baseline, r), c.target)
        }
      }),
      rounds: state.rounds.length,
      opsPerRound: state.ops,
      warmupPerRound: state.warmup,
      spread: main.length === 0 ? null : (quantile(main, 0.75) - quantile(main, 0.25)) / median(main),
      roundMicros,
      roundOpsPerSecond: roundOps,
      ...extras,
      ...(spec.note === undefined ? {} : { note: spec.note }),
      ...(state.error === undefined ? {} : { error: state.error })
    }
  })
}

// ---- Printing ----

const formatMicros = (micros: number | null): string =>
  micros === null ? "-" : micros >= 10_000 ? micros.toFixed(0) : micros >= 100 ? micros.toFixed(1) : micros.toFixed(2)

const formatRate = (rate: number | null): string =>
  rate === null
    ? "-"
    : rate >= 10_000
      ? `${(rate / 1000).toFixed(1)}k`
      : rate >= 100
        ? rate.toFixed(0)
        : rate.toFixed(1)

const formatRatio = (ratio: number | null): string => (ratio === null ? "-" : `${ratio.toFixed(2)}x`)

const status = (meets: boolean | undefined): string => (meets === undefined ? "" : meets ? "PASS" : "FAIL")

const table = (
  header: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<string>>,
  right: ReadonlySet<number>
) => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((cell, i) => (right.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd()
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

/** The table of `npm run bench`, then each target's status. */
export const formatResults = (results: ReadonlyArray<Result>): string => {
  const rows: Array<Array<string>> = []
  for (const r of results) {
    const kind =
      r.kind === "sequential"
        ? "seq"
        : r.kind === "samples"
          ? "samples"
          : r.kind === "inFiber"
            ? r.inFlight === 1
              ? "fiber, seq"
              : `fiber, ${r.inFlight} in flight`
            : `${r.inFlight} in flight`
    const distribution =
      r.sampleMillis === undefined
        ? []
        : [
            `p50 ${r.sampleMillis.p50} ms, p90 ${r.sampleMillis.p90} ms, p99 ${r.sampleMillis.p99} ms, ` +
              `max ${r.sampleMillis.max} ms (${r.sampleMillis.count} samples)`
          ]
    const extra = Object.keys(r)
      .filter((k) => r[`${k}PerRound`] !== undefined)
      .map((k) => `${k} ${String(r[k])} (per round: ${(r[`${k}PerRound`] as Array<number>).join(",")})`)
    const notes = [...distribution, ...extra, ...(r.error === undefined ? [] : [`ERROR ${r.error}`])].join("; ")
    rows.push([
      r.case,
      kind,
      r.unit,
      formatMicros(r.medianMicros),
      formatRate(r.opsPerSecond),
      r.kind === "samples" ? "-" : formatMicros(r.cpuMicros),
      r.spread === null ? "-" : `${(r.spread * 100).toFixed(0)}%`,
      r.baseline ?? "",
      formatRatio(r.ratio),
      formatRatio(r.pairedRatio),
      r.kind === "samples" ? "-" : formatRatio(r.cpuRatio),
      r.target ?? "",
      status(r.meetsTarget),
      notes
    ])
    for (const c of r.comparisons) {
      rows.push([
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        `vs ${c.baseline}`,
        formatRatio(c.ratio),
        formatRatio(c.pairedRatio),
        r.kind === "samples" ? "-" : formatRatio(c.cpuRatio),
        c.target ?? "",
        status(c.meetsTarget),
        ""
      ])
    }
  }
  const header = [
    "case",
    "kind",
    "unit",
    "median µs",
    "ops/s",
    "cpu µs",
    "spread",
    "baseline",
    "ratio",
    "paired",
    "cpu ratio",
    "target",
    "",
    "notes"
  ]
  const targets: Array<string> = []
  const measured = (r: Result, c: { readonly ratio: number | null; readonly measured?: string }) =>
    c.measured !== undefined
      ? ` (measured ${c.measured})`
      : c.ratio === null
        ? ""
        : ` (measured ${formatRatio(c.ratio)} on ${r.lowerIsBetter})`
  for (const r of results) {
    const against = (baseline: string | null) => (baseline === null ? "" : ` vs ${baseline}`)
    if (r.target !== undefined) {
      targets.push(`  ${status(r.meetsTarget)}  ${r.case}${against(r.baseline)}: ${r.target}${measured(r, r)}`)
    }
    for (const c of r.comparisons) {
      if (c.target === undefined) continue
      targets.push(`  ${status(c.meetsTarget)}  ${r.case}${against(c.baseline)}: ${c.target}${measured(r, c)}`)
    }
  }
  return [
    table(header, rows, new Set([3, 4, 5, 6, 8, 9, 10])),
    "",
    "median µs: sequential cases, the median over rounds of each round's median latency; concurrent and in-fiber cases, wall time / operations;",
    "  samples cases (each operation measures a figure itself, e.g. the change feed's lag), the median of all samples (notes: p50 to max).",
    "ratio: ours / baseline where lower is better (latency when sequential, 1/throughput when concurrent or in fiber); below 1.00x is ahead.",
    "paired: the median of the per-round ratios (both measured in the same round); targets are judged on ratio.",
    "cpu µs: this process's CPU time per operation (all its threads: the run loop, GC, the compiler; not Redis's nor PostgreSQL's),",
    "  the median over rounds; steadier than wall time on a shared machine. cpu ratio: ours / baseline on it.",
    "spread: interquartile range of the per-round figures, relative to their median.",
    "",
    `targets (${targets.filter((t) => t.includes("PASS")).length} of ${targets.length} met; reported, never enforced):`,
    ...targets
  ].join("\n")
}

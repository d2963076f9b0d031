// A short run of the chaos workload (test/chaos/run.ts; `npm run chaos` runs the full one): three
// processes against the real Postgres and a Redis of the test's own behind a fault proxy, every
// fault kind firing (a worker SIGKILLed among them), setMany and WriteThrough.transaction among the
// writes, a foreign writer updating the hot keys and some cold ones (which only it writes) with
// plain SQL, the store capturing every change; checked by the history checker. The same without
// faults, where no read may go back in time; with the in-process tier, bounded (its lag measured)
// and strict (no lag). And what the checker must catch: the cold keys stale
// without change capture, and the naive write-through.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { type ChaosOptions, type ChaosSummary, pgLayer, runChaos, summaryLine } from "./chaos/run.js"

const short: ChaosOptions = {
  processes: 3,
  fibers: 8,
  keys: 4,
  runMillis: 9_000,
  settleMillis: 3_000,
  naive: false,
  near: false,
  faults: true,
  changeCapture: true,
  foreignWrites: true,
  workerKills: true,
  pauseProbability: 0.1,
  faultEveryMillis: 800
}

/**
 * No read of a failed write, lost write, committed failure, partial call or unconverged key, and
 * no read older than a write or an earlier read of its own process. Reads across processes may go
 * back in time; with `crossProcessStale` they may also trail another process's acknowledged write.
 * The violations are printed with their details.
 */
const expectClean = (summary: ChaosSummary, { crossProcessStale }: { readonly crossProcessStale: boolean }) => {
  const tolerated = (v: ChaosSummary["violations"][number]) =>
    v.ownProcess !== true && (v.check === "non-monotonic read" || (crossProcessStale && v.check === "stale read"))
  expect(summary.violations.filter((v) => !tolerated(v)).slice(0, 10)).toEqual([])
  expect(summary).toMatchObject({
    ...(crossProcessStale ? { ownStaleReads: 0 } : { staleReads: 0 }),
    failedWriteReads: 0,
    lostWrites: 0,
    unconverged: 0,
    committedFailedWrites: 0,
    partialCalls: 0,
    unlistedKeys: 0,
    ownNonMonotonicReads: 0
  })
}

describe("chaos", () => {
  it.live(
    "no stale read, no read of a failed write, no lost write, and every key converges, under every fault",
    () =>
      Effect.gen(function* () {
        const summary = yield* runChaos(short)
        for (const kind of Object.keys(summary.faults) as Array<keyof typeof summary.faults>) {
          expect(summary.faults[kind], kind).toBeGreaterThan(0)
        }
        expect(summary.reads).toBeGreaterThan(500)
        expect(summary.writes).toBeGreaterThan(200)
        expect(summary.calls.setMany.ok, "acknowledged setMany calls").toBeGreaterThan(0)
        expect(summary.calls.transaction.ok, "acknowledged transactions").toBeGreaterThan(0)
        expect(summary.foreignWrites, "acknowledged foreign writes").toBeGreaterThan(10)
        // Under faults, a process the cache failed reads the store, and may see a write whose cache
        // update has not landed while another process still reads the older cached value: reads
        // across processes may go back in time until the update or the feed's tombstone lands
        // (measured, not asserted). Within a process they never do.
        expectClean(summary, { crossProcessStale: false })
        console.log(
          `under faults: ${summary.nonMonotonicReads} of ${summary.reads} reads went back in time across processes; ` +
            `foreign-write lag p50 ${summary.foreignLag.p50} ms, p99 ${summary.foreignLag.p99} ms, max ${summary.foreignLag.max} ms`
        )
      }).pipe(Effect.scoped, Effect.provide(pgLayer)),
    120_000
  )

  it.live(
    "without faults: no read goes back in time, and plain SQL writes reach the cache through the feed",
    () =>
      Effect.gen(function* () {
        const summary = yield* runChaos({ ...short, faults: false, workerKills: false })
        expect(summary.reads).toBeGreaterThan(500)
        expect(summary.foreignWrites, "acknowledged foreign writes").toBeGreaterThan(10)
        expect(summary.violations.slice(0, 10)).toEqual([])
        expect(summary).toMatchObject({ staleReads: 0, nonMonotonicReads: 0, lostWrites: 0, unconverged: 0 })
        // The lag is a timing: measured here, its aim checked by `npm run chaos` and `npm run bench`.
        console.log(
          `without faults: foreign-write lag p50 ${summary.foreignLag.p50} ms, p99 ${summary.foreignLag.p99} ms, max ${summary.foreignLag.max} ms`
        )
      }).pipe(Effect.scoped, Effect.provide(pgLayer)),
    120_000
  )

  it.live(
    "without change capture, the checker sees what the foreign writer changed stay stale in the cache",
    () =>
      Effect.gen(function* () {
        const summary = yield* runChaos({ ...short, faults: false, workerKills: false, changeCapture: false })
        // The cold keys, which only the foreign writer changes, keep the version first cached.
        expect(summary.unconverged, summaryLine(summary)).toBeGreaterThan(0)
        expect(summary.foreignStaleReads, summaryLine(summary)).toBeGreaterThan(0)
      }).pipe(Effect.scoped, Effect.provide(pgLayer)),
    120_000
  )

  it.live(
    "with the in-process tier on: no read of a failed write, no lost write, every key converges; staleness measured",
    () =>
      Effect.gen(function* () {
        const summary = yield* runChaos({ ...short, near: true })
        expect(summary.reads).toBeGreaterThan(500)
        expect(summary.calls.setMany.ok + summary.calls.transaction.ok).toBeGreaterThan(0)
        // Reads in other processes may trail a write, or go back in time, by an announcement's delay;
        // a process reads its own writes at once, even a pipelined setMany's reply settling late.
        expectClean(summary, { crossProcessStale: true })
        // Reads in other processes may trail a write by the announcement's delay: measured, not asserted.
        console.log(
          `near tier: ${summary.staleReads} of ${summary.reads} reads trailed a write, by at most ${(summary.maxStaleMicros / 1000).toFixed(1)} ms; ` +
            `${summary.ownStaleReads} trailed a write of their own process`
        )
      }).pipe(Effect.scoped, Effect.provide(pgLayer)),
    120_000
  )

  it.live(
    "with the in-process tier in strict mode: no read in any process trails an acknowledged write, under every fault",
    () =>
      Effect.gen(function* () {
        const summary = yield* runChaos({ ...short, near: true, strict: true })
        expect(summary.reads).toBeGreaterThan(500)
        expect(summary.calls.setMany.ok + summary.calls.transaction.ok).toBeGreaterThan(0)
        // As with the tier off: reads across processes may go back in time while a write is not yet
        // acknowledged; none may trail one that is.
        expectClean(summary, { crossProcessStale: false })
      }).pipe(Effect.scoped, Effect.provide(pgLayer)),
    120_000
  )

  it.live(
    "the checker catches a naive write-through (plain SET, no versions) under the same workload",
    () =>
      Effect.gen(function* () {
        const summary = yield* runChaos({ ...short, naive: true })
        expect(summary.staleReads, summaryLine(summary)).toBeGreaterThan(0)
      }).pipe(Effect.scoped, Effect.provide(pgLayer)),
    120_000
  )
})

// Property tests: fast-check's scheduler explores the interleavings of concurrent get/set/delete over the
// in-memory tiers, one step (a call to the cache or the store) at a time, and the history checker of
// test/chaos must find nothing wrong. The same workload over a naive cache must be caught.
//
// A failure prints the checker's violations, the history, every step in the order it was released, and
// fast-check's seed and path. To replay it, pick the property with -t and pass them on:
//   FC_SEED=<seed> FC_PATH=<path> npx vitest run test/Properties.test.ts -t "<the test's name>"
// To explore longer, PROPERTIES_SCALE=50 multiplies every property's number of runs.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, Schedule, Schema, TestContext } from "effect"
import fc from "fast-check"
import { Cache, MemoryCache, MemoryStore, Store, WriteThrough } from "../src/index.js"
import { check, type Committed, type FinalState, type Op, type Report } from "./chaos/checker.js"
import {
  act,
  Actor,
  drive,
  formatSteps,
  makeRecorder,
  naiveCache,
  type Recorder,
  scheduledCache,
  scheduledStore,
  scripted,
  type Stepper,
  UnderlyingCache,
  UnderlyingStore
} from "./support/interleaving.js"

// fast-check's options for a property: its number of runs, scaled, and a seed and path to replay.
const runs = (numRuns: number): fc.Parameters<unknown> => {
  const scale = Number(process.env["PROPERTIES_SCALE"] ?? "1")
  const seed = process.env["FC_SEED"]
  const path = process.env["FC_PATH"]
  return {
    numRuns: Math.max(1, Math.round(numRuns * scale)),
    ...(seed === undefined ? {} : { seed: Number(seed) }),
    ...(path === undefined ? {} : { path })
  }
}

const Item = Schema.Struct({ id: Schema.String, payload: Schema.String })
type Item = typeof Item.Type

const entity = "items"
const fields = ["id", "payload"]
const item = (key: string, payload: string): Item => ({ id: key, payload })
const payloadOf = (value: unknown): string =>
  typeof value === "object" && value !== null && "payload" in value ? String(value.payload) : JSON.stringify(value)

type Kind = "get" | "set" | "delete"

interface Command {
  readonly kind: Kind
  readonly key: string
}

/** What a key holds before the concurrent part: nothing; a row only; a row and its cache entry; a tombstone. */
type Prelude = "absent" | "cold" | "warm" | "tombstoned"

interface Workload {
  /** WriteThrough instances over the same tiers, each with its own single flight; fiber f uses f % processes. */
  readonly processes: number
  readonly prelude: ReadonlyArray<readonly [string, Prelude]>
  readonly fibers: ReadonlyArray<ReadonlyArray<Command>>
  /** Run one after another once every fiber is done: reads that begin after every write was acknowledged. */
  readonly after: ReadonlyArray<Command>
}

const workload: fc.Arbitrary<Workload> = fc.integer({ min: 1, max: 2 }).chain((keyCount) => {
  const keys = ["a", "b"].slice(0, keyCount)
  const command = fc.record({ kind: fc.constantFrom<Kind>("get", "set", "delete"), key: fc.constantFrom(...keys) })
  return fc.record({
    processes: fc.integer({ min: 1, max: 2 }),
    prelude: fc.tuple(
      ...keys.map((key) =>
        fc.constantFrom<Prelude>("absent", "cold", "warm", "tombstoned").map((p) => [key, p] as const)
      )
    ),
    fibers: fc.array(fc.array(command, { minLength: 1, maxLength: 4 }), { minLength: 2, maxLength: 5 }),
    after: fc.constant(keys.map((key) => ({ kind: "get" as const, key })))
  })
})

// Race (f) in process: a reader's load is in flight (its answer held back) while another fiber of the
// same process writes and then reads. Only a delete leaves that late read a miss (a set leaves its value
// in the cache), so mostly deletes; the row is in the store only, so the early reader must load it.
const lateReaders: fc.Arbitrary<Workload> = fc.record({
  processes: fc.constant(1),
  prelude: fc.constant([["a", "cold"] as const]),
  fibers: fc
    .tuple(
      fc.array(fc.constant<Array<Command>>([{ kind: "get", key: "a" }]), { minLength: 1, maxLength: 2 }),
      fc.array(
        fc.constantFrom<Kind>("delete", "delete", "set").map((kind): Array<Command> => [
          { kind, key: "a" },
          { kind: "get", key: "a" }
        ]),
        { minLength: 1, maxLength: 2 }
      )
    )
    .map(([readers, writers]) => [...readers, ...writers]),
  after: fc.constant([{ kind: "get" as const, key: "a" }])
})

type CacheKind = "versioned" | "naive"

const tiers = (s: Stepper, recorder: Recorder, cache: CacheKind) =>
  Layer.mergeAll(
    scheduledCache(s, recorder).pipe(Layer.provide(cache === "naive" ? naiveCache : MemoryCache.layer())),
    scheduledStore(s, recorder, payloadOf).pipe(Layer.provide(MemoryStore.layer))
  )

interface Outcome {
  readonly ops: ReadonlyArray<Op>
  readonly committed: ReadonlyArray<Committed>
  readonly final: FinalState
  readonly report: Report
  readonly recorder: Recorder
}

// A history: every operation with its invoke and complete times on one logical clock, advanced at each.
const makeHistory = () => {
  let clock = 0
  const ops: Array<Op> = []
  const perform = (
    users: WriteThrough.WriteThrough<string, Item>,
    process: number,
    actor: string,
    command: Command,
    value: string
  ): Effect.Effect<void> =>
    Effect.suspend(() => {
      const { key, kind } = command
      const invoke = ++clock
      const call: Effect.Effect<string | null, { readonly _tag: string }> =
        kind === "get"
          ? Effect.map(users.get(key), Option.match({ onNone: () => null, onSome: (got) => got.payload }))
          : kind === "set"
            ? Effect.as(users.set(key, item(key, value)), value)
            : Effect.as(users.delete(key), null)
      return Effect.map(Effect.either(call), (result) => {
        const complete = ++clock
        const base = {
          process,
          key,
          kind: kind === "get" ? "read" : kind === "set" ? "write" : "delete",
          invoke,
          complete
        } as const
        if (Either.isRight(result)) {
          ops.push({ ...base, value: result.right, outcome: "ok" })
        } else {
          const error = result.left._tag
          const unknown = error === "StaleCacheError" || error === "InconsistentCacheError"
          ops.push({ ...base, value: kind === "set" ? value : null, outcome: unknown ? "unknown" : "fail", error })
        }
      })
    }).pipe(Effect.locally(Actor, actor))
  return { ops, perform }
}

const keysOf = (w: Workload): ReadonlyArray<string> => [
  ...new Set([...w.prelude.map(([key]) => key), ...w.fibers.flatMap((f) => f.map((c) => c.key))])
]

const finalState = (keys: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const cache = yield* UnderlyingCache
    const collection = yield* (yield* UnderlyingStore).collection({ entity, fields, table: undefined })
    const store = new Map<string, { value: string; version: number } | null>()
    const cached = new Map<string, { kind: "value" | "tombstone"; version: number } | null>()
    for (const key of keys) {
      const row = yield* Effect.orDie(collection.get(key))
      store.set(
        key,
        Option.match(row, { onNone: () => null, onSome: (r) => ({ value: payloadOf(r.value), version: r.version }) })
      )
      const entry = yield* Effect.orDie(cache.get(`${entity}:${key}`))
      cached.set(
        key,
        Option.match(entry, {
          onNone: () => null,
          onSome: (e) => ({
            kind: e._tag === "Value" ? ("value" as const) : ("tombstone" as const),
            version: e.version
          })
        })
      )
    }
    return { store, cache: cached } satisfies FinalState
  })

// Each simulated process gets a Cache service of its own over the shared tier, as separate processes
// would: one Cache refuses a second owner of an entity's namespace.
const makeUsers = Effect.flatMap(Cache.Cache, (shared) =>
  WriteThrough.make({ entity, key: Schema.String, value: Item, retry: Schedule.recurs(1) }).pipe(
    Effect.provideService(Cache.Cache, Cache.Cache.of({ ...shared }))
  )
)

/** Runs the workload under the scheduler: the prelude one step at a time, then every fiber at once. */
const runWorkload = async (s: Stepper, w: Workload, cache: CacheKind, recorder = makeRecorder()) => {
  const history = makeHistory()
  const program = Effect.gen(function* () {
    const processes = yield* Effect.all(Array.from({ length: w.processes }, () => makeUsers))
    const collection = yield* (yield* Store.Store).collection({ entity, fields, table: undefined })
    const setup = processes[0]!
    for (const [key, prelude] of w.prelude) {
      if (prelude === "cold") {
        // Another writer, straight to the store: the cache is empty for this key, so nothing goes stale.
        const put = { ...setup, set: (k: string, v: Item) => Effect.asVoid(Effect.orDie(collection.put(k, v))) }
        yield* history.perform(put, 0, "setup", { kind: "set", key }, `${key}-cold`)
      } else if (prelude === "warm") {
        yield* history.perform(setup, 0, "setup", { kind: "set", key }, `${key}-warm`)
      } else if (prelude === "tombstoned") {
        yield* history.perform(setup, 0, "setup", { kind: "set", key }, `${key}-old`)
        yield* history.perform(setup, 0, "setup", { kind: "delete", key }, "")
      }
    }
    yield* Effect.all(
      w.fibers.map((commands, f) =>
        Effect.forEach(
          commands,
          (command, i) =>
            history.perform(
              processes[f % processes.length]!,
              f + 1,
              `p${f + 1}#${i}:${command.kind}(${command.key})`,
              command,
              `p${f + 1}.${i}`
            ),
          { discard: true }
        )
      ),
      { concurrency: "unbounded", discard: true }
    )
    for (const [i, command] of w.after.entries()) {
      yield* history.perform(setup, 0, `final#${i}:${command.kind}(${command.key})`, command, `final.${i}`)
    }
    return yield* finalState(keysOf(w))
  }).pipe(Effect.provide(tiers(s, recorder, cache)), Effect.provide(TestContext.TestContext), Effect.scoped)
  const final = await drive(s, Effect.runPromise(program))
  const report = check(history.ops, recorder.committed, final)
  return { ops: history.ops, committed: recorder.committed, final, report, recorder } satisfies Outcome
}

const violationsOf = (report: Report) =>
  report.staleReads + report.failedWriteReads + report.lostWrites + report.unconverged

const explain = (s: Stepper, outcome: Outcome): string =>
  [
    `${violationsOf(outcome.report)} violation(s):`,
    ...outcome.report.violations.map((v) => `  ${v.check} [${v.key}]: ${v.detail}`),
    "history (invoke-complete process kind key value outcome):",
    ...[...outcome.ops]
      .sort((a, b) => a.invoke - b.invoke)
      .map(
        (op) => `  ${op.invoke}-${op.complete} p${op.process} ${op.kind} ${op.key} ${op.value ?? "none"} ${op.outcome}`
      ),
    `committed: ${outcome.committed.map((c) => `${c.key}=${c.value ?? "deleted"}@v${c.version}`).join(", ")}`,
    "steps, in the order the scheduler released them:",
    formatSteps(outcome.recorder.steps),
    `scheduler: ${String(s)}`
  ].join("\n")

const consistency = (cache: CacheKind, workloads: fc.Arbitrary<Workload> = workload) =>
  fc.asyncProperty(fc.scheduler({ act }), workloads, async (s, w) => {
    const outcome = await runWorkload(s, w, cache)
    if (violationsOf(outcome.report) > 0) throw new Error(explain(s, outcome))
  })

describe("interleavings over the in-memory tiers", () => {
  it("no explored interleaving of concurrent get/set/delete breaks the history checker", async () => {
    await fc.assert(consistency("versioned"), runs(200))
  })

  it("(f) a read that begins after a write or delete was acknowledged never gets an older load's answer", async () => {
    await fc.assert(consistency("versioned", lateReaders), runs(150))
  })

  it("the checker has teeth: the same workload over a naive cache is caught", async () => {
    const result = await fc.check(consistency("naive"), { numRuns: 200 })
    expect(result.failed).toBe(true)
    expect(String(result.errorInstance)).toMatch(/stale read|unconverged/)
  })

  // The races of the consistency notes, each as one interleaving written down step by step, run over
  // both caches: the naive one must be caught by the checker, the versioned one must pass it.
  describe("written-down interleavings", () => {
    const get = (key: string): Command => ({ kind: "get", key })
    const set = (key: string): Command => ({ kind: "set", key })
    const del = (key: string): Command => ({ kind: "delete", key })
    const races: ReadonlyArray<{
      readonly name: string
      readonly workload: Workload
      readonly script: ReadonlyArray<string>
      readonly check: (outcome: Outcome) => void
    }> = [
      {
        name: "(a) a miss fill of v1 lands after a write of v2 was acknowledged",
        workload: { processes: 1, prelude: [["a", "cold"]], fibers: [[get("a")], [set("a")]], after: [get("a")] },
        script: [
          "p1#0:get(a) cache.get items:a",
          "p1#0:get(a) store.get a",
          "p2#0:set(a) store.put a",
          "p2#0:set(a) cache.set items:a",
          "p1#0:get(a) store.get a (reply)",
          "p1#0:get(a) cache.set items:a"
        ],
        check: (outcome) => expect(outcome.final.cache.get("a")).toEqual({ kind: "value", version: 2 })
      },
      {
        name: "(b) two writers whose cache updates land opposite to their commits",
        workload: { processes: 1, prelude: [], fibers: [[set("a")], [set("a")]], after: [get("a")] },
        script: [
          "p1#0:set(a) store.put a",
          "p2#0:set(a) store.put a",
          "p2#0:set(a) cache.set items:a",
          "p1#0:set(a) cache.set items:a"
        ],
        check: (outcome) => expect(outcome.final.cache.get("a")).toEqual({ kind: "value", version: 2 })
      },
      {
        name: "(c) a fill of a row lands after its delete was acknowledged",
        workload: { processes: 1, prelude: [["a", "cold"]], fibers: [[get("a")], [del("a")]], after: [get("a")] },
        script: [
          "p1#0:get(a) cache.get items:a",
          "p1#0:get(a) store.get a",
          "p1#0:get(a) store.get a (reply)",
          "p2#0:delete(a) store.delete a",
          "p2#0:delete(a) cache.invalidate items:a",
          "p1#0:get(a) cache.set items:a"
        ],
        check: (outcome) => expect(outcome.final.cache.get("a")).toEqual({ kind: "tombstone", version: 2 })
      },
      {
        name: "(f) a read that begins after a delete was acknowledged meets a load of the row still in flight",
        workload: {
          processes: 1,
          prelude: [["a", "cold"]],
          fibers: [[get("a")], [del("a"), get("a")]],
          after: [get("a")]
        },
        script: [
          "p1#0:get(a) cache.get items:a",
          "p1#0:get(a) store.get a",
          "p2#0:delete(a) store.delete a",
          "p2#0:delete(a) cache.invalidate items:a",
          "p2#1:get(a) cache.get items:a", // a miss, while p1's load of the row has not answered
          "p1#0:get(a) store.get a (reply)"
        ],
        check: (outcome) => {
          const late = outcome.ops.find((op) => op.process === 2 && op.kind === "read")
          expect(late?.value).toBeNull()
          // It read the store itself rather than join the load sent before it began.
          expect(outcome.recorder.steps.filter((s) => s.actor === "p2#1:get(a)" && s.tier === "store")).toHaveLength(2)
        }
      }
    ]

    for (const race of races) {
      describe(race.name, () => {
        it("the versioned cache: no violation", async () => {
          const s = scripted(race.script)
          const outcome = await runWorkload(s, race.workload, "versioned")
          expect(s.unplayed()).toEqual([])
          expect(violationsOf(outcome.report), explain(s, outcome)).toBe(0)
          race.check(outcome)
        })

        it("the naive cache: caught", async () => {
          const s = scripted(race.script)
          const outcome = await runWorkload(s, race.workload, "naive")
          expect(s.unplayed()).toEqual([])
          expect(outcome.report.staleReads, explain(s, outcome)).toBeGreaterThan(0)
          expect(outcome.report.unconverged, explain(s, outcome)).toBeGreaterThan(0)
        })
      })
    }
  })

  it("single flight: concurrent gets of a cold key that all miss before a load answers share one read per process", async () => {
    let exercised = 0
    const readersAndProcesses = fc.tuple(fc.integer({ min: 2, max: 6 }), fc.integer({ min: 1, max: 2 }))
    await fc.assert(
      fc.asyncProperty(fc.scheduler({ act }), readersAndProcesses, async (s, [readers, processes]) => {
        const w: Workload = {
          processes,
          prelude: [["a", "cold"]],
          fibers: Array.from({ length: readers }, () => [{ kind: "get", key: "a" }]),
          after: []
        }
        const outcome = await runWorkload(s, w, "versioned")
        const steps = outcome.recorder.steps.filter((step) => step.actor !== "setup")
        const reads = outcome.ops.filter((op) => op.process > 0)
        const why = explain(s, outcome)
        expect(violationsOf(outcome.report), why).toBe(0)
        expect(
          reads.map((op) => op.value),
          why
        ).toEqual(reads.map(() => "a-cold"))
        const storeReads = steps.filter(
          (step) => step.tier === "store" && step.operation === "get" && step.phase === "call"
        ).length
        const misses = steps.filter(
          (step) => step.tier === "cache" && step.operation === "get" && step.result === "miss"
        ).length
        // Every miss sends at most one store read, and a miss is not answered without one.
        expect(storeReads, why).toBeGreaterThanOrEqual(1)
        expect(storeReads, why).toBeLessThanOrEqual(misses)
        // All readers began before any load was sent; when every cache lookup also came before the first
        // load's answer, each found its process's load in flight and joined it (or was the one to send it).
        const firstAnswer = steps.findIndex((step) => step.tier === "store" && step.phase === "reply")
        const lastCacheGet = steps.findLastIndex((step) => step.tier === "cache" && step.operation === "get")
        if (lastCacheGet < firstAnswer) {
          exercised++
          expect(storeReads, why).toBe(processes)
        }
      }),
      runs(100)
    )
    expect(exercised).toBeGreaterThan(0)
  })
})

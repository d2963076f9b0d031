// The chaos workload: several worker processes hammer a few hot keys through the library, on the
// real Postgres and on a Redis this run starts itself behind a fault proxy, while faults fire: Redis
// killed with SIGKILL and restarted, the workers' Postgres backends terminated, the proxy delaying,
// black-holing and resetting, a worker process SIGKILLed (and another started in its place). A
// foreign writer updates the hot keys with plain SQL meanwhile, and the store captures every change
// for the cache. Then the history checker reads every operation, the store's commit history and both
// tiers' final state.
//
// `npm run chaos` runs the full workload; test/Chaos.test.ts runs a short one, and the naive variant.
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { Duration, Effect, Option, Random, Redacted, Schedule } from "effect"
import type * as Scope from "effect/Scope"
import { Redis } from "ioredis"
import { type ChildProcess, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { decodeEntry } from "../support/fixtures.js"
import { databaseUrl } from "../support/services.js"
import { startRedisServer } from "../support/redisServer.js"
import { SqlStore, type Store } from "../../src/index.js"
import { check, type Committed, type FinalState, foreignProcess, type Op, type Report } from "./checker.js"
import { faultProxy } from "./faultProxy.js"
import { createTables, dropTables, historyTable, monotonicMicros, type WorkerConfig } from "./workload.js"

export interface ChaosOptions {
  readonly processes: number
  readonly fibers: number
  readonly keys: number
  readonly runMillis: number
  readonly settleMillis: number
  readonly naive: boolean
  /** RedisCache with its in-process tier on in every worker. */
  readonly near: boolean
  /** The tier in strict mode (with `near`): no read in any process may trail an acknowledged write. */
  readonly strict?: boolean | undefined
  readonly faults: boolean
  /** SqlStore's change capture on in every worker. */
  readonly changeCapture: boolean
  /** Plain SQL UPDATEs of the hot keys every 50-100 ms, made outside the library. */
  readonly foreignWrites: boolean
  /** Among the faults: a worker SIGKILLed mid-operation, and another started in its place. */
  readonly workerKills: boolean
  readonly pauseProbability: number
  /** A fault fires every this many milliseconds, give or take a third; kinds take turns, so all fire. */
  readonly faultEveryMillis: number
  /** Where to write the history (every operation, then every committed change, one JSON object a line), if anywhere. */
  readonly historyFile?: string | undefined
}

export type FaultKind = "redisKill" | "pgTerminate" | "proxyDelay" | "proxyBlackhole" | "proxyReset" | "workerKill"

export interface ChaosSummary extends Omit<Report, "violations"> {
  readonly processes: number
  /** Writes and deletes by outcome: `unknown` counts StaleCacheError, InconsistentCacheError and lost commits. */
  readonly outcomes: Readonly<Record<"ok" | "fail" | "unknown", number>>
  /**
   * Multi-key calls by outcome (ok, fail, unknown: stale, inconsistent or a defect; mixed: the call's
   * keys had different outcomes, as when an InconsistentCacheError did not list every key).
   */
  readonly calls: Readonly<
    Record<"setMany" | "transaction", Readonly<Record<"ok" | "fail" | "unknown" | "mixed", number>>>
  >
  /** Keys of calls that failed with an InconsistentCacheError whose `keys` did not list them. */
  readonly unlistedKeys: number
  readonly naive: boolean
  readonly near: boolean
  readonly strict: boolean
  readonly changeCapture: boolean
  /** Acknowledged plain SQL UPDATEs of the foreign writer. */
  readonly foreignWrites: number
  readonly faults: Readonly<Record<FaultKind, number>>
  readonly durationMillis: number
  readonly violations: Report["violations"]
}

const workerPath = fileURLToPath(new URL("./worker.ts", import.meta.url))

interface Worker {
  readonly config: WorkerConfig
  readonly child: ChildProcess
  /** SIGKILLed by the run on purpose. */
  killed: boolean
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

const spawnWorker = (config: WorkerConfig): Worker => {
  const child = spawn(process.execPath, ["--import", "tsx", workerPath, JSON.stringify(config)], {
    stdio: ["ignore", "inherit", "inherit"]
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal }))
  )
  return { config, child, killed: false, exited }
}

/** Waits for every worker; one that was not killed on purpose must have exited cleanly. */
const awaitWorkers = (workers: ReadonlyArray<Worker>) =>
  Effect.forEach(
    workers,
    (worker) =>
      Effect.flatMap(
        Effect.promise(() => worker.exited),
        ({ code, signal }) =>
          worker.killed || code === 0
            ? Effect.void
            : Effect.fail(new Error(`worker ${worker.config.process} exited with ${code ?? signal}`))
      ),
    { concurrency: "unbounded", discard: true }
  )

/** A worker's journal: every operation, the last line of each write winning (a write still in flight when it died stays unknown). */
const readJournal = (path: string): ReadonlyArray<Op> => {
  if (!existsSync(path)) return []
  const reads: Array<Op> = []
  const writes = new Map<string, Op>()
  for (const line of readFileSync(path, "utf8").split("\n")) {
    if (line.length === 0) continue
    const op = JSON.parse(line) as Op
    if (op.id === undefined) reads.push(op)
    else writes.set(op.id, op)
  }
  return [...reads, ...writes.values()]
}

/** A raw Redis entry as the checker reads it: its kind and version, or null when it is none. */
const cacheState = (raw: string | null) =>
  Option.match(decodeEntry(raw), {
    onNone: () => null,
    onSome: (entry) => ({
      kind: entry._tag === "Value" ? ("value" as const) : ("tombstone" as const),
      version: entry.version
    })
  })

export const runChaos = (
  options: ChaosOptions
): Effect.Effect<ChaosSummary, unknown, Scope.Scope | SqlClient.SqlClient> =>
  Effect.gen(function* () {
    const startedAt = Date.now()
    const runId = `chaos_${randomUUID().replaceAll("-", "").slice(0, 10)}`
    const sql = yield* SqlClient.SqlClient
    const server = yield* startRedisServer
    const proxy = yield* faultProxy({ host: "127.0.0.1", port: server.port })
    const table = runId
    const versionSequence = `${runId}_version`
    yield* Effect.acquireRelease(createTables(table, versionSequence), () =>
      Effect.orDie(dropTables(table, versionSequence))
    )
    if (options.changeCapture || options.foreignWrites) {
      yield* addTriggers(table, versionSequence, options.changeCapture)
    }
    const directory = mkdtempSync(join(tmpdir(), "chaos-"))
    yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(directory, { recursive: true, force: true })))
    const keys = Array.from({ length: options.keys }, (_, i) => `key-${i}`)
    // Written only by the foreign writer (plain SQL): without change capture, the cache never hears of it.
    const coldKeys = options.foreignWrites ? Array.from({ length: 3 }, (_, i) => `cold-${i}`) : []
    const allKeys = [...keys, ...coldKeys]
    // Plain SQL writes, as operations of the foreign process: first the cold keys' rows (versioned by
    // the trigger; the history trigger records them as committed).
    const foreignOps: Array<Op> = []
    for (const key of coldKeys) {
      const value = `initial.${key}`
      const invoke = monotonicMicros()
      yield* sql.unsafe(`INSERT INTO "${table}" (id, payload) VALUES ($1, $2)`, [key, value]).raw
      foreignOps.push({
        process: foreignProcess,
        key,
        kind: "write",
        value,
        invoke,
        complete: monotonicMicros(),
        outcome: "ok"
      })
    }
    const keyPrefix = `${runId}:`

    const faults: Record<FaultKind, number> = {
      redisKill: 0,
      pgTerminate: 0,
      proxyDelay: 0,
      proxyBlackhole: 0,
      proxyReset: 0,
      workerKill: 0
    }
    const kinds: ReadonlyArray<FaultKind> = [
      "redisKill",
      "proxyDelay",
      "pgTerminate",
      "proxyBlackhole",
      "proxyReset",
      ...(options.workerKills ? (["workerKill"] as const) : [])
    ]
    // When the workload ends: reset once the first workers are ready, so faults fire for the whole run
    // (starting tsx takes seconds under load), and a worker started in a killed one's place runs until then.
    let runUntil = Date.now() + options.runMillis
    const workerConfig = (process: number): WorkerConfig => ({
      process,
      databaseUrl,
      redisUrl: proxy.url,
      keyPrefix,
      table,
      keys,
      coldKeys,
      fibers: options.fibers,
      runMillis: Math.max(0, runUntil - Date.now()),
      settleMillis: options.settleMillis,
      applicationName: `${runId}-worker-${process}`,
      versionSequence,
      changeCapture: options.changeCapture,
      naive: options.naive,
      near: options.near,
      strict: options.strict === true,
      pauseProbability: options.pauseProbability,
      output: join(directory, `worker-${process}.jsonl`)
    })
    const workers: Array<Worker> = []
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const worker of workers) worker.child.kill("SIGKILL")
      })
    )
    // SIGKILL one worker mid-operation, and start another in its place (a process of a new number).
    const killWorker = Effect.gen(function* () {
      const alive = workers.filter((worker) => !worker.killed && worker.child.exitCode === null)
      if (alive.length === 0) return
      const victim = alive[yield* Random.nextIntBetween(0, alive.length)]!
      victim.killed = true
      victim.child.kill("SIGKILL")
      workers.push(spawnWorker(workerConfig(workers.length)))
    })
    const fire = (kind: FaultKind): Effect.Effect<void, unknown> => {
      switch (kind) {
        case "workerKill":
          return killWorker
        case "redisKill":
          return Effect.zipRight(server.kill, Effect.zipRight(Effect.sleep("200 millis"), server.start))
        case "pgTerminate":
          return sql
            .unsafe(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE $1`, [
              `${runId}-worker-%`
            ])
            .raw.pipe(Effect.asVoid)
        case "proxyDelay":
          return Effect.acquireUseRelease(
            Effect.flatMap(Random.nextIntBetween(20, 120), (millis) =>
              Effect.sync(() => proxy.setMode({ _tag: "Delay", millis }))
            ),
            () => Effect.sleep("1 second"),
            () => Effect.sync(() => proxy.setMode({ _tag: "Pass" }))
          )
        case "proxyBlackhole":
          return Effect.acquireUseRelease(
            Effect.sync(() => proxy.setMode({ _tag: "Blackhole" })),
            () => Effect.sleep("700 millis"),
            () => Effect.sync(() => proxy.setMode({ _tag: "Pass" }))
          )
        case "proxyReset":
          return Effect.sync(() => void proxy.resetConnections())
      }
    }
    const faultLoop = Effect.gen(function* () {
      for (let i = 0; ; i++) {
        const kind = kinds[i % kinds.length]!
        yield* fire(kind)
        faults[kind]++
        const third = Math.round(options.faultEveryMillis / 3)
        yield* Effect.sleep(
          Duration.millis(options.faultEveryMillis - third + (yield* Random.nextIntBetween(0, 2 * third)))
        )
      }
    })

    for (let i = 0; i < options.processes; i++) workers.push(spawnWorker(workerConfig(i)))
    const first = [...workers]
    // Faults start once every worker has connected and prepared its statements: a worker that
    // cannot start is a broken run, not a finding. (Under load, starting tsx takes seconds.)
    yield* Effect.sync(() => first.every((worker) => existsSync(`${worker.config.output}.ready`))).pipe(
      Effect.filterOrFail((ready) => ready),
      Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("60 seconds"))),
      Effect.raceFirst(
        Effect.flatMap(
          Effect.promise(() => Promise.race(first.map((worker) => worker.exited))),
          () => Effect.fail(new Error("a worker ended before it was ready"))
        )
      )
    )
    runUntil = Date.now() + options.runMillis
    const loops = [
      ...(options.faults ? [faultLoop] : []),
      ...(options.foreignWrites ? [foreignWriter(sql, table, keys, coldKeys, foreignOps)] : [])
    ]
    // Faults and foreign writes stop when the workload does, then the tiers heal.
    yield* Effect.all(loops, { concurrency: "unbounded", discard: true }).pipe(
      Effect.timeout(Duration.millis(Math.max(0, runUntil - Date.now()))),
      Effect.ignore
    )
    proxy.setMode({ _tag: "Pass" })
    yield* server.start.pipe(Effect.ignore)
    // A worker started in a dead one's place may still be starting: every one ends on its own.
    yield* awaitWorkers(workers)

    const ops: Array<Op> = [...workers.flatMap((worker) => readJournal(worker.config.output)), ...foreignOps]
    const committed = (yield* sql.unsafe<{ key: string; value: string | null; version: string }>(
      `SELECT key, value, version FROM "${historyTable(table)}" ORDER BY version`
    )).map((row): Committed => ({ key: row.key, value: row.value, version: Number(row.version) }))
    const rows = yield* sql.unsafe<{ id: string; payload: string; version: string }>(
      `SELECT id, payload, version FROM "${table}"`
    )
    const redis = yield* Effect.acquireRelease(
      Effect.sync(() => new Redis(server.url, { commandTimeout: 2000 })),
      (redis) => Effect.sync(() => redis.disconnect())
    )
    const raws = yield* Effect.promise(() => redis.mget(allKeys.map((key) => `${keyPrefix}${table}:${key}`)))
    const final: FinalState = {
      store: new Map(
        allKeys.map((key) => {
          const row = rows.find((r) => r.id === key)
          return [key, row === undefined ? null : { value: row.payload, version: Number(row.version) }] as const
        })
      ),
      cache: new Map(allKeys.map((key, i) => [key, cacheState(raws[i] ?? null)] as const))
    }
    if (options.historyFile !== undefined) {
      writeFileSync(
        options.historyFile,
        [...ops, ...committed.map((change) => ({ committed: true, ...change }))]
          .map((line) => JSON.stringify(line))
          .join("\n")
      )
    }
    const report = check(ops, committed, final)
    const outcomes = { ok: 0, fail: 0, unknown: 0 }
    for (const op of ops) if (op.kind !== "read") outcomes[op.outcome]++
    const calls = {
      setMany: { ok: 0, fail: 0, unknown: 0, mixed: 0 },
      transaction: { ok: 0, fail: 0, unknown: 0, mixed: 0 }
    }
    const callOutcomes = new Map<string, { via: "setMany" | "transaction"; outcomes: Set<Op["outcome"]> }>()
    for (const op of ops) {
      if (op.call === undefined || op.via === undefined) continue
      const seen = callOutcomes.get(op.call) ?? { via: op.via, outcomes: new Set() }
      seen.outcomes.add(op.outcome)
      callOutcomes.set(op.call, seen)
    }
    for (const { outcomes: seen, via } of callOutcomes.values()) {
      calls[via][seen.size === 1 ? [...seen][0]! : "mixed"]++
    }
    return {
      ...report,
      processes: options.processes,
      outcomes,
      calls,
      unlistedKeys: ops.filter((op) => op.error === "InconsistentCacheError (key not listed)").length,
      naive: options.naive,
      near: options.near,
      strict: options.strict === true,
      changeCapture: options.changeCapture,
      foreignWrites: foreignOps.filter((op) => op.outcome === "ok").length,
      faults,
      durationMillis: Date.now() - startedAt
    }
  })

/** The version trigger (a plain UPDATE gets a version) and, with change capture, the capture trigger, with the DDL the store suggests. */
const addTriggers = (table: string, versionSequence: string, changeCapture: boolean) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const store = yield* SqlStore.make({ versionSequence, versionTrigger: true, changeCapture, breaker: false })
    const target: Store.Target = { entity: table, fields: ["id", "payload"], table: { name: table, primaryKey: "id" } }
    for (let i = 0; i < 2; i++) {
      const refused = yield* Effect.either(store.collection(target))
      if (refused._tag === "Right") return
      yield* sql.unsafe(refused.left.suggestedDdl!).raw
    }
    yield* store.collection(target)
  })

/**
 * Plain SQL UPDATEs every 50-100 ms, of a random hot key or, one time in two, a cold one (which no
 * worker writes), each recorded as an operation of the foreign process.
 */
const foreignWriter = (
  sql: SqlClient.SqlClient,
  table: string,
  keys: ReadonlyArray<string>,
  coldKeys: ReadonlyArray<string>,
  ops: Array<Op>
) =>
  Effect.gen(function* () {
    for (let n = 0; ; n++) {
      const pool = coldKeys.length > 0 && (yield* Random.nextBoolean) ? coldKeys : keys
      const key = pool[yield* Random.nextIntBetween(0, pool.length)]!
      const value = `foreign.${n}`
      const invoke = monotonicMicros()
      // Recorded as it begins, its outcome unknown: the run's end may cut the loop off while the
      // statement is in flight (more likely on a loaded machine), and it may still commit.
      const index = ops.push({
        process: foreignProcess,
        key,
        kind: "write",
        value,
        invoke,
        complete: Number.MAX_SAFE_INTEGER,
        outcome: "unknown"
      })
      const exit = yield* Effect.exit(
        sql.unsafe(`UPDATE "${table}" SET payload = $1 WHERE id = $2 RETURNING 1`, [value, key]).values
      )
      const complete = monotonicMicros()
      // A failed statement may have committed: it stays unknown. No row (the key deleted meanwhile): nothing changed.
      if (exit._tag === "Success") {
        ops[index - 1] = { ...ops[index - 1]!, complete, outcome: exit.value.length > 0 ? "ok" : "fail" }
      }
      yield* Effect.sleep(Duration.millis(yield* Random.nextIntBetween(50, 101)))
    }
  })

export const pgLayer = PgClient.layer({
  url: Redacted.make(databaseUrl),
  applicationName: "effect-write-through-chaos"
})

export const summaryLine = (summary: ChaosSummary) =>
  JSON.stringify({
    processes: summary.processes,
    operations: summary.operations,
    reads: summary.reads,
    writes: summary.writes,
    deletes: summary.deletes,
    faults: summary.faults,
    writeOutcomes: summary.outcomes,
    calls: summary.calls,
    staleReads: summary.staleReads,
    ownStaleReads: summary.ownStaleReads,
    failedWriteReads: summary.failedWriteReads,
    lostWrites: summary.lostWrites,
    unconverged: summary.unconverged,
    committedFailedWrites: summary.committedFailedWrites,
    partialCalls: summary.partialCalls,
    unlistedKeys: summary.unlistedKeys,
    maxStaleMillis: Math.round(summary.maxStaleMicros / 100) / 10,
    foreignWrites: summary.foreignWrites,
    foreignStaleReads: summary.foreignStaleReads,
    foreignLag: summary.foreignLag,
    nonMonotonicReads: summary.nonMonotonicReads,
    ownNonMonotonicReads: summary.ownNonMonotonicReads,
    changeCapture: summary.changeCapture,
    nines: summary.nines,
    ninesIsLowerBound: summary.ninesIsLowerBound,
    naive: summary.naive,
    near: summary.near,
    strict: summary.strict,
    durationMillis: summary.durationMillis
  })

/** The change feed's aim for foreign writes: p99 under 100 ms, max under 1 s. */
export const lagWithinAim = (summary: ChaosSummary) => summary.foreignLag.p99 < 100 && summary.foreignLag.max < 1000

const printSummary = (summary: ChaosSummary) => {
  const tolerated = (v: ChaosSummary["violations"][number]) =>
    (summary.near && !summary.strict && v.check === "stale read" && v.ownProcess !== true) ||
    (v.check === "non-monotonic read" && v.ownProcess !== true)
  const faults = Object.entries(summary.faults)
    .map(([kind, count]) => `${kind} ${count}`)
    .join(", ")
  const lines = [
    `chaos: ${summary.processes} processes, ${summary.operations} operations (${summary.reads} reads, ${summary.writes} writes, ${summary.deletes} deletes) in ${(summary.durationMillis / 1000).toFixed(1)} s`,
    `faults: ${faults}`,
    `writes and deletes: ${summary.outcomes.ok} ok, ${summary.outcomes.fail} failed, ${summary.outcomes.unknown} unknown (stale or inconsistent)`,
    ...(["setMany", "transaction"] as const).map(
      (via) =>
        `${`${via} calls:`.padEnd(20)}${summary.calls[via].ok} ok, ${summary.calls[via].fail} failed, ${summary.calls[via].unknown} unknown` +
        (summary.calls[via].mixed > 0 ? `, ${summary.calls[via].mixed} mixed` : "")
    ),
    `stale reads:        ${summary.staleReads} (${summary.ownStaleReads} after a write of the reader's own process)`,
    `failed-write reads: ${summary.failedWriteReads}`,
    `lost writes:        ${summary.lostWrites}`,
    `unconverged keys:   ${summary.unconverged}`,
    `committed failures: ${summary.committedFailedWrites}`,
    `partial calls:      ${summary.partialCalls}`,
    ...(summary.unlistedKeys > 0 ? [`unlisted keys:      ${summary.unlistedKeys} (of InconsistentCacheErrors)`] : []),
    ...(summary.staleReads > 0
      ? [
          `longest staleness:  ${(summary.maxStaleMicros / 1000).toFixed(1)} ms after the superseding write was acknowledged`
        ]
      : []),
    `non-monotonic reads: ${summary.nonMonotonicReads} (${summary.ownNonMonotonicReads} after a read of the same process)`,
    `foreign writes:     ${summary.foreignWrites} acknowledged; ${summary.foreignStaleReads} reads trailed one; ` +
      `lag p50 ${summary.foreignLag.p50} ms, p99 ${summary.foreignLag.p99} ms, max ${summary.foreignLag.max} ms` +
      ` (aim: p99 under 100 ms, max under 1 s: ${lagWithinAim(summary) ? "met" : "MISSED"})`,
    `consistency:        ${summary.ninesIsLowerBound ? "at least " : ""}${summary.nines} nines over ${summary.reads} reads`,
    // Those that fail the run first: with the in-process tier, a stale read behind another process's write does not.
    ...[...summary.violations]
      .sort((a, b) => Number(tolerated(a)) - Number(tolerated(b)))
      .slice(0, 10)
      .map((v) => `  ${v.check} on ${v.key}: ${v.detail}`)
  ]
  console.log(lines.join("\n"))
  console.log(summaryLine(summary))
}

// `npm run chaos [-- --naive] [-- --near] [-- --strict] [-- --no-capture] [-- --no-faults] [-- --history=FILE]`:
// the full workload, bounded well under three minutes. `--strict` runs the in-process tier in strict mode.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const naive = process.argv.includes("--naive")
  const strict = process.argv.includes("--strict")
  const near = strict || process.argv.includes("--near")
  const historyFile = process.argv.find((arg) => arg.startsWith("--history="))?.slice("--history=".length)
  const program = runChaos({
    processes: 3,
    fibers: 24,
    keys: 6,
    runMillis: 60_000,
    settleMillis: 4_000,
    naive,
    near,
    strict,
    faults: !process.argv.includes("--no-faults"),
    changeCapture: !process.argv.includes("--no-capture"),
    foreignWrites: true,
    workerKills: !process.argv.includes("--no-faults"),
    pauseProbability: 0.1,
    faultEveryMillis: 1_500,
    historyFile
  }).pipe(Effect.scoped, Effect.provide(pgLayer))
  Effect.runPromise(program).then(
    (summary) => {
      printSummary(summary)
      // With the bounded in-process tier, reads in other processes may lag a write by the announcement's
      // delay; a process still reads its own writes at once. The strict tier allows no lag.
      const clean =
        (near && !strict
          ? summary.ownStaleReads + summary.ownNonMonotonicReads
          : summary.staleReads + (near ? summary.ownNonMonotonicReads : summary.nonMonotonicReads)) +
          summary.failedWriteReads +
          summary.lostWrites +
          summary.unconverged +
          summary.committedFailedWrites +
          summary.partialCalls +
          summary.unlistedKeys ===
        0
      process.exitCode = clean === !naive ? 0 : 1
    },
    (error) => {
      console.error("chaos run failed:", error)
      process.exitCode = 2
    }
  )
}

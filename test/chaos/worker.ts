// One process of the chaos workload: many fibers doing get / set / delete, and now and then a setMany
// or a WriteThrough.transaction of a few sets and deletes, on a few hot keys through the library,
// each operation recorded with its invoke and complete times on the machine's monotonic clock (a
// multi-key call as one operation per key). Started by run.ts with its configuration as the only argument.
import { PgClient } from "@effect/sql-pg"
import { Cause, Chunk, Effect, Exit, Layer, Option, Random, Redacted, Schedule, Schema } from "effect"
import { closeSync, openSync, writeFileSync, writeSync } from "node:fs"
import { Cache, RedisCache, SqlStore, Store, WriteThrough } from "../../src/index.js"
import type { Op, Outcome } from "./checker.js"
import { monotonicMicros, naiveRedisCache, refusedPayload, type WorkerConfig } from "./workload.js"

const config = JSON.parse(process.argv[2]!) as WorkerConfig

const Row = Schema.Struct({ id: Schema.String, payload: Schema.String })

// Holds a step between the store and the cache now and then, so the races happen on purpose:
// a commit whose cache update lags (a, b), a read whose fill lags (a, c), a load that lags (f).
const hold = Effect.flatMap(Random.next, (r) =>
  r < config.pauseProbability ? Effect.flatMap(Random.nextIntBetween(1, 40), (ms) => Effect.sleep(ms)) : Effect.void
)

const racingStore = Layer.effect(
  Store.Store,
  Effect.map(Store.Store, (store) =>
    Store.Store.of({
      // Holds the transaction open, its keys locked, between its last write and its COMMIT.
      transaction: (effect) => store.transaction(Effect.zipLeft(effect, hold)),
      inTransaction: store.inTransaction,
      collection: (target) =>
        Effect.map(store.collection(target), (collection) => ({
          get: (key) => Effect.zipLeft(collection.get(key), hold),
          getMany: (keys) => Effect.zipLeft(collection.getMany(keys), hold),
          put: (key, value) => Effect.zipLeft(collection.put(key, value), hold),
          putMany: (entries) => Effect.zipLeft(collection.putMany(entries), hold),
          delete: (key) => Effect.zipLeft(collection.delete(key), hold),
          deletions: collection.deletions,
          changes: collection.changes
        }))
    })
  )
)

const racingCache = Layer.effect(
  Cache.Cache,
  Effect.map(Cache.Cache, (cache) =>
    Cache.Cache.of({
      selfBounded: cache.selfBounded,
      reusesEntries: cache.reusesEntries,
      get: cache.get,
      getMany: cache.getMany,
      lease: cache.lease,
      getOrLease: cache.getOrLease,
      peek: cache.peek,
      scan: cache.scan,
      ticket: cache.ticket,
      set: (key, entry, options) => Effect.zipRight(hold, cache.set(key, entry, options)),
      setMany: (items) => Effect.zipRight(hold, cache.setMany(items)),
      invalidate: (key, version, ttl) => Effect.zipRight(hold, cache.invalidate(key, version, ttl))
    })
  )
)

const cacheLayer = config.naive
  ? naiveRedisCache(config.redisUrl, config.keyPrefix)
  : RedisCache.layer({
      url: config.redisUrl,
      keyPrefix: config.keyPrefix,
      commandTimeout: "300 millis",
      connectTimeout: "10 seconds",
      // The keys written while the breaker is open converge once it closes, up to an interval after
      // Redis is back: the interval is kept below the run's settle time, which the final check follows.
      breaker: { interval: "1 second" },
      ...(config.near ? { near: { mode: config.strict ? "strict" : "bounded" } } : {})
    })

const layer = Layer.merge(
  racingCache.pipe(Layer.provide(cacheLayer)),
  racingStore.pipe(
    Layer.provide(SqlStore.layer({ versionSequence: config.versionSequence, changeCapture: config.changeCapture }))
  )
).pipe(
  Layer.provide(
    PgClient.layer({
      url: Redacted.make(config.databaseUrl),
      applicationName: config.applicationName,
      maxConnections: 8,
      // Generous: under a loaded CI machine, three workers start at once next to the test suite.
      connectTimeout: "10 seconds"
    })
  )
)

const outcomeOf = (
  exit: Exit.Exit<unknown, { readonly _tag: string }>
): { outcome: Outcome; error?: string; detail?: string } => {
  if (Exit.isSuccess(exit)) return { outcome: "ok" }
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) {
    const squashed = Cause.squash(exit.cause)
    return {
      outcome: "unknown",
      error: "defect",
      detail: squashed instanceof Error ? squashed.message : String(squashed)
    }
  }
  const tag = failure.value._tag
  const { cause, reason } = failure.value as { readonly reason?: unknown; readonly cause?: unknown }
  // A StoreError's database error, if any: its SQLSTATE and message.
  const database = (cause as { readonly cause?: { readonly code?: unknown; readonly message?: unknown } } | undefined)
    ?.cause
  // Committed, but the library could not vouch for the cache; or the commit's outcome is unknown.
  return {
    outcome: tag === "StaleCacheError" || tag === "InconsistentCacheError" ? "unknown" : "fail",
    error: tag,
    ...(typeof reason === "string"
      ? {
          detail:
            database?.code === undefined ? reason : `${reason} ${String(database.code)} ${String(database.message)}`
        }
      : tag === "InconsistentCacheError"
        ? { detail: `cause: ${causeOf(cause)}` }
        : {})
  }
}

const causeOf = (cause: unknown): string =>
  typeof cause === "object" && cause !== null && "_tag" in cause
    ? String(cause._tag)
    : cause instanceof Error
      ? cause.message
      : String(cause)

const describe = (error: { readonly _tag: string }): string => {
  const { reason } = error as { readonly reason?: unknown }
  return typeof reason === "string" ? `${error._tag} (${reason})` : error._tag
}

// One key's outcome of a call that wrote several. The call answers for all of them at once: a
// success acknowledges every key, a StoreError means none was written, a StaleCacheError that all
// were committed but not vouched for. An InconsistentCacheError lists the keys whose outcome is
// unknown; a key of the call it does not list is taken as unknown too (the safe side for the
// checker), and marked, as the error should have listed it.
const keyOutcomeOf = (
  exit: Exit.Exit<unknown, { readonly _tag: string }>,
  key: string
): { outcome: Outcome; error?: string; detail?: string } => {
  const result = outcomeOf(exit)
  if (result.error !== "InconsistentCacheError" || Exit.isSuccess(exit)) return result
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) return result
  const error = failure.value as unknown as {
    readonly key: string
    readonly keys?: ReadonlyArray<{ readonly entity: string; readonly key: string }> | undefined
  }
  const listed =
    error.keys === undefined
      ? error.key === key
      : error.keys.some((listedKey) => listedKey.entity === config.table && listedKey.key === key)
  return listed ? result : { outcome: "unknown", error: "InconsistentCacheError (key not listed)" }
}

// Operation ids and written values stay unique across a restarted program (see the retry below),
// and its run ends when its first start said.
let ids = 0
let counter = 0
let deadline: number | undefined

const program = Effect.gen(function* () {
  const users = yield* WriteThrough.make({
    entity: config.table,
    key: Schema.String,
    value: Row,
    table: { name: config.table, primaryKey: "id" },
    cacheTimeout: "500 millis",
    storeTimeout: "2 seconds",
    tombstoneTtl: "30 seconds",
    retry: Schedule.exponential("10 millis").pipe(Schedule.jittered, Schedule.intersect(Schedule.recurs(3))),
    repairInterval: "250 millis"
  })
  // The journal survives a SIGKILL: a write is journaled as it begins, its outcome unknown, and
  // again once it completes; a read once it completes (one in flight when the process dies told
  // nobody anything).
  const journal = yield* Effect.acquireRelease(
    Effect.sync(() => openSync(config.output, "a")),
    (fd) => Effect.sync(() => closeSync(fd))
  )
  const ops: Array<Op> = []
  const journaled = (op: Op) => writeSync(journal, `${JSON.stringify(op)}\n`)
  const record = (op: Op) => {
    ops.push(op)
    journaled(op)
  }
  const begin = (op: Omit<Op, "complete" | "outcome" | "id">): Op => {
    const invoked = {
      ...op,
      id: `${config.process}.${++ids}`,
      complete: Number.MAX_SAFE_INTEGER,
      outcome: "unknown" as const
    }
    journaled(invoked)
    return invoked
  }
  // Connected and prepared: the orchestrator starts the faults once every worker says so.
  writeFileSync(`${config.output}.ready`, "")
  deadline ??= monotonicMicros() + config.runMillis * 1000
  const runsUntil = deadline

  const fiber = (fiberId: number) =>
    Effect.gen(function* () {
      while (monotonicMicros() < runsUntil) {
        const recorded = ops.length
        const key = config.keys[yield* Random.nextIntBetween(0, config.keys.length)]!
        const roll = yield* Random.next
        const invoke = monotonicMicros()
        const nextValue = () => `p${config.process}.f${fiberId}.${++counter}`
        // A few distinct keys, in random order.
        const pickKeys = (min: number, max: number) =>
          Effect.flatMap(Random.nextIntBetween(min, max + 1), (count) =>
            Effect.map(Random.shuffle(config.keys), (keys) => Chunk.toReadonlyArray(keys).slice(0, count))
          )
        if (roll < 0.6) {
          // One read in five is of a cold key, which no worker writes.
          const read =
            config.coldKeys.length > 0 && roll < 0.12
              ? config.coldKeys[yield* Random.nextIntBetween(0, config.coldKeys.length)]!
              : key
          const exit = yield* Effect.exit(users.get(read))
          const complete = monotonicMicros()
          const { outcome, error } = outcomeOf(exit)
          const value = Exit.isSuccess(exit) ? Option.getOrNull(Option.map(exit.value, (row) => row.payload)) : null
          record({ process: config.process, key: read, kind: "read", value, invoke, complete, outcome, error })
        } else if (roll < 0.84) {
          const value = nextValue()
          const invoked = begin({ process: config.process, key, kind: "write", value, invoke })
          const exit = yield* Effect.exit(users.set(key, { id: key, payload: value }))
          record({ ...invoked, complete: monotonicMicros(), ...outcomeOf(exit) })
        } else if (roll < 0.92) {
          const invoked = begin({ process: config.process, key, kind: "delete", value: null, invoke })
          const exit = yield* Effect.exit(users.delete(key))
          record({ ...invoked, complete: monotonicMicros(), ...outcomeOf(exit) })
        } else if (roll < 0.96) {
          // Two to four keys in one setMany. One in ten carries a value the database refuses (its
          // CHECK): the whole batch must fail, none of its keys written.
          const poisoned = (yield* Random.next) < 0.1
          const keys = yield* pickKeys(2, 4)
          const entries = keys.map(
            (key, i) => [key, poisoned && i === keys.length - 1 ? refusedPayload(nextValue()) : nextValue()] as const
          )
          const call = `p${config.process}.f${fiberId}.setMany${++counter}${poisoned ? ".poisoned" : ""}`
          const start = monotonicMicros()
          const invoked = entries.map(([key, value]) =>
            begin({ process: config.process, key, kind: "write", value, invoke: start, call, via: "setMany" })
          )
          const exit = yield* Effect.exit(users.setMany(entries.map(([key, payload]) => [key, { id: key, payload }])))
          const complete = monotonicMicros()
          for (const op of invoked) record({ ...op, complete, ...keyOutcomeOf(exit, op.key) })
        } else {
          // Two or three sets and deletes of distinct keys in one transaction, in the order setMany
          // locks keys (as an application avoiding deadlocks would: one costs a second of every
          // writer of those keys). One in ten has a set the database refuses; in half of all the body
          // catches its writes' failures. Either way a failed write keeps the transaction from committing.
          const keys = [...(yield* pickKeys(2, 3))].sort()
          const poisoned = (yield* Random.next) < 0.1 ? yield* Random.nextIntBetween(0, keys.length) : -1
          const steps = yield* Effect.forEach(keys, (key, i) =>
            Effect.map(Random.next, (r) =>
              i === poisoned
                ? { key, kind: "write" as const, value: refusedPayload(nextValue()) }
                : r < 0.7
                  ? { key, kind: "write" as const, value: nextValue() }
                  : { key, kind: "delete" as const, value: null }
            )
          )
          const catching = (yield* Random.next) < 0.5
          const call = `p${config.process}.f${fiberId}.transaction${++counter}${catching ? ".catching" : ""}${
            poisoned >= 0 ? ".poisoned" : ""
          }`
          // What the body saw, which the transaction's answer may not tell: a body that never ran (BEGIN
          // failed) or failed never reaches COMMIT, so nothing of it committed, whatever the ROLLBACK
          // after it did.
          let bodyRan = false
          let bodyFailed: string | undefined
          const caught: Array<string> = []
          const body = Effect.forEach(
            steps,
            (step) => {
              const write =
                step.kind === "write"
                  ? users.set(step.key, { id: step.key, payload: step.value })
                  : users.delete(step.key)
              return catching
                ? Effect.catchAll(write, (error) =>
                    Effect.sync(() => void caught.push(`${step.key}: ${describe(error)}`))
                  )
                : write
            },
            { discard: true }
          ).pipe(
            (run) =>
              Effect.suspend(() => {
                bodyRan = true
                return run
              }),
            Effect.tapErrorCause((cause) =>
              Effect.sync(() => {
                bodyFailed = Option.match(Cause.failureOption(cause), {
                  onNone: () => "a defect",
                  onSome: describe
                })
              })
            )
          )
          const start = monotonicMicros()
          const invoked = steps.map((step) =>
            begin({
              process: config.process,
              key: step.key,
              kind: step.kind,
              value: step.value,
              invoke: start,
              call,
              via: "transaction"
            })
          )
          const exit = yield* Effect.exit(WriteThrough.transaction(body))
          const complete = monotonicMicros()
          const seen = [
            ...(bodyRan ? [] : ["the body never ran"]),
            ...(bodyFailed === undefined ? [] : [`the body failed with ${bodyFailed}`]),
            ...(caught.length === 0 ? [] : [`the body caught ${caught.join("; ")}`])
          ].join("; ")
          for (const [i, step] of steps.entries()) {
            const result = keyOutcomeOf(exit, step.key)
            // A defect after a body that never ran (BEGIN failed), failed, or caught a failed write is
            // the ROLLBACK's: such a transaction must not commit (the checker then tells if it did).
            const rolledBack =
              result.error === "defect" &&
              (!bodyRan || (bodyFailed !== undefined && bodyFailed !== "a defect") || caught.length > 0)
            record({
              ...invoked[i]!,
              complete,
              ...result,
              ...(rolledBack ? { outcome: "fail" as const } : {}),
              ...(seen === "" ? {} : { detail: `${result.detail ?? ""} (${seen})` })
            })
          }
        }
        // A client backs off after a failure, as an application would; without it, calls a breaker
        // refuses at once make these fibers spin, and on this 2-core machine they starve the
        // database the probe waits on.
        if (ops.slice(recorded).some((op) => op.outcome === "fail")) yield* Effect.sleep("10 millis")
      }
    })

  yield* Effect.forEach(
    Array.from({ length: config.fibers }, (_, i) => i),
    fiber,
    { concurrency: "unbounded", discard: true }
  )
  // Stay up while retries and background repairs finish, as a long-running service would.
  yield* Effect.sleep(config.settleMillis)
}).pipe(
  Effect.scoped,
  Effect.provide(layer),
  // A worker started in a killed one's place may start during a fault (Redis down, its PostgreSQL
  // connections terminated, PgClient's first connection among them): like a supervised service it
  // starts again, once both answer. Only the
  // start can fail: every operation of the workload is recorded with its exit.
  Effect.retry({
    while: (error) =>
      error._tag === "CacheConnectionError" ||
      error._tag === "SqlError" ||
      (error._tag === "StoreError" && error.reason === "Unavailable"),
    schedule: Schedule.spaced("500 millis"),
    times: 40
  })
)

Effect.runPromiseExit(program).then((exit) => {
  if (Exit.isFailure(exit)) {
    console.error(`worker ${config.process} failed: ${Cause.pretty(exit.cause)}`)
    process.exitCode = 1
  }
})

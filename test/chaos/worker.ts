// One process of the chaos workload: many fibers doing get / set / delete on a few hot keys through
// the library, each operation recorded with its invoke and complete times on the machine's
// monotonic clock. Started by run.ts with its configuration as the only argument.
import { PgClient } from "@effect/sql-pg"
import { Cause, Effect, Exit, Layer, Option, Random, Redacted, Schedule, Schema } from "effect"
import { writeFileSync } from "node:fs"
import { Cache, RedisCache, SqlStore, Store, WriteThrough } from "../../src/index.js"
import type { Op, Outcome } from "./checker.js"
import { monotonicMicros, naiveRedisCache, type WorkerConfig } from "./workload.js"

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
      transaction: store.transaction,
      inTransaction: store.inTransaction,
      collection: (target) =>
        Effect.map(store.collection(target), (collection) => ({
          get: (key) => Effect.zipLeft(collection.get(key), hold),
          getMany: (keys) => Effect.zipLeft(collection.getMany(keys), hold),
          put: (key, value) => Effect.zipLeft(collection.put(key, value), hold),
          putMany: (entries) => Effect.zipLeft(collection.putMany(entries), hold),
          delete: (key) => Effect.zipLeft(collection.delete(key), hold)
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
      ...(config.near ? { near: {} } : {})
    })

const layer = Layer.merge(
  racingCache.pipe(Layer.provide(cacheLayer)),
  racingStore.pipe(Layer.provide(SqlStore.layer()))
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

const outcomeOf = (exit: Exit.Exit<unknown, { readonly _tag: string }>): { outcome: Outcome; error?: string } => {
  if (Exit.isSuccess(exit)) return { outcome: "ok" }
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) return { outcome: "unknown", error: "defect" }
  const tag = failure.value._tag
  // Committed, but the library could not vouch for the cache; or the commit's outcome is unknown.
  return { outcome: tag === "StaleCacheError" || tag === "InconsistentCacheError" ? "unknown" : "fail", error: tag }
}

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
  const ops: Array<Op> = []
  // Connected and prepared: the orchestrator starts the faults once every worker says so.
  writeFileSync(`${config.output}.ready`, "")
  const deadline = monotonicMicros() + config.runMillis * 1000
  let counter = 0

  const fiber = (fiberId: number) =>
    Effect.gen(function* () {
      while (monotonicMicros() < deadline) {
        const key = config.keys[yield* Random.nextIntBetween(0, config.keys.length)]!
        const roll = yield* Random.next
        const invoke = monotonicMicros()
        if (roll < 0.6) {
          const exit = yield* Effect.exit(users.get(key))
          const complete = monotonicMicros()
          const { outcome, error } = outcomeOf(exit)
          const value = Exit.isSuccess(exit) ? Option.getOrNull(Option.map(exit.value, (row) => row.payload)) : null
          ops.push({ process: config.process, key, kind: "read", value, invoke, complete, outcome, error })
        } else if (roll < 0.9) {
          const value = `p${config.process}.f${fiberId}.${++counter}`
          const exit = yield* Effect.exit(users.set(key, { id: key, payload: value }))
          ops.push({
            process: config.process,
            key,
            kind: "write",
            value,
            invoke,
            complete: monotonicMicros(),
            ...outcomeOf(exit)
          })
        } else {
          const exit = yield* Effect.exit(users.delete(key))
          ops.push({
            process: config.process,
            key,
            kind: "delete",
            value: null,
            invoke,
            complete: monotonicMicros(),
            ...outcomeOf(exit)
          })
        }
      }
    })

  yield* Effect.forEach(
    Array.from({ length: config.fibers }, (_, i) => i),
    fiber,
    { concurrency: "unbounded", discard: true }
  )
  writeFileSync(config.output, ops.map((op) => JSON.stringify(op)).join("\n"))
  // Stay up while retries and background repairs finish, as a long-running service would.
  yield* Effect.sleep(config.settleMillis)
}).pipe(Effect.scoped, Effect.provide(layer))

Effect.runPromiseExit(program).then((exit) => {
  if (Exit.isFailure(exit)) {
    console.error(`worker ${config.process} failed: ${Cause.pretty(exit.cause)}`)
    process.exitCode = 1
  }
})

// A write-through over the real Redis and Postgres with fault injection on both tiers,
// and a way to drive TestClock while real I/O is in flight.
import { type Duration, Effect, Fiber, Layer, type Metric, Option, Schema, TestClock } from "effect"
import type * as Scope from "effect/Scope"
import type { Redis } from "ioredis"
import { Metrics, SqlStore, type Store, WriteThrough } from "../../src/index.js"
import { FaultyCache, FaultyStore } from "../../src/testing.js"
import { User } from "../contract/WriteThroughContract.js"
import { PgLive, rawRedis, redisCacheLayer, unique, usersTable } from "./services.js"

export interface Harness {
  readonly entity: string
  readonly users: WriteThrough.WriteThrough<string, User>
  readonly collection: Store.Store.Collection
  readonly cacheFaults: FaultyCache.Controls
  readonly storeFaults: FaultyStore.Controls
  readonly redis: Redis
  /** The Redis key the library uses for a user key. */
  readonly redisKey: (key: string) => string
  /** What Redis holds for a user key, read behind the library's back. */
  readonly raw: (key: string) => Effect.Effect<string | null>
  readonly count: (metric: Metric.Metric.Counter<number>) => Effect.Effect<number>
}

export type HarnessOptions = Partial<Omit<WriteThrough.Options<string, User, unknown>, "key" | "value" | "table">>

export const user = (id: string, name: string) => new User({ id, name, email: `${id}@example.com` })

/** Runs `body` against a fresh table, a fresh key prefix and fresh fault injectors. */
export const withHarness = <A, E>(
  body: (harness: Harness) => Effect.Effect<A, E, Scope.Scope | Store.Store>,
  options: HarnessOptions = {}
) => {
  const prefix = unique("fc")
  const layer = Layer.mergeAll(
    FaultyCache.layer.pipe(Layer.provide(redisCacheLayer(prefix))),
    FaultyStore.layer.pipe(Layer.provide(SqlStore.layer()))
  ).pipe(Layer.provideMerge(PgLive))
  return Effect.gen(function* () {
    const entity = yield* usersTable
    const table = { name: entity, primaryKey: "id" }
    const users = yield* WriteThrough.make({
      // Real I/O runs while tests move TestClock: keep the bounds out of reach unless a test is about them.
      cacheTimeout: "1 hour",
      storeTimeout: "1 hour",
      ...options,
      entity,
      key: Schema.String,
      value: User,
      table
    })
    const redis = yield* rawRedis
    const redisKey = (key: string) => `${prefix}:${entity}:${key}`
    return yield* body({
      entity,
      users,
      // Straight to Postgres, past the fault injector.
      collection: yield* Effect.flatMap(SqlStore.make(), (store) =>
        store.collection({ entity, fields: ["id", "name", "email"], table })
      ),
      cacheFaults: yield* FaultyCache.FaultyCache,
      storeFaults: yield* FaultyStore.FaultyStore,
      redis,
      redisKey,
      raw: (key) => Effect.promise(() => redis.get(redisKey(key))),
      count: (metric) => Metrics.total(metric, { entity })
    })
  }).pipe(Effect.scoped, Effect.provide(layer))
}

/**
 * Runs an effect that sleeps on TestClock (retry backoff, timeouts) while it also
 * waits on real I/O: moves the clock in small steps and lets real time pass between them.
 */
export const driveClock = <A, E, R>(effect: Effect.Effect<A, E, R>, step: Duration.DurationInput = "10 millis") =>
  Effect.gen(function* () {
    const fiber = yield* Effect.fork(effect)
    for (let i = 0; i < 5_000; i++) {
      if (Option.isSome(yield* Fiber.poll(fiber))) break
      yield* TestClock.adjust(step)
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 1)))
    }
    return yield* Fiber.join(fiber)
  })

export { Metrics }

// A write-through over the real Redis and Postgres with fault injection on both tiers,
// and a way to drive TestClock while real I/O is in flight.
import type * as SqlClient from "@effect/sql/SqlClient"
import { type Duration, Effect, Fiber, Layer, type Metric, Option, Schema, TestClock } from "effect"
import type * as Scope from "effect/Scope"
import type { Redis } from "ioredis"
import { Metrics, SqlStore, type Store, WriteThrough } from "../../src/index.js"
import { FaultyCache, FaultyStore } from "../../src/testing.js"
import { User } from "./fixtures.js"
import { PgLive, rawRedis, redisCacheLayer, unique, usersTable } from "./services.js"

/** One entity a harness runs: its value's schema, its table's value columns, and a fresh table for it. */
export interface EntitySpec<A> {
  readonly value: Schema.Schema<A, any>
  readonly fields: ReadonlyArray<string>
  /** Creates the entity's table, dropped when the test's scope closes, and returns its name. */
  readonly table: Effect.Effect<string, unknown, Scope.Scope | SqlClient.SqlClient>
}

/** The `users(id, name, email)` entity of the seed example. */
export const usersEntity: EntitySpec<User> = { value: User, fields: ["id", "name", "email"], table: usersTable }

/** One entity of a running harness. */
export interface EntityHarness<A> {
  /** The entity's name, which is also its table's name. */
  readonly entity: string
  readonly writeThrough: WriteThrough.WriteThrough<string, A>
  /** Straight to Postgres, past the fault injector. */
  readonly collection: Store.Store.Collection
  /** The Redis key the library uses for a key of this entity. */
  readonly redisKey: (key: string) => string
  /** What Redis holds for a key of this entity, read behind the library's back. */
  readonly raw: (key: string) => Effect.Effect<string | null>
  readonly count: (metric: Metric.Metric.Counter<number>) => Effect.Effect<number>
}

/** What every harness shares, whatever its entities. */
export interface Shared {
  readonly cacheFaults: FaultyCache.Controls
  readonly storeFaults: FaultyStore.Controls
  readonly redis: Redis
}

export interface Entities<Specs extends Record<string, EntitySpec<any>>> extends Shared {
  readonly entities: { readonly [K in keyof Specs]: EntityHarness<Specs[K] extends EntitySpec<infer A> ? A : never> }
}

/** The single-entity harness: the users entity, flattened, its write-through named `users`. */
export interface Harness extends Shared, Omit<EntityHarness<User>, "writeThrough"> {
  readonly users: WriteThrough.WriteThrough<string, User>
}

/** The options every entity of a harness is made with. */
export type HarnessOptions = Partial<
  Omit<WriteThrough.Options<string, unknown, unknown>, "key" | "value" | "table" | "entity">
>

/**
 * Runs `body` against fresh fault injectors (one FaultyCache on the real Redis under a fresh key
 * prefix, one FaultyStore on the real Postgres) and one write-through per entity of `specs`, each in
 * a fresh table of its own. The body keeps the `Store` (for `WriteThrough.transaction`) and the `SqlClient`.
 */
export const withEntities = <const Specs extends Record<string, EntitySpec<any>>, A, E>(
  specs: Specs,
  body: (harness: Entities<Specs>) => Effect.Effect<A, E, Scope.Scope | Store.Store | SqlClient.SqlClient>,
  options: HarnessOptions = {}
) => {
  const prefix = unique("fc")
  const layer = Layer.mergeAll(
    FaultyCache.layer.pipe(Layer.provide(redisCacheLayer(prefix))),
    FaultyStore.layer.pipe(Layer.provide(SqlStore.layer()))
  ).pipe(Layer.provideMerge(PgLive))
  return Effect.gen(function* () {
    const direct = yield* SqlStore.make()
    const redis = yield* rawRedis
    const entities: Record<string, EntityHarness<unknown>> = {}
    for (const [name, spec] of Object.entries(specs)) {
      const entity = yield* spec.table
      const table = { name: entity, primaryKey: "id" }
      const writeThrough = yield* WriteThrough.make({
        // Real I/O runs while tests move TestClock: keep the bounds out of reach unless a test is about them.
        cacheTimeout: "1 hour",
        storeTimeout: "1 hour",
        ...options,
        entity,
        key: Schema.String,
        value: spec.value,
        table
      })
      const redisKey = (key: string) => `${prefix}:${entity}:${key}`
      entities[name] = {
        entity,
        writeThrough,
        collection: yield* direct.collection({ entity, fields: spec.fields, table }),
        redisKey,
        raw: (key) => Effect.promise(() => redis.get(redisKey(key))),
        count: (metric) => Metrics.total(metric, { entity })
      }
    }
    return yield* body({
      entities: entities as Entities<Specs>["entities"],
      cacheFaults: yield* FaultyCache.FaultyCache,
      storeFaults: yield* FaultyStore.FaultyStore,
      redis
    })
  }).pipe(Effect.scoped, Effect.provide(layer))
}

/** Runs `body` against a fresh users table, a fresh key prefix and fresh fault injectors. */
export const withHarness = <A, E>(
  body: (harness: Harness) => Effect.Effect<A, E, Scope.Scope | Store.Store>,
  options: HarnessOptions = {}
) =>
  withEntities(
    { users: usersEntity },
    ({
      entities: {
        users: { writeThrough, ...users }
      },
      ...shared
    }) => body({ ...shared, ...users, users: writeThrough }),
    options
  )

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

// A Redis outage end to end: a private redis-server that the test freezes (SIGSTOP: connections
// stay open, nothing answers), kills (connections refused) and brings back, under a write-through
// over the real PostgreSQL. What is asserted: each operation waits on the cache for at most one
// command timeout; once the breaker is open no operation waits on it at all (reads come from the
// store, writes commit and fail at once with StaleCacheError); and when Redis is back, no read in
// this process returns a value older than a write acknowledged during the outage, while the keys
// written meanwhile are tombstoned and the breaker closes.
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, FiberRef, Layer, Option, Schedule, Schema } from "effect"
import type * as Scope from "effect/Scope"
import { Redis } from "ioredis"
import { Cache, Metrics, RedisCache, SqlStore, WriteThrough } from "../src/index.js"
import { decodeEntry, User, user } from "./support/fixtures.js"
import { type RedisServer, startRedisServer } from "./support/redisServer.js"
import { PgLive, unique, usersTable } from "./support/services.js"

const commandTimeout = 300

/** The cache calls of one operation that waited out the command timeout. */
interface Timeouts {
  count: number
}

// Set by `operation` for the calls it makes, so that the background repair's calls are not counted.
const currentTimeouts = FiberRef.unsafeMake<Timeouts | undefined>(undefined)

// Counts the calls that timed out, between the write-through and the RedisCache (breaker inside).
const countingTimeouts = (cache: Cache.Cache.Service): Cache.Cache.Service => {
  const counted = <A>(effect: Effect.Effect<A, Cache.CacheError>) =>
    Effect.tapError(effect, (error) =>
      Effect.flatMap(FiberRef.get(currentTimeouts), (timeouts) =>
        Effect.sync(() => {
          if (timeouts !== undefined && error.reason === "Timeout") timeouts.count++
        })
      )
    )
  return Cache.Cache.of({
    ...cache,
    get: (key) => counted(cache.get(key)),
    getMany: (keys) => counted(cache.getMany(keys)),
    lease: (key, ttl) => counted(cache.lease(key, ttl)),
    getOrLease: (key, ttl) => counted(cache.getOrLease(key, ttl)),
    set: (key, entry, options) => counted(cache.set(key, entry, options)),
    setMany: (items) => counted(cache.setMany(items)),
    invalidate: (key, version, ttl) => counted(cache.invalidate(key, version, ttl))
  })
}

interface Setup {
  readonly server: RedisServer
  readonly users: WriteThrough.WriteThrough<string, User>
  readonly prefix: string
  readonly timeouts: Timeouts
  /** What the private Redis holds for a key, read behind the library's back. */
  readonly raw: (key: string) => Effect.Effect<Option.Option<Cache.Entry>>
  /** Runs one operation and checks it waited out at most one command timeout. */
  readonly operation: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E>
  readonly breakerTransitions: (state: "open" | "closed") => Effect.Effect<number>
}

const setUp: Effect.Effect<Setup, unknown, Scope.Scope | SqlClient.SqlClient> = Effect.gen(function* () {
  const server = yield* startRedisServer
  const prefix = `${unique("outage")}:`
  const context = yield* Layer.build(
    RedisCache.layer({
      url: server.url,
      keyPrefix: prefix,
      commandTimeout: `${commandTimeout} millis`,
      breaker: {
        failures: 3,
        interval: "500 millis"
      }
    })
  )
  const table = yield* usersTable
  const users = yield* WriteThrough.make({
    entity: table,
    table: { name: table, primaryKey: "id" },
    key: Schema.String,
    value: User,
    repairInterval: "100 millis"
  }).pipe(
    Effect.provideService(Cache.Cache, countingTimeouts(Context.get(context, Cache.Cache))),
    Effect.provide(SqlStore.layer())
  )
  const redis = yield* Effect.acquireRelease(
    Effect.sync(() => new Redis(server.url, { commandTimeout: 2_000, lazyConnect: true, enableOfflineQueue: false })),
    (redis) => Effect.sync(() => redis.disconnect())
  )
  redis.on("error", () => {})
  const raw = (key: string) =>
    Effect.promise(async () => {
      if (redis.status !== "ready") await redis.connect().catch(() => {})
      return decodeEntry(await redis.get(`${prefix}${table}:${key}`))
    })
  const timeouts: Timeouts = { count: 0 }
  const atMostOne = Effect.sync(() => expect(timeouts.count).toBeLessThanOrEqual(1))
  const operation = <A, E>(effect: Effect.Effect<A, E>) =>
    Effect.suspend(() => {
      timeouts.count = 0
      return Effect.locally(effect, currentTimeouts, timeouts)
    }).pipe(
      Effect.tap(() => atMostOne),
      Effect.tapError(() => atMostOne)
    )
  const target = server.url
  return {
    server,
    users,
    prefix,
    timeouts,
    raw,
    operation,
    breakerTransitions: (state) => Metrics.total(Metrics.breakerTransitions, { tier: "cache", target, state })
  }
})

const nameOf = (found: Option.Option<User>) => Option.getOrUndefined(Option.map(found, (u) => u.name))

const keys = ["1", "2", "3", "4"]

/** Warms every key into the cache at "v1". */
const warm = ({ users }: Setup) =>
  Effect.gen(function* () {
    for (const key of keys) yield* users.set(key, user(key, "v1"))
    for (const key of keys) expect(nameOf(yield* users.get(key))).toBe("v1")
  })

/**
 * With the cache unreachable: a write and two reads, each waiting out at most one command timeout
 * (the write makes no further cache call after its update timed out), open the breaker; then reads
 * and writes wait on nothing. Returns what every key must read afterwards.
 */
const throughTheOutage = (setup: Setup) =>
  Effect.gen(function* () {
    const { operation, timeouts, users } = setup
    const first = yield* Effect.flip(operation(users.set("2", user("2", "v2"))))
    expect(first).toMatchObject({ _tag: "StaleCacheError", key: "2", operation: "set" })
    for (let i = 0; i < 2; i++) expect(nameOf(yield* operation(users.get("1")))).toBe("v1")
    // Open: nothing waits on the cache any more.
    expect(nameOf(yield* operation(users.get("1")))).toBe("v1")
    expect(timeouts.count).toBe(0)
    const stale = yield* Effect.flip(operation(users.set("2", user("2", "v3"))))
    expect(stale).toMatchObject({ _tag: "StaleCacheError", key: "2", operation: "set" })
    expect((stale as { cause: ReadonlyArray<{ cause: unknown }> }).cause[0]!.cause).toMatchObject({
      _tag: "CircuitOpen",
      tier: "cache"
    })
    expect(timeouts.count).toBe(0)
    yield* Effect.flip(operation(users.setMany([["3", user("3", "v2")]])))
    yield* Effect.flip(operation(users.delete("4")))
    expect(timeouts.count).toBe(0)
    // This process reads its own writes, from the store.
    const expected = { "1": "v1", "2": "v3", "3": "v2", "4": undefined } as Record<string, string | undefined>
    for (const key of keys) expect(nameOf(yield* operation(users.get(key)))).toBe(expected[key])
    return expected
  })

/**
 * Redis is back: reads keep returning what was acknowledged while the tombstones land and the
 * breaker closes, then the keys are read through and served by the cache again.
 */
const afterTheOutage = (setup: Setup, expected: Record<string, string | undefined>, memoryKept: boolean) =>
  Effect.gen(function* () {
    const { breakerTransitions, raw, users } = setup
    const closedBefore = yield* breakerTransitions("closed")
    // With no call of the application's, the background repair probes Redis and closes the breaker.
    yield* breakerTransitions("closed").pipe(
      Effect.filterOrFail((closed) => closed > closedBefore),
      Effect.retry(Schedule.intersect(Schedule.spaced("50 millis"), Schedule.recurs(200)))
    )
    yield* Effect.gen(function* () {
      for (const key of keys) expect(nameOf(yield* users.get(key))).toBe(expected[key])
      if ((yield* breakerTransitions("closed")) === closedBefore) return yield* Effect.fail("breaker still open")
      if (memoryKept) {
        for (const key of ["2", "3", "4"]) {
          const entry = yield* raw(key)
          if (Option.isSome(entry) && entry.value._tag === "Value" && entry.value.version < 2) {
            return yield* Effect.fail(`key ${key} still holds its old value in Redis`)
          }
        }
      }
    }).pipe(Effect.retry(Schedule.intersect(Schedule.spaced("50 millis"), Schedule.recurs(200))))
    // Served by the cache again: every key reads back at its acknowledged value.
    for (let round = 0; round < 3; round++) {
      for (const key of keys) expect(nameOf(yield* users.get(key))).toBe(expected[key])
    }
    const filled = yield* raw("1")
    expect(Option.map(filled, (entry) => entry._tag)).toEqual(Option.some("Value"))
  })

describe("RedisCache outage, end to end over PostgreSQL", () => {
  it.live("Redis frozen (SIGSTOP) then thawed with its memory: nothing acknowledged is lost", () =>
    Effect.gen(function* () {
      const setup = yield* setUp
      yield* warm(setup)
      yield* setup.server.freeze
      const expected = yield* throughTheOutage(setup)
      // Redis still holds "v1" for the keys written meanwhile.
      yield* setup.server.thaw
      yield* afterTheOutage(setup, expected, true)
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live(
    "Redis killed (connections refused) then restarted empty: calls fail at once, then the cache fills again",
    () =>
      Effect.gen(function* () {
        const setup = yield* setUp
        yield* warm(setup)
        yield* setup.server.kill
        const expected = yield* throughTheOutage(setup)
        // Nothing waited: a refused connection fails a command at once, without a queue.
        yield* setup.server.start
        yield* afterTheOutage(setup, expected, false)
      }).pipe(Effect.scoped, Effect.provide(PgLive))
  )
})

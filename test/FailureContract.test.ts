// Every row of the failure contract, against the real Redis and Postgres, with faults injected by the
// public FaultyCache / FaultyStore layers.
import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Duration,
  Effect,
  Either,
  Fiber,
  HashMap,
  Layer,
  Logger,
  Option,
  Schedule,
  Schema,
  TestClock
} from "effect"
import type * as Scope from "effect/Scope"
import { Cache, RedisCache, SqlStore, Store, WriteThrough, WriteThroughError } from "../src/index.js"
import { User, user, versionOf } from "./support/fixtures.js"
import { driveClock, Metrics, withHarness } from "./support/harness.js"
import { type RedisServer, startRedisServer } from "./support/redisServer.js"
import { Redis } from "ioredis"
import { PgLive, usersTable } from "./support/services.js"

describe("failure contract", () => {
  it.effect("a value that fails its schema: nothing is written, a ValidationError", () =>
    withHarness(({ users, collection, cacheFaults, storeFaults, raw }) =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(users.set("1", { ...user("1", "Ada"), email: "nope" }))
        expect(error).toBeInstanceOf(WriteThroughError.ValidationError)
        expect(yield* storeFaults.calls("put")).toBe(0)
        expect(yield* cacheFaults.calls("set")).toBe(0)
        expect(yield* raw("1")).toBeNull()
        expect(yield* collection.get("1")).toEqual(Option.none())
      })
    )
  )

  it.effect("the database write fails: the cache is untouched, a StoreError", () =>
    withHarness(({ users, collection, cacheFaults, storeFaults, raw }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        const before = yield* raw("1")
        const setsBefore = yield* cacheFaults.calls("set")
        yield* storeFaults.failNext(1, "put")
        const error = yield* Effect.flip(users.set("1", user("1", "v2")))
        expect(error._tag).toBe("StoreError")
        expect(yield* raw("1")).toBe(before)
        expect(yield* cacheFaults.calls("set")).toBe(setsBefore)
        expect(yield* cacheFaults.calls("invalidate")).toBe(0)
        expect(Option.getOrThrow(yield* collection.get("1")).value).toMatchObject({ name: "v1" })
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
      })
    )
  )

  it.effect("the cache write fails a few times: retried on the schedule, then succeeds", () =>
    withHarness(({ users, collection, cacheFaults, raw, count }) =>
      Effect.gen(function* () {
        yield* cacheFaults.failNext(2, "set")
        yield* driveClock(users.set("1", user("1", "v1")))
        expect(yield* cacheFaults.calls("set")).toBe(3)
        expect(yield* count(Metrics.cacheWriteRetries)).toBe(2)
        const stored = Option.getOrThrow(yield* collection.get("1"))
        expect(yield* raw("1")).toBe(
          `v${stored.version}:${JSON.stringify({ id: "1", name: "v1", email: "1@example.com" })}`
        )
      })
    )
  )

  it.effect(
    "the cache write keeps failing: the key is invalidated with a versioned tombstone, the write succeeds",
    () =>
      withHarness(({ users, collection, cacheFaults, raw, count }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          yield* cacheFaults.failAlways("set")
          yield* driveClock(users.set("1", user("1", "v2")))
          const stored = Option.getOrThrow(yield* collection.get("1"))
          expect(yield* raw("1")).toBe(`t${stored.version}:`)
          expect(yield* count(Metrics.invalidationFallbacks)).toBe(1)
          // Reads go past the tombstone to the database.
          expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v2")
        })
      )
  )

  it.effect(
    "cache write and invalidation both fail: a StaleCacheError carrying entity, key, version and the bound",
    () =>
      withHarness(
        ({ entity, users, collection, cacheFaults, raw, count }) =>
          Effect.gen(function* () {
            yield* users.set("1", user("1", "v1"))
            const cachedBefore = yield* raw("1")
            yield* cacheFaults.failAlways("set", "invalidate")
            const setsBefore = yield* cacheFaults.calls("set")
            const startedAt = yield* TestClock.currentTimeMillis
            const error = yield* Effect.flip(driveClock(users.set("1", user("1", "v2"))))
            const finishedAt = yield* TestClock.currentTimeMillis
            expect(error).toBeInstanceOf(WriteThroughError.StaleCacheError)
            if (error._tag !== "StaleCacheError") return
            const stored = Option.getOrThrow(yield* collection.get("1"))
            expect(stored.value).toMatchObject({ name: "v2" })
            expect(error).toMatchObject({ entity, key: "1", operation: "set", version: stored.version })
            expect(Duration.toMillis(error.maxStaleness)).toBe(Duration.toMillis("10 minutes") * 1.1)
            expect(error.staleUntil).toBeGreaterThanOrEqual(startedAt + Duration.toMillis(error.maxStaleness))
            expect(error.staleUntil).toBeLessThanOrEqual(finishedAt + Duration.toMillis(error.maxStaleness))
            // The default schedule: the first try and three retries, for the update and for the invalidation.
            expect((yield* cacheFaults.calls("set")) - setsBefore).toBe(4)
            expect(yield* cacheFaults.calls("invalidate")).toBe(4)
            expect(yield* count(Metrics.staleWrites)).toBe(1)
            // What the error warns of: the cache still holds the previous value.
            expect(yield* raw("1")).toBe(cachedBefore)
          }),
        { ttl: "10 minutes" }
      )
  )

  it.effect("after a StaleCacheError, the tombstone is retried in the background until it lands", () =>
    withHarness(
      ({ users, collection, cacheFaults, raw }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          yield* cacheFaults.failAlways("set", "invalidate")
          const error = yield* Effect.flip(users.set("1", user("1", "v2")))
          expect(error._tag).toBe("StaleCacheError")
          const stored = Option.getOrThrow(yield* collection.get("1"))
          expect(yield* raw("1")).toMatch(/^v\d+:.*"v1"/)
          // Still failing: the background repair keeps trying without giving up.
          yield* driveClock(TestClock.adjust("5 seconds"))
          const attempts = yield* cacheFaults.calls("invalidate")
          expect(attempts).toBeGreaterThanOrEqual(3)
          expect(yield* raw("1")).toMatch(/^v\d+:.*"v1"/)
          yield* cacheFaults.heal
          yield* driveClock(
            Effect.repeat(raw("1"), {
              until: (entry) => entry?.startsWith("t") === true,
              schedule: Schedule.spaced("100 millis")
            })
          )
          expect(yield* raw("1")).toBe(`t${stored.version}:`)
          expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v2")
        }),
      { retry: Schedule.recurs(0), repairInterval: "1 second" }
    )
  )

  it.effect("the failure points log through Effect's logger, with the entity and never the key", () =>
    withHarness(
      ({ entity, users, cacheFaults, storeFaults }) =>
        Effect.gen(function* () {
          const lines: Array<{ level: string; message: string; annotations: Record<string, unknown> }> = []
          const logger = Logger.make(({ annotations, logLevel, message }) => {
            lines.push({
              level: logLevel.label,
              message: String(Array.isArray(message) ? message.join(" ") : message),
              annotations: Object.fromEntries(HashMap.toEntries(annotations))
            })
          })
          yield* Effect.gen(function* () {
            yield* cacheFaults.failNext(2, "set")
            yield* users.set("secret-1", user("secret-1", "a")) // the update fails twice, the invalidation works
            yield* cacheFaults.failAlways("set", "invalidate")
            yield* Effect.flip(users.set("secret-2", user("secret-2", "b")))
            yield* storeFaults.loseConnectionOnCommit({ committed: true })
            yield* Effect.flip(users.set("secret-3", user("secret-3", "c")))
          }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)), (effect) => driveClock(effect))
          expect(lines.map((line) => [line.level, line.message])).toEqual([
            ["WARN", "cache update failed; invalidated the key instead"],
            ["ERROR", "cache update and invalidation failed after a commit; the cache may be stale"],
            ["ERROR", "the store's outcome is unknown; the key was fenced in the cache"]
          ])
          for (const line of lines) {
            expect(line.annotations.entity).toBe(entity)
            expect(JSON.stringify(line)).not.toContain("secret")
          }
        }),
      { retry: Schedule.recurs(1) }
    )
  )

  it.effect("the default retry schedule stays within its time bound", () =>
    withHarness(({ users, cacheFaults }) =>
      Effect.gen(function* () {
        yield* cacheFaults.failAlways("set", "invalidate")
        const startedAt = yield* TestClock.currentTimeMillis
        yield* Effect.flip(driveClock(users.set("1", user("1", "v1")), "5 millis"))
        const elapsed = (yield* TestClock.currentTimeMillis) - startedAt
        // Two schedules (update, then invalidation), each within 2 seconds of backoff.
        expect(elapsed).toBeLessThanOrEqual(4_100)
      })
    )
  )

  it.effect(
    "a hung cache on the write path costs one cacheTimeout: the write ends with a StaleCacheError, no retry, no invalidation",
    () =>
      withHarness(
        ({ users, collection, cacheFaults }) =>
          Effect.gen(function* () {
            yield* cacheFaults.hang("set", "invalidate")
            const startedAt = yield* TestClock.currentTimeMillis
            const error = yield* Effect.flip(driveClock(users.set("1", user("1", "v1")), "100 millis"))
            expect(error._tag).toBe("StaleCacheError")
            if (error._tag !== "StaleCacheError") return
            const causes = error.cause as ReadonlyArray<Cache.CacheError>
            expect(causes.map((cause) => cause.reason)).toEqual(["Timeout"])
            expect([yield* cacheFaults.calls("set"), yield* cacheFaults.calls("invalidate")]).toEqual([1, 0])
            expect((yield* TestClock.currentTimeMillis) - startedAt).toBeLessThan(2_000)
            expect(Option.getOrThrow(yield* collection.get("1")).value).toMatchObject({ name: "v1" })
          }),
        { cacheTimeout: "1 second", retry: Schedule.recurs(1), repairInterval: "1 hour" }
      )
  )

  it.effect("the commit's outcome is unknown and it did commit: the key is fenced, an InconsistentCacheError", () =>
    withHarness(({ users, collection, storeFaults, raw, count }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        yield* storeFaults.loseConnectionOnCommit({ committed: true })
        const error = yield* Effect.flip(users.set("1", user("1", "v2")))
        expect(error).toBeInstanceOf(WriteThroughError.InconsistentCacheError)
        expect(error).toMatchObject({ key: "1", operation: "set", invalidated: true })
        expect(yield* raw("1")).toBe(`t${Cache.FENCE_VERSION}:`)
        expect(yield* count(Metrics.inconsistentWrites)).toBe(1)
        expect(Option.getOrThrow(yield* collection.get("1")).value).toMatchObject({ name: "v2" })
        // The old value is no longer served: reads see what the database decided.
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v2")
      })
    )
  )

  it.effect("the commit's outcome is unknown and it did not commit: reads see the database's value", () =>
    withHarness(({ users, storeFaults, raw }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        yield* storeFaults.loseConnectionOnCommit({ committed: false })
        const error = yield* Effect.flip(users.set("1", user("1", "v2")))
        expect(error).toMatchObject({ _tag: "InconsistentCacheError", invalidated: true })
        expect(versionOf(yield* raw("1"))).toBe(Cache.FENCE_VERSION)
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
      })
    )
  )

  it.effect("a defect from the store while committing (a failing COMMIT) is an unknown outcome too", () =>
    withHarness(({ users, storeFaults, raw }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        yield* storeFaults.loseConnectionOnCommit({ committed: true, defect: true })
        const error = yield* Effect.flip(users.set("1", user("1", "v2")))
        expect(error).toMatchObject({ _tag: "InconsistentCacheError", invalidated: true })
        expect(yield* raw("1")).toBe(`t${Cache.FENCE_VERSION}:`)
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v2")
      })
    )
  )

  it.effect("a caller interrupted while the store commits: the key is fenced, no old value stays cached", () =>
    withHarness(({ users, collection, storeFaults, raw }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        const commit = yield* storeFaults.pause({ when: "after" }, "put")
        const writer = yield* Effect.fork(users.set("1", user("1", "v2")))
        yield* commit.reached // committed; the reply is held
        yield* Fiber.interrupt(writer)
        expect(yield* raw("1")).toBe(`t${Cache.FENCE_VERSION}:`)
        expect(Option.getOrThrow(yield* collection.get("1")).value).toMatchObject({ name: "v2" })
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v2")
      })
    )
  )

  it.effect("a caller interrupted after the commit answered: the cache update still completes", () =>
    withHarness(({ users, collection, cacheFaults, raw }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        const update = yield* cacheFaults.pause({ when: "before" }, "set")
        const writer = yield* Effect.fork(users.set("1", user("1", "v2")))
        yield* update.reached
        const interrupted = yield* Effect.fork(Fiber.interrupt(writer))
        yield* update.release
        yield* Fiber.join(interrupted)
        const stored = Option.getOrThrow(yield* collection.get("1"))
        expect(yield* raw("1")).toMatch(new RegExp(`^v${stored.version}:`))
      })
    )
  )

  it.effect("the commit's outcome is unknown and the cache is down too: InconsistentCacheError, not invalidated", () =>
    withHarness(({ users, cacheFaults, storeFaults }) =>
      Effect.gen(function* () {
        yield* cacheFaults.failAlways("invalidate")
        yield* storeFaults.loseConnectionOnCommit({ committed: true }, "delete")
        yield* users.set("1", user("1", "v1"))
        const error = yield* Effect.flip(driveClock(users.delete("1")))
        expect(error).toMatchObject({ _tag: "InconsistentCacheError", operation: "delete", invalidated: false })
      })
    )
  )

  it.effect("a hung database write is bounded and treated as an unknown outcome", () =>
    withHarness(
      ({ users, storeFaults, raw }) =>
        Effect.gen(function* () {
          yield* storeFaults.hang("put")
          const error = yield* Effect.flip(driveClock(users.set("1", user("1", "v1")), "100 millis"))
          expect(error).toMatchObject({ _tag: "InconsistentCacheError", invalidated: true })
          if (error._tag === "InconsistentCacheError") expect(Cause.isTimeoutException(error.cause)).toBe(true)
          expect(yield* raw("1")).toBe(`t${Cache.FENCE_VERSION}:`)
        }),
      { storeTimeout: "2 seconds" }
    )
  )

  it.effect("delete: the database delete fails, the cache keeps the value, a StoreError", () =>
    withHarness(({ users, storeFaults, raw }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        const before = yield* raw("1")
        yield* storeFaults.failNext(1, "delete")
        expect((yield* Effect.flip(users.delete("1")))._tag).toBe("StoreError")
        expect(yield* raw("1")).toBe(before)
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
      })
    )
  )

  it.effect("delete: committed but the tombstone cannot be written: a StaleCacheError for the delete", () =>
    withHarness(({ users, collection, cacheFaults }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        yield* cacheFaults.failAlways("invalidate")
        const error = yield* Effect.flip(driveClock(users.delete("1")))
        expect(error).toMatchObject({ _tag: "StaleCacheError", operation: "delete", key: "1" })
        expect(yield* collection.get("1")).toEqual(Option.none())
      })
    )
  )

  it.effect("delete leaves a tombstone above the deleted row's version", () =>
    withHarness(({ users, collection, raw }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        const rowVersion = Option.getOrThrow(yield* collection.get("1")).version
        yield* users.delete("1")
        const tombstone = yield* raw("1")
        expect(tombstone).toMatch(/^t\d+:$/)
        expect(versionOf(tombstone)).toBeGreaterThan(rowVersion)
      })
    )
  )

  it.effect("the cache fails on read: the value comes from the database, counted, not failed", () =>
    withHarness(({ users, cacheFaults, count }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        yield* cacheFaults.failAlways("get")
        const setsBefore = yield* cacheFaults.calls("set")
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
        expect(yield* users.get("absent")).toEqual(Option.none())
        expect(yield* count(Metrics.degradedReads)).toBe(2)
        // No fill is attempted against a cache that just failed.
        expect(yield* cacheFaults.calls("set")).toBe(setsBefore)
        // Nor a lease: against a hung cache, each would cost another cacheTimeout.
        expect(yield* cacheFaults.calls("lease")).toBe(0)
      })
    )
  )

  it.effect("a hung cache on read is bounded: the value comes from the database", () =>
    withHarness(
      ({ users, cacheFaults, count }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          yield* cacheFaults.hang("get")
          const got = yield* driveClock(users.get("1"), "50 millis")
          expect(Option.getOrThrow(got).name).toBe("v1")
          expect(yield* count(Metrics.degradedReads)).toBe(1)
        }),
      { cacheTimeout: "500 millis" }
    )
  )

  it.effect("metrics: a miss's fill counts as a fill, and each failed cache call as a cache error of its call", () =>
    withHarness(({ entity, users, collection, cacheFaults, count }) =>
      Effect.gen(function* () {
        yield* collection.put("1", { id: "1", name: "v1", email: "1@example.com" })
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
        expect(yield* count(Metrics.cacheFills)).toBe(1)
        expect(yield* count(Metrics.cacheErrors)).toBe(0)
        yield* cacheFaults.failNext(2, "set")
        yield* driveClock(users.set("1", user("1", "v2")))
        expect(yield* Metrics.total(Metrics.cacheErrors, { entity, operation: "set" })).toBe(2)
        yield* cacheFaults.failNext(1, "get")
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v2")
        expect(yield* Metrics.total(Metrics.cacheErrors, { entity, operation: "get" })).toBe(1)
      })
    )
  )

  describe("setMany", () => {
    const batch = (names: string) => ["1", "2", "3"].map((id) => [id, user(id, `${names} ${id}`)] as const)

    it.effect("the database refuses the batch: a StoreError, nothing written anywhere", () =>
      withHarness(({ users, collection, storeFaults, raw }) =>
        Effect.gen(function* () {
          yield* storeFaults.failNext(1, "put")
          expect((yield* Effect.flip(users.setMany(batch("v1"))))._tag).toBe("StoreError")
          for (const id of ["1", "2", "3"]) {
            expect(yield* collection.get(id)).toEqual(Option.none())
            expect(yield* raw(id)).toBeNull()
          }
        })
      )
    )

    it.effect("the outcome is unknown: every key is fenced, an InconsistentCacheError listing them", () =>
      withHarness(({ entity, users, collection, storeFaults, raw }) =>
        Effect.gen(function* () {
          yield* users.setMany(batch("v1"))
          yield* storeFaults.loseConnectionOnCommit({ committed: true }, "put")
          const error = yield* Effect.flip(driveClock(users.setMany(batch("v2"))))
          expect(error).toMatchObject({ _tag: "InconsistentCacheError", operation: "setMany", invalidated: true })
          if (error._tag !== "InconsistentCacheError") return
          expect(error.keys?.map(({ key }) => key)).toEqual(["1", "2", "3"])
          expect(error.keys?.every((key) => key.entity === entity)).toBe(true)
          for (const id of ["1", "2", "3"]) {
            expect(yield* raw(id)).toBe(`t${Cache.FENCE_VERSION}:`)
            expect(Option.getOrThrow(yield* collection.get(id)).value).toMatchObject({ name: `v2 ${id}` })
          }
        })
      )
    )

    it.effect("the pipelined cache write fails once: each key is published on its own, no error", () =>
      withHarness(({ users, collection, cacheFaults, raw }) =>
        Effect.gen(function* () {
          yield* cacheFaults.failNext(1, "set")
          yield* driveClock(users.setMany(batch("v1")))
          for (const id of ["1", "2", "3"]) {
            const row = Option.getOrThrow(yield* collection.get(id))
            expect(yield* raw(id)).toMatch(new RegExp(`^v${row.version}:`))
          }
        })
      )
    )

    it.effect("the cache refuses every update and invalidation: a StaleCacheError, the rows committed", () =>
      withHarness(({ users, collection, cacheFaults }) =>
        Effect.gen(function* () {
          yield* cacheFaults.failAlways("set", "invalidate")
          const error = yield* Effect.flip(driveClock(users.setMany(batch("v1"))))
          expect(error).toMatchObject({ _tag: "StaleCacheError", operation: "set" })
          for (const id of ["1", "2", "3"]) {
            expect(Option.getOrThrow(yield* collection.get(id)).value).toMatchObject({ name: `v1 ${id}` })
          }
        })
      )
    )

    it.effect("inside WriteThrough.transaction: published after COMMIT, and not at all on rollback", () =>
      withHarness(({ users, collection, raw }) =>
        Effect.gen(function* () {
          yield* Effect.flip(
            WriteThrough.transaction(Effect.zipRight(users.setMany(batch("rolled back")), Effect.fail("boom")))
          )
          expect(yield* collection.get("1")).toEqual(Option.none())
          expect(yield* raw("1")).toBeNull()
          yield* WriteThrough.transaction(users.setMany(batch("committed")))
          for (const id of ["1", "2", "3"]) {
            const row = Option.getOrThrow(yield* collection.get(id))
            expect(yield* raw(id)).toMatch(new RegExp(`^v${row.version}:`))
          }
        })
      )
    )
  })

  // Under the live clock the bounds take a cheaper path than Effect.timeout (one fork and a timer):
  // the same contract, checked against real time.
  describe("bounds under the live clock", () => {
    it.live("a hung database write fails at the store timeout as an unknown outcome, and the key is fenced", () =>
      withHarness(
        ({ users, storeFaults, raw }) =>
          Effect.gen(function* () {
            yield* users.set("1", user("1", "v1"))
            yield* storeFaults.hang("put")
            const error = yield* Effect.flip(users.set("1", user("1", "v2")))
            expect(error).toMatchObject({ _tag: "InconsistentCacheError", operation: "set", invalidated: true })
            if (error._tag === "InconsistentCacheError") expect(Cause.isTimeoutException(error.cause)).toBe(true)
            expect(yield* raw("1")).toBe(`t${Cache.FENCE_VERSION}:`)
          }),
        { storeTimeout: "200 millis" }
      )
    )

    it.live("a hung database read on a miss fails at the store timeout with a StoreError Timeout", () =>
      withHarness(
        ({ users, storeFaults, raw }) =>
          Effect.gen(function* () {
            yield* storeFaults.hang("get")
            const error = yield* Effect.flip(users.get("1"))
            expect(error).toMatchObject({ _tag: "StoreError", reason: "Timeout", key: "1" })
            expect(yield* raw("1")).toBeNull()
          }),
        { storeTimeout: "200 millis" }
      )
    )

    it.live("a hung cache read fails at the cache timeout and the value comes from the database", () =>
      withHarness(
        ({ users, cacheFaults, count }) =>
          Effect.gen(function* () {
            yield* users.set("1", user("1", "v1"))
            yield* cacheFaults.hang("get")
            expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
            expect(yield* count(Metrics.degradedReads)).toBe(1)
          }),
        { cacheTimeout: "200 millis" }
      )
    )

    it.live("a caller interrupted while the store write hangs leaves the key fenced", () =>
      withHarness(
        ({ users, storeFaults, raw }) =>
          Effect.gen(function* () {
            yield* users.set("1", user("1", "v1"))
            yield* storeFaults.hang("put")
            const fiber = yield* Effect.fork(users.set("1", user("1", "v2")))
            yield* Effect.sleep("50 millis")
            yield* Fiber.interrupt(fiber)
            expect(yield* raw("1")).toBe(`t${Cache.FENCE_VERSION}:`)
          }),
        { storeTimeout: "10 seconds" }
      )
    )
  })

  it.effect("the database fails on a miss: a StoreError, nothing cached", () =>
    withHarness(({ users, collection, storeFaults, raw }) =>
      Effect.gen(function* () {
        yield* collection.put("1", { id: "1", name: "v1", email: "1@example.com" })
        yield* storeFaults.failNext(1, "get")
        expect((yield* Effect.flip(users.get("1")))._tag).toBe("StoreError")
        expect(yield* raw("1")).toBeNull()
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
      })
    )
  )

  it.effect("getMany of 100 keys: one cache round trip, one store query for the misses, then all hits", () =>
    withHarness(({ users, collection, cacheFaults, storeFaults }) =>
      Effect.gen(function* () {
        const keys = Array.from({ length: 100 }, (_, i) => `k${i}`)
        yield* Effect.forEach(keys.slice(0, 50), (key) => users.set(key, user(key, key)))
        yield* Effect.forEach(keys.slice(50), (key) =>
          collection.put(key, { id: key, name: key, email: `${key}@example.com` })
        )
        const getsBefore = yield* cacheFaults.calls("get")
        const setsBefore = yield* cacheFaults.calls("set")
        const first = yield* users.getMany(keys)
        expect(first.map((u) => Option.getOrThrow(u).name)).toEqual(keys)
        expect((yield* cacheFaults.calls("get")) - getsBefore).toBe(1)
        expect(yield* storeFaults.calls("get")).toBe(1)
        expect((yield* cacheFaults.calls("set")) - setsBefore).toBe(1) // one pipelined fill
        const second = yield* users.getMany(keys)
        expect(second).toEqual(first)
        expect(yield* storeFaults.calls("get")).toBe(1)
      })
    )
  )

  it.effect("getBatched under Effect.forEach with batching: one cache round trip and one store query", () =>
    withHarness(({ users, collection, cacheFaults, storeFaults }) =>
      Effect.gen(function* () {
        const keys = Array.from({ length: 20 }, (_, i) => `k${i}`)
        yield* Effect.forEach(keys, (key) => collection.put(key, { id: key, name: key, email: `${key}@example.com` }))
        const got = yield* Effect.forEach(keys, users.getBatched, { batching: true, concurrency: "unbounded" })
        expect(got.map((u) => Option.getOrThrow(u).name)).toEqual(keys)
        expect(yield* cacheFaults.calls("get")).toBe(1)
        expect(yield* storeFaults.calls("get")).toBe(1)
      })
    )
  )

  it.effect("getMany with the cache down: every value from one store query, counted as degraded", () =>
    withHarness(({ users, collection, cacheFaults, storeFaults, count }) =>
      Effect.gen(function* () {
        yield* collection.put("a", { id: "a", name: "a", email: "a@example.com" })
        yield* cacheFaults.failAlways("get")
        const got = yield* users.getMany(["a", "b"])
        expect(got.map((u) => Option.map(u, (x) => x.name))).toEqual([Option.some("a"), Option.none()])
        expect(yield* storeFaults.calls("get")).toBe(1)
        expect(yield* count(Metrics.degradedReads)).toBe(2)
        expect(yield* cacheFaults.calls("set")).toBe(0)
      })
    )
  )

  it.effect("the audit finds entries older, newer or deleted behind the library's back, and repairs them", () =>
    withHarness(({ users, collection, redis, redisKey }) =>
      Effect.gen(function* () {
        const keys = ["1", "2", "3", "4", "user:*[x]"]
        for (const key of keys) yield* users.set(key, user(key, `v ${key}`))
        const payload = (key: string, name: string) => JSON.stringify({ id: key, name, email: `${key}@example.com` })
        yield* Effect.promise(() => redis.set(redisKey("2"), `v1:${payload("2", "older")}`, "PX", 60_000))
        yield* collection.delete("3") // the row is gone; the cache still holds it
        yield* Effect.promise(() => redis.set(redisKey("4"), `v${2 ** 50}:${payload("4", "foreign")}`, "PX", 60_000))
        const found = yield* users.audit()
        expect(found).toMatchObject({ scanned: 5, values: 5, consistent: 2, stale: 2, ahead: 1, repaired: 0 })
        expect(found.nines).toBeCloseTo(-Math.log10(3 / 5))
        const repaired = yield* users.audit({ repair: true })
        expect(repaired).toMatchObject({ values: 5, stale: 2, ahead: 1, repaired: 3 })
        const after = yield* users.audit()
        expect(after).toMatchObject({ values: 2, consistent: 2, stale: 0, ahead: 0, nines: Infinity })
        expect(Option.getOrThrow(yield* users.get("2")).name).toBe("v 2")
        expect(yield* users.get("3")).toEqual(Option.none())
        expect(Option.getOrThrow(yield* users.get("4")).name).toBe("v 4")
      })
    )
  )

  it.effect("a database row that does not fit the schema fails with a StoreError of reason Decode", () =>
    withHarness(({ users, collection }) =>
      Effect.gen(function* () {
        yield* collection.put("1", { id: "1", name: "v1", email: "not an email" })
        const error = yield* Effect.flip(users.get("1"))
        expect(error).toMatchObject({ _tag: "StoreError", reason: "Decode", key: "1" })
      })
    )
  )

  describe("a cache entry that fails to decode is a miss, repaired from the database", () => {
    const corruptions: ReadonlyArray<[string, (version: number) => string]> = [
      ["garbage from another client", () => "not an entry at all"],
      ["a payload of an old schema at the same version", (version) => `v${version}:{"id":"1","fullName":"v1"}`],
      ["a payload that is not JSON at a higher version", (version) => `v${version + 1000}:{oops`],
      ["a truncated header", () => "v12"]
    ]
    for (const [name, corrupt] of corruptions) {
      it.effect(name, () =>
        withHarness(({ users, collection, redis, redisKey, raw, count }) =>
          Effect.gen(function* () {
            yield* users.set("1", user("1", "v1"))
            const stored = Option.getOrThrow(yield* collection.get("1"))
            yield* Effect.promise(() => redis.set(redisKey("1"), corrupt(stored.version)))
            expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
            expect(yield* raw("1")).toBe(
              `v${stored.version}:${JSON.stringify({ id: "1", name: "v1", email: "1@example.com" })}`
            )
            expect(yield* count(Metrics.cacheHits)).toBe(0)
            expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
            expect(yield* count(Metrics.cacheHits)).toBe(1)
          })
        )
      )
    }

    it.effect("a key of another type written by another client", () =>
      withHarness(({ users, redis, redisKey, raw }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          yield* Effect.promise(() => redis.del(redisKey("1")).then(() => redis.hset(redisKey("1"), "field", "value")))
          expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
          expect(yield* raw("1")).toMatch(/^v\d+:/)
        })
      )
    )
  })

  it.effect("writes whose cache fails transiently still leave every key converged", () =>
    withHarness(({ users, collection, cacheFaults, raw }) =>
      Effect.gen(function* () {
        yield* cacheFaults.failNext(5, "set")
        const results = yield* driveClock(
          Effect.forEach(
            [1, 2, 3, 4, 5, 6, 7, 8],
            (i) => Effect.either(users.set(`k${i % 3}`, user(`k${i % 3}`, `w${i}`))),
            {
              concurrency: "unbounded"
            }
          )
        )
        expect(results.filter(Either.isLeft)).toEqual([])
        for (const key of ["k0", "k1", "k2"]) {
          const stored = Option.getOrThrow(yield* collection.get(key))
          const cached = yield* raw(key)
          // Either the store's version with its value, or a tombstone at it: never an older value.
          expect(versionOf(cached)).toBeGreaterThanOrEqual(stored.version)
          expect(Option.getOrThrow(yield* users.get(key)).name).toBe((stored.value as { name: string }).name)
        }
      })
    )
  )
})

describe("with a real Redis that dies", () => {
  const withOwnRedis = <A, E>(
    body: (
      users: WriteThrough.WriteThrough<string, User>,
      server: RedisServer,
      collection: Store.Store.Collection
    ) => Effect.Effect<A, E, Scope.Scope>
  ) =>
    Effect.gen(function* () {
      const server = yield* startRedisServer
      const layer = Layer.merge(
        RedisCache.layer({ url: server.url, commandTimeout: "200 millis", redis: { maxRetriesPerRequest: 1 } }),
        SqlStore.layer()
      ).pipe(Layer.provideMerge(PgLive))
      return yield* Effect.gen(function* () {
        const entity = yield* usersTable
        const table = { name: entity, primaryKey: "id" }
        const users = yield* WriteThrough.make({
          entity,
          key: Schema.String,
          value: User,
          table,
          retry: Schedule.recurs(2)
        })
        const collection = yield* Effect.flatMap(Store.Store, (store) =>
          store.collection({ entity, fields: ["id", "name", "email"], table })
        )
        return yield* body(users, server, collection)
      }).pipe(Effect.scoped, Effect.provide(layer))
    }).pipe(Effect.scoped)

  it.live("reads keep working from the database after kill -9, and writes report the possible staleness", () =>
    withOwnRedis((users, server, collection) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        yield* server.kill
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
        const error = yield* Effect.flip(users.set("1", user("1", "v2")))
        expect(error).toMatchObject({ _tag: "StaleCacheError", key: "1" })
        expect(Option.getOrThrow(yield* collection.get("1")).value).toMatchObject({ name: "v2" })
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v2")
      })
    )
  )

  it.live("after a restart the empty cache refills from the database", () =>
    withOwnRedis((users, server, collection) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        const version = Option.getOrThrow(yield* collection.get("1")).version
        yield* server.kill
        yield* server.start
        const redis = yield* Effect.acquireRelease(
          Effect.sync(() => new Redis(server.url, { commandTimeout: 1000 })),
          (redis) => Effect.promise(() => redis.quit())
        )
        expect(yield* Effect.promise(() => redis.dbsize())).toBe(0)
        // ioredis reconnects with backoff; reads meanwhile are served by the database.
        const filled = yield* users.get("1").pipe(
          Effect.tap((got) => expect(Option.getOrThrow(got).name).toBe("v1")),
          Effect.zipRight(Effect.promise(() => redis.get(`${users.entity}:1`))),
          // A fill refused for its ticket (taken before the restart) leaves a tombstone first.
          Effect.filterOrFail((raw): raw is string => raw !== null && raw.startsWith("v")),
          Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("10 seconds")))
        )
        expect(filled).toMatch(new RegExp(`^v${version}:`))
      })
    )
  )
})

// The races of ../shared/notes/consistency.md, each forced on purpose with pauses injected between
// the store and the cache, against the real Redis and Postgres.
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Option, Schedule, Schema } from "effect"
import { Cache, Metrics, RedisCache, SqlStore, Store, WriteThrough } from "../src/index.js"
import { FaultyCache, FaultyStore } from "../src/testing.js"
import { User, user } from "./support/fixtures.js"
import { withHarness } from "./support/harness.js"
import { startRedisServer } from "./support/redisServer.js"
import { PgLive, redisCacheLayer, unique, usersTable } from "./support/services.js"

const nameOf = (got: Option.Option<User>) => Option.getOrThrow(got).name

describe("races", () => {
  it.effect("(a) a slow miss fill of an old value loses to a newer write", () =>
    withHarness(({ users, collection, cacheFaults, raw }) =>
      Effect.gen(function* () {
        yield* collection.put("1", { id: "1", name: "v1", email: "1@example.com" })
        const fill = yield* cacheFaults.pause({ when: "before" }, "set")
        const reader = yield* Effect.fork(users.get("1"))
        yield* fill.reached // the reader read v1 and is about to fill it
        yield* users.set("1", user("1", "v2")) // the pause held one call: this set passes
        yield* fill.release
        expect(nameOf(yield* Fiber.join(reader))).toBe("v1")
        const v2 = Option.getOrThrow(yield* collection.get("1")).version
        expect(yield* raw("1")).toMatch(new RegExp(`^v${v2}:`))
        expect(nameOf(yield* users.get("1"))).toBe("v2")
      })
    )
  )

  it.effect("(a) the same, with the reader held between its database read and its fill", () =>
    withHarness(({ users, collection, storeFaults, raw }) =>
      Effect.gen(function* () {
        yield* collection.put("1", { id: "1", name: "v1", email: "1@example.com" })
        const storeRead = yield* storeFaults.pause({ when: "after" }, "get")
        const reader = yield* Effect.fork(users.get("1"))
        yield* storeRead.reached // the reader holds v1
        yield* users.set("1", user("1", "v2"))
        yield* storeRead.release
        expect(nameOf(yield* Fiber.join(reader))).toBe("v1")
        const v2 = Option.getOrThrow(yield* collection.get("1")).version
        expect(yield* raw("1")).toMatch(new RegExp(`^v${v2}:`))
        expect(nameOf(yield* users.get("1"))).toBe("v2")
      })
    )
  )

  it.effect("(b) two writers whose cache updates land opposite to their commits", () =>
    withHarness(({ users, collection, cacheFaults, storeFaults, raw }) =>
      Effect.gen(function* () {
        const firstCommit = yield* storeFaults.pause({ when: "after" }, "put")
        const first = yield* Effect.fork(users.set("1", user("1", "first")))
        yield* firstCommit.reached // committed, its cache update not sent yet
        yield* users.set("1", user("1", "second"))
        yield* firstCommit.release
        yield* Fiber.join(first)
        const stored = Option.getOrThrow(yield* collection.get("1"))
        expect(stored.value).toMatchObject({ name: "second" })
        expect(yield* raw("1")).toMatch(new RegExp(`^v${stored.version}:`))
        expect(nameOf(yield* users.get("1"))).toBe("second")
        expect(yield* cacheFaults.calls("invalidate")).toBe(0)
      })
    )
  )

  it.effect("(c) a late fill does not resurrect a deleted row", () =>
    withHarness(({ users, collection, storeFaults, raw }) =>
      Effect.gen(function* () {
        yield* collection.put("1", { id: "1", name: "v1", email: "1@example.com" })
        const read = yield* storeFaults.pause({ when: "after" }, "get")
        const reader = yield* Effect.fork(users.get("1"))
        yield* read.reached // the reader holds the row
        yield* users.delete("1")
        yield* read.release
        expect(nameOf(yield* Fiber.join(reader))).toBe("v1") // it began before the delete
        expect(yield* raw("1")).toMatch(/^t\d+:$/)
        expect(yield* users.get("1")).toEqual(Option.none())
      })
    )
  )

  it.effect("(c) a delete that finds no row still fences off the row another delete removed", () =>
    withHarness(({ users, collection, cacheFaults, raw }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        const firstTombstone = yield* cacheFaults.pause({ when: "before" }, "invalidate")
        const first = yield* Effect.fork(users.delete("1"))
        yield* firstTombstone.reached // the row is gone; its tombstone is not written yet
        yield* firstTombstone.release
        yield* users.delete("1") // finds no row
        yield* Fiber.join(first)
        expect(yield* collection.get("1")).toEqual(Option.none())
        expect(yield* raw("1")).toMatch(/^t\d+:$/)
        expect(yield* users.get("1")).toEqual(Option.none())
      })
    )
  )

  it.effect("(f) a reader that begins after a write never joins a load that began before it", () =>
    withHarness(({ users, collection, storeFaults }) =>
      Effect.gen(function* () {
        yield* collection.put("1", { id: "1", name: "v1", email: "1@example.com" })
        const load = yield* storeFaults.pause({ when: "after" }, "get")
        const early = yield* Effect.fork(users.get("1"))
        yield* load.reached // a load of v1 is in flight
        yield* users.set("1", user("1", "v2")) // acknowledged
        const late = yield* users.get("1")
        expect(nameOf(late)).toBe("v2")
        yield* load.release
        expect(nameOf(yield* Fiber.join(early))).toBe("v1")
        expect(nameOf(yield* users.get("1"))).toBe("v2")
      })
    )
  )

  it.effect("(f) the same when the write came from another process: the late reader reads again", () =>
    withHarness(({ users, collection, storeFaults, raw }) =>
      Effect.gen(function* () {
        yield* collection.put("1", { id: "1", name: "v1", email: "1@example.com" })
        const load = yield* storeFaults.pause({ when: "after" }, "get")
        const early = yield* Effect.fork(users.get("1"))
        yield* load.reached // a load of v1 is in flight
        // Another process commits v2; this process's cache knows nothing of it.
        yield* collection.put("1", { id: "1", name: "v2", email: "1@example.com" })
        const v2 = Option.getOrThrow(yield* collection.get("1")).version
        expect(nameOf(yield* users.get("1"))).toBe("v2")
        expect(yield* storeFaults.calls("get")).toBe(2)
        yield* load.release
        expect(nameOf(yield* Fiber.join(early))).toBe("v1")
        // The early load's fill of v1 lost to the late reader's fill of v2.
        expect(yield* raw("1")).toMatch(new RegExp(`^v${v2}:`))
      })
    )
  )

  it.effect("a miss whose cache answer comes back after the load it could join ended still takes that load's row", () =>
    withHarness(({ users, collection, cacheFaults, storeFaults }) =>
      Effect.gen(function* () {
        yield* collection.put("cold", { id: "cold", name: "v1", email: "cold@example.com" })
        // The first reader's answer from the cache (a miss) is held; the second reader, begun after
        // it, misses, reads the store and fills before the first hears from the cache.
        const answer = yield* cacheFaults.pause({ when: "after" }, "get")
        const first = yield* Effect.fork(users.get("cold"))
        yield* answer.reached
        expect(nameOf(yield* users.get("cold"))).toBe("v1")
        expect(yield* storeFaults.calls("get")).toBe(1)
        // The load was sent after the first reader began: its row is as new as the first reader
        // needs, and the load filled the cache with it under the ticket it took before reading.
        yield* answer.release
        expect(nameOf(yield* Fiber.join(first))).toBe("v1")
        expect(yield* storeFaults.calls("get")).toBe(1)
        expect(yield* cacheFaults.calls("set")).toBe(1)
      })
    )
  )

  it.effect("concurrent misses of one key share one store read, and its one fill", () =>
    withHarness(({ users, collection, cacheFaults, storeFaults }) =>
      Effect.gen(function* () {
        yield* collection.put("cold", { id: "cold", name: "v1", email: "cold@example.com" })
        const results = yield* Effect.forEach(
          Array.from({ length: 200 }, () => users.get("cold")),
          (get) => get,
          { concurrency: "unbounded" }
        )
        expect(results.map(nameOf)).toEqual(Array.from({ length: 200 }, () => "v1"))
        expect(yield* storeFaults.calls("get")).toBe(1)
        // A reader that joined a load fills nothing: a ticket of its own, taken after the read it
        // joined, would not keep that read's value out of a cache that lost its memory meanwhile.
        expect(yield* cacheFaults.calls("set")).toBe(1)
      })
    )
  )

  it.effect("an interrupted loader does not strand the readers that joined it", () =>
    withHarness(({ users, collection, storeFaults }) =>
      Effect.gen(function* () {
        yield* collection.put("1", { id: "1", name: "v1", email: "1@example.com" })
        const load = yield* storeFaults.pause({ when: "after" }, "get")
        const loader = yield* Effect.fork(users.get("1"))
        yield* load.reached
        const joiner = yield* Effect.fork(users.get("1"))
        yield* Fiber.interrupt(loader)
        yield* load.release
        expect(nameOf(yield* Fiber.join(joiner))).toBe("v1")
      })
    )
  )
})

describe("(h) the cache loses its memory", () => {
  it.live("a fill in flight across a Redis restart does not land an old value in the empty cache", () =>
    Effect.gen(function* () {
      const server = yield* startRedisServer
      const layer = Layer.mergeAll(
        FaultyCache.layer.pipe(Layer.provide(RedisCache.layer({ url: server.url, commandTimeout: "500 millis" }))),
        SqlStore.layer()
      ).pipe(Layer.provideMerge(PgLive))
      yield* Effect.gen(function* () {
        const entity = yield* usersTable
        const table = { name: entity, primaryKey: "id" }
        const users = yield* WriteThrough.make({ entity, key: Schema.String, value: User, table })
        const collection = yield* Effect.flatMap(Store.Store, (store) =>
          store.collection({ entity, fields: ["id", "name", "email"], table })
        )
        const faults = yield* FaultyCache.FaultyCache
        const cache = yield* Cache.Cache
        const v1 = yield* collection.put("1", { id: "1", name: "v1", email: "1@example.com" })
        const fill = yield* faults.pause({ when: "before" }, "set")
        const reader = yield* Effect.fork(users.get("1"))
        yield* fill.reached // read v1 from the database, about to fill
        yield* users.set("1", user("1", "v2")) // acknowledged: the cache holds v2
        yield* server.kill
        yield* server.start
        yield* cache.get("probe").pipe(Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("10 seconds"))))
        // Without the epoch, v1 would now land in the empty cache and be served until its TTL.
        yield* fill.release
        expect(nameOf(yield* Fiber.join(reader))).toBe("v1")
        // No value: the refused fill left a tombstone one below what it read instead, so that no
        // write older than what the reader returned lands after it.
        expect(yield* cache.get(`${entity}:1`)).toEqual(Option.some(Cache.Entry.Tombstone({ version: v1 - 1 })))
        expect(nameOf(yield* users.get("1"))).toBe("v2")
      }).pipe(Effect.scoped, Effect.provide(layer))
    }).pipe(Effect.scoped)
  )
})

/** `cache`, recording the name of each read, lease and set call it is given (`peek` passes through unrecorded). */
const recordingCalls = (cache: Cache.Cache.Service) => {
  const calls: Array<string> = []
  const recorded =
    (name: string) =>
    <A, E>(effect: Effect.Effect<A, E>) =>
      Effect.zipRight(
        Effect.sync(() => calls.push(name)),
        effect
      )
  const counted = Cache.Cache.of({
    ...cache,
    get: (key) => recorded("get")(cache.get(key)),
    lease: (key, ttl) => recorded("lease")(cache.lease(key, ttl)),
    getOrLease: (key, ttl) => recorded("getOrLease")(cache.getOrLease(key, ttl)),
    set: (key, entry, options) => recorded("set")(cache.set(key, entry, options))
  })
  return { calls, counted }
}

describe("stampede protection across processes", () => {
  it.live("a value the cache holds in process memory (peek) is a hit without a cache call", () =>
    Effect.gen(function* () {
      const entity = yield* usersTable
      const table = { name: entity, primaryKey: "id" }
      const { calls, counted } = recordingCalls(
        Context.get(yield* Layer.build(redisCacheLayer(unique("peek"), { near: {} })), Cache.Cache)
      )
      const users = yield* WriteThrough.make({ entity, key: Schema.String, value: User, table }).pipe(
        Effect.provideService(Cache.Cache, counted),
        Effect.provide(SqlStore.layer())
      )
      yield* users.set("1", new User({ id: "1", name: "v1", email: "1@example.com" }))
      for (let i = 0; i < 3; i++)
        expect(Option.map(yield* users.get("1"), (user) => user.name)).toEqual(Option.some("v1"))
      // The write's publication, and no read.
      expect(calls).toEqual(["set"])
      expect(yield* Metrics.total(Metrics.cacheHits, { entity })).toBe(3)
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live("a miss takes its lease in the call that found the key cold: one cache call before the store is read", () =>
    Effect.gen(function* () {
      const entity = yield* usersTable
      const table = { name: entity, primaryKey: "id" }
      const { calls, counted } = recordingCalls(
        Context.get(yield* Layer.build(redisCacheLayer(unique("lookup"))), Cache.Cache)
      )
      const users = yield* WriteThrough.make({ entity, key: Schema.String, value: User, table }).pipe(
        Effect.provideService(Cache.Cache, counted),
        Effect.provide(SqlStore.layer())
      )
      const direct = yield* (yield* SqlStore.make()).collection({ entity, fields: ["id", "name", "email"], table })
      yield* direct.put("cold", { id: "cold", name: "v1", email: "cold@example.com" })
      expect(Option.map(yield* users.get("cold"), (user) => user.name)).toEqual(Option.some("v1"))
      expect(calls).toEqual(["getOrLease", "set"])
      calls.length = 0
      expect(Option.map(yield* users.get("cold"), (user) => user.name)).toEqual(Option.some("v1"))
      expect(calls).toEqual(["getOrLease"])
      // With leases off, a plain get.
      calls.length = 0
      const unleased = yield* WriteThrough.make({ entity, key: Schema.String, value: User, table, lease: false }).pipe(
        Effect.provideService(Cache.Cache, Cache.Cache.of({ ...counted })),
        Effect.provide(SqlStore.layer())
      )
      expect(Option.map(yield* unleased.get("cold"), (user) => user.name)).toEqual(Option.some("v1"))
      expect(calls).toEqual(["get"])
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live("1,000 concurrent reads of a cold key from three instances cause one store read", () =>
    Effect.gen(function* () {
      const prefix = unique("stampede")
      const entity = yield* usersTable
      const table = { name: entity, primaryKey: "id" }
      const storeLayer = FaultyStore.layer.pipe(Layer.provide(SqlStore.layer()))
      const store = yield* Layer.build(storeLayer)
      const faults = Context.get(store, FaultyStore.FaultyStore)
      const collection = yield* Context.get(store, Store.Store).collection({
        entity,
        fields: ["id", "name", "email"],
        table
      })
      yield* collection.put("cold", { id: "cold", name: "v1", email: "cold@example.com" })
      // Three "processes": each its own Redis connection (and lease holder) and its own single flight.
      const instances = yield* Effect.forEach([1, 2, 3], () =>
        Effect.gen(function* () {
          const cache = Context.get(yield* Layer.build(redisCacheLayer(prefix)), Cache.Cache)
          return yield* WriteThrough.make({ entity, key: Schema.String, value: User, table }).pipe(
            Effect.provideService(Cache.Cache, cache),
            Effect.provide(store)
          )
        })
      )
      const reads = yield* Effect.forEach(
        Array.from({ length: 1_000 }, (_, i) => instances[i % 3]!),
        (users) => users.get("cold"),
        { concurrency: "unbounded" }
      )
      expect(new Set(reads.map(nameOf))).toEqual(new Set(["v1"]))
      expect(yield* faults.calls("get")).toBe(1)
      // One instance held the lease; the other two waited for its fill.
      const waits = yield* Metrics.total(Metrics.leaseWaits, { entity })
      expect(waits).toBe(2)
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )
})

// The cache's circuit breaker on its own, under the TestClock, over a cache whose faults the test
// arms (FaultyCache over MemoryCache); then the write-through with the breaker open: reads from the
// store, writes committed to the store and owed a tombstone, the ledger's bound. The breaker over a
// real Redis that stops answering, is killed and comes back is in RedisCache.outage.test.ts.
import { describe, expect, it } from "@effect/vitest"
import {
  Config,
  ConfigProvider,
  Context,
  Duration,
  Effect,
  Fiber,
  Layer,
  Metric,
  Option,
  Schema,
  TestClock
} from "effect"
import { Cache, CircuitBreaker, MemoryCache, MemoryStore, Metrics, WriteThrough } from "../src/index.js"
import * as CacheBreaker from "../src/internal/cacheBreaker.js"
import { FaultyCache } from "../src/testing.js"
import { User, user, value } from "./support/fixtures.js"

const ttl = { ttl: Duration.minutes(1) }

/**
 * A faulty memory cache, its controls, and the same cache behind a breaker (2 failures, 5 seconds)
 * whose metrics carry a url of their own.
 */
const breakerOverFaults = Effect.gen(function* () {
  const context = yield* Layer.build(FaultyCache.layer.pipe(Layer.provide(MemoryCache.layer())))
  const faults = Context.get(context, FaultyCache.FaultyCache)
  const url = `memory://${crypto.randomUUID()}`
  const cache = CacheBreaker.wrap(Context.get(context, Cache.Cache), { failures: 2, interval: "5 seconds" }, url)
  const transitions = (state: "open" | "closed") =>
    Metrics.total(Metrics.breakerTransitions, { tier: "cache", target: url, state })
  const open = Effect.map(
    Metric.value(Metrics.breakerOpen.pipe(Metric.tagged("tier", "cache"), Metric.tagged("target", url))),
    (gauge) => gauge.value
  )
  return { cache, faults, transitions, open }
})

/** The users entity over `cache`; its repair waits for the test, since it would be the probe otherwise. */
const usersOver = (
  cache: Cache.Cache.Service,
  options: Pick<WriteThrough.Options<string, User, unknown>, "owedTombstones" | "repairInterval"> = {}
) =>
  WriteThrough.make({ entity: "users", key: Schema.String, value: User, repairInterval: "1 hour", ...options }).pipe(
    Effect.provideService(Cache.Cache, cache)
  )

/**
 * Writes `keys` at "v1", breaks every cache call, opens the breaker with two reads, then writes the
 * keys at "v2" while it is open: each commits and fails with StaleCacheError.
 */
const writtenWhileOpen = (
  users: WriteThrough.WriteThrough<string, User>,
  faults: FaultyCache.Controls,
  keys: ReadonlyArray<string>
) =>
  Effect.gen(function* () {
    for (const key of keys) yield* users.set(key, user(key, "v1"))
    yield* faults.failAlways("get", "set", "invalidate")
    for (let i = 0; i < 2; i++) yield* users.get(keys[0]!)
    for (const key of keys) {
      expect(yield* Effect.flip(users.set(key, user(key, "v2")))).toMatchObject({ _tag: "StaleCacheError" })
    }
  })

describe("cache circuit breaker", () => {
  it.scoped("opens after a run of failures, refuses reads until the interval passed, and closes on a good probe", () =>
    Effect.gen(function* () {
      const { cache, faults, open, transitions } = yield* breakerOverFaults
      yield* cache.set("k", value(1, "one"), ttl)
      yield* faults.failAlways("get")
      for (let i = 0; i < 2; i++) expect(yield* Effect.flip(cache.get("k"))).toMatchObject({ reason: "Unavailable" })
      expect([yield* transitions("open"), yield* open]).toEqual([1, 1])
      expect(yield* faults.calls("get")).toBe(2)
      // Open: refused without a call.
      const refused = yield* Effect.flip(cache.get("k"))
      expect(refused.cause).toMatchObject({ _tag: "CircuitOpen" })
      expect(yield* Effect.flip(cache.lease("k", Duration.seconds(1)))).toMatchObject({ reason: "Unavailable" })
      expect(yield* faults.calls("get")).toBe(2)
      expect(yield* faults.calls("lease")).toBe(0)
      // A failed probe keeps it open for another interval.
      yield* TestClock.adjust("5 seconds")
      yield* Effect.flip(cache.get("k"))
      expect(yield* faults.calls("get")).toBe(3)
      yield* Effect.flip(cache.get("k"))
      expect(yield* faults.calls("get")).toBe(3)
      // A good probe closes it: reads reach the cache again.
      yield* faults.heal
      yield* TestClock.adjust("5 seconds")
      expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
      expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
      expect(yield* faults.calls("get")).toBe(5)
      // One opening (a failed probe keeps it open, not a new opening), one closing.
      expect([yield* transitions("open"), yield* transitions("closed"), yield* open]).toEqual([1, 1, 0])
    })
  )

  it.scoped("while open, writes are refused too; after the interval any call probes, and its success closes it", () =>
    Effect.gen(function* () {
      const { cache, faults } = yield* breakerOverFaults
      yield* faults.failAlways("get", "set")
      for (let i = 0; i < 2; i++) yield* Effect.flip(cache.get("k"))
      const writes: ReadonlyArray<Effect.Effect<unknown, Cache.CacheError>> = [
        cache.set("k", value(1, "one"), ttl),
        cache.invalidate("k", 1, Duration.seconds(1)),
        cache.setMany([{ key: "k", entry: value(1, "one"), options: ttl }])
      ]
      for (const write of writes) {
        expect((yield* Effect.flip(write)).cause).toMatchObject({ _tag: "CircuitOpen", tier: "cache" })
      }
      expect(yield* faults.calls("set")).toBe(0)
      expect(yield* faults.calls("invalidate")).toBe(0)
      yield* faults.heal
      yield* TestClock.adjust("5 seconds")
      expect(yield* cache.set("k", value(2, "two"), ttl)).toBe("written")
      expect(yield* cache.get("k")).toEqual(Option.some(value(2, "two")))
    })
  )

  it.scoped(
    "a probe its caller interrupted tells nothing: the breaker does not stay probing, the next call probes",
    () =>
      Effect.gen(function* () {
        const { cache, faults } = yield* breakerOverFaults
        yield* cache.set("k", value(1, "one"), ttl)
        yield* faults.failAlways("get")
        for (let i = 0; i < 2; i++) yield* Effect.flip(cache.get("k"))
        yield* faults.hang("get")
        yield* TestClock.adjust("5 seconds")
        const probe = yield* Effect.fork(cache.get("k"))
        yield* Effect.yieldNow()
        // While the probe is in flight, other calls are refused.
        expect((yield* Effect.flip(cache.get("k"))).cause).toMatchObject({ _tag: "CircuitOpen" })
        yield* Fiber.interrupt(probe)
        yield* faults.heal
        expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
        expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
      })
  )

  it.scoped("a probe that never answers is given up on after an interval: the next call probes", () =>
    Effect.gen(function* () {
      const { cache, faults } = yield* breakerOverFaults
      yield* cache.set("k", value(1, "one"), ttl)
      yield* faults.failAlways("get")
      for (let i = 0; i < 2; i++) yield* Effect.flip(cache.get("k"))
      yield* faults.hang("get")
      yield* TestClock.adjust("5 seconds")
      yield* Effect.fork(cache.get("k"))
      yield* Effect.yieldNow()
      yield* faults.heal
      expect((yield* Effect.flip(cache.get("k"))).cause).toMatchObject({ _tag: "CircuitOpen" })
      yield* TestClock.adjust("5 seconds")
      expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
      expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
    })
  )

  it.effect("reads its figures from configuration, and names a bad one", () =>
    Effect.gen(function* () {
      const read = (entries: ReadonlyArray<readonly [string, string]>) =>
        Effect.withConfigProvider(
          Config.nested(CircuitBreaker.config, "CACHE_BREAKER"),
          ConfigProvider.fromMap(new Map(entries))
        )
      const options = yield* read([
        ["CACHE_BREAKER.FAILURES", "5"],
        ["CACHE_BREAKER.INTERVAL", "2 seconds"]
      ])
      expect(options.failures).toBe(5)
      expect(Duration.toMillis(options.interval!)).toBe(2_000)
      expect(yield* read([])).toEqual({ failures: undefined, interval: undefined })
      const error = yield* Effect.flip(read([["CACHE_BREAKER.FAILURES", "0"]]))
      expect(String(error)).toContain("FAILURES")
      expect(String(error)).toContain("1 or more")
    })
  )

  it("refuses a bad figure with a message that names it", () => {
    expect(() => CacheBreaker.wrap(Cache.Cache.of({} as Cache.Cache.Service), { failures: 0 }, "x")).toThrow(
      /failures must be a whole number, 1 or more; got 0/
    )
  })

  it.scoped("a success between failures starts the count again", () =>
    Effect.gen(function* () {
      const { cache, faults } = yield* breakerOverFaults
      yield* cache.set("k", value(1, "one"), ttl)
      for (let round = 0; round < 3; round++) {
        yield* faults.failNext(1, "get")
        yield* Effect.flip(cache.get("k"))
        expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
      }
    })
  )

  it.scoped("with the breaker open, the write-through reads the store at once: no cache call, no lease, no fill", () =>
    Effect.gen(function* () {
      const { cache, faults } = yield* breakerOverFaults
      const users = yield* WriteThrough.make({ entity: "users", key: Schema.String, value: User }).pipe(
        Effect.provideService(Cache.Cache, cache)
      )
      yield* users.set("1", user("1", "v1"))
      yield* faults.failAlways("get")
      // Three failed reads open it. (A read the cache failed leaves its key owed: this process reads
      // it from the store until a tombstone landed, so these read keys of their own.)
      for (const key of ["a", "b", "c"]) expect(yield* users.get(key)).toEqual(Option.none())
      expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
      const calls = {
        get: yield* faults.calls("get"),
        lease: yield* faults.calls("lease"),
        set: yield* faults.calls("set")
      }
      expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
      expect(yield* users.getMany(["1", "2"])).toEqual([Option.some(user("1", "v1")), Option.none()])
      expect({
        get: yield* faults.calls("get"),
        lease: yield* faults.calls("lease"),
        set: yield* faults.calls("set")
      }).toEqual(calls)
    }).pipe(Effect.provide(MemoryStore.layer))
  )

  it.scoped(
    "a write while the breaker is open commits, fails at once with StaleCacheError, and this process reads the key from the store until its tombstone landed",
    () =>
      Effect.gen(function* () {
        const { cache, faults } = yield* breakerOverFaults
        const users = yield* usersOver(cache)
        yield* users.set("1", user("1", "v1"))
        yield* faults.failAlways("get", "set", "invalidate")
        for (let i = 0; i < 2; i++) yield* users.get("1")
        const calls = { set: yield* faults.calls("set"), invalidate: yield* faults.calls("invalidate") }
        const stale = yield* Effect.flip(users.set("1", user("1", "v2")))
        expect(stale).toMatchObject({ _tag: "StaleCacheError", key: "1", operation: "set" })
        expect((stale as { cause: ReadonlyArray<{ cause: unknown }> }).cause[0]!.cause).toMatchObject({
          _tag: "CircuitOpen"
        })
        // No cache call: no update, no retry, no invalidation.
        expect({ set: yield* faults.calls("set"), invalidate: yield* faults.calls("invalidate") }).toEqual(calls)
        // The cache comes back still holding v1, and the breaker closes on a probe.
        yield* faults.heal
        yield* TestClock.adjust("5 seconds")
        yield* cache.get("2")
        expect(Option.getOrThrow(yield* cache.get("users:1"))).toMatchObject({ _tag: "Value", version: 1 })
        const calls2 = yield* faults.calls("get")
        // Owed a tombstone: read from the store, not from the cache that holds v1.
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v2")
        expect(yield* faults.calls("get")).toBe(calls2)
        // The repair lands the tombstone; then reads consult the cache again.
        yield* TestClock.adjust("1 hour")
        expect(Option.getOrThrow(yield* cache.get("users:1"))).toMatchObject({ _tag: "Tombstone", version: 2 })
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v2")
        expect(yield* faults.calls("get")).toBe(calls2 + 2)
      }).pipe(Effect.provide(MemoryStore.layer))
  )

  it.scoped(
    "the background repair probes the cache once it is back, closes the breaker and lands every owed tombstone",
    () =>
      Effect.gen(function* () {
        const { cache, faults, transitions } = yield* breakerOverFaults
        const users = yield* usersOver(cache, { repairInterval: "1 second" })
        const keys = ["1", "2", "3", "4"]
        yield* writtenWhileOpen(users, faults, keys)
        yield* faults.heal
        // No call of the application's: the repair's own first call is the probe.
        yield* TestClock.adjust("7 seconds")
        expect(yield* transitions("closed")).toBe(1)
        for (const key of keys) {
          expect(Option.getOrThrow(yield* cache.get(`users:${key}`))).toMatchObject({ _tag: "Tombstone" })
        }
      }).pipe(Effect.provide(MemoryStore.layer))
  )

  it.scoped(
    "past the ledger's bound the whole entity is owed: every read goes to the store until an audit of its namespace repaired it",
    () =>
      Effect.gen(function* () {
        const { cache, faults } = yield* breakerOverFaults
        const users = yield* usersOver(cache, { owedTombstones: { maxKeys: 2 } })
        const keys = ["1", "2", "3", "4"]
        // Four writes while open: two keys fit the ledger, the rest overflow it.
        yield* writtenWhileOpen(users, faults, keys)
        yield* faults.heal
        yield* TestClock.adjust("5 seconds")
        yield* cache.get("probe")
        // Every key reads v2, from the store: the owed ones and the overflowed ones alike.
        const cacheReadsBefore = yield* faults.calls("get")
        const reads = yield* Effect.forEach(keys, (key) => users.get(key))
        expect(reads.map((read) => Option.getOrThrow(read).name)).toEqual(["v2", "v2", "v2", "v2"])
        expect(yield* faults.calls("get")).toBe(cacheReadsBefore)
        // Each read left a tombstone below v2 over the old v1 (so that no reader elsewhere gets v1 after
        // it); the repair pass tombstones the owed keys, the audit the rest; reads use the cache again.
        for (const key of keys) {
          expect(Option.getOrThrow(yield* cache.get(`users:${key}`))).toMatchObject({ _tag: "Tombstone" })
        }
        yield* TestClock.adjust("1 hour")
        for (const key of keys) {
          const entry = yield* cache.get(`users:${key}`)
          expect(Option.isNone(entry) || entry.value._tag === "Tombstone").toBe(true)
        }
        for (const key of keys) yield* users.get(key)
        const cacheReads = yield* faults.calls("get")
        const again = yield* Effect.forEach(keys, (key) => users.get(key))
        expect(again.map((read) => Option.getOrThrow(read).name)).toEqual(["v2", "v2", "v2", "v2"])
        expect((yield* faults.calls("get")) - cacheReads).toBe(4)
      }).pipe(Effect.provide(MemoryStore.layer))
  )
})

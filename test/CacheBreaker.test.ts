// The cache's circuit breaker on its own, under the TestClock, over a cache whose faults the test
// arms (FaultyCache over MemoryCache); then the write-through's reads with the breaker open. The
// breaker over a real Redis that stops answering is in RedisCache.test.ts.
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Metric, Option, Schema, TestClock } from "effect"
import { Cache, MemoryCache, MemoryStore, Metrics, WriteThrough } from "../src/index.js"
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
  const transitions = (state: "open" | "closed") => Metrics.total(Metrics.cacheBreakerTransitions, { url, state })
  const open = Effect.map(Metric.value(Metric.tagged(Metrics.cacheBreakerOpen, "url", url)), (gauge) => gauge.value)
  return { cache, faults, transitions, open }
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

  it.scoped("writes always reach the cache, and one that succeeds closes the breaker", () =>
    Effect.gen(function* () {
      const { cache, faults } = yield* breakerOverFaults
      yield* faults.failAlways("get", "set")
      for (let i = 0; i < 2; i++) yield* Effect.flip(cache.get("k"))
      expect((yield* Effect.flip(cache.get("k"))).cause).toMatchObject({ _tag: "CircuitOpen" })
      yield* Effect.flip(cache.set("k", value(1, "one"), ttl))
      expect(yield* faults.calls("set")).toBe(1)
      yield* faults.heal
      expect(yield* cache.set("k", value(2, "two"), ttl)).toBe("written")
      expect(yield* cache.get("k")).toEqual(Option.some(value(2, "two")))
    })
  )

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
      for (let i = 0; i < 2; i++) expect(Option.getOrThrow(yield* users.get("1")).name).toBe("v1")
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
      // Writes still go through the cache while it is open.
      yield* users.set("1", user("1", "v2"))
      expect(yield* faults.calls("set")).toBe(calls.set + 1)
    }).pipe(Effect.provide(MemoryStore.layer))
  )
})

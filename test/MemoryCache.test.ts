import { describe, expect, it } from "@effect/vitest"
import { Config, ConfigError, ConfigProvider, Context, Duration, Effect, Layer, Option, TestClock } from "effect"
import { Cache, MemoryCache } from "../src/index.js"
import { FaultyCache } from "../src/testing.js"
import { cacheContract } from "./contract/CacheContract.js"
import { tombstone, value } from "./support/fixtures.js"

cacheContract("MemoryCache", () => MemoryCache.layer())

// The fault injector with nothing armed is the cache it wraps.
cacheContract("FaultyCache over MemoryCache, nothing armed", () =>
  FaultyCache.layer.pipe(Layer.provide(MemoryCache.layer()))
)

describe("MemoryCache", () => {
  describe("TTL", () => {
    it.effect("a value is present just before its TTL and gone at it", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make()
        expect(yield* cache.set("k", value(1, "one"), { ttl: Duration.seconds(10) })).toBe("written")
        yield* TestClock.adjust(Duration.millis(9_999))
        expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
        yield* TestClock.adjust(Duration.millis(1))
        expect(yield* cache.get("k")).toEqual(Option.none())
      })
    )

    it.effect("a get does not extend the TTL", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make()
        yield* cache.set("k", value(1, "one"), { ttl: Duration.seconds(10) })
        yield* TestClock.adjust(Duration.seconds(5))
        expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
        yield* TestClock.adjust(Duration.seconds(5))
        expect(yield* cache.get("k")).toEqual(Option.none())
      })
    )

    it.effect("a newer write restarts the TTL with its own", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make()
        yield* cache.set("k", value(1, "one"), { ttl: Duration.seconds(10) })
        yield* TestClock.adjust(Duration.seconds(8))
        expect(yield* cache.set("k", value(2, "two"), { ttl: Duration.seconds(10) })).toBe("written")
        yield* TestClock.adjust(Duration.seconds(9))
        expect(yield* cache.get("k")).toEqual(Option.some(value(2, "two")))
        yield* TestClock.adjust(Duration.seconds(1))
        expect(yield* cache.get("k")).toEqual(Option.none())
      })
    )

    it.effect("a rejected write does not refresh the held entry's TTL", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make()
        yield* cache.set("k", value(5, "five"), { ttl: Duration.seconds(10) })
        yield* TestClock.adjust(Duration.seconds(8))
        expect(yield* cache.set("k", value(4, "four"), { ttl: Duration.hours(1) })).toBe("rejected")
        yield* TestClock.adjust(Duration.seconds(2))
        expect(yield* cache.get("k")).toEqual(Option.none())
      })
    )

    it.effect("an expired value does not guard: an older version can be written after expiry", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make()
        yield* cache.set("k", value(10, "ten"), { ttl: Duration.seconds(10) })
        expect(yield* cache.set("k", value(3, "three"), { ttl: Duration.seconds(10) })).toBe("rejected")
        yield* TestClock.adjust(Duration.seconds(10))
        // No get in between: the guard itself must see the entry as expired.
        expect(yield* cache.set("k", value(3, "three"), { ttl: Duration.seconds(10) })).toBe("written")
        expect(yield* cache.get("k")).toEqual(Option.some(value(3, "three")))
      })
    )

    it.effect("an expired tombstone does not guard: an older value or tombstone can be written after expiry", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make()
        yield* cache.invalidate("a", 10, Duration.seconds(10))
        yield* cache.invalidate("b", 10, Duration.seconds(10))
        expect(yield* cache.set("a", value(3, "three"), { ttl: Duration.seconds(10) })).toBe("rejected")
        expect(yield* cache.invalidate("b", 3, Duration.seconds(10))).toBe("rejected")
        yield* TestClock.adjust(Duration.seconds(10))
        expect(yield* cache.set("a", value(3, "three"), { ttl: Duration.seconds(10) })).toBe("written")
        expect(yield* cache.invalidate("b", 3, Duration.seconds(10))).toBe("written")
        expect(yield* cache.get("a")).toEqual(Option.some(value(3, "three")))
        expect(yield* cache.get("b")).toEqual(Option.some(tombstone(3)))
      })
    )

    it.effect("an expired entry does not count as the entry a replacing set names", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make()
        yield* cache.set("k", value(10, "ten"), { ttl: Duration.seconds(10) })
        yield* TestClock.adjust(Duration.seconds(10))
        // Absent after expiry, so the set is written whatever it names.
        expect(
          yield* cache.set("k", value(3, "three"), { ttl: Duration.seconds(10), replacing: value(10, "ten") })
        ).toBe("written")
        expect(yield* cache.get("k")).toEqual(Option.some(value(3, "three")))
      })
    )

    it.effect("a tombstone's TTL is its own: it outlives a shorter-lived value it replaced", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make()
        yield* cache.set("k", value(1, "one"), { ttl: Duration.seconds(10) })
        expect(yield* cache.invalidate("k", 1, Duration.minutes(1))).toBe("written")
        yield* TestClock.adjust(Duration.seconds(30))
        expect(yield* cache.get("k")).toEqual(Option.some(tombstone(1)))
        expect(yield* cache.set("k", value(1, "late fill"), { ttl: Duration.seconds(10) })).toBe("rejected")
        yield* TestClock.adjust(Duration.seconds(30))
        expect(yield* cache.get("k")).toEqual(Option.none())
      })
    )

    it.effect(
      "a tombstone's TTL is its own: a shorter-lived tombstone expires before the value's TTL and the value does not return",
      () =>
        Effect.gen(function* () {
          const cache = yield* MemoryCache.make()
          yield* cache.set("k", value(1, "one"), { ttl: Duration.hours(1) })
          expect(yield* cache.invalidate("k", 2, Duration.seconds(5))).toBe("written")
          yield* TestClock.adjust(Duration.millis(4_999))
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(2)))
          yield* TestClock.adjust(Duration.millis(1))
          expect(yield* cache.get("k")).toEqual(Option.none())
        })
    )
  })

  describe("maxEntries", () => {
    it.effect("holds at most maxEntries, evicting the least recently written", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make({ maxEntries: 3 })
        for (const [i, key] of ["a", "b", "c", "d"].entries()) {
          expect(yield* cache.set(key, value(i + 1, key), { ttl: Duration.hours(1) })).toBe("written")
        }
        expect(yield* cache.get("a")).toEqual(Option.none())
        expect(yield* cache.get("b")).toEqual(Option.some(value(2, "b")))
        expect(yield* cache.get("c")).toEqual(Option.some(value(3, "c")))
        expect(yield* cache.get("d")).toEqual(Option.some(value(4, "d")))
      })
    )

    it.effect("a get refreshes recency, so the least recently used goes first", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make({ maxEntries: 3 })
        yield* cache.set("a", value(1, "a"), { ttl: Duration.hours(1) })
        yield* cache.set("b", value(1, "b"), { ttl: Duration.hours(1) })
        yield* cache.set("c", value(1, "c"), { ttl: Duration.hours(1) })
        // "a" is the oldest write but is read now, so "b" becomes the least recently used.
        expect(yield* cache.get("a")).toEqual(Option.some(value(1, "a")))
        yield* cache.set("d", value(1, "d"), { ttl: Duration.hours(1) })
        expect(yield* cache.get("b")).toEqual(Option.none())
        expect(yield* cache.get("a")).toEqual(Option.some(value(1, "a")))
        expect(yield* cache.get("c")).toEqual(Option.some(value(1, "c")))
        expect(yield* cache.get("d")).toEqual(Option.some(value(1, "d")))
      })
    )

    it.effect("overwriting a held key refreshes its recency and does not evict another key", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make({ maxEntries: 2 })
        yield* cache.set("a", value(1, "a1"), { ttl: Duration.hours(1) })
        yield* cache.set("b", value(1, "b1"), { ttl: Duration.hours(1) })
        expect(yield* cache.set("a", value(2, "a2"), { ttl: Duration.hours(1) })).toBe("written")
        expect(yield* cache.get("b")).toEqual(Option.some(value(1, "b1")))
        expect(yield* cache.get("a")).toEqual(Option.some(value(2, "a2")))
        // Now "b" was read before "a": a third key evicts "b".
        yield* cache.set("c", value(1, "c1"), { ttl: Duration.hours(1) })
        expect(yield* cache.get("b")).toEqual(Option.none())
        expect(yield* cache.get("a")).toEqual(Option.some(value(2, "a2")))
        expect(yield* cache.get("c")).toEqual(Option.some(value(1, "c1")))
      })
    )

    it.effect("tombstones count towards maxEntries and can be evicted", () =>
      Effect.gen(function* () {
        const cache = yield* MemoryCache.make({ maxEntries: 2 })
        yield* cache.invalidate("a", 5, Duration.hours(1))
        yield* cache.set("b", value(1, "b"), { ttl: Duration.hours(1) })
        yield* cache.set("c", value(1, "c"), { ttl: Duration.hours(1) })
        expect(yield* cache.get("a")).toEqual(Option.none())
        expect(yield* cache.get("b")).toEqual(Option.some(value(1, "b")))
        expect(yield* cache.get("c")).toEqual(Option.some(value(1, "c")))
      })
    )

    it.effect("rejects a maxEntries that is not a positive integer", () =>
      Effect.gen(function* () {
        for (const maxEntries of [0, -1, 1.5, Number.NaN]) {
          const defect = yield* MemoryCache.make({ maxEntries }).pipe(
            Effect.flip,
            Effect.catchAllDefect(Effect.succeed)
          )
          expect(defect).toBeInstanceOf(RangeError)
          expect((defect as RangeError).message).toBe(
            `MemoryCache: maxEntries must be a positive integer, got ${maxEntries}`
          )
        }
      })
    )
  })
})

describe("MemoryCache.layerConfig", () => {
  it.effect("reads its bound from Config; a bound below 1 is a ConfigError", () =>
    Effect.gen(function* () {
      const config = { maxEntries: Config.integer("CACHE_MAX_ENTRIES") }
      const cache = yield* Layer.build(MemoryCache.layerConfig(config)).pipe(
        Effect.map(Context.get(Cache.Cache)),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["CACHE_MAX_ENTRIES", "2"]])))
      )
      for (const key of ["a", "b", "c"])
        yield* cache.set(key, Cache.Entry.Value({ version: 1, payload: key }), { ttl: Duration.minutes(1) })
      expect(yield* cache.get("a")).toEqual(Option.none())
      expect(Option.isSome(yield* cache.get("c"))).toBe(true)
      for (const bad of ["0", "-3", "many"]) {
        const error = yield* Layer.build(MemoryCache.layerConfig(config)).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["CACHE_MAX_ENTRIES", bad]]))),
          Effect.flip
        )
        expect(ConfigError.isConfigError(error), bad).toBe(true)
      }
    }).pipe(Effect.scoped)
  )
})

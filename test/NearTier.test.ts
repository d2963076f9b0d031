// The in-process tier of RedisCache: its bounds and its floor on its own, then RedisCache with it
// on, against the real Redis: the Cache contract, read-your-writes, announcements between processes,
// and a dropped subscription.
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option, Schedule } from "effect"
import { Cache, MemoryCache, RedisCache } from "../src/index.js"
import * as NearCache from "../src/internal/redis/nearCache.js"
import * as NearTier from "../src/internal/redis/nearTier.js"
import { cacheContract } from "./contract/CacheContract.js"
import { rawRedis, redisCacheLayer, unique } from "./support/services.js"
import { value } from "./support/fixtures.js"

const ttl = Duration.minutes(1)

describe("near tier", () => {
  it("never holds more entries or more bytes than configured, least recently used out first", () => {
    const tier = NearTier.make({ maxEntries: 100, maxBytes: 1_000_000, ttlMillis: 60_000 })
    for (let i = 0; i < 1_000; i++) tier.put(`k${i}`, value(1, "x".repeat(50)), 0)
    expect(tier.size()).toBe(100)
    expect(tier.get("k999", 0)).toEqual(value(1, "x".repeat(50)))
    expect(tier.get("k0", 0)).toBeUndefined()
    const small = NearTier.make({ maxEntries: 10_000, maxBytes: 20_000, ttlMillis: 60_000 })
    for (let i = 0; i < 1_000; i++) {
      small.put(`k${i}`, value(1, "y".repeat(500)), 0)
      expect(small.bytes()).toBeLessThanOrEqual(20_000)
    }
    expect(small.size()).toBeGreaterThan(0)
  })

  it("an announced version is a floor: older entries go and cannot come back from a late read", () => {
    const tier = NearTier.make({ maxEntries: 10, maxBytes: 1_000_000, ttlMillis: 60_000 })
    tier.put("k", value(3, "three"), 0)
    tier.announce("k", 5)
    expect(tier.get("k", 0)).toBeUndefined()
    tier.put("k", value(4, "late read of four"), 0)
    expect(tier.get("k", 0)).toBeUndefined()
    tier.put("k", value(5, "five"), 0)
    expect(tier.get("k", 0)).toEqual(value(5, "five"))
    tier.announce("unknown", 9)
    tier.put("unknown", value(2, "older than announced"), 0)
    expect(tier.get("unknown", 0)).toBeUndefined()
  })

  it("entries expire after the tier's TTL, and a newer version replaces an older one, never the reverse", () => {
    const tier = NearTier.make({ maxEntries: 10, maxBytes: 1_000_000, ttlMillis: 1_000 })
    tier.put("k", value(2, "two"), 0)
    tier.put("k", value(1, "one"), 10)
    expect(tier.get("k", 999)).toEqual(value(2, "two"))
    expect(tier.get("k", 1_000)).toBeUndefined()
    tier.put("k", value(1, "one after expiry"), 2_000)
    expect(tier.get("k", 2_000)).toEqual(value(1, "one after expiry"))
  })
})

describe("near tier: a process's own writes", () => {
  it("an own write that settles after a newer one does not replace it; a repair does", () => {
    const tier = NearTier.make({ maxEntries: 10, maxBytes: 1_000_000, ttlMillis: 60_000 })
    // Redis applied 10, then 11; the replies settled in the other order.
    tier.accept("k", value(11, "eleven"), 0, false)
    tier.accept("k", value(10, "ten"), 0, false)
    expect(tier.get("k", 0)).toEqual(value(11, "eleven"))
    // A repair replaced an undecodable entry read from Redis with a lower version: it stands.
    tier.put("r", value(50, "undecodable"), 0)
    tier.accept("r", value(40, "repaired"), 0, true)
    expect(tier.get("r", 0)).toEqual(value(40, "repaired"))
    // A Redis read in flight since before an own write, answering after a later write of ours
    // dropped the entry, does not bring the older version back.
    tier.accept("j", value(20, "twenty"), 0, false)
    tier.drop("j")
    tier.put("j", value(19, "nineteen, read late"), 0)
    expect(tier.get("j", 0)).toBeUndefined()
    tier.put("j", value(21, "twenty-one"), 0)
    expect(tier.get("j", 0)).toEqual(value(21, "twenty-one"))
    // A tombstone of the same version as the value wins, as in the guard.
    tier.accept("r", Cache.Entry.Tombstone({ version: 40 }), 0, false)
    expect(tier.get("r", 0)).toEqual(Cache.Entry.Tombstone({ version: 40 }))
  })

  it("an own write Redis refused as outranked keeps an older own write, settling later, out (found by the chaos workload)", () => {
    const tier = NearTier.make({ maxEntries: 10, maxBytes: 1_000_000, ttlMillis: 60_000 })
    // Redis applied our pipelined 10, then another process's 12, and refused our 11; the replies
    // settled 11 (refused) before 10, and the announcement of 12 had not arrived yet.
    tier.outranked("k", value(11, "eleven"))
    tier.accept("k", value(10, "ten"), 0, false)
    expect(tier.get("k", 0)).toBeUndefined()
    tier.put("k", value(10, "ten, read late"), 0)
    expect(tier.get("k", 0)).toBeUndefined()
    tier.put("k", value(12, "twelve"), 0)
    expect(tier.get("k", 0)).toEqual(value(12, "twelve"))
    // A refused tombstone outranks values of its own version; an entry at or above the floor stays.
    tier.put("t", value(7, "seven"), 0)
    tier.outranked("t", Cache.Entry.Tombstone({ version: 7 }))
    expect(tier.get("t", 0)).toBeUndefined()
    tier.put("u", value(9, "nine"), 0)
    tier.outranked("u", value(8, "eight"))
    expect(tier.get("u", 0)).toEqual(value(9, "nine"))
  })
})

/** A tier in front of a MemoryCache, hearing every announcement until `deafen`. */
const tierOverMemory = Effect.map(MemoryCache.make(), (remote) => {
  const tier = NearTier.make({ maxEntries: 10, maxBytes: 1_000_000, ttlMillis: 60_000 })
  let hearing = true
  return {
    remote,
    tier,
    cache: NearCache.wrap(remote, tier, () => hearing),
    deafen: () => {
      hearing = false
    }
  }
})

describe("near tier in front of a remote cache", () => {
  it.effect("a write the remote refused raises the floor, so an older write's reply settling later is not served", () =>
    Effect.gen(function* () {
      const memory = yield* MemoryCache.make()
      // A pipelined write of ours whose reply says written, settling after a later write's refusal.
      const remote = Cache.Cache.of({ ...memory, setMany: (items) => Effect.succeed(items.map(() => "written")) })
      const tier = NearTier.make({ maxEntries: 10, maxBytes: 1_000_000, ttlMillis: 60_000 })
      const cache = NearCache.wrap(remote, tier, () => true)
      yield* memory.set("k", value(12, "twelve, another process's"), { ttl })
      expect(yield* cache.set("k", value(11, "eleven"), { ttl })).toBe("rejected")
      yield* cache.setMany([{ key: "k", entry: value(10, "ten"), options: { ttl } }])
      expect(yield* cache.get("k")).toEqual(Option.some(value(12, "twelve, another process's")))
    })
  )

  it.effect("while it cannot hear announcements the tier serves nothing and keeps nothing", () =>
    Effect.gen(function* () {
      const { cache, deafen, remote, tier } = yield* tierOverMemory
      yield* cache.set("k", value(1, "one"), { ttl })
      expect(tier.size()).toBe(1)
      deafen()
      // Another process's write, whose announcement this process cannot hear.
      yield* remote.set("k", value(2, "two"), { ttl })
      expect(yield* cache.get("k")).toEqual(Option.some(value(2, "two")))
      expect(yield* cache.getMany(["k"])).toEqual([Option.some(value(2, "two"))])
      // Nothing read or written while deaf is kept.
      yield* cache.set("j", value(1, "one"), { ttl })
      yield* cache.get("i")
      expect(tier.get("j", Date.now())).toBeUndefined()
      expect(tier.get("k", Date.now())).toEqual(value(1, "one"))
    })
  )

  it.effect("peek hands out what the tier holds, without the remote, and nothing while it cannot hear", () =>
    Effect.gen(function* () {
      const { cache, deafen, remote, tier } = yield* tierOverMemory
      expect(cache.peek?.("k")).toBeUndefined()
      yield* cache.set("k", value(1, "one"), { ttl })
      // Behind the tier's back: peek does not ask the remote.
      yield* remote.set("k", value(2, "two"), { ttl })
      expect(cache.peek?.("k")).toEqual(value(1, "one"))
      tier.announce("k", 2)
      expect(cache.peek?.("k")).toBeUndefined()
      yield* cache.get("k")
      expect(cache.peek?.("k")).toEqual(value(2, "two"))
      deafen()
      expect(cache.peek?.("k")).toBeUndefined()
    })
  )
})

const nearLayer = (prefix: string, near: RedisCache.Options["near"] = {}) => redisCacheLayer(prefix, { near })

cacheContract("RedisCache with the near tier", () => nearLayer(unique("near")))

const build = (prefix: string, near: RedisCache.Options["near"] = {}) =>
  Effect.map(Layer.build(nearLayer(prefix, near)), (context) => ({
    cache: Context.get(context, Cache.Cache),
    stats: Context.get(context, RedisCache.NearTierStats)
  }))

const eventually = <A, E>(effect: Effect.Effect<A, E>, until: (a: A) => boolean) =>
  effect.pipe(
    Effect.filterOrFail(until, () => new Error("not yet")),
    Effect.retry(Schedule.spaced("5 millis").pipe(Schedule.upTo("5 seconds")))
  )

describe("RedisCache with the near tier", () => {
  it.scopedLive("a hit is served in process: a change written behind its back is not seen until announced", () =>
    Effect.gen(function* () {
      const prefix = unique("near")
      const redis = yield* rawRedis
      const { cache, stats } = yield* build(prefix)
      expect(stats.enabled).toBe(true)
      yield* cache.set("k", value(1, "one"), { ttl })
      yield* Effect.promise(() => redis.set(`${prefix}:k`, "v2:behind its back", "PX", 60_000))
      expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
      yield* Effect.promise(() => redis.publish(`${prefix}:__wt_announcements`, "2:k"))
      const got = yield* eventually(cache.get("k"), (entry) => Option.isSome(entry) && entry.value.version === 2)
      expect(got).toEqual(Option.some(value(2, "behind its back")))
      expect(yield* stats.entries).toBeGreaterThan(0)
    })
  )

  // A pipelined setMany and a single set of one key, both accepted by Redis in that order: the
  // pipeline's reply can settle last, and must not bring the older version back into the tier.
  it.scopedLive("a process's own newer write is never replaced by its older one settling late", () =>
    Effect.gen(function* () {
      const prefix = unique("near")
      const { cache } = yield* build(prefix)
      for (let round = 0; round < 100; round++) {
        const key = `k${round}`
        const [many, single] = yield* Effect.all(
          [
            cache.setMany([{ key, entry: value(10, "ten"), options: { ttl } }]),
            cache.set(key, value(11, "eleven"), { ttl })
          ],
          { concurrency: "unbounded" }
        )
        if (many[0] === "written" && single === "written") {
          expect(yield* cache.get(key)).toEqual(Option.some(value(11, "eleven")))
        }
      }
    })
  )

  it.scopedLive("a process reads its own writes at once, and another process's after the announcement", () =>
    Effect.gen(function* () {
      const prefix = unique("near")
      const a = yield* build(prefix)
      const b = yield* build(prefix)
      yield* a.cache.set("k", value(1, "one"), { ttl })
      expect(yield* b.cache.get("k")).toEqual(Option.some(value(1, "one"))) // b now holds it in process
      yield* a.cache.set("k", value(2, "two"), { ttl })
      expect(yield* a.cache.get("k")).toEqual(Option.some(value(2, "two")))
      expect(yield* eventually(b.cache.get("k"), (e) => Option.isSome(e) && e.value.version === 2)).toEqual(
        Option.some(value(2, "two"))
      )
      yield* a.cache.invalidate("k", 3, ttl)
      expect(yield* eventually(b.cache.get("k"), (e) => Option.isSome(e) && e.value._tag === "Tombstone")).toEqual(
        Option.some(Cache.Entry.Tombstone({ version: 3 }))
      )
    })
  )

  it.scopedLive("when its subscription drops, the tier starts afresh (announcements may have been missed)", () =>
    Effect.gen(function* () {
      const prefix = unique("near")
      const redis = yield* rawRedis
      const { cache, stats } = yield* build(prefix)
      yield* cache.set("k", value(1, "one"), { ttl })
      expect(yield* stats.entries).toBe(1)
      yield* Effect.promise(() => redis.set(`${prefix}:k`, "v2:missed", "PX", 60_000))
      yield* Effect.promise(() => redis.client("KILL", "TYPE", "pubsub"))
      expect(yield* eventually(cache.get("k"), (e) => Option.isSome(e) && e.value.version === 2)).toEqual(
        Option.some(value(2, "missed"))
      )
      // Subscribed again, it serves from process memory once more.
      yield* eventually(Effect.zipRight(cache.get("k"), stats.entries), (entries) => entries === 1)
    })
  )

  it.scopedLive("the tier never exceeds its bounds", () =>
    Effect.gen(function* () {
      const prefix = unique("near")
      const { cache, stats } = yield* build(prefix, { maxEntries: 50, maxBytes: 40_000 })
      for (let i = 0; i < 300; i++) {
        yield* cache.set(`k${i}`, value(1, "z".repeat(i % 2 === 0 ? 10 : 400)), { ttl })
        expect(yield* stats.entries).toBeLessThanOrEqual(50)
        expect(yield* stats.bytes).toBeLessThanOrEqual(40_000)
      }
    })
  )
})

// Strict mode of the in-process tier. One process's bookkeeping on its own (heartbeats, waits,
// acknowledgements); then against the real Redis: a write returns only once every other process
// whose tier may hold the key dropped it (the acknowledgement path), or its lease ran out (a frozen
// process, in a process of its own); a process cut off from Redis stops serving from its tier
// within its lease; a restarted Redis's memory vouches for no lease granted before it; and through
// WriteThrough, a delete in one process is never followed by a hit on the deleted row in another.
// Redis Cluster's strict tier is tested in RedisClusterCache.test.ts.
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Duration, Effect, Fiber, Layer, Metric, Option, Schedule, Schema } from "effect"
import { Cache, Metrics, RedisCache, SqlStore, WriteThrough } from "../src/index.js"
import { User, user, value } from "./support/fixtures.js"
import { Redis } from "ioredis"
import * as Coherence from "../src/internal/redis/coherence.js"
import * as RedisEntry from "../src/internal/redis/entry.js"
import * as Operations from "../src/internal/redis/operations.js"
import { defineServerScripts } from "../src/internal/redis/scripts.js"
import { holderProcess } from "./support/holderProcess.js"
import { startRedisServer } from "./support/redisServer.js"
import { cacheContract } from "./contract/CacheContract.js"
import { PgLive, dropPrefix, rawRedis, redisCacheLayer, redisUrl, unique, usersTable } from "./support/services.js"

const ttl = Duration.minutes(1)

const strict = (lease: number): RedisCache.NearTierOptions => ({ mode: "strict", lease: Duration.millis(lease) })

/** One process's cache with a strict tier on `url`, serving once the layer is built and its lease begun. */
const member = (
  prefix: string,
  { breaker, lease = 300, url = redisUrl }: { lease?: number; url?: string; breaker?: false } = {}
) =>
  Effect.gen(function* () {
    const context = yield* Layer.build(RedisCache.layer({ url, keyPrefix: `${prefix}:`, near: strict(lease), breaker }))
    const member = { cache: Context.get(context, Cache.Cache), stats: Context.get(context, RedisCache.NearTierStats) }
    yield* until(member.stats.serving, (serving) => serving)
    return member
  })

/** Retries until `holds`; no timing is asserted. */
const until = <A, E>(effect: Effect.Effect<A, E>, holds: (a: A) => boolean) =>
  effect.pipe(
    Effect.filterOrFail(holds, () => new Error("not yet")),
    Effect.retry(Schedule.spaced("5 millis").pipe(Schedule.upTo("10 seconds")))
  )

const sharedPrefix = Effect.acquireRelease(
  Effect.sync(() => unique("strict")),
  dropPrefix
)

cacheContract("RedisCache with the strict near tier", () => redisCacheLayer(unique("strict"), { near: strict(300) }))

describe("strict near tier: one process's bookkeeping (Coherence), on its own", () => {
  const make = () => Coherence.make({ keyPrefix: "p:", leaseMillis: 200, holdMillis: 1_000 })

  it("serves only once every copy of a heartbeat came back, and not after its lease is revoked", () => {
    const coherence = make()
    const sent: Array<string> = []
    const path = (message: string) => Promise.resolve(void sent.push(message))
    expect(coherence.serving()).toBe(false)
    coherence.beat([path, path])
    expect(sent).toEqual(["h1.0", "h1.1"])
    coherence.hear("h1.0")
    expect(coherence.serving()).toBe(false)
    coherence.hear("h1.1")
    expect(coherence.serving()).toBe(true)
    coherence.revoke()
    expect(coherence.serving()).toBe(false)
    // A copy of a revoked round coming back late renews nothing.
    coherence.beat([path])
    coherence.revoke()
    coherence.hear("h2.0")
    expect(coherence.serving()).toBe(false)
  })

  it.live(
    "a write waits for each named holder's acknowledgement, or for as long as the reply allows for one that is silent",
    () =>
      Effect.gen(function* () {
        const coherence = make()
        const write = coherence.begin()
        const [, id] = write.arguments
        // An acknowledgement may arrive before the reply does.
        coherence.hear(`a${id}/fast`)
        const started = performance.now()
        yield* Effect.promise(() => write.settle("written|0|fast=5000,silent=50"))
        expect(performance.now() - started).toBeGreaterThanOrEqual(49)
        expect(coherence.counts).toEqual({ acknowledged: 1, leaseExpired: 1, youngMemoryWaits: 0 })
        // Acknowledged by both: no wait at all; a reply naming nobody neither.
        const other = coherence.begin()
        coherence.hear(`a${other.arguments[1]}/one`)
        yield* Effect.promise(() => other.settle("rejected|0|one=5000"))
        yield* Effect.promise(() => coherence.begin().settle("written|0|"))
        expect(coherence.counts).toEqual({ acknowledged: 2, leaseExpired: 1, youngMemoryWaits: 0 })
      })
  )

  it("acknowledges only an announcement that names it, to the writer's channel", () => {
    const coherence = make()
    const { member } = coherence
    expect(coherence.acknowledgement(`7/writer/3/other,${member}`)).toEqual({
      member,
      version: "7",
      channel: "p:__wt_member:writer",
      message: `a3/${member}`
    })
    expect(coherence.acknowledgement("7/writer/3/other")).toBeUndefined()
    expect(coherence.acknowledgement("7")).toBeUndefined()
  })
})

describe("strict near tier: options", () => {
  it.effect("a lease of zero or a mode it does not know fails the layer at once, naming it", () =>
    Effect.gen(function* () {
      const build = (near: RedisCache.NearTierOptions) =>
        Effect.scoped(Layer.build(RedisCache.layer({ url: redisUrl, keyPrefix: `${unique("strict")}:`, near }))).pipe(
          Effect.exit,
          Effect.map((exit) => String(exit._tag === "Failure" ? Cause.squash(exit.cause) : "built"))
        )
      expect(yield* build({ mode: "strict", lease: 0 })).toContain("lease must be above zero")
      expect(yield* build({ mode: "strong" as "strict" })).toContain('mode must be "bounded" or "strict"; got "strong"')
    })
  )
})

describe("strict near tier: the acknowledgement path", () => {
  it.scopedLive("a write returns only after another process holding the key dropped it", () =>
    Effect.gen(function* () {
      const prefix = yield* sharedPrefix
      const reader = yield* member(prefix)
      const writer = yield* member(prefix)
      expect(writer.stats.mode).toBe("strict")
      yield* writer.cache.set("k", value(1, "one"), { ttl })
      expect(yield* reader.cache.get("k")).toEqual(Option.some(value(1, "one")))
      expect(reader.cache.peek?.("k")).toEqual(value(1, "one"))

      const acknowledgedBefore = yield* Metrics.total(Metrics.nearTierHolders, { outcome: "acknowledged" })
      expect(yield* writer.cache.set("k", value(2, "two"), { ttl })).toBe("written")
      // Checked as the write returns, with no time for an announcement to arrive on its own.
      expect(reader.cache.peek?.("k")).toBeUndefined()
      expect(yield* Metrics.total(Metrics.nearTierHolders, { outcome: "acknowledged" })).toBe(acknowledgedBefore + 1)
      expect(yield* reader.cache.get("k")).toEqual(Option.some(value(2, "two")))
      // The first write on a fresh prefix waited for the memory to be a lease old; the second, for the reader.
      expect(yield* writer.stats.holders).toEqual({ acknowledged: 1, leaseExpired: 0, youngMemoryWaits: 1 })
    })
  )

  it.scopedLive(
    "every holder acknowledges: three readers, a delete, and setMany; a key nobody holds waits for no one",
    () =>
      Effect.gen(function* () {
        const prefix = yield* sharedPrefix
        const writer = yield* member(prefix)
        const readers = [yield* member(prefix), yield* member(prefix), yield* member(prefix)]
        yield* writer.cache.set("k", value(1, "one"), { ttl })
        yield* writer.cache.set("j", value(1, "one"), { ttl })
        for (const reader of readers) {
          expect(yield* reader.cache.getMany(["k", "j"])).toEqual([
            Option.some(value(1, "one")),
            Option.some(value(1, "one"))
          ])
        }
        const before = yield* writer.stats.holders

        expect(yield* writer.cache.invalidate("k", 2, ttl)).toBe("written")
        for (const reader of readers) expect(reader.cache.peek?.("k")).toBeUndefined()
        expect((yield* writer.stats.holders).acknowledged - before.acknowledged).toBe(3)

        expect(yield* writer.cache.setMany([{ key: "j", entry: value(2, "two"), options: { ttl } }])).toEqual([
          "written"
        ])
        for (const reader of readers) expect(reader.cache.peek?.("j")).toBeUndefined()
        expect((yield* writer.stats.holders).acknowledged - before.acknowledged).toBe(6)

        // Only the writer holds "lonely": nobody to wait for.
        yield* writer.cache.set("lonely", value(1, "one"), { ttl })
        yield* writer.cache.set("lonely", value(2, "two"), { ttl })
        expect(yield* writer.stats.holders).toEqual({ ...before, acknowledged: before.acknowledged + 6 })
      })
  )

  it.scopedLive("a holder's own write makes it a holder: another process's later write waits for it", () =>
    Effect.gen(function* () {
      const prefix = yield* sharedPrefix
      const first = yield* member(prefix)
      const second = yield* member(prefix)
      yield* first.cache.set("k", value(1, "one"), { ttl })
      expect(first.cache.peek?.("k")).toEqual(value(1, "one"))
      yield* second.cache.set("k", value(2, "two"), { ttl })
      expect(first.cache.peek?.("k")).toBeUndefined()
      expect((yield* second.stats.holders).acknowledged).toBe(1)
    })
  )
})

describe("strict near tier: what a holder owes", () => {
  it.scopedLive(
    "a write the key refused (a newer one is there) still waits for the holders, which stay holders if they kept a newer entry",
    () =>
      Effect.gen(function* () {
        const prefix = yield* sharedPrefix
        const reader = yield* member(prefix)
        const writer = yield* member(prefix)
        const redis = yield* rawRedis
        yield* writer.cache.set("k", value(5, "five"), { ttl })
        expect(yield* reader.cache.get("k")).toEqual(Option.some(value(5, "five")))
        const before = (yield* writer.stats.holders).acknowledged

        // Refused: Redis holds 5. The newer write may not be acknowledged yet, so the refused one waits
        // for every holder to drop what is older than 3; the reader keeps 5, and stays a holder.
        expect(yield* writer.cache.set("k", value(3, "three"), { ttl })).toBe("rejected")
        expect((yield* writer.stats.holders).acknowledged).toBe(before + 1)
        expect(reader.cache.peek?.("k")).toEqual(value(5, "five"))
        // The writer, and the reader again; neither owes an acknowledgement.
        const fields = yield* Effect.promise(() => redis.hkeys(`${prefix}:__wt_holders:k`))
        expect(fields.filter((name) => name.startsWith("h:")).length).toBe(2)
        expect(fields.filter((name) => name.startsWith("p:"))).toEqual([])

        // So the next write waits for it again.
        yield* writer.cache.set("k", value(6, "six"), { ttl })
        expect(reader.cache.peek?.("k")).toBeUndefined()
        expect((yield* writer.stats.holders).acknowledged).toBe(before + 2)
      })
  )
})

describe("strict near tier: the scripts, at the largest versions a key may have", () => {
  // Lua prints a number of 16 digits in exponent form: what a holder owes must stay text.
  it.scopedLive("what a holder owes is recorded at a 16-digit version and cleared by its acknowledgement", () =>
    Effect.gen(function* () {
      const prefix = yield* sharedPrefix
      const redis = yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const client = new Redis(redisUrl, { keyPrefix: `${prefix}:`, lazyConnect: true })
          await client.connect()
          return client
        }),
        (client) => Effect.promise(() => client.quit())
      )
      const scripts = defineServerScripts(redis)
      const top = Number.MAX_SAFE_INTEGER
      const holding: Operations.Holding = {
        holdersOf: RedisEntry.holdersKey,
        bornOf: () => RedisEntry.bornKey,
        coherence: undefined
      }
      const write = (version: number) =>
        Effect.promise(() =>
          scripts.wtSet(
            ...Operations.setArguments(
              "k",
              value(version, "v"),
              { ttl },
              { key: RedisEntry.epochKey, argument: "epoch" },
              "",
              holding,
              ["writer", String(version), "300", "60000"]
            )
          )
        )
      const owed = Effect.promise(() => redis.hget(RedisEntry.holdersKey("k"), "p:reader"))
      yield* Effect.promise(() => redis.hset(RedisEntry.holdersKey("k"), "h:reader", "300"))
      expect(yield* write(top - 1)).toMatch(/^written\|\d+\|reader=300$/)
      expect(yield* owed).toMatch(new RegExp(`^${top - 1}:\\d+:300$`))
      // Still owing the first: the second raises what it owes, as text.
      expect(yield* write(top)).toMatch(/^written\|\d+\|reader=\d+$/)
      expect(yield* owed).toMatch(new RegExp(`^${top}:\\d+:300$`))
      // An acknowledgement of the first clears nothing; of the second, what it owes.
      yield* Effect.promise(() =>
        scripts.wtAck(RedisEntry.holdersKey("k"), "reader", String(top - 1), "c", "m", "", "", "")
      )
      expect(yield* owed).not.toBeNull()
      yield* Effect.promise(() =>
        scripts.wtAck(RedisEntry.holdersKey("k"), "reader", String(top), "c", "m", "", "", "")
      )
      expect(yield* owed).toBeNull()
    })
  )
})

describe("strict near tier: a silent process", () => {
  it.scopedLive("a frozen holder costs the writer at most its lease, and serves nothing stale once it wakes", () =>
    Effect.gen(function* () {
      const prefix = yield* sharedPrefix
      const lease = 500
      const writer = yield* member(prefix, { lease })
      yield* writer.cache.set("k", value(1, "one"), { ttl })
      const holder = yield* holderProcess(redisUrl, `${prefix}:`, lease)
      expect(yield* holder.ask("get k")).toBe("got k 1")
      expect(yield* holder.ask("peek k")).toBe("peeked k 1")

      holder.child.kill("SIGSTOP")
      const silentBefore = yield* Metrics.total(Metrics.nearTierHolders, { outcome: "lease_expired" })
      const waitsBefore = yield* Metric.value(Metrics.nearTierWriteWait)
      const started = Date.now()
      expect(yield* writer.cache.set("k", value(2, "two"), { ttl })).toBe("written")
      const waited = Date.now() - started
      expect(yield* writer.stats.holders).toMatchObject({ acknowledged: 0, leaseExpired: 1 })
      expect(yield* Metrics.total(Metrics.nearTierHolders, { outcome: "lease_expired" })).toBe(silentBefore + 1)
      const waits = yield* Metric.value(Metrics.nearTierWriteWait)
      expect(waits.count).toBe(waitsBefore.count + 1)
      expect(waits.sum - waitsBefore.sum).toBeGreaterThanOrEqual(lease)
      // The lease, counted from the write's reply: not a second lease, nor the call's own bound.
      expect(waited).toBeGreaterThanOrEqual(lease)
      expect(waited).toBeLessThan(2 * lease)

      holder.child.kill("SIGCONT")
      expect(yield* holder.ask("peek k")).toBe("peeked k none")
      expect(yield* holder.ask("get k")).toBe("got k 2")
    })
  )
})

describe("strict near tier: a silent process, and a second write", () => {
  it.scopedLive("a write made while an earlier one waits for a silent holder waits for that holder too", () =>
    Effect.gen(function* () {
      const prefix = yield* sharedPrefix
      const lease = 500
      const writer = yield* member(prefix, { lease })
      const redis = yield* rawRedis
      yield* writer.cache.set("k", value(1, "one"), { ttl })
      const holder = yield* holderProcess(redisUrl, `${prefix}:`, lease)
      expect(yield* holder.ask("get k")).toBe("got k 1")

      holder.child.kill("SIGSTOP")
      const started = Date.now()
      const first = yield* Effect.fork(writer.cache.set("k", value(2, "two"), { ttl }))
      // The first write's script ran: the holder now owes it an acknowledgement.
      yield* until(
        Effect.promise(() => redis.hkeys(`${prefix}:__wt_holders:k`)),
        (names) => names.some((name) => name.startsWith("p:"))
      )
      // Its announcement is queued for the frozen holder behind the first's: returning before the
      // holder's lease ran out would leave it free to serve 1 once it wakes, if it renewed first.
      expect(yield* writer.cache.set("k", value(3, "three"), { ttl })).toBe("written")
      expect(Date.now() - started).toBeGreaterThanOrEqual(lease)
      expect(yield* Fiber.join(first)).toBe("written")
      expect(yield* writer.stats.holders).toMatchObject({ acknowledged: 0, leaseExpired: 2 })

      holder.child.kill("SIGCONT")
      expect(yield* holder.ask("get k")).toBe("got k 3")
    })
  )
})

describe("strict near tier: a process that loses Redis", () => {
  it.scopedLive(
    "stops serving from its tier within its lease while Redis does not answer, and serves again once it does",
    () =>
      Effect.gen(function* () {
        const server = yield* startRedisServer
        const lease = 300
        const process = yield* member(unique("strict"), { lease, url: server.url })
        yield* process.cache.set("k", value(1, "one"), { ttl })
        expect(process.cache.peek?.("k")).toEqual(value(1, "one"))

        yield* server.freeze
        yield* until(process.stats.serving, (serving) => !serving)
        expect(process.cache.peek?.("k")).toBeUndefined()
        // Not served, but kept: nobody could have written while nobody could reach Redis.
        expect(yield* process.stats.entries).toBe(1)

        yield* server.thaw
        yield* until(process.stats.serving, (serving) => serving)
        expect(process.cache.peek?.("k")).toEqual(value(1, "one"))
      })
  )

  it.scopedLive("after a Redis restart, a write waits until the new memory is a lease old", () =>
    Effect.gen(function* () {
      const server = yield* startRedisServer
      const lease = 300
      const prefix = unique("strict")
      // No breaker: the writer retries until Redis is back, rather than waiting out an open breaker.
      const reader = yield* member(prefix, { lease, url: server.url, breaker: false })
      const writer = yield* member(prefix, { lease, url: server.url, breaker: false })
      yield* writer.cache.set("k", value(1, "one"), { ttl })
      expect(yield* reader.cache.get("k")).toEqual(Option.some(value(1, "one")))
      const before = (yield* writer.stats.holders).youngMemoryWaits

      yield* server.kill
      yield* server.start
      // The holders went with the memory: what vouches for the reader is the wait.
      yield* until(
        writer.cache.set("k", value(2, "two"), { ttl }).pipe(Effect.either),
        (written) => written._tag === "Right"
      )
      expect((yield* writer.stats.holders).youngMemoryWaits).toBe(before + 1)
      expect(reader.cache.peek?.("k")).toBeUndefined()
    })
  )
})

describe("strict near tier through WriteThrough", () => {
  it.live("a row deleted through one process is not served by another's tier once the delete returned", () =>
    Effect.gen(function* () {
      const prefix = yield* sharedPrefix
      const table = yield* usersTable
      const instance = Effect.gen(function* () {
        const context = yield* Layer.build(
          Layer.merge(
            RedisCache.layer({ url: redisUrl, keyPrefix: `${prefix}:`, near: strict(300) }),
            SqlStore.layer().pipe(Layer.provideMerge(PgLive))
          )
        )
        yield* until(Context.get(context, RedisCache.NearTierStats).serving, (serving) => serving)
        return yield* WriteThrough.make({
          entity: table,
          key: Schema.String,
          value: User,
          table: { name: table, primaryKey: "id" }
        }).pipe(Effect.provide(context))
      })
      const a = yield* instance
      const b = yield* instance
      for (let round = 0; round < 20; round++) {
        const id = `token-${round}`
        yield* a.set(id, user(id, "valid"))
        expect(yield* b.get(id)).toEqual(Option.some(user(id, "valid")))
        expect(yield* b.get(id)).toEqual(Option.some(user(id, "valid")))
        yield* a.delete(id)
        expect(yield* b.get(id)).toEqual(Option.none())
      }
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )
})

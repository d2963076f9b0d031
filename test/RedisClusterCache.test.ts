// RedisClusterCache on a 3-master Redis Cluster of this file's own (started once, in beforeAll):
// the shared Cache and write-through contracts, its per-slot MGETs, its per-slot memory markers
// across a node restart, a restart under load through WriteThrough and PostgreSQL, and its layers.
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import calculateSlot from "cluster-key-slot"
import {
  Cause,
  Config,
  ConfigError,
  ConfigProvider,
  Context,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Option,
  Schedule,
  Schema,
  Scope
} from "effect"
import { Redis } from "ioredis"
import * as net from "node:net"
import { Cache, Metrics, RedisCache, RedisClusterCache, SqlStore, Store, WriteThrough } from "../src/index.js"
import { FaultyCache } from "../src/testing.js"
import { cacheContract } from "./contract/CacheContract.js"
import { writeThroughContract } from "./contract/WriteThroughContract.js"
import { tombstone, User, value } from "./support/fixtures.js"
import { keyInSlots, type RedisCluster, type SlotRange, startRedisCluster } from "./support/redisCluster.js"
import { freePort } from "./support/redisServer.js"
import { PgLive, unique, usersTable } from "./support/services.js"

// --- One cluster for the whole file --------------------------------------------------

const clusterScope = Effect.runSync(Scope.make())
let cluster: RedisCluster | undefined

beforeAll(async () => {
  cluster = await Effect.runPromise(Scope.extend(startRedisCluster, clusterScope))
}, 30_000)

afterAll(() => Effect.runPromise(Scope.close(clusterScope, Exit.void)), 30_000)

const theCluster = (): RedisCluster => {
  if (cluster === undefined) throw new Error("the Redis Cluster of this file did not start (see beforeAll)")
  return cluster
}

/** The cluster's nodes as `host:port`, as the layer takes them. */
const nodes = () => theCluster().ports.map((port) => `127.0.0.1:${port}`)

/** A RedisClusterCache on the file's cluster under a fresh key prefix. */
const clusterCacheLayer = (
  label = "cc",
  options: Omit<RedisClusterCache.Options, "nodes" | "keyPrefix"> = {}
): Layer.Layer<Cache.Cache, Cache.CacheConnectionError> =>
  RedisClusterCache.layer({ ...options, nodes: nodes(), keyPrefix: `${unique(label)}:` })

/** Builds a cache for the rest of the current scope. */
const buildCache = <E>(layer: Layer.Layer<Cache.Cache, E>) => Effect.map(Layer.build(layer), Context.get(Cache.Cache))

const ttl = Duration.minutes(5)

/** Retries an assertion about eventual state, a bounded number of times (no timing is asserted). */
const eventually = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  assertion: (a: A) => void,
  times = 200
): Effect.Effect<A, never, R> =>
  Effect.flatMap(effect, (a) =>
    Effect.as(
      Effect.try(() => assertion(a)),
      a
    )
  ).pipe(Effect.retry(Schedule.intersect(Schedule.spaced("50 millis"), Schedule.recurs(times))), Effect.orDie)

/** A user key whose cache key (`fullPrefix + key`) lands on the node at `index`. */
const keyOnClusterNode = (
  slots: ReadonlyArray<ReadonlyArray<SlotRange>>,
  index: number,
  fullPrefix: string,
  label: string
) => keyInSlots(slots[index]!, fullPrefix + label).slice(fullPrefix.length)

const nodeOfSlot = (slots: ReadonlyArray<ReadonlyArray<SlotRange>>, slot: number) =>
  slots.findIndex((ranges) => ranges.some(([first, last]) => first <= slot && slot <= last))

const slotsOfAll = Effect.suspend(() => Effect.forEach([0, 1, 2], (index) => theCluster().slotsOf(index)))

/** One raw connection to each node, for INFO: never to the shared Redis. */
const rawNodes = Effect.acquireRelease(
  Effect.sync(() =>
    theCluster().ports.map((port) => new Redis({ host: "127.0.0.1", port, commandTimeout: 2000, lazyConnect: true }))
  ),
  (clients) => Effect.sync(() => clients.forEach((client) => client.disconnect()))
)

/** How many MGETs the nodes have run, summed over the three. */
const mgetCalls = (clients: ReadonlyArray<Redis>) =>
  Effect.promise(() => Promise.all(clients.map((client) => client.info("commandstats")))).pipe(
    Effect.map((infos) =>
      infos.reduce((total, info) => total + Number(/^cmdstat_mget:calls=(\d+)/m.exec(info)?.[1] ?? 0), 0)
    )
  )

/** A users entity in a table of its own, with the Cache it runs on and its rows straight from PostgreSQL. */
const usersOnTheCluster = (cacheTimeout: Duration.DurationInput) =>
  Effect.gen(function* () {
    const table = yield* usersTable
    const users = yield* WriteThrough.make({
      entity: table,
      key: Schema.String,
      value: User,
      table: { name: table, primaryKey: "id" },
      cacheTimeout
    })
    const collection = yield* (yield* Store.Store).collection({
      entity: table,
      fields: ["id", "name", "email"],
      table: { name: table, primaryKey: "id" }
    })
    return { table, users, collection, cache: yield* Cache.Cache }
  })

// --- The shared contracts -------------------------------------------------------------

cacheContract("RedisClusterCache", () => clusterCacheLayer("cc"))

cacheContract("RedisClusterCache with the near tier", () => clusterCacheLayer("ccn", { near: {} }))

writeThroughContract("RedisClusterCache + SqlStore (PostgreSQL)", {
  layer: () => Layer.merge(clusterCacheLayer("wt"), SqlStore.layer().pipe(Layer.provideMerge(PgLive))),
  table: Effect.map(usersTable, (name) => ({ name, primaryKey: "id" }))
})

// --- What is particular to the cluster ------------------------------------------------

describe("RedisClusterCache", () => {
  it.scoped("getMany over keys of all three nodes and many slots answers in the keys' order, one MGET per slot", () =>
    Effect.gen(function* () {
      const keyPrefix = `${unique("gm")}:`
      const cache = yield* buildCache(RedisClusterCache.layer({ nodes: nodes(), keyPrefix }))
      const slots = yield* slotsOfAll

      // 170 keys of their own slots, and 30 that share 3 slots through hash tags.
      const distinct = [
        ...Array.from({ length: 170 }, (_, i) => `user:${i}`),
        ...Array.from({ length: 30 }, (_, i) => `{team${i % 3}}:member:${i}`)
      ]
      const expected = new Map<string, Option.Option<Cache.Entry>>()
      for (const [i, key] of distinct.entries()) {
        if (i % 4 === 0) {
          expected.set(key, Option.none())
        } else if (i % 4 === 1) {
          expect(yield* cache.invalidate(key, i, ttl)).toBe("written")
          expected.set(key, Option.some(tombstone(i)))
        } else {
          expect(yield* cache.set(key, value(i, `payload of ${key}`), { ttl })).toBe("written")
          expected.set(key, Option.some(value(i, `payload of ${key}`)))
        }
      }
      // Duplicates, and an order that is neither the writes' nor the slots'.
      const keys = [...distinct, ...distinct.slice(0, 20)].reverse()
      keys.splice(50, 0, "user:7", "{team1}:member:4", "user:7")

      const keySlots = keys.map((key) => calculateSlot(keyPrefix + key))
      expect(new Set(keySlots.map((slot) => nodeOfSlot(slots, slot)))).toEqual(new Set([0, 1, 2]))
      const slotCount = new Set(keySlots).size
      expect(slotCount).toBeGreaterThan(100)
      expect(slotCount).toBeLessThan(new Set(keys).size)

      const clients = yield* rawNodes
      const before = yield* mgetCalls(clients)
      const got = yield* cache.getMany(keys)
      const after = yield* mgetCalls(clients)

      expect(got).toEqual(keys.map((key) => expected.get(key)!))
      expect(after - before).toBe(slotCount)
    })
  )

  it.live(
    "tickets across a node restart: an old ticket is outdated on the restarted node and good on the others",
    () =>
      Effect.gen(function* () {
        const cluster = theCluster()
        yield* cluster.waitHealthy
        const keyPrefix = `${unique("tk")}:`
        const cache = yield* buildCache(RedisClusterCache.layer({ nodes: nodes(), keyPrefix }))
        const slots = yield* slotsOfAll
        const [before, oldOnRestarted, earlyOnRestarted, onKept] = [
          keyOnClusterNode(slots, 1, keyPrefix, "before-"),
          keyOnClusterNode(slots, 1, keyPrefix, "old-"),
          keyOnClusterNode(slots, 1, keyPrefix, "early-"),
          keyOnClusterNode(slots, 0, keyPrefix, "kept-")
        ]
        // Each key has a slot, and a marker, of its own.
        expect(
          new Set([before, oldOnRestarted, earlyOnRestarted].map((key) => calculateSlot(keyPrefix + key))).size
        ).toBe(3)

        const old = yield* cache.ticket(Duration.minutes(2))
        expect(yield* cache.set(before, value(1, "before the restart"), { ttl, ticket: old })).toBe("written")
        expect(yield* cache.get(before)).toEqual(Option.some(value(1, "before the restart")))

        yield* cluster.kill(1)
        // A call to the dead node completes, with a CacheError (within the command timeout).
        const down = yield* Effect.flip(cache.get(before))
        expect(down).toMatchObject({ _tag: "CacheError", operation: "get", key: before })
        yield* cluster.start(1)
        yield* cluster.waitHealthy

        // Once the client is back on the node: it is empty.
        yield* eventually(cache.get(before), (got) => expect(got).toEqual(Option.none()))

        // A ticket taken after the restart but before its slot's marker is re-created: the set
        // re-creates the marker and is refused all the same.
        const early = yield* cache.ticket(Duration.minutes(2))
        expect(yield* cache.set(earlyOnRestarted, value(1, "early"), { ttl, ticket: early })).toBe("outdated")
        expect(yield* cache.get(earlyOnRestarted)).toEqual(Option.none())

        // The old ticket: outdated on the restarted node, before and after its slot's marker is back.
        expect(yield* cache.set(oldOnRestarted, value(2, "old ticket"), { ttl, ticket: old })).toBe("outdated")
        expect(yield* cache.get(oldOnRestarted)).toEqual(Option.none())
        expect(yield* cache.set(oldOnRestarted, value(2, "old ticket"), { ttl, ticket: old })).toBe("outdated")
        expect(yield* cache.get(oldOnRestarted)).toEqual(Option.none())
        expect(yield* cache.set(before, value(2, "old ticket"), { ttl, ticket: old })).toBe("outdated")
        expect(yield* cache.get(before)).toEqual(Option.none())

        // ...and good on a node that kept its memory.
        expect(yield* cache.set(onKept, value(3, "kept"), { ttl, ticket: old })).toBe("written")
        expect(yield* cache.get(onKept)).toEqual(Option.some(value(3, "kept")))

        // A ticket taken after the markers were re-created is good.
        yield* Effect.sleep("5 millis")
        const fresh = yield* cache.ticket(Duration.minutes(2))
        expect(yield* cache.set(oldOnRestarted, value(4, "fresh"), { ttl, ticket: fresh })).toBe("written")
        expect(yield* cache.get(oldOnRestarted)).toEqual(Option.some(value(4, "fresh")))
        expect(yield* cache.set(earlyOnRestarted, value(5, "fresh"), { ttl, ticket: fresh })).toBe("written")
        expect(yield* cache.get(earlyOnRestarted)).toEqual(Option.some(value(5, "fresh")))
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "a miss fill held across a restart of its node does not land: the next read sees the acknowledged write",
    () => {
      const keyPrefix = `${unique("mf")}:`
      return Effect.gen(function* () {
        const cluster = theCluster()
        yield* cluster.waitHealthy
        // The fill is held on purpose while the node restarts.
        const { cache, collection, table, users } = yield* usersOnTheCluster("30 seconds")
        const faults = yield* FaultyCache.FaultyCache
        const key = keyOnClusterNode(yield* slotsOfAll, 1, `${keyPrefix}${table}:`, "held-")
        const cacheKey = `${table}:${key}`
        const named = (name: string) => new User({ id: key, name, email: `${key}@example.com` })

        const v1 = yield* collection.put(key, { id: key, name: "v1", email: `${key}@example.com` })
        const fill = yield* faults.pause({ when: "before" }, "set")
        const reader = yield* Effect.fork(users.get(key))
        yield* fill.reached // the reader read v1 from the store, under a ticket taken before the restart
        yield* users.set(key, named("v2")) // acknowledged: the cache held v2...
        const v2 = Option.getOrThrow(yield* collection.get(key)).version
        expect(yield* cache.get(cacheKey)).toEqual(Option.some(value(v2, JSON.stringify(named("v2")))))

        yield* cluster.kill(1) // ...and loses it
        yield* cluster.start(1)
        yield* cluster.waitHealthy
        yield* eventually(cache.get(cacheKey), (got) => expect(got).toEqual(Option.none()))

        yield* fill.release
        expect(Option.map(yield* Fiber.join(reader), (got) => got.name)).toEqual(Option.some("v1"))
        // The fill of v1 was refused: its ticket is older than the slot's memory. The reader left a
        // tombstone just below v1 instead, so that nothing older than what it returned lands after it.
        expect(yield* cache.get(cacheKey)).toEqual(Option.some(tombstone(v1 - 1)))
        expect(Option.map(yield* users.get(key), (got) => got.name)).toEqual(Option.some("v2"))
        expect(yield* cache.get(cacheKey)).toEqual(Option.some(value(v2, JSON.stringify(named("v2")))))
      }).pipe(
        Effect.scoped,
        Effect.provide(
          Layer.merge(
            FaultyCache.layer.pipe(Layer.provide(RedisClusterCache.layer({ nodes: nodes(), keyPrefix }))),
            SqlStore.layer()
          ).pipe(Layer.provideMerge(PgLive))
        )
      )
    },
    60_000
  )

  it.live(
    "a node restart during reads and writes through WriteThrough and PostgreSQL: no read older than an acknowledged write, no hang",
    () => {
      const keyPrefix = `${unique("rs")}:`
      return Effect.gen(function* () {
        const cluster = theCluster()
        yield* cluster.waitHealthy
        const { cache, collection, table, users } = yield* usersOnTheCluster("300 millis")
        const cacheKey = (key: string) => `${table}:${key}`

        // 4 writers, each owning one key on each node.
        const slots = yield* slotsOfAll
        const writers = [0, 1, 2, 3].map((w) =>
          [0, 1, 2].map((n) => keyOnClusterNode(slots, n, `${keyPrefix}${table}:`, `w${w}n${n}-`))
        )
        const allKeys = writers.flat()
        const user = (key: string, n: number) => new User({ id: key, name: `v${n}`, email: `${key}@example.com` })
        const versionOf = (got: User) => Number(got.name.slice(1))

        interface KeyLog {
          /** The highest n whose write was begun. */
          attempted: number
          /** The highest n whose write was acknowledged (succeeded). */
          acked: number
          /** The highest n the store is known to hold (acknowledged, or a StaleCacheError). */
          committed: number
          /** The highest n the store may hold (an InconsistentCacheError: unknown). */
          maybeCommitted: number
          lastOutcome: string
        }
        const logs = new Map<string, KeyLog>(
          allKeys.map((key) => [
            key,
            { attempted: 0, acked: 0, committed: 0, maybeCommitted: 0, lastOutcome: "Success" } satisfies KeyLog
          ])
        )
        for (const key of allKeys) yield* users.set(key, user(key, 0))

        const problems: Array<string> = []
        /** `affected`: writes that failed or waited for at least one cache timeout. */
        const outcomes = { writes: new Map<string, number>(), reads: 0, affected: 0 }
        const count = (tag: string) => outcomes.writes.set(tag, (outcomes.writes.get(tag) ?? 0) + 1)
        let slowest = 0
        /** Runs one operation, recording how long it took; None when it did not complete within 10 seconds. */
        const timed = <A, E>(effect: Effect.Effect<A, E>) =>
          Effect.gen(function* () {
            const started = Date.now()
            const exit = yield* Effect.exit(Effect.disconnect(effect)).pipe(Effect.timeout("10 seconds"), Effect.option)
            const took = Date.now() - started
            slowest = Math.max(slowest, took)
            return Option.map(exit, (exit) => ({ exit, took }))
          })

        const startedAt = Date.now()
        const runUntil = startedAt + 4_000

        const writer = (keys: ReadonlyArray<string>) =>
          Effect.gen(function* () {
            while (Date.now() < runUntil) {
              for (const key of keys) {
                const log = logs.get(key)!
                const n = ++log.attempted
                const done = yield* timed(users.set(key, user(key, n)))
                if (Option.isNone(done)) {
                  problems.push(`set ${key} v${n} did not complete within 10 seconds`)
                  log.lastOutcome = "Hang"
                  continue
                }
                const { exit, took } = done.value
                if (Exit.isFailure(exit) || took >= 300) outcomes.affected++
                if (Exit.isSuccess(exit)) {
                  log.acked = log.committed = log.maybeCommitted = n
                  log.lastOutcome = "Success"
                  count("Success")
                  continue
                }
                const tag = Option.getOrUndefined(Cause.failureOption(exit.cause))?._tag ?? "Defect"
                log.lastOutcome = tag
                count(tag)
                if (tag === "StaleCacheError") log.committed = log.maybeCommitted = n
                else if (tag === "InconsistentCacheError") log.maybeCommitted = n
                else if (tag !== "StoreError") problems.push(`set ${key} v${n} failed untyped: ${String(exit.cause)}`)
              }
            }
          })

        const reader = (offset: number) =>
          Effect.gen(function* () {
            let i = offset
            while (Date.now() < runUntil) {
              const key = allKeys[i++ % allKeys.length]!
              const log = logs.get(key)!
              const floor = log.acked
              const done = yield* timed(users.get(key))
              const ceiling = log.attempted
              outcomes.reads++
              if (Option.isNone(done)) {
                problems.push(`get ${key} did not complete within 10 seconds`)
                continue
              }
              const { exit } = done.value
              if (Exit.isFailure(exit)) {
                problems.push(`get ${key} failed: ${String(exit.cause)}`)
                continue
              }
              if (Option.isNone(exit.value)) {
                problems.push(`get ${key} returned None, though v${floor} was acknowledged before it began`)
                continue
              }
              const n = versionOf(exit.value.value)
              if (n < floor)
                problems.push(`get ${key} returned v${n}, though v${floor} was acknowledged before it began`)
              if (n > ceiling)
                problems.push(`get ${key} returned v${n}, never written (v${ceiling} was the last begun)`)
            }
          })

        const chaos = Effect.gen(function* () {
          yield* Effect.sleep("1 second")
          yield* cluster.kill(1)
          yield* Effect.sleep("1 second")
          yield* cluster.start(1)
          yield* cluster.waitHealthy
        })

        const fibers = yield* Effect.forEach([...writers.map(writer), ...[0, 3, 6, 9].map(reader), chaos], (effect) =>
          Effect.fork(effect)
        )
        yield* Fiber.joinAll(fibers)
        yield* cluster.waitHealthy

        expect(problems).toEqual([])
        // The run did something, and the outage was felt.
        expect(outcomes.writes.get("Success") ?? 0).toBeGreaterThan(50)
        expect(outcomes.reads).toBeGreaterThan(50)
        expect(outcomes.affected).toBeGreaterThan(0)
        expect(yield* Metrics.total(Metrics.cacheHits, { entity: table })).toBeGreaterThan(0)
        expect(yield* Metrics.total(Metrics.degradedReads, { entity: table })).toBeGreaterThan(0)
        // Nothing waited much past its bounds: 300 ms per cache call, a few retries, a fast store.
        expect(slowest).toBeLessThan(5_000)

        // The store holds what the writes say it does, every read returns it, and the cache holds it
        // or a tombstone (eventually: a write that ended in StaleCacheError is repaired in the background).
        for (const key of allKeys) {
          const log = logs.get(key)!
          const stored = Option.getOrThrow(yield* collection.get(key))
          const n = versionOf(new User(stored.value as User))
          expect(n).toBeGreaterThanOrEqual(log.committed)
          expect(n).toBeLessThanOrEqual(log.maybeCommitted)
          if (log.lastOutcome === "Success" || log.lastOutcome === "StaleCacheError") expect(n).toBe(log.attempted)
          yield* eventually(Effect.zip(users.get(key), cache.get(cacheKey(key))), ([got, cached]) => {
            expect(Option.map(got, versionOf)).toEqual(Option.some(n))
            if (Option.isSome(cached)) {
              const entry = cached.value
              if (entry._tag === "Value") expect(entry.version).toBe(stored.version)
              else expect(entry.version).toBeGreaterThanOrEqual(stored.version)
            }
          })
        }
      }).pipe(
        Effect.scoped,
        // The library logs every write the outage spoiled: expected here, and counted above.
        Logger.withMinimumLogLevel(LogLevel.None),
        Effect.provide(
          Layer.merge(
            RedisClusterCache.layer({ nodes: nodes(), keyPrefix, commandTimeout: "300 millis" }),
            SqlStore.layer()
          ).pipe(Layer.provideMerge(PgLive))
        )
      )
    },
    60_000
  )
})

describe("RedisClusterCache circuit breaker", () => {
  it.live(
    "a dead node's failures open the connection's breaker: every call fails at once until a probe finds the cluster whole",
    () =>
      Effect.gen(function* () {
        const cluster = theCluster()
        yield* cluster.waitHealthy
        const keyPrefix = `${unique("br")}:`
        const cache = yield* buildCache(
          RedisClusterCache.layer({
            nodes: nodes(),
            keyPrefix,
            commandTimeout: "300 millis",
            breaker: { failures: 2, interval: "300 millis" }
          })
        )
        const slots = yield* slotsOfAll
        const onDead = keyOnClusterNode(slots, 2, keyPrefix, "dead-")
        const onLive = keyOnClusterNode(slots, 0, keyPrefix, "live-")
        expect(yield* cache.set(onLive, value(1, "one"), { ttl })).toBe("written")
        const shortCircuits = Metrics.total(Metrics.breakerShortCircuits, { tier: "cache" })
        const before = yield* shortCircuits
        yield* cluster.kill(2)
        for (let i = 0; i < 2; i++) expect(yield* Effect.flip(cache.get(onDead))).toMatchObject({ _tag: "CacheError" })
        // Open: a key on a live node is refused too, without a command sent.
        const refused = yield* Effect.flip(cache.get(onLive))
        expect(refused.cause).toMatchObject({ _tag: "CircuitOpen", tier: "cache" })
        expect((yield* shortCircuits) - before).toBeGreaterThanOrEqual(1)
        yield* cluster.start(2)
        yield* cluster.waitHealthy
        // A probe after the interval closes it once the node answers again.
        yield* eventually(cache.get(onLive), (got) => expect(got).toEqual(Option.some(value(1, "one"))))
        expect(yield* cache.get(onDead)).toEqual(Option.none())
      }).pipe(Effect.scoped),
    60_000
  )
})

describe("RedisClusterCache with the near tier", () => {
  // Two processes' caches on one prefix: B serves from its own memory, and hears of A's writes.
  it.scopedLive("a write in one instance reaches another's near tier through the cluster's announcements", () =>
    Effect.gen(function* () {
      const keyPrefix = `${unique("near")}:`
      const a = yield* buildCache(RedisClusterCache.layer({ nodes: nodes(), keyPrefix, near: {} }))
      const b = yield* buildCache(RedisClusterCache.layer({ nodes: nodes(), keyPrefix, near: {} }))
      const raw = yield* rawNodes
      const slots = yield* slotsOfAll
      // One key on each node: announcements from every node reach B's subscription, wherever it is.
      for (const index of [0, 1, 2]) {
        const key = keyOnClusterNode(slots, index, keyPrefix, `k${index}-`)
        expect(yield* a.set(key, value(1, "v1"), { ttl })).toBe("written")
        expect(yield* b.get(key)).toEqual(Option.some(value(1, "v1")))
        // Behind the library's back: B does not see it, it serves its own copy.
        yield* Effect.promise(() => raw[index]!.set(keyPrefix + key, "v9:behind its back"))
        expect(yield* b.get(key)).toEqual(Option.some(value(1, "v1")))
        // A's write is announced: B drops its copy and reads the new entry from the cluster.
        expect(yield* a.set(key, value(10, "v10"), { ttl })).toBe("written")
        yield* eventually(b.get(key), (got) => expect(got).toEqual(Option.some(value(10, "v10"))))
      }
    })
  )

  // Strict mode: B's copy is gone when A's write returns, on every node, and B's tier serves only
  // while its heartbeats come back through every master.
  it.scopedLive("strict: a write on any node returns only once the other instance holding the key dropped it", () =>
    Effect.gen(function* () {
      const keyPrefix = `${unique("strict")}:`
      const strict = { mode: "strict", lease: Duration.millis(300) } as const
      const instance = Effect.map(
        Layer.build(RedisClusterCache.layer({ nodes: nodes(), keyPrefix, near: strict })),
        (context) => ({
          cache: Context.get(context, Cache.Cache),
          stats: Context.get(context, RedisCache.NearTierStats)
        })
      )
      const a = yield* instance
      const b = yield* instance
      yield* eventually(b.stats.serving, (serving) => expect(serving).toBe(true))
      const slots = yield* slotsOfAll
      for (const index of [0, 1, 2]) {
        const key = keyOnClusterNode(slots, index, keyPrefix, `k${index}-`)
        expect(yield* a.cache.set(key, value(1, "v1"), { ttl })).toBe("written")
        expect(yield* b.cache.get(key)).toEqual(Option.some(value(1, "v1")))
        expect(b.cache.peek?.(key)).toEqual(value(1, "v1"))
        expect(yield* a.cache.set(key, value(2, "v2"), { ttl })).toBe("written")
        expect(b.cache.peek?.(key)).toBeUndefined()
        expect(yield* b.cache.get(key)).toEqual(Option.some(value(2, "v2")))
      }
      expect((yield* a.stats.holders).acknowledged).toBe(3)
      expect((yield* a.stats.holders).leaseExpired).toBe(0)
    })
  )

  it.scopedLive(
    "a node that fails empties the near tier: no copy outlives the node's memory",
    () =>
      Effect.gen(function* () {
        const keyPrefix = `${unique("nearfail")}:`
        const b = yield* buildCache(RedisClusterCache.layer({ nodes: nodes(), keyPrefix, near: {} }))
        const slots = yield* slotsOfAll
        const onRestarted = keyOnClusterNode(slots, 1, keyPrefix, "r-")
        const onOther = keyOnClusterNode(slots, 0, keyPrefix, "o-")
        expect(yield* b.set(onRestarted, value(1, "v1"), { ttl })).toBe("written")
        expect(yield* b.set(onOther, value(1, "v1"), { ttl })).toBe("written")
        const cluster = theCluster()
        yield* cluster.kill(1)
        yield* cluster.start(1)
        yield* cluster.waitHealthy
        // The node came back empty, and B's copy went with the tier: the entry is gone, not served from memory.
        yield* eventually(b.get(onRestarted), (got) => expect(got).toEqual(Option.none()))
        // The other node kept its entry; B reads it from there again.
        expect(yield* b.get(onOther)).toEqual(Option.some(value(1, "v1")))
      }).pipe(Effect.timeout("60 seconds")),
    90_000
  )
})

describe("RedisClusterCache.layerConfig", () => {
  it.scoped("reads the nodes from Config (some of them: the rest are discovered); a missing one is a ConfigError", () =>
    Effect.gen(function* () {
      const cluster = theCluster()
      yield* cluster.waitHealthy
      const keyPrefix = `${unique("cfg")}:`
      const config = { nodes: Config.array(Config.string(), "NODES"), keyPrefix: Config.string("PREFIX") }
      const provider = ConfigProvider.fromMap(
        new Map([
          ["NODES", `127.0.0.1:${cluster.ports[0]},127.0.0.1:${cluster.ports[1]}`],
          ["PREFIX", keyPrefix]
        ])
      )
      const cache = yield* buildCache(RedisClusterCache.layerConfig(config)).pipe(Effect.withConfigProvider(provider))
      const slots = yield* slotsOfAll
      const keys = [0, 1, 2].map((n) => keyOnClusterNode(slots, n, keyPrefix, `cfg-${n}-`))
      for (const [n, key] of keys.entries()) {
        expect(yield* cache.set(key, value(n + 1, `on node ${n}`), { ttl })).toBe("written")
      }
      // Another client, given every node and the same prefix, sees the same entries.
      const other = yield* buildCache(RedisClusterCache.layer({ nodes: nodes(), keyPrefix }))
      expect(yield* other.getMany(keys)).toEqual(keys.map((_, n) => Option.some(value(n + 1, `on node ${n}`))))

      const missing = yield* Layer.build(RedisClusterCache.layerConfig(config)).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["PREFIX", keyPrefix]]))),
        Effect.flip
      )
      expect(ConfigError.isConfigError(missing)).toBe(true)
      expect(String(missing)).toContain("NODES")
    })
  )
})

describe("RedisClusterCache.layer", () => {
  // The 16384 markers are sent at once when the layer is built: connectTimeout bounds them together, not
  // commandTimeout each (a node that stalls longer than commandTimeout, here CLIENT PAUSE WRITE for 1 s,
  // or merely a burst of scripts slower than a short timeout, must not fail the layer).
  it.live(
    "a node stalling for longer than commandTimeout while the slots are marked does not fail the layer: connectTimeout bounds it",
    () =>
      Effect.gen(function* () {
        const cluster = theCluster()
        yield* cluster.waitHealthy
        const clients = yield* rawNodes
        // Node 2 is left out of the startup nodes, so that only the marking of its slots waits for it.
        const startup = nodes().slice(0, 2)
        // Writes only (scripts included): connecting, which only reads, is not held up; marking is.
        yield* Effect.acquireRelease(
          Effect.promise(() => clients[2]!.call("CLIENT", "PAUSE", "1000", "WRITE")),
          () => Effect.promise(() => clients[2]!.call("CLIENT", "UNPAUSE"))
        )
        const exit = yield* Layer.build(
          RedisClusterCache.layer({
            nodes: startup,
            keyPrefix: `${unique("stall")}:`,
            commandTimeout: "300 millis",
            connectTimeout: "10 seconds"
          })
        ).pipe(Effect.scoped, Effect.exit)
        expect(Exit.isSuccess(exit) ? "built" : Cause.pretty(exit.cause)).toBe("built")
      }).pipe(Effect.scoped),
    30_000
  )

  it.live(
    "an unreachable cluster fails the layer with a CacheConnectionError naming the node, within connectTimeout",
    () =>
      Effect.gen(function* () {
        // Nothing listens: refused at once.
        const port = yield* freePort
        const started = Date.now()
        const refused = yield* Layer.build(
          RedisClusterCache.layer({ nodes: [`127.0.0.1:${port}`], connectTimeout: "1 second" })
        ).pipe(Effect.scoped, Effect.flip)
        expect(Date.now() - started).toBeLessThan(2_500)
        expect(refused._tag).toBe("CacheConnectionError")
        expect(refused.message).toContain(`127.0.0.1:${port}`)

        // A node that accepts connections and never answers: only connectTimeout ends the wait.
        const hung = yield* hungServer
        const waited = Date.now()
        const silent = yield* Layer.build(
          RedisClusterCache.layer({ nodes: [`127.0.0.1:${hung}`], connectTimeout: "1 second" })
        ).pipe(Effect.scoped, Effect.flip)
        const elapsed = Date.now() - waited
        expect(silent._tag).toBe("CacheConnectionError")
        expect(silent.message).toContain(`127.0.0.1:${hung}`)
        expect(elapsed).toBeGreaterThanOrEqual(900)
        expect(elapsed).toBeLessThan(2_500)
      }).pipe(Effect.scoped)
  )
})

/** A server on a free port of 127.0.0.1 that reads what it is sent and never answers, for the current scope. */
const hungServer: Effect.Effect<number, never, Scope.Scope> = Effect.acquireRelease(
  Effect.async<{ server: net.Server; sockets: Set<net.Socket> }>((resume) => {
    const sockets = new Set<net.Socket>()
    const server = net.createServer((socket) => {
      sockets.add(socket)
      socket.on("error", () => {})
      socket.on("close", () => sockets.delete(socket))
      socket.resume()
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, sockets })))
  }),
  ({ server, sockets }) =>
    Effect.async<void>((resume) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resume(Effect.void))
    })
).pipe(Effect.map(({ server }) => (server.address() as net.AddressInfo).port))

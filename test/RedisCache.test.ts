import { describe, expect, it } from "@effect/vitest"
import {
  Config,
  ConfigError,
  ConfigProvider,
  Context,
  Duration,
  Effect,
  Layer,
  Option,
  Redacted,
  Schedule,
  type Scope
} from "effect"
import * as net from "node:net"
import { Cache, Metrics, RedisCache } from "../src/index.js"
import { coalescing } from "../src/internal/redis/client.js"
import { FaultyCache } from "../src/testing.js"
import { cacheContract } from "./contract/CacheContract.js"
import { startRedisServer } from "./support/redisServer.js"
import { rawRedis, redisCacheLayer, redisUrl, unique } from "./support/services.js"
import { tombstone, value } from "./support/fixtures.js"

cacheContract("RedisCache", () => redisCacheLayer(unique("contract")))

// The fault injector with nothing armed is the cache it wraps.
cacheContract("FaultyCache over RedisCache, nothing armed", () =>
  FaultyCache.layer.pipe(Layer.provide(redisCacheLayer(unique("contract"))))
)

/** Builds a cache for the rest of the current scope. */
const buildCache = <E>(layer: Layer.Layer<Cache.Cache, E>) => Effect.map(Layer.build(layer), Context.get(Cache.Cache))

/** A cache under a fresh key prefix, and that prefix as Redis sees it. */
const prefixedCache = (label: string) =>
  Effect.gen(function* () {
    const prefix = unique(label)
    const cache = yield* buildCache(redisCacheLayer(prefix))
    return { cache, redisKey: (key: string) => `${prefix}:${key}`, prefix }
  })

// --- Local TCP servers the tests start and stop themselves ---------------------------

/** Listens on a free port of 127.0.0.1 for the current scope; every socket is destroyed on release. */
const listen = (
  onConnection: (socket: net.Socket) => void
): Effect.Effect<{ readonly port: number; readonly openSockets: () => number }, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ server: net.Server; sockets: Set<net.Socket>; port: number }>((resume) => {
      const sockets = new Set<net.Socket>()
      const server = net.createServer((socket) => {
        sockets.add(socket)
        socket.on("error", () => {})
        socket.on("close", () => sockets.delete(socket))
        onConnection(socket)
      })
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({ server, sockets, port: (server.address() as net.AddressInfo).port }))
      )
    }),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ port, sockets }) => ({ port, openSockets: () => sockets.size })))

/** A server that accepts connections, reads and discards what it is sent, and never answers: a hung Redis. */
const hungServer = listen((socket) => void socket.resume())

/** A port nothing listens on: taken from the OS, then released. */
const freePort = Effect.scoped(
  Effect.map(
    listen(() => {}),
    ({ port }) => port
  )
)

/**
 * A proxy to the real Redis that can be made to fail: after `blackHole` it holds
 * every connection open but forwards nothing either way; after `cut` it closes
 * every connection and every new one at once.
 */
const blackHoleProxy = Effect.gen(function* () {
  const target = new URL(redisUrl)
  let blackHoled = false
  let cut = false
  const clients = new Set<net.Socket>()
  const upstreams = new Set<net.Socket>()
  yield* Effect.addFinalizer(() => Effect.sync(() => upstreams.forEach((socket) => socket.destroy())))
  const { port } = yield* listen((client) => {
    if (cut) return void client.destroy()
    clients.add(client)
    client.on("close", () => clients.delete(client))
    const upstream = net.connect(Number(target.port || "6379"), target.hostname)
    upstreams.add(upstream)
    upstream.on("error", () => {})
    upstream.on("close", () => {
      upstreams.delete(upstream)
      client.destroy()
    })
    client.on("close", () => upstream.destroy())
    client.on("data", (chunk) => {
      if (!blackHoled) upstream.write(chunk)
    })
    upstream.on("data", (chunk) => {
      if (!blackHoled) client.write(chunk)
    })
  })
  const url = new URL(redisUrl)
  url.hostname = "127.0.0.1"
  url.port = String(port)
  return {
    url: url.toString(),
    blackHole: Effect.sync(() => void (blackHoled = true)),
    cut: Effect.sync(() => {
      cut = true
      for (const socket of [...clients, ...upstreams]) socket.destroy()
    })
  }
})

/** Retries an assertion about eventual state a bounded number of times (no timing is asserted). */
const eventually = <A, E, R>(effect: Effect.Effect<A, E, R>, assertion: (a: A) => void) =>
  Effect.flatMap(effect, (a) => Effect.try(() => assertion(a))).pipe(
    Effect.retry(Schedule.intersect(Schedule.spaced("20 millis"), Schedule.recurs(100))),
    Effect.orDie
  )

const clientNames = (redis: Effect.Effect.Success<typeof rawRedis>) =>
  Effect.promise(() => redis.client("LIST")).pipe(
    Effect.map((list) =>
      String(list)
        .split("\n")
        .flatMap((line) => /(?:^| )name=(\S*)/.exec(line)?.slice(1) ?? [])
    )
  )

describe("RedisCache", () => {
  describe("wire format", () => {
    it.scoped("a value is stored under the key prefix as v<version>:<payload> with a PX TTL", () =>
      Effect.gen(function* () {
        const redis = yield* rawRedis
        const { cache, prefix, redisKey } = yield* prefixedCache("wire")
        expect(yield* cache.set("user:42", value(7, "hello: world\r\n"), { ttl: Duration.minutes(1) })).toBe("written")
        expect(yield* Effect.promise(() => redis.get(redisKey("user:42")))).toBe("v7:hello: world\r\n")
        const keys = yield* Effect.promise(() => redis.keys(`${prefix}:*`))
        expect(keys.sort()).toEqual([`${prefix}:__wt_epoch`, redisKey("user:42")].sort())
        const pttl = yield* Effect.promise(() => redis.pttl(redisKey("user:42")))
        expect(pttl).toBeGreaterThan(55_000)
        expect(pttl).toBeLessThanOrEqual(60_000)
      })
    )

    it.scoped("a tombstone is stored as t<version>: with a PX TTL of its own", () =>
      Effect.gen(function* () {
        const redis = yield* rawRedis
        const { cache, redisKey } = yield* prefixedCache("wire")
        yield* cache.set("k", value(7, "seven"), { ttl: Duration.minutes(2) })
        expect(yield* cache.invalidate("k", 8, Duration.seconds(30))).toBe("written")
        expect(yield* Effect.promise(() => redis.get(redisKey("k")))).toBe("t8:")
        const pttl = yield* Effect.promise(() => redis.pttl(redisKey("k")))
        expect(pttl).toBeGreaterThan(25_000)
        expect(pttl).toBeLessThanOrEqual(30_000)
      })
    )

    it.scoped("a rejected write leaves the stored entry and its TTL as they were", () =>
      Effect.gen(function* () {
        const redis = yield* rawRedis
        const { cache, redisKey } = yield* prefixedCache("wire")
        yield* cache.set("k", value(7, "seven"), { ttl: Duration.seconds(30) })
        expect(yield* cache.set("k", value(6, "six"), { ttl: Duration.minutes(2) })).toBe("rejected")
        expect(yield* cache.invalidate("k", 6, Duration.minutes(2))).toBe("rejected")
        expect(yield* Effect.promise(() => redis.get(redisKey("k")))).toBe("v7:seven")
        expect(yield* Effect.promise(() => redis.pttl(redisKey("k")))).toBeLessThanOrEqual(30_000)
      })
    )

    it.scoped("a TTL below a millisecond is rounded up to one, never to no expiry", () =>
      Effect.gen(function* () {
        const redis = yield* rawRedis
        const { cache, redisKey } = yield* prefixedCache("wire")
        expect(yield* cache.set("k", value(1, "one"), { ttl: Duration.micros(10n) })).toBe("written")
        const pttl = yield* Effect.promise(() => redis.pttl(redisKey("k")))
        // 1 ms left, or already expired (-2); never -1 (no TTL).
        expect([1, 0, -2]).toContain(pttl)
      })
    )

    it.scoped("a stored entry written by another client in the wire format is read back", () =>
      Effect.gen(function* () {
        const redis = yield* rawRedis
        const { cache, redisKey } = yield* prefixedCache("wire")
        yield* Effect.promise(() => redis.set(redisKey("v"), "v12:from: elsewhere", "PX", 60_000))
        yield* Effect.promise(() => redis.set(redisKey("t"), "t13:", "PX", 60_000))
        expect(yield* cache.get("v")).toEqual(Option.some(value(12, "from: elsewhere")))
        expect(yield* cache.get("t")).toEqual(Option.some(tombstone(13)))
        expect(yield* cache.set("v", value(12, "same version"), { ttl: Duration.minutes(2) })).toBe("rejected")
        expect(yield* cache.set("t", value(13, "same version"), { ttl: Duration.minutes(2) })).toBe("rejected")
      })
    )
  })

  describe("foreign writes", () => {
    const foreignWrites: ReadonlyArray<
      readonly [string, (redis: Effect.Effect.Success<typeof rawRedis>, key: string) => Promise<unknown>]
    > = [
      ["a string that is not an entry", (redis, key) => redis.set(key, "not an entry")],
      ["an empty string", (redis, key) => redis.set(key, "")],
      ["a header without digits", (redis, key) => redis.set(key, "v:payload")],
      ["a hash (HSET)", (redis, key) => redis.hset(key, "field", "v99:value")],
      ["a list", (redis, key) => redis.rpush(key, "v99:value")],
      ["a version beyond the safe integers", (redis, key) => redis.set(key, "v9007199254740993:payload")],
      ["a version of more than 16 digits", (redis, key) => redis.set(key, "t123456789012345678901234567890:")]
    ]

    for (const [label, write] of foreignWrites) {
      it.scoped(`${label}: get is a miss, and a set of any version overwrites it`, () =>
        Effect.gen(function* () {
          const redis = yield* rawRedis
          const { cache, redisKey } = yield* prefixedCache("foreign")
          yield* cache.set("k", value(50, "fifty"), { ttl: Duration.minutes(2) })
          yield* Effect.promise(() => redis.del(redisKey("k")))
          yield* Effect.promise(() => write(redis, redisKey("k")))
          expect(yield* cache.get("k")).toEqual(Option.none())
          // Through getOrLease, the same miss, with the lease.
          expect(yield* cache.getOrLease("k", Duration.seconds(5))).toEqual({ entry: Option.none(), leased: true })
          expect(yield* cache.set("k", value(1, "one"), { ttl: Duration.minutes(1) })).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
          expect(yield* Effect.promise(() => redis.type(redisKey("k")))).toBe("string")
          // The repaired entry carries the TTL, though the foreign write had none.
          expect(yield* Effect.promise(() => redis.pttl(redisKey("k")))).toBeGreaterThan(0)
        })
      )

      it.scoped(`${label}: an invalidate of any version overwrites it`, () =>
        Effect.gen(function* () {
          const redis = yield* rawRedis
          const { cache, redisKey } = yield* prefixedCache("foreign")
          yield* Effect.promise(() => write(redis, redisKey("k")))
          expect(yield* cache.invalidate("k", 1, Duration.minutes(1))).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(1)))
        })
      )
    }
  })

  it.scoped("an entry in the wire format without a TTL is read, but any write replaces it and restores the TTL", () =>
    Effect.gen(function* () {
      const redis = yield* rawRedis
      const { cache, redisKey } = yield* prefixedCache("foreign")
      for (const [key, raw] of [
        ["v", "v9007199254740991:from elsewhere"],
        ["t", "t9007199254740991:"]
      ] as const) {
        yield* Effect.promise(() => redis.set(redisKey(key), raw))
        expect(Option.map(yield* cache.get(key), (entry) => entry.version)).toEqual(Option.some(9007199254740991))
      }
      expect(yield* cache.set("v", value(1, "one"), { ttl: Duration.minutes(1) })).toBe("written")
      expect(yield* cache.get("v")).toEqual(Option.some(value(1, "one")))
      expect(yield* cache.invalidate("t", 2, Duration.minutes(1))).toBe("written")
      expect(yield* cache.get("t")).toEqual(Option.some(tombstone(2)))
      for (const key of ["v", "t"]) {
        expect(yield* Effect.promise(() => redis.pttl(redisKey(key)))).toBeGreaterThan(0)
      }
      // With a TTL, the same foreign entry outranks lower versions, as any entry does.
      yield* Effect.promise(() => redis.set(redisKey("v"), "v9007199254740991:from elsewhere", "PX", 60_000))
      expect(yield* cache.set("v", value(3, "three"), { ttl: Duration.minutes(1) })).toBe("rejected")
    })
  )

  describe("getOrLease: one round trip for a miss and its lease", () => {
    it.scoped("of two caches sharing a Redis (two processes), one holds a cold key's lease; the other waits", () =>
      Effect.gen(function* () {
        const redis = yield* rawRedis
        const prefix = unique("lease")
        const a = yield* buildCache(redisCacheLayer(prefix))
        const b = yield* buildCache(redisCacheLayer(prefix))
        const leaseTtl = Duration.seconds(5)
        expect(yield* a.getOrLease("k", leaseTtl)).toEqual({ entry: Option.none(), leased: true })
        expect(yield* b.getOrLease("k", leaseTtl)).toEqual({ entry: Option.none(), leased: false })
        // The lease is the one `lease` asks for, kept under the key's lease key with its TTL.
        expect(yield* b.lease("k", leaseTtl)).toBe(false)
        expect(yield* a.lease("k", leaseTtl)).toBe(true)
        const leaseTtlLeft = yield* Effect.promise(() => redis.pttl(`${prefix}:__wt_lease:k`))
        expect(leaseTtlLeft).toBeGreaterThan(4000)
        expect(leaseTtlLeft).toBeLessThanOrEqual(5000)
        // A hit asks for no lease: the key's lease key is not touched.
        expect(yield* a.set("hot", value(2, "two"), { ttl: Duration.minutes(1) })).toBe("written")
        expect(yield* b.getOrLease("hot", leaseTtl)).toEqual({ entry: Option.some(value(2, "two")), leased: undefined })
        expect(yield* Effect.promise(() => redis.exists(`${prefix}:__wt_lease:hot`))).toBe(0)
      })
    )

    it.live("a lease whose holder went away runs out, and the next reader is granted it", () =>
      Effect.gen(function* () {
        const prefix = unique("lease")
        const a = yield* buildCache(redisCacheLayer(prefix))
        const b = yield* buildCache(redisCacheLayer(prefix))
        expect((yield* a.getOrLease("k", Duration.millis(100))).leased).toBe(true)
        expect((yield* b.getOrLease("k", Duration.millis(100))).leased).toBe(false)
        yield* Effect.sleep(Duration.millis(150))
        expect((yield* b.getOrLease("k", Duration.seconds(5))).leased).toBe(true)
      }).pipe(Effect.scoped)
    )
  })

  describe("coalesced writes", () => {
    // What leaves the socket: a write per chunk (`_write`) or one for a corked batch (`_writev`).
    const countWrites = (socket: net.Socket) => {
      const counts = { write: 0, writev: 0 }
      const target = socket as unknown as Record<"_write" | "_writev", (...args: Array<unknown>) => unknown>
      const write = target._write
      const writev = target._writev
      target._write = (...args) => {
        counts.write++
        return write.apply(socket, args)
      }
      target._writev = (...args) => {
        counts.writev++
        return writev.apply(socket, args)
      }
      return counts
    }

    it.scoped("commands sent in one tick leave in one write; one sent alone still leaves at once", () =>
      Effect.gen(function* () {
        const redis = yield* rawRedis
        const key = unique("coalesced")
        yield* Effect.promise(() => redis.set(key, "v1:one", "PX", 60_000))
        const counts = countWrites(redis.stream as net.Socket)
        const call = coalescing(redis)
        const get = call("get", key, () => redis.get(key))
        const replies = yield* Effect.all(
          Array.from({ length: 20 }, () => get),
          { concurrency: "unbounded" }
        )
        expect(replies).toEqual(Array.from({ length: 20 }, () => "v1:one"))
        expect(counts).toEqual({ write: 0, writev: 1 })
        // Each alone, each answered: nothing waits for a later tick's commands.
        for (let i = 0; i < 3; i++) expect(yield* get).toBe("v1:one")
        expect(counts.write + counts.writev).toBe(4)
        yield* Effect.promise(() => redis.del(key))
      })
    )
  })

  describe("key prefixes", () => {
    it.scoped("two caches with different prefixes do not see each other's keys", () =>
      Effect.gen(function* () {
        const a = yield* prefixedCache("iso_a")
        const b = yield* prefixedCache("iso_b")
        expect(yield* a.cache.set("k", value(5, "from a"), { ttl: Duration.minutes(2) })).toBe("written")
        expect(yield* b.cache.get("k")).toEqual(Option.none())
        // B's guard does not see A's newer version either.
        expect(yield* b.cache.set("k", value(1, "from b"), { ttl: Duration.minutes(2) })).toBe("written")
        expect(yield* b.cache.invalidate("k", 2, Duration.minutes(2))).toBe("written")
        expect(yield* a.cache.get("k")).toEqual(Option.some(value(5, "from a")))
        expect(yield* b.cache.get("k")).toEqual(Option.some(tombstone(2)))
      })
    )

    it.scoped("two caches with the same prefix share their entries and guard", () =>
      Effect.gen(function* () {
        const prefix = unique("shared")
        const a = yield* buildCache(redisCacheLayer(prefix))
        const b = yield* buildCache(redisCacheLayer(prefix))
        expect(yield* a.set("k", value(5, "from a"), { ttl: Duration.minutes(2) })).toBe("written")
        expect(yield* b.get("k")).toEqual(Option.some(value(5, "from a")))
        expect(yield* b.set("k", value(4, "late from b"), { ttl: Duration.minutes(2) })).toBe("rejected")
      })
    )
  })

  describe("configuration", () => {
    it.scoped("accepts the URL as a Redacted", () =>
      Effect.gen(function* () {
        const cache = yield* buildCache(
          RedisCache.layer({ url: Redacted.make(redisUrl), keyPrefix: `${unique("redacted")}:` })
        )
        expect(yield* cache.set("k", value(1, "one"), { ttl: Duration.minutes(1) })).toBe("written")
        expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
      })
    )
  })

  describe("bounded calls", () => {
    it.live("building against a server that accepts and never answers fails with a CacheConnectionError", () =>
      Effect.gen(function* () {
        const server = yield* hungServer
        const url = `redis://127.0.0.1:${server.port}`
        const error = yield* RedisCache.make({ url, connectTimeout: "200 millis", commandTimeout: "200 millis" }).pipe(
          Effect.flip,
          Effect.scoped
        )
        expect(error).toBeInstanceOf(Cache.CacheConnectionError)
        expect(error._tag).toBe("CacheConnectionError")
        expect(error.url).toBe(url)
        expect(error.message).toContain(`127.0.0.1:${server.port}`)
        // The failed build released its connection.
        yield* eventually(Effect.sync(server.openSockets), (open) => expect(open).toBe(0))
      }).pipe(Effect.scoped)
    )

    it.live("commands on a connection that stops answering fail with a Timeout CacheError", () =>
      Effect.gen(function* () {
        const proxy = yield* blackHoleProxy
        // Each command's own bound, without the circuit breaker, which would cut the later calls short.
        const cache = yield* buildCache(
          RedisCache.layer({
            url: proxy.url,
            keyPrefix: `${unique("hung")}:`,
            commandTimeout: "200 millis",
            breaker: false
          })
        )
        // Through the proxy the cache works, first.
        expect(yield* cache.set("k", value(1, "one"), { ttl: Duration.minutes(1) })).toBe("written")
        expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))

        yield* proxy.blackHole
        const getError = yield* Effect.flip(cache.get("k"))
        expect(getError).toBeInstanceOf(Cache.CacheError)
        expect(getError).toMatchObject({ _tag: "CacheError", operation: "get", key: "k", reason: "Timeout" })
        const setError = yield* Effect.flip(cache.set("k", value(2, "two"), { ttl: Duration.minutes(1) }))
        expect(setError).toMatchObject({ _tag: "CacheError", operation: "set", key: "k", reason: "Timeout" })
        const invalidateError = yield* Effect.flip(cache.invalidate("k", 2, Duration.minutes(1)))
        expect(invalidateError).toMatchObject({
          _tag: "CacheError",
          operation: "invalidate",
          key: "k",
          reason: "Timeout"
        })
        // Concurrent calls are each bounded too.
        const errors = yield* Effect.forEach(["a", "b", "c"], (key) => Effect.flip(cache.get(key)), {
          concurrency: "unbounded"
        })
        expect(errors.map((error) => error.reason)).toEqual(["Timeout", "Timeout", "Timeout"])
      }).pipe(Effect.scoped)
    )

    it.live(
      "once calls fail in a row, every call fails at once with the breaker open, and the in-process tier stops serving",
      () =>
        Effect.gen(function* () {
          const proxy = yield* blackHoleProxy
          const cache = yield* buildCache(
            RedisCache.layer({
              url: proxy.url,
              keyPrefix: `${unique("breaker")}:`,
              commandTimeout: "200 millis",
              breaker: { failures: 2, interval: "1 hour" },
              near: {}
            })
          )
          // Held in the in-process tier too, which must not serve it once Redis is unreachable.
          expect(yield* cache.set("k", value(1, "one"), { ttl: Duration.minutes(1) })).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(value(1, "one")))
          const shortCircuits = Metrics.total(Metrics.breakerShortCircuits, { tier: "cache" })
          const shortCircuitsBefore = yield* shortCircuits
          yield* proxy.blackHole
          // Two calls wait out the command timeout and open the breaker.
          for (const key of ["a", "b"]) {
            expect(yield* Effect.flip(cache.get(key))).toMatchObject({ operation: "get", reason: "Timeout" })
          }
          // Then calls are refused without a command sent, the tier's "k" included: the cause says why.
          const calls: ReadonlyArray<Effect.Effect<unknown, Cache.CacheError>> = [
            cache.get("k"),
            cache.getMany(["k", "a"]),
            cache.lease("k", Duration.seconds(1)),
            cache.getOrLease("k", Duration.seconds(1)),
            cache.set("k", value(2, "two"), { ttl: Duration.minutes(1) }),
            cache.invalidate("k", 2, Duration.minutes(1))
          ]
          for (const call of calls) {
            const refused = yield* Effect.flip(call)
            expect(refused).toMatchObject({ _tag: "CacheError", reason: "Unavailable" })
            expect(refused.cause).toMatchObject({ _tag: "CircuitOpen" })
          }
          expect((yield* shortCircuits) - shortCircuitsBefore).toBe(6)
        }).pipe(Effect.scoped)
    )

    it.live("a command issued while the connection is down fails at once, without waiting in an offline queue", () =>
      Effect.gen(function* () {
        const proxy = yield* blackHoleProxy
        // A long command timeout: a queued command would wait it out.
        const cache = yield* buildCache(
          RedisCache.layer({
            url: proxy.url,
            keyPrefix: `${unique("gone")}:`,
            commandTimeout: "10 seconds",
            breaker: false
          })
        )
        expect(yield* cache.set("k", value(1, "one"), { ttl: Duration.minutes(1) })).toBe("written")

        // Redis goes away: every connection is cut and every reconnect refused. A command written
        // before ioredis saw its socket close waits for a reconnection, bounded by the command
        // timeout; once it saw it, no command waits.
        yield* proxy.cut
        yield* eventually(Effect.timeout(Effect.flip(cache.get("seen")), "100 millis"), (error) =>
          expect(error.reason).toBe("Unavailable")
        )
        const started = Date.now()
        const errors = yield* Effect.all(
          [
            Effect.flip(cache.get("k")),
            Effect.flip(cache.set("k", value(2, "two"), { ttl: Duration.minutes(1) })),
            Effect.flip(cache.invalidate("k", 2, Duration.minutes(1)))
          ],
          { concurrency: "unbounded" }
        )
        expect(errors.map(({ operation, reason }) => [operation, reason])).toEqual([
          ["get", "Unavailable"],
          ["set", "Unavailable"],
          ["invalidate", "Unavailable"]
        ])
        for (const error of errors) expect(error).toBeInstanceOf(Cache.CacheError)
        // Far below the 10 seconds a queued command would have waited.
        expect(Date.now() - started).toBeLessThan(5_000)
      }).pipe(Effect.scoped)
    )

    it.live("an unreachable URL fails the build with a CacheConnectionError naming the address", () =>
      Effect.gen(function* () {
        const port = yield* freePort
        const error = yield* Effect.flip(
          Effect.scoped(Layer.build(RedisCache.layer({ url: `redis://127.0.0.1:${port}` })))
        )
        expect(error).toBeInstanceOf(Cache.CacheConnectionError)
        expect(error.message).toContain(`127.0.0.1:${port}`)
      })
    )

    it.live("a password in the URL is not shown in the connection error", () =>
      Effect.gen(function* () {
        const port = yield* freePort
        for (const url of [
          `redis://:s3cret-pw@127.0.0.1:${port}`,
          `redis://alice:s3cret-pw@127.0.0.1:${port}/2`,
          Redacted.make(`redis://alice:s3cret-pw@127.0.0.1:${port}`)
        ]) {
          const error = yield* Effect.flip(Effect.scoped(RedisCache.make({ url, connectTimeout: "2 seconds" })))
          expect(error).toBeInstanceOf(Cache.CacheConnectionError)
          expect(error.message).toContain(`127.0.0.1:${port}`)
          expect(error.message).toContain("***")
          expect(error.message).not.toContain("s3cret-pw")
          expect(error.url).not.toContain("s3cret-pw")
          expect(String(error)).not.toContain("s3cret-pw")
        }
      })
    )
  })

  describe("lifecycle", () => {
    it.live("closing the layer's scope releases its connection", () =>
      Effect.gen(function* () {
        const redis = yield* rawRedis
        const connectionName = unique("wt_conn")
        const layer = RedisCache.layer({ url: redisUrl, keyPrefix: `${connectionName}:`, redis: { connectionName } })
        yield* Effect.scoped(
          Effect.gen(function* () {
            const cache = yield* buildCache(layer)
            yield* cache.set("k", value(1, "one"), { ttl: Duration.minutes(1) })
            expect(yield* clientNames(redis)).toContain(connectionName)
          })
        )
        yield* eventually(clientNames(redis), (names) => expect(names).not.toContain(connectionName))
      }).pipe(Effect.scoped)
    )
  })
})

describe("RedisCache epochs: the guard must not trust a cache that lost its memory", () => {
  it.scoped("the epoch marker is created on connect; when it vanishes, older tickets are outdated", () =>
    Effect.gen(function* () {
      const redis = yield* rawRedis
      const { cache, prefix, redisKey } = yield* prefixedCache("epoch")
      const epochKey = `${prefix}:__wt_epoch`
      const before = yield* cache.ticket(Duration.seconds(30))
      expect(yield* Effect.promise(() => redis.get(epochKey))).toBe(before.epoch)
      // What a restart, a flush or an eviction does: the marker and the entries go together.
      yield* Effect.promise(() => redis.del(epochKey))
      expect(yield* cache.set("k", value(9, "old fill"), { ttl: Duration.minutes(1), ticket: before })).toBe("outdated")
      expect(yield* Effect.promise(() => redis.get(redisKey("k")))).toBeNull()
      const after = yield* cache.ticket(Duration.seconds(30))
      expect(after.epoch).not.toBe(before.epoch)
      expect(yield* Effect.promise(() => redis.get(epochKey))).toBe(after.epoch)
      expect(yield* cache.set("k", value(9, "new"), { ttl: Duration.minutes(1), ticket: after })).toBe("written")
    })
  )

  it.scoped("two caches sharing a Redis agree on the epoch, and each learns a new one from a refusal", () =>
    Effect.gen(function* () {
      const redis = yield* rawRedis
      const prefix = unique("epoch2")
      const a = yield* Layer.build(redisCacheLayer(prefix)).pipe(Effect.map(Context.get(Cache.Cache)))
      const b = yield* Layer.build(redisCacheLayer(prefix)).pipe(Effect.map(Context.get(Cache.Cache)))
      const ticketA = yield* a.ticket(Duration.seconds(30))
      expect((yield* b.ticket(Duration.seconds(30))).epoch).toBe(ticketA.epoch)
      yield* Effect.promise(() => redis.del(`${prefix}:__wt_epoch`))
      expect(
        yield* b.set("k", value(1, "b"), { ttl: Duration.minutes(1), ticket: yield* b.ticket(Duration.seconds(30)) })
      ).toBe("outdated")
      expect(yield* a.set("k", value(2, "a"), { ttl: Duration.minutes(1), ticket: ticketA })).toBe("outdated")
      const fresh = yield* a.ticket(Duration.seconds(30))
      expect(fresh.epoch).toBe((yield* b.ticket(Duration.seconds(30))).epoch)
      expect(yield* a.set("k", value(2, "a"), { ttl: Duration.minutes(1), ticket: fresh })).toBe("written")
    })
  )

  it.live(
    "a real restart: a write or fill whose ticket predates it is refused, so an old value cannot land in the empty cache",
    () =>
      Effect.gen(function* () {
        const server = yield* startRedisServer
        const cache = yield* Layer.build(RedisCache.layer({ url: server.url, commandTimeout: "500 millis" })).pipe(
          Effect.map(Context.get(Cache.Cache))
        )
        yield* cache.set("k", value(2, "newer"), {
          ttl: Duration.minutes(1),
          ticket: yield* cache.ticket(Duration.seconds(30))
        })
        // A fill of version 1 read the database before version 2 was written; it is still in flight when Redis restarts.
        const lateTicket = yield* cache.ticket(Duration.seconds(30))
        yield* server.kill
        yield* server.start
        const outcome = yield* cache
          .set("k", value(1, "older"), { ttl: Duration.minutes(1), ticket: lateTicket })
          .pipe(Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo("10 seconds"))))
        expect(outcome).toBe("outdated")
        expect(yield* cache.get("k")).toEqual(Option.none())
      }).pipe(Effect.scoped)
  )
})

describe("RedisCache.layerConfig", () => {
  it.scoped("reads the URL and the prefix from Config; a bad value is a ConfigError", () =>
    Effect.gen(function* () {
      const prefix = unique("config")
      const config = { url: Config.redacted("REDIS_URL"), keyPrefix: Config.string("CACHE_PREFIX") }
      const provider = ConfigProvider.fromMap(
        new Map([
          ["REDIS_URL", redisUrl],
          ["CACHE_PREFIX", `${prefix}:`]
        ])
      )
      const cache = yield* Layer.build(RedisCache.layerConfig(config)).pipe(
        Effect.map(Context.get(Cache.Cache)),
        Effect.withConfigProvider(provider)
      )
      yield* cache.set("k", value(1, "from config"), { ttl: Duration.minutes(1) })
      const redis = yield* rawRedis
      expect(yield* Effect.promise(() => redis.get(`${prefix}:k`))).toBe("v1:from config")
      const missing = yield* Layer.build(RedisCache.layerConfig(config)).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map())),
        Effect.flip
      )
      expect(ConfigError.isConfigError(missing)).toBe(true)
    })
  )
})

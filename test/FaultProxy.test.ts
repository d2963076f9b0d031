// The fault proxy the chaos workload puts in front of Redis, against a redis-server of this file's own.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import type { EventEmitter } from "node:events"
import { performance } from "node:perf_hooks"
import { Redis, type RedisOptions } from "ioredis"
import { type FaultProxy, faultProxy } from "./chaos/faultProxy.js"
import { startRedisServer } from "./support/redisServer.js"

/** An ioredis client for the current scope, and every 'error' event it emitted (ECONNRESET and the like). */
const client = (url: string, options: RedisOptions = {}) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const redis = new Redis(url, { commandTimeout: 2000, maxRetriesPerRequest: 1, ...options })
      const errors: Array<NodeJS.ErrnoException> = []
      redis.on("error", (error: NodeJS.ErrnoException) => errors.push(error))
      return { redis, errors }
    }),
    ({ redis }) => Effect.sync(() => redis.disconnect())
  )

/** A redis-server, the proxy in front of it, and a client that bypasses the proxy. */
const setup = Effect.gen(function* () {
  const server = yield* startRedisServer
  const proxy = yield* faultProxy({ host: "127.0.0.1", port: server.port })
  const { redis: direct } = yield* client(server.url)
  return { server, proxy, direct }
})

/** A command as an Effect whose failure is the command's error. */
const run = <A>(command: () => Promise<A>) => Effect.tryPromise({ try: command, catch: (error) => error as Error })

/** Subscribes now, so an event emitted before the Effect is run is not missed. */
const nextEvent = (emitter: EventEmitter, event: string) => {
  const promise = new Promise<void>((resolve) => emitter.once(event, () => resolve()))
  return Effect.promise(() => promise)
}

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function* () {
    const start = performance.now()
    const result = yield* effect
    return { result, elapsed: performance.now() - start }
  })

const delay = (millis: number) => ({ _tag: "Delay", millis }) as const
const pass = { _tag: "Pass" } as const
const blackhole = { _tag: "Blackhole" } as const

/** A client through the proxy that has finished connecting. */
const connected = (proxy: FaultProxy, options: RedisOptions = {}) =>
  Effect.tap(client(proxy.url, options), ({ redis }) => run(() => redis.ping()))

describe("FaultProxy", () => {
  it.scopedLive("Pass: commands round-trip", () =>
    Effect.gen(function* () {
      const { proxy } = yield* setup
      const { redis } = yield* connected(proxy)
      expect(proxy.url).toBe(`redis://127.0.0.1:${proxy.port}`)
      expect(yield* run(() => redis.set("k", "v"))).toBe("OK")
      expect(yield* run(() => redis.get("k"))).toBe("v")
      expect(proxy.stats()).toEqual({ accepted: 1, open: 1, resets: 0 })
    })
  )

  it.scopedLive("Delay: each direction waits the delay, and replies keep their order", () =>
    Effect.gen(function* () {
      const { proxy, direct } = yield* setup
      const { redis } = yield* connected(proxy)
      yield* run(() => direct.set("k", "v"))
      proxy.setMode(delay(200))
      expect(proxy.mode()).toEqual(delay(200))

      const { result, elapsed } = yield* timed(run(() => redis.get("k")))
      expect(result).toBe("v")
      // The request and the reply are each held 200 ms (1 ms of slack for clock rounding).
      expect(elapsed).toBeGreaterThanOrEqual(399)

      const pipeline = redis.pipeline()
      for (let i = 0; i < 50; i++) pipeline.incr("counter")
      const replies = yield* run(() => pipeline.exec())
      expect(replies).toEqual(Array.from({ length: 50 }, (_, i) => [null, i + 1]))
    })
  )

  it.scopedLive("Delay: bytes keep their order when the delay changes mid-stream", () =>
    Effect.gen(function* () {
      const { proxy } = yield* setup
      const { redis } = yield* connected(proxy)
      // A longer delay before a shorter one would reorder the APPENDs if each chunk had a timer of its own.
      // The sleeps only put the commands in separate chunks; the outcome does not depend on their length.
      const modes = [delay(300), delay(10), delay(200), pass, delay(100), delay(0)]
      const replies: Array<Promise<number>> = []
      for (const [i, mode] of modes.entries()) {
        proxy.setMode(mode)
        replies.push(redis.append("s", String.fromCharCode(97 + i)))
        yield* Effect.sleep("20 millis")
      }
      proxy.setMode(pass)
      expect(yield* run(() => Promise.all(replies))).toEqual([1, 2, 3, 4, 5, 6])
      expect(yield* run(() => redis.get("s"))).toBe("abcdef")
    })
  )

  it.scopedLive("Blackhole: commands time out, and what was sent arrives once it lifts", () =>
    Effect.gen(function* () {
      const { proxy, direct } = yield* setup
      const { redis } = yield* connected(proxy, { commandTimeout: 300 })
      yield* run(() => direct.set("k", "v"))
      proxy.setMode(blackhole)

      const timedOut = yield* Effect.flip(run(() => redis.get("k")))
      expect(timedOut.message).toBe("Command timed out")
      const lateWrite = yield* Effect.flip(run(() => redis.set("late", "arrives")))
      expect(lateWrite.message).toBe("Command timed out")
      expect(yield* run(() => direct.get("late"))).toBeNull()

      proxy.setMode(pass)
      // On the same connection, after the held SET: when it answers, the SET has been applied.
      expect(yield* run(() => redis.get("late"))).toBe("arrives")
      expect(yield* run(() => direct.get("late"))).toBe("arrives")
      expect(proxy.stats()).toMatchObject({ accepted: 1, resets: 0 })
    })
  )

  it.scopedLive("resetConnections: the client's connection breaks and it reconnects through the proxy", () =>
    Effect.gen(function* () {
      const { proxy } = yield* setup
      const { redis, errors } = yield* connected(proxy)
      const closed = nextEvent(redis, "close")
      const readyAgain = nextEvent(redis, "ready")

      expect(proxy.resetConnections()).toBe(1)
      yield* closed
      expect(errors.map((error) => error.code)).toContain("ECONNRESET")
      yield* readyAgain
      expect(yield* run(() => redis.ping())).toBe("PONG")
      expect(proxy.stats()).toEqual({ accepted: 2, open: 1, resets: 1 })
    })
  )

  it.scopedLive("the client side closes when the upstream server dies", () =>
    Effect.gen(function* () {
      const { proxy, server } = yield* setup
      const { redis } = yield* connected(proxy)
      const closed = nextEvent(redis, "close")
      yield* server.kill
      yield* closed

      const readyAgain = nextEvent(redis, "ready")
      yield* server.start
      yield* readyAgain
      expect(yield* run(() => redis.ping())).toBe("PONG")
    })
  )

  it.scopedLive("close: resolves with open connections and held bytes, and closes the clients", () =>
    Effect.gen(function* () {
      const { proxy } = yield* setup
      const { redis } = yield* connected(proxy, { commandTimeout: 5000, maxRetriesPerRequest: 0 })
      proxy.setMode(blackhole)
      const held = redis.get("k").then(
        () => "answered",
        (error: Error) => error.message
      )
      const closed = nextEvent(redis, "close")

      // The timeout only turns a hang into a failure.
      yield* Effect.promise(() => proxy.close()).pipe(
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("close() hung") })
      )
      expect(proxy.stats().open).toBe(0)
      yield* closed
      expect(yield* Effect.promise(() => held)).not.toBe("answered")
      yield* Effect.promise(() => proxy.close())
    })
  )
})

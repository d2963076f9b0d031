// The change feed through outages: Redis frozen, Redis restarted empty, PostgreSQL restarted (a
// private server of the test's own). Changes committed meanwhile reach the cache once both answer
// again; none is lost.
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option, Redacted } from "effect"
import { Cache, RedisCache } from "../src/index.js"
import { captureObjects, capturedUsersTable, captureStore, eventually, usersOn } from "./support/changeCapture.js"
import { User, user } from "./support/fixtures.js"
import { startPostgresServer } from "./support/postgresServer.js"
import { startRedisServer } from "./support/redisServer.js"
import { PgLive } from "./support/services.js"

const keys = Array.from({ length: 10 }, (_, i) => `k${i}`)

/** The users entity over a capturing store (its breaker quick to close again) and `cache`. */
const usersOver = (cache: Cache.Cache.Service) =>
  Effect.gen(function* () {
    const objects = yield* captureObjects
    const store = yield* captureStore(objects, {}, { breaker: { interval: "200 millis" } })
    const { table } = yield* capturedUsersTable(store)
    const users = yield* usersOn(table, cache, store, { cacheTimeout: "300 millis" })
    yield* Effect.forEach(keys, (key) => users.set(key, user(key, "library")), { discard: true })
    const sql = yield* SqlClient.SqlClient
    const updateAll = (name: string) =>
      sql.unsafe(`UPDATE "${table}" SET name = $1 WHERE id = ANY($2)`, [name, keys]).raw
    const allRead = (name: string) =>
      eventually(
        Effect.filterOrFail(
          Effect.forEach(keys, (key) => users.get(key)),
          (found: ReadonlyArray<Option.Option<User>>) => found.every((one) => Option.getOrThrow(one).name === name)
        ),
        15_000
      )
    return { users, updateAll, allRead }
  })

const privateRedisCache = Effect.gen(function* () {
  const server = yield* startRedisServer
  const layer = RedisCache.layer({ url: server.url, commandTimeout: "300 millis", breaker: { interval: "200 millis" } })
  return { server, cache: Context.get(yield* Layer.build(layer), Cache.Cache) }
})

describe("ChangeCapture through outages", () => {
  it.live(
    "Redis frozen while plain SQL changes every key: once thawed (with the old entries), the feed lands them all",
    () =>
      Effect.gen(function* () {
        const { server, cache } = yield* privateRedisCache
        const { updateAll, allRead } = yield* usersOver(cache)
        yield* server.freeze
        yield* updateAll("outside")
        // The feed fails meanwhile and keeps its position.
        yield* Effect.sleep("700 millis")
        yield* server.thaw
        yield* allRead("outside")
      }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live("Redis restarted empty: the feed goes on with the changes made after it", () =>
    Effect.gen(function* () {
      const { server, cache } = yield* privateRedisCache
      const { users, updateAll, allRead } = yield* usersOver(cache)
      yield* server.kill
      yield* updateAll("while down")
      yield* server.start
      yield* allRead("while down")
      // Cached again once the cache's breaker let writes through, and changed again outside.
      yield* Effect.forEach(keys, (key) => eventually(users.set(key, user(key, "library"))), { discard: true })
      yield* updateAll("after")
      yield* allRead("after")
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live("PostgreSQL restarted while changes wait in the outbox: none is lost, and the feed goes on", () =>
    Effect.gen(function* () {
      const server = yield* startPostgresServer
      const pg = PgClient.layer({
        url: Redacted.make(server.url),
        connectTimeout: Duration.seconds(2),
        maxConnections: 4
      })
      yield* Effect.gen(function* () {
        const frozenRedis = yield* privateRedisCache
        const { updateAll, allRead } = yield* usersOver(frozenRedis.cache)
        // The feed cannot apply them: they wait in the outbox across the restart.
        yield* frozenRedis.server.freeze
        yield* updateAll("before the restart")
        yield* server.stop
        yield* server.start
        yield* frozenRedis.server.thaw
        yield* allRead("before the restart")
        yield* updateAll("after the restart")
        yield* allRead("after the restart")
      }).pipe(Effect.scoped, Effect.provide(pg))
      expect(server.port).toBeGreaterThan(0)
    }).pipe(Effect.scoped)
  )
})

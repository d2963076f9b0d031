// Change capture against the real PostgreSQL and Redis: changes made with plain SQL (INSERT, UPDATE,
// DELETE, a key changed in place) reach the cache; the library's own writes keep their entries; a
// consumer stopped and restarted catches up from its durable position; another process takes the
// feed over when its consumer stops.
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Option, Scope } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Cache, Metrics, type Store } from "../src/index.js"
import {
  captureObjects,
  capturedUsersTable,
  captureStore,
  entryOf,
  eventually,
  usersOn
} from "./support/changeCapture.js"
import { User, user } from "./support/fixtures.js"
import { PgLive, rawRedis, redisCacheLayer, unique } from "./support/services.js"

/** The users entity over a capturing store and a Redis cache of the test's own prefix. */
const capturedUsers = Effect.gen(function* () {
  const objects = yield* captureObjects
  const store = yield* captureStore(objects)
  const { table } = yield* capturedUsersTable(store)
  const prefix = unique("cc")
  const cache = Context.get(yield* Layer.build(redisCacheLayer(prefix)), Cache.Cache)
  const usersOf = (onStore: Store.Store.Service) => usersOn(table, cache, onStore)
  const redis = yield* rawRedis
  const sql = yield* SqlClient.SqlClient
  const cacheKey = (key: string) => `${prefix}:${table}:${key}`
  return { objects, store, table, cache, usersOf, redis, sql, cacheKey }
})

const writerPath = fileURLToPath(new URL("./changeCapture/writer.ts", import.meta.url))

/** Runs the writer process until `until` holds, then SIGKILLs it; what it printed. */
const killWriterWhen = <E, R>(args: ReadonlyArray<string>, until: Effect.Effect<unknown, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, ["--import", "tsx", writerPath, ...args], {
        stdio: ["ignore", "pipe", "pipe"]
      })
      const output = { text: "" }
      child.stdout.on("data", (chunk: Buffer) => void (output.text += chunk.toString()))
      child.stderr.on("data", (chunk: Buffer) => void (output.text += chunk.toString()))
      return { child, output }
    }),
    ({ output }) =>
      Effect.zipRight(
        eventually(
          Effect.filterOrFail(
            Effect.sync(() => output.text),
            (text) => text.includes("ready")
          ),
          30_000
        ).pipe(Effect.mapError(() => new Error(`the writer did not get ready:\n${output.text}`))),
        Effect.as(eventually(until, 10_000), output)
      ),
    ({ child }) =>
      Effect.async<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        child.kill("SIGKILL")
      })
  )

describe("ChangeCapture", () => {
  it.live("plain INSERT, UPDATE, DELETE and a key changed in place reach the cache", () =>
    Effect.gen(function* () {
      const { store, table, usersOf, redis, sql, cacheKey } = yield* capturedUsers
      const users = yield* usersOf(store)
      yield* users.set("a", user("a", "Ada"))
      yield* users.set("b", user("b", "Bob"))
      expect(Option.getOrThrow(yield* users.get("a")).name).toBe("Ada")

      yield* sql.unsafe(`UPDATE "${table}" SET name = 'outside' WHERE id = 'a'`).raw
      yield* eventually(Effect.filterOrFail(users.get("a"), (found) => Option.getOrThrow(found).name === "outside"))

      yield* sql.unsafe(`DELETE FROM "${table}" WHERE id = 'a'`).raw
      yield* eventually(Effect.filterOrFail(users.get("a"), Option.isNone))

      // An INSERT without a version gets one from the version trigger.
      yield* sql.unsafe(`INSERT INTO "${table}" (id, name, email) VALUES ('a', 'again', 'a@example.com')`).raw
      yield* eventually(Effect.filterOrFail(users.get("a"), (found) => Option.getOrThrow(found).name === "again"))

      // The row moves from b to c: b is gone.
      expect(Option.getOrThrow(yield* users.get("b")).name).toBe("Bob")
      yield* sql.unsafe(`UPDATE "${table}" SET id = 'c' WHERE id = 'b'`).raw
      yield* eventually(Effect.filterOrFail(users.get("b"), Option.isNone))
      expect(Option.getOrThrow(yield* users.get("c")).name).toBe("Bob")
      const entry = yield* entryOf(redis, cacheKey("c"))
      expect(entry?._tag).toBe("Value")
      // Each change counted, with its lag: the library's two writes and the five rows changed outside.
      yield* eventually(Effect.filterOrFail(Metrics.total(Metrics.changesApplied, { entity: table }), (n) => n === 7))
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live("the library's own write keeps its entry: the feed's tombstone ranks below it", () =>
    Effect.gen(function* () {
      const { store, usersOf, redis, cacheKey, objects, sql } = yield* capturedUsers
      const users = yield* usersOf(store)
      yield* users.set("k", user("k", "Ada"))
      const written = yield* entryOf(redis, cacheKey("k"))
      expect(written?._tag).toBe("Value")
      // Once the feed has taken the change (its outbox row deleted below the position), the entry is still the write's.
      yield* eventually(
        Effect.filterOrFail(
          sql.unsafe(`SELECT count(*)::int FROM "${objects.changes}"`).values,
          (rows) => rows[0]![0] === 0
        )
      )
      expect(yield* entryOf(redis, cacheKey("k"))).toEqual(written)
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live(
    "a writer SIGKILLed between its COMMIT and its cache write, holding the feed: another process takes the feed over and the cache converges",
    () =>
      Effect.gen(function* () {
        const { objects, store, table, usersOf, redis, sql, cacheKey } = yield* capturedUsers
        const prefix = cacheKey("").slice(0, -(table.length + 2))
        const committed = Effect.filterOrFail(
          sql.unsafe(`SELECT name FROM "${table}" WHERE id = 'k'`).values,
          (rows) => rows[0]?.[0] === "after"
        )
        yield* killWriterWhen([table, prefix, objects.versionSequence], committed)
        // The row is committed, the cache still holds the write before it, and the dead process held the feed.
        const stale = yield* entryOf(redis, cacheKey("k"))
        expect(stale?._tag).toBe("Value")
        const [holder] = yield* sql.unsafe(`SELECT holder FROM "${objects.feeds}"`).values
        expect(holder).toBeDefined()

        const killedAt = Date.now()
        const users = yield* usersOf(store)
        yield* eventually(Effect.filterOrFail(users.get("k"), (found) => Option.getOrThrow(found).name === "after"))
        // Within the lease (300 ms) and a few polls, on a loaded machine with room to spare.
        expect(Date.now() - killedAt).toBeLessThan(3_000)
        const [taken] = yield* sql.unsafe(`SELECT holder FROM "${objects.feeds}"`).values
        expect(taken![0]).not.toBe(holder![0])
      }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live("a consumer stopped and another started later: it resumes from the durable position and misses nothing", () =>
    Effect.gen(function* () {
      const { objects, store, table, usersOf, redis, sql, cacheKey } = yield* capturedUsers
      const keys = Array.from({ length: 40 }, (_, i) => `k${i}`)
      const first = yield* Scope.make()
      const users = yield* usersOf(store).pipe(Scope.extend(first))
      yield* Effect.forEach(keys, (key) => users.set(key, user(key, "library")), { discard: true })
      // The feed took the writes and recorded its position.
      yield* eventually(
        Effect.filterOrFail(
          sql.unsafe(`SELECT count(*)::int FROM "${objects.changes}"`).values,
          (rows) => rows[0]![0] === 0
        )
      )
      yield* Scope.close(first, Exit.void)
      const cached = yield* Effect.forEach(keys, (key) => entryOf(redis, cacheKey(key)))

      // Nobody consumes: plain SQL changes every key, in several transactions, and the cache keeps the old entries.
      for (let i = 0; i < keys.length; i += 10) {
        yield* sql.unsafe(`UPDATE "${table}" SET name = 'outside' WHERE id = ANY($1)`, [keys.slice(i, i + 10)]).raw
      }
      yield* Effect.sleep("100 millis")
      expect(yield* Effect.forEach(keys, (key) => entryOf(redis, cacheKey(key)))).toEqual(cached)
      expect((yield* sql.unsafe(`SELECT count(*)::int FROM "${objects.changes}"`).values)[0]![0]).toBe(keys.length)

      // Another store (another process's claim) takes the feed over once the lease ran out, and catches up.
      const again = yield* usersOf(yield* captureStore(objects))
      yield* eventually(
        Effect.filterOrFail(
          Effect.forEach(keys, (key) => again.get(key)),
          (found: ReadonlyArray<Option.Option<User>>) => found.every((one) => Option.getOrThrow(one).name === "outside")
        )
      )
      yield* eventually(
        Effect.filterOrFail(
          sql.unsafe(`SELECT count(*)::int FROM "${objects.changes}"`).values,
          (rows) => rows[0]![0] === 0
        )
      )
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )
})

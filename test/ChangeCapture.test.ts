// Change capture against the real PostgreSQL and Redis: a table without the triggers is refused with
// their DDL (the README's is the store's); changes made with plain SQL (INSERT, UPDATE, DELETE, a key
// changed in place) reach the cache, counted; the library's own writes keep their entries; a writer
// process SIGKILLed between COMMIT and its cache write while holding the feed, and another process
// taking the feed over; a consumer stopped and another started catching up from the durable
// position; and reads that find a row deleted leaving no room for an older write to land after them.
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import {
  Config,
  ConfigProvider,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Metric,
  MetricState,
  Option,
  Scope
} from "effect"
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Cache, ChangeCapture, Metrics, SqlStore, Store, WriteThrough } from "../src/index.js"
import { mappingOf } from "../src/internal/sqlStore/mapping.js"
import { storeObjects } from "../src/internal/sqlStore/statements.js"
import { captureTrigger, versionTrigger } from "../src/internal/sqlStore/triggers.js"
import { FaultyCache } from "../src/testing.js"
import {
  captureObjects,
  capturedUsersTable,
  captureStore,
  entryOf,
  eventually,
  usersOn
} from "./support/changeCapture.js"
import { User, user } from "./support/fixtures.js"
import { PgLive, rawRedis, redisCacheLayer, unique, usersTable } from "./support/services.js"

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
  it.effect(
    "an entity table without the capture trigger is refused with reason Schema and the CREATE TRIGGER that adds it",
    () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const objects = yield* captureObjects
        const store = yield* captureStore(objects)
        const table = yield* usersTable
        const target: Store.Target = {
          entity: table,
          fields: ["id", "name", "email"],
          table: { name: table, primaryKey: "id" }
        }
        // changeCapture needs the version trigger first, then its own.
        const version = yield* Effect.flip(store.collection(target))
        expect(version.suggestedDdl).toContain(`CREATE TRIGGER "effect_write_through_version" BEFORE INSERT OR UPDATE`)
        yield* sql.unsafe(version.suggestedDdl!).raw
        const capture = yield* Effect.flip(store.collection(target))
        expect(capture).toMatchObject({ reason: "Schema", entity: table })
        expect(capture.message).toContain(`has no trigger "effect_write_through_capture"`)
        expect(capture.suggestedDdl).toMatch(
          new RegExp(
            `^CREATE TRIGGER "effect_write_through_capture" AFTER INSERT OR UPDATE OR DELETE ON "${table}" FOR EACH ROW ` +
              `EXECUTE FUNCTION "public"\\."${objects.versionSequence}_capture_[0-9a-f]{12}"\\(\\)$`
          )
        )
        yield* sql.unsafe(capture.suggestedDdl!).raw
        const users = yield* store.collection(target)
        expect(users.changes).toBeDefined()
        yield* sql.unsafe(`ALTER TABLE "${table}" DISABLE TRIGGER "effect_write_through_capture"`).raw
        expect((yield* Effect.flip(store.collection(target))).message).toContain(
          "disabled, fires on other events or calls another function"
        )
        // An entity in the generic table needs nothing: the store adds both triggers there itself.
        const generic = yield* store.collection({ entity: unique("generic"), fields: undefined, table: undefined })
        expect(generic.changes).toBeDefined()
      }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.effect(
    "a version sequence too long to name the trigger functions after is refused before anything is created",
    () =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const versionSequence = `${unique("wt_seq")}_${"x".repeat(30)}`
        const refused = yield* Effect.flip(SqlStore.make({ versionSequence, changeCapture: true }))
        expect(refused).toMatchObject({ reason: "Schema" })
        expect(refused.message).toContain("longer than 42 characters")
        const [created] = yield* sql.unsafe(`SELECT to_regclass($1) IS NOT NULL`, [`"${versionSequence}"`]).values
        expect(created).toEqual([false])
      }).pipe(Effect.provide(PgLive))
  )

  it("the README's CREATE TRIGGER statements for its users table are the ones the store suggests", () => {
    const readme = readFileSync(fileURLToPath(new URL("../README.md", import.meta.url)), "utf8")
    const objects = storeObjects("public", "effect_write_through_version", "effect_write_through_entries", {
      versionTrigger: false,
      changeCapture: true
    })
    const table = { name: "users", primaryKey: "id" }
    const mapping = mappingOf(
      { entity: "users", fields: ["id", "name", "email"], table },
      table,
      ["id", "name", "email"],
      objects.nextVersion
    )
    const shown = readme.replace(/\n\s+/g, " ")
    expect(shown).toContain(`${versionTrigger(objects, mapping).createDdl};`)
    expect(shown).toContain(`${captureTrigger(objects, objects.capture!, mapping).createDdl};`)
  })

  it.effect("SqlStore.layerConfig reads the feed's options from configuration, and names a bad one", () =>
    Effect.gen(function* () {
      const objects = yield* captureObjects
      const config = (entries: ReadonlyArray<readonly [string, string]>) =>
        SqlStore.layerConfig({
          versionSequence: Config.succeed(objects.versionSequence),
          genericTable: Config.succeed(objects.genericTable),
          changeCapture: Config.nested(ChangeCapture.config, "CHANGE_CAPTURE")
        }).pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(entries), { pathDelim: "_" }))))
      const context = yield* Layer.build(
        config([
          ["CHANGE_CAPTURE_POLL_INTERVAL", "50 millis"],
          ["CHANGE_CAPTURE_BATCH_SIZE", "10"]
        ])
      )
      const generic = yield* Context.get(context, Store.Store).collection({
        entity: unique("generic"),
        fields: undefined,
        table: undefined
      })
      expect(Duration.toMillis(generic.changes!.pollInterval)).toBe(50)
      expect(generic.changes!.batchSize).toBe(10)
      const refused = yield* Effect.flip(Layer.build(config([["CHANGE_CAPTURE_BATCH_SIZE", "0"]])))
      expect(String(refused)).toContain("BATCH_SIZE")
      expect(String(refused)).toContain("1 or more")
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

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
      const lag = yield* Metric.value(Metrics.changeLag.pipe(Metric.tagged("entity", table)))
      expect(lag.count).toBe(7)
      expect(lag.min).toBeGreaterThanOrEqual(0)
      // This process consumes the feed.
      expect(yield* Metric.value(Metrics.changeFeedConsuming.pipe(Metric.tagged("entity", table)))).toEqual(
        MetricState.gauge(1)
      )
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

        const users = yield* usersOf(store)
        // Within the lease (300 ms here) and a poll; `eventually` gives it 5 s on a loaded machine.
        yield* eventually(Effect.filterOrFail(users.get("k"), (found) => Option.getOrThrow(found).name === "after"))
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
      // Closing the scope gave the feed up: its claim has run out, for the next process to take at once.
      const [released] = yield* sql.unsafe(`SELECT "until" < clock_timestamp() FROM "${objects.feeds}"`).values
      expect(released).toEqual([true])
      const cached = yield* Effect.forEach(keys, (key) => entryOf(redis, cacheKey(key)))

      // Nobody consumes: plain SQL changes every key, in several transactions, and the cache keeps the old entries.
      for (let i = 0; i < keys.length; i += 10) {
        yield* sql.unsafe(`UPDATE "${table}" SET name = 'outside' WHERE id = ANY($1)`, [keys.slice(i, i + 10)]).raw
      }
      yield* Effect.sleep("100 millis")
      expect(yield* Effect.forEach(keys, (key) => entryOf(redis, cacheKey(key)))).toEqual(cached)
      expect((yield* sql.unsafe(`SELECT count(*)::int FROM "${objects.changes}"`).values)[0]![0]).toBe(keys.length)

      // Another store (another process's claim) takes the feed over, and catches up.
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

  describe("read monotonicity: no read returns an older version than a read that returned before it began", () => {
    // The deletion's record in the outbox, with no consumer in this process: the reader's tombstone alone is tested.
    const withoutConsumer = (store: Store.Store.Service): Store.Store.Service => ({
      ...store,
      collection: (target) =>
        Effect.map(store.collection(target), (collection) => ({ ...collection, changes: undefined }))
    })

    const racing = Effect.gen(function* () {
      const objects = yield* captureObjects
      const store = yield* captureStore(objects)
      const { table, target } = yield* capturedUsersTable(store)
      const collection = yield* store.collection(target)
      const prefix = unique("cc")
      const context = yield* Layer.build(FaultyCache.layer.pipe(Layer.provide(redisCacheLayer(prefix))))
      const users = yield* usersOn(table, Context.get(context, Cache.Cache), withoutConsumer(store))
      const redis = yield* rawRedis
      return {
        users,
        collection,
        store: withoutConsumer(store),
        faults: Context.get(context, FaultyCache.FaultyCache),
        raw: (key: string) => entryOf(redis, `${prefix}:${table}:${key}`)
      }
    })

    for (const via of ["get", "getMany"] as const) {
      it.live(
        `a reader (${via}) that found the row deleted leaves a tombstone: an older write's cache update landing later is refused`,
        () =>
          Effect.gen(function* () {
            const { collection, users, faults, raw } = yield* racing
            const read = (key: string) =>
              via === "get" ? users.get(key) : Effect.map(users.getMany([key]), (found) => found[0]!)
            // Not in the cache: the first read after the delete goes to the store.
            yield* collection.put("1", user("1", "v0"))
            const publish = yield* faults.pause({ when: "before" }, "set")
            const older = yield* Effect.fork(users.set("1", user("1", "v1")))
            yield* publish.reached // v1 committed; its cache update not sent
            const tombstone = yield* faults.pause({ when: "before" }, "invalidate")
            const deleted = yield* Effect.fork(users.delete("1"))
            yield* tombstone.reached // the delete committed; its tombstone not sent
            expect(yield* read("1")).toEqual(Option.none()) // from the store: the row is gone
            expect((yield* raw("1"))?._tag).toBe("Tombstone")
            yield* publish.release
            yield* Fiber.join(older)
            // Without the reader's tombstone, v1 would now be in the cache and served.
            expect(yield* read("1")).toEqual(Option.none())
            yield* tombstone.release
            yield* Fiber.join(deleted)
            expect(yield* read("1")).toEqual(Option.none())
          }).pipe(Effect.scoped, Effect.provide(PgLive))
      )
    }

    for (const via of ["get", "getMany"] as const) {
      it.live(
        `a reader (${via}) the cache failed that found the row deleted owes its tombstone: this process reads the key from the store until it landed`,
        () =>
          Effect.gen(function* () {
            const { users, faults, raw } = yield* racing
            const read = (key: string) =>
              via === "get" ? users.get(key) : Effect.map(users.getMany([key]), (found) => found[0]!)
            yield* users.set("3", user("3", "v1"))
            const tombstone = yield* faults.pause({ when: "before" }, "invalidate")
            const deleted = yield* Effect.fork(users.delete("3"))
            yield* tombstone.reached // the delete committed; the cache still holds v1
            yield* faults.failNext(1, "get")
            expect(yield* read("3")).toEqual(Option.none()) // the cache failed: from the store
            // The cache answers again and still holds v1: without the owed tombstone, this read returned it.
            expect((yield* raw("3"))?._tag).not.toBe("Tombstone")
            expect(yield* read("3")).toEqual(Option.none())
            yield* tombstone.release
            yield* Fiber.join(deleted)
            expect(yield* read("3")).toEqual(Option.none())
          }).pipe(Effect.scoped, Effect.provide(PgLive))
      )
    }

    it.live("a row inserted by a transaction still open when a reader found it absent is published at its COMMIT", () =>
      Effect.gen(function* () {
        const { users, raw, store } = yield* racing
        yield* users.set("2", user("2", "first"))
        yield* users.delete("2")
        const written = yield* Deferred.make<void>()
        const proceed = yield* Deferred.make<void>()
        const transaction = yield* Effect.fork(
          WriteThrough.transaction(
            users
              .set("2", user("2", "again"))
              .pipe(Effect.zipRight(Deferred.succeed(written, undefined)), Effect.zipRight(Deferred.await(proceed)))
          ).pipe(Effect.provideService(Store.Store, store))
        )
        yield* Deferred.await(written) // its version drawn, not committed
        expect(yield* users.get("2")).toEqual(Option.none())
        expect((yield* raw("2"))?._tag).toBe("Tombstone")
        yield* Deferred.succeed(proceed, undefined)
        yield* Fiber.join(transaction)
        // The reader's tombstone is at the deleted row's version, below the insert's: the insert lands.
        expect((yield* raw("2"))?._tag).toBe("Value")
        expect(Option.getOrThrow(yield* users.get("2")).name).toBe("again")
      }).pipe(Effect.scoped, Effect.provide(PgLive))
    )
  })
})

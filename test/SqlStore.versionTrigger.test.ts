// SqlStore's `versionTrigger`, against the real PostgreSQL (and Redis for the audit): a table
// without the trigger is refused with the DDL that adds it; with it, a plain UPDATE made outside the
// library gets a version above the row's earlier ones, and the audit finds and repairs the cache
// entry it left stale.
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Layer, Option, Schema } from "effect"
import { Cache, SqlStore, Store, WriteThrough } from "../src/index.js"
import { User, user } from "./support/fixtures.js"
import { captureObjects } from "./support/changeCapture.js"
import { adminClient, blockedBackends, PgLive, redisCacheLayer, usersTable } from "./support/services.js"

/**
 * A store with `versionTrigger` on and a sequence of its own (so its trigger function is its own
 * too), both dropped when the scope closes, and a users table whose trigger is added unless `bare`.
 */
const versionedStore = (bare = false) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const { versionSequence } = yield* captureObjects
    const store = yield* SqlStore.make({ versionSequence, versionTrigger: true })
    const table = yield* usersTable
    const target: Store.Target = {
      entity: table,
      fields: ["id", "name", "email"],
      table: { name: table, primaryKey: "id" }
    }
    if (!bare) {
      const refused = yield* Effect.flip(store.collection(target))
      yield* sql.unsafe(refused.suggestedDdl!).raw
    }
    const version = (key: string) =>
      Effect.map(sql.unsafe(`SELECT version FROM "${table}" WHERE id = $1`, [key]).values, (rows) =>
        Number(rows[0]![0])
      )
    return { sql, store, table, target, version, versionSequence }
  })

describe("SqlStore versionTrigger", () => {
  it.effect("a table without the trigger is refused with reason Schema and the CREATE TRIGGER that adds it", () =>
    Effect.gen(function* () {
      const { sql, store, table, target, versionSequence } = yield* versionedStore(true)
      const refused = yield* Effect.flip(store.collection(target))
      expect(refused).toBeInstanceOf(Store.StoreError)
      expect(refused).toMatchObject({ reason: "Schema", entity: table })
      expect(refused.message).toContain(`has no trigger "effect_write_through_version"`)
      // A function the store made for the table, qualified by its schema, so that a writer with another
      // search_path runs the same one.
      const ddl = new RegExp(
        `^CREATE TRIGGER "effect_write_through_version" BEFORE INSERT OR UPDATE ON "${table}" FOR EACH ROW ` +
          `EXECUTE FUNCTION ("public"\\."${versionSequence}_version_[0-9a-f]{12}")\\(\\)$`
      )
      expect(refused.suggestedDdl).toMatch(ddl)
      const versionFunction = ddl.exec(refused.suggestedDdl!)![1]!
      yield* sql.unsafe(refused.suggestedDdl!).raw
      const users = yield* store.collection(target)
      expect(yield* users.get("absent")).toEqual(Option.none())
      // A disabled trigger does not count; nor does one on other events, which is replaced.
      yield* sql.unsafe(`ALTER TABLE "${table}" DISABLE TRIGGER "effect_write_through_version"`).raw
      expect(yield* Effect.flip(store.collection(target))).toMatchObject({ reason: "Schema" })
      yield* sql.unsafe(`DROP TRIGGER "effect_write_through_version" ON "${table}"`).raw
      yield* sql.unsafe(
        `CREATE TRIGGER "effect_write_through_version" BEFORE UPDATE ON "${table}" FOR EACH ROW ` +
          `EXECUTE FUNCTION ${versionFunction}()`
      ).raw
      const narrow = yield* Effect.flip(store.collection(target))
      expect(narrow.message).toContain("disabled, fires on other events or calls another function")
      expect(narrow.suggestedDdl).toBe(
        `DROP TRIGGER "effect_write_through_version" ON "${table}"; ${refused.suggestedDdl}`
      )
      yield* sql.unsafe(narrow.suggestedDdl!).raw
      yield* store.collection(target)
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.effect(
    "a plain UPDATE gets a version above the row's earlier ones; the library's writes keep the one they return",
    () =>
      Effect.gen(function* () {
        const { sql, store, table, target, version } = yield* versionedStore()
        const users = yield* store.collection(target)
        const first = yield* users.put("k", user("k", "Ada"))
        expect(yield* version("k")).toBe(first)
        yield* sql.unsafe(`UPDATE "${table}" SET name = 'outside' WHERE id = 'k'`).raw
        const outside = yield* version("k")
        expect(outside).toBeGreaterThan(first)
        const again = yield* users.put("k", user("k", "Grace"))
        expect(again).toBeGreaterThan(outside)
        expect(yield* version("k")).toBe(again)
        expect(Option.getOrThrow(yield* users.get("k"))).toEqual({ version: again, value: user("k", "Grace") })
        // An INSERT without a version gets one from the sequence.
        yield* sql.unsafe(`INSERT INTO "${table}" (id, name, email) VALUES ('n', 'new', 'n@example.com')`).raw
        expect(yield* version("n")).toBeGreaterThan(again)
        // Another writer's explicit version is left as it set it.
        yield* sql.unsafe(`UPDATE "${table}" SET name = 'explicit', version = version + 1000 WHERE id = 'k'`).raw
        expect(yield* version("k")).toBe(again + 1000)
      }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live(
    "a library write that drew its version before a writer outside the library drew a higher one, and commits after it, gets a fresh one",
    () =>
      Effect.gen(function* () {
        const { sql, store, table, target, version } = yield* versionedStore()
        const users = yield* store.collection(target)
        yield* users.put("k", user("k", "Ada"))
        const admin = yield* adminClient
        const locked = yield* Deferred.make<void>()
        const proceed = yield* Deferred.make<void>()
        // Outside the library: the row locked first (no advisory lock: it knows nothing of the library's).
        const outside = yield* Effect.fork(
          sql.withTransaction(
            Effect.gen(function* () {
              yield* sql.unsafe(`SELECT 1 FROM "${table}" WHERE id = 'k' FOR UPDATE`).raw
              yield* Deferred.succeed(locked, undefined)
              yield* Deferred.await(proceed)
              const [[drawn]] = yield* sql.unsafe(
                `UPDATE "${table}" SET name = 'outside' WHERE id = 'k' RETURNING version`
              ).values
              return Number(drawn)
            })
          )
        )
        yield* Deferred.await(locked)
        // The library's write draws its version, then waits for the row.
        const written = yield* Effect.fork(users.put("k", user("k", "Grace")))
        yield* blockedBackends(admin, table)
        yield* Deferred.succeed(proceed, undefined)
        const outsideVersion = yield* Fiber.join(outside)
        const committed = yield* Fiber.join(written)
        // It committed last, so its version is above the outside write's (it drew a lower one first),
        // and the library got the version the row has.
        expect(committed).toBeGreaterThan(outsideVersion)
        expect(committed).toBe(yield* version("k"))
        expect(Option.getOrThrow(yield* users.get("k")).value).toMatchObject({ name: "Grace" })
      }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.effect("the audit finds the cache entry a write made outside the library left stale, and repairs it", () =>
    Effect.gen(function* () {
      const { sql, store, table } = yield* versionedStore()
      const cache = Context.get(yield* Layer.build(redisCacheLayer()), Cache.Cache)
      const users = yield* WriteThrough.make({
        entity: table,
        table: { name: table, primaryKey: "id" },
        key: Schema.String,
        value: User
      }).pipe(Effect.provideService(Cache.Cache, cache), Effect.provideService(Store.Store, store))
      yield* users.set("k", user("k", "Ada"))
      expect(Option.getOrThrow(yield* users.get("k")).name).toBe("Ada")
      yield* sql.unsafe(`UPDATE "${table}" SET name = 'outside' WHERE id = 'k'`).raw
      // The cache still serves the old value: nothing told it.
      expect(Option.getOrThrow(yield* users.get("k")).name).toBe("Ada")
      expect(yield* users.audit()).toMatchObject({ values: 1, stale: 1, repaired: 0 })
      expect(yield* users.audit({ repair: true })).toMatchObject({ stale: 1, repaired: 1 })
      expect(Option.getOrThrow(yield* users.get("k")).name).toBe("outside")
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )
})

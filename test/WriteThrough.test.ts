import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import {
  Cause,
  Config,
  ConfigError,
  ConfigProvider,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  Option,
  Schema,
  TestClock,
  Tracer
} from "effect"
import { Cache, MemoryCache, MemoryStore, SqlStore, Store, WriteThrough } from "../src/index.js"
import { FaultyCache } from "../src/testing.js"
import { writeThroughContract } from "./contract/WriteThroughContract.js"
import { User } from "./support/fixtures.js"
import { PgLive, rawRedis, redisCacheLayer, scopedTable, unique, usersTable } from "./support/services.js"

const memoryTable = Effect.sync(() => ({ name: unique("users"), primaryKey: "id" }))
const sqlTable = Effect.map(usersTable, (name) => ({ name, primaryKey: "id" }))
const sqlStore = () => SqlStore.layer().pipe(Layer.provideMerge(PgLive))

writeThroughContract("MemoryCache + MemoryStore", {
  layer: () => Layer.merge(MemoryCache.layer(), MemoryStore.layer),
  table: memoryTable
})

writeThroughContract("RedisCache + SqlStore (PostgreSQL)", {
  layer: () => Layer.merge(redisCacheLayer(), sqlStore()),
  table: sqlTable
})

writeThroughContract("MemoryCache + SqlStore (PostgreSQL)", {
  layer: () => Layer.merge(MemoryCache.layer(), sqlStore()),
  table: sqlTable
})

writeThroughContract("RedisCache + MemoryStore", {
  layer: () => Layer.merge(redisCacheLayer(), MemoryStore.layer),
  table: memoryTable
})

describe("WriteThrough.Service", () => {
  class Users extends WriteThrough.Service<Users>()("app/Users", { key: Schema.String, value: User, ttl: "1 hour" }) {}

  it.effect("a class declares the entity; its Default layer builds it from Cache and Store", () =>
    Effect.gen(function* () {
      const users = yield* Users
      yield* users.set("42", new User({ id: "42", name: "Ada", email: "ada@example.com" }))
      expect(Option.getOrThrow(yield* users.get("42")).name).toBe("Ada")
      expect(Users.entity).toBe("app/Users")
      expect(users.entity).toBe("app/Users")
    }).pipe(Effect.provide(Users.Default.pipe(Layer.provide(MemoryCache.layer()), Layer.provide(MemoryStore.layer))))
  )

  it.effect("on Redis and Postgres, the entity is named after its table", () =>
    Effect.gen(function* () {
      const table = yield* usersTable
      class TableUsers extends WriteThrough.Service<TableUsers>()("app/TableUsers", {
        key: Schema.String,
        value: User,
        table: { name: table, primaryKey: "id" }
      }) {}
      expect(TableUsers.entity).toBe(table)
      yield* Effect.gen(function* () {
        const users = yield* TableUsers
        yield* users.set("1", new User({ id: "1", name: "Grace", email: "grace@example.com" }))
        expect(Option.getOrThrow(yield* users.get("1")).name).toBe("Grace")
      }).pipe(
        Effect.provide(TableUsers.Default.pipe(Layer.provide(redisCacheLayer()), Layer.provide(SqlStore.layer())))
      )
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live(
    "concurrent sets on Redis and Postgres: each key cached at its own committed version; a refused value fails its own set only",
    () => {
      const prefix = unique("coalesced")
      return Effect.gen(function* () {
        const entity = yield* scopedTable(
          (name) =>
            `CREATE TABLE "${name}" (id text PRIMARY KEY, name text CHECK (name <> 'refused'), email text, version bigint)`
        )
        const users = yield* WriteThrough.make({
          entity,
          key: Schema.String,
          value: User,
          table: { name: entity, primaryKey: "id" }
        })
        const keys = Array.from({ length: 12 }, (_, i) => String(i))
        const results = yield* Effect.forEach(
          keys,
          (key) =>
            Effect.either(
              users.set(key, new User({ id: key, name: key === "5" ? "refused" : `n${key}`, email: "e@example.com" }))
            ),
          { concurrency: "unbounded" }
        )
        const redis = yield* rawRedis
        const rows = yield* Effect.flatMap(SqlClient.SqlClient, (sql) =>
          sql.unsafe<{ id: string; version: string }>(`SELECT id, version FROM "${entity}"`)
        )
        for (const [i, key] of keys.entries()) {
          const cached = yield* Effect.promise(() => redis.get(`${prefix}:${entity}:${key}`))
          if (key === "5") {
            expect(Either.getLeft(results[i]!)).toEqual(
              Option.some(expect.objectContaining({ _tag: "StoreError", reason: "Rejected", key }))
            )
            expect(cached).toBeNull()
            continue
          }
          expect(Either.isRight(results[i]!)).toBe(true)
          const version = rows.find((row) => row.id === key)!.version
          expect(cached).toMatch(new RegExp(`^v${version}:`))
        }
        expect(rows).toHaveLength(keys.length - 1)
      }).pipe(
        Effect.scoped,
        Effect.provide(Layer.merge(redisCacheLayer(prefix), SqlStore.layer())),
        Effect.provide(PgLive)
      )
    }
  )

  it.effect("building the layer on a table without the version column fails, naming the column and the DDL", () =>
    Effect.gen(function* () {
      const table = yield* scopedTable((name) => `CREATE TABLE "${name}" (id text PRIMARY KEY, name text, email text)`)
      class Legacy extends WriteThrough.Service<Legacy>()("app/Legacy", {
        key: Schema.String,
        value: User,
        table: { name: table, primaryKey: "id" }
      }) {}
      const error = yield* Layer.build(Legacy.Default).pipe(
        Effect.provide(Layer.merge(redisCacheLayer(), SqlStore.layer())),
        Effect.scoped,
        Effect.flip
      )
      expect(error._tag).toBe("StoreError")
      expect(error.message).toContain(`"version"`)
      expect(error.message).toContain(`ALTER TABLE "${table}" ADD COLUMN "version" bigint NOT NULL DEFAULT nextval(`)
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )
})

describe("TTL: the safety net", () => {
  it.effect("in memory, entries expire after the TTL plus at most its jitter (TestClock)", () =>
    Effect.gen(function* () {
      const entity = unique("ttl")
      const table = { name: entity, primaryKey: "id" }
      const users = yield* WriteThrough.make({ entity, key: Schema.String, value: User, table, ttl: "10 minutes" })
      const store = yield* Effect.flatMap(Store.Store, (store) =>
        store.collection({ entity, fields: ["id", "name", "email"], table })
      )
      yield* users.set("1", new User({ id: "1", name: "cached", email: "1@example.com" }))
      yield* store.put("1", { id: "1", name: "changed behind its back", email: "1@example.com" })
      yield* TestClock.adjust("9 minutes")
      expect(Option.getOrThrow(yield* users.get("1")).name).toBe("cached")
      yield* TestClock.adjust("2 minutes") // 11 minutes: past 10 minutes + 10% jitter
      expect(Option.getOrThrow(yield* users.get("1")).name).toBe("changed behind its back")
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(MemoryCache.layer(), MemoryStore.layer)))
  )

  it.effect("in Redis, every entry carries a TTL between the TTL and the TTL plus jitter, spread across keys", () => {
    const prefix = unique("ttl")
    return Effect.gen(function* () {
      const entity = unique("ttl")
      const table = { name: entity, primaryKey: "id" }
      const users = yield* WriteThrough.make({ entity, key: Schema.String, value: User, table })
      const redis = yield* rawRedis
      const keys = Array.from({ length: 20 }, (_, i) => String(i))
      yield* Effect.forEach(keys, (key) => users.set(key, new User({ id: key, name: "n", email: "e@example.com" })))
      const ttls = yield* Effect.forEach(keys, (key) => Effect.promise(() => redis.pttl(`${prefix}:${entity}:${key}`)))
      const hour = 3_600_000
      for (const ttl of ttls) {
        expect(ttl).toBeGreaterThan(hour - 60_000)
        expect(ttl).toBeLessThanOrEqual(hour * 1.1)
      }
      expect(new Set(ttls.map((ttl) => Math.round(ttl / 1000))).size).toBeGreaterThan(1)
      yield* users.delete("0")
      const tombstoneTtl = yield* Effect.promise(() => redis.pttl(`${prefix}:${entity}:0`))
      expect(tombstoneTtl).toBeGreaterThan(20_000)
      expect(tombstoneTtl).toBeLessThanOrEqual(30_000)
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(redisCacheLayer(prefix), MemoryStore.layer)))
  })
})

describe("inside a caller's SQL transaction", () => {
  it.effect("a write is refused with a typed error before anything is written, and the transaction goes on", () => {
    const prefix = unique("tx")
    return Effect.gen(function* () {
      const sql = yield* SqlClient.SqlClient
      const table = yield* usersTable
      const users = yield* WriteThrough.make({
        entity: table,
        key: Schema.String,
        value: User,
        table: { name: table, primaryKey: "id" }
      })
      const redis = yield* rawRedis
      const inside = yield* sql.withTransaction(
        Effect.gen(function* () {
          const error = yield* Effect.flip(users.set("1", new User({ id: "1", name: "Ada", email: "a@example.com" })))
          const deleteError = yield* Effect.flip(users.delete("1"))
          yield* sql.unsafe(
            `INSERT INTO "${table}" (id, name, email, version) VALUES ('2', 'other', 'o@example.com', 1)`
          )
          return [error, deleteError] as const
        })
      )
      for (const error of inside) expect(error).toMatchObject({ _tag: "StoreError", reason: "Transaction", key: "1" })
      // Nothing but the cache's epoch marker, written when the layer connected.
      expect(yield* Effect.promise(() => redis.keys(`${prefix}:*`))).toEqual([`${prefix}:__wt_epoch`])
      const rows = yield* sql.unsafe<{ id: string }>(`SELECT id FROM "${table}" ORDER BY id`)
      expect(rows.map((row) => row.id)).toEqual(["2"])
    }).pipe(
      Effect.scoped,
      Effect.provide(Layer.mergeAll(redisCacheLayer(prefix), SqlStore.layer()).pipe(Layer.provideMerge(PgLive)))
    )
  })
})

describe("spans", () => {
  it.effect(
    "with a tracer installed, each operation is a span named after it, carrying the entity and not the key",
    () =>
      Effect.gen(function* () {
        const spans: Array<Tracer.Span> = []
        // Effect's own tracer, seen through a wrapper: what an exporter such as OpenTelemetry's would see.
        const native = yield* Effect.tracer
        const tracer = Tracer.make({
          span: (...args) => {
            const span = native.span(...args)
            spans.push(span)
            return span
          },
          context: native.context
        })
        const entity = unique("spans")
        const users = yield* WriteThrough.make({
          entity,
          key: Schema.String,
          value: User,
          table: { name: entity, primaryKey: "id" }
        })
        yield* Effect.gen(function* () {
          yield* users.set("secret-key", new User({ id: "secret-key", name: "n", email: "e@example.com" }))
          yield* users.get("secret-key")
          yield* users.getMany(["secret-key"])
          yield* users.delete("secret-key")
        }).pipe(Effect.withTracer(tracer))
        expect(spans.map((span) => span.name)).toEqual([
          "WriteThrough.set",
          "WriteThrough.get",
          "WriteThrough.getMany",
          "WriteThrough.delete"
        ])
        for (const span of spans) {
          expect(span.attributes.get("entity")).toBe(entity)
          expect(JSON.stringify([...span.attributes.values()])).not.toContain("secret-key")
        }
      }).pipe(Effect.scoped, Effect.provide(Layer.merge(MemoryCache.layer(), MemoryStore.layer)))
  )
})

describe("settings from configuration (WriteThrough.settings, Service.layerConfig)", () => {
  class Users extends WriteThrough.Service<Users>()("app/ConfiguredUsers", {
    key: Schema.String,
    value: User,
    ttl: "10 minutes"
  }) {}
  const ada = new User({ id: "1", name: "Ada", email: "ada@example.com" })
  const configured =
    (entries: ReadonlyArray<readonly [string, string]>) =>
    <A, E>(effect: Effect.Effect<A, E, Users | Cache.Cache | FaultyCache.FaultyCache>) =>
      effect.pipe(
        Effect.provide(
          Users.layerConfig(Config.nested(WriteThrough.settings, "USERS")).pipe(
            Layer.provideMerge(
              Layer.mergeAll(FaultyCache.layer.pipe(Layer.provideMerge(MemoryCache.layer())), MemoryStore.layer)
            )
          )
        ),
        // As from the environment, where nested names join with "_".
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map(entries), { pathDelim: "_" }))
      )
  const cached = (key: string) => Effect.flatMap(Cache.Cache, (cache) => cache.get(`app/ConfiguredUsers:${key}`))

  it.effect("USERS_TTL and USERS_TTL_JITTER set the entries' lifetime, over the TTL in code", () =>
    Effect.gen(function* () {
      const users = yield* Users
      yield* users.set("1", ada)
      yield* TestClock.adjust("4 minutes")
      expect(Option.isSome(yield* cached("1"))).toBe(true)
      yield* TestClock.adjust("1 minute")
      expect(yield* cached("1")).toEqual(Option.none())
    }).pipe(
      configured([
        ["USERS_TTL", "5 minutes"],
        ["USERS_TTL_JITTER", "0"]
      ])
    )
  )

  it.effect("USERS_RETRY_TIMES, _BASE and _WITHIN set the cache write's retry schedule", () =>
    Effect.gen(function* () {
      const users = yield* Users
      const faults = yield* FaultyCache.FaultyCache
      yield* faults.failAlways("set", "invalidate")
      const fiber = yield* Effect.fork(Effect.flip(users.set("1", ada)))
      // Small steps: the background repair, a second after the failure, must not add calls yet.
      while (Option.isNone(yield* Fiber.poll(fiber))) yield* TestClock.adjust("10 millis")
      expect((yield* Fiber.join(fiber))._tag).toBe("StaleCacheError")
      // One try and one retry, for the update and for the invalidation that replaces it.
      expect(yield* faults.calls("set")).toBe(2)
      expect(yield* faults.calls("invalidate")).toBe(2)
    }).pipe(
      configured([
        ["USERS_RETRY_TIMES", "1"],
        ["USERS_RETRY_BASE", "10 millis"],
        ["USERS_RETRY_WITHIN", "1 second"]
      ])
    )
  )

  it.effect("nothing configured: the options in code and the defaults", () =>
    Effect.gen(function* () {
      const users = yield* Users
      yield* users.set("1", ada)
      // The TTL in code, 10 minutes, not the 5 of the test above.
      yield* TestClock.adjust("6 minutes")
      expect(Option.isSome(yield* cached("1"))).toBe(true)
    }).pipe(configured([]))
  )

  const refused: ReadonlyArray<readonly [string, ReadonlyArray<readonly [string, string]>, string]> = [
    ["a TTL that is not a duration", [["USERS_TTL", "forever"]], "USERS.TTL"],
    ["a TTL of zero", [["USERS_TTL", "0 millis"]], "must be a duration above zero"],
    ["a jitter above 1", [["USERS_TTL_JITTER", "2"]], "must be a fraction from 0 to 1"],
    [
      "a negative retry count",
      [
        ["USERS_RETRY_TIMES", "-1"],
        ["USERS_RETRY_BASE", "10 millis"],
        ["USERS_RETRY_WITHIN", "1 second"]
      ],
      "must be a whole number"
    ],
    [
      "a retry count without its base and bound",
      [["USERS_RETRY_TIMES", "2"]],
      "RETRY_TIMES, RETRY_BASE and RETRY_WITHIN go together"
    ]
  ]
  it.effect("on Redis and PostgreSQL: USERS_TTL sets the lifetime of the entry Redis holds", () =>
    Effect.gen(function* () {
      const table = yield* usersTable
      const prefix = unique("cfg")
      class TableUsers extends WriteThrough.Service<TableUsers>()("app/ConfiguredTableUsers", {
        key: Schema.String,
        value: User,
        table: { name: table, primaryKey: "id" },
        ttl: "10 minutes"
      }) {}
      const redis = yield* rawRedis
      yield* Effect.gen(function* () {
        const users = yield* TableUsers
        yield* users.set("1", ada)
        const ttl = yield* Effect.promise(() => redis.pttl(`${prefix}:${table}:1`))
        // 90 seconds, no jitter: not the 10 minutes in code, nor the default hour.
        expect(ttl).toBeGreaterThan(80_000)
        expect(ttl).toBeLessThanOrEqual(90_000)
      }).pipe(
        Effect.provide(
          TableUsers.layerConfig(Config.nested(WriteThrough.settings, "USERS")).pipe(
            Layer.provide(redisCacheLayer(prefix)),
            Layer.provide(SqlStore.layer())
          )
        ),
        Effect.withConfigProvider(
          ConfigProvider.fromMap(
            new Map([
              ["USERS_TTL", "90 seconds"],
              ["USERS_TTL_JITTER", "0"]
            ]),
            { pathDelim: "_" }
          )
        )
      )
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  for (const [label, entries, named] of refused) {
    it.effect(`${label} fails the layer with a ConfigError naming it`, () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(configured(entries)(Users))
        expect(ConfigError.isConfigError(error)).toBe(true)
        expect(String(error)).toContain(named)
      })
    )
  }
})

describe("entity namespaces", () => {
  // Same-named tables in two schemas; the value says which one it came from.
  const twoSchemas = Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const schema = unique("archive")
    const table = unique("h_users")
    const ddl = (qualified: string) =>
      `CREATE TABLE ${qualified} (id text PRIMARY KEY, name text NOT NULL, email text NOT NULL, version bigint NOT NULL)`
    const run = (statements: ReadonlyArray<string>) =>
      Effect.forEach(statements, (statement) => sql.unsafe(statement).raw, { discard: true })
    yield* Effect.acquireRelease(
      run([`CREATE SCHEMA "${schema}"`, ddl(`"${table}"`), ddl(`"${schema}"."${table}"`)]),
      () => run([`DROP SCHEMA "${schema}" CASCADE`, `DROP TABLE IF EXISTS "${table}"`]).pipe(Effect.orDie)
    )
    class Live extends WriteThrough.Service<Live>()("app/LiveUsers", {
      key: Schema.String,
      value: User,
      table: { name: table, primaryKey: "id" }
    }) {}
    class Archived extends WriteThrough.Service<Archived>()("app/ArchivedUsers", {
      key: Schema.String,
      value: User,
      table: { name: table, schema, primaryKey: "id" }
    }) {}
    return { schema, table, Live, Archived }
  })

  it.effect("same-named tables in two schemas get distinct namespaces, on Redis and PostgreSQL", () =>
    Effect.gen(function* () {
      const { Archived, Live, schema, table } = yield* twoSchemas
      expect(Live.entity).toBe(table)
      expect(Archived.entity).toBe(`${schema}.${table}`)
      yield* Effect.gen(function* () {
        const live = yield* Live
        const archived = yield* Archived
        yield* live.set("c1", new User({ id: "c1", name: "LIVE", email: "l@example.com" }))
        yield* archived.set("c1", new User({ id: "c1", name: "ARCHIVED", email: "a@example.com" }))
        expect(Option.getOrThrow(yield* live.get("c1")).name).toBe("LIVE")
        expect(Option.getOrThrow(yield* archived.get("c1")).name).toBe("ARCHIVED")
        yield* archived.delete("c1")
        expect(Option.getOrThrow(yield* live.get("c1")).name).toBe("LIVE")
        expect(yield* archived.get("c1")).toEqual(Option.none())
      }).pipe(
        Effect.provide(
          Layer.mergeAll(Live.Default, Archived.Default).pipe(
            Layer.provide(redisCacheLayer()),
            Layer.provide(SqlStore.layer())
          )
        )
      )
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.effect("two entities that would share a namespace on one Cache fail when built, naming both", () =>
    Effect.gen(function* () {
      const { Archived, Live, table } = yield* twoSchemas
      // Named alike on purpose: what the default used to do with a schema.
      class Clash extends WriteThrough.Service<Clash>()("app/Clash", {
        key: Schema.String,
        value: User,
        entity: table,
        table: { name: table, schema: "public", primaryKey: "id" }
      }) {}
      const cache = redisCacheLayer()
      const exit = yield* Layer.build(Layer.mergeAll(Live.Default, Clash.Default)).pipe(
        Effect.provide(Layer.merge(cache, SqlStore.layer())),
        Effect.scoped,
        Effect.exit
      )
      expect(exit._tag).toBe("Failure")
      const message = String(Exit.isFailure(exit) ? Cause.squash(exit.cause) : "")
      expect(message).toContain(`service "app/LiveUsers" entity "${table}" (table ${table})`)
      expect(message).toContain(`service "app/Clash" entity "${table}" (table public.${table})`)
      expect(message).toContain("give one of them a distinct `entity`")
      // Distinct names on one cache build; the namespace is free again once a layer is released.
      yield* Layer.build(Layer.mergeAll(Live.Default, Archived.Default)).pipe(
        Effect.provide(Layer.merge(cache, SqlStore.layer())),
        Effect.scoped
      )
      const shared = yield* Layer.build(cache)
      for (let round = 0; round < 2; round++) {
        yield* Layer.build(Live.Default).pipe(
          Effect.provide(Layer.merge(Layer.succeedContext(shared), SqlStore.layer())),
          Effect.scoped
        )
      }
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.effect("an unstorable string deep in a value is named by its path", () =>
    Effect.gen(function* () {
      const Tagged = Schema.Struct({ id: Schema.String, tags: Schema.Array(Schema.Struct({ label: Schema.String })) })
      const tagged = yield* WriteThrough.make({ entity: unique("tagged"), key: Schema.String, value: Tagged })
      const error = yield* Effect.flip(tagged.set("t", { id: "t", tags: [{ label: "ok" }, { label: "x\u0000" }] }))
      expect(error).toMatchObject({ _tag: "ValidationError", field: "value" })
      expect(error.message).toContain("tags[1].label holds a NUL character")
      expect(yield* tagged.get("t")).toEqual(Option.none())
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(redisCacheLayer(), SqlStore.layer())), Effect.provide(PgLive))
  )
})

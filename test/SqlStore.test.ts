import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import {
  Config,
  ConfigError,
  ConfigProvider,
  Context,
  Deferred,
  Duration,
  Effect,
  Either,
  Fiber,
  Layer,
  Option,
  Redacted
} from "effect"
import { randomUUID } from "node:crypto"
import { createServer } from "node:net"
import * as CoalescedPuts from "../src/internal/sqlStore/coalescedPuts.js"
import { SqlStore, Store } from "../src/index.js"
import { FaultyStore } from "../src/testing.js"
import { storeContract, type StoreSubject, user, userFields } from "./contract/StoreContract.js"
import {
  adminClient,
  applicationName,
  blockedBackends,
  databaseUrl,
  PgLive,
  scopedTable,
  unique
} from "./support/services.js"

const StoreLive = SqlStore.layer().pipe(Layer.provideMerge(PgLive))

const quote = (identifier: string) => `"${identifier.replace(/"/g, '""')}"`

const usersDdl = (t: string) => `CREATE TABLE ${quote(t)} (id text primary key, name text, email text, version bigint)`

const tableTarget = (name: string, table: Partial<Store.Table> = {}): Store.Target => ({
  entity: name,
  fields: userFields,
  table: { name, primaryKey: "id", ...table }
})

/** Runs a statement behind the store's back, on the test's own SqlClient. */
const exec = (statement: string, params: ReadonlyArray<unknown> = []) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement, params).values)

/** Like `scopedTable`, for names that need quoting (and for DDL that is not a single CREATE TABLE). */
const scopedRelation = (name: string, create: string, drop: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.acquireRelease(sql.unsafe(create).raw, () => sql.unsafe(drop).raw.pipe(Effect.orDie))
  ).pipe(Effect.as(name))

/** A target in the shared generic table, under an entity of its own whose rows go when the test ends. */
const genericTarget = (label = "users", fields: ReadonlyArray<string> | undefined = userFields) =>
  Effect.gen(function* () {
    const entity = unique(label)
    yield* Effect.addFinalizer(() =>
      exec(`DELETE FROM "effect_write_through_entries" WHERE "entity" = $1`, [entity]).pipe(Effect.orDie)
    )
    return { entity, fields, table: undefined } satisfies Store.Target
  })

/** Preparing the target fails; returns the StoreError after checking it is a Schema error. */
const schemaFailure = (target: Store.Target) =>
  Effect.gen(function* () {
    const store = yield* Store.Store
    const error = yield* Effect.flip(store.collection(target))
    expect(error).toBeInstanceOf(Store.StoreError)
    expect(error).toMatchObject({ _tag: "StoreError", reason: "Schema", entity: target.entity, operation: "prepare" })
    return error
  })

/** The store's default version sequence, and the expression its suggested DDL draws versions with. */
const sequence = `"effect_write_through_version"`
const nextVersion = `nextval('${sequence}')`

/**
 * Preparing `target` fails with a Schema error suggesting exactly `ddl`; running `ddl` makes the
 * table fit: preparing it then succeeds, and an insert and an update (ON CONFLICT) of `value` work.
 */
const fixedBySuggestion = (target: Store.Target, ddl: string, value: Record<string, unknown> = user("fits", "Ada")) =>
  Effect.gen(function* () {
    const error = yield* schemaFailure(target)
    expect(error.suggestedDdl).toBe(ddl)
    expect(error.message.endsWith(`; fix it with: ${ddl}`)).toBe(true)
    yield* exec(ddl)
    const store = yield* Store.Store
    const collection = yield* store.collection(target)
    const inserted = yield* collection.put("fits", value)
    const updated = yield* collection.put("fits", value)
    expect(updated).toBeGreaterThan(inserted)
    expect(yield* collection.get("fits")).toEqual(Option.some({ version: updated, value }))
    return { error, collection }
  })

/**
 * Holds a lock in a transaction on the admin connection until `release` completes (or the
 * scope closes: the transaction is rolled back before the test's table is dropped).
 * Returns once the lock is held.
 */
const holdLock = (admin: SqlClient.SqlClient, lockSql: string, params: ReadonlyArray<unknown>) =>
  Effect.gen(function* () {
    const locked = yield* Deferred.make<void>()
    const release = yield* Deferred.make<void>()
    const holder = yield* admin
      .withTransaction(
        Effect.gen(function* () {
          yield* admin.unsafe(lockSql, params).raw
          yield* Deferred.succeed(locked, undefined)
          yield* Deferred.await(release)
        })
      )
      .pipe(Effect.forkScoped)
    yield* Deferred.await(locked)
    return Deferred.succeed(release, undefined).pipe(Effect.zipRight(Fiber.join(holder)))
  })

/**
 * A read right after a backend was killed. @effect/sql-pg returns the killed connection to
 * its pool (the query failed with 57P01, so it releases it without an error), and the next
 * call may pick it up and fail as Unavailable; that call discards it. So one retry, and
 * only on Unavailable: the store then works on a fresh connection.
 */
const recovered = <A>(read: Effect.Effect<A, Store.StoreError>) =>
  read.pipe(Effect.retry({ times: 1, while: (error) => error.reason === "Unavailable" }))

/** A TCP port with nothing listening on it. */
const deadPort = Effect.async<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

const tableMode: StoreSubject<SqlClient.SqlClient> = {
  layer: () => StoreLive,
  target: Effect.map(scopedTable(usersDdl), (name) => tableTarget(name)),
  countRows: (target) =>
    Effect.map(exec(`SELECT count(*)::int FROM ${quote(target.table!.name)}`), (rows) => Number(rows[0]![0]))
}

storeContract("SqlStore, table mode", tableMode)

// The fault injector with nothing armed is the store it wraps.
storeContract("FaultyStore over SqlStore, table mode, nothing armed", {
  ...tableMode,
  layer: () => FaultyStore.layer.pipe(Layer.provide(SqlStore.layer()), Layer.provideMerge(PgLive))
})

storeContract("SqlStore, generic mode", {
  layer: () => StoreLive,
  target: genericTarget(),
  countRows: (target) =>
    Effect.map(
      exec(`SELECT count(*)::int FROM "effect_write_through_entries" WHERE "entity" = $1`, [target.entity]),
      (rows) => Number(rows[0]![0])
    )
})

describe("SqlStore", () => {
  describe("schema checks when a collection is prepared", () => {
    it.live("a table without the version column: the DDL adds it, and existing rows get a version", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable((t) => `CREATE TABLE ${quote(t)} (id text primary key, name text, email text)`)
        yield* exec(`INSERT INTO ${quote(table)} (id, name, email) VALUES ('old', 'Old', 'old@example.com')`)
        const { error, collection: users } = yield* fixedBySuggestion(
          tableTarget(table),
          `ALTER TABLE ${quote(table)} ADD COLUMN "version" bigint NOT NULL DEFAULT ${nextVersion}`
        )
        expect(error.message).toContain(`table ${quote(table)} needs a bigint version column "version"`)
        const old = Option.getOrThrow(yield* users.get("old"))
        expect(old.value).toEqual(user("old", "Old", "old@example.com"))
        expect(old.version).toBeGreaterThan(0)
        const version = yield* users.put("old", user("old", "Renewed", "old@example.com"))
        expect(version).toBeGreaterThan(old.version)
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    const wrongVersionTypes = [
      { type: "integer", column: "version integer", stored: "2000000000", dropDefault: "DROP DEFAULT" },
      { type: "numeric", column: "version numeric", stored: "12.5", dropDefault: "DROP DEFAULT" },
      { type: "text", column: "version text DEFAULT 'none'", stored: "'not a number'", dropDefault: "DROP DEFAULT" },
      {
        type: "integer",
        column: "version integer GENERATED ALWAYS AS IDENTITY",
        stored: undefined,
        dropDefault: "DROP IDENTITY"
      }
    ] as const
    for (const { type, column, stored, dropDefault } of wrongVersionTypes) {
      it.live(`a version column "${column}": the DDL makes it bigint, each row with a fresh version`, () =>
        Effect.gen(function* () {
          const table = yield* scopedTable(
            (t) => `CREATE TABLE ${quote(t)} (id text primary key, name text, email text, ${column})`
          )
          yield* stored === undefined
            ? exec(`INSERT INTO ${quote(table)} (id, name, email) VALUES ('old', 'Old', 'old@example.com')`)
            : exec(
                `INSERT INTO ${quote(table)} (id, name, email, version) VALUES ('old', 'Old', 'old@example.com', ${stored})`
              )
          const { error, collection: users } = yield* fixedBySuggestion(
            tableTarget(table),
            `ALTER TABLE ${quote(table)} ALTER COLUMN "version" ${dropDefault}, ` +
              `ALTER COLUMN "version" TYPE bigint USING ${nextVersion}, ` +
              `ALTER COLUMN "version" SET DEFAULT ${nextVersion}, ALTER COLUMN "version" SET NOT NULL`
          )
          expect(error.message).toContain(`needs a bigint version column "version" (it is ${type};`)
          // The old row's version was drawn from the store's sequence, so every later write outranks it.
          const old = Option.getOrThrow(yield* users.get("old"))
          expect(old.value).toEqual(user("old", "Old", "old@example.com"))
          expect(old.version).toBeGreaterThan(0)
          expect(old.version).toBeLessThanOrEqual(Number((yield* exec(`SELECT last_value FROM ${sequence}`))[0]![0]))
          expect(yield* users.put("old", user("old", "Renewed"))).toBeGreaterThan(old.version)
          expect(
            yield* exec(
              `SELECT data_type FROM information_schema.columns WHERE table_name = $1 AND column_name = 'version'`,
              [table]
            )
          ).toEqual([["bigint"]])
        }).pipe(Effect.scoped, Effect.provide(StoreLive))
      )
    }

    it.live("a missing table: the DDL creates it", () =>
      Effect.gen(function* () {
        const table = unique("missing")
        yield* Effect.addFinalizer(() => exec(`DROP TABLE IF EXISTS ${quote(table)}`).pipe(Effect.orDie))
        const { error } = yield* fixedBySuggestion(
          tableTarget(table),
          `CREATE TABLE ${quote(table)} ("id" text PRIMARY KEY, "name" text, "email" text, ` +
            `"version" bigint NOT NULL DEFAULT ${nextVersion})`
        )
        expect(error.message).toContain(`table "${table}" does not exist`)
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("a missing value column: the DDL adds it as text, and says text is for a string field", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(
          (t) => `CREATE TABLE ${quote(t)} (id text primary key, name text, version bigint)`
        )
        const { error } = yield* fixedBySuggestion(
          tableTarget(table),
          `ALTER TABLE ${quote(table)} ADD COLUMN "email" text`
        )
        expect(error.message).toContain(`table "${table}" has no column "email"`)
        expect(error.message).toContain(
          `a column added for a value field is text, which holds a field that encodes to a string`
        )
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("a missing key column: the DDL adds it as UNIQUE beside a primary key, else as the primary key", () =>
      Effect.gen(function* () {
        const withPrimaryKey = yield* scopedTable(usersDdl)
        const beside = yield* fixedBySuggestion(
          tableTarget(withPrimaryKey, { primaryKey: "user_id" }),
          `ALTER TABLE ${quote(withPrimaryKey)} ADD COLUMN "user_id" text UNIQUE`
        )
        expect(beside.error.message).toContain(`table "${withPrimaryKey}" has no column "user_id"`)

        const withoutPrimaryKey = yield* scopedTable(
          (t) => `CREATE TABLE ${quote(t)} (id text, name text, email text, version bigint)`
        )
        yield* fixedBySuggestion(
          tableTarget(withoutPrimaryKey, { primaryKey: "user_id" }),
          `ALTER TABLE ${quote(withoutPrimaryKey)} ADD COLUMN "user_id" text PRIMARY KEY`
        )
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    const keysOnConflictCannotUse: ReadonlyArray<{
      readonly defect: string
      readonly columns: string
      readonly index?: (table: string) => string
      readonly fix: (table: string) => string
    }> = [
      {
        defect: "no unique index",
        columns: "id text, name text, email text, version bigint",
        fix: () => `ADD PRIMARY KEY ("id")`
      },
      {
        defect: "a composite primary key",
        columns: "id text, name text, email text, version bigint, PRIMARY KEY (id, name)",
        fix: () => `ADD UNIQUE ("id")`
      },
      {
        defect: "a partial unique index",
        columns: "id text, name text, email text, version bigint",
        index: (t) => `CREATE UNIQUE INDEX ON ${quote(t)} (id) WHERE id <> ''`,
        fix: () => `ADD PRIMARY KEY ("id")`
      },
      {
        defect: "a deferrable primary key",
        columns: "id text PRIMARY KEY DEFERRABLE, name text, email text, version bigint",
        fix: (t) => `DROP CONSTRAINT ${quote(`${t}_pkey`)}, ADD PRIMARY KEY ("id")`
      }
    ]
    for (const { defect, columns, index, fix } of keysOnConflictCannotUse) {
      it.live(`a key column with ${defect}: the DDL gives it a key ON CONFLICT can use`, () =>
        Effect.gen(function* () {
          const table = yield* scopedTable((t) => `CREATE TABLE ${quote(t)} (${columns})`)
          if (index !== undefined) yield* exec(index(table))
          const { error } = yield* fixedBySuggestion(tableTarget(table), `ALTER TABLE ${quote(table)} ${fix(table)}`)
          expect(error.message).toContain(
            `column "id" of "${table}" must be a primary key or have a unique index on it alone, neither partial nor deferrable`
          )
        }).pipe(Effect.scoped, Effect.provide(StoreLive))
      )
    }

    it.live("a deferrable unique constraint beside the primary key is refused, since ON CONFLICT refuses it", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(
          (t) =>
            `CREATE TABLE ${quote(t)} (id text PRIMARY KEY, name text, email text, version bigint, UNIQUE (id) DEFERRABLE)`
        )
        // What the check prevents: every upsert failing.
        const refused = yield* Effect.flip(
          exec(`INSERT INTO ${quote(table)} (id) VALUES ('1') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name`)
        )
        expect(refused.cause).toMatchObject({ code: "55000" })
        const { error } = yield* fixedBySuggestion(
          tableTarget(table),
          `ALTER TABLE ${quote(table)} DROP CONSTRAINT ${quote(`${table}_id_key`)}`
        )
        expect(error.message).toContain(
          `column "id" of "${table}" has a deferrable unique constraint on it alone ("${table}_id_key"), which ON CONFLICT refuses`
        )
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("several mismatches at once: one statement fixes them all", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable((t) => `CREATE TABLE ${quote(t)} (id text, name text)`)
        const { error } = yield* fixedBySuggestion(
          tableTarget(table),
          `ALTER TABLE ${quote(table)} ADD COLUMN "email" text, ` +
            `ADD COLUMN "version" bigint NOT NULL DEFAULT ${nextVersion}, ADD PRIMARY KEY ("id")`
        )
        expect(error.message).toContain(`table "${table}" has no column "email"`)
        expect(error.message).toContain(`table "${table}" needs a bigint version column "version"`)
        expect(error.message).toContain(`column "id" of "${table}" must be a primary key`)
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("the DDL names the table with its schema and quotes every identifier", () =>
      Effect.gen(function* () {
        const schema = unique(`wt "sch'ema`)
        yield* scopedRelation(
          schema,
          `CREATE SCHEMA ${quote(schema)}`,
          `DROP SCHEMA IF EXISTS ${quote(schema)} CASCADE`
        )
        const table = unique(`we"ird ta'ble`)
        const qualifiedTable = `${quote(schema)}.${quote(table)}`
        yield* exec(`CREATE TABLE ${qualifiedTable} ("user id" text PRIMARY KEY DEFERRABLE, name text)`)
        const { error } = yield* fixedBySuggestion(
          {
            entity: table,
            fields: ["user id", "name", "email"],
            table: {
              name: table,
              schema,
              primaryKey: "user id",
              versionColumn: `row "version"`,
              columns: { email: `e-mail "address"` }
            }
          },
          `ALTER TABLE ${qualifiedTable} ADD COLUMN "e-mail ""address""" text, ` +
            `ADD COLUMN "row ""version""" bigint NOT NULL DEFAULT ${nextVersion}, ` +
            `DROP CONSTRAINT ${quote(`${table}_pkey`)}, ADD PRIMARY KEY ("user id")`,
          { "user id": "fits", name: "Ada", email: "ada@example.com" }
        )
        expect(error.message).toContain(`table ${qualifiedTable} has no column "e-mail ""address"""`)
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("a unique index on the key column alone is enough", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(
          (t) => `CREATE TABLE ${quote(t)} (id text NOT NULL UNIQUE, name text, email text, version bigint)`
        )
        const store = yield* Store.Store
        const users = yield* store.collection(tableTarget(table))
        const first = yield* users.put("1", user("1", "Ada"))
        const second = yield* users.put("1", user("1", "Grace"))
        expect(second).toBeGreaterThan(first)
        expect(yield* users.get("1")).toEqual(Option.some({ version: second, value: user("1", "Grace") }))
        expect(yield* exec(`SELECT count(*)::int FROM ${quote(table)}`)).toEqual([[1]])
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("an entity without value fields cannot be mapped onto a table", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(usersDdl)
        const error = yield* schemaFailure({ ...tableTarget(table), fields: undefined })
        expect(error.message).toContain("must encode to an object with fields")
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("a version sequence or generic table name that is not a plain identifier is refused", () =>
      Effect.gen(function* () {
        for (const options of [{ versionSequence: `x"; DROP TABLE users; --` }, { genericTable: "a b" }]) {
          const error = yield* Effect.flip(SqlStore.make(options))
          expect(error).toMatchObject({ _tag: "StoreError", reason: "Schema", operation: "make" })
          expect(error.message).toContain("is not a plain SQL identifier")
        }
      }).pipe(Effect.provide(PgLive))
    )
  })

  describe("table mapping", () => {
    it.live("a value field stored in a column of another name, and a custom version column", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(
          (t) =>
            `CREATE TABLE ${quote(t)} (id text primary key, name text, email_address text, row_version bigint not null)`
        )
        const store = yield* Store.Store
        const users = yield* store.collection(
          tableTarget(table, { columns: { email: "email_address" }, versionColumn: "row_version" })
        )
        const version = yield* users.put("1", user("1", "Ada", "ada@example.com"))
        expect(yield* users.get("1")).toEqual(Option.some({ version, value: user("1", "Ada", "ada@example.com") }))
        expect(yield* exec(`SELECT id, name, email_address, row_version FROM ${quote(table)}`)).toEqual([
          ["1", "Ada", "ada@example.com", String(version)]
        ])
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("a schema-qualified table is found in its schema, not in the current one", () =>
      Effect.gen(function* () {
        const schema = unique("wt_schema")
        yield* scopedRelation(
          schema,
          `CREATE SCHEMA ${quote(schema)}`,
          `DROP SCHEMA IF EXISTS ${quote(schema)} CASCADE`
        )
        const table = unique("users")
        yield* exec(
          `CREATE TABLE ${quote(schema)}.${quote(table)} (id text primary key, name text, email text, version bigint)`
        )
        // A decoy of the same name in the current schema, without a version column.
        yield* scopedRelation(
          table,
          `CREATE TABLE ${quote(table)} (id text primary key, name text, email text)`,
          `DROP TABLE IF EXISTS ${quote(table)}`
        )
        const store = yield* Store.Store
        const error = yield* schemaFailure(tableTarget(table))
        expect(error.message).toContain(`"version"`)

        const users = yield* store.collection(tableTarget(table, { schema }))
        const version = yield* users.put("1", user("1", "Ada"))
        expect(yield* users.get("1")).toEqual(Option.some({ version, value: user("1", "Ada") }))
        expect(yield* exec(`SELECT id, version FROM ${quote(schema)}.${quote(table)}`)).toEqual([
          ["1", String(version)]
        ])
        expect(yield* exec(`SELECT count(*)::int FROM ${quote(table)}`)).toEqual([[0]])
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("table and column names that need quoting work, because identifiers are quoted", () =>
      Effect.gen(function* () {
        const table = unique(`we"ird ta'ble`)
        const emailColumn = `e-mail "address"`
        yield* scopedRelation(
          table,
          `CREATE TABLE ${quote(table)} (id text primary key, name text, ${quote(emailColumn)} text, version bigint)`,
          `DROP TABLE IF EXISTS ${quote(table)}`
        )
        const store = yield* Store.Store
        const users = yield* store.collection(tableTarget(table, { columns: { email: emailColumn } }))
        const first = yield* users.put("1", user("1", "Ada", "ada@example.com"))
        const second = yield* users.put("1", user("1", "Ada", "lovelace@example.com"))
        expect(second).toBeGreaterThan(first)
        expect(yield* users.get("1")).toEqual(
          Option.some({ version: second, value: user("1", "Ada", "lovelace@example.com") })
        )
        expect(yield* exec(`SELECT ${quote(emailColumn)} FROM ${quote(table)}`)).toEqual([["lovelace@example.com"]])
        const deleted = yield* users.delete("1")
        expect(deleted).toBeGreaterThan(second)
        expect(yield* users.get("1")).toEqual(Option.none())
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )
  })

  describe("versions", () => {
    it.live("come from one sequence: shared across entities and never reused across delete and re-insert", () =>
      Effect.gen(function* () {
        const sequence = unique("wt_seq")
        yield* Effect.addFinalizer(() => exec(`DROP SEQUENCE IF EXISTS ${quote(sequence)}`).pipe(Effect.orDie))
        const store = yield* SqlStore.make({ versionSequence: sequence })
        const lastValue = Effect.map(exec(`SELECT last_value FROM ${quote(sequence)}`), (rows) => Number(rows[0]![0]))

        const a = yield* store.collection(tableTarget(yield* scopedTable(usersDdl)))
        const b = yield* store.collection(tableTarget(yield* scopedTable(usersDdl)))
        const c = yield* store.collection(yield* genericTarget())

        const steps = [
          a.put("1", user("1", "a1")),
          b.put("1", user("1", "b1")),
          c.put("1", user("1", "c1")),
          a.put("1", user("1", "a2")),
          a.delete("1"),
          b.delete("1"),
          a.put("1", user("1", "a3")),
          c.delete("absent"),
          b.put("1", user("1", "b3")),
          c.put("1", user("1", "c2"))
        ]
        const versions: Array<number> = []
        for (const step of steps) {
          const version = yield* step
          // Each version is the sequence's latest value: drawn from this sequence, for every entity.
          expect(version).toBe(yield* lastValue)
          versions.push(version)
        }
        for (let i = 1; i < versions.length; i++) expect(versions[i]!).toBeGreaterThan(versions[i - 1]!)
        expect(yield* a.get("1")).toEqual(Option.some({ version: versions[6]!, value: user("1", "a3") }))
        expect(yield* b.get("1")).toEqual(Option.some({ version: versions[8]!, value: user("1", "b3") }))
        expect(yield* c.get("1")).toEqual(Option.some({ version: versions[9]!, value: user("1", "c2") }))
      }).pipe(Effect.scoped, Effect.provide(PgLive))
    )

    it.live("a delete that waits on the row lock and a put racing it are ordered by version as they commit", () =>
      Effect.gen(function* () {
        const admin = yield* adminClient
        const table = yield* scopedTable(usersDdl)
        const store = yield* Store.Store
        const users = yield* store.collection(tableTarget(table))
        const initial = yield* users.put("k", user("k", "initial"))

        const release = yield* holdLock(admin, `SELECT 1 FROM ${quote(table)} WHERE id = $1 FOR UPDATE`, ["k"])
        const deleting = yield* Effect.forkScoped(users.delete("k"))
        yield* blockedBackends(admin, table, 1)
        const putting = yield* Effect.forkScoped(users.put("k", user("k", "after the delete")))
        yield* blockedBackends(admin, table, 2)
        yield* release

        const deleted = yield* Fiber.join(deleting)
        const put = yield* Fiber.join(putting)
        expect(deleted).toBeGreaterThan(initial)
        // The delete was first in the lock queue, so it committed first and the put re-inserted the row:
        // the row that survives was committed last and must carry the highest version.
        expect(yield* users.get("k")).toEqual(Option.some({ version: put, value: user("k", "after the delete") }))
        expect(put).toBeGreaterThan(deleted)
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("putMany writes every row in one statement, each with a version of its own", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(usersDdl)
        const store = yield* Store.Store
        const users = yield* store.collection(tableTarget(table))
        const before = yield* users.put("before", user("before", "first"))
        const entries = Array.from({ length: 500 }, (_, i) => [`k${i}`, user(`k${i}`, `name ${i}`)] as const)
        const versions = yield* users.putMany(entries)
        expect(versions.size).toBe(entries.length)
        expect(new Set(versions.values()).size).toBe(entries.length)
        for (const version of versions.values()) expect(version).toBeGreaterThan(before)
        const [count] = yield* exec(`SELECT count(*) FROM ${quote(table)}`)
        expect(Number(count![0])).toBe(entries.length + 1)
        for (const key of ["k0", "k250", "k499"]) {
          const row = Option.getOrThrow(yield* users.get(key))
          expect(row.version).toBe(versions.get(key))
          expect(row.value).toEqual(user(key, `name ${key.slice(1)}`))
        }
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("putMany takes each key's lock: a put of one of its keys waits, and commits the higher version", () =>
      Effect.gen(function* () {
        const admin = yield* adminClient
        const table = yield* scopedTable(usersDdl)
        const store = yield* Store.Store
        const users = yield* store.collection(tableTarget(table))
        const release = yield* holdLock(admin, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`${table}:k`])
        const batch = yield* Effect.forkScoped(
          users.putMany([
            ["a", user("a", "from the batch")],
            ["k", user("k", "from the batch")]
          ])
        )
        yield* blockedBackends(admin, "hashtextextended", 1)
        const single = yield* Effect.forkScoped(users.put("k", user("k", "after the batch")))
        yield* blockedBackends(admin, "hashtextextended", 2)
        yield* release
        const batched = yield* Fiber.join(batch)
        const put = yield* Fiber.join(single)
        expect(put).toBeGreaterThan(batched.get("k")!)
        expect(yield* users.get("k")).toEqual(Option.some({ version: put, value: user("k", "after the batch") }))
        expect(Option.getOrThrow(yield* users.get("a")).version).toBe(batched.get("a"))
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("putMany in the generic table round-trips the values as JSON", () =>
      Effect.gen(function* () {
        const store = yield* Store.Store
        const users = yield* store.collection(yield* genericTarget())
        const versions = yield* users.putMany([
          ["1", user("1", "one")],
          ["2", { list: [1, "two", null], nested: { quote: `"'` } }]
        ])
        expect(yield* users.get("1")).toEqual(Option.some({ version: versions.get("1")!, value: user("1", "one") }))
        expect(yield* users.get("2")).toEqual(
          Option.some({ version: versions.get("2")!, value: { list: [1, "two", null], nested: { quote: `"'` } } })
        )
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("a stored version that is not a positive safe integer fails the read with Decode", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(usersDdl)
        const store = yield* Store.Store
        const users = yield* store.collection(tableTarget(table))
        yield* exec(
          `INSERT INTO ${quote(table)} (id, name, email, version) VALUES ('null', 'n', 'e', NULL), ` +
            `('zero', 'n', 'e', 0), ('huge', 'n', 'e', 9007199254740993)`
        )
        for (const key of ["null", "zero", "huge"]) {
          const error = yield* Effect.flip(users.get(key))
          expect(error).toMatchObject({ _tag: "StoreError", reason: "Decode", operation: "get", key })
        }
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )
  })

  describe("coalesced puts", () => {
    /** Each row's key and the transaction that wrote it (`xmin`). */
    const writers = (table: string) =>
      Effect.map(exec(`SELECT id, xmin::text FROM ${quote(table)} ORDER BY id`), (rows) =>
        rows.map(([id, xmin]) => [String(id), String(xmin)] as const)
      )
    const keys = Array.from({ length: 16 }, (_, i) => `k${String(i).padStart(2, "0")}`)
    const putAll = (users: Store.Store.Collection, name: (key: string) => string | null = (key) => `name ${key}`) =>
      Effect.forEach(keys, (key) => Effect.either(users.put(key, { id: key, name: name(key), email: "e" })), {
        concurrency: "unbounded"
      })

    it.live("the puts of one turn commit in one statement, each with a version of its own", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(usersDdl)
        const users = yield* (yield* Store.Store).collection(tableTarget(table))
        const versions = (yield* putAll(users)).map(Either.getOrThrow)
        expect(new Set(versions).size).toBe(keys.length)
        const written = yield* writers(table)
        expect(written.map(([id]) => id)).toEqual(keys)
        expect(new Set(written.map(([, xmin]) => xmin)).size).toBe(1)
        for (const [i, key] of keys.entries()) {
          expect(yield* users.get(key)).toEqual(
            Option.some({ version: versions[i], value: { id: key, name: `name ${key}`, email: "e" } })
          )
        }
        // With `coalescePuts: false`, a transaction each.
        const apart = yield* (yield* SqlStore.make({ coalescePuts: false })).collection(tableTarget(table))
        yield* putAll(apart)
        expect(new Set((yield* writers(table)).map(([, xmin]) => xmin)).size).toBe(keys.length)
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("in the generic table too: one statement, each value round-tripped as JSON with its own version", () =>
      Effect.gen(function* () {
        const target = yield* genericTarget()
        const users = yield* (yield* Store.Store).collection(target)
        const values = keys.map((key, i) => ({ key, list: [i, "two", null], quote: `"'` }))
        const versions = yield* Effect.forEach(keys, (key, i) => users.put(key, values[i]), {
          concurrency: "unbounded"
        })
        expect(new Set(versions).size).toBe(keys.length)
        const written = yield* exec(`SELECT xmin::text FROM "effect_write_through_entries" WHERE "entity" = $1`, [
          target.entity
        ])
        expect(written).toHaveLength(keys.length)
        expect(new Set(written.map(([xmin]) => xmin)).size).toBe(1)
        for (const [i, key] of keys.entries()) {
          expect(yield* users.get(key)).toEqual(Option.some({ version: versions[i], value: values[i] }))
        }
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("a value the database refuses fails its own put only: the others of its turn commit", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(
          (t) => `CREATE TABLE ${quote(t)} (id text primary key, name text not null, email text, version bigint)`
        )
        const users = yield* (yield* Store.Store).collection(tableTarget(table))
        const results = yield* putAll(users, (key) => (key === "k07" ? null : `name ${key}`))
        for (const [i, key] of keys.entries()) {
          if (key === "k07") {
            expect(Either.getLeft(results[i]!)).toEqual(
              Option.some(expect.objectContaining({ _tag: "StoreError", reason: "Rejected", operation: "put", key }))
            )
          } else {
            const version = Either.getOrThrow(results[i]!)
            expect(yield* users.get(key)).toEqual(
              Option.some({ version, value: { id: key, name: `name ${key}`, email: "e" } })
            )
          }
        }
        expect((yield* writers(table)).map(([id]) => id)).toEqual(keys.filter((key) => key !== "k07"))
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live(
      "a batch waits for a key's lock briefly, then its puts go on their own: no deadlock with another lock order",
      () =>
        Effect.gen(function* () {
          const admin = yield* adminClient
          const table = yield* scopedTable(usersDdl)
          const users = yield* (yield* Store.Store).collection(tableTarget(table))
          // A transaction holds k's lock, as one that locks k and then a would; the batch locks a, then waits for k.
          const release = yield* holdLock(admin, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [
            `${table}:k`
          ])
          const [a, k] = yield* Effect.forEach(["a", "k"], (key) =>
            Effect.forkScoped(users.put(key, user(key, "batched")))
          )
          // The batch gave up its locks: a commits on its own while k's lock is still held.
          const version = yield* Fiber.join(a).pipe(
            Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "a waited for k's lock" })
          )
          expect(yield* users.get("a")).toEqual(Option.some({ version, value: user("a", "batched") }))
          expect(yield* users.get("k")).toEqual(Option.none())
          yield* release
          const kVersion = yield* Fiber.join(k)
          expect(yield* users.get("k")).toEqual(Option.some({ version: kVersion, value: user("k", "batched") }))
        }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )
  })

  describe("coalesced puts: what each put is told when its batch fails", () => {
    // Stand-in writes, for the outcomes PostgreSQL cannot be made to give on cue.
    const unknownOutcome = new Store.StoreOutcomeUnknownError({ entity: "users", key: "a", operation: "put" })
    const putsOf = (putAll: CoalescedPuts.Writes["putAll"]) => {
      const one: Array<string> = []
      const put = CoalescedPuts.make({ putOne: (key) => Effect.sync(() => one.push(key)), putAll })
      return { one, put }
    }

    it.effect("an unknown outcome is every put's, named for its own key", () =>
      Effect.gen(function* () {
        const { one, put } = putsOf(() => Effect.fail(unknownOutcome))
        const errors = yield* Effect.forEach(["a", "b"], (key) => Effect.flip(put(key, {})), {
          concurrency: "unbounded"
        })
        expect(errors.map((error) => [error._tag, error.key, error.operation])).toEqual([
          ["StoreOutcomeUnknownError", "a", "put"],
          ["StoreOutcomeUnknownError", "b", "put"]
        ])
        expect(one).toEqual([])
      })
    )

    it.effect("a batch whose callers all gave up is interrupted, as a lone put is by its caller", () =>
      Effect.gen(function* () {
        const interrupted = yield* Deferred.make<void>()
        const sent = yield* Deferred.make<void>()
        const { put } = putsOf(() =>
          Effect.zipRight(
            Deferred.succeed(sent, undefined),
            Effect.onInterrupt(Effect.never, () => Deferred.succeed(interrupted, undefined))
          )
        )
        const [a, b] = yield* Effect.forEach(["a", "b"], (key) => Effect.fork(put(key, {})))
        yield* Deferred.await(sent)
        yield* Fiber.interrupt(a!)
        expect(yield* Deferred.isDone(interrupted)).toBe(false)
        yield* Fiber.interrupt(b!)
        yield* Deferred.await(interrupted)
      })
    )
  })

  describe("failures", () => {
    it.live("a put the database rejects fails with Rejected and writes nothing", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(
          (t) => `CREATE TABLE ${quote(t)} (id text primary key, name text not null, email text, version bigint)`
        )
        const store = yield* Store.Store
        const users = yield* store.collection(tableTarget(table))
        const version = yield* users.put("kept", user("kept", "Ada"))

        for (const key of ["kept", "fresh"]) {
          const error = yield* Effect.flip(users.put(key, { id: key, name: null, email: "x@example.com" }))
          expect(error).toBeInstanceOf(Store.StoreError)
          expect(error).toMatchObject({ _tag: "StoreError", reason: "Rejected", operation: "put", key })
        }
        expect(yield* users.get("kept")).toEqual(Option.some({ version, value: user("kept", "Ada") }))
        expect(yield* users.get("fresh")).toEqual(Option.none())
        expect(yield* exec(`SELECT id, name FROM ${quote(table)}`)).toEqual([["kept", "Ada"]])
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("an unreachable database: building the PgClient layer fails, so no store is ever built", () =>
      Effect.gen(function* () {
        const port = yield* deadPort
        const unreachable = SqlStore.layer().pipe(
          Layer.provideMerge(
            PgClient.layer({
              host: "127.0.0.1",
              port,
              username: "postgres",
              database: "test",
              applicationName,
              connectTimeout: Duration.millis(500)
            })
          )
        )
        const error = yield* Effect.flip(
          Effect.gen(function* () {
            const store = yield* Store.Store
            const users = yield* store.collection({ entity: unique("users"), fields: userFields, table: undefined })
            return yield* users.put("1", user("1", "Ada"))
          }).pipe(Effect.provide(unreachable))
        )
        expect(error).toMatchObject({ _tag: "SqlError", message: "PgClient: Failed to connect" })
        expect((error as { cause?: { code?: unknown } }).cause).toMatchObject({ code: "ECONNREFUSED" })
      })
    )

    it.live("a call that cannot get a connection fails with Unavailable, not outcome-unknown, and writes nothing", () =>
      Effect.gen(function* () {
        const table = yield* scopedTable(usersDdl)
        const sql = yield* SqlClient.SqlClient
        const store = yield* Store.Store
        const users = yield* store.collection(tableTarget(table))
        const version = yield* users.put("kept", user("kept", "Ada"))

        // The pool's only connection is held by a transaction until `release`.
        const held = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const holder = yield* sql
          .withTransaction(Deferred.succeed(held, undefined).pipe(Effect.zipRight(Deferred.await(release))))
          .pipe(Effect.forkScoped)
        yield* Deferred.await(held)

        const failures = [
          yield* Effect.flip(users.put("fresh", user("fresh", "Grace"))),
          yield* Effect.flip(users.put("kept", user("kept", "Grace"))),
          yield* Effect.flip(users.delete("kept")),
          yield* Effect.flip(users.get("kept")),
          yield* Effect.flip(store.transaction(users.put("fresh", user("fresh", "Grace"))))
        ]
        for (const error of failures) {
          expect(error).toBeInstanceOf(Store.StoreError)
          expect(error).toMatchObject({ _tag: "StoreError", reason: "Unavailable" })
        }
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)

        expect(yield* users.get("kept")).toEqual(Option.some({ version, value: user("kept", "Ada") }))
        expect(yield* users.get("fresh")).toEqual(Option.none())
      }).pipe(
        Effect.scoped,
        Effect.provide(
          // Its own breaker would open after three of these and refuse the rest: this is about each call.
          SqlStore.layer({ breaker: false }).pipe(
            Layer.provideMerge(
              PgClient.layer({
                url: Redacted.make(databaseUrl),
                applicationName,
                connectTimeout: Duration.millis(300),
                maxConnections: 1
              })
            )
          )
        )
      )
    )

    const killed = [
      {
        operation: "put",
        lock: (table: string) => `SELECT 1 FROM ${quote(table)} WHERE id = 'k' FOR UPDATE`,
        call: (users: Store.Store.Collection) => users.put("k", user("k", "never acknowledged"))
      },
      {
        operation: "delete",
        lock: (table: string) => `SELECT 1 FROM ${quote(table)} WHERE id = 'k' FOR UPDATE`,
        call: (users: Store.Store.Collection) => users.delete("k")
      }
    ] as const
    for (const { operation, lock, call } of killed) {
      it.live(`a ${operation} whose connection is killed while it runs fails with StoreOutcomeUnknownError`, () =>
        Effect.gen(function* () {
          const admin = yield* adminClient
          const table = yield* scopedTable(usersDdl)
          const store = yield* Store.Store
          const users = yield* store.collection(tableTarget(table))
          const version = yield* users.put("k", user("k", "before"))

          const release = yield* holdLock(admin, lock(table), [])
          const running = yield* Effect.forkScoped(Effect.either(call(users)))
          const pids = yield* blockedBackends(admin, table)
          expect(pids).toHaveLength(1)
          expect(yield* admin.unsafe(`SELECT pg_terminate_backend($1)`, [pids[0]]).values).toEqual([[true]])
          const result = yield* Fiber.join(running)
          yield* release

          expect(Either.isLeft(result)).toBe(true)
          const error = Either.getLeft(result).pipe(Option.getOrThrow)
          expect(error).toBeInstanceOf(Store.StoreOutcomeUnknownError)
          expect(error).toMatchObject({ _tag: "StoreOutcomeUnknownError", operation, key: "k" })
          // The statement was cut off before it could commit.
          expect(yield* admin.unsafe(`SELECT name, version FROM ${quote(table)}`).values).toEqual([
            ["before", String(version)]
          ])
          expect(yield* recovered(users.get("k"))).toEqual(Option.some({ version, value: user("k", "before") }))
        }).pipe(Effect.scoped, Effect.provide(StoreLive))
      )
    }

    it.live("a get whose connection is killed while it runs fails with Unavailable", () =>
      Effect.gen(function* () {
        const admin = yield* adminClient
        const table = yield* scopedTable(usersDdl)
        const store = yield* Store.Store
        const users = yield* store.collection(tableTarget(table))
        const version = yield* users.put("k", user("k", "before"))

        const release = yield* holdLock(admin, `LOCK TABLE ${quote(table)} IN ACCESS EXCLUSIVE MODE`, [])
        const reading = yield* Effect.forkScoped(Effect.flip(users.get("k")))
        const pids = yield* blockedBackends(admin, table)
        expect(yield* admin.unsafe(`SELECT pg_terminate_backend($1)`, [pids[0]]).values).toEqual([[true]])
        const error = yield* Fiber.join(reading)
        yield* release

        expect(error).toBeInstanceOf(Store.StoreError)
        expect(error).toMatchObject({ _tag: "StoreError", reason: "Unavailable", operation: "get", key: "k" })
        expect(yield* recovered(users.get("k"))).toEqual(Option.some({ version, value: user("k", "before") }))
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )
  })

  describe("what PostgreSQL says when it refuses a statement, without the values", () => {
    const refusalFields = ["id", "short", "count", "note", "payload", "required", "positive", "email"]
    const refusalsTable = scopedTable(
      (t) =>
        `CREATE TABLE ${quote(t)} (id text PRIMARY KEY, short varchar(5), count integer, note text, payload jsonb, ` +
        `required text NOT NULL, positive integer CHECK (positive > 0), email text UNIQUE, version bigint)`,
      "refusals"
    )
    /** The refusals table, created for the test, and its collection. */
    const refusalsCollection = Effect.gen(function* () {
      const table = yield* refusalsTable
      const store = yield* Store.Store
      const rows = yield* store.collection({
        entity: table,
        fields: refusalFields,
        table: { name: table, primaryKey: "id" }
      })
      return { rows, store, table }
    })
    const acceptable = { short: "ok", count: 1, note: "n", payload: null, required: "r", positive: 1, email: null }
    /** A value that is a secret of this test alone: it must reach PostgreSQL and come back nowhere. */
    const secret = () => `secret_${randomUUID().replaceAll("-", "")}`

    /** The StoreError a refused call fails with; anything else fails the test. */
    const refusal = <A, R>(call: Effect.Effect<A, Store.StoreError | Store.StoreOutcomeUnknownError, R>) =>
      Effect.flip(call).pipe(
        Effect.orDie,
        Effect.filterOrDieMessage(
          (error): error is Store.StoreError => error instanceof Store.StoreError,
          "expected a StoreError"
        )
      )

    /**
     * The marker is in nothing the error says: not its message, nor String(error), nor any field
     * but `cause`, which keeps the driver's error as it was.
     */
    const expectUnsaid = (error: Store.StoreError, marker: string) => {
      const { cause: _cause, ...fields } = error
      for (const said of [error.message, String(error), JSON.stringify(fields)]) expect(said).not.toContain(marker)
    }

    /** What the driver's error says, in full: PostgreSQL's message, detail and context. */
    const unredacted = (error: Store.StoreError) => {
      const pg = (error.cause as { cause?: { message?: string; detail?: string; where?: string } }).cause
      return [pg?.message, pg?.detail, pg?.where].join("\n")
    }

    const refusals: ReadonlyArray<{
      readonly what: string
      readonly value: (marker: string, table: string) => Record<string, unknown>
      readonly sqlState: string
      readonly databaseMessage: (table: string) => string
      readonly names?: (table: string) => Partial<Store.StoreError>
      /** Whether PostgreSQL's own message, detail or context repeats the value. */
      readonly repeated: boolean
    }> = [
      {
        what: "a string too long for varchar(5)",
        value: (marker) => ({ short: marker }),
        sqlState: "22001",
        databaseMessage: () => "value too long for type character varying(5)",
        repeated: false
      },
      {
        what: "a string into an integer column",
        value: (marker) => ({ count: marker }),
        sqlState: "22P02",
        databaseMessage: () => `invalid input syntax for type integer: "…"`,
        repeated: true
      },
      {
        what: "a string with double quotes into an integer column",
        value: (marker) => ({ count: `x" ${marker} "y` }),
        sqlState: "22P02",
        databaseMessage: () => `invalid input syntax for type integer: "…"`,
        repeated: true
      },
      {
        what: "a number out of an integer's range",
        value: (marker) => ({ count: marker }),
        sqlState: "22003",
        databaseMessage: () => `value "…" is out of range for type integer`,
        repeated: true
      },
      {
        what: "a NUL byte in text",
        value: (marker) => ({ note: `${marker}\u0000` }),
        sqlState: "22021",
        databaseMessage: () => `invalid byte sequence for encoding "…": 0x…`,
        repeated: false
      },
      {
        what: "a string that is not JSON into jsonb",
        value: (marker) => ({ payload: marker }),
        sqlState: "22P02",
        databaseMessage: () => "invalid input syntax for type json",
        repeated: true
      },
      {
        what: "a NOT NULL violation",
        value: (marker) => ({ required: null, note: marker }),
        sqlState: "23502",
        databaseMessage: (t) => `null value in column "required" of relation "${t}" violates not-null constraint`,
        names: (t) => ({ schema: "public", table: t, column: "required" }),
        repeated: true
      },
      {
        what: "a check constraint violation",
        value: (marker) => ({ positive: -1, note: marker }),
        sqlState: "23514",
        databaseMessage: (t) => `new row for relation "${t}" violates check constraint "${t}_positive_check"`,
        names: (t) => ({ schema: "public", table: t, constraint: `${t}_positive_check` }),
        repeated: true
      },
      {
        what: "a unique violation on another column",
        value: (marker) => ({ email: marker }),
        sqlState: "23505",
        databaseMessage: (t) => `duplicate key value violates unique constraint "${t}_email_key"`,
        names: (t) => ({ schema: "public", table: t, constraint: `${t}_email_key` }),
        repeated: true
      }
    ]
    for (const { what, value, sqlState, databaseMessage, names, repeated } of refusals) {
      it.live(`${what}: PostgreSQL's SQLSTATE, names and message, its values redacted`, () =>
        Effect.gen(function* () {
          const table = yield* refusalsTable
          const target = { entity: table, fields: refusalFields, table: { name: table, primaryKey: "id" } }
          const store = yield* Store.Store
          const rows = yield* store.collection(target)
          // A number, unique all the same, for the column that only takes numbers.
          const marker = sqlState === "22003" ? `9${BigInt(`0x${randomUUID().slice(0, 8)}`)}000000000` : secret()
          // Another row with the marker as its email: the unique violation's case repeats it.
          yield* rows.put("other", { id: "other", ...acceptable, email: marker })

          const error = yield* refusal(rows.put("k", { id: "k", ...acceptable, ...value(marker, table) }))
          expect(error).toBeInstanceOf(Store.StoreError)
          expect(error).toMatchObject({
            _tag: "StoreError",
            reason: "Rejected",
            operation: "put",
            key: "k",
            sqlState,
            databaseMessage: databaseMessage(table),
            ...names?.(table)
          })
          expect(error.message).toBe(
            `store put failed (Rejected) for ${table} "k": PostgreSQL ${sqlState} ${databaseMessage(table)}`
          )
          expectUnsaid(error, marker)
          // The marker did reach PostgreSQL: without the redaction it would be in the error.
          expect(unredacted(error).includes(marker)).toBe(repeated)
          expect(yield* rows.get("k")).toEqual(Option.none())
        }).pipe(Effect.scoped, Effect.provide(StoreLive))
      )
    }

    it.live("a trigger's RAISE: its message is left out, since its author may have put any value in it", () =>
      Effect.gen(function* () {
        const table = yield* refusalsTable
        const refuse = unique("refuse")
        yield* scopedRelation(
          refuse,
          `CREATE FUNCTION ${quote(refuse)}() RETURNS trigger LANGUAGE plpgsql AS ` +
            `$$ BEGIN RAISE EXCEPTION 'refused note %', NEW.note; END $$`,
          `DROP FUNCTION IF EXISTS ${quote(refuse)}() CASCADE`
        )
        yield* exec(
          `CREATE TRIGGER ${quote(refuse)} BEFORE INSERT ON ${quote(table)} FOR EACH ROW EXECUTE FUNCTION ${quote(refuse)}()`
        )
        const store = yield* Store.Store
        const rows = yield* store.collection({
          entity: table,
          fields: refusalFields,
          table: { name: table, primaryKey: "id" }
        })
        const marker = secret()
        const error = yield* refusal(rows.put("k", { id: "k", ...acceptable, note: marker }))
        expect(error).toMatchObject({ _tag: "StoreError", reason: "Rejected", sqlState: "P0001" })
        expect(error.databaseMessage).toBeUndefined()
        expect(error.message).toBe(`store put failed (Rejected) for ${table} "k": PostgreSQL P0001`)
        expectUnsaid(error, marker)
        expect(unredacted(error)).toContain(marker)
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("putMany, get, getMany and delete report what PostgreSQL said the same way", () =>
      Effect.gen(function* () {
        const { rows, store } = yield* refusalsCollection
        const marker = secret()
        const batch = yield* refusal(
          rows.putMany([
            ["a", { id: "a", ...acceptable }],
            ["b", { id: "b", ...acceptable, count: marker }]
          ])
        )
        expect(batch).toMatchObject({
          reason: "Rejected",
          operation: "put",
          sqlState: "22P02",
          databaseMessage: `invalid input syntax for type integer: "…"`
        })
        expectUnsaid(batch, marker)
        expect(unredacted(batch)).toContain(marker)
        expect(yield* rows.getMany(["a", "b"])).toEqual(new Map())

        // An integer key column refuses a key that is not a number, whatever the statement.
        const numbered = yield* scopedTable(
          (t) => `CREATE TABLE ${quote(t)} (id integer PRIMARY KEY, name text, email text, version bigint)`
        )
        const users = yield* store.collection(tableTarget(numbered))
        const refused = {
          reason: "Rejected",
          key: "not a number",
          sqlState: "22P02",
          databaseMessage: `invalid input syntax for type integer: "…"`
        }
        expect(yield* Effect.flip(users.get("not a number"))).toMatchObject({ ...refused, operation: "get" })
        expect(yield* Effect.flip(users.getMany(["not a number"]))).toMatchObject({ ...refused, operation: "get" })
        expect(yield* refusal(users.delete("not a number"))).toMatchObject({ ...refused, operation: "delete" })
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )

    it.live("a transaction found aborted before COMMIT reports PostgreSQL's 25P02", () =>
      Effect.gen(function* () {
        const { rows, store } = yield* refusalsCollection
        const marker = secret()
        const error = yield* Effect.flip(
          store.transaction(
            // The body catches the refusal and goes on, as a body may.
            refusal(rows.put("k", { id: "k", ...acceptable, count: marker })).pipe(
              Effect.tap((refused) => Effect.sync(() => expectUnsaid(refused, marker))),
              Effect.asVoid
            )
          )
        )
        expect(error).toMatchObject({
          _tag: "StoreError",
          reason: "Transaction",
          operation: "transaction",
          sqlState: "25P02",
          databaseMessage: "current transaction is aborted, commands ignored until end of transaction block"
        })
        expect(error.message).toContain(
          "it was rolled back: PostgreSQL 25P02 current transaction is aborted, commands ignored until end of transaction block"
        )
        expect(yield* rows.get("k")).toEqual(Option.none())
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )
  })

  describe("generic mode", () => {
    it.live("creates the generic table and the version sequence if they are missing", () =>
      Effect.gen(function* () {
        const genericTable = unique("wt_entries")
        const versionSequence = unique("wt_seq")
        yield* Effect.addFinalizer(() =>
          exec(`DROP TABLE IF EXISTS ${quote(genericTable)}`).pipe(
            Effect.zipRight(exec(`DROP SEQUENCE IF EXISTS ${quote(versionSequence)}`)),
            Effect.orDie
          )
        )
        const exists = (name: string) =>
          Effect.map(exec(`SELECT to_regclass($1) IS NOT NULL`, [quote(name)]), (rows) => rows[0]![0])
        expect(yield* exists(genericTable)).toBe(false)
        expect(yield* exists(versionSequence)).toBe(false)

        const store = yield* SqlStore.make({ genericTable, versionSequence })
        const entity = unique("users")
        const users = yield* store.collection({ entity, fields: userFields, table: undefined })
        expect(yield* exists(genericTable)).toBe(true)
        expect(yield* exists(versionSequence)).toBe(true)

        const version = yield* users.put("1", user("1", "Ada"))
        expect(yield* users.get("1")).toEqual(Option.some({ version, value: user("1", "Ada") }))
        expect(yield* exec(`SELECT last_value FROM ${quote(versionSequence)}`)).toEqual([[String(version)]])
        expect(yield* exec(`SELECT "entity", "key", "value", "version" FROM ${quote(genericTable)}`)).toEqual([
          [entity, "1", user("1", "Ada"), String(version)]
        ])

        // A second store over the same, now existing, objects sees the same rows.
        const again = yield* SqlStore.make({ genericTable, versionSequence })
        const same = yield* again.collection({ entity, fields: userFields, table: undefined })
        expect(yield* same.get("1")).toEqual(Option.some({ version, value: user("1", "Ada") }))
      }).pipe(Effect.scoped, Effect.provide(PgLive))
    )

    it.live("layerConfig reads the object names from Config", () =>
      Effect.gen(function* () {
        const genericTable = unique("wt_entries")
        const versionSequence = unique("wt_seq")
        yield* Effect.addFinalizer(() =>
          exec(`DROP TABLE IF EXISTS ${quote(genericTable)}`).pipe(
            Effect.zipRight(exec(`DROP SEQUENCE IF EXISTS ${quote(versionSequence)}`)),
            Effect.orDie
          )
        )
        const config = {
          genericTable: Config.string("GENERIC_TABLE"),
          versionSequence: Config.string("VERSION_SEQUENCE")
        }
        const store = yield* Layer.build(SqlStore.layerConfig(config)).pipe(
          Effect.map(Context.get(Store.Store)),
          Effect.withConfigProvider(
            ConfigProvider.fromMap(
              new Map([
                ["GENERIC_TABLE", genericTable],
                ["VERSION_SEQUENCE", versionSequence]
              ])
            )
          )
        )
        const users = yield* store.collection({ entity: unique("users"), fields: userFields, table: undefined })
        const version = yield* users.put("1", user("1", "Ada"))
        expect(yield* exec(`SELECT last_value FROM ${quote(versionSequence)}`)).toEqual([[String(version)]])
        const missing = yield* Layer.build(SqlStore.layerConfig(config)).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map())),
          Effect.flip
        )
        expect(ConfigError.isConfigError(missing)).toBe(true)
      }).pipe(Effect.scoped, Effect.provide(PgLive))
    )

    it.live("values that are not objects round-trip as JSON", () =>
      Effect.gen(function* () {
        const store = yield* Store.Store
        const values = yield* store.collection(yield* genericTarget("values", undefined))
        const samples: ReadonlyArray<unknown> = [
          [1, "two", { three: 3 }],
          "a string",
          42,
          true,
          null,
          { nested: { list: [null, "x"] } }
        ]
        for (const [i, value] of samples.entries()) {
          const version = yield* values.put(String(i), value)
          expect(yield* values.get(String(i))).toEqual(Option.some({ version, value }))
        }
      }).pipe(Effect.scoped, Effect.provide(StoreLive))
    )
  })
})

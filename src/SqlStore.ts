/**
 * The `Store` on a SQL database through `@effect/sql` (PostgreSQL, through
 * `@effect/sql-pg`).
 *
 * An entity with a `table` maps onto a real table: one column per value field,
 * the key in the primary key column, and a `bigint` version column filled from a
 * sequence. Without a `table` it lives in a generic key/JSON table.
 *
 * Versions come from one sequence. Every write to a key first takes a
 * transaction-scoped advisory lock on the key and draws its version while holding
 * it, so per key versions increase in commit order, across delete and re-insert
 * too (an `INSERT ... VALUES (nextval(...))` alone draws before it waits on a
 * concurrent delete, and would commit after a higher version).
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { currentStoreTransaction } from "./internal/transactionContext.js"
import { type Row, Store, StoreError, StoreOutcomeUnknownError, type Target } from "./Store.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The sequence versions are drawn from; created if missing. Default `effect_write_through_version`. */
  readonly versionSequence?: string | undefined
  /** The table for entities without a `table`; created if missing. Default `effect_write_through_entries`. */
  readonly genericTable?: string | undefined
}

const identifierPattern = /^[A-Za-z_][A-Za-z0-9_$]*$/

const quote = (identifier: string): string => `"${identifier.replace(/"/g, '""')}"`

const qualified = (schema: string | undefined, name: string): string =>
  schema === undefined ? quote(name) : `${quote(schema)}.${quote(name)}`

// A SQLSTATE from the server means the statement was refused and rolled back,
// except for the classes that also mean the connection went away mid-statement.
const sqlState = (error: SqlError): string | undefined => {
  const code = (error.cause as { code?: unknown } | undefined)?.code
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined
}

const connectionLost = (state: string | undefined): boolean =>
  state === undefined || state.startsWith("08") || state.startsWith("57P")

const neverSent = (error: SqlError): boolean => error.message.startsWith("Failed to acquire connection")

interface Layout {
  readonly selectSql: string
  readonly putSql: string
  readonly deleteSql: string
  readonly selectParams: (key: string) => ReadonlyArray<unknown>
  /** Like `selectSql` for an array of keys, each row ending with its version and then its key as text. */
  readonly selectManySql: string
  readonly selectManyParams: (keys: ReadonlyArray<string>) => ReadonlyArray<unknown>
  readonly putParams: (key: string, value: unknown) => ReadonlyArray<unknown>
  /** A multi-row upsert of `rows` rows, each drawing its own version, returning each row's key (as text) and version. */
  readonly putManySql: (rows: number) => string
  readonly putManyParams: (entries: ReadonlyArray<readonly [key: string, value: unknown]>) => ReadonlyArray<unknown>
  /** The advisory lock's name of a key, as the single-row statements compute it. */
  readonly lockName: (key: string) => string
  readonly deleteParams: (key: string) => ReadonlyArray<unknown>
  /** Turns a selected row (its columns in order, the version last) into an encoded value. */
  readonly toValue: (row: ReadonlyArray<unknown>) => unknown
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Store.Service, StoreError, SqlClient.SqlClient> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const sequenceName = options.versionSequence ?? "effect_write_through_version"
    const genericName = options.genericTable ?? "effect_write_through_entries"
    for (const name of [sequenceName, genericName]) {
      if (!identifierPattern.test(name)) {
        return yield* new StoreError({
          entity: "*",
          key: "",
          operation: "make",
          reason: "Schema",
          detail: `${JSON.stringify(name)} is not a plain SQL identifier`
        })
      }
    }
    const sequence = quote(sequenceName)
    const nextVersion = `nextval('${sequence}')`
    // `$n` is the lock's name: the entity and the key, hashed to the advisory lock's bigint.
    const withKeyLock = (n: number) =>
      `WITH "wt_lock" AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended($${n}, 0)))`
    const lockedVersion = `(SELECT ${nextVersion} FROM "wt_lock")`
    // One row whatever the delete found: a delete of an absent key still fences off one that raced ahead of it.
    const deleteStatement = (n: number, table: string, where: string) =>
      `${withKeyLock(n)}, "wt_deleted" AS (DELETE FROM ${table} WHERE ${where} AND EXISTS (SELECT 1 FROM "wt_lock") ` +
      `RETURNING 1) SELECT ${nextVersion} FROM (SELECT count(*) FROM "wt_deleted") AS "wt_done"`

    const schemaError = (entity: string, detail: string, cause?: SqlError) =>
      new StoreError({
        entity,
        key: "",
        operation: "prepare",
        reason: cause !== undefined && (neverSent(cause) || connectionLost(sqlState(cause))) ? "Unavailable" : "Schema",
        detail,
        cause
      })

    // Concurrent first runs may race on creating the same object; the loser sees a unique violation.
    const ensure = (ddl: string) =>
      sql.unsafe(ddl).raw.pipe(
        Effect.retry({ times: 2, while: (error) => sqlState(error) === "23505" || sqlState(error) === "42P07" }),
        Effect.mapError((cause) => schemaError("*", `could not run ${ddl}`, cause))
      )

    yield* ensure(`CREATE SEQUENCE IF NOT EXISTS ${sequence}`)

    const genericLayout = (entity: string): Layout => {
      const table = quote(genericName)
      return {
        selectSql: `SELECT "value", "version" FROM ${table} WHERE "entity" = $1 AND "key" = $2`,
        putSql:
          `${withKeyLock(4)} INSERT INTO ${table} ("entity", "key", "value", "version") ` +
          `VALUES ($1, $2, $3::jsonb, ${lockedVersion}) ` +
          `ON CONFLICT ("entity", "key") DO UPDATE SET "value" = EXCLUDED."value", "version" = EXCLUDED."version" ` +
          `RETURNING "version"`,
        deleteSql: deleteStatement(3, table, `"entity" = $1 AND "key" = $2`),
        selectParams: (key) => [entity, key],
        selectManySql: `SELECT "value", "version", "key" FROM ${table} WHERE "entity" = $1 AND "key" = ANY($2)`,
        selectManyParams: (keys) => [entity, keys],
        // Serialized here: pg would send a top-level array as a Postgres array, not JSON.
        putParams: (key, value) => [entity, key, JSON.stringify(value), `${entity}:${key}`],
        putManySql: (rows) =>
          `INSERT INTO ${table} ("entity", "key", "value", "version") VALUES ` +
          Array.from({ length: rows }, (_, i) => `($1, $${2 * i + 2}, $${2 * i + 3}::jsonb, ${nextVersion})`).join(
            ", "
          ) +
          ` ON CONFLICT ("entity", "key") DO UPDATE SET "value" = EXCLUDED."value", "version" = EXCLUDED."version" ` +
          `RETURNING "key", "version"`,
        putManyParams: (entries) => [entity, ...entries.flatMap(([key, value]) => [key, JSON.stringify(value)])],
        lockName: (key) => `${entity}:${key}`,
        deleteParams: (key) => [entity, key, `${entity}:${key}`],
        toValue: (row) => row[0]
      }
    }

    const tableLayout = Effect.fnUntraced(function* (target: Target) {
      const table = target.table!
      const fields = target.fields
      if (fields === undefined) {
        return yield* schemaError(target.entity, `a table-mapped entity's value must encode to an object with fields`)
      }
      const columnOf = (field: string) => table.columns?.[field] ?? field
      const versionColumn = table.versionColumn ?? "version"
      const rows = yield* sql
        .unsafe(
          `SELECT column_name, data_type FROM information_schema.columns ` +
            `WHERE table_schema = coalesce($1, current_schema()) AND table_name = $2`,
          [table.schema ?? null, table.name]
        )
        .values.pipe(Effect.mapError((cause) => schemaError(target.entity, `could not inspect ${table.name}`, cause)))
      const name = qualified(table.schema, table.name)
      if (rows.length === 0) {
        return yield* schemaError(target.entity, `table ${name} does not exist`)
      }
      const types = new Map(rows.map((row) => [String(row[0]), String(row[1])]))
      const missing = [table.primaryKey, ...fields.map(columnOf)].filter((column) => !types.has(column))
      if (missing.length > 0) {
        return yield* schemaError(target.entity, `table ${name} has no column ${missing.map(quote).join(", ")}`)
      }
      if (types.get(versionColumn) !== "bigint") {
        return yield* schemaError(
          target.entity,
          `table ${name} needs a bigint version column ${quote(versionColumn)}` +
            (types.has(versionColumn) ? ` (it is ${types.get(versionColumn)})` : "") +
            `; add it with: ALTER TABLE ${name} ADD COLUMN ${quote(versionColumn)} bigint NOT NULL DEFAULT ${nextVersion}`
        )
      }
      const unique = yield* sql
        .unsafe(
          `SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] ` +
            // Only an index ON CONFLICT can use as its arbiter: not partial, not deferrable.
            `WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indnkeyatts = 1 AND a.attname = $2 ` +
            `AND i.indpred IS NULL AND i.indimmediate`,
          [name, table.primaryKey]
        )
        .values.pipe(Effect.mapError((cause) => schemaError(target.entity, `could not inspect ${name}`, cause)))
      if (unique.length === 0) {
        return yield* schemaError(
          target.entity,
          `column ${quote(table.primaryKey)} of ${name} must be a primary key or have a unique index on it alone, neither partial nor deferrable`
        )
      }

      const keyField = fields.find((field) => columnOf(field) === table.primaryKey)
      const valueFields = fields.filter((field) => field !== keyField)
      const pk = quote(table.primaryKey)
      const version = quote(versionColumn)
      const selected = fields.map((field) => quote(columnOf(field)))
      const written = valueFields.map((field) => quote(columnOf(field)))
      const updates = [...written, version].map((column) => `${column} = EXCLUDED.${column}`)
      return {
        selectSql: `SELECT ${[...selected, version].join(", ")} FROM ${name} WHERE ${pk} = $1`,
        putSql:
          `${withKeyLock(written.length + 2)} INSERT INTO ${name} (${[pk, ...written, version].join(", ")}) ` +
          `VALUES (${["$1", ...written.map((_, i) => `$${i + 2}`), lockedVersion].join(", ")}) ` +
          `ON CONFLICT (${pk}) DO UPDATE SET ${updates.join(", ")} RETURNING ${version}`,
        deleteSql: deleteStatement(2, name, `${pk} = $1`),
        selectParams: (key) => [key],
        selectManySql: `SELECT ${[...selected, version, `${pk}::text`].join(", ")} FROM ${name} WHERE ${pk} = ANY($1)`,
        selectManyParams: (keys) => [keys],
        putParams: (key, value) => {
          const record = value as Record<string, unknown>
          return [key, ...valueFields.map((field) => record[field] ?? null), `${target.entity}:${key}`]
        },
        putManySql: (rows) => {
          const width = written.length + 1
          const values = Array.from(
            { length: rows },
            (_, row) =>
              `(${Array.from({ length: width }, (_, column) => `$${row * width + column + 1}`).join(", ")}, ${nextVersion})`
          )
          return (
            `INSERT INTO ${name} (${[pk, ...written, version].join(", ")}) VALUES ${values.join(", ")} ` +
            `ON CONFLICT (${pk}) DO UPDATE SET ${updates.join(", ")} RETURNING ${pk}::text, ${version}`
          )
        },
        putManyParams: (entries) =>
          entries.flatMap(([key, value]) => {
            const record = value as Record<string, unknown>
            return [key, ...valueFields.map((field) => record[field] ?? null)]
          }),
        lockName: (key) => `${target.entity}:${key}`,
        deleteParams: (key) => [key, `${target.entity}:${key}`],
        toValue: (row) => {
          const value: Record<string, unknown> = {}
          for (let i = 0; i < fields.length; i++) value[fields[i]!] = row[i]
          return value
        }
      } satisfies Layout
    })

    // A transaction of the store's own. @effect/sql dies when its ROLLBACK fails (the connection is
    // gone), and the death hides the failure that led to the ROLLBACK; yet nothing committed, the
    // transaction having gone with its connection. Only a failing COMMIT leaves the outcome unknown:
    // that stays a defect.
    const ownTransaction = <A, E, R>(
      effect: Effect.Effect<A, E, R>,
      beginFailed: (cause: unknown) => StoreError
    ): Effect.Effect<A, E | StoreError, R> =>
      Effect.suspend(() => {
        let began = false
        let beforeCommit: Exit.Exit<A, E> | undefined
        return sql
          .withTransaction(
            Effect.suspend(() => {
              began = true
              return effect
            }).pipe(
              Effect.onExit((exit) =>
                Effect.sync(() => {
                  beforeCommit = exit
                })
              )
            )
          )
          .pipe(
            Effect.catchAllCause((cause): Effect.Effect<A, E | StoreError> => {
              if (!began) return Effect.fail(beginFailed(Cause.squash(cause)))
              if (beforeCommit !== undefined && Exit.isFailure(beforeCommit)) return beforeCommit
              return Effect.failCause(cause as Cause.Cause<E>)
            })
          )
      })

    const collection = Effect.fnUntraced(function* (target: Target) {
      if (target.table === undefined) {
        yield* ensure(
          `CREATE TABLE IF NOT EXISTS ${quote(genericName)} ("entity" text NOT NULL, "key" text NOT NULL, ` +
            `"value" jsonb NOT NULL, "version" bigint NOT NULL, PRIMARY KEY ("entity", "key"))`
        )
      }
      const layout = target.table === undefined ? genericLayout(target.entity) : yield* tableLayout(target)
      const entity = target.entity

      const readFailure = (operation: string, key: string) => (error: SqlError) =>
        new StoreError({
          entity,
          key,
          operation,
          reason: neverSent(error) || connectionLost(sqlState(error)) ? "Unavailable" : "Rejected",
          cause: error
        })

      const writeFailure = (operation: string, key: string) => (error: SqlError) => {
        const state = sqlState(error)
        return neverSent(error) || !connectionLost(state)
          ? new StoreError({
              entity,
              key,
              operation,
              reason: neverSent(error) ? "Unavailable" : "Rejected",
              cause: error
            })
          : new StoreOutcomeUnknownError({ entity, key, operation, cause: error })
      }

      const toVersion = (operation: string, key: string, raw: unknown) => {
        const version = Number(raw)
        return Number.isSafeInteger(version) && version > 0
          ? Effect.succeed(version)
          : Effect.fail(
              new StoreError({
                entity,
                key,
                operation,
                reason: "Decode",
                detail: `version ${String(raw)} is not a positive safe integer`
              })
            )
      }

      // Inside a transaction the version comes back before COMMIT: only the transaction begun by
      // this store's `transaction` (for WriteThrough.transaction, which publishes after COMMIT) may
      // write; in any other one the cache would hear of a write that may still roll back.
      const writable = <A, E>(
        operation: string,
        key: string,
        write: Effect.Effect<A, E>
      ): Effect.Effect<A, E | StoreError> =>
        Effect.flatMap(
          Effect.serviceOption(SqlClient.TransactionConnection),
          (transaction): Effect.Effect<A, E | StoreError> =>
            Option.isNone(transaction)
              ? write
              : Effect.flatMap(FiberRef.get(currentStoreTransaction), (own): Effect.Effect<A, E | StoreError> =>
                  own === transaction.value
                    ? write
                    : Effect.fail(
                        new StoreError({
                          entity,
                          key,
                          operation,
                          reason: "Transaction",
                          detail:
                            "write-through inside sql.withTransaction would publish to the cache before COMMIT; " +
                            "use WriteThrough.transaction, which publishes after COMMIT, or commit first"
                        })
                      )
                )
        )

      return {
        get: (key) =>
          sql.unsafe(layout.selectSql, layout.selectParams(key)).values.pipe(
            Effect.mapError(readFailure("get", key)),
            Effect.flatMap((rows): Effect.Effect<Option.Option<Row>, StoreError> => {
              const row = rows[0]
              if (row === undefined) return Effect.succeedNone
              return Effect.map(toVersion("get", key, row[row.length - 1]), (version) =>
                Option.some({ version, value: layout.toValue(row) })
              )
            })
          ),
        getMany: (keys) =>
          keys.length === 0
            ? Effect.succeed(new Map())
            : sql.unsafe(layout.selectManySql, layout.selectManyParams(keys)).values.pipe(
                Effect.mapError(readFailure("get", keys[0]!)),
                Effect.flatMap((rows) =>
                  Effect.forEach(rows, (row) => {
                    const key = String(row[row.length - 1])
                    return Effect.map(
                      toVersion("get", key, row[row.length - 2]),
                      (version) => [key, { version, value: layout.toValue(row) }] as const
                    )
                  })
                ),
                Effect.map((entries): ReadonlyMap<string, Row> => new Map(entries))
              ),
        put: (key, value) =>
          writable(
            "put",
            key,
            sql.unsafe(layout.putSql, layout.putParams(key, value)).values.pipe(
              Effect.mapError(writeFailure("put", key)),
              Effect.flatMap((rows) => toVersion("put", key, rows[0]?.[0]))
            )
          ),
        putMany: (entries) => {
          if (entries.length === 0) return Effect.succeed(new Map())
          const first = entries[0]![0]
          // The keys' locks first, in one order for every writer (no deadlock between two batches), then
          // one multi-row upsert whose rows draw their versions while the locks are held: both in one
          // transaction, the caller's own (WriteThrough.transaction) or one of their own.
          const lockAll = sql.unsafe(
            `SELECT pg_advisory_xact_lock(hashtextextended("wt_name", 0)) ` +
              `FROM unnest($1::text[]) AS "wt_name" ORDER BY "wt_name"`,
            [entries.map(([key]) => layout.lockName(key))]
          ).values
          const upsert = sql.unsafe(layout.putManySql(entries.length), layout.putManyParams(entries)).values
          const write = (failure: (error: SqlError) => StoreError | StoreOutcomeUnknownError) =>
            Effect.zipRight(lockAll, upsert).pipe(
              Effect.mapError(failure),
              Effect.flatMap((results) =>
                Effect.forEach(results, (row) =>
                  Effect.map(toVersion("put", String(row[0]), row[1]), (version) => [String(row[0]), version] as const)
                )
              ),
              Effect.map((versions): ReadonlyMap<string, number> => new Map(versions))
            )
          return writable(
            "put",
            first,
            Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) =>
              Option.isSome(transaction)
                ? // The caller's transaction: a lost connection there is the caller's to judge.
                  write(writeFailure("put", first))
                : // One of our own: a statement that fails leaves nothing committed, whatever the reason.
                  ownTransaction(
                    write(readFailure("put", first)),
                    (cause) =>
                      new StoreError({
                        entity,
                        key: first,
                        operation: "put",
                        reason: "Unavailable",
                        detail: "could not begin a transaction",
                        cause
                      })
                  )
            )
          )
        },
        delete: (key) =>
          writable(
            "delete",
            key,
            sql.unsafe(layout.deleteSql, layout.deleteParams(key)).values.pipe(
              Effect.mapError(writeFailure("delete", key)),
              Effect.flatMap((rows) => toVersion("delete", key, rows[0]?.[0]))
            )
          )
      } satisfies Store.Collection
    })

    const transactionError = (detail: string, cause?: unknown) =>
      new StoreError({ entity: "*", key: "", operation: "transaction", reason: "Transaction", detail, cause })

    const transaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
      Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (outer) => {
        // Nested in another transaction, this one's COMMIT would only release a savepoint.
        if (Option.isSome(outer)) {
          return Effect.fail(
            transactionError(
              "cannot begin inside another SQL transaction: its COMMIT, not this one's, would decide the writes"
            )
          )
        }
        return ownTransaction(
          Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (own) =>
            Effect.locally(effect, currentStoreTransaction, Option.getOrUndefined(own)).pipe(
              // After an error PostgreSQL aborts the transaction and answers its COMMIT with a ROLLBACK, not
              // an error: a statement whose error `effect` caught would go unnoticed. One more statement
              // tells, since in an aborted transaction it fails.
              Effect.zipLeft(
                sql`SELECT 1`.pipe(
                  Effect.mapError((cause) =>
                    transactionError(
                      "checked before COMMIT, the transaction cannot commit (an earlier statement failed and aborted it, or its connection is gone): it was rolled back",
                      cause
                    )
                  )
                )
              )
            )
          ),
          (cause) => transactionError("could not begin the transaction", cause)
        )
      })

    return Store.of({
      collection,
      transaction,
      inTransaction: Effect.map(Effect.serviceOption(SqlClient.TransactionConnection), Option.isSome)
    })
  })

/**
 * Needs a `SqlClient`, for example from `PgClient.layer`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Store, StoreError, SqlClient.SqlClient> =>
  Layer.effect(Store, make(options))

/**
 * For example `SqlStore.layerConfig({ versionSequence: Config.string("VERSION_SEQUENCE") })`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<Store, StoreError | ConfigError.ConfigError, SqlClient.SqlClient> =>
  Layer.effect(Store, Effect.flatMap(Config.unwrap(options), make))

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

/** The fields of node-postgres's `DatabaseError` that a `StoreError` may repeat. */
interface PgError {
  readonly code: string
  readonly message: string
  readonly routine?: unknown
  readonly schema?: unknown
  readonly table?: unknown
  readonly column?: unknown
  readonly dataType?: unknown
  readonly constraint?: unknown
}

// @effect/sql-pg wraps the driver's error in a SqlError; a begin that failed may come bare.
const pgError = (failure: unknown): PgError | undefined => {
  const error = failure instanceof SqlError ? failure.cause : failure
  if (typeof error !== "object" || error === null) return undefined
  const { code, message } = error as { code?: unknown; message?: unknown }
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) && typeof message === "string"
    ? (error as PgError)
    : undefined
}

// A SQLSTATE from the server means the statement was refused and rolled back,
// except for the classes that also mean the connection went away mid-statement.
const sqlState = (error: SqlError): string | undefined => pgError(error)?.code

const namedFields = ["constraint", "schema", "table", "column", "dataType"] as const

/**
 * PostgreSQL's message with its values redacted, by the rule `StoreError.databaseMessage` documents.
 * PostgreSQL quotes names and values alike and does not escape a quote inside a value, so once a
 * quoted text is not a name it reported, nothing up to the last quote can be trusted to be a name.
 */
const redactValues = (message: string, names: ReadonlySet<string>): string => {
  let redacted = message
  let open = message.indexOf('"')
  while (open >= 0) {
    const close = message.indexOf('"', open + 1)
    if (close < 0 || !names.has(message.slice(open + 1, close))) {
      redacted = `${message.slice(0, open)}"…"${message.slice(message.lastIndexOf('"') + 1)}`
      break
    }
    open = message.indexOf('"', close + 1)
  }
  // The bytes of an invalid encoding are bytes of the value.
  return redacted.replace(/\b0x[0-9A-Fa-f]{2}(?: 0x[0-9A-Fa-f]{2})*\b/g, "0x…")
}

/**
 * The fields of a `StoreError` about a failure of the database: what PostgreSQL reported, without
 * the values of the statement, and the failure itself as `cause`.
 */
const databaseFailure = (
  failure: unknown
): Pick<StoreError, "cause" | "sqlState" | "databaseMessage" | (typeof namedFields)[number]> => {
  if (failure === undefined) return {}
  const error = pgError(failure)
  if (error === undefined) return { cause: failure }
  const reported: Partial<Record<(typeof namedFields)[number], string>> = {}
  for (const field of namedFields) {
    const name = error[field]
    if (typeof name === "string") reported[field] = name
  }
  // Class 22's messages quote the offending value, whatever names the error carries.
  const names = new Set(error.code.startsWith("22") ? [] : Object.values(reported))
  return {
    cause: failure,
    sqlState: error.code,
    ...(error.routine === "exec_stmt_raise" ? {} : { databaseMessage: redactValues(error.message, names) }),
    ...reported
  }
}

const connectionLost = (state: string | undefined): boolean =>
  state === undefined || state.startsWith("08") || state.startsWith("57P")

const neverSent = (error: SqlError): boolean => error.message.startsWith("Failed to acquire connection")

/** How an entity maps onto its table, as the schema check compares it with the table. */
interface Mapping {
  /** The table's quoted, schema-qualified name. */
  readonly table: string
  readonly keyColumn: string
  readonly valueColumns: ReadonlyArray<string>
  readonly versionColumn: string
  /** The SQL expression drawing a version from the store's sequence. */
  readonly nextVersion: string
}

/** A column of the table, as information_schema describes it. */
interface ColumnFacts {
  readonly type: string
  readonly identity: boolean
}

/** A unique index of the table, as `ON CONFLICT (key)` sees it. */
interface UniqueIndex {
  readonly primary: boolean
  /** On the key column alone, valid, not partial, not deferrable: an arbiter `ON CONFLICT (key)` can use. */
  readonly arbiter: boolean
  /** The deferrable constraint behind it, when `ON CONFLICT (key)` would pick it as an arbiter and then refuse it. */
  readonly refusedArbiter: string | undefined
}

/** One way the table does not fit the entity, and the `ALTER TABLE` actions that make it fit. */
interface Misfit {
  readonly problem: string
  readonly actions: ReadonlyArray<string>
}

// The store only knows the fields' names, not their types: text holds what a field encodes to
// when that is a string, the common case, and says so.
const valueColumnType = "text"
const valueColumnTypeNote = `a column added for a value field is ${valueColumnType}, which holds a field that encodes to a string: give another type to one that does not`

const missingColumns = (
  mapping: Mapping,
  columns: ReadonlyMap<string, ColumnFacts>,
  indexes: ReadonlyArray<UniqueIndex>
): Misfit | undefined => {
  const missing = [mapping.keyColumn, ...mapping.valueColumns].filter((column) => !columns.has(column))
  if (missing.length === 0) return undefined
  // A second PRIMARY KEY would be refused; a UNIQUE key column serves ON CONFLICT as well.
  const keyConstraint = indexes.some((index) => index.primary) ? "UNIQUE" : "PRIMARY KEY"
  return {
    problem: `table ${mapping.table} has no column ${missing.map(quote).join(", ")}`,
    actions: missing.map((column) =>
      column === mapping.keyColumn
        ? `ADD COLUMN ${quote(column)} text ${keyConstraint}`
        : `ADD COLUMN ${quote(column)} ${valueColumnType}`
    )
  }
}

const versionMisfit = (mapping: Mapping, columns: ReadonlyMap<string, ColumnFacts>): Misfit | undefined => {
  const column = columns.get(mapping.versionColumn)
  const version = quote(mapping.versionColumn)
  const problem = `table ${mapping.table} needs a bigint version column ${version}`
  if (column === undefined) {
    return { problem, actions: [`ADD COLUMN ${version} bigint NOT NULL DEFAULT ${mapping.nextVersion}`] }
  }
  if (column.type === "bigint") return undefined
  // Casting would keep versions the sequence did not draw: one above the sequence would outrank
  // every later write of its key in the cache. Each row draws a fresh one instead, as ADD COLUMN's
  // default does; the old default (an identity's included) would not survive the change of type.
  return {
    problem: `${problem} (it is ${column.type}; the change gives every row a fresh version from the sequence)`,
    actions: [
      `ALTER COLUMN ${version} ${column.identity ? "DROP IDENTITY" : "DROP DEFAULT"}`,
      `ALTER COLUMN ${version} TYPE bigint USING ${mapping.nextVersion}`,
      `ALTER COLUMN ${version} SET DEFAULT ${mapping.nextVersion}`,
      `ALTER COLUMN ${version} SET NOT NULL`
    ]
  }
}

const keyMisfit = (
  mapping: Mapping,
  columns: ReadonlyMap<string, ColumnFacts>,
  indexes: ReadonlyArray<UniqueIndex>
): Misfit | undefined => {
  // A missing key column is added with its constraint.
  if (!columns.has(mapping.keyColumn)) return undefined
  const refused = indexes.flatMap((index) => (index.refusedArbiter === undefined ? [] : [index.refusedArbiter]))
  const usable = indexes.some((index) => index.arbiter)
  if (usable && refused.length === 0) return undefined
  const key = quote(mapping.keyColumn)
  const primaryKept = indexes.some((index) => index.primary && index.refusedArbiter === undefined)
  return {
    problem: usable
      ? `column ${key} of ${mapping.table} has a deferrable unique constraint on it alone (${refused.map(quote).join(", ")}), which ON CONFLICT refuses`
      : `column ${key} of ${mapping.table} must be a primary key or have a unique index on it alone, neither partial nor deferrable`,
    actions: [
      ...refused.map((constraint) => `DROP CONSTRAINT ${quote(constraint)}`),
      ...(usable ? [] : [primaryKept ? `ADD UNIQUE (${key})` : `ADD PRIMARY KEY (${key})`])
    ]
  }
}

const createTable = (mapping: Mapping): string =>
  `CREATE TABLE ${mapping.table} (${[
    `${quote(mapping.keyColumn)} text PRIMARY KEY`,
    ...mapping.valueColumns.map((column) => `${quote(column)} ${valueColumnType}`),
    `${quote(mapping.versionColumn)} bigint NOT NULL DEFAULT ${mapping.nextVersion}`
  ].join(", ")})`

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
        ...databaseFailure(cause)
      })

    const misfitError = (entity: string, problems: ReadonlyArray<string>, suggestedDdl: string) =>
      new StoreError({
        entity,
        key: "",
        operation: "prepare",
        reason: "Schema",
        detail: `${problems.join("; ")}; fix it with: ${suggestedDdl}`,
        suggestedDdl
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

    // Every unique index, not only a usable one: ON CONFLICT (key) takes each valid one on the key
    // alone as its arbiter, and refuses the statement when one of them is deferrable.
    const uniqueIndexes = (table: string, keyColumn: string) => {
      const onKeyAlone = `k.attname IS NOT NULL AND i.indpred IS NULL AND i.indisvalid`
      return sql
        .unsafe(
          `SELECT i.indisprimary, ${onKeyAlone} AND i.indimmediate, ` +
            `CASE WHEN ${onKeyAlone} AND NOT i.indimmediate THEN c.conname END FROM pg_index i ` +
            `LEFT JOIN pg_attribute k ON i.indnkeyatts = 1 AND k.attrelid = i.indrelid AND k.attnum = i.indkey[0] ` +
            `AND k.attname = $2 ` +
            `LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u') ` +
            `WHERE i.indrelid = $1::regclass AND i.indisunique`,
          [table, keyColumn]
        )
        .values.pipe(
          Effect.map((rows) =>
            rows.map((row): UniqueIndex => ({
              primary: row[0] === true,
              arbiter: row[1] === true,
              refusedArbiter: row[2] === null ? undefined : String(row[2])
            }))
          )
        )
    }

    const tableLayout = Effect.fnUntraced(function* (target: Target) {
      const table = target.table!
      const fields = target.fields
      if (fields === undefined) {
        return yield* schemaError(target.entity, `a table-mapped entity's value must encode to an object with fields`)
      }
      const columnOf = (field: string) => table.columns?.[field] ?? field
      const versionColumn = table.versionColumn ?? "version"
      const name = qualified(table.schema, table.name)
      const keyField = fields.find((field) => columnOf(field) === table.primaryKey)
      const valueFields = fields.filter((field) => field !== keyField)
      const mapping: Mapping = {
        table: name,
        keyColumn: table.primaryKey,
        valueColumns: valueFields.map(columnOf),
        versionColumn,
        nextVersion
      }
      const inspectionFailed = (cause: SqlError) => schemaError(target.entity, `could not inspect ${name}`, cause)
      const rows = yield* sql
        .unsafe(
          `SELECT column_name, data_type, is_identity FROM information_schema.columns ` +
            `WHERE table_schema = coalesce($1, current_schema()) AND table_name = $2`,
          [table.schema ?? null, table.name]
        )
        .values.pipe(Effect.mapError(inspectionFailed))
      if (rows.length === 0) {
        return yield* misfitError(
          target.entity,
          [`table ${name} does not exist`, ...(mapping.valueColumns.length > 0 ? [valueColumnTypeNote] : [])],
          createTable(mapping)
        )
      }
      const columns = new Map(
        rows.map((row) => [String(row[0]), { type: String(row[1]), identity: row[2] === "YES" }] as const)
      )
      const indexes = yield* uniqueIndexes(name, table.primaryKey).pipe(Effect.mapError(inspectionFailed))
      const misfits = [
        missingColumns(mapping, columns, indexes),
        versionMisfit(mapping, columns),
        keyMisfit(mapping, columns, indexes)
      ].filter((misfit) => misfit !== undefined)
      if (misfits.length > 0) {
        const addsValueColumn = mapping.valueColumns.some((column) => !columns.has(column))
        return yield* misfitError(
          target.entity,
          [...misfits.map((misfit) => misfit.problem), ...(addsValueColumn ? [valueColumnTypeNote] : [])],
          `ALTER TABLE ${name} ${misfits.flatMap((misfit) => misfit.actions).join(", ")}`
        )
      }

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
          ...databaseFailure(error)
        })

      const writeFailure = (operation: string, key: string) => (error: SqlError) => {
        const state = sqlState(error)
        return neverSent(error) || !connectionLost(state)
          ? new StoreError({
              entity,
              key,
              operation,
              reason: neverSent(error) ? "Unavailable" : "Rejected",
              ...databaseFailure(error)
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
                        ...databaseFailure(cause)
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
      new StoreError({
        entity: "*",
        key: "",
        operation: "transaction",
        reason: "Transaction",
        detail,
        ...databaseFailure(cause)
      })

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

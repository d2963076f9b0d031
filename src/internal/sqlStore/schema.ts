/**
 * The schema check: the store creates what it owns (its sequence, its generic table) and checks that
 * an entity's own table fits the entity; when it does not, the error suggests the DDL that makes it fit.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import type { StoreError, Table, Target } from "../../Store.js"
import { preparing, schemaMismatch, unavailable } from "../storeError.js"
import { databaseFailure, sqlState, unanswered } from "./databaseFailure.js"
import { quote } from "./identifier.js"
import { type Mapping, mappingOf } from "./mapping.js"

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

const schemaError = (entity: string, detail: string, cause?: SqlError): StoreError =>
  (cause !== undefined && unanswered(cause) ? unavailable : schemaMismatch)(preparing(entity), {
    detail,
    ...databaseFailure(cause)
  })

const misfitError = (entity: string, problems: ReadonlyArray<string>, suggestedDdl: string): StoreError =>
  schemaMismatch(preparing(entity), { detail: `${problems.join("; ")}; fix it with: ${suggestedDdl}`, suggestedDdl })

/** Runs DDL that creates one of the store's own objects if it is missing. */
export const ensure = (sql: SqlClient.SqlClient, ddl: string): Effect.Effect<void, StoreError> =>
  sql.unsafe(ddl).raw.pipe(
    // Concurrent first runs may race on creating the same object; the loser sees a unique violation.
    Effect.retry({ times: 2, while: (error) => sqlState(error) === "23505" || sqlState(error) === "42P07" }),
    Effect.mapError((cause) => schemaError("*", `could not run ${ddl}`, cause)),
    Effect.asVoid
  )

/** The schema the connection creates objects in: the store qualifies the names its triggers use with it. */
export const currentSchema = (sql: SqlClient.SqlClient): Effect.Effect<string, StoreError> =>
  sql.unsafe(`SELECT current_schema()`).values.pipe(
    Effect.mapError((cause) => schemaError("*", "could not read the current schema", cause)),
    Effect.flatMap((rows) =>
      typeof rows[0]?.[0] === "string"
        ? Effect.succeed(rows[0][0])
        : Effect.fail(schemaError("*", "the connection has no current schema (its search_path names none that exists)"))
    )
  )

/** The server's version as `server_version_num` gives it, for example 150020. */
export const serverVersion = (sql: SqlClient.SqlClient): Effect.Effect<number, StoreError> =>
  sql.unsafe(`SELECT current_setting('server_version_num')::int`).values.pipe(
    Effect.mapError((cause) => schemaError("*", "could not read the server's version", cause)),
    Effect.map((rows) => Number(rows[0]?.[0]))
  )

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

const tableColumns = (sql: SqlClient.SqlClient, table: Table) =>
  sql
    .unsafe(
      `SELECT column_name, data_type, is_identity FROM information_schema.columns ` +
        `WHERE table_schema = coalesce($1, current_schema()) AND table_name = $2`,
      [table.schema ?? null, table.name]
    )
    .values.pipe(
      Effect.map(
        (rows): ReadonlyMap<string, ColumnFacts> =>
          new Map(rows.map((row) => [String(row[0]), { type: String(row[1]), identity: row[2] === "YES" }] as const))
      )
    )

// Every unique index, not only a usable one: ON CONFLICT (key) takes each valid one on the key
// alone as its arbiter, and refuses the statement when one of them is deferrable.
const uniqueIndexes = (sql: SqlClient.SqlClient, table: string, keyColumn: string) => {
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

/** How a table-mapped entity maps onto its table; fails when its value has no fields to map. */
export const tableMapping = (target: Target, table: Table, nextVersion: string): Effect.Effect<Mapping, StoreError> =>
  target.fields === undefined
    ? Effect.fail(schemaError(target.entity, `a table-mapped entity's value must encode to an object with fields`))
    : Effect.succeed(mappingOf(target, table, target.fields, nextVersion))

/** Fails with the DDL that makes the table fit, unless it has the columns and the key the mapping needs. */
export const checkTable = Effect.fnUntraced(function* (sql: SqlClient.SqlClient, mapping: Mapping, table: Table) {
  const inspectionFailed = (cause: SqlError) => schemaError(mapping.entity, `could not inspect ${mapping.table}`, cause)
  const columns = yield* tableColumns(sql, table).pipe(Effect.mapError(inspectionFailed))
  if (columns.size === 0) {
    return yield* misfitError(
      mapping.entity,
      [`table ${mapping.table} does not exist`, ...(mapping.valueColumns.length > 0 ? [valueColumnTypeNote] : [])],
      createTable(mapping)
    )
  }
  const indexes = yield* uniqueIndexes(sql, mapping.table, mapping.keyColumn).pipe(Effect.mapError(inspectionFailed))
  const misfits = [
    missingColumns(mapping, columns, indexes),
    versionMisfit(mapping, columns),
    keyMisfit(mapping, columns, indexes)
  ].filter((misfit) => misfit !== undefined)
  if (misfits.length > 0) {
    const addsValueColumn = mapping.valueColumns.some((column) => !columns.has(column))
    return yield* misfitError(
      mapping.entity,
      [...misfits.map((misfit) => misfit.problem), ...(addsValueColumn ? [valueColumnTypeNote] : [])],
      `ALTER TABLE ${mapping.table} ${misfits.flatMap((misfit) => misfit.actions).join(", ")}`
    )
  }
})

/** A row trigger an entity table must have, and the events it must fire on. */
export interface RequiredTrigger {
  readonly name: string
  /** The function it must call, quoted and qualified. */
  readonly function: string
  /** Bits of `pg_trigger.tgtype` that must be set (1 row, 2 before, 4 insert, 8 delete, 16 update). */
  readonly events: number
  /** Bits that must not be set: 2 for an AFTER trigger. */
  readonly excluded: number
  /** What the trigger is for, as the error says it. */
  readonly purpose: string
  readonly createDdl: string
}

/** Fails with the DDL that adds `trigger` when `mapping`'s table lacks it, or has it disabled or on other events. */
export const checkTrigger = Effect.fnUntraced(function* (
  sql: SqlClient.SqlClient,
  mapping: Mapping,
  trigger: RequiredTrigger
) {
  const rows = yield* sql
    .unsafe(
      `SELECT tgenabled <> 'D' AND (tgtype & $3) = $3 AND (tgtype & $4) = 0 AND tgfoid = to_regprocedure($5) ` +
        `FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2 AND NOT tgisinternal`,
      [mapping.table, trigger.name, trigger.events, trigger.excluded, `${trigger.function}()`]
    )
    .values.pipe(
      Effect.mapError((cause) => schemaError(mapping.entity, `could not inspect ${mapping.table}'s triggers`, cause))
    )
  if (rows[0]?.[0] === true) return
  const found = rows.length > 0
  return yield* misfitError(
    mapping.entity,
    [
      `table ${mapping.table} ${found ? "has a trigger" : "has no trigger"} ${quote(trigger.name)}${
        found ? " that is disabled, fires on other events or calls another function" : ""
      }, which ${trigger.purpose}`
    ],
    found ? `DROP TRIGGER ${quote(trigger.name)} ON ${mapping.table}; ${trigger.createDdl}` : trigger.createDdl
  )
})

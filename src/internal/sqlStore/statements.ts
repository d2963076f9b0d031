/**
 * The statements of an entity's collection: for an entity mapped onto its own table, and for one
 * kept in the store's generic key/JSON table.
 *
 * Every write to a key takes a transaction-scoped advisory lock on it and draws its version while
 * holding it: see the `SqlStore` module for why.
 */
import { quote } from "./identifier.js"
import type { Mapping } from "./mapping.js"

/** The store's own objects, by quoted name, and the expression drawing a version. */
export interface StoreObjects {
  /** The schema the store's objects are in, unquoted. */
  readonly schema: string
  readonly sequenceName: string
  readonly sequence: string
  /** The sequence, qualified by its schema: what triggers name, whatever the writer's `search_path`. */
  readonly qualifiedSequence: string
  readonly genericTable: string
  /** The SQL expression drawing a version from the sequence. */
  readonly nextVersion: string
  /** Entity tables must have the version trigger (`versionTrigger` or `changeCapture` on). */
  readonly versioned: boolean
  /** The outbox and the feeds' positions; set when `changeCapture` is on. */
  readonly capture: CaptureObjects | undefined
}

export interface CaptureObjects {
  readonly changes: string
  readonly feeds: string
  readonly changesIndex: string
  readonly deletionsIndex: string
  /** The capture trigger the store adds to its generic table. */
  readonly genericTrigger: string
}

export const storeObjects = (
  schema: string,
  sequenceName: string,
  genericName: string,
  options: { readonly versionTrigger: boolean; readonly changeCapture: boolean }
): StoreObjects => {
  const sequence = quote(sequenceName)
  const qualified = (name: string) => `${quote(schema)}.${quote(name)}`
  return {
    schema,
    sequenceName,
    sequence,
    qualifiedSequence: qualified(sequenceName),
    genericTable: quote(genericName),
    nextVersion: `nextval('${sequence}')`,
    versioned: options.versionTrigger || options.changeCapture,
    capture: options.changeCapture
      ? {
          changes: qualified(`${sequenceName}_changes`),
          feeds: qualified(`${sequenceName}_feeds`),
          changesIndex: quote(`${sequenceName}_changes_tag_xid`),
          deletionsIndex: quote(`${sequenceName}_changes_deleted`),
          genericTrigger: quote(`${sequenceName}_capture`)
        }
      : undefined
  }
}

export const createSequence = (objects: StoreObjects): string => `CREATE SEQUENCE IF NOT EXISTS ${objects.sequence}`

export const createGenericTable = (objects: StoreObjects): string =>
  `CREATE TABLE IF NOT EXISTS ${objects.genericTable} ("entity" text NOT NULL, "key" text NOT NULL, ` +
  `"value" jsonb NOT NULL, "version" bigint NOT NULL, PRIMARY KEY ("entity", "key"))`

export interface Statements {
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
  /**
   * `putManySql` as a statement that commits on its own: it first takes the keys' locks, in one
   * order for every writer and waiting at most `lockTimeout` for any, then each row draws its
   * version. Its parameters: `putManyParams`, then the keys' lock names as one array.
   */
  readonly putLockedManySql: (rows: number, lockTimeout: string) => string
  /** The advisory lock's name of a key, as the single-row statements compute it. */
  readonly lockName: (key: string) => string
  readonly deleteParams: (key: string) => ReadonlyArray<unknown>
  /** Turns a selected row (its columns in order, the version last) into an encoded value. */
  readonly toValue: (row: ReadonlyArray<unknown>) => unknown
}

/** The advisory lock's name of a key, unique across the entities of the generic table. */
const lockName = (entity: string, key: string): string => `${entity}:${key}`

// `$n` is the lock's name: the entity and the key, hashed to the advisory lock's bigint.
const withKeyLock = (n: number) =>
  `WITH "wt_lock" AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended($${n}, 0)))`

const lockedVersion = (nextVersion: string) => `(SELECT ${nextVersion} FROM "wt_lock")`

// One row whatever the delete found: a delete of an absent key still fences off one that raced ahead of it.
const deleteStatement = (nextVersion: string, n: number, table: string, where: string) =>
  `${withKeyLock(n)}, "wt_deleted" AS (DELETE FROM ${table} WHERE ${where} AND EXISTS (SELECT 1 FROM "wt_lock") ` +
  `RETURNING 1) SELECT ${nextVersion} FROM (SELECT count(*) FROM "wt_deleted") AS "wt_done"`

// `$n` is the lock names of many keys, locked in one order (the aggregate takes them as the sort
// yields them), after the lock timeout is set for the rest of the statement's transaction (the
// sort reads its whole input, the setting's row with it, before it yields the first name).
const withKeysLocked = (n: number, lockTimeout: string) =>
  `WITH "wt_lock" AS MATERIALIZED (SELECT count(pg_advisory_xact_lock(hashtextextended("wt_name", 0))) FROM ` +
  `(SELECT "wt_name" FROM unnest($${n}::text[]) AS "wt_name", ` +
  `(SELECT set_config('lock_timeout', '${lockTimeout}', true)) AS "wt_timeout" ORDER BY "wt_name") AS "wt_sorted")`

/** Locks the keys whose lock names are `$1`, in one order for every writer, so that two batches cannot deadlock. */
export const lockKeysSql =
  `SELECT pg_advisory_xact_lock(hashtextextended("wt_name", 0)) ` +
  `FROM unnest($1::text[]) AS "wt_name" ORDER BY "wt_name"`

export const genericStatements = (objects: StoreObjects, entity: string): Statements => {
  const { genericTable: table, nextVersion } = objects
  const upsertMany = (rows: number, version: string) =>
    `INSERT INTO ${table} ("entity", "key", "value", "version") VALUES ` +
    Array.from({ length: rows }, (_, i) => `($1, $${2 * i + 2}, $${2 * i + 3}::jsonb, ${version})`).join(", ") +
    ` ON CONFLICT ("entity", "key") DO UPDATE SET "value" = EXCLUDED."value", "version" = EXCLUDED."version" ` +
    `RETURNING "key", "version"`
  return {
    selectSql: `SELECT "value", "version" FROM ${table} WHERE "entity" = $1 AND "key" = $2`,
    putSql:
      `${withKeyLock(4)} INSERT INTO ${table} ("entity", "key", "value", "version") ` +
      `VALUES ($1, $2, $3::jsonb, ${lockedVersion(nextVersion)}) ` +
      `ON CONFLICT ("entity", "key") DO UPDATE SET "value" = EXCLUDED."value", "version" = EXCLUDED."version" ` +
      `RETURNING "version"`,
    deleteSql: deleteStatement(nextVersion, 3, table, `"entity" = $1 AND "key" = $2`),
    selectParams: (key) => [entity, key],
    selectManySql: `SELECT "value", "version", "key" FROM ${table} WHERE "entity" = $1 AND "key" = ANY($2)`,
    selectManyParams: (keys) => [entity, keys],
    // Serialized here: pg would send a top-level array as a Postgres array, not JSON.
    putParams: (key, value) => [entity, key, JSON.stringify(value), lockName(entity, key)],
    putManySql: (rows) => upsertMany(rows, nextVersion),
    putLockedManySql: (rows, lockTimeout) =>
      `${withKeysLocked(2 * rows + 2, lockTimeout)} ${upsertMany(rows, lockedVersion(nextVersion))}`,
    putManyParams: (entries) => [entity, ...entries.flatMap(([key, value]) => [key, JSON.stringify(value)])],
    lockName: (key) => lockName(entity, key),
    deleteParams: (key) => [entity, key, lockName(entity, key)],
    toValue: (row) => row[0]
  }
}

export const tableStatements = (mapping: Mapping): Statements => {
  const { entity, table, nextVersion, fields, valueFields } = mapping
  const pk = quote(mapping.keyColumn)
  const version = quote(mapping.versionColumn)
  const selected = mapping.columns.map(quote)
  const written = mapping.valueColumns.map(quote)
  const inserted = [pk, ...written, version].join(", ")
  const updates = [...written, version].map((column) => `${column} = EXCLUDED.${column}`).join(", ")
  const valuesOf = (value: unknown) => {
    const record = value as Record<string, unknown>
    return valueFields.map((field) => record[field] ?? null)
  }
  const width = written.length + 1
  const upsertMany = (rows: number, versionValue: string) => {
    const values = Array.from(
      { length: rows },
      (_, row) =>
        `(${Array.from({ length: width }, (_, column) => `$${row * width + column + 1}`).join(", ")}, ${versionValue})`
    )
    return (
      `INSERT INTO ${table} (${inserted}) VALUES ${values.join(", ")} ` +
      `ON CONFLICT (${pk}) DO UPDATE SET ${updates} RETURNING ${pk}::text, ${version}`
    )
  }
  return {
    selectSql: `SELECT ${[...selected, version].join(", ")} FROM ${table} WHERE ${pk} = $1`,
    putSql:
      `${withKeyLock(written.length + 2)} INSERT INTO ${table} (${inserted}) ` +
      `VALUES (${["$1", ...written.map((_, i) => `$${i + 2}`), lockedVersion(nextVersion)].join(", ")}) ` +
      `ON CONFLICT (${pk}) DO UPDATE SET ${updates} RETURNING ${version}`,
    deleteSql: deleteStatement(nextVersion, 2, table, `${pk} = $1`),
    selectParams: (key) => [key],
    selectManySql: `SELECT ${[...selected, version, `${pk}::text`].join(", ")} FROM ${table} WHERE ${pk} = ANY($1)`,
    selectManyParams: (keys) => [keys],
    putParams: (key, value) => [key, ...valuesOf(value), lockName(entity, key)],
    putManySql: (rows) => upsertMany(rows, nextVersion),
    putLockedManySql: (rows, lockTimeout) =>
      `${withKeysLocked(rows * width + 1, lockTimeout)} ${upsertMany(rows, lockedVersion(nextVersion))}`,
    putManyParams: (entries) => entries.flatMap(([key, value]) => [key, ...valuesOf(value)]),
    lockName: (key) => lockName(entity, key),
    deleteParams: (key) => [key, lockName(entity, key)],
    toValue: (row) => {
      const value: Record<string, unknown> = {}
      for (let i = 0; i < fields.length; i++) value[fields[i]!] = row[i]
      return value
    }
  }
}

/**
 * An entity's collection: its statements, prepared once the entity is found to fit the store, and
 * the reads and writes that run them.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { Row, Store, StoreError, StoreOutcomeUnknownError, Target } from "../../Store.js"
import { type Site, undecodable, unavailable } from "../storeError.js"
import * as ChangeCapture from "./changeCapture.js"
import * as CoalescedPuts from "./coalescedPuts.js"
import { databaseFailure, statementFailure, writeFailure } from "./databaseFailure.js"
import type { Mapping } from "./mapping.js"
import { checkTable, checkTrigger, ensure, tableMapping } from "./schema.js"
import {
  createGenericTable,
  genericStatements,
  lockKeysSql,
  type CaptureObjects,
  type Statements,
  type StoreObjects,
  tableStatements
} from "./statements.js"
import { inTransaction, ownTransaction, writable } from "./transaction.js"
import * as Triggers from "./triggers.js"

/** What every operation of one entity's collection runs on. */
interface Prepared {
  readonly sql: SqlClient.SqlClient
  readonly statements: Statements
  readonly entity: string
}

/** `Store.collection`: checks that the entity fits (creating the generic table it may need) and prepares its statements. */
export const collection = (
  sql: SqlClient.SqlClient,
  objects: StoreObjects,
  target: Target,
  feedSettings: ChangeCapture.FeedSettings | undefined,
  coalescePuts: boolean
): Effect.Effect<Store.Collection, StoreError> =>
  Effect.map(statementsOf(sql, objects, target), ({ statements, tag }) => {
    const prepared: Prepared = { sql, statements, entity: target.entity }
    const { capture } = objects
    return {
      get: (key) => get(prepared, key),
      getMany: (keys) => getMany(prepared, keys),
      put: coalescePuts ? coalescedPut(prepared) : (key, value) => put(prepared, key, value),
      putMany: (entries) => putMany(prepared, entries),
      delete: (key) => remove(prepared, key),
      deletions: capture === undefined ? undefined : (keys) => deletions(prepared, capture, tag, keys),
      changes:
        capture === undefined || feedSettings === undefined
          ? undefined
          : ChangeCapture.feed(sql, capture, tag, target.entity, feedSettings)
    }
  })

/** The entity's statements, once its table is found to fit; and the tag of its change feed. */
const statementsOf = (
  sql: SqlClient.SqlClient,
  objects: StoreObjects,
  target: Target
): Effect.Effect<{ readonly statements: Statements; readonly tag: string }, StoreError> => {
  const table = target.table
  if (table === undefined) {
    const { capture } = objects
    const generic = capture === undefined ? undefined : Triggers.genericCaptureTrigger(objects, capture)
    const ensured = Effect.forEach(
      [createGenericTable(objects), ...(generic === undefined ? [] : [generic.createFunction, generic.createTrigger])],
      (ddl) => ensure(sql, ddl),
      { discard: true }
    )
    return Effect.as(ensured, {
      statements: genericStatements(objects, target.entity),
      tag: Triggers.tagOfEntity(target.entity)
    })
  }
  return Effect.flatMap(tableMapping(target, table, objects.nextVersion), (mapping) =>
    Effect.as(Effect.zipRight(checkTable(sql, mapping, table), checkTriggers(sql, objects, mapping)), {
      statements: tableStatements(mapping),
      tag: Triggers.tagOfTable(mapping)
    })
  )
}

// The version trigger with `versionTrigger` (or `changeCapture`) on; the capture trigger with
// `changeCapture`. Their functions are the store's to create; the triggers, the table owner's.
const checkTriggers = (
  sql: SqlClient.SqlClient,
  objects: StoreObjects,
  mapping: Mapping
): Effect.Effect<void, StoreError> => {
  const { capture, versioned } = objects
  const required = [
    ...(versioned ? [Triggers.versionTrigger(objects, mapping)] : []),
    ...(capture === undefined ? [] : [Triggers.captureTrigger(objects, capture, mapping)])
  ]
  return Effect.forEach(
    required,
    (trigger) => Effect.zipRight(ensure(sql, trigger.createFunction), checkTrigger(sql, mapping, trigger)),
    { discard: true }
  )
}

const deletions = (
  prepared: Prepared,
  capture: CaptureObjects,
  tag: string,
  keys: ReadonlyArray<string>
): Effect.Effect<ReadonlyMap<string, number>, StoreError> =>
  prepared.sql.unsafe(ChangeCapture.deletionsSql(capture), [tag, keys]).values.pipe(
    Effect.mapError(statementFailure(site(prepared, "get", keys[0] ?? ""))),
    Effect.flatMap((rows) =>
      Effect.forEach(rows, (row) =>
        Effect.map(
          toVersion(site(prepared, "get", String(row[0])), row[1]),
          (version) => [String(row[0]), version] as const
        )
      )
    ),
    Effect.map((entries): ReadonlyMap<string, number> => new Map(entries))
  )

const site = (prepared: Prepared, operation: string, key: string): Site => ({
  entity: prepared.entity,
  key,
  operation
})

const toVersion = (site: Site, raw: unknown): Effect.Effect<number, StoreError> => {
  const version = Number(raw)
  return Number.isSafeInteger(version) && version > 0
    ? Effect.succeed(version)
    : Effect.fail(undecodable(site, { detail: `version ${String(raw)} is not a positive safe integer` }))
}

const get = (prepared: Prepared, key: string): Effect.Effect<Option.Option<Row>, StoreError> => {
  const { sql, statements } = prepared
  const at = site(prepared, "get", key)
  return sql.unsafe(statements.selectSql, statements.selectParams(key)).values.pipe(
    Effect.mapError(statementFailure(at)),
    Effect.flatMap((rows): Effect.Effect<Option.Option<Row>, StoreError> => {
      const row = rows[0]
      if (row === undefined) return Effect.succeedNone
      return Effect.map(toVersion(at, row[row.length - 1]), (version) =>
        Option.some({ version, value: statements.toValue(row) })
      )
    })
  )
}

const getMany = (
  prepared: Prepared,
  keys: ReadonlyArray<string>
): Effect.Effect<ReadonlyMap<string, Row>, StoreError> => {
  if (keys.length === 0) return Effect.succeed(new Map())
  const { sql, statements } = prepared
  return sql.unsafe(statements.selectManySql, statements.selectManyParams(keys)).values.pipe(
    Effect.mapError(statementFailure(site(prepared, "get", keys[0]!))),
    Effect.flatMap((rows) =>
      Effect.forEach(rows, (row) => {
        const key = String(row[row.length - 1])
        return Effect.map(
          toVersion(site(prepared, "get", key), row[row.length - 2]),
          (version) => [key, { version, value: statements.toValue(row) }] as const
        )
      })
    ),
    Effect.map((entries): ReadonlyMap<string, Row> => new Map(entries))
  )
}

const put = (prepared: Prepared, key: string, value: unknown): Effect.Effect<number, WriteError> =>
  writeOne(
    site(prepared, "put", key),
    prepared.sql.unsafe(prepared.statements.putSql, prepared.statements.putParams(key, value))
  )

const remove = (prepared: Prepared, key: string): Effect.Effect<number, WriteError> =>
  writeOne(
    site(prepared, "delete", key),
    prepared.sql.unsafe(prepared.statements.deleteSql, prepared.statements.deleteParams(key))
  )

type WriteError = StoreError | StoreOutcomeUnknownError

/** A write of one key, which commits on its own unless it runs in the store's transaction: its version. */
const writeOne = (at: Site, statement: Statement.Statement<unknown>): Effect.Effect<number, WriteError> =>
  writable(
    at,
    statement.values.pipe(
      Effect.mapError(writeFailure(at)),
      Effect.flatMap((rows) => toVersion(at, rows[0]?.[0]))
    )
  )

type Entries = ReadonlyArray<readonly [key: string, value: unknown]>

// Outside transactions, the puts of one turn go as one statement (see `CoalescedPuts`); inside one,
// a put is the transaction's statement, as always.
const coalescedPut = (prepared: Prepared): Store.Collection["put"] => {
  const coalesced = CoalescedPuts.make({
    putOne: (key, value) => put(prepared, key, value),
    putAll: (entries) => putTogether(prepared, entries)
  })
  return (key, value) =>
    Effect.flatMap(inTransaction, (inside) => (inside ? put(prepared, key, value) : coalesced(key, value)))
}

// How long a batch of coalesced puts waits for a key's lock before it gives up, and each of its
// puts goes on its own. Holding some keys' locks while waiting for another's, a batch could
// otherwise deadlock with a transaction that locks keys in another order, which a lone put (one
// lock) never does; PostgreSQL would take a second (deadlock_timeout) to break it.
const batchLockTimeout = "100ms"

// Coalesced puts: one statement that commits on its own, its lock waits bounded.
const putTogether = (prepared: Prepared, entries: Entries): Effect.Effect<ReadonlyMap<string, number>, WriteError> => {
  const { sql, statements } = prepared
  const at = site(prepared, "put", entries[0]![0])
  const lockNames = entries.map(([key]) => statements.lockName(key))
  return writable(
    at,
    sql
      .unsafe(statements.putLockedManySql(entries.length, batchLockTimeout), [
        ...statements.putManyParams(entries),
        lockNames
      ])
      .values.pipe(
        Effect.mapError(writeFailure(at)),
        Effect.flatMap((rows) => versionsOf(prepared, rows))
      )
  )
}

const putMany = (prepared: Prepared, entries: Entries): Effect.Effect<ReadonlyMap<string, number>, WriteError> => {
  if (entries.length === 0) return Effect.succeed(new Map())
  const at = site(prepared, "put", entries[0]![0])
  return writable(
    at,
    Effect.flatMap(inTransaction, (inCallersTransaction) =>
      inCallersTransaction
        ? // The caller's transaction: a lost connection there is the caller's to judge.
          lockAndUpsert(prepared, entries, writeFailure(at))
        : // One of our own: a statement that fails leaves nothing committed, whatever the reason.
          ownTransaction(prepared.sql, lockAndUpsert(prepared, entries, statementFailure(at)), (cause) =>
            unavailable(at, { detail: "could not begin a transaction", ...databaseFailure(cause) })
          )
    )
  )
}

// The keys' locks first, in one order for every writer (no deadlock between two batches), then
// one multi-row upsert whose rows draw their versions while the locks are held: both in one
// transaction, the caller's own (WriteThrough.transaction) or one of their own.
const lockAndUpsert = <E>(
  prepared: Prepared,
  entries: Entries,
  failure: (error: SqlError) => E
): Effect.Effect<ReadonlyMap<string, number>, E | StoreError> => {
  const { sql, statements } = prepared
  const lockAll = sql.unsafe(lockKeysSql, [entries.map(([key]) => statements.lockName(key))]).values
  const upsert = sql.unsafe(statements.putManySql(entries.length), statements.putManyParams(entries)).values
  return Effect.zipRight(lockAll, upsert).pipe(
    Effect.mapError(failure),
    Effect.flatMap((rows) => versionsOf(prepared, rows))
  )
}

/** The rows a multi-row upsert returned, each its key (as text) and its version. */
const versionsOf = (
  prepared: Prepared,
  rows: ReadonlyArray<ReadonlyArray<unknown>>
): Effect.Effect<ReadonlyMap<string, number>, StoreError> =>
  Effect.map(
    Effect.forEach(rows, (row) => {
      const key = String(row[0])
      return Effect.map(toVersion(site(prepared, "put", key), row[1]), (version) => [key, version] as const)
    }),
    (versions): ReadonlyMap<string, number> => new Map(versions)
  )

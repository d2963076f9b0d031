// Fixtures of the change-capture suites: a store that captures changes, on a sequence (and so an
// outbox, a positions table and trigger functions) of its own, and a users table that has both
// triggers; waiting for the cache to converge.
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Option, Schedule, Schema } from "effect"
import type { Redis } from "ioredis"
import { Cache, type ChangeCapture, SqlStore, Store, WriteThrough } from "../../src/index.js"
import { decodeEntry, User } from "./fixtures.js"
import { unique, usersTable } from "./services.js"

export interface CaptureObjects {
  readonly versionSequence: string
  readonly changes: string
  readonly feeds: string
  /** The store's generic table, the test's own too. */
  readonly genericTable: string
}

/** Drops the trigger functions the store made for a sequence's tables (named after it), and their triggers. */
export const dropFunctionsOf = (versionSequence: string) =>
  `DO $$ DECLARE f regprocedure; BEGIN FOR f IN SELECT oid::regprocedure FROM pg_proc ` +
  `WHERE starts_with(proname, '${versionSequence}_') LOOP EXECUTE 'DROP FUNCTION ' || f || ' CASCADE'; END LOOP; END $$`

/**
 * A version sequence of the test's own: the store's trigger functions, outbox and positions table
 * are named after it, and are dropped with it when the scope closes; and a generic table of its own.
 */
export const captureObjects: Effect.Effect<CaptureObjects, never, SqlClient.SqlClient | import("effect/Scope").Scope> =
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const versionSequence = unique("wt_seq")
    yield* Effect.addFinalizer(() =>
      Effect.orDie(
        sql.unsafe(
          `DROP TABLE IF EXISTS "${versionSequence}_changes", "${versionSequence}_feeds", "${versionSequence}_entries"; ` +
            dropFunctionsOf(versionSequence) +
            `; DROP SEQUENCE IF EXISTS "${versionSequence}"`
        ).raw
      )
    )
    return {
      versionSequence,
      changes: `${versionSequence}_changes`,
      feeds: `${versionSequence}_feeds`,
      genericTable: `${versionSequence}_entries`
    }
  })

/** A capturing store on `objects`; a fast feed unless `options` says otherwise. */
export const captureStore = (
  objects: CaptureObjects,
  options: ChangeCapture.Options = {},
  storeOptions: Omit<SqlStore.Options, "versionSequence" | "genericTable" | "changeCapture"> = {}
) =>
  SqlStore.make({
    ...storeOptions,
    versionSequence: objects.versionSequence,
    genericTable: objects.genericTable,
    changeCapture: { pollInterval: "10 millis", lease: "300 millis", ...options }
  })

/** A users table with both triggers, added with the DDL the store suggests (the version trigger's first). */
export const capturedUsersTable = (store: Store.Store.Service) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const table = yield* usersTable
    const target: Store.Target = {
      entity: table,
      fields: ["id", "name", "email"],
      table: { name: table, primaryKey: "id" }
    }
    for (let i = 0; i < 2; i++) {
      const refused = yield* Effect.flip(store.collection(target))
      yield* sql.unsafe(refused.suggestedDdl!).raw
    }
    return { table, target }
  })

/** The users entity on `table`, over `cache` and `store`. */
export const usersOn = (
  table: string,
  cache: Cache.Cache.Service,
  store: Store.Store.Service,
  options: Pick<WriteThrough.Options<string, User, unknown>, "cacheTimeout"> = {}
) =>
  WriteThrough.make({
    ...options,
    entity: table,
    table: { name: table, primaryKey: "id" },
    key: Schema.String,
    value: User
  }).pipe(Effect.provideService(Cache.Cache, cache), Effect.provideService(Store.Store, store))

/** The cache's entry for `key` as it stands: a value's version, or a tombstone's, or none. */
export const entryOf = (redis: Redis, key: string) =>
  Effect.map(
    Effect.promise(() => redis.get(key)),
    (raw) => Option.getOrUndefined(decodeEntry(raw))
  )

/** Retries `check` every 5 ms for up to `within` millis of real time; fails with its last error. */
export const eventually = <A, E, R>(check: Effect.Effect<A, E, R>, within = 5_000) =>
  Effect.retry(check, Schedule.spaced("5 millis").pipe(Schedule.upTo(within)))

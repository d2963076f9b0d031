/**
 * The `Store` on PostgreSQL through `@effect/sql` (with `@effect/sql-pg`'s `PgClient`).
 *
 * PostgreSQL only: `make` and `layer` take any `SqlClient`, but the store issues PostgreSQL's own SQL
 * (`pg_advisory_xact_lock`, `hashtextextended`, `nextval`, `jsonb`, `ON CONFLICT`, the catalogs
 * `pg_index`, `pg_attribute` and `pg_constraint`) and reads the SQLSTATE and fields of node-postgres's
 * errors. Give it a client connected to PostgreSQL; another database's client fails at its statements.
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
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as ChangeCapture from "./ChangeCapture.js"
import type * as CircuitBreaker from "./CircuitBreaker.js"
import * as Capture from "./internal/sqlStore/changeCapture.js"
import { collection } from "./internal/sqlStore/collection.js"
import { isPlain } from "./internal/sqlStore/identifier.js"
import { currentSchema, ensure } from "./internal/sqlStore/schema.js"
import { createSequence, storeObjects } from "./internal/sqlStore/statements.js"
import { maxSequenceNameBytes } from "./internal/sqlStore/triggers.js"
import * as StoreBreaker from "./internal/sqlStore/storeBreaker.js"
import { inTransaction, transaction } from "./internal/sqlStore/transaction.js"
import { schemaMismatch, storeWide } from "./internal/storeError.js"
import { Store, type StoreError } from "./Store.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The sequence versions are drawn from; created if missing. Default `effect_write_through_version`. */
  readonly versionSequence?: string | undefined
  /** The table for entities without a `table`; created if missing. Default `effect_write_through_entries`. */
  readonly genericTable?: string | undefined
  /**
   * A circuit breaker on the store, shared by every entity on it: once `failures` store calls in a
   * row went unanswered (default 3: the database unreachable, a call timed out or interrupted, a
   * write's connection lost) it opens, and for `interval` (default 5 seconds) every store call fails
   * at once with `StoreError` `Unavailable`, whose `cause` is a `CircuitOpen`, having written
   * nothing, instead of each waiting out the write-through's `storeTimeout`; a transaction does not
   * begin. Reads the cache holds are still served from it. Then one call probes the database, and
   * its success closes the breaker. An error the database answered with (a constraint, a row that
   * does not decode) is no failure. `false` turns it off; in `layerConfig`, pass
   * `Config.succeed(false)`, or `CircuitBreaker.config` for the figures.
   *
   * @since 0.2.0
   */
  readonly breaker?: CircuitBreaker.Options | false | undefined
  /**
   * Requires each entity table to have the trigger that gives a write made outside the library (a
   * plain `UPDATE` from another service, a migration, `psql`) a version from the store's sequence,
   * above the row's earlier ones: then the audit (`audit({ repair: true })`) finds the cache
   * entries such a write left stale and repairs them. The store creates the trigger's function (one per table); an
   * entity whose table lacks the trigger fails when its layer is built, with reason `Schema` and
   * the `CREATE TRIGGER` that adds it (`suggestedDdl`). Default `false`.
   *
   * @since 0.2.0
   */
  readonly versionTrigger?: boolean | undefined
  /**
   * Captures every committed change of the entities' rows, by anyone, and brings it to the cache:
   * see the `ChangeCapture` module. `true` for the defaults, or the feed's options. Turns
   * `versionTrigger` on too. Each entity table must have the capture trigger as well as the
   * version trigger: an entity whose table lacks one fails when its layer is built, with reason
   * `Schema` and the `CREATE TRIGGER` that adds it. Needs PostgreSQL 13 or later. Default `false`.
   *
   * @since 0.2.0
   */
  readonly changeCapture?: boolean | ChangeCapture.Options | undefined
  /**
   * Coalesces the puts (`set`) of one entity made outside any transaction in one turn of the event
   * loop, such as those of the fibers one reply woke, into one statement that commits on its own:
   * the keys' locks in one order, one multi-row upsert, one COMMIT (and one flush of the WAL) for
   * what would be one each. Each put still answers for its own key: its version, or its own error
   * (when the database refuses the batch, each put goes again on its own, so a value it rejects
   * fails only its own `set`). A put alone in its turn runs as it would otherwise. The batch waits
   * at most 100ms for a key's lock before its puts go on their own, so that it cannot deadlock
   * with a transaction that locks keys in another order. Default `true`.
   *
   * @since 0.2.0
   */
  readonly coalescePuts?: boolean | undefined
  /**
   * Names the store in the circuit breaker's metrics (their `target` tag) and log lines. Default
   * `postgresql`.
   *
   * @since 0.2.0
   */
  readonly name?: string | undefined
}

/**
 * Creates the version sequence if it is missing. Each entity's collection checks, when it is made,
 * that the entity's table fits it, and fails with reason `Schema` and the DDL that makes it fit
 * when it does not; an entity without a `table` creates the generic table if it is missing. The
 * collections' calls and the transactions go through the store's circuit breaker (`breaker`); making
 * a collection does not, so an entity's layer builds whatever the breaker's state.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Store.Service, StoreError, SqlClient.SqlClient> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const sequenceName = options.versionSequence ?? "effect_write_through_version"
    const genericName = options.genericTable ?? "effect_write_through_entries"
    for (const name of [sequenceName, genericName]) {
      if (!isPlain(name)) {
        return yield* schemaMismatch(storeWide("make"), {
          detail: `${JSON.stringify(name)} is not a plain SQL identifier`
        })
      }
    }
    const capture = options.changeCapture === true ? {} : options.changeCapture || undefined
    if ((options.versionTrigger === true || capture !== undefined) && sequenceName.length > maxSequenceNameBytes) {
      // Its triggers' functions are named after it, within PostgreSQL's 63 bytes.
      return yield* schemaMismatch(storeWide("make"), {
        detail: `versionSequence ${JSON.stringify(sequenceName)} is longer than ${maxSequenceNameBytes} characters, the most versionTrigger and changeCapture take`
      })
    }
    const objects = storeObjects(yield* currentSchema(sql), sequenceName, genericName, {
      versionTrigger: options.versionTrigger === true,
      changeCapture: capture !== undefined
    })
    yield* ensure(sql, createSequence(objects))
    if (objects.capture !== undefined) yield* Capture.prepare(sql, objects.capture)
    const feedSettings = capture === undefined ? undefined : Capture.feedSettings(capture)
    const store = Store.of({
      collection: (target) => collection(sql, objects, target, feedSettings, options.coalescePuts !== false),
      transaction: transaction(sql),
      inTransaction
    })
    return StoreBreaker.around(store, options.breaker, options.name ?? "postgresql")
  })

/**
 * Needs a `SqlClient` connected to PostgreSQL, for example from `PgClient.layer`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Store, StoreError, SqlClient.SqlClient> =>
  Layer.effect(Store, make(options))

/**
 * For example `SqlStore.layerConfig({ versionSequence: Config.string("VERSION_SEQUENCE") })`, or
 * `SqlStore.layerConfig({ breaker: Config.nested(CircuitBreaker.config, "STORE_BREAKER") })` for the
 * circuit breaker's `STORE_BREAKER_FAILURES` and `STORE_BREAKER_INTERVAL`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<Store, StoreError | ConfigError.ConfigError, SqlClient.SqlClient> =>
  Layer.effect(Store, Effect.flatMap(Config.unwrap(options), make))

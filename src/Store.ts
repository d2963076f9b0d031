/**
 * The source of truth: rows keyed by string, each carrying a version that
 * increases in commit order per key and is never reused.
 *
 * @since 0.1.0
 */
import { TypeIdError } from "./internal/typeIdError.js"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import { isWriteThroughError, WriteThroughErrorTypeId } from "./WriteThroughError.js"

/**
 * Where an entity lives in a SQL database: a real table with real columns.
 *
 * @since 0.1.0
 * @category models
 */
export interface Table {
  readonly name: string
  /** The database schema; default the connection's current schema. */
  readonly schema?: string | undefined
  /** The column the key is stored in. It must be unique (a primary key). */
  readonly primaryKey: string
  /** A `bigint` column the store fills from its version sequence. Default `version`. */
  readonly versionColumn?: string | undefined
  /** Column names for value fields that are not stored under their own name. */
  readonly columns?: Readonly<Record<string, string>> | undefined
}

/**
 * What a store needs to know of an entity.
 *
 * @since 0.1.0
 * @category models
 */
export interface Target {
  /** The entity's name: the cache namespace, and the partition in the generic table. */
  readonly entity: string
  /** The value's encoded fields, when it encodes to an object. */
  readonly fields: ReadonlyArray<string> | undefined
  /** Absent: the entity is kept in the store's generic key/JSON table. */
  readonly table: Table | undefined
}

/**
 * An encoded value and the version it was committed at.
 *
 * @since 0.1.0
 * @category models
 */
export interface Row {
  readonly version: number
  readonly value: unknown
}

/**
 * A committed change of one key, by anyone: the library, another service, a migration, `psql`.
 *
 * @since 0.2.0
 * @category models
 */
export interface Change {
  readonly key: string
  /** The version the row was written with; for a deletion, the deleted row's version. */
  readonly version: number
  readonly deleted: boolean
  /** Milliseconds from the statement that made the change to the pull that returned it (the database's clock). */
  readonly age: number
}

/**
 * The store failed, and a write did not happen.
 *
 * When PostgreSQL refused a statement, `sqlState`, `databaseMessage` and the names PostgreSQL gives
 * (`constraint`, `schema`, `table`, `column`, `dataType`) say why, and the message ends with them, as in
 * `store put failed (Rejected) for users "k1": PostgreSQL 22001 value too long for type character varying(5)`.
 * None of them holds a value that was written or looked up: `SqlStore` leaves out PostgreSQL's
 * detail (`Key (email)=(a@b) already exists`) and redacts the literals its message quotes (see
 * `databaseMessage`). Only `cause` keeps the driver's error whole.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreError extends TypeIdError(WriteThroughErrorTypeId, "StoreError")<{
  readonly entity: string
  readonly key: string
  readonly operation: string
  /**
   * `Unavailable`: not reached; `Rejected`: the database refused the statement;
   * `Timeout`: a read ran out of time; `Decode`: a stored row does not fit the schema;
   * `Schema`: the table does not fit the entity (raised when the layer is built);
   * `Transaction`: a write was attempted inside a SQL transaction other than `WriteThrough.transaction`'s,
   * or that transaction could not begin.
   */
  readonly reason: "Unavailable" | "Rejected" | "Timeout" | "Decode" | "Schema" | "Transaction"
  readonly detail?: string | undefined
  /**
   * PostgreSQL's SQLSTATE, when the database reported the failure: `22001` a value too long,
   * `22P02` a value of the wrong syntax, `23502` a NOT NULL, `23505` a unique, `23514` a check
   * constraint violated, `25P02` an aborted transaction, ...
   *
   * @since 0.2.0
   */
  readonly sqlState?: string | undefined
  /**
   * PostgreSQL's primary message, without the values in it. PostgreSQL double-quotes names and
   * values alike, and does not escape a quote inside a value; so a quoted text is kept only when
   * it is exactly a name the same error reports in `schema`, `table`, `column`, `dataType` or
   * `constraint`, and from the first quoted text that is not, up to the message's last double
   * quote, everything becomes `"…"`. In class 22 (data exceptions, whose messages quote the
   * offending value) no quoted text is kept. Bytes written as `0x..` (an invalid encoding's)
   * become `0x…`. Absent when a PL/pgSQL `RAISE` wrote the message, in a function or trigger: its
   * text is whatever its author put in it, values included. PostgreSQL's `detail`, `hint` and
   * `where` are never repeated.
   *
   * @since 0.2.0
   */
  readonly databaseMessage?: string | undefined
  /**
   * The constraint PostgreSQL names as violated (a unique, check, foreign key or exclusion constraint).
   *
   * @since 0.2.0
   */
  readonly constraint?: string | undefined
  /**
   * The schema of the table (or type) PostgreSQL names in the error.
   *
   * @since 0.2.0
   */
  readonly schema?: string | undefined
  /**
   * The table PostgreSQL names in the error.
   *
   * @since 0.2.0
   */
  readonly table?: string | undefined
  /**
   * The column PostgreSQL names in the error, for example the one a NOT NULL violation is about.
   *
   * @since 0.2.0
   */
  readonly column?: string | undefined
  /**
   * The data type PostgreSQL names in the error, for example the domain whose constraint failed.
   *
   * @since 0.2.0
   */
  readonly dataType?: string | undefined
  /**
   * With reason `Schema`: the statement that makes the table fit the entity (it is also the end of
   * the message). Review it before running it.
   *
   * @since 0.2.0
   */
  readonly suggestedDdl?: string | undefined
  /**
   * What failed underneath, unredacted: for a database failure, `@effect/sql`'s `SqlError` around
   * the driver's error, whose `detail` and `where` may hold the values written or looked up. Do
   * not log it where values must not go.
   */
  readonly cause?: unknown
}> {
  override get message(): string {
    const reported =
      this.sqlState === undefined
        ? undefined
        : this.databaseMessage === undefined
          ? `PostgreSQL ${this.sqlState}`
          : `PostgreSQL ${this.sqlState} ${this.databaseMessage}`
    const explanation = [this.detail, reported].filter((part) => part !== undefined).join(": ")
    return `store ${this.operation} failed (${this.reason}) for ${this.entity} ${JSON.stringify(this.key)}${
      explanation === "" ? "" : `: ${explanation}`
    }`
  }
}

/**
 * The write was sent but its outcome is unknown: the connection was lost or the
 * call timed out while the database may have been committing.
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreOutcomeUnknownError extends TypeIdError(WriteThroughErrorTypeId, "StoreOutcomeUnknownError")<{
  readonly entity: string
  readonly key: string
  readonly operation: string
  readonly cause?: unknown
}> {
  override get message(): string {
    return `store ${this.operation} for ${this.entity} ${JSON.stringify(this.key)} may or may not have committed`
  }
}

/**
 * @since 0.2.0
 * @category guards
 */
export const isStoreError = (u: unknown): u is StoreError => isWriteThroughError(u) && u._tag === "StoreError"

/**
 * @since 0.2.0
 * @category guards
 */
export const isStoreOutcomeUnknownError = (u: unknown): u is StoreOutcomeUnknownError =>
  isWriteThroughError(u) && u._tag === "StoreOutcomeUnknownError"

/**
 * @since 0.1.0
 * @category models
 */
export declare namespace Store {
  /**
   * One entity's rows. Versions returned by `put` and `delete` belong to
   * committed writes; `delete` returns a fresh version, above the deleted row's.
   *
   * @since 0.1.0
   * @category models
   */
  export interface Collection {
    readonly get: (key: string) => Effect.Effect<Option.Option<Row>, StoreError>
    /** One query for many keys; the rows found, by key. */
    readonly getMany: (keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, Row>, StoreError>
    readonly put: (key: string, value: unknown) => Effect.Effect<number, StoreError | StoreOutcomeUnknownError>
    /**
     * Writes every entry (keys distinct) atomically, in one round trip where the store can: the
     * committed version of each key. All or nothing, so an error leaves none of them written,
     * except an unknown outcome, which may have written all of them. `SqlStore` locks every key in
     * one transaction, and PostgreSQL's lock table bounds how many (`max_locks_per_transaction`
     * × connections, shared by all sessions): a batch beyond it fails whole, with nothing written.
     */
    readonly putMany: (
      entries: ReadonlyArray<readonly [key: string, value: unknown]>
    ) => Effect.Effect<ReadonlyMap<string, number>, StoreError | StoreOutcomeUnknownError>
    readonly delete: (key: string) => Effect.Effect<number, StoreError | StoreOutcomeUnknownError>
    /**
     * For each of `keys` whose deletion the store still records, the version of the row it deleted:
     * what a reader that found no row leaves in the cache as a tombstone, so that no write older
     * than the deletion lands there after it returned. `SqlStore` records deletions with
     * `changeCapture` on, until the change feed has consumed them (and left that tombstone itself).
     * A store without it leaves no such tombstone.
     *
     * @since 0.2.0
     */
    readonly deletions?:
      ((keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, number>, StoreError>) | undefined
    /**
     * Every committed change of the entity's rows, by anyone, when the store captures them
     * (`SqlStore`'s `changeCapture`); the write-through then consumes it and tombstones each
     * changed key's older entries.
     *
     * @since 0.2.0
     */
    readonly changes?: ChangeFeed | undefined
  }

  /**
   * The changes of one entity, in pages, each pulled until it is committed. One process at a time
   * consumes an entity's changes; the others' pulls return `undefined` and take over when it stops
   * renewing its claim. A page may repeat changes already seen (after a takeover, a restart, or a
   * pull that was not committed): applying one is idempotent.
   *
   * @since 0.2.0
   * @category models
   */
  export interface ChangeFeed {
    /** How often the consumer pulls: after a pass it waits for what is left of it, after a full page not at all. */
    readonly pollInterval: Duration.Duration
    /** The most changes one pull returns. */
    readonly batchSize: number
    /** A change that reaches the cache this long after its statement is logged as the feed falling behind. */
    readonly warnAfter: Duration.Duration
    /** The next page of changes not yet committed; `undefined` while another process consumes them. */
    readonly pull: Effect.Effect<ReadonlyArray<Change> | undefined, StoreError>
    /** The last page pulled reached the cache: the next pull goes on after it, and the position is kept durably. */
    readonly commit: Effect.Effect<void, StoreError>
    /** Gives the feed up, its position recorded, so that another process takes it over without waiting for the claim to run out. */
    readonly release: Effect.Effect<void, StoreError>
  }

  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /** Checks that the entity fits the store (table, columns, version) and prepares its statements. */
    readonly collection: (target: Target) => Effect.Effect<Collection, StoreError>
    /**
     * Runs `effect` in one transaction: the writes of this store's collections inside it commit
     * together when it succeeds, and none does when it fails. Their versions are drawn inside the
     * transaction and hold until it ends (a later writer of the same key waits for it). Fails with
     * a `StoreError` when the transaction cannot begin, or when `effect` already runs inside a
     * transaction of the store's database that this store did not begin, or when it finds before
     * COMMIT that the transaction cannot commit (PostgreSQL aborts it after any failed statement):
     * a typed failure always means nothing committed. A failing COMMIT is a defect, as in
     * `@effect/sql`: its outcome is unknown. Use `WriteThrough.transaction`, which also publishes
     * the cache updates after the commit.
     */
    readonly transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
    /**
     * True when a read made now would run inside a database transaction (a bare
     * `sql.withTransaction`, say), and so may see rows that are not committed, or an old snapshot:
     * the write-through then neither fills the cache from it nor shares it with other readers.
     */
    readonly inTransaction: Effect.Effect<boolean>
  }
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Store extends Context.Tag("effect-write-through/Store")<Store, Store.Service>() {}

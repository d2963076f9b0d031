/**
 * Change capture: every committed INSERT, UPDATE and DELETE of an entity's table reaches the cache,
 * whoever made it (another service, a migration, a person in `psql`) and whether or not the
 * process that made it lived to update the cache.
 *
 * `SqlStore.layer({ changeCapture: true })` turns it on. The store then keeps an outbox table
 * (`<versionSequence>_changes`), written by a trigger on each entity table in the writing
 * transaction itself, so a change is recorded exactly when it commits; and a table of positions
 * (`<versionSequence>_feeds`), one row per entity. Each entity table needs two triggers, which an
 * entity whose table lacks them names, with their DDL, when its layer is built: the version trigger
 * (`effect_write_through_version`: a write made outside the library gets a version from the
 * store's sequence) and the capture trigger (`effect_write_through_capture`). Entities in the
 * store's generic table need nothing: the store adds both there.
 *
 * Every process running the write-through competes for each entity's feed; one consumes it (it
 * holds a lease of `lease` in the positions table, renewed every third of it) and the others take
 * over once it stops renewing, from the durable position. Consuming means polling the outbox every
 * `pollInterval` and writing, for each change, a guarded tombstone that replaces whatever the cache
 * holds of the key that is older than the change: the version it committed with for an update
 * (minus one, so that the library's own write of that version, already in the cache, stays), the
 * deleted row's version for a delete. A change applied twice is no harm: the guard keeps the newer
 * of two versions. What the position names as applied is deleted from the outbox.
 *
 * The position is a transaction id, not a sequence value: a change is taken once every transaction
 * that began before it has ended, in the order of the database's snapshots, so a transaction that
 * commits late with an earlier outbox row is never skipped. PostgreSQL 13 or later; any
 * `wal_level`.
 *
 * @since 0.2.0
 */
import * as Config from "effect/Config"
import type * as Duration from "effect/Duration"
import * as Option from "effect/Option"

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /**
   * How often the consuming process looks for new changes: a pass that applied some waits only for
   * what is left of the interval, one that returned a full page none. Default 20 millis.
   */
  readonly pollInterval?: Duration.DurationInput | undefined
  /**
   * How long one process's claim on an entity's feed lasts without renewal: the longest a feed
   * goes unconsumed after its consumer died, before another process takes over. Default 600 millis.
   */
  readonly lease?: Duration.DurationInput | undefined
  /** The most changes one pull returns. Default 1000. */
  readonly batchSize?: number | undefined
  /** A change applied this long after it was made is logged as the feed falling behind. Default 1 second. */
  readonly warnAfter?: Duration.DurationInput | undefined
}

/**
 * The options from configuration: `POLL_INTERVAL`, `LEASE`, `BATCH_SIZE` and `WARN_AFTER`, each
 * optional, for example under `Config.nested("CHANGE_CAPTURE")`.
 *
 * @since 0.2.0
 * @category config
 */
export const config: Config.Config<Options> = Config.all({
  pollInterval: Config.option(Config.duration("POLL_INTERVAL")),
  lease: Config.option(Config.duration("LEASE")),
  batchSize: Config.option(
    Config.integer("BATCH_SIZE").pipe(
      Config.validate({ message: "must be a whole number of changes, 1 or more", validation: (n) => n >= 1 })
    )
  ),
  warnAfter: Config.option(Config.duration("WARN_AFTER"))
}).pipe(
  Config.map((options) => ({
    pollInterval: Option.getOrUndefined(options.pollInterval),
    lease: Option.getOrUndefined(options.lease),
    batchSize: Option.getOrUndefined(options.batchSize),
    warnAfter: Option.getOrUndefined(options.warnAfter)
  }))
)

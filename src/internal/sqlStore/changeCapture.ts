/**
 * Change capture in PostgreSQL: a trigger on each entity table (see `triggers.ts`) records every
 * committed change in an outbox, in the writing transaction; one process per entity polls it (the
 * feed) under a lease.
 *
 * Outbox rows are taken in the order of the database's snapshots, not of their positions: a
 * position (like a version) is drawn before its transaction commits, so a lower one can become
 * visible after a higher one was read. Each pull reads the rows of the transactions that the
 * previous pass could not see (those in progress in its snapshot, or begun after it), and the
 * durable position is the oldest transaction still in progress when a pass began: every
 * transaction before it has ended, and its rows were seen.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { Options } from "../../ChangeCapture.js"
import type { Change, Store, StoreError } from "../../Store.js"
import { schemaMismatch, type Site, storeWide, undecodable } from "../storeError.js"
import { statementFailure } from "./databaseFailure.js"
import { ensure, serverVersion } from "./schema.js"
import type { CaptureObjects } from "./statements.js"

export const createChangesTable = ({ changes }: CaptureObjects): string =>
  `CREATE TABLE IF NOT EXISTS ${changes} (` +
  `"position" bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, ` +
  `"xid" xid8 NOT NULL DEFAULT pg_current_xact_id(), "tag" text NOT NULL, "key" text NOT NULL, ` +
  `"version" bigint NOT NULL, "deleted" boolean NOT NULL, "at" timestamptz NOT NULL DEFAULT clock_timestamp())`

export const createChangesIndex = ({ changes, changesIndex }: CaptureObjects): string =>
  `CREATE INDEX IF NOT EXISTS ${changesIndex} ON ${changes} ("tag", "xid")`

// Deletions only, for the readers that find a key absent (`deletions`).
export const createDeletionsIndex = ({ changes, deletionsIndex }: CaptureObjects): string =>
  `CREATE INDEX IF NOT EXISTS ${deletionsIndex} ON ${changes} ("tag", "key") WHERE "deleted"`

/** For each key of `$2` whose deletion the outbox holds: the newest deleted row's version. */
export const deletionsSql = ({ changes }: CaptureObjects): string =>
  `SELECT "key", max("version") FROM ${changes} WHERE "tag" = $1 AND "deleted" AND "key" = ANY($2) GROUP BY "key"`

export const createFeedsTable = ({ feeds }: CaptureObjects): string =>
  `CREATE TABLE IF NOT EXISTS ${feeds} ("tag" text PRIMARY KEY, "holder" text NOT NULL, ` +
  `"until" timestamptz NOT NULL, "watermark" xid8 NOT NULL DEFAULT '0')`

/** Creates the outbox, its indexes and the positions' table, when missing. */
export const prepare = (sql: SqlClient.SqlClient, objects: CaptureObjects): Effect.Effect<void, StoreError> =>
  Effect.flatMap(serverVersion(sql), (version) =>
    version < 130000
      ? Effect.fail(
          schemaMismatch(storeWide("make"), {
            detail: `changeCapture needs PostgreSQL 13 or later (xid8 and pg_current_snapshot); the server is ${version}`
          })
        )
      : Effect.forEach(
          [createChangesTable(objects), createChangesIndex(objects), createFeedsTable(objects)],
          (ddl) => ensure(sql, ddl),
          { discard: true }
        )
  )

/** Where the next pull starts: the rows of transactions at or after `xmax`, or among `inProgress`. */
interface Cursor {
  readonly xmax: string
  readonly inProgress: ReadonlyArray<string>
}

interface Snapshot extends Cursor {
  readonly xmin: string
}

/** A pass over the cursor's rows, page by page; its first page's snapshot becomes the next cursor. */
interface Pass {
  readonly snapshot: Snapshot
  readonly after: string
}

interface Pulled {
  readonly snapshot: Snapshot
  readonly last: string | undefined
  readonly full: boolean
}

type Role =
  | { readonly _tag: "Waiting"; readonly retryAt: number }
  | {
      readonly _tag: "Consuming"
      renewAt: number
      cursor: Cursor
      pass: Pass | undefined
      pulled: Pulled | undefined
      /** The xmin of the last pass completed: what the next renewal records as the position. */
      applied: string
    }

/** `pg_snapshot`'s text form: `xmin:xmax:xip,xip,...`. */
const parseSnapshot = (text: string): Snapshot => {
  const [xmin, xmax, list] = text.split(":")
  return { xmin: xmin!, xmax: xmax!, inProgress: list === undefined || list === "" ? [] : list.split(",") }
}

export interface FeedSettings {
  readonly pollInterval: Duration.Duration
  readonly lease: Duration.Duration
  readonly batchSize: number
  readonly warnAfter: Duration.Duration
}

export const feedSettings = (options: Options): FeedSettings => ({
  pollInterval: Duration.decode(options.pollInterval ?? "20 millis"),
  lease: Duration.decode(options.lease ?? "600 millis"),
  batchSize: options.batchSize ?? 1000,
  warnAfter: Duration.decode(options.warnAfter ?? "1 second")
})

/** One entity's feed in this process: what its statements need, and where it stands. */
interface Feed {
  readonly sql: SqlClient.SqlClient
  readonly objects: CaptureObjects
  readonly tag: string
  readonly entity: string
  readonly settings: FeedSettings
  /** This process's claim, as the positions table names it. */
  readonly holder: string
  readonly at: Site
  role: Role
}

/**
 * One entity's feed. The claim is renewed (and the position recorded, and the outbox rows below it
 * deleted) every third of the lease.
 */
export const feed = (
  sql: SqlClient.SqlClient,
  objects: CaptureObjects,
  tag: string,
  entity: string,
  settings: FeedSettings
): Store.ChangeFeed => {
  const state: Feed = {
    sql,
    objects,
    tag,
    entity,
    settings,
    holder: crypto.randomUUID(),
    at: { ...storeWide("changes"), entity },
    role: { _tag: "Waiting", retryAt: 0 }
  }
  const { batchSize, pollInterval, warnAfter } = settings
  return {
    pollInterval,
    batchSize,
    warnAfter,
    pull: pull(state),
    commit: Effect.sync(() => commit(state)),
    release: release(state)
  }
}

const renewEvery = (feed: Feed) => Duration.toMillis(feed.settings.lease) / 3

// Takes the feed when it is free (or its lease ran out), or renews this process's claim; records
// the position reached and deletes the outbox rows below it. The position, when claimed.
const claim = ({ at, holder, objects, settings, sql, tag }: Feed, applied: string) => {
  const { changes, feeds } = objects
  return sql
    .unsafe(
      `WITH "claimed" AS (INSERT INTO ${feeds} ("tag", "holder", "until") ` +
        `VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond') ` +
        `ON CONFLICT ("tag") DO UPDATE SET "holder" = EXCLUDED."holder", "until" = EXCLUDED."until", ` +
        `"watermark" = CASE WHEN ${feeds}."holder" = EXCLUDED."holder" ` +
        `THEN greatest(${feeds}."watermark", $4::xid8) ELSE ${feeds}."watermark" END ` +
        `WHERE ${feeds}."holder" = EXCLUDED."holder" OR ${feeds}."until" < clock_timestamp() ` +
        `RETURNING "watermark"), ` +
        `"cleared" AS (DELETE FROM ${changes} WHERE "tag" = $1 AND "xid" < (SELECT "watermark" FROM "claimed")) ` +
        `SELECT "watermark"::text FROM "claimed"`,
      [tag, holder, Duration.toMillis(settings.lease), applied]
    )
    .values.pipe(
      Effect.mapError(statementFailure(at)),
      Effect.map((rows) => (rows[0] === undefined ? undefined : String(rows[0][0])))
    )
}

// One page of the outbox rows in the cursor's range, after `after`, with the statement's snapshot
// on every row (on one row of nulls when there are none).
const page = ({ at, objects, settings, sql, tag }: Feed, cursor: Cursor, after: string) =>
  sql
    .unsafe(
      `SELECT pg_current_snapshot()::text, "c"."position"::text, "c"."key", "c"."version", "c"."deleted", ` +
        `(extract(epoch FROM clock_timestamp() - "c"."at") * 1000)::float8 ` +
        `FROM (SELECT 1) AS "one" LEFT JOIN LATERAL (SELECT "position", "key", "version", "deleted", "at" ` +
        `FROM ${objects.changes} WHERE "tag" = $1 AND ("xid" >= $2::xid8 OR "xid" = ANY($3::text[]::xid8[])) ` +
        `AND "position" > $4::bigint ORDER BY "position" LIMIT $5) AS "c" ON true`,
      [tag, cursor.xmax, cursor.inProgress, after, settings.batchSize]
    )
    .values.pipe(Effect.mapError(statementFailure(at)))

const becomeConsumer = (feed: Feed, now: number, watermark: string) => {
  feed.role = {
    _tag: "Consuming",
    renewAt: now + renewEvery(feed),
    cursor: { xmax: watermark, inProgress: [] },
    pass: undefined,
    pulled: undefined,
    applied: watermark
  }
  return Effect.logInfo("consuming the change feed from its durable position").pipe(
    Effect.annotateLogs({ entity: feed.entity, position: watermark })
  )
}

// Whether this process consumes the feed now, claiming or renewing as due.
const consuming = (feed: Feed): Effect.Effect<boolean, StoreError> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const role = feed.role
    if (role._tag === "Waiting") {
      if (now < role.retryAt) return Effect.succeed(false)
      return Effect.flatMap(claim(feed, "0"), (watermark) => {
        if (watermark !== undefined) return Effect.as(becomeConsumer(feed, now, watermark), true)
        feed.role = { _tag: "Waiting", retryAt: now + renewEvery(feed) }
        return Effect.succeed(false)
      })
    }
    if (now < role.renewAt) return Effect.succeed(true)
    return Effect.flatMap(claim(feed, role.applied), (watermark) => {
      if (watermark !== undefined) {
        role.renewAt = now + renewEvery(feed)
        return Effect.succeed(true)
      }
      feed.role = { _tag: "Waiting", retryAt: now + renewEvery(feed) }
      return Effect.as(
        Effect.logInfo("another process took the change feed over").pipe(Effect.annotateLogs({ entity: feed.entity })),
        false
      )
    })
  })

const pull = (feed: Feed): Effect.Effect<ReadonlyArray<Change> | undefined, StoreError> =>
  Effect.flatMap(consuming(feed), (yes) => {
    const role = feed.role
    if (!yes || role._tag !== "Consuming") return Effect.succeed(undefined)
    return Effect.flatMap(page(feed, role.cursor, role.pass?.after ?? "0"), (rows) => {
      const changes: Array<Change> = []
      let last: string | undefined
      for (const row of rows) {
        if (row[1] === null) continue
        const version = Number(row[3])
        if (!Number.isSafeInteger(version)) {
          return Effect.fail(undecodable(feed.at, { detail: `change version ${String(row[3])} is not a safe integer` }))
        }
        last = String(row[1])
        changes.push({ key: String(row[2]), version, deleted: row[4] === true, age: Number(row[5]) })
      }
      role.pulled = {
        snapshot: parseSnapshot(String(rows[0]![0])),
        last,
        full: changes.length >= feed.settings.batchSize
      }
      return Effect.succeed(changes)
    })
  })

// A full page goes on with the same pass; the pass's last page moves the cursor to its first
// page's snapshot, and the position to that snapshot's oldest transaction still in progress.
const commit = (feed: Feed): void => {
  const role = feed.role
  if (role._tag !== "Consuming" || role.pulled === undefined) return
  const { pulled } = role
  const snapshot = role.pass?.snapshot ?? pulled.snapshot
  role.pulled = undefined
  if (pulled.full) {
    role.pass = { snapshot, after: pulled.last! }
  } else {
    role.cursor = snapshot
    role.applied = snapshot.xmin
    role.pass = undefined
  }
}

const release = (feed: Feed): Effect.Effect<void, StoreError> =>
  Effect.suspend(() => {
    const role = feed.role
    if (role._tag !== "Consuming") return Effect.void
    feed.role = { _tag: "Waiting", retryAt: 0 }
    return feed.sql
      .unsafe(
        `UPDATE ${feed.objects.feeds} SET "until" = clock_timestamp() - interval '1 millisecond', ` +
          `"watermark" = greatest("watermark", $3::xid8) WHERE "tag" = $1 AND "holder" = $2`,
        [feed.tag, feed.holder, role.applied]
      )
      .raw.pipe(Effect.mapError(statementFailure(feed.at)), Effect.asVoid)
  })

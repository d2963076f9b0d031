// What the chaos orchestrator and its worker processes share: the configuration, the table the
// workload writes, and the naive cache the checker must catch.
import * as SqlClient from "@effect/sql/SqlClient"
import { Duration, Effect, Layer, Option } from "effect"
import { Redis } from "ioredis"
import { Cache } from "../../src/index.js"
import { dropFunctionsOf } from "../support/changeCapture.js"

export interface WorkerConfig {
  readonly process: number
  readonly databaseUrl: string
  readonly redisUrl: string
  readonly keyPrefix: string
  readonly table: string
  readonly keys: ReadonlyArray<string>
  /** Keys the workers only read: only the foreign writer changes them, so only the change feed brings their changes. */
  readonly coldKeys: ReadonlyArray<string>
  readonly fibers: number
  /** How long the workload runs, then how long the process stays up so retries and repairs can finish. */
  readonly runMillis: number
  readonly settleMillis: number
  readonly applicationName: string
  /** The store's version sequence, the run's own: the change feed's outbox and positions are named after it. */
  readonly versionSequence: string
  /** SqlStore's change capture on: every committed change, the foreign writer's too, reaches the cache. */
  readonly changeCapture: boolean
  /** A write-through over a cache that ignores versions: what the checker must catch. */
  readonly naive: boolean
  /** RedisCache with its in-process tier on. */
  readonly near: boolean
  /** The tier in strict mode: a write returns once every other process holding the key dropped it. */
  readonly strict: boolean
  /** Probability of holding a step between the store and the cache, forcing races (a), (b), (c), (f). */
  readonly pauseProbability: number
  /** The journal: each write's invocation as it begins and every operation as it completes, one JSON object a line. */
  readonly output: string
}

export const historyTable = (table: string) => `${table}_history`

const refusedMarker = "!refused"

/** A payload the library takes and the workload's table refuses (a CHECK violation): the store's statement fails. */
export const refusedPayload = (value: string): string => `${value}${refusedMarker}`

/** The workload's table, and a history of every committed change written by a trigger in the same transaction. */
export const createTables = (table: string, versionSequence: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const history = historyTable(table)
    yield* sql.unsafe(`CREATE SEQUENCE IF NOT EXISTS "${versionSequence}"`).raw
    // The check lets the workload write values the library takes and the database refuses (refusedPayload).
    yield* sql.unsafe(
      `CREATE TABLE "${table}" (id text PRIMARY KEY, payload text NOT NULL CHECK (payload NOT LIKE '%${refusedMarker}'), ` +
        `version bigint NOT NULL)`
    ).raw
    yield* sql.unsafe(`CREATE TABLE "${history}" (key text NOT NULL, value text, version bigint NOT NULL)`).raw
    // A delete's version is drawn here under the same per-key lock the store's own statement holds,
    // so it falls in the key's commit order like the version the store returns.
    yield* sql.unsafe(`CREATE FUNCTION "${table}_record"() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF TG_OP = 'DELETE' THEN
          INSERT INTO "${history}" VALUES (OLD.id, NULL, nextval('"${versionSequence}"'));
          RETURN OLD;
        END IF;
        INSERT INTO "${history}" VALUES (NEW.id, NEW.payload, NEW.version);
        RETURN NEW;
      END $$`).raw
    yield* sql.unsafe(
      `CREATE TRIGGER "${table}_record" AFTER INSERT OR UPDATE OR DELETE ON "${table}" ` +
        `FOR EACH ROW EXECUTE FUNCTION "${table}_record"()`
    ).raw
  })

export const dropTables = (table: string, versionSequence: string) =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`DROP TABLE IF EXISTS "${table}"`).raw
    yield* sql.unsafe(`DROP TABLE IF EXISTS "${historyTable(table)}"`).raw
    yield* sql.unsafe(`DROP FUNCTION IF EXISTS "${table}_record"()`).raw
    // The change feed's objects, named after the run's sequence (see SqlStore's changeCapture).
    yield* sql.unsafe(`DROP TABLE IF EXISTS "${versionSequence}_changes", "${versionSequence}_feeds"`).raw
    yield* sql.unsafe(dropFunctionsOf(versionSequence)).raw
    yield* sql.unsafe(`DROP SEQUENCE IF EXISTS "${versionSequence}"`).raw
  })

/**
 * The cache of a hand-written write-through: a plain SET on every write and fill, a DEL on
 * invalidation; no version guard, no tickets. Same wire format, so the checker reads it alike.
 */
export const naiveRedisCache = (url: string, keyPrefix: string) =>
  Layer.scoped(
    Cache.Cache,
    Effect.gen(function* () {
      const redis = yield* Effect.acquireRelease(
        Effect.sync(() => new Redis(url, { keyPrefix, commandTimeout: 300 })),
        (redis) => Effect.sync(() => redis.disconnect())
      )
      redis.on("error", () => {})
      const call = <A>(operation: string, key: string, run: () => Promise<A>) =>
        Effect.tryPromise({
          try: run,
          catch: (cause) => new Cache.CacheError({ operation, key, reason: "Unavailable", cause })
        })
      const decode = (raw: string | null) => {
        const match = raw === null ? null : /^v(\d+):/.exec(raw)
        return match === null || raw === null
          ? Option.none()
          : Option.some(Cache.Entry.Value({ version: Number(match[1]), payload: raw.slice(match[0].length) }))
      }
      const write = (key: string, entry: Cache.Entry, ttl: Duration.Duration) =>
        call("set", key, () =>
          redis.set(
            key,
            `v${entry.version}:${(entry as { payload: string }).payload}`,
            "PX",
            Math.ceil(Duration.toMillis(ttl))
          )
        )
      return Cache.Cache.of({
        selfBounded: true,
        reusesEntries: false,
        get: (key) =>
          Effect.map(
            call("get", key, () => redis.get(key)),
            decode
          ),
        getMany: (keys) =>
          Effect.map(
            call("get", keys[0] ?? "", () => redis.mget(keys as Array<string>)),
            (raws) => raws.map(decode)
          ),
        ticket: () => Effect.succeed({ epoch: "naive", notAfter: Number.MAX_SAFE_INTEGER }),
        lease: () => Effect.succeed(true),
        getOrLease: (key) =>
          Effect.map(
            call("get", key, () => redis.get(key)),
            (raw) => ({ entry: decode(raw), leased: true })
          ),
        scan: () => Effect.succeed(["0", []] as const),
        set: (key, entry, { ttl }) => Effect.as(write(key, entry, ttl), "written" as const),
        setMany: (items) =>
          Effect.forEach(items, ({ entry, key, options }) =>
            Effect.as(write(key, entry, options.ttl), "written" as const)
          ),
        invalidate: (key) => call("invalidate", key, () => redis.del(key)).pipe(Effect.as("written" as const))
      })
    })
  )

/** A monotonic clock shared by every process on the machine (CLOCK_MONOTONIC), in microseconds. */
export const monotonicMicros = (): number => Number(process.hrtime.bigint() / 1000n)

// The real services the suites run against, and per-test isolation on them.
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Duration, Effect, Layer, Redacted, Schedule } from "effect"
import { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import { RedisCache } from "../../src/index.js"

export const databaseUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
export const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"

/** The application name the library's connections carry in tests, so a test can find them in pg_stat_activity. */
export const applicationName = "effect-write-through-test"

/** A name unique to this test run and call: a table name or a key prefix. */
export const unique = (label: string): string => `${label}_${randomUUID().replaceAll("-", "").slice(0, 12)}`

/** Fails with a message naming the URL when Postgres does not answer: no silent skips. */
export const PgLive = PgClient.layer({
  url: Redacted.make(databaseUrl),
  applicationName,
  connectTimeout: Duration.seconds(5),
  maxConnections: 4
}).pipe(
  Layer.mapError(
    (error) =>
      new Error(`PostgreSQL at ${databaseUrl} is not reachable (start it or set DATABASE_URL): ${error.message}`)
  )
)

/** A second connection pool, with an application name of its own, for locking and terminating the library's backends. */
export const adminClient = Layer.build(
  PgClient.layer({
    url: Redacted.make(databaseUrl),
    applicationName: `${applicationName}-admin`,
    connectTimeout: Duration.seconds(5),
    maxConnections: 2
  })
).pipe(Effect.map(Context.get(SqlClient.SqlClient)))

/** Deletes every key under a test's prefix from the shared Redis (SCAN, never KEYS). */
export const dropPrefix = (prefix: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Redis(redisUrl, { commandTimeout: 2000 })),
    (redis) =>
      Effect.promise(async () => {
        let cursor = "0"
        do {
          const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000)
          cursor = next
          if (keys.length > 0) await redis.unlink(...keys)
        } while (cursor !== "0")
      }),
    (redis) => Effect.sync(() => redis.disconnect())
  ).pipe(Effect.ignore)

/**
 * A RedisCache on the shared Redis, under a key prefix of its own, whose keys (the epoch marker
 * included, which never expires) are deleted when the layer is released.
 */
export const redisCacheLayer = (
  prefix: string = unique("wt"),
  options: Omit<RedisCache.Options, "url" | "keyPrefix"> = {}
) =>
  Layer.merge(
    RedisCache.layer({ ...options, url: redisUrl, keyPrefix: `${prefix}:` }),
    Layer.scopedDiscard(Effect.addFinalizer(() => dropPrefix(prefix)))
  )

/** A raw ioredis client for inspecting and vandalising what the library wrote. */
export const rawRedis = Effect.acquireRelease(
  Effect.sync(() => new Redis(redisUrl, { lazyConnect: true, commandTimeout: 2000 })),
  (redis) => Effect.promise(() => redis.quit())
).pipe(Effect.tap((redis) => Effect.promise(() => redis.connect())))

/** Creates a table for a test and drops it when the test's scope closes. */
export const scopedTable = (ddl: (name: string) => string, label = "users") =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const name = unique(label)
    yield* Effect.acquireRelease(sql.unsafe(ddl(name)).raw, () =>
      sql.unsafe(`DROP TABLE IF EXISTS "${name}"`).raw.pipe(Effect.orDie)
    )
    return name
  })

/** The `users(id, name, email)` table of the seed example, with the version column the store needs. */
export const usersTable = scopedTable(
  (name) =>
    `CREATE TABLE "${name}" (id text PRIMARY KEY, name text NOT NULL, email text NOT NULL, version bigint NOT NULL)`
)

/**
 * The pids of the library's backends (found by application name) that wait on a lock
 * while running a statement on `table`: a put, get or delete blocked by the test.
 */
export const blockedBackends = (admin: SqlClient.SqlClient, table: string, count = 1) =>
  admin
    .unsafe(
      `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock' ` +
        `AND state = 'active' AND position($2 in query) > 0`,
      [applicationName, table]
    )
    .values.pipe(
      Effect.map((rows) => rows.map((row) => Number(row[0]))),
      Effect.filterOrFail((pids) => pids.length >= count),
      Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.intersect(Schedule.recurs(500))))
    )

// The layers the examples run on: PostgreSQL when DATABASE_URL is set (tables of the run's own, dropped at the end)
// else MemoryStore; Redis when REDIS_URL is set (keys under a prefix of the run's own, deleted at the end) else
// MemoryCache. Each run is named at random, so nothing it writes meets another program's data.
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { Cause, Console, Effect, Layer, Redacted } from "effect"
import { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import { type Cache, MemoryCache, MemoryStore, RedisCache, SqlStore, type Store } from "../src/index.js"

export const databaseUrl = process.env.DATABASE_URL
export const redisUrl = process.env.REDIS_URL

/** A name unique to this run, for tables (`users_<run>`) and key prefixes. */
export const run = randomUUID().replaceAll("-", "").slice(0, 12)

/** A table and its columns; every table of the write-through needs a `bigint` version column besides. */
export interface ExampleTable {
  readonly name: string
  readonly columns: string
}

/** The store: the tables are created now and dropped when the layer is released. */
export const storeLayer = (tables: ReadonlyArray<ExampleTable>): Layer.Layer<Store.Store, unknown> =>
  databaseUrl === undefined
    ? MemoryStore.layer
    : Layer.mergeAll(
        SqlStore.layer(),
        Layer.scopedDiscard(
          Effect.flatMap(SqlClient.SqlClient, (sql) =>
            Effect.forEach(tables, ({ columns, name }) =>
              Effect.acquireRelease(sql.unsafe(`CREATE TABLE "${name}" (${columns}, version bigint NOT NULL)`), () =>
                sql.unsafe(`DROP TABLE IF EXISTS "${name}"`).pipe(Effect.ignore)
              )
            )
          )
        )
      ).pipe(Layer.provideMerge(PgClient.layer({ url: Redacted.make(databaseUrl) })))

// Deletes the run's keys (SCAN, never KEYS): entries, tombstones and the epoch marker.
const dropKeys = (url: string, keyPrefix: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Redis(url, { commandTimeout: 2000 })),
    (redis) =>
      Effect.promise(async () => {
        let cursor = "0"
        do {
          const [next, keys] = await redis.scan(cursor, "MATCH", `${keyPrefix}*`, "COUNT", 1000)
          cursor = next
          if (keys.length > 0) await redis.unlink(...keys)
        } while (cursor !== "0")
      }),
    (redis) => Effect.sync(() => redis.disconnect())
  ).pipe(Effect.ignore)

/** The cache: this run's keys are deleted when the layer is released. */
export const cacheLayer = (keyPrefix: string): Layer.Layer<Cache.Cache, unknown> =>
  redisUrl === undefined
    ? MemoryCache.layer()
    : Layer.merge(
        RedisCache.layer({ url: redisUrl, keyPrefix }),
        Layer.scopedDiscard(Effect.addFinalizer(() => dropKeys(redisUrl!, keyPrefix)))
      )

/** Prints where the example keeps its data. */
export const describeEnvironment = (keyPrefix: string, tables: ReadonlyArray<ExampleTable>) =>
  Effect.all([
    Console.log(`cache: ${redisUrl === undefined ? "MemoryCache (in process)" : `Redis, keys under ${keyPrefix}`}`),
    Console.log(
      `store: ${databaseUrl === undefined ? "MemoryStore (in process)" : `PostgreSQL, tables ${tables.map((t) => t.name).join(", ")}`}\n`
    )
  ])

/**
 * Runs an example's main effect with `NodeRuntime.runMain`: a failure is printed with its cause and the exit code set
 * to 1; SIGINT or SIGTERM interrupts it, so that the layers still drop their tables and keys and close their
 * connections.
 */
export const runExample = <A, E>(main: Effect.Effect<A, E>) =>
  NodeRuntime.runMain(
    main.pipe(
      Effect.tapError((error) => {
        const { cause, message } = error as { readonly message?: unknown; readonly cause?: unknown }
        const text = typeof message === "string" ? message : String(error)
        const detail = cause instanceof Error && !text.includes(cause.message) ? ` (${cause.message})` : ""
        return Console.error(`example failed: ${text}${detail}`)
      }),
      Effect.tapDefect((cause) => Console.error(`example failed: ${Cause.pretty(cause)}`))
    ),
    { disableErrorReporting: true }
  )

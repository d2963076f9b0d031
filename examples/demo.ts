// `npm start`: a short tour of the write-through cache.
//
// With no environment it runs on the embedded defaults, MemoryCache and MemoryStore, and needs no services.
// Set DATABASE_URL to keep the users in PostgreSQL (table `demo_users`, created if missing) and REDIS_URL to
// cache them in Redis:
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379 npm start
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { Cause, Console, Effect, Layer, Metric, Option, Redacted, Schema } from "effect"
import { MemoryCache, MemoryStore, Metrics, RedisCache, SqlStore, WriteThrough } from "../src/index.js"

// The value: what the database row holds and, as JSON, what the cache holds.
const Email = Schema.String.pipe(
  Schema.pattern(/^[^@\s]+@[^@\s]+$/),
  Schema.annotations({ identifier: "Email", message: () => "not an email address" })
)
const User = Schema.Struct({ id: Schema.String, name: Schema.NonEmptyTrimmedString, email: Email }).annotations({
  identifier: "User"
})
type User = typeof User.Type

// The entity: its key, its value, the table it maps onto (used by SqlStore), and how long the cache may keep it.
class Users extends WriteThrough.Service<Users>()("demo/Users", {
  key: Schema.String,
  value: User,
  table: { name: "demo_users", primaryKey: "id" },
  ttl: "10 minutes"
}) {}

const databaseUrl = process.env.DATABASE_URL
const redisUrl = process.env.REDIS_URL

// Where the users live: PostgreSQL when DATABASE_URL is set, else process memory.
const StoreLive =
  databaseUrl === undefined
    ? MemoryStore.layer
    : Layer.mergeAll(
        SqlStore.layer(),
        // The table needs a `bigint` version column next to the value's fields; the library fills it.
        Layer.effectDiscard(
          Effect.flatMap(
            SqlClient.SqlClient,
            (sql) =>
              sql`CREATE TABLE IF NOT EXISTS demo_users (
                id text PRIMARY KEY,
                name text NOT NULL,
                email text NOT NULL,
                version bigint NOT NULL
              )`
          )
        )
      ).pipe(Layer.provide(PgClient.layer({ url: Redacted.make(databaseUrl) })))

// Where the users are cached: Redis when REDIS_URL is set, else process memory.
const CacheLive = redisUrl === undefined ? MemoryCache.layer() : RedisCache.layer({ url: redisUrl })

const UsersLive = Users.Default.pipe(Layer.provide(Layer.merge(CacheLive, StoreLive)))

// A URL fit to print: without its password.
const display = (url: string) => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return "<unparseable url>"
  }
}

const show = (user: Option.Option<User>) =>
  Option.match(user, { onNone: () => "None", onSome: (u) => `Some(${u.name} <${u.email}>)` })

const program = Effect.gen(function* () {
  const users = yield* Users
  const ada: User = { id: "1", name: "Ada Lovelace", email: "ada@example.com" }

  yield* users.set(ada.id, ada) // the database first, then the cache
  yield* Console.log(`set "1"        -> ok`)
  yield* Console.log(`get "1"        -> ${show(yield* users.get("1"))}   (served by the cache)`)

  yield* users.delete("1") // the database first, then a tombstone in the cache
  yield* Console.log(`delete "1"     -> ok`)
  yield* Console.log(`get "1"        -> ${show(yield* users.get("1"))}`)

  // Values are checked against their Schema before any I/O: nothing is written.
  yield* users.set("2", { id: "2", name: "Bob", email: "bob at example.com" }).pipe(
    Effect.zipRight(Console.log(`set "2"        -> ok`)),
    Effect.catchTag("ValidationError", (error) =>
      Console.log(`set "2"        -> ValidationError: ${error.message.replaceAll("\n", "\n                  ")}`)
    )
  )

  // Every counter is tagged with the entity and the operation; this sums over operations.
  const count = (counter: Metric.Metric.Counter<number>) => Metrics.total(counter, { entity: Users.entity })
  yield* Console.log(
    `\nmetrics: ${yield* count(Metrics.cacheHits)} cache hit, ${yield* count(Metrics.cacheMisses)} cache miss`
  )
})

// Providing the layer scopes it to the program: connections are closed when it ends, so the process exits.
const main = Effect.gen(function* () {
  yield* Console.log(`cache: ${redisUrl === undefined ? "MemoryCache (in process)" : `Redis at ${display(redisUrl)}`}`)
  yield* Console.log(
    `store: ${databaseUrl === undefined ? "MemoryStore (in process)" : `PostgreSQL at ${display(databaseUrl)}, table demo_users`}\n`
  )
  yield* program.pipe(Effect.provide(UsersLive))
}).pipe(
  Effect.tapError((error) => {
    const cause: unknown = error.cause
    const detail = cause instanceof Error && !error.message.includes(cause.message) ? ` (${cause.message})` : ""
    return Console.error(`demo failed: ${error.message}${detail}`)
  }),
  Effect.tapDefect((cause) => Console.error(`demo failed: ${Cause.pretty(cause)}`))
)

// runMain runs the program and sets the exit code (1 on a failure); on SIGINT or SIGTERM it interrupts the program,
// so that the layers still close their connections. Failures are printed above, so its own report is off.
NodeRuntime.runMain(main, { disableErrorReporting: true })

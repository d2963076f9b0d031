// `npm run example:users`: users kept in PostgreSQL and cached in Redis.
//
// It needs both services, at DATABASE_URL and REDIS_URL (defaults postgres://postgres@127.0.0.1:5432/test and
// redis://127.0.0.1:6379), and creates its table, `example_users`, if it is missing.
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { Cause, Config, Console, Effect, Equal, Layer, Option, Redacted, Schema } from "effect"
import { RedisCache, SqlStore, WriteThrough } from "../src/index.js"

class User extends Schema.Class<User>("User")({
  id: Schema.String,
  name: Schema.String,
  email: Schema.String
}) {}

// One entity: its key, its value, the table it maps onto, how long the cache may keep it.
class Users extends WriteThrough.Service<Users>()("app/Users", {
  key: Schema.String,
  value: User,
  table: { name: "example_users", primaryKey: "id" },
  ttl: "1 hour"
}) {}

// Writes the user: the database first, then the cache.
const setUser = (user: User) =>
  Effect.gen(function* () {
    const users = yield* Users
    yield* users.set(user.id, user)
  }).pipe(
    // The write is committed; only the cache lags. It may serve the previous value until `staleUntil`
    // (at most `maxStaleness`, the TTL plus its jitter). Nothing is lost: accept it, or write again later to refresh the cache sooner.
    Effect.catchTag("StaleCacheError", (error) =>
      Effect.logWarning(`cache may be stale until ${new Date(error.staleUntil).toISOString()}`).pipe(
        Effect.annotateLogs({ entity: error.entity, key: error.key, version: error.version })
      )
    ),
    // The database's outcome is unknown (connection lost while committing, or a timeout). The key is fenced
    // in the cache, so reads go to the database: read the user back and write again if the write is missing.
    Effect.catchTag("InconsistentCacheError", (error) =>
      Effect.gen(function* () {
        yield* Effect.logWarning(`outcome unknown (${error.message}); reading back`)
        const users = yield* Users
        const current = yield* users.get(user.id)
        // Unless the fence was written, `get` may be answered by the old cache entry: then just write again.
        if (error.invalidated && Option.exists(current, (stored) => Equal.equals(stored, user))) return
        yield* users.set(user.id, user)
      })
    )
  )

// Reads the user: the cache, else the database (filling the cache). `None` when there is no such user.
const getUser = (id: string) => Effect.flatMap(Users, (users) => users.get(id))

const deleteUser = (id: string) => Effect.flatMap(Users, (users) => users.delete(id))

const show = (user: Option.Option<User>) =>
  Option.match(user, { onNone: () => "None", onSome: (u) => `Some(${u.name} <${u.email}>)` })

const program = Effect.gen(function* () {
  yield* setUser(new User({ id: "42", name: "Ada", email: "ada@example.com" }))
  yield* Console.log(`set_user(42)    -> ok`)
  yield* Console.log(`get_user(42)    -> ${show(yield* getUser("42"))}`)

  yield* setUser(new User({ id: "42", name: "Ada Lovelace", email: "ada@example.com" }))
  yield* Console.log(`set_user(42)    -> ok`)
  yield* Console.log(`get_user(42)    -> ${show(yield* getUser("42"))}`)

  yield* deleteUser("42")
  yield* Console.log(`delete_user(42) -> ok`)
  yield* Console.log(`get_user(42)    -> ${show(yield* getUser("42"))}`)
})

// The table: the value's fields as columns, plus the `bigint` version column the library fills.
const CreateTable = Layer.effectDiscard(
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql`CREATE TABLE IF NOT EXISTS example_users (
      id text PRIMARY KEY,
      name text NOT NULL,
      email text NOT NULL,
      version bigint NOT NULL
    )`
  )
)

const PgLive = PgClient.layerConfig({
  url: Config.redacted("DATABASE_URL").pipe(
    Config.withDefault(Redacted.make("postgres://postgres@127.0.0.1:5432/test"))
  )
})

const RedisLive = RedisCache.layerConfig({
  url: Config.string("REDIS_URL").pipe(Config.withDefault("redis://127.0.0.1:6379"))
})

// Users needs a Cache and a Store; the Store needs a SqlClient. The table exists before Users checks it.
const UsersLive = Users.Default.pipe(
  Layer.provide(Layer.mergeAll(RedisLive, SqlStore.layer(), CreateTable)),
  Layer.provide(PgLive)
)

// Providing the layer scopes it to the program: the pool and the Redis connection close when it ends.
const main = program.pipe(
  Effect.provide(UsersLive),
  Effect.tapError((error) => {
    const cause: unknown = "cause" in error ? error.cause : undefined
    const detail = cause instanceof Error && !error.message.includes(cause.message) ? ` (${cause.message})` : ""
    return Console.error(`example failed: ${error.message}${detail}`)
  }),
  Effect.tapDefect((cause) => Console.error(`example failed: ${Cause.pretty(cause)}`))
)

// runMain sets the exit code (1 on a failure) and, on SIGINT or SIGTERM, interrupts the program so that the layers
// still close the pool and the connection. Failures are printed above, so its own report is off.
NodeRuntime.runMain(main, { disableErrorReporting: true })

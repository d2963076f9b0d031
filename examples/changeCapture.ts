// `npm run example:changes`: writes made outside the library (plain SQL, as another service or a
// person in psql would make them) reaching the cache through change capture.
//
// It needs PostgreSQL and Redis at DATABASE_URL and REDIS_URL (defaults postgres://postgres@127.0.0.1:5432/test and
// redis://127.0.0.1:6379). It uses its own table, `example_capture_users`, and adds the two triggers the store asks
// for, as the table's owner would, from the DDL the store suggests.
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { Config, Console, Effect, Either, Layer, Option, Redacted, Schedule, Schema } from "effect"
import { RedisCache, SqlStore, WriteThrough } from "../src/index.js"

class User extends Schema.Class<User>("User")({ id: Schema.String, name: Schema.String, email: Schema.String }) {}

const table = { name: "example_capture_users", primaryKey: "id" }

class Users extends WriteThrough.Service<Users>()("app/CapturedUsers", { key: Schema.String, value: User, table }) {}

// The table, and its triggers: the store refuses a table without them, with the CREATE TRIGGER to run.
const TableWithTriggers = Layer.effectDiscard(
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE IF NOT EXISTS example_capture_users (
      id text PRIMARY KEY, name text NOT NULL, email text NOT NULL, version bigint NOT NULL
    )`
    const store = yield* SqlStore.make({ changeCapture: true })
    for (let i = 0; i < 2; i++) {
      const checked = yield* Effect.either(
        store.collection({ entity: Users.entity, fields: ["id", "name", "email"], table })
      )
      if (Either.isRight(checked)) return
      yield* Console.log(`adding: ${checked.left.suggestedDdl}`)
      yield* sql.unsafe(checked.left.suggestedDdl!)
    }
  })
)

const Database = PgClient.layerConfig({
  url: Config.redacted("DATABASE_URL").pipe(
    Config.withDefault(Redacted.make("postgres://postgres@127.0.0.1:5432/test"))
  )
})

const UsersLive = Users.Default.pipe(
  Layer.provide(
    Layer.mergeAll(
      RedisCache.layerConfig({
        url: Config.string("REDIS_URL").pipe(Config.withDefault("redis://127.0.0.1:6379")),
        keyPrefix: Config.succeed("example-capture:")
      }),
      SqlStore.layer({ changeCapture: true })
    )
  ),
  Layer.provide(TableWithTriggers),
  Layer.provide(Database)
)

/** How long until `get` returns what `expected` accepts, polling every millisecond. */
const until = <A>(get: Effect.Effect<A, unknown>, expected: (a: A) => boolean) =>
  Effect.gen(function* () {
    const start = Date.now()
    yield* get.pipe(
      Effect.filterOrFail(expected),
      Effect.retry(Schedule.spaced("1 millis").pipe(Schedule.upTo("10 seconds")))
    )
    return Date.now() - start
  })

const program = Effect.gen(function* () {
  const users = yield* Users
  const sql = yield* SqlClient.SqlClient
  for (const id of ["1", "2"]) yield* users.set(id, new User({ id, name: `user ${id}`, email: `${id}@example.com` }))
  const nameOf = (id: string) =>
    Effect.map(
      users.get(id),
      Option.map((user) => user.name)
    )
  yield* Console.log(`get "1" -> ${Option.getOrElse(yield* nameOf("1"), () => "none")} (from the cache)`)

  // Another service renames user 1 with plain SQL; the version trigger gives the row a new version.
  yield* sql`UPDATE example_capture_users SET name = 'renamed in psql' WHERE id = '1'`
  const renamed = yield* until(nameOf("1"), (name) => Option.contains(name, "renamed in psql"))
  yield* Console.log(`get "1" -> renamed in psql, ${renamed} ms after the UPDATE committed`)

  yield* sql`DELETE FROM example_capture_users WHERE id = '2'`
  const deleted = yield* until(nameOf("2"), Option.isNone)
  yield* Console.log(`get "2" -> none, ${deleted} ms after the DELETE committed`)
})

// runMain reports a failure and sets the exit code; on SIGINT or SIGTERM it interrupts the program, so that the
// layers still close their connections (and the change feed is given up for another process to take).
NodeRuntime.runMain(program.pipe(Effect.provide(Layer.merge(UsersLive, Database))))

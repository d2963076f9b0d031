// A consumer program, compiled and run by the pack-and-consume test in a fresh project that installed
// the packed tarball with the README's install line. It imports only what a user would, and exits
// non-zero (through NodeRuntime.runMain) when anything it checks does not hold.
import { NodeRuntime } from "@effect/platform-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { Config, Effect, Layer, Option, Schema } from "effect"
import { RedisCache, SqlStore, WriteThrough, WriteThroughError } from "effect-write-through"
import { FaultyCache } from "effect-write-through/testing"

class User extends Schema.Class<User>("User")({
  id: Schema.String,
  name: Schema.String,
  email: Schema.String
}) {}

// Unique per run, chosen by the test, which also clears its keys from Redis afterwards.
const table = process.env.CONSUMER_TABLE ?? "consumer_users"

class Users extends WriteThrough.Service<Users>()("consumer/Users", {
  key: Schema.String,
  value: User,
  table: { name: table, primaryKey: "id" },
  ttl: "1 minute"
}) {}

const check = (condition: boolean, what: string) =>
  condition ? Effect.void : Effect.dieMessage(`consumer: ${what} does not hold`)

const ada = new User({ id: "1", name: "Ada", email: "ada@example.com" })

const program = Effect.gen(function* () {
  const users = yield* Users
  yield* users.set("1", ada)
  yield* check(Option.getOrThrow(yield* users.get("1")).name === "Ada", "set then get")
  yield* users.setMany([
    ["2", new User({ id: "2", name: "Grace", email: "grace@example.com" })],
    ["3", new User({ id: "3", name: "Edsger", email: "edsger@example.com" })]
  ])
  const many = yield* users.getMany(["1", "2", "3", "4"])
  yield* check(
    many.map((found) => Option.getOrNull(Option.map(found, (user) => user.name))).join() === "Ada,Grace,Edsger,",
    "getMany"
  )
  yield* WriteThrough.transaction(users.set("1", new User({ ...ada, name: "Ada L." })))
  yield* check(Option.getOrThrow(yield* users.get("1")).name === "Ada L.", "a transaction's write")
  yield* users.delete("1")
  yield* check(Option.isNone(yield* users.get("1")), "delete")
  const refused = yield* Effect.flip(users.set("5", new User({ id: "5", name: "nul\u0000", email: "x@example.com" })))
  yield* check(refused instanceof WriteThroughError.ValidationError, "a NUL refused with a ValidationError")
  yield* check(Layer.isLayer(FaultyCache.layer), "the testing entry point")
  yield* Effect.log("consumer: ok")
})

// The table the entity maps onto, created before the entity's layer checks it and dropped after.
const TableLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    yield* Effect.acquireRelease(
      sql.unsafe(
        `CREATE TABLE "${table}" (id text PRIMARY KEY, name text NOT NULL, email text NOT NULL, version bigint NOT NULL)`
      ).raw,
      () => Effect.orDie(sql.unsafe(`DROP TABLE "${table}"`).raw)
    )
  })
)

const PgLive = PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })

// provideMerge, not provide: WriteThrough.transaction needs the Store itself, not only the entity.
const Live = Users.Default.pipe(
  Layer.provide(RedisCache.layerConfig({ url: Config.redacted("REDIS_URL"), keyPrefix: Config.succeed(`${table}:`) })),
  Layer.provideMerge(SqlStore.layer()),
  Layer.provide(TableLive),
  Layer.provide(PgLive)
)

program.pipe(Effect.provide(Live), NodeRuntime.runMain)

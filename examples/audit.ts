// `npm run example:audit`: measure how consistent the cache is, and repair it.
//
// It needs PostgreSQL and Redis at DATABASE_URL and REDIS_URL (defaults postgres://postgres@127.0.0.1:5432/test and
// redis://127.0.0.1:6379). It writes a few users to its own table, `example_audit_users`, then plays another
// client that writes to Redis behind the library's back, and runs the audit before and after repairing.
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { Config, Console, Effect, Layer, Option, Redacted, Schema } from "effect"
import { Redis } from "ioredis"
import { RedisCache, SqlStore, WriteThrough } from "../src/index.js"

class User extends Schema.Class<User>("User")({ id: Schema.String, name: Schema.String, email: Schema.String }) {}

class Users extends WriteThrough.Service<Users>()("app/AuditUsers", {
  key: Schema.String,
  value: User,
  table: { name: "example_audit_users", primaryKey: "id" }
}) {}

const redisUrl = Config.string("REDIS_URL").pipe(Config.withDefault("redis://127.0.0.1:6379"))
const keyPrefix = "example-audit:"

const CreateTable = Layer.effectDiscard(
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql`CREATE TABLE IF NOT EXISTS example_audit_users (
      id text PRIMARY KEY, name text NOT NULL, email text NOT NULL, version bigint NOT NULL
    )`
  )
)

const UsersLive = Users.Default.pipe(
  Layer.provide(
    Layer.mergeAll(
      RedisCache.layerConfig({ url: redisUrl, keyPrefix: Config.succeed(keyPrefix) }),
      SqlStore.layer(),
      CreateTable
    )
  ),
  Layer.provide(
    PgClient.layerConfig({
      url: Config.redacted("DATABASE_URL").pipe(
        Config.withDefault(Redacted.make("postgres://postgres@127.0.0.1:5432/test"))
      )
    })
  )
)

const show = (label: string, report: WriteThrough.AuditReport) =>
  Console.log(
    `${label.padEnd(22)} ${report.values} values: ${report.consistent} consistent, ${report.stale} stale, ` +
      `${report.ahead} ahead, ${report.repaired} repaired; ${report.nines === Infinity ? "no inconsistency" : `${report.nines.toFixed(2)} nines`}`
  )

const program = Effect.gen(function* () {
  const users = yield* Users
  for (const id of ["1", "2", "3", "4"]) {
    yield* users.set(id, new User({ id, name: `user ${id}`, email: `${id}@example.com` }))
  }
  yield* show("after writes", yield* users.audit())

  // Another client overwrites an entry with an old version, as a hand-written cache-aside job might.
  const redis = new Redis(yield* redisUrl, { keyPrefix })
  yield* Effect.promise(() =>
    redis.set(
      `${Users.entity}:2`,
      `v1:${JSON.stringify({ id: "2", name: "old", email: "2@example.com" })}`,
      "PX",
      60_000
    )
  )
  redis.disconnect()

  yield* show("after a foreign write", yield* users.audit())
  yield* show("repairing", yield* users.audit({ repair: true }))
  yield* show("after repair", yield* users.audit())
  const fresh = yield* users.get("2")
  yield* Console.log(`get "2" -> ${Option.match(fresh, { onNone: () => "none", onSome: (user) => user.name })}`)
})

// runMain reports a failure and sets the exit code; on SIGINT or SIGTERM it interrupts the program, so that the
// layers still close their connections.
NodeRuntime.runMain(program.pipe(Effect.provide(UsersLive)))

// `npm run bench:outage`: the README's outage table, measured. A write-through on the library's
// defaults (commandTimeout 1 s, storeTimeout 5 s, breakers of 3 failures and 5 s) over a Redis of
// this script's own, which it freezes (SIGSTOP: connections stay open, nothing answers), kills
// (connections refused) and restarts, and over PostgreSQL reached through a TCP fault proxy, which
// it black-holes and heals. For each phase: the time of a `get` of a key the cache holds, and of a
// `set`, the first calls (before a breaker opened) apart from the rest, and what they returned.
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Layer, Logger, LogLevel, Redacted, Schema } from "effect"
import { randomUUID } from "node:crypto"
import { RedisCache, SqlStore, WriteThrough } from "../src/index.js"
import { startFaultProxy } from "../test/chaos/faultProxy.js"
import { startRedisServer } from "../test/support/redisServer.js"
import { format, type Timing, timed } from "./timing.js"

const databaseUrl = new URL(process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test")

class User extends Schema.Class<User>("bench/OutageUser")({ id: Schema.String, name: Schema.String }) {}

const rows: Array<readonly [phase: string, get: string, set: string]> = []

const phase = (
  name: string,
  users: WriteThrough.WriteThrough<string, User>,
  { first = 0, times = 20 }: { readonly first?: number; readonly times?: number } = {}
) =>
  Effect.gen(function* () {
    let n = 0
    const get = (i: number) => users.get(`cached-${i % 10}`)
    const set = (i: number) => users.set(`written-${i % 10}`, new User({ id: `written-${i % 10}`, name: `n${++n}` }))
    if (first > 0) {
      // The first calls of the outage, before the breaker opens: a read, then a write, in turn.
      const firstCalls = yield* timed(2 * first, (i) => (i % 2 === 0 ? get(i / 2) : set(i)))
      const ofKind = (kind: 0 | 1): Timing => ({
        millis: firstCalls.millis.filter((_, i) => i % 2 === kind),
        outcomes: firstCalls.kinds[kind]
      })
      rows.push([`${name}: first calls`, format(ofKind(0)), format(ofKind(1))])
    }
    const gets = yield* timed(times, get)
    const sets = yield* timed(times, set)
    rows.push([first > 0 ? `${name}: then` : name, format(gets), format(sets)])
  })

const program = Effect.gen(function* () {
  const redisServer = yield* startRedisServer
  const proxy = yield* Effect.acquireRelease(
    Effect.promise(() => startFaultProxy({ host: databaseUrl.hostname, port: Number(databaseUrl.port || "5432") })),
    (proxy) => Effect.promise(() => proxy.close())
  )
  const proxied = new URL(databaseUrl)
  proxied.hostname = "127.0.0.1"
  proxied.port = String(proxy.port)
  const table = `outage_users_${randomUUID().replaceAll("-", "").slice(0, 12)}`
  const context = yield* Layer.build(
    Layer.mergeAll(
      RedisCache.layer({ url: redisServer.url }),
      SqlStore.layer().pipe(Layer.provideMerge(PgClient.layer({ url: Redacted.make(proxied.toString()) })))
    )
  )
  const sql = Context.get(context, SqlClient.SqlClient)
  yield* sql.unsafe(`CREATE TABLE "${table}" (id text PRIMARY KEY, name text NOT NULL, version bigint NOT NULL)`)
  yield* Effect.addFinalizer(() => {
    proxy.setMode({ _tag: "Pass" })
    return Effect.ignore(sql.unsafe(`DROP TABLE IF EXISTS "${table}"`))
  })
  const users = yield* WriteThrough.make({
    entity: table,
    table: { name: table, primaryKey: "id" },
    key: Schema.String,
    value: User
  }).pipe(Effect.provide(Layer.succeedContext(context)))
  for (let i = 0; i < 10; i++) yield* users.set(`cached-${i}`, new User({ id: `cached-${i}`, name: "v1" }))

  yield* phase("healthy", users)
  yield* redisServer.freeze
  yield* phase("Redis black-holed (SIGSTOP)", users, { first: 3 })
  yield* redisServer.thaw
  yield* redisServer.kill
  yield* phase("Redis refusing connections (killed)", users, { first: 3 })
  yield* redisServer.start
  // Back: the breaker closes on a probe once its interval (5 s) has passed.
  const backAt = performance.now()
  yield* Effect.sleep("6 seconds")
  yield* phase(
    `Redis back (restarted empty, measured from ${((performance.now() - backAt) / 1000).toFixed(0)} s)`,
    users
  )
  yield* phase("Redis back, cache warm again", users)
  proxy.setMode({ _tag: "Blackhole" })
  yield* phase("PostgreSQL black-holed", users, { first: 3 })
  proxy.setMode({ _tag: "Pass" })
  yield* Effect.sleep("6 seconds")
  yield* phase("PostgreSQL back", users)

  console.log("| phase | `get` of a cached key | `set` |")
  console.log("|---|---|---|")
  for (const [name, get, set] of rows) console.log(`| ${name} | ${get} | ${set} |`)
})

program.pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.None), Effect.runPromise).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)

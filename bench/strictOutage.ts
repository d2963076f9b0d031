// `npm run bench:strict-outage`: the strict near tier under faults, measured. Two write-throughs
// over one Redis of this script's own (A, which reads and writes, and B, which reads), both with the
// strict tier on its defaults (a lease of 1 s), and a third process with a strict tier
// (test/near/holder.ts) that holds the written keys and is frozen with SIGSTOP, then woken; then
// the Redis is killed and restarted. For each phase: the time of A's and B's `get` of a key their
// tiers hold, of A's `set` of a key the others hold, and what they returned.
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Layer, Logger, LogLevel, Redacted, Schema } from "effect"
import { randomUUID } from "node:crypto"
import { type Cache, RedisCache, SqlStore, type Store, WriteThrough } from "../src/index.js"
import { holderProcess } from "../test/support/holderProcess.js"
import { startRedisServer } from "../test/support/redisServer.js"
import { format, timed } from "./timing.js"

const databaseUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
const lease = 1000
const keys = 5

class User extends Schema.Class<User>("bench/StrictUser")({ id: Schema.String, name: Schema.String }) {}

const rows: Array<readonly [phase: string, figures: string]> = []
const row = (phase: string, what: string, figures: string) => rows.push([`${phase}: ${what}`, figures])

const program = Effect.gen(function* () {
  const redis = yield* startRedisServer
  const keyPrefix = `strict-outage:`
  const table = `strict_outage_${randomUUID().replaceAll("-", "").slice(0, 12)}`
  const connect = Effect.gen(function* () {
    const context = yield* Layer.build(
      Layer.mergeAll(
        RedisCache.layer({ url: redis.url, keyPrefix, near: { mode: "strict" } }),
        SqlStore.layer().pipe(Layer.provideMerge(PgClient.layer({ url: Redacted.make(databaseUrl) })))
      )
    )
    const stats = Context.get(context, RedisCache.NearTierStats)
    while (!(yield* stats.serving)) yield* Effect.sleep("5 millis")
    return context
  })
  const instance = (context: Context.Context<RedisCache.NearTierStats | Store.Store | Cache.Cache>) =>
    Effect.map(
      WriteThrough.make({
        entity: table,
        table: { name: table, primaryKey: "id" },
        key: Schema.String,
        value: User
      }).pipe(Effect.provide(Layer.succeedContext(context))),
      (users) => ({ users, stats: Context.get(context, RedisCache.NearTierStats) })
    )
  const [first, second] = [yield* connect, yield* connect]
  const sql = Context.get(first, SqlClient.SqlClient)
  yield* sql.unsafe(`CREATE TABLE "${table}" (id text PRIMARY KEY, name text NOT NULL, version bigint NOT NULL)`)
  yield* Effect.addFinalizer(() => Effect.ignore(sql.unsafe(`DROP TABLE IF EXISTS "${table}"`)))
  const a = yield* instance(first)
  const b = yield* instance(second)
  const holder = yield* holderProcess(redis.url, keyPrefix, lease)
  const key = (i: number) => `k${i % keys}`
  let n = 0
  const set = (i: number) => a.users.set(key(i), new User({ id: key(i), name: `n${++n}` }))
  // Every process holds every key again: A and B read them, the third process reads them.
  const everyoneHolds = Effect.gen(function* () {
    for (let i = 0; i < keys; i++) {
      yield* a.users.get(key(i))
      yield* b.users.get(key(i))
      yield* holder.ask(`get ${table}:${key(i)}`)
    }
  })
  const reads = (phase: string) =>
    Effect.gen(function* () {
      row(phase, "A's `get`", format(yield* timed(20, (i) => a.users.get(key(i)))))
      row(phase, "B's `get`", format(yield* timed(20, (i) => b.users.get(key(i)))))
    })
  for (let i = 0; i < keys; i++) yield* set(i)

  yield* everyoneHolds
  yield* reads("healthy")
  row("healthy", "A's `set`, 2 holders", format(yield* timed(keys, set)))

  yield* everyoneHolds
  holder.child.kill("SIGSTOP")
  row("third process frozen", "A's `set`, first of each key", format(yield* timed(keys, set)))
  row("third process frozen", "A's `set`, then", format(yield* timed(keys, set)))
  yield* reads("third process frozen")
  holder.child.kill("SIGCONT")
  const woken = yield* timed(1, () => Effect.map(holder.ask(`get ${table}:${key(0)}`), () => undefined))
  row("third process woken", "its first `get` (not from its tier: its lease ran out)", format(woken))

  yield* everyoneHolds
  yield* redis.kill
  // Once the processes saw their connections close: until then a tier serves what it holds, and
  // no write can be acknowledged meanwhile.
  yield* Effect.sleep("100 millis")
  yield* reads("Redis killed")
  row("Redis killed", "A's `set`", format(yield* timed(keys, set)))
  yield* redis.start
  // Back: the breakers close on a probe once their interval (5 s) has passed; the tombstones owed
  // for the writes made while Redis was down land first, and wait for the new memory to be a lease old.
  yield* Effect.sleep("6 seconds")
  yield* reads("Redis restarted")
  row("Redis restarted", "A's `set`", format(yield* timed(keys, set)))
  const holders = yield* a.stats.holders
  rows.push([
    "A's writes, in all",
    `${holders.acknowledged} acknowledgements, ${holders.leaseExpired} leases run out, ${holders.youngMemoryWaits} waits for a young memory`
  ])

  console.log("| phase | figures |")
  console.log("|---|---|")
  for (const [name, figures] of rows) console.log(`| ${name} | ${figures} |`)
})

program.pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.None), Effect.runPromise).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)

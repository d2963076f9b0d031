// `npm run example:transaction`: several writes, of two entities, in one SQL transaction with
// WriteThrough.transaction: the cache hears of them only once the COMMIT succeeded, and not at all when the
// transaction rolls back.
//
// With no environment it runs on MemoryCache and MemoryStore (which has transactions too). Set DATABASE_URL for
// PostgreSQL (tables of the run's own, dropped at the end) and REDIS_URL for Redis (keys deleted at the end):
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379 npm run example:transaction
import { Console, Effect, Layer, Option, Schema } from "effect"
import { Cache, WriteThrough } from "../src/index.js"
import { cacheLayer, describeEnvironment, run, runExample, storeLayer } from "./environment.js"

class User extends Schema.Class<User>("User")({ id: Schema.String, name: Schema.String }) {}
class Account extends Schema.Class<Account>("Account")({
  id: Schema.String,
  owner: Schema.String,
  balance: Schema.Int
}) {}

const tables = [
  { name: `example_tx_users_${run}`, columns: "id text PRIMARY KEY, name text NOT NULL" },
  { name: `example_tx_accounts_${run}`, columns: "id text PRIMARY KEY, owner text NOT NULL, balance integer NOT NULL" }
]
const keyPrefix = `example-tx-${run}:`

class Users extends WriteThrough.Service<Users>()("example/Users", {
  key: Schema.String,
  value: User,
  table: { name: tables[0]!.name, primaryKey: "id" }
}) {}
class Accounts extends WriteThrough.Service<Accounts>()("example/Accounts", {
  key: Schema.String,
  value: Account,
  table: { name: tables[1]!.name, primaryKey: "id" }
}) {}

const Live = Layer.mergeAll(Users.Default, Accounts.Default).pipe(
  Layer.provideMerge(Layer.merge(cacheLayer(keyPrefix), storeLayer(tables)))
)

// What the cache holds for an entity's key, read behind the library's back.
const cached = (entity: string, key: string) =>
  Effect.flatMap(Cache.Cache, (cache) => cache.get(`${entity}:${key}`)).pipe(
    Effect.map(
      Option.match({
        onNone: () => "nothing",
        onSome: (entry) => (entry._tag === "Value" ? `version ${entry.version}: ${entry.payload}` : "a tombstone")
      })
    )
  )

const program = Effect.gen(function* () {
  const users = yield* Users
  const accounts = yield* Accounts
  const show = Effect.gen(function* () {
    yield* Console.log(`  cache, user 1:    ${yield* cached(Users.entity, "1")}`)
    yield* Console.log(`  cache, account 1: ${yield* cached(Accounts.entity, "1")}`)
  })

  yield* Console.log("1. A user and their account, in one transaction that commits:")
  yield* WriteThrough.transaction(
    Effect.gen(function* () {
      yield* users.set("1", new User({ id: "1", name: "Ada" }))
      yield* accounts.set("1", new Account({ id: "1", owner: "1", balance: 100 }))
      yield* Console.log("  inside, before COMMIT:")
      yield* show
    })
  )
  yield* Console.log("  after COMMIT:")
  yield* show

  yield* Console.log("\n2. A transfer that fails half-way: the transaction rolls back, the cache is not touched:")
  const failed = yield* WriteThrough.transaction(
    Effect.gen(function* () {
      yield* accounts.set("1", new Account({ id: "1", owner: "1", balance: 0 }))
      return yield* Effect.fail("the other account is frozen")
    })
  ).pipe(Effect.flip)
  yield* Console.log(`  failed with: ${failed}`)
  yield* show
  const account = Option.getOrThrow(yield* accounts.get("1"))
  yield* Console.log(`  accounts.get("1"): balance ${account.balance}`)
})

runExample(
  Effect.gen(function* () {
    yield* describeEnvironment(keyPrefix, tables)
    yield* program
  }).pipe(Effect.provide(Live))
)

// `npm run example:testing`: how to test your own program against the write-through cache.
//
// Swap the production layers for MemoryCache and MemoryStore, then put FaultyCache / FaultyStore over them
// to make the cache or the database fail exactly when the test wants. No services needed.
import { NodeRuntime } from "@effect/platform-node"
import { Console, Duration, Effect, Layer, Option, Schedule, Schema } from "effect"
import { MemoryCache, MemoryStore, WriteThrough } from "../src/index.js"
import { FaultyCache, FaultyStore } from "../src/testing.js"

class User extends Schema.Class<User>("User")({
  id: Schema.String,
  name: Schema.String,
  email: Schema.String
}) {}

class Users extends WriteThrough.Service<Users>()("app/Users", {
  key: Schema.String,
  value: User,
  table: { name: "users", primaryKey: "id" },
  ttl: "1 hour",
  // Tests should not wait for the default backoff: retry a failed cache write twice, at once.
  retry: Schedule.recurs(2)
}) {}

// The test layer: in-memory cache and store, each wrapped in its fault injector. `provideMerge` keeps the
// FaultyCache and FaultyStore controls in the context, next to Users.
const TestLayer = Users.Default.pipe(
  Layer.provideMerge(
    Layer.merge(
      FaultyCache.layer.pipe(Layer.provide(MemoryCache.layer())),
      FaultyStore.layer.pipe(Layer.provide(MemoryStore.layer))
    )
  )
)

const show = (user: Option.Option<User>) => Option.match(user, { onNone: () => "None", onSome: (u) => u.name })

const program = Effect.gen(function* () {
  const users = yield* Users
  const cacheFaults = yield* FaultyCache.FaultyCache
  const storeFaults = yield* FaultyStore.FaultyStore

  yield* users.set("1", new User({ id: "1", name: "Ada", email: "ada@example.com" }))
  yield* Console.log(`healthy:  get "1" -> ${show(yield* users.get("1"))}`)

  // 1. The cache refuses every write and every invalidation: the write commits, the cache keeps the old value.
  yield* cacheFaults.failAlways("set", "invalidate")
  const [sets, invalidations] = [yield* cacheFaults.calls("set"), yield* cacheFaults.calls("invalidate")]
  yield* users.set("1", new User({ id: "1", name: "Ada Lovelace", email: "ada@example.com" })).pipe(
    Effect.zipRight(Console.log("faulty:   set succeeded (unexpected)")),
    Effect.catchTag("StaleCacheError", (error) =>
      Console.log(
        `faulty:   StaleCacheError entity=${error.entity} key=${error.key} version=${error.version} ` +
          `maxStaleness=${Duration.format(error.maxStaleness)} staleUntil=${new Date(error.staleUntil).toISOString()}`
      )
    )
  )
  yield* Console.log(
    `          cache calls: ${(yield* cacheFaults.calls("set")) - sets} set, ` +
      `${(yield* cacheFaults.calls("invalidate")) - invalidations} invalidate (each 1 + 2 retries)`
  )
  yield* Console.log(`          get "1" -> ${show(yield* users.get("1"))} (the previous value, within maxStaleness)`)

  // 2. The cache heals: the next write goes through and the cache holds the new value.
  yield* cacheFaults.heal
  yield* users.set("1", new User({ id: "1", name: "Ada Lovelace", email: "ada@example.com" }))
  yield* Console.log(`healed:   set ok; get "1" -> ${show(yield* users.get("1"))}`)

  // 3. Only cache writes fail: the library invalidates the key instead, and the write succeeds.
  yield* cacheFaults.failAlways("set")
  yield* users.set("1", new User({ id: "1", name: "Countess Lovelace", email: "ada@example.com" }))
  yield* Console.log(`set-only: set ok (key invalidated); get "1" -> ${show(yield* users.get("1"))}`)
  yield* cacheFaults.heal

  // 4. The connection drops while the database commits: the write happened, but the library cannot know.
  yield* storeFaults.loseConnectionOnCommit({ committed: true })
  const error = yield* Effect.flip(users.set("2", new User({ id: "2", name: "Grace", email: "grace@example.com" })))
  if (error._tag !== "InconsistentCacheError") return yield* Effect.dieMessage(`expected InconsistentCacheError`)
  yield* Console.log(`unknown:  InconsistentCacheError key=${error.key} invalidated=${error.invalidated}`)
  // What a caller does: read the key back (the fence sends reads to the store) and write again if it is missing.
  yield* Console.log(`          get "2" -> ${show(yield* users.get("2"))} (it did commit)`)
})

// runMain reports a failure (such as the unexpected outcome above) and exits with code 1.
NodeRuntime.runMain(program.pipe(Effect.provide(TestLayer)))

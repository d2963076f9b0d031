// A process that writes through the library and dies between COMMIT and its cache write: the
// change-capture suite SIGKILLs it there. It also consumes the change feed while it lives, and its
// cache calls hang once it printed "ready", so it dies holding the feed with the change unapplied.
// argv: the users table (also the entity), the Redis key prefix, the store's version sequence.
import { Effect, Layer, Schema } from "effect"
import { RedisCache, SqlStore, WriteThrough } from "../../src/index.js"
import { FaultyCache } from "../../src/testing.js"
import { User, user } from "../support/fixtures.js"
import { PgLive, redisUrl } from "../support/services.js"

const [table = "", prefix = "", versionSequence = ""] = process.argv.slice(2)

const program = Effect.gen(function* () {
  const users = yield* WriteThrough.make({
    entity: table,
    key: Schema.String,
    value: User,
    table: { name: table, primaryKey: "id" },
    cacheTimeout: "30 seconds"
  })
  const faults = yield* FaultyCache.FaultyCache
  yield* users.set("k", user("k", "before"))
  // The feed is this process's once its first pull has run.
  yield* Effect.sleep("200 millis")
  yield* faults.hang("set", "invalidate")
  yield* Effect.sync(() => console.log("ready"))
  yield* users.set("k", user("k", "after"))
}).pipe(Effect.scoped)

const cache = FaultyCache.layer.pipe(Layer.provide(RedisCache.layer({ url: redisUrl, keyPrefix: `${prefix}:` })))
const store = SqlStore.layer({ versionSequence, changeCapture: { pollInterval: "10 millis", lease: "300 millis" } })

Effect.runFork(program.pipe(Effect.provide(Layer.merge(cache, store)), Effect.provide(PgLive)))

// A process that writes through the library until it is told to stop, run under NodeRuntime.runMain
// as the README tells users to: the shutdown test sends it SIGINT or SIGTERM mid-write.
// argv: the table (also the entity), the Redis key prefix, how many keys.
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Schema } from "effect"
import { RedisCache, SqlStore, WriteThrough } from "../../src/index.js"
import { Counter } from "../support/fixtures.js"
import { PgLive, redisUrl } from "../support/services.js"

const [table = "", prefix = "", keys = "16"] = process.argv.slice(2)

const program = Effect.gen(function* () {
  const counters = yield* WriteThrough.make({
    entity: table,
    key: Schema.String,
    value: Counter,
    table: { name: table, primaryKey: "id" }
  })
  const writer = (key: string) =>
    Effect.iterate(0, {
      while: () => true,
      body: (n) => Effect.as(counters.set(key, new Counter({ id: key, n })), n + 1)
    })
  const ids = Array.from({ length: Number(keys) }, (_, i) => `k${i}`)
  yield* Effect.forEach(ids, (key) => counters.set(key, new Counter({ id: key, n: -1 })), { discard: true })
  yield* Effect.sync(() => console.log("writing"))
  yield* Effect.forEach(ids, writer, { concurrency: "unbounded", discard: true })
}).pipe(Effect.scoped)

program.pipe(
  Effect.provide(Layer.merge(RedisCache.layer({ url: redisUrl, keyPrefix: `${prefix}:` }), SqlStore.layer())),
  Effect.provide(PgLive),
  NodeRuntime.runMain
)

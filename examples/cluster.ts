// `npm run example:cluster`: the write-through over a Redis Cluster (RedisClusterCache), with one node restarted
// half-way.
//
// Set REDIS_CLUSTER_NODES (host:port,host:port...) to use a cluster of yours (then no node is restarted); without it
// the example starts a throwaway 3-master cluster on local ports (redis-server and redis-cli must be on the PATH)
// and stops it at the end. The users live in MemoryStore, or in PostgreSQL when DATABASE_URL is set.
//
//   npm run example:cluster
import { Config, Console, Effect, Layer, Option, Schema } from "effect"
import { Cluster } from "ioredis"
import { RedisClusterCache, WriteThrough } from "../src/index.js"
import { keyOnNode, startRedisCluster } from "../test/support/redisCluster.js"
import { databaseUrl, run, runExample, storeLayer } from "./environment.js"

class User extends Schema.Class<User>("User")({ id: Schema.String, name: Schema.String }) {}

const table = { name: `example_cluster_users_${run}`, columns: "id text PRIMARY KEY, name text NOT NULL" }
const keyPrefix = `example-cluster-${run}:`

class Users extends WriteThrough.Service<Users>()("example/ClusterUsers", {
  key: Schema.String,
  value: User,
  table: { name: table.name, primaryKey: "id" },
  // Short bounds, so that calls to a node that is down fail fast and the reads fall back to the store.
  cacheTimeout: "500 millis"
}) {}

// SCAN on every master (never KEYS), then delete what carries this run's prefix.
const dropKeys = (nodes: ReadonlyArray<string>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Cluster(nodes.map((node) => `redis://${node}`))),
    (cluster) =>
      Effect.promise(async () => {
        await new Promise((ready) => cluster.once("ready", ready))
        for (const node of cluster.nodes("master")) {
          let cursor = "0"
          do {
            const [next, keys] = await node.scan(cursor, "MATCH", `${keyPrefix}*`, "COUNT", 1000)
            cursor = next
            for (const key of keys) await cluster.unlink(key)
          } while (cursor !== "0")
        }
      }),
    (cluster) => Effect.sync(() => cluster.disconnect())
  ).pipe(Effect.timeout("30 seconds"), Effect.ignore)

const show = (user: Option.Option<User>) => Option.match(user, { onNone: () => "None", onSome: (u) => u.name })

const program = (restart: Effect.Effect<void, unknown> | undefined, keyOnRestarted: string) =>
  Effect.gen(function* () {
    const users = yield* Users
    const keys = ["ada", "grace", "edsger", keyOnRestarted]
    for (const key of keys) yield* users.set(key, new User({ id: key, name: `${key} v1` }))
    yield* Console.log(`set ${keys.length} users, spread over the cluster's slots`)
    const all = yield* users.getMany(keys)
    yield* Console.log(`getMany (one MGET per hash slot): ${all.map(show).join(", ")}`)
    if (restart === undefined) return
    yield* Console.log(`\nrestarting the node that holds "${keyOnRestarted}" (it comes back empty)...`)
    yield* restart
    const read = yield* users.get(keyOnRestarted)
    yield* Console.log(`get "${keyOnRestarted}" after the restart: ${show(read)} (a miss, refilled from the store)`)
    yield* users.set(keyOnRestarted, new User({ id: keyOnRestarted, name: `${keyOnRestarted} v2` }))
    yield* Console.log(`set "${keyOnRestarted}" v2 -> ${show(yield* users.get(keyOnRestarted))}`)
  })

runExample(
  Effect.gen(function* () {
    const configured = yield* Config.option(Config.array(Config.string(), "REDIS_CLUSTER_NODES"))
    if (Option.isSome(configured)) {
      yield* Console.log(`cluster: ${configured.value.join(", ")}`)
    }
    const local = Option.isSome(configured) ? undefined : yield* startRedisCluster
    if (local !== undefined) yield* Console.log(`cluster: started locally on ports ${local.ports.join(", ")}`)
    const nodes = Option.getOrElse(configured, () => local!.nodes.map(({ host, port }) => `${host}:${port}`))
    yield* Console.log(
      `store: ${databaseUrl === undefined ? "MemoryStore (in process)" : `PostgreSQL, table ${table.name}`}\n`
    )
    // In a cluster of yours, this run's keys (its entries and the slots' markers) are deleted at the end.
    if (local === undefined) yield* Effect.addFinalizer(() => dropKeys(nodes))
    const keyOnRestarted = local === undefined ? "alan" : yield* keyOnNode(local, 1, "user-")
    const restart =
      local === undefined
        ? undefined
        : Effect.all([local.kill(1), local.start(1), local.waitHealthy], { discard: true })
    const Live = Users.Default.pipe(
      Layer.provide(RedisClusterCache.layer({ nodes, keyPrefix, commandTimeout: "500 millis" })),
      Layer.provide(storeLayer([table]))
    )
    yield* program(restart, keyOnRestarted).pipe(Effect.provide(Live))
  }).pipe(Effect.scoped)
)

import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Cluster } from "ioredis"
import { keyOnNode, startRedisCluster } from "./support/redisCluster.js"

/** A command as an Effect whose failure is the command's error. */
const run = <A>(command: () => Promise<A>) => Effect.tryPromise({ try: command, catch: (error) => error as Error })

describe("startRedisCluster", () => {
  it.scopedLive(
    "a 3-master cluster serves keys on every node; a killed node comes back empty with its slots",
    () =>
      Effect.gen(function* () {
        const cluster = yield* startRedisCluster
        expect(cluster.ports).toHaveLength(3)
        expect(cluster.url).toBe(cluster.ports.map((port) => `redis://127.0.0.1:${port}`).join(","))

        const slots = yield* Effect.forEach([0, 1, 2], (index) => cluster.slotsOf(index))
        expect(slots.flat().reduce((total, [first, last]) => total + last - first + 1, 0)).toBe(16_384)

        const redis = yield* Effect.acquireRelease(
          Effect.sync(
            () =>
              new Cluster([...cluster.nodes], {
                redisOptions: { connectTimeout: 2000, commandTimeout: 2000 },
                slotsRefreshTimeout: 2000
              })
          ),
          (redis) => Effect.sync(() => redis.disconnect())
        )
        redis.on("error", () => {})

        const keys = yield* Effect.forEach([0, 1, 2], (index) => keyOnNode(cluster, index, `k${index}:`))
        yield* Effect.forEach(keys, (key) => run(() => redis.set(key, `v-${key}`)))
        expect(yield* Effect.forEach(keys, (key) => run(() => redis.get(key)))).toEqual(keys.map((key) => `v-${key}`))

        yield* cluster.kill(1)
        yield* cluster.start(1)
        yield* cluster.waitHealthy
        // The node kept its slots (from nodes-P.conf) but lost its memory.
        expect(yield* cluster.slotsOf(1)).toEqual(slots[1])

        expect(yield* run(() => redis.get(keys[0]!))).toBe(`v-${keys[0]}`)
        expect(yield* run(() => redis.get(keys[1]!))).toBeNull()
        expect(yield* run(() => redis.get(keys[2]!))).toBe(`v-${keys[2]}`)

        const fresh = yield* keyOnNode(cluster, 1, "fresh:")
        expect(yield* run(() => redis.set(fresh, "again"))).toBe("OK")
        expect(yield* run(() => redis.get(fresh))).toBe("again")
      }),
    60_000
  )
})

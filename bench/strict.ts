// The strict near tier's cases: its hit against the bounded tier's and the Redis hit (tier off),
// and what it adds to a write: a cache `set` of a key that 1, 3 or 8 other processes hold in their
// strict tiers, against the same `set` with the tier bounded and with it off; one at a time and 16
// in flight. The holders are RedisCache instances of this process, each with its connections and
// its subscription, as separate processes would have (they share this process's CPU, which a
// holder in a process of its own would not take from the writer).
//
// Each write case measures the set alone: before it, every holder reads the key (which, in strict
// mode, registers it as a holder again), so each write has the holders it is named for. The case
// resolves to the set's own time (a `samples` case), the holders' reads left out.
import { Cache, RedisCache } from "../src/index.js"
import { Context, Duration, Effect, Exit, Layer, Scope } from "effect"
import { type Case, type Runner, samples, sequential } from "./harness.js"
import { buildLibrary, type Fixture, type Library, redisUrl } from "./fixture.js"

type Mode = "off" | "bounded" | "strict"

const nearOf = (mode: Mode): RedisCache.NearTierOptions | undefined =>
  mode === "off" ? undefined : { mode, maxEntries: 100_000 }

/** Caches on one key prefix, in `mode`, for the case's lifetime. */
const caches = async (prefix: string, mode: Mode, count: number) => {
  const scope = Effect.runSync(Scope.make())
  const built = await Effect.runPromise(
    Effect.forEach(Array.from({ length: count }), () =>
      Layer.buildWithScope(RedisCache.layer({ url: redisUrl, keyPrefix: prefix, near: nearOf(mode) }), scope).pipe(
        Effect.map((context) => ({
          cache: Context.get(context, Cache.Cache),
          stats: Context.get(context, RedisCache.NearTierStats)
        }))
      )
    )
  )
  // A strict tier serves, and so registers what it reads, once its first heartbeat came back.
  await Effect.runPromise(
    Effect.forEach(built, ({ stats }) =>
      Effect.repeat(stats.serving, { until: (serving) => serving || mode !== "strict" })
    )
  )
  return { built, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

const ttl = Duration.minutes(5)
const payload = JSON.stringify({ id: "k", name: "Ada Lovelace", email: "ada@example.com" })

/**
 * A `set` of `inFlight` keys at once (their time divided among them), each held by `holders`
 * other processes, from a writer in `mode`; the holders are strict when the writer is.
 */
const writes = async (fx: Fixture, mode: Mode, holders: number, inFlight: number): Promise<Runner> => {
  const prefix = `${fx.runId}:strict-${mode}-${holders}-${inFlight}:`
  const writer = await caches(prefix, mode, 1)
  const readers = await caches(prefix, mode, holders)
  const keys = Array.from({ length: inFlight }, (_, k) => `w${k}`)
  const writeAll = (version: number) =>
    Effect.forEach(keys, (key) => writer.built[0]!.cache.set(key, Cache.Entry.Value({ version, payload }), { ttl }), {
      concurrency: "unbounded",
      discard: true
    })
  // The first write on a fresh prefix waits for its memory to be a lease old: out of the measured ops.
  await Effect.runPromise(writeAll(1))
  return {
    op: async (i) => {
      await Effect.runPromise(
        Effect.forEach(readers.built, ({ cache }) => cache.getMany(keys), { concurrency: "unbounded", discard: true })
      )
      const started = performance.now()
      await Effect.runPromise(writeAll(i + 2))
      return ((performance.now() - started) * 1000) / inFlight
    },
    teardown: async () => {
      await readers.close()
      await writer.close()
    }
  }
}

const writeCase = (mode: Mode, holders: number, inFlight: number): string =>
  `strict tier: set${inFlight > 1 ? ` @${inFlight}` : ""}, tier ${mode}${mode === "strict" ? `, ${holders} holder${holders === 1 ? "" : "s"}` : ""}`

const writeCases = (inFlight: number): ReadonlyArray<Case<Fixture>> => [
  {
    case: writeCase("off", 0, inFlight),
    kind: samples,
    baseline: null,
    note: `a RedisCache set of ${inFlight === 1 ? "a key" : `${inFlight} keys at once, per key`}, no in-process tier: the guarded script alone`,
    setup: (fx) => writes(fx, "off", 0, inFlight)
  },
  {
    case: writeCase("bounded", 3, inFlight),
    kind: samples,
    baseline: writeCase("off", 0, inFlight),
    note: "the same with the bounded tier, 3 other processes holding the key: the announcement, nobody waited for",
    setup: (fx) => writes(fx, "bounded", 3, inFlight)
  },
  ...[1, 3, 8].map((holders): Case<Fixture> => ({
    case: writeCase("strict", holders, inFlight),
    kind: samples,
    baseline: writeCase("bounded", 3, inFlight),
    also: [{ baseline: writeCase("off", 0, inFlight) }],
    note: `the same with the strict tier: the set returns once the ${holders} other holder${holders === 1 ? "" : "s"} acknowledged`,
    setup: (fx) => writes(fx, "strict", holders, inFlight)
  }))
]

const strictLibrary = async (fx: Fixture) => {
  const keyPrefix = `${fx.runId}:near-strict:`
  const library = await buildLibrary({
    table: fx.table,
    keyPrefix,
    versionSequence: fx.versionSequence,
    cache: () => RedisCache.layer({ url: redisUrl, keyPrefix, near: { mode: "strict", maxEntries: 100_000 } })
  })
  await library.run(Effect.forEach(fx.keys.hit, (key) => library.users.get(key), { concurrency: 16, discard: true }))
  return library
}

/**
 * The cases, given the names of the bounded tier's hit and the Redis hit (tier off), and the hits'
 * runner (users.get of warm keys, every one a hit) that those cases use.
 */
export const strictCases = (baselines: {
  readonly nearHit: string
  readonly redisHit: string
  readonly libraryHits: (library: Library, keys: ReadonlyArray<string>) => Runner
}): ReadonlyArray<Case<Fixture>> => [
  {
    case: "lib: near-cache hit (strict)",
    kind: sequential,
    baseline: baselines.nearHit,
    also: [{ baseline: baselines.redisHit }],
    note: "users.get with the strict tier: the bounded tier's hit, plus the check of its lease",
    setup: async (fx) => {
      const library = await strictLibrary(fx)
      return { ...baselines.libraryHits(library, fx.keys.hit), teardown: () => library.dispose() }
    }
  },
  ...writeCases(1),
  ...writeCases(16)
]

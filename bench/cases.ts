// The cases of `npm run bench`, in the order they run in each round and are printed: grouped by
// scenario, each library case right after its baselines, so the two are measured close in time.
//
// Adding a case is adding one entry to `cases`: a name, a kind (sequential, or concurrent with its
// in-flight count), the case it is compared with (and further ones in `also`), a target if the
// issue sets one, and a `setup` that gets the shared fixture (bench/fixture.ts) and returns the
// operation. Operations per round are calibrated unless `ops` fixes them. See bench/README.md.
import { PgClient } from "@effect/sql-pg"
import { Context, Duration, Effect, Either, Layer, ManagedRuntime, Option, Redacted } from "effect"
import { Cache, MemoryCache, RedisCache, SqlStore, Store } from "../src/index.js"
import { capturedSet, lagProbe } from "./changeFeed.js"
import { strictCases } from "./strict.js"
import type { Case, Runner } from "./harness.js"
import {
  ahead,
  concurrent,
  findGc,
  extraAtMost,
  extraMillisAtMost,
  inFiber,
  ratioAtMost,
  samples,
  samplesAtMost,
  sequential
} from "./harness.js"
import {
  effectHits,
  effectReadThrough,
  effectWrites,
  libraryHitsInFiber,
  libraryMissesInFiber,
  librarySetsInFiber,
  type WriteStatement
} from "./inFiber.js"
import {
  buildLibrary,
  cycle,
  columns,
  databaseUrl,
  type Fixture,
  fresh,
  type Library,
  type Outage,
  poolSize,
  ttlMillis,
  User,
  redisUrl,
  type UserFields,
  userFields
} from "./fixture.js"

/** The most operations a round of a miss case runs: each reads a key of its own (see run.ts). */
export const missMaxOps = 1000
/** The most misses a miss case's warm-up before calibration may read (each a fresh key). */
export const missWarmupOps = 4000

// ---- Shared operations ----

const expectHit = (key: string, found: boolean) => {
  if (!found) throw new Error(`expected a cache hit on ${key}, found nothing`)
}

const rawGet = (fx: Fixture, client: "plain" | "autoPipelining") => {
  const redis = client === "plain" ? fx.redis : fx.redisAutoPipelining
  return async (i: number) => {
    const key = cycle(fx.keys.hit, i)
    const raw = await redis.get(fx.rawKey(key))
    expectHit(key, raw !== null)
    return JSON.parse(raw!) as UserFields
  }
}

const upsertSql = (table: string) =>
  `INSERT INTO "${table}" (${columns.join(", ")}, version) VALUES (${columns.map((_, i) => `$${i + 1}`).join(", ")}, 1) ` +
  `ON CONFLICT (id) DO UPDATE SET ${columns
    .slice(1)
    .map((c) => `${c} = EXCLUDED.${c}`)
    .join(", ")}, version = "${table}".version + 1`

const selectSql = (table: string) => `SELECT ${columns.join(", ")}, version FROM "${table}" WHERE id = $1`

// SELECT by key through pg's Pool, cycling over `keys`: the store read with nothing around it.
const pgSelect = (fx: Fixture, keys: ReadonlyArray<string>) => {
  const sql = selectSql(fx.table)
  return {
    op: async (i: number) => {
      const key = cycle(keys, i)
      const { rows } = await fx.pool.query(sql, [key])
      if (rows.length !== 1) throw new Error(`no row for ${key}`)
      return rows[0]
    }
  }
}

// The statement the library's SqlStore sends for a set of one key of this table (its `putSql` in
// src/internal/sqlStore/statements.ts): the key's advisory lock, a version drawn from the sequence
// while it is held, the upsert. The outage set's baseline, so that the difference is the library's
// own cost and not the consistency the store write buys (which a set pays with Redis up too).
const storeWriteSql = (table: string, versionSequence: string) => {
  const written = columns.slice(1)
  return (
    `WITH "wt_lock" AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended($${columns.length + 1}, 0))) ` +
    `INSERT INTO "${table}" (${[...columns, "version"].map((c) => `"${c}"`).join(", ")}) ` +
    `VALUES (${columns.map((_, i) => `$${i + 1}`).join(", ")}, (SELECT nextval('"${versionSequence}"') FROM "wt_lock")) ` +
    `ON CONFLICT ("id") DO UPDATE SET ${[...written, "version"].map((c) => `"${c}" = EXCLUDED."${c}"`).join(", ")} ` +
    `RETURNING "version"`
  )
}

// The statements of the in-fiber hand-written writes (bench/inFiber.ts): the plain upsert of
// `pg upsert + SET`, and the library's own store write of `pg store write (lock, nextval, upsert)`.
const plainUpsert = (fx: Fixture): WriteStatement => ({
  sql: upsertSql(fx.table),
  params: (user) => columns.map((c) => user[c])
})
const storeWrite = (fx: Fixture): WriteStatement => ({
  sql: storeWriteSql(fx.table, fx.versionSequence),
  params: (user, key) => [...columns.map((c) => user[c]), `${fx.table}:${key}`]
})

// The hand-written write: an upsert through pg's Pool, then a SET of the JSON.
const handWrittenWrite = async (fx: Fixture) => {
  const sql = upsertSql(fx.table)
  return async (i: number) => {
    const key = cycle(fx.keys.write, i)
    const user = userFields(key, i)
    await fx.pool.query(
      sql,
      columns.map((c) => user[c])
    )
    await fx.redis.set(fx.rawKey(key), JSON.stringify(user), "PX", ttlMillis)
  }
}

// users.get on warm keys; a round that reached the store was not all hits, and fails the case.
const libraryHits = (library: Library, keys: ReadonlyArray<string>): Runner => {
  const { run, storeGets, users } = library
  let before = 0
  return {
    op: async (i) => {
      const key = cycle(keys, i)
      const user = await run(users.get(key))
      expectHit(key, Option.isSome(user))
      return user
    },
    beforeRound: () => {
      before = storeGets()
    },
    afterRound: () => {
      if (storeGets() !== before) throw new Error(`${storeGets() - before} reads missed the cache`)
      return {}
    }
  }
}

// One read of the same 100 warm keys per op, by whatever means; every one must be a cache hit.
const hundredHits = (
  fx: Fixture,
  read: (
    users: Library["users"],
    keys: ReadonlyArray<string>
  ) => Effect.Effect<ReadonlyArray<Option.Option<unknown>>, unknown, never>
): Runner => {
  const { run, storeGets, users } = fx.library
  const keys = fx.keys.hit.slice(0, 100)
  let before = 0
  return {
    op: async () => {
      const found = await run(read(users, keys))
      if (found.length !== 100 || !found.every(Option.isSome)) throw new Error("expected 100 values")
    },
    beforeRound: () => {
      before = storeGets()
    },
    afterRound: () => {
      if (storeGets() !== before) throw new Error(`${storeGets() - before} reads missed the cache`)
      return {}
    }
  }
}

// 100 of the write keys, a fresh value each op, written by whatever means.
const hundredWrites =
  (
    fx: Fixture,
    write: (
      users: Library["users"],
      entries: ReadonlyArray<readonly [string, User]>
    ) => Effect.Effect<unknown, unknown, never>
  ) =>
  async (i: number) => {
    const entries = fx.keys.write.slice(0, 100).map((key) => [key, new User(userFields(key, i))] as const)
    await fx.library.run(write(fx.library.users, entries))
  }

// 1000 reads at once of a key in no cache, spread over the instances; the worst burst's store reads,
// summed over the instances. Each op reads a fresh cold key from `offset` on.
const coldStampede = (fx: Fixture, instances: ReadonlyArray<Library>, offset: number): Runner => {
  const storeGets = () => instances.reduce((sum, instance) => sum + instance.storeGets(), 0)
  let worst = 0
  return {
    op: async (i) => {
      const key = fresh(fx.keys.cold, offset + i, "lib: cold key")
      const before = storeGets()
      const found = await Promise.all(
        Array.from({ length: 1000 }, (_, j) => {
          const { run, users } = instances[j % instances.length]!
          return run(users.get(key))
        })
      )
      if (!found.every(Option.isSome)) throw new Error(`expected 1000 values of ${key}`)
      worst = Math.max(worst, storeGets() - before)
    },
    beforeRound: () => {
      worst = 0
    },
    afterRound: () => ({ storeQueries: worst })
  }
}

// The library with RedisCache's in-process tier on, warmed: every get is served in process.
// A library of its own with the in-process tier on, the hit keys in it.
const nearLibrary = async (fx: Fixture): Promise<Library> => {
  const library = await buildLibrary({
    table: fx.table,
    keyPrefix: `${fx.runId}:near:`,
    versionSequence: fx.versionSequence,
    cache: () => RedisCache.layer({ url: redisUrl, keyPrefix: `${fx.runId}:near:`, near: { maxEntries: 100_000 } })
  })
  await library.run(Effect.forEach(fx.keys.hit, (key) => library.users.get(key), { concurrency: 16, discard: true }))
  return library
}

const nearHits = async (fx: Fixture): Promise<Runner> => {
  const library = await nearLibrary(fx)
  return { ...libraryHits(library, fx.keys.hit), teardown: () => library.dispose() }
}

const librarySet = (fx: Fixture) => {
  const { run, users } = fx.library
  return async (i: number) => {
    const key = cycle(fx.keys.write, i)
    await run(users.set(key, new User(userFields(key, i))))
  }
}

const bentoGet = (fx: Fixture, tier: "redis" | "memory") => {
  const bento = tier === "redis" ? fx.bentoRedis : fx.bentoMemory
  return async (i: number) => {
    const key = cycle(fx.keys.hit, i)
    const user = await bento.get<UserFields | undefined>({ key })
    expectHit(key, user !== undefined && user !== null)
    return user
  }
}

const cacheManagerGet = (fx: Fixture) => async (i: number) => {
  const key = cycle(fx.keys.hit, i)
  const user = await fx.cacheManager.get<UserFields>(key)
  expectHit(key, user !== undefined && user !== null)
  return user
}

// ---- The outage: Redis black-holed, the cache's breaker open (see `Outage` in fixture.ts) ----

// After every round of an outage case: a breaker that closed (or never opened) means the round
// measured something other than the outage.
// users.get of `keyAt(i)`, each of which must reach the store: a round in which the cache answered
// a read fails with `otherwise`.
const storeReads = (library: Library, keyAt: (i: number) => string, otherwise: string) => {
  const { run, storeGets, users } = library
  let before = 0
  let reads = 0
  return {
    op: async (i: number) => {
      const key = keyAt(i)
      reads++
      const user = await run(users.get(key))
      if (Option.isNone(user)) throw new Error(`no row for ${key}`)
      return user
    },
    beforeRound: () => {
      before = storeGets()
      reads = 0
    },
    afterRound: async () => {
      if (storeGets() - before !== reads) {
        throw new Error(`${reads} reads made ${storeGets() - before} store queries: ${otherwise}`)
      }
      return {}
    }
  }
}

const stillOpen = async (outage: Outage) => {
  if (!(await outage.breakerOpen())) throw new Error("the outage library's cache breaker is no longer open")
}

// users.get of a key warm in the black-holed cache: refused at once by the breaker, served by the
// store. A round whose reads did not all reach the store was not measuring the outage.
const outageGets = async (fx: Fixture): Promise<Runner> => {
  const outage = await fx.outage()
  const runner = storeReads(outage.library, (i) => cycle(fx.keys.outageRead, i), "the cache answered some")
  return {
    ...runner,
    afterRound: async () => {
      await runner.afterRound()
      await stillOpen(outage)
      return {}
    }
  }
}

// users.set while the breaker is open: committed to the store, the cache skipped, so it fails with
// StaleCacheError, and with nothing else. A success would mean the cache took the write: the
// breaker was not open. The round's last write must be in the table.
const outageSets = async (fx: Fixture): Promise<Runner> => {
  const outage = await fx.outage()
  const { run, users } = outage.library
  const check = selectSql(fx.table)
  let last: { readonly key: string; readonly name: string } | undefined
  return {
    op: async (i) => {
      const key = cycle(fx.keys.outageWrite, i)
      const user = new User(userFields(key, i))
      const outcome = await run(Effect.either(users.set(key, user)))
      if (Either.isRight(outcome)) throw new Error(`the set of ${key} succeeded: the cache's breaker is not open`)
      if (outcome.left._tag !== "StaleCacheError") {
        throw new Error(
          `the set of ${key} failed with ${outcome.left._tag}, not StaleCacheError: ${outcome.left.message}`
        )
      }
      last = { key, name: user.name }
    },
    afterRound: async () => {
      if (last !== undefined) {
        const { rows } = await fx.pool.query<{ name: string }>(check, [last.key])
        if (rows[0]?.name !== last.name) throw new Error(`the store does not hold the last set of ${last.key}`)
      }
      await stillOpen(outage)
      return {}
    }
  }
}

// ---- Names the comparisons refer to ----

const RAW_GET = "ioredis GET+parse"
const RAW_GET_64 = "ioredis GET+parse @64"
const RAW_GET_AUTO_64 = "ioredis autopipeline GET+parse @64"
const PG_WRITE = "pg upsert + SET"
const PG_WRITE_16 = "pg upsert + SET @16"
const PG_SELECT = "pg select by key"
const HAND_READ_THROUGH = "GET miss + pg select + SET"
const BENTO_REDIS = "bentocache redis hit"
const BENTO_REDIS_64 = "bentocache redis hit @64"
const BENTO_MEMORY = "bentocache memory hit"
const BENTO_MEMORY_64 = "bentocache memory hit @64"
const CACHE_MANAGER = "cache-manager redis hit"
const CACHE_MANAGER_64 = "cache-manager redis hit @64"
const PG_SELECT_OUTAGE = "pg select by key (outage keys)"
const SQLSTORE_GET_OUTAGE = "SqlStore get by key (outage keys)"
const PG_STORE_WRITE = "pg store write (lock, nextval, upsert)"
const LIB_SET = "lib: set"
const LIB_HIT = "lib: redis hit"
const LIB_HIT_64 = "lib: redis hit @64"
const LIB_MISS = "lib: miss (read-through)"
// The hand-written Effect baselines of the in-fiber cases (bench/inFiber.ts).
const EFFECT_GET = "Effect in fiber: GET + decode"
const EFFECT_GET_64 = "Effect in fiber: GET + decode @64"
const EFFECT_READ_THROUGH = "Effect in fiber: GET miss + pg select + SET"
const EFFECT_WRITE = "Effect in fiber: pg upsert + SET"
const EFFECT_STORE_WRITE = "Effect in fiber: pg store write + SET"
const EFFECT_WRITE_16 = "Effect in fiber: pg upsert + SET @16"
const LIB_SET_16 = "lib: set @16"
const TWIN_SET = "lib: set (twin table, no capture)"
const TWIN_SET_16 = "lib: set @16 (twin table, no capture)"

/** The change feed's lag targets: p99 under 100 ms, max under 1 s (on the default 20 ms poll). */
const lagTarget = samplesAtMost([
  [0.99, 100],
  [1, 1000]
])
/** Changes per round of each lag case: 270 samples in the default 9 rounds. */
const lagChangesPerRound = 30

export const cases: ReadonlyArray<Case<Fixture>> = [
  // ---- Redis-tier hit, one at a time ----
  {
    case: RAW_GET,
    kind: sequential,
    baseline: null,
    setup: async (fx) => ({ op: rawGet(fx, "plain") })
  },
  {
    case: BENTO_REDIS,
    kind: sequential,
    baseline: RAW_GET,
    note: "Redis (L2) tier only: no memory tier, no bus",
    setup: async (fx) => ({ op: bentoGet(fx, "redis") })
  },
  {
    case: CACHE_MANAGER,
    kind: sequential,
    baseline: RAW_GET,
    note: "cache-manager 7 over Keyv and @keyv/redis (node-redis)",
    setup: async (fx) => ({ op: cacheManagerGet(fx) })
  },
  {
    case: LIB_HIT,
    kind: sequential,
    baseline: RAW_GET,
    target: ratioAtMost(1.1),
    also: [
      { baseline: BENTO_REDIS, target: ahead },
      { baseline: CACHE_MANAGER, target: ahead }
    ],
    note: "users.get on warm keys",
    setup: async (fx) => libraryHits(fx.library, fx.keys.hit)
  },
  // ---- Redis-tier hit, one at a time, in one fiber ----
  {
    case: EFFECT_GET,
    kind: inFiber(1),
    baseline: RAW_GET,
    note: "hand-written Effect: Effect.forEach(keys, Effect.promise(redis.get) + Schema decode of User), one runPromise a round",
    setup: async (fx) => effectHits(fx, 1)
  },
  {
    case: "lib in fiber: redis hit",
    kind: inFiber(1),
    baseline: EFFECT_GET,
    target: ratioAtMost(1.05),
    also: [{ baseline: LIB_HIT }],
    note: "Effect.forEach(warm keys, users.get), one runPromise a round",
    setup: async (fx) => libraryHitsInFiber(fx.library, fx.keys.hit, 1)
  },
  // ---- Redis-tier hit, 64 in flight ----
  {
    case: RAW_GET_64,
    kind: concurrent(64),
    baseline: null,
    setup: async (fx) => ({ op: rawGet(fx, "plain") })
  },
  {
    case: RAW_GET_AUTO_64,
    kind: concurrent(64),
    baseline: RAW_GET_64,
    setup: async (fx) => ({ op: rawGet(fx, "autoPipelining") })
  },
  {
    case: BENTO_REDIS_64,
    kind: concurrent(64),
    baseline: RAW_GET_64,
    setup: async (fx) => ({ op: bentoGet(fx, "redis") })
  },
  {
    case: CACHE_MANAGER_64,
    kind: concurrent(64),
    baseline: RAW_GET_64,
    setup: async (fx) => ({ op: cacheManagerGet(fx) })
  },
  {
    case: LIB_HIT_64,
    kind: concurrent(64),
    baseline: RAW_GET_64,
    target: ratioAtMost(1.0),
    also: [
      { baseline: RAW_GET_AUTO_64 },
      { baseline: BENTO_REDIS_64, target: ahead },
      { baseline: CACHE_MANAGER_64, target: ahead }
    ],
    setup: async (fx) => libraryHits(fx.library, fx.keys.hit)
  },
  // ---- Redis-tier hit, 64 in flight, in one fiber ----
  {
    case: EFFECT_GET_64,
    kind: inFiber(64),
    baseline: RAW_GET_64,
    note: "hand-written Effect: as the sequential one, Effect.forEach with concurrency 64",
    setup: async (fx) => effectHits(fx, 64)
  },
  {
    case: "lib in fiber: redis hit @64",
    kind: inFiber(64),
    baseline: EFFECT_GET_64,
    target: ratioAtMost(1.15),
    also: [{ baseline: LIB_HIT_64 }],
    note: "Effect.forEach(warm keys, users.get, { concurrency: 64 }), one runPromise a round",
    setup: async (fx) => libraryHitsInFiber(fx.library, fx.keys.hit, 64)
  },
  // ---- In-process hit (where the near cache goes) ----
  {
    case: BENTO_MEMORY,
    kind: sequential,
    baseline: null,
    note: "memory (L1) tier only, default serialize: true",
    setup: async (fx) => ({ op: bentoGet(fx, "memory") })
  },
  {
    case: BENTO_MEMORY_64,
    kind: concurrent(64),
    baseline: null,
    setup: async (fx) => ({ op: bentoGet(fx, "memory") })
  },
  {
    // The library's own cost per hit, without the network: the same entity over the in-process
    // MemoryCache (the SqlStore below it is only read to warm it). Also an example of a case that
    // builds the library its own way and disposes of it in `teardown`.
    case: "lib: MemoryCache hit (no I/O)",
    kind: sequential,
    baseline: BENTO_MEMORY,
    note: "diagnostic: users.get over MemoryCache, the library's per-call CPU cost without Redis",
    setup: async (fx) => {
      const library = await buildLibrary({
        table: fx.table,
        keyPrefix: `${fx.runId}:memory:`,
        versionSequence: fx.versionSequence,
        cache: () => MemoryCache.layer({ maxEntries: 10_000 })
      })
      const keys = fx.keys.hit
      await library.run(Effect.forEach(keys, (key) => library.users.get(key), { concurrency: 16, discard: true }))
      return { ...libraryHits(library, keys), teardown: () => library.dispose() }
    }
  },
  {
    case: "lib: near-cache hit",
    kind: sequential,
    baseline: LIB_HIT,
    target: ratioAtMost(1 / 50),
    also: [{ baseline: BENTO_MEMORY, target: ahead }],
    note: "users.get over RedisCache with its in-process tier on (announcements over Redis pub/sub)",
    setup: async (fx) => nearHits(fx)
  },
  {
    case: "lib: near-cache hit @64",
    kind: concurrent(64),
    baseline: LIB_HIT_64,
    also: [{ baseline: BENTO_MEMORY_64, target: ahead }],
    setup: async (fx) => nearHits(fx)
  },
  {
    case: "lib in fiber: near-cache hit",
    kind: inFiber(1),
    baseline: BENTO_MEMORY,
    target: ahead,
    note: "Effect.forEach(warm keys, users.get) in one runPromise a round, the in-process tier on; against bentocache's memory tier, one awaited call a hit",
    setup: async (fx) => {
      const library = await nearLibrary(fx)
      return { ...libraryHitsInFiber(library, fx.keys.hit, 1), teardown: () => library.dispose() }
    }
  },
  {
    case: "lib: near tier, 100k entries",
    kind: sequential,
    ops: 1,
    warmup: 0,
    unit: "100k entries",
    baseline: null,
    note: "fills a near tier bounded at 100,000 entries with 150,000 writes of the bench payload (a string of its own each); reports its estimate and the heap it took, measured after a gc()",
    setup: async (fx) => {
      let figures: Record<string, number> = {}
      return {
        op: async (round) => {
          const prefix = `${fx.runId}:near-memory-${round}:`
          // A payload of its own per entry, as entries read from Redis have: one shared string would
          // leave the payloads out of the heap figure.
          const payloadOf = (n: number) => JSON.stringify(userFields(`k${n}`, n))
          // Garbage left by the writes (their commands and replies) is not the tier's: collected first;
          // and the previous round's tier, whose Redis connections close a moment after its scope did.
          const gc = findGc()
          await new Promise((resolve) => setTimeout(resolve, 1000))
          gc?.()
          const heapBefore = process.memoryUsage().heapUsed
          const measured = await Effect.runPromise(
            Effect.gen(function* () {
              const context = yield* Layer.build(
                RedisCache.layer({
                  url: redisUrl,
                  keyPrefix: prefix,
                  near: { maxEntries: 100_000, maxBytes: 1024 * 1024 * 1024 }
                })
              )
              const cache = Context.get(context, Cache.Cache)
              const stats = Context.get(context, RedisCache.NearTierStats)
              for (let batch = 0; batch < 150; batch++) {
                yield* cache.setMany(
                  Array.from({ length: 1000 }, (_, i) => ({
                    key: `k${batch * 1000 + i}`,
                    entry: Cache.Entry.Value({ version: 1, payload: payloadOf(batch * 1000 + i) }),
                    options: { ttl: Duration.minutes(5) }
                  }))
                )
              }
              gc?.()
              const heapAfter = process.memoryUsage().heapUsed
              return { entries: yield* stats.entries, estimate: yield* stats.bytes, heap: heapAfter - heapBefore }
            }).pipe(Effect.scoped)
          )
          if (measured.entries > 100_000) throw new Error(`the tier holds ${measured.entries} entries, over its bound`)
          if (gc === undefined) throw new Error("no gc(): the heap figure would count garbage")
          figures = {
            nearEntries: measured.entries,
            nearEstimatedBytesPerEntry: Math.round(measured.estimate / measured.entries),
            nearHeapBytesPerEntry: Math.round(measured.heap / measured.entries)
          }
        },
        afterRound: () => figures
      }
    }
  },
  // ---- Miss (read-through) ----
  {
    case: PG_SELECT,
    kind: sequential,
    baseline: null,
    setup: async (fx) => pgSelect(fx, fx.keys.hit)
  },
  {
    case: HAND_READ_THROUGH,
    kind: sequential,
    maxOps: missMaxOps,
    maxWarmupOps: missWarmupOps,
    baseline: PG_SELECT,
    note: "hand-written read-through: GET (a miss), SELECT by key, SET of the JSON; every key read once",
    setup: async (fx) => {
      const sql = selectSql(fx.table)
      return {
        op: async (i) => {
          const key = fresh(fx.keys.miss, i, HAND_READ_THROUGH)
          const cached = await fx.redis.get(fx.rawKey(key))
          if (cached !== null) throw new Error(`expected a miss on ${key}`)
          const { rows } = await fx.pool.query<Record<string, unknown>>(sql, [key])
          const row = rows[0]
          if (row === undefined) throw new Error(`no row for ${key}`)
          const { version: _, ...user } = row
          await fx.redis.set(fx.rawKey(key), JSON.stringify(user), "PX", ttlMillis)
          return user
        }
      }
    }
  },
  {
    case: LIB_MISS,
    kind: sequential,
    maxOps: missMaxOps,
    maxWarmupOps: missWarmupOps,
    baseline: HAND_READ_THROUGH,
    also: [{ baseline: PG_SELECT }],
    note: "users.get of rows never cached, each read once",
    // Every read must have gone to the store, or this case does not measure misses.
    setup: async (fx) => storeReads(fx.library, (i) => fresh(fx.keys.miss, i, "lib: miss"), "not all were misses")
  },
  // ---- Miss (read-through), in one fiber ----
  {
    case: EFFECT_READ_THROUGH,
    kind: inFiber(1),
    maxOps: missMaxOps,
    maxWarmupOps: missWarmupOps,
    baseline: HAND_READ_THROUGH,
    note: "hand-written Effect: GET (a miss), SELECT by key, Schema decode, SET with the TTL, one after the other in one runPromise; its own key prefix",
    setup: async (fx) => effectReadThrough(fx, selectSql(fx.table), EFFECT_READ_THROUGH)
  },
  {
    case: "lib in fiber: miss (read-through)",
    kind: inFiber(1),
    maxOps: missMaxOps,
    maxWarmupOps: missWarmupOps,
    baseline: EFFECT_READ_THROUGH,
    target: ratioAtMost(1.25),
    also: [{ baseline: LIB_MISS }],
    note: "Effect.forEach(rows never cached, users.get), one runPromise a round; the second half of the miss keys",
    // `lib: miss` (the same library) reads the first half of the miss keys, this case the second.
    setup: async (fx) => libraryMissesInFiber(fx.library, fx.keys.miss, Math.floor(fx.keys.miss.length / 2))
  },
  // ---- Write ----
  {
    case: PG_WRITE,
    kind: sequential,
    baseline: null,
    setup: async (fx) => ({ op: await handWrittenWrite(fx) })
  },
  {
    case: LIB_SET,
    kind: sequential,
    baseline: PG_WRITE,
    target: ratioAtMost(1.1),
    note: "users.set: upsert (advisory lock, version from a sequence), then a guarded Lua SET",
    setup: async (fx) => ({ op: librarySet(fx) })
  },
  {
    case: TWIN_SET,
    kind: sequential,
    baseline: LIB_SET,
    note: "diagnostic: users.set without capture over a twin of the captured table (same rows, its own sequence, no triggers)",
    setup: async (fx) => capturedSet(fx, false)
  },
  {
    // What change capture costs a set: the same set over a store with changeCapture on (its own
    // table, with the version and capture triggers, its own outbox), its feed consumed by this
    // process meanwhile (bench/changeFeed.ts). Against `lib: set`, and against the same library
    // without capture on a twin of its table (like for like: the fixture's table has another history).
    case: "lib: set (change capture)",
    kind: sequential,
    baseline: LIB_SET,
    target: ratioAtMost(1.25),
    also: [{ baseline: TWIN_SET, target: ratioAtMost(1.25) }, { baseline: PG_WRITE }],
    note: "users.set over SqlStore with changeCapture: the set, the two triggers (version check, outbox row) in its transaction; the feed consuming in-process",
    setup: async (fx) => capturedSet(fx)
  },
  // ---- Write, in one fiber ----
  {
    case: EFFECT_WRITE,
    kind: inFiber(1),
    baseline: PG_WRITE,
    note: "hand-written Effect: Schema encode of User, the upsert of pg upsert + SET, SET with the TTL, one after the other in one runPromise",
    setup: async (fx) => effectWrites(fx, plainUpsert(fx), 1)
  },
  {
    case: EFFECT_STORE_WRITE,
    kind: inFiber(1),
    baseline: EFFECT_WRITE,
    note: "diagnostic: as Effect in fiber: pg upsert + SET, with the library's own store write (advisory lock, nextval, upsert)",
    setup: async (fx) => effectWrites(fx, storeWrite(fx), 1)
  },
  {
    case: "lib in fiber: set",
    kind: inFiber(1),
    baseline: EFFECT_WRITE,
    target: ratioAtMost(1.15),
    also: [{ baseline: EFFECT_STORE_WRITE }, { baseline: LIB_SET }],
    note: "Effect.forEach(write keys, users.set), one runPromise a round",
    setup: async (fx) => librarySetsInFiber(fx, 1)
  },
  {
    case: PG_WRITE_16,
    kind: concurrent(16),
    baseline: null,
    setup: async (fx) => ({ op: await handWrittenWrite(fx) })
  },
  {
    case: LIB_SET_16,
    kind: concurrent(16),
    baseline: PG_WRITE_16,
    target: ratioAtMost(1.1),
    setup: async (fx) => ({ op: librarySet(fx) })
  },
  {
    case: TWIN_SET_16,
    kind: concurrent(16),
    baseline: LIB_SET_16,
    setup: async (fx) => capturedSet(fx, false)
  },
  {
    case: "lib: set @16 (change capture)",
    kind: concurrent(16),
    baseline: LIB_SET_16,
    also: [{ baseline: TWIN_SET_16 }, { baseline: PG_WRITE_16 }],
    setup: async (fx) => capturedSet(fx)
  },
  // ---- Write, 16 in flight, in one fiber ----
  {
    case: EFFECT_WRITE_16,
    kind: inFiber(16),
    baseline: PG_WRITE_16,
    note: "hand-written Effect: as the sequential one, Effect.forEach with concurrency 16",
    setup: async (fx) => effectWrites(fx, plainUpsert(fx), 16)
  },
  {
    case: "lib in fiber: set @16",
    kind: inFiber(16),
    baseline: EFFECT_WRITE_16,
    target: ratioAtMost(1.25),
    also: [{ baseline: LIB_SET_16 }],
    note: "Effect.forEach(write keys, users.set, { concurrency: 16 }), one runPromise a round",
    setup: async (fx) => librarySetsInFiber(fx, 16)
  },
  // ---- The change feed's lag: a plain SQL UPDATE's commit to the cache no longer serving the old value ----
  {
    case: "change feed: lag (quiet)",
    kind: samples,
    ops: lagChangesPerRound,
    unit: "change",
    baseline: null,
    target: lagTarget,
    note:
      "a cached key's row changed with a plain SQL UPDATE; from the query resolving to the raw Redis key no longer " +
      "holding the old value (polled every ~1 ms); feed on its defaults (poll every 20 ms); changes 5-25 ms apart",
    setup: async (fx) => lagProbe(fx)
  },
  {
    case: "change feed: lag (under load: lib sets @16)",
    kind: samples,
    ops: lagChangesPerRound,
    unit: "change",
    baseline: null,
    target: lagTarget,
    note:
      "as the quiet lag, while 16 library sets at once run on other keys of the same entity (their changes go " +
      "through the same feed); loadSetsPerSecond: the load's rate per round",
    setup: async (fx) => lagProbe(fx, 16)
  },
  // ---- Many keys (where the batched read of the same 100 keys goes) ----
  {
    case: "lib: 100 sequential reads",
    kind: sequential,
    unit: "100 reads",
    baseline: null,
    note: "Effect.forEach(100 warm keys, users.get) in one runPromise; the batched read of the same keys compares with it",
    setup: async (fx) => hundredHits(fx, (users, keys) => Effect.forEach(keys, (key) => users.get(key)))
  },
  {
    case: "lib: batched read of 100 keys",
    kind: sequential,
    unit: "100 reads",
    baseline: "lib: 100 sequential reads",
    target: ratioAtMost(0.1),
    note: "users.getMany(100 warm keys): one MGET",
    setup: async (fx) => hundredHits(fx, (users, keys) => users.getMany(keys))
  },
  {
    case: "lib: 100 reads through getBatched",
    kind: sequential,
    unit: "100 reads",
    baseline: "lib: 100 sequential reads",
    note: "Effect.forEach(100 warm keys, users.getBatched, { batching: true }): Effect's Request batching into one getMany",
    setup: async (fx) => hundredHits(fx, (users, keys) => Effect.forEach(keys, users.getBatched, { batching: true }))
  },
  // ---- Many writes ----
  {
    case: "lib: 100 sequential sets",
    kind: sequential,
    unit: "100 writes",
    baseline: null,
    note: "Effect.forEach(100 keys, users.set) in one runPromise; setMany of the same keys compares with it",
    setup: async (fx) => ({
      op: hundredWrites(fx, (users, entries) => Effect.forEach(entries, ([key, user]) => users.set(key, user)))
    })
  },
  {
    case: "lib: setMany of 100 keys",
    kind: sequential,
    unit: "100 writes",
    baseline: "lib: 100 sequential sets",
    note: "users.setMany(100 entries): one transaction (the keys' locks, one multi-row upsert), one pipelined cache write",
    setup: async (fx) => ({ op: hundredWrites(fx, (users, entries) => users.setMany(entries)) })
  },
  // ---- Stampede ----
  {
    case: "lib: 1000 concurrent reads, cold key",
    kind: sequential,
    ops: 1,
    warmup: 1,
    unit: "1000 reads",
    baseline: null,
    target: extraAtMost("storeQueries", 1),
    note: "1000 runPromise(users.get) at once on a key in no cache; storeQueries: store reads per burst, worst burst",
    setup: async (fx) => coldStampede(fx, [fx.library], 0)
  },
  {
    case: "lib: 1000 concurrent reads, cold key, 3 instances",
    kind: sequential,
    ops: 1,
    warmup: 1,
    unit: "1000 reads",
    baseline: null,
    target: extraAtMost("storeQueries", 1),
    note:
      "three library instances (each its own Redis connection, lease holder and single flight, as three processes have) " +
      "read one cold key 1000 times between them; storeQueries: store reads of all three per burst, worst burst",
    setup: async (fx) => {
      const instances = await Promise.all(
        [0, 1, 2].map(() =>
          buildLibrary({ table: fx.table, keyPrefix: `${fx.runId}:wt:`, versionSequence: fx.versionSequence })
        )
      )
      // The second half of the cold keys: the single-instance case reads the first half.
      return {
        ...coldStampede(fx, instances, Math.floor(fx.keys.cold.length / 2)),
        teardown: () => Promise.all(instances.map((instance) => instance.dispose())).then(() => undefined)
      }
    }
  },
  // ---- Outage: Redis black-holed, the cache's breaker open ----
  {
    case: PG_SELECT_OUTAGE,
    kind: sequential,
    baseline: null,
    note: "the outage get's keys, SELECT by key through pg's Pool: what a read costs when only the store answers",
    setup: async (fx) => pgSelect(fx, fx.keys.outageRead)
  },
  {
    // Splits the outage get's gap to the plain select in two: what the store read costs through
    // the library's own Store (SqlStore over @effect/sql-pg), and what the read path adds to it.
    case: SQLSTORE_GET_OUTAGE,
    kind: sequential,
    baseline: PG_SELECT_OUTAGE,
    note: "diagnostic: the library's store read alone, Store.collection(...).get through SqlStore and PgClient",
    setup: async (fx) => {
      const runtime = ManagedRuntime.make(
        SqlStore.layer({ versionSequence: fx.versionSequence }).pipe(
          Layer.provide(
            PgClient.layer({
              url: Redacted.make(databaseUrl),
              applicationName: "effect-write-through-bench",
              maxConnections: poolSize
            })
          )
        )
      )
      const collection = await runtime.runPromise(
        Effect.flatMap(Store.Store, (store) =>
          store.collection({ entity: fx.table, fields: columns, table: { name: fx.table, primaryKey: "id" } })
        )
      )
      return {
        op: async (i) => {
          const key = cycle(fx.keys.outageRead, i)
          const row = await runtime.runPromise(collection.get(key))
          if (Option.isNone(row)) throw new Error(`no row for ${key}`)
          return row
        },
        teardown: () => runtime.dispose()
      }
    }
  },
  {
    case: "outage: get cached key (Redis down, breaker open)",
    kind: sequential,
    baseline: PG_SELECT_OUTAGE,
    target: ratioAtMost(2),
    also: [{ baseline: SQLSTORE_GET_OUTAGE }],
    note: "users.get of keys warm in a cache whose Redis is black-holed, after its breaker opened: served by the store",
    setup: async (fx) => outageGets(fx)
  },
  {
    case: PG_STORE_WRITE,
    kind: sequential,
    baseline: null,
    note: "the outage set's keys, the library's own store write for a set through pg's Pool: advisory lock, nextval, upsert",
    setup: async (fx) => {
      const sql = storeWriteSql(fx.table, fx.versionSequence)
      return {
        op: async (i) => {
          const key = cycle(fx.keys.outageWrite, i)
          const user = userFields(key, i)
          // The lock's name as the library's names it: `<entity>:<key>`, the entity being the table.
          const { rows } = await fx.pool.query(sql, [...columns.map((c) => user[c]), `${fx.table}:${key}`])
          if (rows.length !== 1) throw new Error(`the write of ${key} returned no version`)
        }
      }
    }
  },
  {
    case: "outage: set (Redis down, breaker open)",
    kind: sequential,
    baseline: PG_STORE_WRITE,
    target: extraMillisAtMost(5),
    note: "users.set while the cache's breaker is open: committed to the store, fails with StaleCacheError (expected)",
    setup: async (fx) => outageSets(fx)
  },
  ...strictCases({ nearHit: "lib: near-cache hit", redisHit: LIB_HIT, libraryHits })
]

// What the benchmark cases share, set up once per run: the clients (raw ioredis, pg, bentocache,
// cache-manager, the library's runtime), a table of users created and dropped by the run, and the
// key sets every cache is warmed with. Everything the run writes to Redis lives under the key
// prefix `runId`, and is deleted (by SCAN on that prefix) when the run ends. The outage cases get a
// library of their own whose Redis is black-holed behind a proxy (`Fixture.outage`).
import { PgClient } from "@effect/sql-pg"
import { createKeyv } from "@keyv/redis"
import { BentoCache, bentostore } from "bentocache"
import { memoryDriver } from "bentocache/drivers/memory"
import { redisDriver } from "bentocache/drivers/redis"
import { createCache, type Cache as CacheManager } from "cache-manager"
import { Context, Duration, Effect, Either, Layer, Logger, ManagedRuntime, Redacted, Schema } from "effect"
import { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import { createRequire } from "node:module"
import { Cache, type ChangeCapture, RedisCache, SqlStore, Store, WriteThrough } from "../src/index.js"
import { startFaultProxy } from "../test/chaos/faultProxy.js"

export const databaseUrl = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test"
export const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379"

/** The TTL every cache entry gets, in all the caches compared. */
export const ttlMillis = 60 * 60 * 1000

/** PostgreSQL connections in each pool (pg's for the baselines, the library's PgClient). */
export const poolSize = 16

/**
 * How long a pool keeps an idle connection (pg's default is 10 s). A run has about ten pools of
 * `poolSize`; with connections kept 10 s, those warmed in the setup were still open when the next
 * cases were calibrated, and a run could exceed PostgreSQL's default max_connections (100). A round
 * of the whole run is longer than 10 s, so its cases reopened their connections every round anyway.
 */
export const idleMillis = 1000

// ---- The payload ----

/** A user as it is encoded: the cached JSON (about 200 bytes) and the row's columns. */
export interface UserFields {
  readonly id: string
  readonly name: string
  readonly email: string
  readonly city: string
  readonly country: string
  readonly plan: string
  readonly score: number
  readonly bio: string
}

export class User extends Schema.Class<User>("bench/User")({
  id: Schema.String,
  name: Schema.String,
  email: Schema.String,
  city: Schema.String,
  country: Schema.String,
  plan: Schema.String,
  score: Schema.Number,
  bio: Schema.String
}) {}

/** The user under `id`; `n` varies the fields that writes change. */
export const userFields = (id: string, n: number): UserFields => ({
  id,
  name: `Ada Lovelace ${n}`,
  email: `ada.lovelace.${n}@example.com`,
  city: "London",
  country: "GB",
  plan: n % 2 === 0 ? "pro" : "team",
  score: n % 100_000,
  bio: "Mathematician and writer, known for her work on the Analytical Engine."
})

export const columns = ["id", "name", "email", "city", "country", "plan", "score", "bio"] as const

/** The users table of the run (and of the change feed's cases, bench/changeFeed.ts). */
export const tableDdl = (table: string) =>
  `CREATE TABLE "${table}" (id text PRIMARY KEY, name text NOT NULL, email text NOT NULL, city text NOT NULL, ` +
  `country text NOT NULL, plan text NOT NULL, score integer NOT NULL, bio text NOT NULL, version bigint NOT NULL)`

// ---- pg (a dependency of @effect/sql-pg; this repository has no @types/pg, so typed here) ----

export interface PgQueryResult<R> {
  readonly rows: Array<R>
  readonly rowCount: number | null
}

export interface PgPool {
  query<R = Record<string, unknown>>(text: string, values?: ReadonlyArray<unknown>): Promise<PgQueryResult<R>>
  end(): Promise<void>
}

const pg = createRequire(import.meta.url)("pg") as {
  readonly Pool: new (config: {
    readonly connectionString: string
    readonly max: number
    readonly idleTimeoutMillis: number
    readonly application_name: string
  }) => PgPool
}

// ---- The library ----

export class Users extends Context.Tag("bench/Users")<Users, WriteThrough.WriteThrough<string, User>>() {}

/**
 * Counts the store reads the library makes: what single flight and leases save. Every call of a
 * collection method whose name starts with `get` (`get`, and a batched `getMany` where the store
 * has one) is one query.
 */
export interface StoreCounter {
  gets: number
}

/** A decorator over the Store: every store read that runs adds one to `counter.gets`. */
export const countingStore = (counter: StoreCounter): Layer.Layer<Store.Store, never, Store.Store> =>
  Layer.effect(
    Store.Store,
    Effect.map(Store.Store, (store) =>
      Store.Store.of({
        ...store,
        collection: (target) =>
          Effect.map(store.collection(target), (collection) => {
            const counted: Record<string, unknown> = { ...collection }
            for (const [name, method] of Object.entries(collection)) {
              if (!name.startsWith("get") || typeof method !== "function") continue
              counted[name] = (...args: ReadonlyArray<unknown>) =>
                Effect.zipRight(
                  Effect.sync(() => {
                    counter.gets++
                  }),
                  (method as (...args: ReadonlyArray<unknown>) => Effect.Effect<unknown, unknown>)(...args)
                )
            }
            return counted as unknown as typeof collection
          })
      })
    )
  )

export interface Library {
  readonly runtime: ManagedRuntime.ManagedRuntime<Users, unknown>
  readonly users: WriteThrough.WriteThrough<string, User>
  /** `runtime.runPromise`: one operation, as an application would run it. */
  readonly run: <A, E>(effect: Effect.Effect<A, E, Users>) => Promise<A>
  /** Store reads so far. */
  readonly storeGets: () => number
  readonly dispose: () => Promise<void>
}

export interface LibraryOptions {
  readonly table: string
  /** The RedisCache's key prefix; it must start with the run's id, so the run's cleanup finds the keys. */
  readonly keyPrefix: string
  /** The version sequence the SqlStore draws from (created if missing; the run drops it). */
  readonly versionSequence: string
  /**
   * The SqlStore's `changeCapture` (default off). With it on, the table must have both triggers
   * (see bench/changeFeed.ts), and the entity consumes its change feed in this process.
   */
  readonly changeCapture?: boolean | ChangeCapture.Options
  /** Replaces the RedisCache (e.g. a near cache over it); it gets the RedisCache layer to build on. */
  readonly cache?: (redis: Layer.Layer<Cache.Cache, Cache.CacheConnectionError>) => Layer.Layer<Cache.Cache, unknown>
  /** Further WriteThrough options (ttl, timeouts...). */
  readonly entity?: Partial<WriteThrough.Options<string, User, UserFields>>
  /**
   * Drops the library's log lines (the calls still run): a write during an outage logs an error
   * each time, and thousands of them would bury the table.
   */
  readonly silent?: boolean
}

/**
 * The library as an application builds it: WriteThrough.make over RedisCache, SqlStore (counted)
 * and PgClient, built once into a ManagedRuntime, so an operation costs the operation and not the
 * building of layers.
 */
export const buildLibrary = async (options: LibraryOptions): Promise<Library> => {
  const counter: StoreCounter = { gets: 0 }
  const redis = RedisCache.layer({ url: redisUrl, keyPrefix: options.keyPrefix })
  const layer = Layer.scoped(
    Users,
    WriteThrough.make({
      ttl: Duration.millis(ttlMillis),
      ...options.entity,
      entity: options.table,
      key: Schema.String,
      value: User,
      table: { name: options.table, primaryKey: "id" }
    })
  ).pipe(
    Layer.provide(options.cache === undefined ? redis : options.cache(redis)),
    Layer.provide(
      countingStore(counter).pipe(
        Layer.provide(
          SqlStore.layer({
            versionSequence: options.versionSequence,
            ...(options.changeCapture === undefined ? {} : { changeCapture: options.changeCapture })
          })
        )
      )
    ),
    Layer.provide(
      PgClient.layer({
        url: Redacted.make(databaseUrl),
        applicationName: "effect-write-through-bench",
        maxConnections: poolSize,
        idleTimeout: Duration.millis(idleMillis)
      })
    )
  )
  const runtime = ManagedRuntime.make(
    options.silent === true ? Layer.merge(layer, Logger.replace(Logger.defaultLogger, Logger.none)) : layer
  )
  const users = await runtime.runPromise(Users)
  return {
    runtime,
    users,
    run: (effect) => runtime.runPromise(effect),
    storeGets: () => counter.gets,
    dispose: () => runtime.dispose()
  }
}

// ---- The fixture ----

export interface KeySets {
  /** Warm in every cache (raw, bentocache, cache-manager, the library); rows in the table. */
  readonly hit: ReadonlyArray<string>
  /** Rows in the table, never cached until read: each is read at most once per reader. */
  readonly miss: ReadonlyArray<string>
  /** Rows the write cases overwrite (the library and the hand-written baseline alike). */
  readonly write: ReadonlyArray<string>
  /** Rows in the table, never cached: one per burst of concurrent reads of a cold key. */
  readonly cold: ReadonlyArray<string>
  /** Rows warm in the outage library's cache only (see `Outage`); its get case reads them, nothing writes them. */
  readonly outageRead: ReadonlyArray<string>
  /**
   * Rows only the outage set case and its baseline write: a key written during the outage is owed
   * a tombstone, which may change how the library reads it, so the read case keeps clear of them.
   */
  readonly outageWrite: ReadonlyArray<string>
}

/**
 * A second library whose Redis went silent: its RedisCache talks to the shared Redis through a
 * TCP proxy, which is black-holed once `keys.outageRead` are warm in that cache, and calls were
 * made until its circuit breaker opened. The breaker's interval is an hour, so it stays open for
 * the whole run; nothing else shares this library, its runtime or its proxy.
 */
export interface Outage {
  readonly library: Library
  /**
   * Whether the breaker is (still) open: a `get` on the raw Cache is refused at once with a cause
   * whose `_tag` is "CircuitOpen". While the breaker is closed it is a real call into the black
   * hole, which waits out `outageCommandTimeout` and counts towards opening it.
   */
  readonly breakerOpen: () => Promise<boolean>
}

/** The outage library's bound on every Redis command: how long a call into the black hole waits. */
export const outageCommandTimeout = Duration.millis(200)

export interface Fixture {
  readonly runId: string
  readonly table: string
  /** The library's version sequence (dropped with the table). */
  readonly versionSequence: string
  readonly keys: KeySets
  /** Plain ioredis, one connection (also the baselines' writer). */
  readonly redis: Redis
  /** ioredis with `enableAutoPipelining`, one connection. */
  readonly redisAutoPipelining: Redis
  /** Where the raw baselines keep a key's JSON. */
  readonly rawKey: (key: string) => string
  /** pg's Pool, `poolSize` connections. */
  readonly pool: PgPool
  /** Bentocache with only its Redis (L2) tier, on its own ioredis connection. */
  readonly bentoRedis: BentoCache<Record<string, ReturnType<typeof bentostore>>>
  /** Bentocache with only its memory (L1) tier. */
  readonly bentoMemory: BentoCache<Record<string, ReturnType<typeof bentostore>>>
  /** cache-manager 7 over Keyv and @keyv/redis (node-redis), one connection. */
  readonly cacheManager: CacheManager
  readonly library: Library
  /**
   * The outage (see `Outage`), set up by the first case that asks for it, before any case is
   * calibrated or measured (cases are all set up first), then shared; runs without an outage case
   * never pay for it. Its proxy and library are closed with the fixture.
   */
  readonly outage: () => Promise<Outage>
  /** Register something to undo when the run ends (in reverse order). */
  readonly onCleanup: (cleanup: () => Promise<unknown>) => void
  readonly cleanup: () => Promise<void>
}

export interface FixtureOptions {
  readonly hitKeys: number
  readonly missKeys: number
  readonly writeKeys: number
  readonly coldKeys: number
  /** The size of each of `outageRead` and `outageWrite`. */
  readonly outageKeys: number
  readonly log: (line: string) => void
}

const settle = async (label: string, cleanup: () => Promise<unknown>, log: (line: string) => void) => {
  try {
    await Promise.race([
      cleanup(),
      new Promise((_, reject) => setTimeout(() => reject(new Error("no answer within 10 s")), 10_000).unref())
    ])
  } catch (error) {
    log(`  cleanup of ${label} failed: ${error instanceof Error ? error.message : String(error)}`)
  }
}

export const makeFixture = async (options: FixtureOptions): Promise<Fixture> => {
  const runId = `bench_${randomUUID().replaceAll("-", "").slice(0, 10)}`
  const table = `bench_users_${runId.slice("bench_".length)}`
  const versionSequence = `${table}_version`
  const cleanups: Array<{ label: string; run: () => Promise<unknown> }> = []
  const onCleanup = (label: string, run: () => Promise<unknown>) => cleanups.push({ label, run })
  const cleanup = async () => {
    while (cleanups.length > 0) {
      const next = cleanups.pop()!
      await settle(next.label, next.run, options.log)
    }
  }
  try {
    const range = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`)
    const keys: KeySets = {
      hit: range("u", options.hitKeys),
      miss: range("m", options.missKeys),
      write: range("w", options.writeKeys),
      cold: range("c", options.coldKeys),
      outageRead: range("or", options.outageKeys),
      outageWrite: range("ow", options.outageKeys)
    }

    // Redis: the raw clients; the key sweep is registered first, so it runs last.
    const redis = new Redis(redisUrl, { commandTimeout: 5000, lazyConnect: true })
    await redis.connect()
    onCleanup("redis", () => redis.quit())
    onCleanup("the run's Redis keys", async () => {
      let cursor = "0"
      do {
        const [next, found] = await redis.scan(cursor, "MATCH", `${runId}*`, "COUNT", 1000)
        if (found.length > 0) await redis.unlink(...found)
        cursor = next
      } while (cursor !== "0")
    })
    const redisAutoPipelining = new Redis(redisUrl, {
      commandTimeout: 5000,
      lazyConnect: true,
      enableAutoPipelining: true
    })
    await redisAutoPipelining.connect()
    onCleanup("auto-pipelining redis", () => redisAutoPipelining.quit())

    // PostgreSQL: the table and its rows, then the pool.
    const pool = new pg.Pool({
      connectionString: databaseUrl,
      max: poolSize,
      idleTimeoutMillis: idleMillis,
      application_name: "effect-write-through-bench"
    })
    onCleanup("pg pool", () => pool.end())
    await pool.query(tableDdl(table))
    onCleanup(`table ${table}`, () => pool.query(`DROP TABLE IF EXISTS "${table}"`))
    onCleanup(`sequence ${versionSequence}`, () => pool.query(`DROP SEQUENCE IF EXISTS "${versionSequence}"`))
    const rows = [...keys.hit, ...keys.miss, ...keys.write, ...keys.cold, ...keys.outageRead, ...keys.outageWrite].map(
      (id, n) => ({
        ...userFields(id, n),
        version: 1
      })
    )
    for (let i = 0; i < rows.length; i += 5000) {
      await pool.query(`INSERT INTO "${table}" SELECT * FROM json_populate_recordset(null::"${table}", $1::json)`, [
        JSON.stringify(rows.slice(i, i + 5000))
      ])
    }
    await pool.query(`ANALYZE "${table}"`)

    // The library.
    const library = await buildLibrary({ table, keyPrefix: `${runId}:wt:`, versionSequence })
    onCleanup("library runtime", () => library.dispose())

    // Bentocache: the Redis tier alone (no memory tier, no bus), and the memory tier alone.
    const bentoConnection = new Redis(redisUrl, { commandTimeout: 5000 })
    const bentoRedis = new BentoCache({
      default: "redis",
      prefix: `${runId}:bento`,
      ttl: ttlMillis,
      stores: { redis: bentostore().useL2Layer(redisDriver({ connection: bentoConnection, prefix: `${runId}:bento` })) }
    })
    onCleanup("bentocache (redis)", async () => {
      await bentoRedis.disconnectAll()
      bentoConnection.disconnect()
    })
    const bentoMemory = new BentoCache({
      default: "memory",
      prefix: `${runId}:bento-memory`,
      ttl: ttlMillis,
      stores: { memory: bentostore().useL1Layer(memoryDriver({ maxItems: 100_000 })) }
    })
    onCleanup("bentocache (memory)", () => bentoMemory.disconnectAll())

    // cache-manager 7 on Keyv with @keyv/redis.
    // createKeyv is @keyv/redis's recommended setup: the namespace is applied once, by the adapter.
    const keyv = createKeyv(redisUrl, { namespace: `${runId}:keyv` })
    const cacheManager = createCache({ stores: [keyv], ttl: ttlMillis })
    onCleanup("cache-manager", () => cacheManager.disconnect())

    // Warm every cache with the hit keys, each its own way.
    const rawKey = (key: string) => `${runId}:raw:${key}`
    const inBatches = async (items: ReadonlyArray<string>, f: (key: string, n: number) => Promise<unknown>) => {
      for (let i = 0; i < items.length; i += 64) {
        await Promise.all(items.slice(i, i + 64).map((key, j) => f(key, i + j)))
      }
    }
    const byKey = new Map(rows.map((row) => [row.id, row]))
    const hitValue = (key: string) => byKey.get(key)!
    await inBatches(keys.hit, async (key) => {
      const { version: _, ...fields } = hitValue(key)
      const json = JSON.stringify(fields)
      await redis.set(rawKey(key), json, "PX", ttlMillis)
      await bentoRedis.set({ key, value: fields })
      await bentoMemory.set({ key, value: fields })
      await cacheManager.set(key, fields)
      // A miss fills the library's cache from the row, as an application's first read would.
      const read = await library.run(library.users.get(key))
      if (read._tag !== "Some") throw new Error(`the library found no row for ${key}`)
    })

    // The outage: built on first use, then shared by the outage cases.
    let outage: Promise<Outage> | undefined
    const makeOutage = async (): Promise<Outage> => {
      const target = new URL(redisUrl)
      const proxy = await startFaultProxy({ host: target.hostname, port: Number(target.port || 6379) })
      onCleanup("outage proxy", () => proxy.close())
      // The shared Redis's URL (its password, its database) with the proxy's address.
      const proxied = new URL(redisUrl)
      proxied.hostname = "127.0.0.1"
      proxied.port = String(proxy.port)
      const keyPrefix = `${runId}:outage:`
      const build = async () => {
        let cache: Cache.Cache.Service | undefined
        const library = await buildLibrary({
          table,
          keyPrefix,
          versionSequence,
          silent: true,
          cache: () =>
            RedisCache.layer({
              url: proxied.toString(),
              keyPrefix,
              commandTimeout: outageCommandTimeout,
              // The default threshold (3 failed calls); an interval longer than any run, so that no
              // probe closes it (or waits out the black hole) in the middle of a round.
              breaker: { interval: "1 hour" }
            }).pipe(
              Layer.tap((context) =>
                Effect.sync(() => {
                  cache = Context.get(context, Cache.Cache)
                })
              )
            )
        })
        return { library, rawCache: cache! }
      }
      // Warm, and checked warm: with Redis answering, a second read of every key is a hit.
      const warm = (library: Library) =>
        library.run(
          Effect.forEach(keys.outageRead, (key) => library.users.get(key), { concurrency: 16, discard: true })
        )
      const coldAfterWarming = async (library: Library) => {
        await warm(library)
        const before = library.storeGets()
        await warm(library)
        return library.storeGets() - before
      }
      // Warmed while other cases are being set up: on a busy machine three calls slower than the
      // outage's command timeout open the breaker, whose interval outlasts the run, and leave the
      // keys cold. Such a library is dropped and built again.
      let built: Awaited<ReturnType<typeof build>> | undefined
      for (let attempt = 1; built === undefined; attempt++) {
        const candidate = await build()
        const cold = await coldAfterWarming(candidate.library)
        if (cold === 0) {
          built = candidate
          continue
        }
        const check = await candidate.library.run(Effect.either(candidate.rawCache.get("breaker-check")))
        const opened = Either.isLeft(check) && (check.left.cause as { readonly _tag?: unknown })?._tag === "CircuitOpen"
        await candidate.library.dispose()
        const reason = `${cold} of the warm keys missed the outage library's cache${opened ? " (its breaker opened)" : ""}`
        if (attempt === 3) throw new Error(`outage: ${reason}, three times`)
        options.log(`  outage: ${reason}; building it again`)
      }
      const { library, rawCache } = built
      onCleanup("outage library runtime", () => library.dispose())
      const breakerOpen = async () => {
        const got = await library.run(Effect.either(rawCache.get("breaker-check")))
        return Either.isLeft(got) && (got.left.cause as { readonly _tag?: unknown } | undefined)?._tag === "CircuitOpen"
      }
      proxy.setMode({ _tag: "Blackhole" })
      const began = process.hrtime.bigint()
      for (let calls = 0; !(await breakerOpen()); calls++) {
        if (calls === 10) throw new Error("outage: the cache's breaker did not open after 10 calls into the black hole")
      }
      options.log(
        `  outage: Redis black-holed behind 127.0.0.1:${proxy.port}, ${keys.outageRead.length} keys warm; ` +
          `the breaker opened in ${(Number(process.hrtime.bigint() - began) / 1e6).toFixed(0)} ms`
      )
      return { library, breakerOpen }
    }

    return {
      runId,
      table,
      versionSequence,
      keys,
      redis,
      redisAutoPipelining,
      rawKey,
      pool,
      bentoRedis,
      bentoMemory,
      cacheManager,
      library,
      outage: () => (outage ??= makeOutage()),
      onCleanup: (run) => onCleanup("a case's resource", run),
      cleanup
    }
  } catch (error) {
    await cleanup()
    throw error
  }
}

/** The `i`th of `items`, round and round. */
export const cycle = <A>(items: ReadonlyArray<A>, i: number): A => items[i % items.length]!

/** A fresh key per operation, never reused in the run: so every read is a miss (or a cold key). */
export const fresh = <A>(items: ReadonlyArray<A>, i: number, label: string): A => {
  const item = items[i]
  if (item === undefined)
    throw new Error(`${label}: out of fresh keys after ${items.length}; raise the fixture's count`)
  return item
}

// The store's circuit breaker (SqlStore's `breaker`) against the real PostgreSQL behind a fault
// proxy, with a RedisCache on the shared Redis in front: PostgreSQL black-holed then healed, its
// connections reset, its constraints refusing values, and the options from configuration. Then the
// breaker's policy on its own, under the TestClock, over a store whose answers the test scripts.
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import {
  Cause,
  Config,
  ConfigProvider,
  Context,
  Duration,
  Effect,
  Fiber,
  Layer,
  Option,
  Redacted,
  Schedule,
  Schema,
  TestClock
} from "effect"
import type * as Scope from "effect/Scope"
import { CircuitBreaker, Metrics, SqlStore, Store, WriteThrough, WriteThroughError } from "../src/index.js"
import * as Deadline from "../src/internal/deadline.js"
import * as StoreBreaker from "../src/internal/sqlStore/storeBreaker.js"
import { faultProxy, type FaultProxy } from "./chaos/faultProxy.js"
import { User, user } from "./support/fixtures.js"
import {
  adminClient,
  applicationName,
  blockedBackends,
  databaseUrl,
  PgLive,
  redisCacheLayer,
  scopedTable,
  unique,
  usersTable
} from "./support/services.js"

const storeTimeout = Duration.millis(300)
/**
 * The proxied pool's bound on a connection, PgClient's usual 5 seconds. An interrupted statement's
 * cancel (`pg_cancel_backend`, which @effect/sql-pg sends through the pool) waits for it over a
 * black hole; the caller, bounded by storeTimeout, does not.
 */
const connectTimeout = Duration.seconds(5)

const pass = { _tag: "Pass" } as const
const blackhole = { _tag: "Blackhole" } as const

const database = new URL(databaseUrl)
const upstream = { host: database.hostname, port: Number(database.port || 5432) }

/** A pool on PostgreSQL through the proxy: DATABASE_URL with the proxy's address. */
const proxiedPg = (proxy: FaultProxy, maxConnections: number) => {
  const url = new URL(databaseUrl)
  url.hostname = "127.0.0.1"
  url.port = String(proxy.port)
  return PgClient.layer({ url: Redacted.make(url.toString()), applicationName, connectTimeout, maxConnections })
}

/** The breaker's counters, for the store named `target`. */
const countersOf = (target: string) => ({
  shortCircuits: Metrics.total(Metrics.breakerShortCircuits, { tier: "store", target }),
  transitions: (state: "open" | "closed") => Metrics.total(Metrics.breakerTransitions, { tier: "store", target, state })
})

interface OutageOptions {
  readonly breaker: CircuitBreaker.Options
  readonly storeTimeout?: Duration.Duration | undefined
  /**
   * Default one: an interrupted statement's cancel then gives up within connectTimeout waiting for
   * the pool, rather than queueing for 5 s on an idle connection whose statement the proxy holds.
   */
  readonly maxConnections?: number | undefined
  readonly table?: Effect.Effect<string, unknown, Scope.Scope | SqlClient.SqlClient> | undefined
}

/**
 * A users entity on a fresh table: a RedisCache on the shared Redis under a fresh prefix, over a
 * SqlStore on PostgreSQL through a fault proxy, whose breaker carries a name of this test's own.
 */
const outage = (options: OutageOptions) =>
  Effect.gen(function* () {
    const proxy = yield* faultProxy(upstream)
    const table = yield* options.table ?? usersTable
    const target = unique("postgresql")
    const tiers = yield* Layer.build(
      Layer.merge(
        redisCacheLayer(),
        SqlStore.layer({ breaker: options.breaker, name: target }).pipe(
          Layer.provide(proxiedPg(proxy, options.maxConnections ?? 1))
        )
      )
    )
    // Runs before the pool closes, which cannot end connections whose bytes the proxy holds.
    yield* Effect.addFinalizer(() => Effect.sync(() => proxy.setMode(pass)))
    const users = yield* WriteThrough.make({
      entity: table,
      key: Schema.String,
      value: User,
      table: { name: table, primaryKey: "id" },
      storeTimeout: options.storeTimeout ?? storeTimeout
    }).pipe(Effect.provide(tiers))
    const sql = yield* SqlClient.SqlClient
    return {
      proxy,
      table,
      users,
      transaction: <A, E>(effect: Effect.Effect<A, E>) => Effect.provide(WriteThrough.transaction(effect), tiers),
      /** The table's keys, read straight from PostgreSQL, past the proxy. */
      ids: Effect.map(sql.unsafe(`SELECT id FROM "${table}" ORDER BY id`).values, (rows) =>
        rows.map((row) => String(row[0]))
      ),
      ...countersOf(target)
    }
  })

/** A call PostgreSQL left unanswered: it ended at its bound, not sooner, nor when its cancel gave up. */
const expectWaitedOut = (took: Duration.Duration) => {
  expect(Duration.toMillis(took)).toBeGreaterThanOrEqual(Duration.toMillis(storeTimeout) * 0.9)
  expect(Duration.toMillis(took)).toBeLessThan(Duration.toMillis(connectTimeout) - 1_000)
}

/** A call that did not wait on PostgreSQL. */
const expectAtOnce = (took: Duration.Duration) =>
  expect(Duration.toMillis(took)).toBeLessThan(Duration.toMillis(storeTimeout) / 2)

/** `call` refused by the open breaker: at once, with StoreError `Unavailable` whose cause is the CircuitOpen. */
const expectRefused = <A, E>(call: Effect.Effect<A, E>, site: { readonly operation: string; readonly key: string }) =>
  Effect.gen(function* () {
    const [took, error] = yield* Effect.timed(Effect.flip(call))
    expect(error).toBeInstanceOf(Store.StoreError)
    expect(error).toMatchObject({ _tag: "StoreError", reason: "Unavailable", ...site })
    expect((error as Store.StoreError).cause).toBeInstanceOf(CircuitBreaker.CircuitOpen)
    expect((error as Store.StoreError).cause).toMatchObject({ tier: "store" })
    expect((error as Store.StoreError).message).toContain("circuit breaker is open")
    expectAtOnce(took)
  })

/** `call`'s failure when PostgreSQL does not answer a read: a Timeout after storeTimeout. */
const expectReadTimedOut = <A>(call: Effect.Effect<A, WriteThrough.ReadError>, key: string) =>
  Effect.gen(function* () {
    const [took, error] = yield* Effect.timed(Effect.flip(call))
    expect(error).toBeInstanceOf(Store.StoreError)
    expect(error).toMatchObject({ _tag: "StoreError", reason: "Timeout", operation: "get", key })
    expectWaitedOut(took)
  })

/** Retries `effect` until it holds, for what PostgreSQL does on its own time. */
const eventually = <A, E, R>(effect: Effect.Effect<A, E, R>, holds: (a: A) => boolean) =>
  effect.pipe(
    Effect.filterOrFail(holds),
    Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.intersect(Schedule.recurs(250))))
  )

/** Holds `LOCK TABLE ... ACCESS EXCLUSIVE` in a transaction on the admin pool until the returned effect runs. */
const lockTable = (admin: SqlClient.SqlClient, table: string) =>
  Effect.gen(function* () {
    const locked = yield* Effect.makeLatch(false)
    const release = yield* Effect.makeLatch(false)
    const holder = yield* admin
      .withTransaction(
        admin
          .unsafe(`LOCK TABLE "${table}" IN ACCESS EXCLUSIVE MODE`)
          .raw.pipe(Effect.zipRight(locked.open), Effect.zipRight(release.await))
      )
      .pipe(Effect.forkScoped)
    yield* locked.await
    return Effect.zipRight(release.open, Fiber.join(holder))
  })

describe("SqlStore circuit breaker, against PostgreSQL behind a fault proxy", () => {
  it.live(
    "black-holed: cached keys answer from Redis; misses and writes wait out storeTimeout until the breaker opens, then fail at once and write nothing",
    () =>
      Effect.gen(function* () {
        const { ids, proxy, shortCircuits, transaction, transitions, users } = yield* outage({
          breaker: { failures: 3, interval: "1 hour" }
        })
        yield* users.set("cached", user("cached", "Ada"))
        yield* users.set("kept", user("kept", "Grace"))
        expect(yield* users.get("cached")).toEqual(Option.some(user("cached", "Ada")))
        proxy.setMode(blackhole)

        const [hitTook, hit] = yield* Effect.timed(users.get("cached"))
        expect(hit).toEqual(Option.some(user("cached", "Ada")))
        expectAtOnce(hitTook)

        // Three calls PostgreSQL leaves unanswered, each ended by the write-through's bound.
        yield* expectReadTimedOut(users.get("missing-1"), "missing-1")
        const [setTook, unknown] = yield* Effect.timed(Effect.flip(users.set("sent", user("sent", "Edsger"))))
        // The write may have reached PostgreSQL: its outcome is unknown, and its key fenced.
        expect(unknown).toBeInstanceOf(WriteThroughError.InconsistentCacheError)
        expect(unknown).toMatchObject({ operation: "set", key: "sent", invalidated: true })
        expect((unknown as WriteThroughError.InconsistentCacheError).cause).toMatchObject({ _tag: "TimeoutException" })
        expectWaitedOut(setTook)
        expect(yield* transitions("open")).toBe(0)
        yield* expectReadTimedOut(users.get("missing-2"), "missing-2")
        // Counted as the caller's bound cuts the call short, not once the call has stopped.
        expect(yield* transitions("open")).toBe(1)

        // Open: misses, writes and transactions fail at once, sending nothing.
        yield* expectRefused(users.get("missing-3"), { operation: "get", key: "missing-3" })
        yield* expectRefused(users.set("refused", user("refused", "Barbara")), { operation: "put", key: "refused" })
        yield* expectRefused(users.delete("kept"), { operation: "delete", key: "kept" })
        yield* expectRefused(transaction(users.set("in-transaction", user("in-transaction", "Alan"))), {
          operation: "transaction",
          key: ""
        })
        expect(yield* shortCircuits).toBe(4)
        const [againTook, again] = yield* Effect.timed(users.get("cached"))
        expect(again).toEqual(Option.some(user("cached", "Ada")))
        expectAtOnce(againTook)

        // Healed, the proxy delivers what it held: the timed-out write commits or is cancelled (the
        // cancel the driver sent at the deadline may land first), as its unknown outcome allowed;
        // the refused calls were never sent.
        proxy.setMode(pass)
        const written = yield* eventually(ids, (keys) => keys.includes("cached"))
        expect(written.filter((key) => key !== "sent")).toEqual(["cached", "kept"])
      }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live("healed: after the interval one call probes, a transaction as well as any, and closes the breaker", () =>
    Effect.gen(function* () {
      const interval = Duration.millis(500)
      const { ids, proxy, transaction, transitions, users } = yield* outage({ breaker: { failures: 2, interval } })
      yield* users.set("before", user("before", "Ada"))
      proxy.setMode(blackhole)
      yield* expectReadTimedOut(users.get("missing-1"), "missing-1")
      yield* expectReadTimedOut(users.get("missing-2"), "missing-2")
      expect(yield* transitions("open")).toBe(1)
      yield* expectRefused(users.set("while-open", user("while-open", "Grace")), {
        operation: "put",
        key: "while-open"
      })
      expect([yield* transitions("open"), yield* transitions("closed")]).toEqual([1, 0])

      proxy.setMode(pass)
      yield* Effect.sleep(interval)
      // The probe: its statements run as part of it, not refused as calls beside a probe are.
      yield* transaction(users.set("probe", user("probe", "Edsger")))
      expect([yield* transitions("open"), yield* transitions("closed")]).toEqual([1, 1])
      yield* users.set("after", user("after", "Barbara"))
      expect(yield* users.get("missing-1")).toEqual(Option.none())
      expect(yield* users.get("probe")).toEqual(Option.some(user("probe", "Edsger")))
      expect(yield* ids).toEqual(["after", "before", "probe"])
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live(
    "connections reset: between calls the pool opens new ones; in flight, reads fail Unavailable, a write with an unknown outcome, and the breaker counts them",
    () =>
      Effect.gen(function* () {
        const admin = yield* adminClient
        const { ids, proxy, shortCircuits, table, transitions, users } = yield* outage({
          breaker: { failures: 3, interval: "1 hour" },
          // The calls end by the reset, not by their bound.
          storeTimeout: Duration.seconds(30),
          maxConnections: 4
        })
        yield* users.set("k", user("k", "before"))

        // Nothing in flight: the pool drops the connections it finds reset and opens new ones.
        expect(proxy.resetConnections()).toBeGreaterThan(0)
        yield* Effect.sleep("100 millis")
        yield* users.set("k", user("k", "between"))
        expect(yield* users.get("missing-0")).toEqual(Option.none())
        expect(yield* transitions("open")).toBe(0)

        // In flight: three calls wait on the test's lock inside PostgreSQL when their connections go.
        const release = yield* lockTable(admin, table)
        const running = yield* Effect.fork(
          Effect.all(
            [
              Effect.flip(users.get("missing-1")),
              Effect.flip(users.set("k", user("k", "lost"))),
              Effect.flip(users.get("missing-2"))
            ],
            { concurrency: "unbounded" }
          )
        )
        yield* blockedBackends(admin, table, 3)
        expect(proxy.resetConnections()).toBeGreaterThanOrEqual(3)
        const [firstRead, write, secondRead] = yield* Fiber.join(running)
        for (const [read, key] of [
          [firstRead, "missing-1"],
          [secondRead, "missing-2"]
        ] as const) {
          expect(read).toBeInstanceOf(Store.StoreError)
          expect(read).toMatchObject({ _tag: "StoreError", reason: "Unavailable", operation: "get", key })
        }
        // The statement was sent: it may still commit once the lock is gone, so the key is fenced.
        // The breaker passed the store's error on unchanged.
        expect(write).toBeInstanceOf(WriteThroughError.InconsistentCacheError)
        expect(write).toMatchObject({ operation: "set", key: "k", invalidated: true })
        expect((write as WriteThroughError.InconsistentCacheError).cause).toBeInstanceOf(Store.StoreOutcomeUnknownError)

        expect(yield* transitions("open")).toBe(1)
        yield* expectRefused(users.set("refused", user("refused", "Grace")), { operation: "put", key: "refused" })
        expect(yield* shortCircuits).toBe(1)
        yield* release
        expect(yield* ids).toEqual(["k"])
      }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  it.live("values PostgreSQL refuses (a CHECK constraint) do not open the breaker, and reset its count", () =>
    Effect.gen(function* () {
      const { proxy, shortCircuits, transitions, users } = yield* outage({
        breaker: { failures: 2, interval: "1 hour" },
        table: scopedTable(
          (t) =>
            `CREATE TABLE "${t}" (id text PRIMARY KEY, name text NOT NULL CHECK (name <> 'refused'), ` +
            `email text NOT NULL, version bigint NOT NULL)`
        )
      })
      const refusedByPostgres = users.set("r", user("r", "refused")).pipe(Effect.flip)
      for (let i = 0; i < 4; i++) {
        expect(yield* refusedByPostgres).toMatchObject({ _tag: "StoreError", reason: "Rejected", sqlState: "23514" })
      }
      expect([yield* transitions("open"), yield* shortCircuits]).toEqual([0, 0])

      // Two outages, a refusal between them: not two failures in a row.
      for (const key of ["missing-1", "missing-2"]) {
        proxy.setMode(blackhole)
        yield* expectReadTimedOut(users.get(key), key)
        proxy.setMode(pass)
        expect(yield* refusedByPostgres).toMatchObject({ reason: "Rejected" })
      }
      expect(yield* users.get("missing-3")).toEqual(Option.none())
      yield* users.set("r", user("r", "accepted"))
      expect(yield* users.get("r")).toEqual(Option.some(user("r", "accepted")))
      expect([yield* transitions("open"), yield* shortCircuits]).toEqual([0, 0])
    }).pipe(Effect.scoped, Effect.provide(PgLive))
  )

  describe("layerConfig", () => {
    /** A store from `layerConfig` through a black-holed proxy, a collection on a fresh table, and a call bounded from outside. */
    const configured = (
      config: Config.Config.Wrap<SqlStore.Options>,
      values: ReadonlyArray<readonly [string, string]>
    ) =>
      Effect.gen(function* () {
        const proxy = yield* faultProxy(upstream)
        const store = yield* Layer.build(SqlStore.layerConfig(config).pipe(Layer.provide(proxiedPg(proxy, 1)))).pipe(
          Effect.map(Context.get(Store.Store)),
          // As from the environment: `STORE_BREAKER_FAILURES`.
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map(values), { pathDelim: "_" }))
        )
        yield* Effect.addFinalizer(() => Effect.sync(() => proxy.setMode(pass)))
        const table = yield* usersTable
        const users = yield* store.collection({
          entity: table,
          fields: ["id", "name", "email"],
          table: { name: table, primaryKey: "id" }
        })
        proxy.setMode(blackhole)
        // Bounded as the write-through bounds it: from outside, ending it by interruption.
        const bounded = (key: string) =>
          Effect.flip(Deadline.timeoutFail(users.get(key), storeTimeout, () => new Cause.TimeoutException()))
        return { bounded, users }
      })

    it.live("reads the breaker's figures and the store's name", () =>
      Effect.gen(function* () {
        const target = unique("configured")
        const { bounded, users } = yield* configured(
          { breaker: Config.nested(CircuitBreaker.config, "STORE_BREAKER"), name: Config.string("STORE_NAME") },
          [
            ["STORE_BREAKER_FAILURES", "1"],
            ["STORE_BREAKER_INTERVAL", "1 hour"],
            ["STORE_NAME", target]
          ]
        )
        const { shortCircuits, transitions } = countersOf(target)
        expect(yield* bounded("k")).toMatchObject({ _tag: "TimeoutException" })
        expect(yield* transitions("open")).toBe(1)
        yield* expectRefused(users.get("k"), { operation: "get", key: "k" })
        expect(yield* shortCircuits).toBe(1)
      }).pipe(Effect.scoped, Effect.provide(PgLive))
    )

    it.live("breaker false turns it off: every call waits out its bound, none is refused", () =>
      Effect.gen(function* () {
        const { bounded } = yield* configured({ breaker: Config.succeed(false) }, [])
        // One more than the default run of failures.
        for (let i = 0; i < 4; i++) {
          const [took, error] = yield* Effect.timed(bounded(`k${i}`))
          expect(error).toMatchObject({ _tag: "TimeoutException" })
          expectWaitedOut(took)
        }
      }).pipe(Effect.scoped, Effect.provide(PgLive))
    )
  })
})

/** What the scripted store's calls do. */
type Script =
  | { readonly _tag: "Answer" }
  | { readonly _tag: "Fail"; readonly reason: Store.StoreError["reason"] }
  /** Writes fail with StoreOutcomeUnknownError, reads with Unavailable: the connection went. */
  | { readonly _tag: "LoseConnection" }
  | { readonly _tag: "Hang" }

const answer: Script = { _tag: "Answer" }
const failing = (reason: Store.StoreError["reason"]): Script => ({ _tag: "Fail", reason })

/**
 * A store whose every call, and every transaction's begin, does what `script` says at the time,
 * and counts in `reached`; behind a breaker (2 failures, 5 seconds) named for the test.
 */
const scriptedStore = Effect.sync(() => {
  let script: Script = answer
  let reached = 0
  const site = (operation: string, key: string) => ({ entity: "users", key, operation })
  const failure = (operation: string, key: string, current: Script & { readonly _tag: "Fail" }) =>
    new Store.StoreError({ ...site(operation, key), reason: current.reason })
  // A lost connection leaves a write's outcome unknown; a read just fails.
  const call =
    <E>(lost: (operation: string, key: string) => E) =>
    <A>(operation: string, key: string, value: A): Effect.Effect<A, Store.StoreError | E> =>
      Effect.suspend((): Effect.Effect<A, Store.StoreError | E> => {
        reached++
        const current = script
        switch (current._tag) {
          case "Answer":
            return Effect.succeed(value)
          case "Fail":
            return Effect.fail(failure(operation, key, current))
          case "LoseConnection":
            return Effect.fail(lost(operation, key))
          case "Hang":
            return Effect.never
        }
      })
  const read = call((operation, key) => new Store.StoreError({ ...site(operation, key), reason: "Unavailable" }))
  const write = call((operation, key) => new Store.StoreOutcomeUnknownError(site(operation, key)))
  const collection: Store.Store.Collection = {
    get: (key) => read("get", key, Option.none()),
    // As SqlStore's, an empty batch sends nothing.
    getMany: (keys) => (keys.length === 0 ? Effect.succeed(new Map()) : read("get", keys[0]!, new Map())),
    put: (key) => write("put", key, 1),
    putMany: (entries) => (entries.length === 0 ? Effect.succeed(new Map()) : write("put", entries[0]![0], new Map())),
    delete: (key) => write("delete", key, 1)
  }
  const underlying = Store.Store.of({
    collection: () => Effect.succeed(collection),
    // Its begin: nothing of it was written when it fails.
    transaction: (effect) => Effect.zipRight(read("transaction", "", undefined), effect),
    inTransaction: Effect.succeed(false)
  })
  const target = unique("scripted")
  return {
    store: StoreBreaker.wrap(underlying, { failures: 2, interval: "5 seconds" }, target),
    play: (next: Script) => {
      script = next
    },
    reached: () => reached,
    ...countersOf(target)
  }
})

const target: Store.Target = { entity: "users", fields: undefined, table: undefined }

describe("SqlStore circuit breaker policy (scripted store, TestClock)", () => {
  it.effect("errors the database answered with never count, and a run of failures starts again after one", () =>
    Effect.gen(function* () {
      const { play, store, transitions } = yield* scriptedStore
      const users = yield* store.collection(target)
      for (const reason of ["Rejected", "Decode", "Schema", "Transaction"] as const) {
        play(failing(reason))
        for (let i = 0; i < 3; i++) expect(yield* Effect.flip(users.put("k", 1))).toMatchObject({ reason })
      }
      play(failing("Unavailable"))
      yield* Effect.flip(users.get("k"))
      play(failing("Rejected"))
      yield* Effect.flip(users.get("k"))
      play(failing("Timeout"))
      yield* Effect.flip(users.get("k"))
      expect(yield* transitions("open")).toBe(0)
      yield* Effect.flip(users.get("k"))
      expect(yield* transitions("open")).toBe(1)
    })
  )

  it.effect("a write whose connection went counts, and its StoreOutcomeUnknownError reaches the caller unchanged", () =>
    Effect.gen(function* () {
      const { play, store, transitions } = yield* scriptedStore
      const users = yield* store.collection(target)
      play({ _tag: "LoseConnection" })
      for (const write of [users.put("k", 1), users.delete("k")]) {
        const error = yield* Effect.flip(write)
        expect(error).toBeInstanceOf(Store.StoreOutcomeUnknownError)
      }
      expect(yield* transitions("open")).toBe(1)
    })
  )

  it.effect("a call interrupted by its caller's bound counts: that is how a silent database ends calls", () =>
    Effect.gen(function* () {
      const { play, reached, store, transitions } = yield* scriptedStore
      const users = yield* store.collection(target)
      play({ _tag: "Hang" })
      for (let i = 0; i < 2; i++) {
        const bounded = yield* Effect.fork(Effect.timeout(users.get("k"), "1 second"))
        yield* TestClock.adjust("1 second")
        expect(yield* Effect.flip(Fiber.join(bounded))).toMatchObject({ _tag: "TimeoutException" })
      }
      expect(yield* transitions("open")).toBe(1)
      expect(yield* Effect.flip(users.get("k"))).toMatchObject({ reason: "Unavailable" })
      expect(reached()).toBe(2)
    })
  )

  it.effect("open: calls and transactions are refused before they reach the store; collections are still made", () =>
    Effect.gen(function* () {
      const { play, reached, shortCircuits, store } = yield* scriptedStore
      const users = yield* store.collection(target)
      play(failing("Unavailable"))
      for (let i = 0; i < 2; i++) yield* Effect.flip(users.get("k"))
      play(answer)
      let bodyRan = false
      const refusedTransaction = yield* Effect.flip(
        store.transaction(
          Effect.sync(() => {
            bodyRan = true
          })
        )
      )
      expect(refusedTransaction).toMatchObject({ reason: "Unavailable", operation: "transaction", entity: "*" })
      expect(bodyRan).toBe(false)
      const later = yield* store.collection(target)
      const calls: ReadonlyArray<Effect.Effect<unknown, Store.StoreError | Store.StoreOutcomeUnknownError>> = [
        later.get("k"),
        users.getMany(["k"]),
        users.put("k", 1),
        users.putMany([["k", 1]])
      ]
      for (const call of calls) {
        expect((yield* Effect.flip(call)).cause).toBeInstanceOf(CircuitBreaker.CircuitOpen)
      }
      expect(reached()).toBe(2)
      expect(yield* shortCircuits).toBe(5)
    })
  )

  it.effect(
    "after the interval: an empty batch, which reaches no database, does not close it; a transaction probes as one call",
    () =>
      Effect.gen(function* () {
        const { play, reached, store, transitions } = yield* scriptedStore
        const users = yield* store.collection(target)
        play(failing("Unavailable"))
        for (let i = 0; i < 2; i++) yield* Effect.flip(users.get("k"))
        play(answer)
        yield* TestClock.adjust("5 seconds")
        expect(yield* users.getMany([])).toEqual(new Map())
        expect(yield* users.putMany([])).toEqual(new Map())
        expect(yield* transitions("closed")).toBe(0)
        // Its statements are part of the probe: not refused as other calls are while it runs.
        expect(yield* store.transaction(Effect.zipRight(users.put("a", 1), users.put("b", 1)))).toBe(1)
        expect(reached()).toBe(5)
        expect(yield* transitions("closed")).toBe(1)
      })
  )
})

// WriteThrough.transaction against the real Redis and Postgres (and once in memory): one SQL transaction
// for the writes of several entities, whose cache updates wait for the COMMIT.
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Deferred, Effect, Exit, Fiber, Layer, Metric, Option, Schedule, Schema } from "effect"
import type * as Scope from "effect/Scope"
import { Cache, MemoryCache, MemoryStore, Metrics, Store, WriteThrough, WriteThroughError } from "../src/index.js"
import { FaultyCache, InjectedFault } from "../src/testing.js"
import { User, user, versionOf } from "./support/fixtures.js"
import {
  driveClock,
  type Entities,
  type EntitySpec,
  type HarnessOptions,
  usersEntity,
  withEntities
} from "./support/harness.js"
import { adminClient, scopedTable, unique } from "./support/services.js"

class Account extends Schema.Class<Account>("Account")({
  id: Schema.String,
  owner: Schema.String,
  balance: Schema.Int
}) {}

const account = (id: string, owner: string, balance: number) => new Account({ id, owner, balance })

// A CHECK the database enforces: a negative balance is refused by Postgres itself, inside the transaction.
const accountsTable = scopedTable(
  (name) =>
    `CREATE TABLE "${name}" (id text PRIMARY KEY, owner text NOT NULL, ` +
    `balance integer NOT NULL CHECK (balance >= 0), version bigint NOT NULL)`,
  "accounts"
)

const userPayload = (id: string, name: string) => JSON.stringify({ id, name, email: `${id}@example.com` })
const accountPayload = (id: string, owner: string, balance: number) => JSON.stringify({ id, owner, balance })

const fence = `t${Cache.FENCE_VERSION}:`

const accountsEntity: EntitySpec<Account> = { value: Account, fields: ["id", "owner", "balance"], table: accountsTable }

/** The two entities of the harness (users and accounts, each in a table of its own), under the names the tests use. */
const asTwo = ({
  entities: { accounts, users },
  ...shared
}: Entities<{ users: typeof usersEntity; accounts: typeof accountsEntity }>) => ({
  ...shared,
  users: users.writeThrough,
  accounts: accounts.writeThrough,
  /** Straight to Postgres, past the fault injector. */
  userRows: users.collection,
  accountRows: accounts.collection,
  /** What Redis holds for a key, read behind the library's back. */
  rawUser: users.raw,
  rawAccount: accounts.raw,
  count: (metric: Metric.Metric.Counter<number>, entity: "users" | "accounts") =>
    (entity === "users" ? users : accounts).count(metric)
})

/** `withEntities` with users and accounts, over one FaultyCache on the real Redis and one FaultyStore on the real Postgres. */
const withTwo = <A, E>(
  body: (two: ReturnType<typeof asTwo>) => Effect.Effect<A, E, Scope.Scope | Store.Store | SqlClient.SqlClient>,
  options: HarnessOptions = {}
) => withEntities({ users: usersEntity, accounts: accountsEntity }, (harness) => body(asTwo(harness)), options)

const nameOf = (got: Option.Option<User>) => Option.getOrThrow(got).name
const rowOf = (row: Option.Option<Store.Row>) => Option.getOrThrow(row)
const valueOf = (row: Option.Option<Store.Row>) => Option.getOrThrow(row).value

/** Every cache write the library attempted so far: no transaction that rolled back may add to it. */
const cacheWrites = (faults: FaultyCache.Controls) =>
  Effect.all({ set: faults.calls("set"), invalidate: faults.calls("invalidate") })

describe("WriteThrough.transaction on Redis and Postgres", () => {
  it.effect("the COMMIT succeeded: every written key of both entities is published at its committed version", () =>
    withTwo(({ accountRows, accounts, rawAccount, rawUser, storeFaults, userRows, users }) =>
      Effect.gen(function* () {
        yield* users.set("gone", user("gone", "to delete"))
        const goneVersion = rowOf(yield* userRows.get("gone")).version
        const goneCached = yield* rawUser("gone")
        yield* accounts.set("a1", account("a1", "ada", 10))

        yield* WriteThrough.transaction(
          Effect.gen(function* () {
            yield* users.set("1", user("1", "first draft"))
            yield* accounts.set("a1", account("a1", "ada", 25))
            yield* users.set("1", user("1", "Ada")) // the last write of a key wins
            yield* users.delete("gone")
            yield* accounts.set("a2", account("a2", "grace", 7))
            // Nothing is published before the COMMIT.
            expect(yield* rawUser("1")).toBeNull()
            expect(yield* rawUser("gone")).toBe(goneCached)
            expect(yield* rawAccount("a1")).toMatch(/^v\d+:.*"balance":10/)
            expect(yield* rawAccount("a2")).toBeNull()
          })
        )

        const one = rowOf(yield* userRows.get("1"))
        const a1 = rowOf(yield* accountRows.get("a1"))
        const a2 = rowOf(yield* accountRows.get("a2"))
        expect(one.value).toEqual({ id: "1", name: "Ada", email: "1@example.com" })
        expect(a1.value).toEqual({ id: "a1", owner: "ada", balance: 25 })
        expect(yield* userRows.get("gone")).toEqual(Option.none())
        expect(yield* rawUser("1")).toBe(`v${one.version}:${userPayload("1", "Ada")}`)
        expect(yield* rawAccount("a1")).toBe(`v${a1.version}:${accountPayload("a1", "ada", 25)}`)
        expect(yield* rawAccount("a2")).toBe(`v${a2.version}:${accountPayload("a2", "grace", 7)}`)
        // The delete's tombstone, above the deleted row and above the write of "1" made before it.
        const tombstone = yield* rawUser("gone")
        expect(tombstone).toMatch(/^t\d+:$/)
        expect(versionOf(tombstone)).toBeGreaterThan(goneVersion)
        expect(versionOf(tombstone)).toBeGreaterThan(one.version)

        // Reads are cache hits: the store is not asked.
        const getsBefore = yield* storeFaults.calls("get")
        expect(nameOf(yield* users.get("1"))).toBe("Ada")
        expect(Option.getOrThrow(yield* accounts.get("a1")).balance).toBe(25)
        expect(Option.getOrThrow(yield* accounts.get("a2")).owner).toBe("grace")
        expect(yield* storeFaults.calls("get")).toBe(getsBefore)
        // The tombstone is a miss: the store answers that the row is gone.
        expect(yield* users.get("gone")).toEqual(Option.none())
        expect(yield* storeFaults.calls("get")).toBe(getsBefore + 1)
      })
    )
  )

  describe("the body fails or is interrupted: rolled back, and the cache is not touched at all", () => {
    it.effect("the body fails", () =>
      withTwo(({ accountRows, accounts, cacheFaults, rawAccount, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          yield* users.set("2", user("2", "v1"))
          yield* accounts.set("a1", account("a1", "ada", 10))
          const cached = yield* Effect.all([rawUser("1"), rawUser("2"), rawAccount("a1"), rawUser("new")])
          const rows = yield* Effect.all([userRows.get("1"), userRows.get("2"), accountRows.get("a1")])
          const writes = yield* cacheWrites(cacheFaults)

          const error = yield* Effect.flip(
            WriteThrough.transaction(
              Effect.gen(function* () {
                yield* users.set("1", user("1", "v2"))
                yield* users.delete("2")
                yield* accounts.set("a1", account("a1", "ada", 99))
                yield* users.set("new", user("new", "v1"))
                return yield* Effect.fail("boom" as const)
              })
            )
          )

          expect(error).toBe("boom")
          expect(yield* Effect.all([rawUser("1"), rawUser("2"), rawAccount("a1"), rawUser("new")])).toEqual(cached)
          expect(yield* cacheWrites(cacheFaults)).toEqual(writes)
          expect(yield* Effect.all([userRows.get("1"), userRows.get("2"), accountRows.get("a1")])).toEqual(rows)
          expect(yield* userRows.get("new")).toEqual(Option.none())
          expect(nameOf(yield* users.get("1"))).toBe("v1")
          expect(nameOf(yield* users.get("2"))).toBe("v1")
        })
      )
    )

    it.effect("the body is interrupted", () =>
      withTwo(({ accountRows, accounts, cacheFaults, rawAccount, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          yield* accounts.set("a1", account("a1", "ada", 10))
          const cached = yield* Effect.all([rawUser("1"), rawAccount("a1"), rawUser("new")])
          const rows = yield* Effect.all([userRows.get("1"), accountRows.get("a1")])
          const writes = yield* cacheWrites(cacheFaults)
          const written = yield* Deferred.make<void>()

          const fiber = yield* Effect.fork(
            WriteThrough.transaction(
              Effect.gen(function* () {
                yield* users.set("1", user("1", "v2"))
                yield* users.delete("1")
                yield* accounts.set("a1", account("a1", "ada", 99))
                yield* users.set("new", user("new", "v1"))
                yield* Deferred.succeed(written, undefined)
                return yield* Effect.never
              })
            )
          )
          yield* Deferred.await(written).pipe(Effect.raceFirst(Fiber.join(fiber)))
          const exit = yield* Fiber.interrupt(fiber)

          expect(Exit.isInterrupted(exit)).toBe(true)
          expect(yield* Effect.all([rawUser("1"), rawAccount("a1"), rawUser("new")])).toEqual(cached)
          expect(yield* cacheWrites(cacheFaults)).toEqual(writes)
          // Rolled back: the rows, and the key locks the writes took, are released.
          expect(yield* Effect.all([userRows.get("1"), accountRows.get("a1")])).toEqual(rows)
          expect(yield* userRows.get("new")).toEqual(Option.none())
          yield* users.set("1", user("1", "v3"))
          expect(valueOf(yield* userRows.get("1"))).toMatchObject({ name: "v3" })
        })
      )
    )
  })

  it.effect(
    "readers outside never see uncommitted writes; inside, the transaction reads its own writes and fills nothing",
    () =>
      withTwo(({ cacheFaults, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          yield* users.set("cached", user("cached", "old"))
          yield* userRows.put("cold", JSON.parse(userPayload("cold", "old")))
          yield* userRows.put("other", JSON.parse(userPayload("other", "untouched")))
          const cachedBefore = yield* rawUser("cached")
          expect(cachedBefore).toMatch(/^v\d+:.*"old"/)
          expect(yield* rawUser("cold")).toBeNull()
          const written = yield* Deferred.make<void>()
          const proceed = yield* Deferred.make<void>()

          const tx = yield* Effect.fork(
            WriteThrough.transaction(
              Effect.gen(function* () {
                yield* users.set("cached", user("cached", "new"))
                yield* users.set("cold", user("cold", "new"))
                yield* users.set("fresh", user("fresh", "new"))
                const setsBefore = yield* cacheWrites(cacheFaults)
                // Its own uncommitted rows, from the store, whatever the cache holds.
                expect(nameOf(yield* users.get("cached"))).toBe("new")
                expect(nameOf(yield* users.get("cold"))).toBe("new")
                expect(nameOf(yield* users.get("fresh"))).toBe("new")
                const many = yield* users.getMany(["cached", "cold", "fresh", "other"])
                expect(many.map(nameOf)).toEqual(["new", "new", "new", "untouched"])
                expect(nameOf(yield* users.getBatched("cached"))).toBe("new")
                // No read inside fills the cache, not even of a key the transaction did not write.
                expect(nameOf(yield* users.get("other"))).toBe("untouched")
                expect(yield* rawUser("cached")).toBe(cachedBefore)
                expect(yield* rawUser("cold")).toBeNull()
                expect(yield* rawUser("fresh")).toBeNull()
                expect(yield* rawUser("other")).toBeNull()
                expect(yield* cacheWrites(cacheFaults)).toEqual(setsBefore)
                yield* Deferred.succeed(written, undefined)
                yield* Deferred.await(proceed)
              })
            )
          )

          // The transaction's fiber failing early (an assertion inside it) ends the test at once.
          yield* Deferred.await(written).pipe(Effect.raceFirst(Fiber.join(tx)))
          // Outside: the committed values, from the cache (a hit) or from Postgres (a miss).
          expect(nameOf(yield* users.get("cached"))).toBe("old")
          expect(nameOf(yield* users.get("cold"))).toBe("old")
          expect(yield* users.get("fresh")).toEqual(Option.none())
          const many = yield* users.getMany(["cached", "cold", "fresh"])
          expect(many.map((got) => Option.map(got, (u) => u.name))).toEqual([
            Option.some("old"),
            Option.some("old"),
            Option.none()
          ])
          expect(yield* rawUser("cached")).toBe(cachedBefore)
          // The miss filled the cache with the committed (old) row, as any read would.
          expect(yield* rawUser("cold")).toMatch(/^v\d+:.*"old"/)

          yield* Deferred.succeed(proceed, undefined)
          yield* Fiber.join(tx)

          for (const key of ["cached", "cold", "fresh"]) {
            const row = rowOf(yield* userRows.get(key))
            expect(yield* rawUser(key)).toBe(`v${row.version}:${userPayload(key, "new")}`)
            expect(nameOf(yield* users.get(key))).toBe("new")
          }
        })
      )
  )

  it.effect("between the COMMIT and the publication, Postgres holds the new rows and the cache the old ones", () =>
    withTwo(({ cacheFaults, rawUser, storeFaults, userRows, users }) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "old"))
        const cachedBefore = yield* rawUser("1")
        const writes = yield* cacheWrites(cacheFaults)
        const committed = yield* storeFaults.pause({ when: "after" }, "commit")
        const tx = yield* Effect.fork(
          WriteThrough.transaction(Effect.zipRight(users.set("1", user("1", "new")), users.set("2", user("2", "new"))))
        )
        yield* committed.reached
        expect(valueOf(yield* userRows.get("1"))).toMatchObject({ name: "new" })
        expect(valueOf(yield* userRows.get("2"))).toMatchObject({ name: "new" })
        expect(yield* rawUser("1")).toBe(cachedBefore)
        expect(yield* rawUser("2")).toBeNull()
        expect(yield* cacheWrites(cacheFaults)).toEqual(writes)
        yield* committed.release
        yield* Fiber.join(tx)
        for (const key of ["1", "2"]) {
          const row = rowOf(yield* userRows.get(key))
          expect(yield* rawUser(key)).toBe(`v${row.version}:${userPayload(key, "new")}`)
        }
      })
    )
  )

  describe("a write of either entity fails inside: nothing of either is committed or published", () => {
    it.effect("a ValidationError on the second entity's write", () =>
      withTwo(({ accountRows, accounts, cacheFaults, rawAccount, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          const cached = yield* rawUser("1")
          const row = yield* userRows.get("1")
          const writes = yield* cacheWrites(cacheFaults)
          const error = yield* Effect.flip(
            WriteThrough.transaction(
              Effect.gen(function* () {
                yield* users.set("1", user("1", "v2"))
                yield* users.set("2", user("2", "v1"))
                yield* accounts.set("a1", { ...account("a1", "ada", 1), balance: 1.5 } as Account)
              })
            )
          )
          expect(error).toBeInstanceOf(WriteThroughError.ValidationError)
          expect(yield* userRows.get("1")).toEqual(row)
          expect(yield* userRows.get("2")).toEqual(Option.none())
          expect(yield* accountRows.get("a1")).toEqual(Option.none())
          expect(yield* rawUser("1")).toBe(cached)
          expect(yield* rawUser("2")).toBeNull()
          expect(yield* rawAccount("a1")).toBeNull()
          expect(yield* cacheWrites(cacheFaults)).toEqual(writes)
        })
      )
    )

    it.effect("a StoreError on the second entity's write", () =>
      withTwo(({ accountRows, accounts, cacheFaults, rawAccount, rawUser, storeFaults, userRows, users }) =>
        Effect.gen(function* () {
          yield* accounts.set("a1", account("a1", "ada", 10))
          const cached = yield* rawAccount("a1")
          const row = yield* accountRows.get("a1")
          const writes = yield* cacheWrites(cacheFaults)
          const error = yield* Effect.flip(
            WriteThrough.transaction(
              Effect.gen(function* () {
                yield* users.set("1", user("1", "v1"))
                yield* storeFaults.failNext(1, "put")
                yield* accounts.set("a1", account("a1", "ada", 20))
              })
            )
          )
          expect(error).toMatchObject({
            _tag: "StoreError",
            reason: "Unavailable",
            key: "a1",
            cause: new InjectedFault({ fault: "refused" })
          })
          expect(yield* userRows.get("1")).toEqual(Option.none())
          expect(yield* accountRows.get("a1")).toEqual(row)
          expect(yield* rawUser("1")).toBeNull()
          expect(yield* rawAccount("a1")).toBe(cached)
          expect(yield* cacheWrites(cacheFaults)).toEqual(writes)
        })
      )
    )

    // Postgres aborts the whole transaction on a refused statement, and then answers COMMIT with a
    // ROLLBACK, without an error. A body that catches the write's StoreError and goes on must not get
    // the other writes published: none of them committed.
    it.effect("Postgres refuses the second write and the body swallows the error: nothing is published", () =>
      withTwo(({ accountRows, accounts, rawAccount, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          yield* accounts.set("a1", account("a1", "ada", 10))
          const cached = yield* Effect.all([rawUser("1"), rawAccount("a1")])
          const rows = yield* Effect.all([userRows.get("1"), accountRows.get("a1")])
          const error = yield* Effect.flip(
            WriteThrough.transaction(
              Effect.gen(function* () {
                yield* users.set("1", user("1", "v2"))
                const refused = yield* Effect.flip(accounts.set("a1", account("a1", "ada", -5)))
                expect(refused).toMatchObject({ _tag: "StoreError", reason: "Rejected", key: "a1" })
              })
            )
          )
          // The caller is not told it committed.
          expect(error).toMatchObject({ _tag: "StoreError", reason: "Transaction", operation: "transaction" })
          // Postgres rolled everything back.
          expect(yield* Effect.all([userRows.get("1"), accountRows.get("a1")])).toEqual(rows)
          // The cache must not serve a write that never committed: neither its value nor its version.
          expect(yield* rawUser("1")).toBe(cached[0])
          expect(yield* rawAccount("a1")).toBe(cached[1])
          expect(nameOf(yield* users.get("1"))).toBe("v1")
        })
      )
    )
  })

  // The same abort, from a statement of the caller's own: the store notices it before COMMIT.
  it.effect("the body's own SQL statement fails and the body swallows the error: nothing is published", () =>
    withTwo(({ rawUser, userRows, users }) =>
      Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        yield* users.set("1", user("1", "v1"))
        const cached = yield* rawUser("1")
        const row = yield* userRows.get("1")
        const error = yield* Effect.flip(
          WriteThrough.transaction(
            Effect.gen(function* () {
              yield* users.set("1", user("1", "v2"))
              yield* Effect.ignore(sql`SELECT 1 / 0`)
            })
          )
        )
        expect(error).toMatchObject({ _tag: "StoreError", reason: "Transaction", operation: "transaction" })
        expect(yield* userRows.get("1")).toEqual(row)
        expect(yield* rawUser("1")).toBe(cached)
      })
    )
  )

  describe("the COMMIT fails: every written key is fenced, an InconsistentCacheError", () => {
    const sorted = (keys: ReadonlyArray<{ readonly entity: string; readonly key: string }> | undefined) =>
      [...(keys ?? [])].map(({ entity, key }) => `${entity}/${key}`).sort()

    for (const committed of [true, false]) {
      it.effect(`the connection is lost at the COMMIT, ${committed ? "after" : "before"} it committed`, () =>
        withTwo(
          ({ accountRows, accounts, count, rawAccount, rawUser, storeFaults, userRows, users }) =>
            Effect.gen(function* () {
              yield* users.set("1", user("1", "v1"))
              yield* accounts.set("a1", account("a1", "ada", 10))
              const before = yield* Effect.all([userRows.get("1"), accountRows.get("a1")])
              yield* storeFaults.loseConnectionOnCommit({ committed }, "commit")

              const error = yield* Effect.flip(
                WriteThrough.transaction(
                  Effect.gen(function* () {
                    yield* users.set("1", user("1", "v2"))
                    yield* accounts.set("a1", account("a1", "ada", 20))
                    yield* users.set("n", user("n", "v1"))
                  })
                )
              )

              expect(error).toBeInstanceOf(WriteThroughError.InconsistentCacheError)
              if (error._tag !== "InconsistentCacheError") return
              expect(error).toMatchObject({
                operation: "transaction",
                invalidated: true,
                entity: users.entity,
                key: "1"
              })
              expect(sorted(error.keys)).toEqual(
                sorted([
                  { entity: users.entity, key: "1" },
                  { entity: users.entity, key: "n" },
                  { entity: accounts.entity, key: "a1" }
                ])
              )
              expect(error.message).toContain("3 key(s)")
              expect(yield* rawUser("1")).toBe(fence)
              expect(yield* rawUser("n")).toBe(fence)
              expect(yield* rawAccount("a1")).toBe(fence)
              expect(yield* count(Metrics.inconsistentWrites, "users")).toBe(2)
              expect(yield* count(Metrics.inconsistentWrites, "accounts")).toBe(1)

              if (committed) {
                expect(valueOf(yield* userRows.get("1"))).toMatchObject({ name: "v2" })
                expect(valueOf(yield* userRows.get("n"))).toMatchObject({ name: "v1" })
                expect(valueOf(yield* accountRows.get("a1"))).toMatchObject({ balance: 20 })
              } else {
                expect(yield* Effect.all([userRows.get("1"), accountRows.get("a1")])).toEqual(before)
                expect(yield* userRows.get("n")).toEqual(Option.none())
              }
              // Reads go past the fence to Postgres, which decided; the fence outranks every version,
              // so the fill is refused and the key stays fenced: the next read asks Postgres again.
              const getsBefore = yield* storeFaults.calls("get")
              expect(nameOf(yield* users.get("1"))).toBe(committed ? "v2" : "v1")
              expect(Option.map(yield* users.get("n"), (u) => u.name)).toEqual(
                committed ? Option.some("v1") : Option.none()
              )
              expect(Option.getOrThrow(yield* accounts.get("a1")).balance).toBe(committed ? 20 : 10)
              expect(yield* rawUser("1")).toBe(fence)
              expect(yield* rawAccount("a1")).toBe(fence)
              expect(nameOf(yield* users.get("1"))).toBe(committed ? "v2" : "v1")
              expect(yield* storeFaults.calls("get")).toBe(getsBefore + 4)
            }),
          // A read after a miss waits for no lease holder but itself: keep the lease out of the counts.
          { lease: false }
        )
      )
    }

    it.effect("the caller is interrupted while the COMMIT is in flight: every written key is fenced", () =>
      withTwo(({ accountRows, accounts, rawAccount, rawUser, storeFaults, userRows, users }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          const committed = yield* storeFaults.pause({ when: "after" }, "commit")
          const tx = yield* Effect.fork(
            WriteThrough.transaction(
              Effect.zipRight(users.set("1", user("1", "v2")), accounts.set("a1", account("a1", "ada", 20)))
            )
          )
          yield* committed.reached
          yield* Fiber.interrupt(tx)
          expect(yield* rawUser("1")).toBe(fence)
          expect(yield* rawAccount("a1")).toBe(fence)
          expect(valueOf(yield* userRows.get("1"))).toMatchObject({ name: "v2" })
          expect(valueOf(yield* accountRows.get("a1"))).toMatchObject({ balance: 20 })
          expect(nameOf(yield* users.get("1"))).toBe("v2")
        })
      )
    )

    // Ends the transaction's own backend (found from inside it), from the admin pool outside it, and
    // waits until it is gone: the transaction's next statement or its COMMIT meets a dead connection.
    const terminateOwnBackend = (sql: SqlClient.SqlClient, admin: SqlClient.SqlClient) =>
      Effect.gen(function* () {
        const [[pid]] = yield* sql.unsafe("SELECT pg_backend_pid()").values
        // Outside the transaction: its connection tag must not leak to the admin client.
        yield* admin.unsafe("SELECT pg_terminate_backend($1)", [pid]).values.pipe(
          Effect.zipRight(
            admin.unsafe("SELECT count(*)::int FROM pg_stat_activity WHERE pid = $1", [pid]).values.pipe(
              Effect.filterOrFail((rows) => rows[0]![0] === 0),
              Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.intersect(Schedule.recurs(500))))
            )
          ),
          Effect.mapInputContext((context: Context.Context<never>) =>
            Context.omit(SqlClient.TransactionConnection)(context)
          ),
          Effect.orDie
        )
      })

    // After a backend was killed a pooled connection may still be the dead one: one retry, on Unavailable only.
    const recovered = <A, E extends { readonly _tag: string }>(read: Effect.Effect<A, E>) =>
      read.pipe(
        Effect.retry({
          times: 1,
          while: (error) => error._tag === "StoreError" && (error as { reason?: string }).reason === "Unavailable"
        })
      )

    // Found before COMMIT: the check the store makes there fails on the dead connection, so the
    // outcome is known (rolled back) and nothing needs fencing.
    it.live(
      "the transaction's backend is really terminated before the COMMIT: rolled back, a StoreError, cache untouched",
      () =>
        withTwo(({ accountRows, accounts, rawAccount, rawUser, userRows, users }) =>
          Effect.gen(function* () {
            const sql = yield* SqlClient.SqlClient
            const admin = yield* adminClient
            yield* users.set("1", user("1", "v1"))
            yield* accounts.set("a1", account("a1", "ada", 10))
            const before = yield* Effect.all([userRows.get("1"), accountRows.get("a1")])
            const cached = yield* Effect.all([rawUser("1"), rawAccount("a1")])

            const error = yield* Effect.flip(
              WriteThrough.transaction(
                Effect.gen(function* () {
                  yield* users.set("1", user("1", "v2"))
                  yield* accounts.set("a1", account("a1", "ada", 20))
                  yield* terminateOwnBackend(sql, admin)
                })
              )
            )

            expect(error._tag).toBe("StoreError")
            expect(error).toMatchObject({ reason: "Transaction", operation: "transaction" })
            expect(yield* Effect.all([rawUser("1"), rawAccount("a1")])).toEqual(cached)
            // The backend died before COMMIT: Postgres rolled the transaction back.
            expect(yield* recovered(Effect.all([userRows.get("1"), accountRows.get("a1")]))).toEqual(before)
            expect(nameOf(yield* recovered(users.get("1")))).toBe("v1")
            expect(Option.getOrThrow(yield* recovered(accounts.get("a1"))).balance).toBe(10)
          })
        )
    )

    // The body fails on the dead connection: @effect/sql's ROLLBACK then fails too, and dies; the
    // body's typed error is what the caller must see, since nothing committed.
    it.live("the body fails because its backend was terminated: the body's StoreError, not a defect", () =>
      withTwo(({ accountRows, accounts, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const admin = yield* adminClient
          yield* users.set("1", user("1", "v1"))
          const before = yield* userRows.get("1")
          const cached = yield* rawUser("1")
          const exit = yield* Effect.exit(
            WriteThrough.transaction(
              Effect.gen(function* () {
                yield* users.set("1", user("1", "v2"))
                yield* terminateOwnBackend(sql, admin)
                yield* accounts.set("a1", account("a1", "ada", 20))
              })
            )
          )
          expect(Exit.isFailure(exit) && Option.isSome(Cause.failureOption(exit.cause))).toBe(true)
          if (Exit.isFailure(exit)) {
            expect(Option.getOrThrow(Cause.failureOption(exit.cause))).toMatchObject({ _tag: "StoreError", key: "a1" })
          }
          expect(yield* rawUser("1")).toBe(cached)
          expect(yield* recovered(userRows.get("1"))).toEqual(before)
          expect(yield* recovered(accountRows.get("a1"))).toEqual(Option.none())
        })
      )
    )
  })

  describe("nesting", () => {
    it.effect("a nested WriteThrough.transaction joins the outer one: published only after the outer COMMIT", () =>
      withTwo(({ accountRows, accounts, rawAccount, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const session = sql
            .unsafe("SELECT pg_backend_pid()::text || '/' || txid_current()::text")
            .values.pipe(Effect.map((rows) => String(rows[0]![0])))
          yield* WriteThrough.transaction(
            Effect.gen(function* () {
              const outer = yield* session
              yield* users.set("1", user("1", "outer"))
              const inner = yield* WriteThrough.transaction(
                Effect.gen(function* () {
                  yield* accounts.set("a1", account("a1", "ada", 5))
                  yield* users.set("2", user("2", "inner"))
                  return yield* session
                })
              )
              // Same connection, same transaction: no second BEGIN, no savepoint of its own.
              expect(inner).toBe(outer)
              // The inner block ended, but nothing is committed yet, so nothing is published.
              expect(yield* rawUser("2")).toBeNull()
              expect(yield* rawAccount("a1")).toBeNull()
              yield* users.set("3", user("3", "outer"))
            })
          )
          for (const key of ["1", "2", "3"]) {
            const row = rowOf(yield* userRows.get(key))
            expect(yield* rawUser(key)).toBe(`v${row.version}:${userPayload(key, key === "2" ? "inner" : "outer")}`)
          }
          const a1 = rowOf(yield* accountRows.get("a1"))
          expect(yield* rawAccount("a1")).toBe(`v${a1.version}:${accountPayload("a1", "ada", 5)}`)
        })
      )
    )

    it.effect("the outer body fails after the nested block: the nested writes roll back too", () =>
      withTwo(({ accountRows, accounts, cacheFaults, rawAccount, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          yield* users.set("2", user("2", "v1"))
          const cached = yield* rawUser("2")
          const row = yield* userRows.get("2")
          const writes = yield* cacheWrites(cacheFaults)
          const error = yield* Effect.flip(
            WriteThrough.transaction(
              Effect.gen(function* () {
                yield* WriteThrough.transaction(
                  Effect.zipRight(accounts.set("a1", account("a1", "ada", 5)), users.set("2", user("2", "inner")))
                )
                return yield* Effect.fail("boom" as const)
              })
            )
          )
          expect(error).toBe("boom")
          expect(yield* userRows.get("2")).toEqual(row)
          expect(yield* accountRows.get("a1")).toEqual(Option.none())
          expect(yield* rawUser("2")).toBe(cached)
          expect(yield* rawAccount("a1")).toBeNull()
          expect(yield* cacheWrites(cacheFaults)).toEqual(writes)
        })
      )
    )
  })

  describe("inside a bare sql.withTransaction", () => {
    it.effect("WriteThrough.transaction cannot begin: a StoreError Transaction, nothing written", () =>
      withTwo(({ cacheFaults, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const writes = yield* cacheWrites(cacheFaults)
          const error = yield* Effect.flip(
            sql.withTransaction(WriteThrough.transaction(users.set("1", user("1", "v1"))))
          )
          expect(error).toMatchObject({ _tag: "StoreError", reason: "Transaction", operation: "transaction" })
          expect(yield* userRows.get("1")).toEqual(Option.none())
          expect(yield* rawUser("1")).toBeNull()
          expect(yield* cacheWrites(cacheFaults)).toEqual(writes)
        })
      )
    )

    it.effect("a write-through in a bare sql.withTransaction is still refused", () =>
      withTwo(({ rawUser, userRows, users }) =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const error = yield* Effect.flip(sql.withTransaction(users.set("1", user("1", "v1"))))
          expect(error).toMatchObject({ _tag: "StoreError", reason: "Transaction", key: "1" })
          expect(yield* userRows.get("1")).toEqual(Option.none())
          expect(yield* rawUser("1")).toBeNull()
        })
      )
    )

    // A read there runs on the transaction's connection and may see what it has not committed.
    it.effect("a read in a bare sql.withTransaction neither fills the cache nor is shared with readers outside", () =>
      withTwo(({ rawUser, userRows, users }) =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          yield* userRows.put("1", { id: "1", name: "committed", email: "1@example.com" })
          const table = (yield* users.audit()).entity
          const inside = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const tx = yield* Effect.fork(
            Effect.either(
              sql.withTransaction(
                Effect.gen(function* () {
                  yield* sql.unsafe(`UPDATE "${table}" SET name = 'uncommitted' WHERE id = '1'`).raw
                  // The transaction's own view, from the store: and the cache is left alone.
                  expect(nameOf(yield* users.get("1"))).toBe("uncommitted")
                  expect(yield* users.getMany(["1"])).toEqual([
                    Option.some(expect.objectContaining({ name: "uncommitted" }))
                  ])
                  expect(yield* rawUser("1")).toBeNull()
                  yield* Deferred.succeed(inside, undefined)
                  yield* Deferred.await(release)
                  return yield* Effect.fail("roll back")
                })
              )
            )
          )
          yield* Deferred.await(inside)
          // A reader outside, meanwhile: the committed row, and it fills the cache with it.
          expect(nameOf(yield* users.get("1"))).toBe("committed")
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.join(tx)
          expect(yield* rawUser("1")).toMatch(/"name":"committed"/)
          expect(nameOf(yield* users.get("1"))).toBe("committed")
        })
      )
    )

    it.effect("a write in a savepoint (sql.withTransaction inside the combinator) is refused", () =>
      withTwo(({ cacheFaults, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          const sql = yield* SqlClient.SqlClient
          const writes = yield* cacheWrites(cacheFaults)
          const error = yield* Effect.flip(
            WriteThrough.transaction(
              Effect.zipRight(
                users.set("1", user("1", "v1")),
                sql.withTransaction(users.set("2", user("2", "in a savepoint")))
              )
            )
          )
          expect(error).toMatchObject({ _tag: "StoreError", reason: "Transaction", key: "2" })
          expect(yield* userRows.get("1")).toEqual(Option.none())
          expect(yield* userRows.get("2")).toEqual(Option.none())
          expect(yield* rawUser("1")).toBeNull()
          expect(yield* cacheWrites(cacheFaults)).toEqual(writes)
        })
      )
    )
  })

  // The publication runs after the COMMIT where the caller cannot interrupt it: a hung cache must
  // still be bounded by cacheTimeout there.
  it.live("a hung cache after the COMMIT is bounded: a StaleCacheError, not a hang", () =>
    withTwo(
      ({ cacheFaults, userRows, users }) =>
        Effect.gen(function* () {
          yield* cacheFaults.hang("set", "invalidate")
          const error = yield* Effect.flip(WriteThrough.transaction(users.set("1", user("1", "v1"))))
          expect(error).toMatchObject({ _tag: "StaleCacheError", key: "1" })
          expect(Option.getOrThrow(yield* userRows.get("1")).value).toMatchObject({ name: "v1" })
        }),
      { cacheTimeout: "100 millis", retry: Schedule.recurs(1) }
    )
  )

  describe("publishing after the COMMIT fails", () => {
    it.effect("update and invalidation both fail: StaleCacheError for the first key, after every key was tried", () =>
      withTwo(({ accountRows, accounts, cacheFaults, count, rawAccount, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          const cached = yield* rawUser("1")
          yield* cacheFaults.failAlways("set", "invalidate")
          const writes = yield* cacheWrites(cacheFaults)
          const error = yield* Effect.flip(
            driveClock(
              WriteThrough.transaction(
                Effect.zipRight(users.set("1", user("1", "v2")), accounts.set("a1", account("a1", "ada", 5)))
              )
            )
          )
          const row = rowOf(yield* userRows.get("1"))
          expect(row.value).toMatchObject({ name: "v2" })
          expect(valueOf(yield* accountRows.get("a1"))).toMatchObject({ balance: 5 })
          expect(error).toBeInstanceOf(WriteThroughError.StaleCacheError)
          expect(error).toMatchObject({ entity: users.entity, key: "1", operation: "set", version: row.version })
          // Both keys went through the default schedule (a try and three retries), update then invalidation.
          const after = yield* cacheWrites(cacheFaults)
          expect(after.set - writes.set).toBe(8)
          expect(after.invalidate - writes.invalidate).toBe(8)
          expect(yield* count(Metrics.staleWrites, "users")).toBe(1)
          expect(yield* count(Metrics.staleWrites, "accounts")).toBe(1)
          expect(yield* rawUser("1")).toBe(cached)
          expect(yield* rawAccount("a1")).toBeNull()
        })
      )
    )

    it.effect("the update fails but the invalidation lands: tombstones at the committed versions, no error", () =>
      withTwo(({ accountRows, accounts, cacheFaults, rawAccount, rawUser, userRows, users }) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "v1"))
          yield* cacheFaults.failAlways("set")
          yield* driveClock(
            WriteThrough.transaction(
              Effect.zipRight(users.set("1", user("1", "v2")), accounts.set("a1", account("a1", "ada", 5)))
            )
          )
          expect(yield* rawUser("1")).toBe(`t${rowOf(yield* userRows.get("1")).version}:`)
          expect(yield* rawAccount("a1")).toBe(`t${rowOf(yield* accountRows.get("a1")).version}:`)
          yield* cacheFaults.heal
          expect(nameOf(yield* users.get("1"))).toBe("v2")
        })
      )
    )
  })
})

describe("WriteThrough.transaction on MemoryCache and MemoryStore", () => {
  const withMemory = <A, E>(
    body: (
      users: WriteThrough.WriteThrough<string, User>,
      rows: Store.Store.Collection,
      cached: (key: string) => Effect.Effect<Option.Option<Cache.Entry>, Cache.CacheError>
    ) => Effect.Effect<A, E, Scope.Scope | Store.Store>
  ) =>
    Effect.gen(function* () {
      const entity = unique("users")
      const table = { name: entity, primaryKey: "id" }
      const users = yield* WriteThrough.make({ entity, key: Schema.String, value: User, table })
      const rows = yield* Effect.flatMap(Store.Store, (store) =>
        store.collection({ entity, fields: ["id", "name", "email"], table })
      )
      const cache = yield* Cache.Cache
      return yield* body(users, rows, (key) => cache.get(`${entity}:${key}`))
    }).pipe(Effect.scoped, Effect.provide(Layer.merge(MemoryCache.layer(), MemoryStore.layer)))

  it.effect("the COMMIT applies every write to the store and then the cache", () =>
    withMemory((users, rows, cached) =>
      Effect.gen(function* () {
        yield* users.set("gone", user("gone", "v1"))
        yield* WriteThrough.transaction(
          Effect.gen(function* () {
            yield* users.set("1", user("1", "v1"))
            yield* users.delete("gone")
            // Staged: outside the transaction's reads nothing changed yet, and nothing is cached.
            expect(Option.isNone(yield* cached("1"))).toBe(true)
            expect(nameOf(yield* users.get("1"))).toBe("v1")
            expect(yield* users.get("gone")).toEqual(Option.none())
          })
        )
        const one = rowOf(yield* rows.get("1"))
        expect(yield* cached("1")).toEqual(
          Option.some(Cache.Entry.Value({ version: one.version, payload: userPayload("1", "v1") }))
        )
        expect(yield* rows.get("gone")).toEqual(Option.none())
        const tombstone = Option.getOrThrow(yield* cached("gone"))
        expect(tombstone._tag).toBe("Tombstone")
        expect(tombstone.version).toBeGreaterThan(one.version)
        expect(yield* users.get("gone")).toEqual(Option.none())
      })
    )
  )

  it.effect("the body fails: the store and the cache are untouched", () =>
    withMemory((users, rows, cached) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        const before = yield* Effect.all([rows.get("1"), cached("1")])
        const error = yield* Effect.flip(
          WriteThrough.transaction(
            Effect.gen(function* () {
              yield* users.set("1", user("1", "v2"))
              yield* users.set("2", user("2", "v1"))
              return yield* Effect.fail("boom" as const)
            })
          )
        )
        expect(error).toBe("boom")
        expect(yield* Effect.all([rows.get("1"), cached("1")])).toEqual(before)
        expect(yield* rows.get("2")).toEqual(Option.none())
        expect(yield* cached("2")).toEqual(Option.none())
        expect(nameOf(yield* users.get("1"))).toBe("v1")
      })
    )
  )

  it.effect("a write from another fiber waits for the transaction to end; reads do not, and see committed rows", () =>
    withMemory((users, rows, cached) =>
      Effect.gen(function* () {
        yield* users.set("1", user("1", "v1"))
        const written = yield* Deferred.make<void>()
        const proceed = yield* Deferred.make<void>()
        const tx = yield* Effect.fork(
          WriteThrough.transaction(
            Effect.gen(function* () {
              yield* users.set("1", user("1", "in tx"))
              yield* Deferred.succeed(written, undefined)
              yield* Deferred.await(proceed)
            })
          )
        )
        yield* Deferred.await(written).pipe(Effect.raceFirst(Fiber.join(tx)))
        const writer = yield* Effect.fork(users.set("1", user("1", "after tx")))
        for (let i = 0; i < 100; i++) yield* Effect.yieldNow()
        expect(Option.isNone(yield* Fiber.poll(writer))).toBe(true)
        expect(nameOf(yield* users.get("1"))).toBe("v1")
        expect(valueOf(yield* rows.get("1"))).toMatchObject({ name: "v1" })

        yield* Deferred.succeed(proceed, undefined)
        yield* Fiber.join(tx)
        yield* Fiber.join(writer)
        // The writer drew its version after the transaction committed: its value is the last.
        const row = rowOf(yield* rows.get("1"))
        expect(row.value).toMatchObject({ name: "after tx" })
        expect(yield* cached("1")).toEqual(
          Option.some(Cache.Entry.Value({ version: row.version, payload: userPayload("1", "after tx") }))
        )
        expect(nameOf(yield* users.get("1"))).toBe("after tx")
      })
    )
  )
})

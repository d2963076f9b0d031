// The write-through contract, run once per (cache, store) pair: what users can rely on whatever layers they pick.
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, type Layer, Option, Schema } from "effect"
import type * as Scope from "effect/Scope"
import { Cache, Store, WriteThrough } from "../../src/index.js"
import { User } from "../support/fixtures.js"

export interface Fixture<R> {
  /** Fresh cache and store (and what the table needs) for one test. */
  readonly layer: () => Layer.Layer<Cache.Cache | Store.Store | R, unknown>
  /** Where the test's entity lives: a table created for the test (the in-memory store only uses its name). */
  readonly table: Effect.Effect<Store.Table, unknown, Scope.Scope | R>
}

const user = (id: string, name = `name ${id}`) => new User({ id, name, email: `${id.length}@example.com` })

export const hostileKeys = [
  "'; drop table users; --",
  "user:*",
  "a\r\nSET x y",
  'quote " and \\ backslash',
  "ünïcødé ✓ 🎉",
  "user",
  "user:"
]

export const writeThroughContract = <R>(name: string, fixture: Fixture<R>) =>
  describe(name, () => {
    const withUsers = <A, E>(
      body: (
        users: WriteThrough.WriteThrough<string, User>,
        collection: Store.Store.Collection
      ) => Effect.Effect<A, E, Cache.Cache | Store.Store | Scope.Scope | R>
    ) =>
      Effect.gen(function* () {
        const table = yield* fixture.table
        const users = yield* WriteThrough.make({ entity: table.name, key: Schema.String, value: User, table })
        const store = yield* Store.Store
        const collection = yield* store.collection({ entity: table.name, fields: ["id", "name", "email"], table })
        return yield* body(users, collection)
      }).pipe(Effect.scoped, Effect.provide(fixture.layer()))

    it.effect("set then get returns the value", () =>
      withUsers((users) =>
        Effect.gen(function* () {
          yield* users.set("42", user("42", "Ada"))
          const got = yield* users.get("42")
          expect(Option.getOrThrow(got)).toEqual(user("42", "Ada"))
          expect(Option.getOrThrow(got)).toBeInstanceOf(User)
        })
      )
    )

    describe("setMany", () => {
      it.effect("writes every entry to the store and the cache; the last value of a repeated key wins", () =>
        withUsers((users, collection) =>
          Effect.gen(function* () {
            const keys = [...Array.from({ length: 50 }, (_, i) => `k${i}`), ...hostileKeys]
            yield* users.setMany([
              ...keys.map((key) => [key, user(key, `first ${key}`)] as const),
              ["k7", user("k7", "last")]
            ])
            for (const key of keys) {
              const row = Option.getOrThrow(yield* collection.get(key))
              expect(row.value).toMatchObject({ name: key === "k7" ? "last" : `first ${key}` })
            }
            // Served by the cache: a change behind the library's back is not seen.
            yield* collection.put("k3", { id: "k3", name: "behind its back", email: "2@example.com" })
            expect(Option.getOrThrow(yield* users.get("k3")).name).toBe("first k3")
            expect(Option.getOrThrow(yield* users.get("k7")).name).toBe("last")
            // A later set of one key is a later version, and wins.
            yield* users.set("k3", user("k3", "set after"))
            expect(Option.getOrThrow(yield* users.get("k3")).name).toBe("set after")
          })
        )
      )

      it.effect("one invalid entry refuses the whole batch before anything is written", () =>
        withUsers((users, collection) =>
          Effect.gen(function* () {
            const error = yield* Effect.flip(
              users.setMany([
                ["a", user("a")],
                ["b", { ...user("b"), email: "not an email" } as User]
              ])
            )
            expect(error).toMatchObject({ _tag: "ValidationError", field: "value" })
            expect(yield* collection.get("a")).toEqual(Option.none())
            expect(yield* users.get("a")).toEqual(Option.none())
            expect((yield* Effect.flip(users.setMany([["", user("x")]])))._tag).toBe("ValidationError")
          })
        )
      )

      it.effect("a batch over maxBatchSize (default 500) is refused before anything is written", () =>
        withUsers((users, collection) =>
          Effect.gen(function* () {
            const entries = Array.from({ length: 501 }, (_, i) => [`k${i}`, user(`k${i}`)] as const)
            const error = yield* Effect.flip(users.setMany(entries))
            expect(error).toMatchObject({ _tag: "ValidationError" })
            expect(error.message).toContain("maxBatchSize")
            expect(yield* collection.get("k0")).toEqual(Option.none())
            yield* users.setMany(entries.slice(0, 500))
            expect(Option.isSome(yield* collection.get("k499"))).toBe(true)
          })
        )
      )

      it.effect("an empty batch writes nothing", () =>
        withUsers((users) =>
          Effect.gen(function* () {
            yield* users.setMany([])
            expect(yield* users.get("a")).toEqual(Option.none())
          })
        )
      )
    })

    it.effect("getMany answers in the keys' order from both tiers, fills the misses, and refuses a bad key", () =>
      withUsers((users, collection) =>
        Effect.gen(function* () {
          yield* users.set("cached", user("cached", "from the cache"))
          yield* collection.put("stored", { id: "stored", name: "from the store", email: "6@example.com" })
          const names = (yield* users.getMany(["stored", "absent", "cached", "stored"])).map((got) =>
            Option.map(got, (u) => u.name)
          )
          expect(names).toEqual([
            Option.some("from the store"),
            Option.none(),
            Option.some("from the cache"),
            Option.some("from the store")
          ])
          // The miss was filled: a change behind the library's back is not seen.
          yield* collection.put("stored", { id: "stored", name: "changed behind its back", email: "6@example.com" })
          expect(Option.getOrThrow(yield* users.get("stored")).name).toBe("from the store")
          expect(yield* users.getMany([])).toEqual([])
          const error = yield* Effect.flip(users.getMany(["cached", ""]))
          expect(error).toMatchObject({ _tag: "ValidationError", field: "key" })
        })
      )
    )

    it.effect("getBatched under a batching forEach answers like get", () =>
      withUsers((users) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "one"))
          yield* users.set("2", user("2", "two"))
          const got = yield* Effect.forEach(["1", "absent", "2"], users.getBatched, { batching: true })
          expect(got.map((u) => Option.map(u, (x) => x.name))).toEqual([
            Option.some("one"),
            Option.none(),
            Option.some("two")
          ])
          const bad = yield* Effect.flip(Effect.forEach(["1", ""], users.getBatched, { batching: true }))
          expect(bad).toMatchObject({ _tag: "ValidationError", field: "key" })
        })
      )
    )

    it.effect("the audit of a cache written only through the library finds every value consistent", () =>
      withUsers((users) =>
        Effect.gen(function* () {
          for (const key of hostileKeys) yield* users.set(key, user(key))
          yield* users.delete("user:*")
          const report = yield* users.audit()
          expect(report).toMatchObject({ values: hostileKeys.length - 1, stale: 0, ahead: 0, nines: Infinity })
          expect(report.consistent).toBe(hostileKeys.length - 1)
        })
      )
    )

    it.effect("get of a key absent from both tiers is None", () =>
      withUsers((users, collection) =>
        Effect.gen(function* () {
          expect(yield* users.get("nobody")).toEqual(Option.none())
          expect(yield* collection.get("nobody")).toEqual(Option.none())
        })
      )
    )

    it.effect("the store holds every acknowledged write, and a later write replaces an earlier one", () =>
      withUsers((users, collection) =>
        Effect.gen(function* () {
          yield* users.set("1", user("1", "first"))
          yield* users.set("1", user("1", "second"))
          expect(Option.getOrThrow(yield* users.get("1")).name).toBe("second")
          expect(Option.getOrThrow(yield* collection.get("1")).value).toMatchObject({ name: "second" })
        })
      )
    )

    it.effect("a miss reads the store and fills the cache", () =>
      withUsers((users, collection) =>
        Effect.gen(function* () {
          yield* collection.put("7", { id: "7", name: "from the store", email: "7@example.com" })
          expect(Option.getOrThrow(yield* users.get("7")).name).toBe("from the store")
          // Written behind the library's back: a filled cache keeps serving what it filled.
          yield* collection.put("7", { id: "7", name: "changed behind its back", email: "7@example.com" })
          expect(Option.getOrThrow(yield* users.get("7")).name).toBe("from the store")
        })
      )
    )

    it.effect("delete removes the value from both tiers; deleting an absent key succeeds", () =>
      withUsers((users, collection) =>
        Effect.gen(function* () {
          yield* users.set("9", user("9"))
          expect(Option.isSome(yield* users.get("9"))).toBe(true)
          yield* users.delete("9")
          expect(yield* users.get("9")).toEqual(Option.none())
          expect(yield* collection.get("9")).toEqual(Option.none())
          yield* users.delete("never-there")
          yield* users.set("9", user("9", "back"))
          expect(Option.getOrThrow(yield* users.get("9")).name).toBe("back")
        })
      )
    )

    it.effect("a value that fails its schema is refused with a ValidationError and nothing is written", () =>
      withUsers((users, collection) =>
        Effect.gen(function* () {
          const bad = yield* Effect.flip(users.set("5", { ...user("5"), email: "not an email" } as User))
          expect(bad._tag).toBe("ValidationError")
          expect(bad).toMatchObject({ field: "value", key: '"5"' })
          const wrongShape = yield* Effect.flip(users.set("5", { id: "5", name: 42 } as unknown as User))
          expect(wrongShape._tag).toBe("ValidationError")
          expect(yield* collection.get("5")).toEqual(Option.none())
          expect(yield* users.get("5")).toEqual(Option.none())
        })
      )
    )

    describe("a value the store cannot hold as given is refused before any I/O", () => {
      // PostgreSQL's text cannot hold a NUL; a lone surrogate has no UTF-8 form and would be stored as U+FFFD.
      const unstorable = [
        ["a lone surrogate", "a\ud800b", "name holds an unpaired surrogate"],
        ["a trailing lone surrogate", "ab\udc00", "name holds an unpaired surrogate"],
        ["a NUL character", "a\u0000b", "name holds a NUL character"]
      ] as const
      for (const [label, name, detail] of unstorable) {
        it.effect(`${label}: in set, setMany and a transaction, with nothing written`, () =>
          withUsers((users, collection) =>
            Effect.gen(function* () {
              const bad = { ...user("7"), name } as User
              const refusals = [
                yield* Effect.flip(users.set("7", bad)),
                yield* Effect.flip(
                  users.setMany([
                    ["6", user("6")],
                    ["7", bad]
                  ])
                ),
                yield* Effect.flip(
                  WriteThrough.transaction(Effect.zipRight(users.set("6", user("6")), users.set("7", bad)))
                )
              ]
              for (const error of refusals) {
                expect(error).toMatchObject({ _tag: "ValidationError", field: "value", key: '"7"' })
                expect(error.message).toContain(detail)
              }
              for (const key of ["6", "7"]) {
                expect(yield* collection.get(key)).toEqual(Option.none())
                expect(yield* users.get(key)).toEqual(Option.none())
              }
              // A well-formed pair and other non-ASCII text are not refused.
              yield* users.set("7", user("7", "a\ud83c\udf89b ünï"))
              expect(Option.getOrThrow(yield* users.get("7")).name).toBe("a\ud83c\udf89b ünï")
              expect(Option.map(yield* collection.get("7"), (row) => row.value)).toEqual(
                Option.some({ id: "7", name: "a\ud83c\udf89b ünï", email: "1@example.com" })
              )
            })
          )
        )
      }
    })

    it.effect("a value whose primary key field disagrees with the key is refused before any write", () =>
      withUsers((users, collection) =>
        Effect.gen(function* () {
          const error = yield* Effect.flip(users.set("1", user("2")))
          expect(error).toMatchObject({ _tag: "ValidationError", field: "value" })
          expect(yield* collection.get("1")).toEqual(Option.none())
          expect(yield* collection.get("2")).toEqual(Option.none())
        })
      )
    )

    it.effect("hostile keys round-trip and stay distinct", () =>
      withUsers((users, collection) =>
        Effect.gen(function* () {
          for (const key of hostileKeys) yield* users.set(key, user(key, `value of ${key}`))
          for (const key of hostileKeys) {
            expect(Option.getOrThrow(yield* users.get(key)).name).toBe(`value of ${key}`)
            expect(Option.getOrThrow(yield* collection.get(key)).value).toMatchObject({ id: key })
          }
          yield* users.delete("user:*")
          expect(yield* users.get("user:*")).toEqual(Option.none())
          expect(Option.isSome(yield* users.get("user:"))).toBe(true)
        })
      )
    )

    it.effect("keys that cannot be stored faithfully are refused before any I/O", () =>
      withUsers((users) =>
        Effect.gen(function* () {
          const huge = "ü🎉".repeat(2000) // about 12 KB of UTF-8
          for (const key of [huge, "", "nul\u0000byte", "lone \ud800 surrogate"]) {
            const error = yield* Effect.flip(users.set(key, user(key)))
            expect(error).toMatchObject({ _tag: "ValidationError", field: "key" })
            expect(yield* Effect.flip(users.get(key))).toMatchObject({ _tag: "ValidationError", field: "key" })
          }
        })
      )
    )

    it.effect("large unicode values round-trip exactly", () =>
      withUsers((users) =>
        Effect.gen(function* () {
          const name = "Ωμέγα 🎉 \"quoted\" 'single' \\ \r\n * ".repeat(300) // about 10 KB
          yield* users.set("big", new User({ id: "big", name, email: "big@example.com" }))
          expect(Option.getOrThrow(yield* users.get("big")).name).toBe(name)
        })
      )
    )

    it.effect("concurrent writes to one key leave the cache holding the store's final value", () =>
      withUsers((users, collection) =>
        Effect.gen(function* () {
          const results = yield* Effect.forEach(
            Array.from({ length: 24 }, (_, i) => i),
            (i) => Effect.either(users.set("hot", user("hot", `writer ${i}`))),
            { concurrency: "unbounded" }
          )
          expect(results.filter(Either.isLeft)).toEqual([])
          const stored = Option.getOrThrow(yield* collection.get("hot")).value as { name: string }
          expect(Option.getOrThrow(yield* users.get("hot")).name).toBe(stored.name)
        })
      )
    )
  })

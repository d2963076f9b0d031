// The semantics every Store implementation must share, run once per implementation (and per SQL mode).
import { describe, expect, it } from "@effect/vitest"
import { Array as Arr, Effect, type Layer, Option } from "effect"
import type * as Scope from "effect/Scope"
import { Store } from "../../src/index.js"

/** The value fields every contract entity has: the `users(id, name, email)` shape. */
export const userFields: ReadonlyArray<string> = ["id", "name", "email"]

/** An encoded user whose `id` is its key, so it reads back identically from a table or from JSON. */
export const user = (key: string, name: string, email = "someone@example.com") => ({ id: key, name, email })

export interface StoreSubject<R> {
  /** A fresh store (and whatever it needs) for one test; called once per test. */
  readonly layer: () => Layer.Layer<Store.Store | R, unknown>
  /**
   * The storage for one fresh entity with the fields `id`, `name`, `email`: a table
   * created for it, or a unique entity name. Released when the test's scope closes.
   */
  readonly target: Effect.Effect<Store.Target, unknown, Scope.Scope | R>
  /**
   * How many rows the storage behind `target` holds, read behind the store's back.
   * Fails if the storage is gone (a dropped table). Absent for stores without such storage.
   */
  readonly countRows?: ((target: Store.Target) => Effect.Effect<number, unknown, R>) | undefined
}

export const hostileKeys: ReadonlyArray<string> = [
  "'; drop table users; --",
  "user:*",
  "user:",
  "user",
  "a\r\nSET x y",
  `quotes "double" 'single' \`back\` \\ backslash`,
  "%_ like wildcards",
  "",
  // ~900 bytes of UTF-8: two-, three- and four-byte characters.
  "ключ-鍵-🔑".repeat(60)
]

export const hostileValues: ReadonlyArray<string> = [
  "'); DELETE FROM users; --",
  "*",
  "a\r\nSET x y\r\n*3\r\n$3\r\nDEL\r\n",
  `"'`,
  JSON.stringify({ nested: { list: [1, null, "x"] } }),
  "[1,2,3]",
  "null",
  // 10 KB of unicode with emoji, including a ZWJ sequence and a skin-tone modifier.
  "héllo wörld — 日本語 🙂👍🏽🏳️‍🌈 ".repeat(320).slice(0, 10_240)
]

export const storeContract = <R>(name: string, subject: StoreSubject<R>): void => {
  const withTarget = <E>(
    body: (
      collection: Store.Store.Collection,
      target: Store.Target,
      store: Store.Store.Service
    ) => Effect.Effect<void, E, Scope.Scope | R | Store.Store>
  ) =>
    Effect.gen(function* () {
      const store = yield* Store.Store
      const target = yield* subject.target
      const collection = yield* store.collection(target)
      yield* body(collection, target, store)
    }).pipe(Effect.scoped, Effect.provide(subject.layer()))

  describe(name, () => {
    it.live("getMany finds the present keys in one call, hostile ones included, with the versions get sees", () =>
      withTarget((users) =>
        Effect.gen(function* () {
          const keys = hostileKeys.filter((key) => key !== "")
          const versions = yield* Effect.forEach(keys, (key) => users.put(key, user(key, `name of ${key}`)))
          const found = yield* users.getMany([...keys, "absent", keys[0]!])
          expect(found.size).toBe(keys.length)
          keys.forEach((key, i) => {
            expect(found.get(key)).toEqual({ version: versions[i], value: user(key, `name of ${key}`) })
          })
          expect(found.has("absent")).toBe(false)
          expect((yield* users.getMany([])).size).toBe(0)
        })
      )
    )

    it.live("get of an absent key is None", () =>
      withTarget((users) =>
        Effect.gen(function* () {
          expect(yield* users.get("absent")).toEqual(Option.none())
        })
      )
    )

    it.live("put then get returns the value and the version put returned", () =>
      withTarget((users) =>
        Effect.gen(function* () {
          const version = yield* users.put("42", user("42", "Ada", "ada@example.com"))
          expect(Number.isSafeInteger(version) && version > 0).toBe(true)
          expect(yield* users.get("42")).toEqual(Option.some({ version, value: user("42", "Ada", "ada@example.com") }))
        })
      )
    )

    it.live("a second put returns a strictly higher version and get sees the new value", () =>
      withTarget((users) =>
        Effect.gen(function* () {
          const first = yield* users.put("42", user("42", "first"))
          const second = yield* users.put("42", user("42", "second"))
          expect(second).toBeGreaterThan(first)
          expect(yield* users.get("42")).toEqual(Option.some({ version: second, value: user("42", "second") }))
          const third = yield* users.put("42", user("42", "third"))
          expect(third).toBeGreaterThan(second)
          expect(yield* users.get("42")).toEqual(Option.some({ version: third, value: user("42", "third") }))
        })
      )
    )

    it.live("keys are independent: writing one leaves the others as they were", () =>
      withTarget((users) =>
        Effect.gen(function* () {
          const a = yield* users.put("a", user("a", "A"))
          const b = yield* users.put("b", user("b", "B"))
          yield* users.put("a", user("a", "A2"))
          yield* users.delete("a")
          expect(yield* users.get("a")).toEqual(Option.none())
          expect(yield* users.get("b")).toEqual(Option.some({ version: b, value: user("b", "B") }))
          expect(b).not.toBe(a)
        })
      )
    )

    it.live("entities are separate: the same key in two entities holds two rows", () =>
      withTarget((users, _, store) =>
        Effect.gen(function* () {
          const others = yield* store.collection(yield* subject.target)
          const mine = yield* users.put("k", user("k", "mine"))
          const theirs = yield* others.put("k", user("k", "theirs"))
          expect(theirs).not.toBe(mine)
          expect(yield* users.get("k")).toEqual(Option.some({ version: mine, value: user("k", "mine") }))
          expect(yield* others.get("k")).toEqual(Option.some({ version: theirs, value: user("k", "theirs") }))
          yield* others.delete("k")
          expect(yield* others.get("k")).toEqual(Option.none())
          expect(yield* users.get("k")).toEqual(Option.some({ version: mine, value: user("k", "mine") }))
        })
      )
    )

    it.live("delete returns a version above the deleted row's, and get is None afterwards", () =>
      withTarget((users) =>
        Effect.gen(function* () {
          const put = yield* users.put("42", user("42", "Ada"))
          const deleted = yield* users.delete("42")
          expect(deleted).toBeGreaterThan(put)
          expect(yield* users.get("42")).toEqual(Option.none())
        })
      )
    )

    it.live("delete of an absent key still returns a fresh, higher version", () =>
      withTarget((users) =>
        Effect.gen(function* () {
          const put = yield* users.put("other", user("other", "unrelated"))
          const first = yield* users.delete("absent")
          expect(first).toBeGreaterThan(put)
          const second = yield* users.delete("absent")
          expect(second).toBeGreaterThan(first)
          expect(yield* users.get("absent")).toEqual(Option.none())
          // Deleting a key that is absent touched nothing else.
          expect(yield* users.get("other")).toEqual(Option.some({ version: put, value: user("other", "unrelated") }))
        })
      )
    )

    it.live("re-insert after delete gets a version above the delete's", () =>
      withTarget((users) =>
        Effect.gen(function* () {
          const first = yield* users.put("42", user("42", "before"))
          const deleted = yield* users.delete("42")
          const again = yield* users.put("42", user("42", "after"))
          expect(deleted).toBeGreaterThan(first)
          expect(again).toBeGreaterThan(deleted)
          expect(yield* users.get("42")).toEqual(Option.some({ version: again, value: user("42", "after") }))
        })
      )
    )

    it.live("hostile keys and values round-trip exactly, stay distinct and leave the storage intact", () =>
      withTarget((users, target) =>
        Effect.gen(function* () {
          // Also aimed at the test's own table, whatever it is called.
          const keys = [...hostileKeys, `'; DROP TABLE "${target.table?.name ?? target.entity}"; --`]
          expect(new TextEncoder().encode(hostileKeys[hostileKeys.length - 1]!).length).toBeGreaterThanOrEqual(900)
          const written = keys.map((key, i) => ({
            key,
            value: user(key, hostileValues[i % hostileValues.length]!, hostileValues[(i + 3) % hostileValues.length]!)
          }))
          const versions: Array<number> = []
          for (const { key, value } of written) versions.push(yield* users.put(key, value))
          expect(new Set(versions).size).toBe(written.length)
          for (const [i, { key, value }] of written.entries()) {
            expect(yield* users.get(key)).toEqual(Option.some({ version: versions[i]!, value }))
          }
          // A glob or LIKE pattern key matches only itself.
          yield* users.delete("user:*")
          yield* users.delete("%_ like wildcards")
          expect(yield* users.get("user:*")).toEqual(Option.none())
          for (const [i, { key, value }] of written.entries()) {
            if (key === "user:*" || key === "%_ like wildcards") continue
            expect(yield* users.get(key)).toEqual(Option.some({ version: versions[i]!, value }))
          }
          if (subject.countRows !== undefined) {
            expect(yield* subject.countRows(target)).toBe(written.length - 2)
          }
        })
      )
    )

    for (const existing of [false, true]) {
      it.live(
        `concurrent puts to one ${existing ? "existing" : "absent"} key get distinct versions, and the highest one wins`,
        () =>
          withTarget((users) =>
            Effect.gen(function* () {
              const before = existing ? yield* users.put("hot", user("hot", "before")) : 0
              const writes = yield* Effect.forEach(
                Arr.range(1, 16),
                (i) => Effect.map(users.put("hot", user("hot", `writer ${i}`)), (version) => ({ i, version })),
                { concurrency: 16 }
              )
              const versions = writes.map((write) => write.version)
              expect(new Set(versions).size).toBe(16)
              expect(Math.min(...versions)).toBeGreaterThan(before)
              const last = writes.reduce((a, b) => (b.version > a.version ? b : a))
              expect(yield* users.get("hot")).toEqual(
                Option.some({ version: last.version, value: user("hot", `writer ${last.i}`) })
              )
            })
          )
      )
    }
  })
}

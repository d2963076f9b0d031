// The semantics every Cache implementation must share, run once per implementation.
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Option } from "effect"
import { Cache } from "../../src/index.js"
import { tombstone, value } from "../support/fixtures.js"

const ttl = Duration.minutes(1)

// A deterministic shuffle (a fixed-seed LCG), so a failure reproduces.
const shuffled = <A>(items: ReadonlyArray<A>, seed: number): Array<A> => {
  const out = [...items]
  let state = seed
  for (let i = out.length - 1; i > 0; i--) {
    state = (state * 1103515245 + 12345) % 2147483648
    const j = state % (i + 1)
    ;[out[i], out[j]] = [out[j]!, out[i]!]
  }
  return out
}

/**
 * Registers the Cache contract for one implementation. `makeLayer` is called once
 * per test, so each test gets a fresh cache (a fresh instance or key prefix).
 */
export const cacheContract = (name: string, makeLayer: () => Layer.Layer<Cache.Cache, unknown>): void => {
  const test = (title: string, body: (cache: Cache.Cache.Service) => Effect.Effect<void, unknown>) =>
    it.effect(title, () => Effect.flatMap(Cache.Cache, body).pipe(Effect.provide(makeLayer())))

  describe(name, () => {
    describe("get and set", () => {
      test("get of an absent key is None", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.get("absent")).toEqual(Option.none())
        }))

      const payloads: ReadonlyArray<readonly [string, string]> = [
        ["plain text", "hello"],
        ["the empty string", ""],
        ["quotes", `"double" 'single' \`back\` \\"escaped\\"`],
        ["glob and Lua pattern characters", "*?[]^$%.()+-:v1:t2:"],
        ["CRLF and a RESP command", "a\r\nSET x y\r\n*3\r\n$3\r\nDEL\r\n"],
        ["JSON", JSON.stringify({ id: "42", nested: { list: [1, null, "x"] } })],
        ["a NUL byte", "before\u0000after"],
        ["10 KB of unicode with emoji", "héllo wörld — 日本語 🙂👍🏽🏳️‍🌈 ".repeat(320).slice(0, 10_240)]
      ]
      for (const [label, payload] of payloads) {
        test(`a payload of ${label} round-trips exactly`, (cache) =>
          Effect.gen(function* () {
            expect(yield* cache.set("k", value(7, payload), { ttl })).toBe("written")
            const got = yield* cache.get("k")
            expect(got).toEqual(Option.some(value(7, payload)))
            expect(Option.getOrThrow(got)._tag).toBe("Value")
          }))
      }

      test("a large version round-trips exactly", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("k", value(Number.MAX_SAFE_INTEGER - 1, "big"), { ttl })).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(value(Number.MAX_SAFE_INTEGER - 1, "big")))
        }))

      test("hostile keys round-trip and stay distinct", (cache) =>
        Effect.gen(function* () {
          const keys = [
            "'; drop table users; --",
            "user:*",
            "user:",
            "user",
            "a\r\nSET x y",
            "a",
            "ключ-键-🔑",
            "prefix",
            "prefix-and-more",
            " spaced key ",
            ""
          ]
          for (const [i, key] of keys.entries()) {
            expect(yield* cache.set(key, value(i + 1, `payload of ${JSON.stringify(key)}`), { ttl })).toBe("written")
          }
          for (const [i, key] of keys.entries()) {
            expect(yield* cache.get(key)).toEqual(Option.some(value(i + 1, `payload of ${JSON.stringify(key)}`)))
          }
          // Invalidating one does not touch the keys it is a prefix of, or that match it as a pattern.
          expect(yield* cache.invalidate("user:*", 100, ttl)).toBe("written")
          expect(yield* cache.invalidate("prefix", 100, ttl)).toBe("written")
          expect(yield* cache.get("user:*")).toEqual(Option.some(tombstone(100)))
          expect(yield* cache.get("user:")).toEqual(Option.some(value(3, `payload of "user:"`)))
          expect(yield* cache.get("prefix-and-more")).toEqual(Option.some(value(9, `payload of "prefix-and-more"`)))
          expect(yield* cache.get("a")).toEqual(Option.some(value(6, `payload of "a"`)))
        }))
    })

    describe("getOrLease", () => {
      const leaseTtl = Duration.seconds(5)

      test("an absent key: no entry, and the lease, which the same cache is granted again", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.getOrLease("absent", leaseTtl)).toEqual({ entry: Option.none(), leased: true })
          expect(yield* cache.getOrLease("absent", leaseTtl)).toEqual({ entry: Option.none(), leased: true })
          expect(yield* cache.lease("absent", leaseTtl)).toBe(true)
        }))

      test("a value: the entry as get reads it, and no lease asked for", (cache) =>
        Effect.gen(function* () {
          const key = "a\r\nSET x y"
          expect(yield* cache.set(key, value(3, "v1:t2:"), { ttl })).toBe("written")
          expect(yield* cache.getOrLease(key, leaseTtl)).toEqual({
            entry: Option.some(value(3, "v1:t2:")),
            leased: undefined
          })
          expect(yield* cache.getOrLease(key, leaseTtl)).toEqual({ entry: yield* cache.get(key), leased: undefined })
        }))

      test("a tombstone: the tombstone, and the lease", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.invalidate("k", 4, ttl)).toBe("written")
          expect(yield* cache.getOrLease("k", leaseTtl)).toEqual({ entry: Option.some(tombstone(4)), leased: true })
        }))
    })

    describe("version guard", () => {
      test("a set with an older version is rejected and leaves the entry unchanged", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("k", value(5, "five"), { ttl })).toBe("written")
          expect(yield* cache.set("k", value(4, "four"), { ttl })).toBe("rejected")
          expect(yield* cache.set("k", value(1, "one"), { ttl })).toBe("rejected")
          expect(yield* cache.get("k")).toEqual(Option.some(value(5, "five")))
        }))

      test("a set with an equal version is rejected and leaves the entry unchanged", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("k", value(5, "five"), { ttl })).toBe("written")
          expect(yield* cache.set("k", value(5, "another five"), { ttl })).toBe("rejected")
          expect(yield* cache.get("k")).toEqual(Option.some(value(5, "five")))
        }))

      test("a set with a newer version is written", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("k", value(5, "five"), { ttl })).toBe("written")
          expect(yield* cache.set("k", value(6, "six"), { ttl })).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(value(6, "six")))
          expect(yield* cache.set("k", value(1000, "thousand"), { ttl })).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(value(1000, "thousand")))
        }))

      test("the guard compares versions as numbers, not strings", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("k", value(9, "nine"), { ttl })).toBe("written")
          expect(yield* cache.set("k", value(10, "ten"), { ttl })).toBe("written")
          expect(yield* cache.set("k", value(9, "nine again"), { ttl })).toBe("rejected")
          expect(yield* cache.get("k")).toEqual(Option.some(value(10, "ten")))
        }))

      test("keys are guarded independently", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("a", value(10, "a10"), { ttl })).toBe("written")
          expect(yield* cache.set("b", value(1, "b1"), { ttl })).toBe("written")
          expect(yield* cache.get("a")).toEqual(Option.some(value(10, "a10")))
          expect(yield* cache.get("b")).toEqual(Option.some(value(1, "b1")))
        }))
    })

    describe("tombstones", () => {
      test("invalidate of an absent key writes a tombstone that get returns", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.invalidate("k", 3, ttl)).toBe("written")
          const got = yield* cache.get("k")
          expect(got).toEqual(Option.some(tombstone(3)))
          expect(Option.getOrThrow(got)._tag).toBe("Tombstone")
        }))

      test("invalidate at the held value's version is written: the tombstone wins the tie", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("k", value(4, "four"), { ttl })).toBe("written")
          expect(yield* cache.invalidate("k", 4, ttl)).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(4)))
        }))

      test("invalidate at a newer version than the held value is written", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("k", value(4, "four"), { ttl })).toBe("written")
          expect(yield* cache.invalidate("k", 5, ttl)).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(5)))
        }))

      test("a value with a version at or below the tombstone's is rejected", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.invalidate("k", 4, ttl)).toBe("written")
          expect(yield* cache.set("k", value(4, "late fill of four"), { ttl })).toBe("rejected")
          expect(yield* cache.set("k", value(3, "three"), { ttl })).toBe("rejected")
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(4)))
        }))

      test("a value with a higher version replaces the tombstone", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.invalidate("k", 4, ttl)).toBe("written")
          expect(yield* cache.set("k", value(5, "five"), { ttl })).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(value(5, "five")))
        }))

      test("invalidate with a lower version than the held value is rejected", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("k", value(5, "five"), { ttl })).toBe("written")
          expect(yield* cache.invalidate("k", 4, ttl)).toBe("rejected")
          expect(yield* cache.get("k")).toEqual(Option.some(value(5, "five")))
        }))

      test("invalidate at or below the held tombstone's version is rejected", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.invalidate("k", 5, ttl)).toBe("written")
          expect(yield* cache.invalidate("k", 5, ttl)).toBe("rejected")
          expect(yield* cache.invalidate("k", 2, ttl)).toBe("rejected")
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(5)))
          expect(yield* cache.invalidate("k", 6, ttl)).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(6)))
        }))

      test("a fence tombstone rejects every value", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("k", value(5, "five"), { ttl })).toBe("written")
          expect(yield* cache.invalidate("k", Cache.FENCE_VERSION, ttl)).toBe("written")
          expect(yield* cache.set("k", value(Number.MAX_SAFE_INTEGER, "max"), { ttl })).toBe("rejected")
          expect(yield* cache.set("k", value(6, "six"), { ttl })).toBe("rejected")
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(Cache.FENCE_VERSION)))
        }))
    })

    describe("replacing", () => {
      test("a set replacing the current value is written even at a lower version (repair)", (cache) =>
        Effect.gen(function* () {
          const current = value(9, "undecodable payload")
          expect(yield* cache.set("k", current, { ttl })).toBe("written")
          expect(yield* cache.set("k", value(3, "repaired"), { ttl: ttl, replacing: current })).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(value(3, "repaired")))
        }))

      test("a set replacing the current tombstone is written even at a lower version", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.invalidate("k", 9, ttl)).toBe("written")
          expect(yield* cache.set("k", value(3, "repaired"), { ttl: ttl, replacing: tombstone(9) })).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(value(3, "repaired")))
        }))

      test("a set replacing an entry that is not the current one is rejected", (cache) =>
        Effect.gen(function* () {
          const current = value(9, "current")
          expect(yield* cache.set("k", current, { ttl })).toBe("written")
          // Same version, other payload.
          expect(
            yield* cache.set("k", value(3, "stale repair"), { ttl: ttl, replacing: value(9, "something else") })
          ).toBe("rejected")
          // Same payload, other version.
          expect(yield* cache.set("k", value(3, "stale repair"), { ttl: ttl, replacing: value(8, "current") })).toBe(
            "rejected"
          )
          // A tombstone of the same version.
          expect(yield* cache.set("k", value(3, "stale repair"), { ttl: ttl, replacing: tombstone(9) })).toBe(
            "rejected"
          )
          expect(yield* cache.get("k")).toEqual(Option.some(current))
        }))

      test("a set replacing a value where a tombstone of that version is held is rejected", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.invalidate("k", 9, ttl)).toBe("written")
          expect(yield* cache.set("k", value(3, "stale repair"), { ttl: ttl, replacing: value(9, "") })).toBe(
            "rejected"
          )
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(9)))
        }))

      test("a replacing set onto an absent key is written", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.set("k", value(2, "two"), { ttl: ttl, replacing: value(1, "one") })).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(value(2, "two")))
        }))
    })

    describe("concurrency", () => {
      test("concurrent sets with shuffled versions leave the highest version", (cache) =>
        Effect.gen(function* () {
          const versions = shuffled(
            Array.from({ length: 200 }, (_, i) => i + 1),
            42
          )
          const outcomes = yield* Effect.forEach(versions, (v) => cache.set("k", value(v, `payload ${v}`), { ttl }), {
            concurrency: "unbounded"
          })
          expect(outcomes).toContain("written")
          expect(yield* cache.get("k")).toEqual(Option.some(value(200, "payload 200")))
        }))

      test("concurrent sets and invalidates end with the newest version, the tombstone winning its tie", (cache) =>
        Effect.gen(function* () {
          const writes = shuffled(
            Array.from({ length: 100 }, (_, i) => i + 1).flatMap((v) => [
              cache.set("k", value(v, `payload ${v}`), { ttl }),
              cache.invalidate("k", v, ttl)
            ]),
            7
          )
          yield* Effect.all(writes, { concurrency: "unbounded" })
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(100)))
        }))
    })

    describe("batches", () => {
      test("getMany answers in the keys' order, absent keys as None", (cache) =>
        Effect.gen(function* () {
          yield* cache.set("a", value(1, "one"), { ttl })
          yield* cache.invalidate("b", 2, ttl)
          yield* cache.set("user:*", value(3, "three"), { ttl })
          expect(yield* cache.getMany(["user:*", "absent", "a", "b", "a"])).toEqual([
            Option.some(value(3, "three")),
            Option.none(),
            Option.some(value(1, "one")),
            Option.some(tombstone(2)),
            Option.some(value(1, "one"))
          ])
          expect(yield* cache.getMany([])).toEqual([])
        }))

      test("setMany guards each item on its own and answers in order", (cache) =>
        Effect.gen(function* () {
          yield* cache.set("held", value(5, "five"), { ttl })
          const ticket = yield* cache.ticket(Duration.seconds(30))
          const outcomes = yield* cache.setMany([
            { key: "new", entry: value(1, "new"), options: { ttl, ticket } },
            { key: "held", entry: value(4, "older"), options: { ttl, ticket } },
            { key: "held2", entry: value(1, "x"), options: { ttl, ticket: { ...ticket, epoch: "another memory" } } },
            { key: "held", entry: value(6, "newer"), options: { ttl } }
          ])
          expect(outcomes).toEqual(["written", "rejected", "outdated", "written"])
          expect(yield* cache.getMany(["new", "held", "held2"])).toEqual([
            Option.some(value(1, "new")),
            Option.some(value(6, "newer")),
            Option.none()
          ])
          expect(yield* cache.setMany([])).toEqual([])
        }))
    })

    describe("tickets", () => {
      test("a set under a fresh ticket is guarded as usual", (cache) =>
        Effect.gen(function* () {
          const ticket = yield* cache.ticket(Duration.seconds(30))
          expect(yield* cache.set("k", value(5, "five"), { ttl, ticket })).toBe("written")
          expect(yield* cache.set("k", value(4, "four"), { ttl, ticket })).toBe("rejected")
          expect(yield* cache.get("k")).toEqual(Option.some(value(5, "five")))
        }))

      test("a set under a ticket of another epoch is outdated and changes nothing", (cache) =>
        Effect.gen(function* () {
          const ticket = yield* cache.ticket(Duration.seconds(30))
          expect(yield* cache.set("k", value(5, "five"), { ttl, ticket: { ...ticket, epoch: "another memory" } })).toBe(
            "outdated"
          )
          expect(yield* cache.get("k")).toEqual(Option.none())
          expect(yield* cache.set("k", value(5, "five"), { ttl, ticket })).toBe("written")
        }))

      test("a set that lands after its ticket's deadline is outdated and changes nothing", (cache) =>
        Effect.gen(function* () {
          const ticket = yield* cache.ticket(Duration.seconds(30))
          const expired = { ...ticket, notAfter: ticket.notAfter - 60_000 }
          expect(yield* cache.set("k", value(5, "five"), { ttl, ticket: expired })).toBe("outdated")
          expect(yield* cache.get("k")).toEqual(Option.none())
        }))

      test("invalidations need no ticket: a tombstone is always safe", (cache) =>
        Effect.gen(function* () {
          expect(yield* cache.invalidate("k", 3, ttl)).toBe("written")
          expect(yield* cache.get("k")).toEqual(Option.some(tombstone(3)))
        }))
    })
  })
}

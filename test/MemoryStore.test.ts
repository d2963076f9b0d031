import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { MemoryStore, Store } from "../src/index.js"
import { FaultyStore } from "../src/testing.js"
import { storeContract, user, userFields } from "./contract/StoreContract.js"
import { unique } from "./support/services.js"

const target = (): Store.Target => ({ entity: unique("users"), fields: userFields, table: undefined })

storeContract("MemoryStore", {
  layer: () => MemoryStore.layer,
  target: Effect.sync(target)
})

// The fault injector with nothing armed is the store it wraps.
storeContract("FaultyStore over MemoryStore, nothing armed", {
  layer: () => FaultyStore.layer.pipe(Layer.provide(MemoryStore.layer)),
  target: Effect.sync(target)
})

describe("MemoryStore", () => {
  it.effect("stores a copy: mutating the object passed to put or returned by get changes nothing stored", () =>
    Effect.gen(function* () {
      const store = yield* Store.Store
      const users = yield* store.collection(target())
      const written = { ...user("1", "Ada"), tags: ["a", "b"], address: { city: "London" } }
      const version = yield* users.put("1", written)
      written.name = "mutated after put"
      written.tags.push("c")
      written.address.city = "Paris"

      const stored = { ...user("1", "Ada"), tags: ["a", "b"], address: { city: "London" } }
      const got = Option.getOrThrow(yield* users.get("1"))
      expect(got).toEqual({ version, value: stored })
      const returned = got.value as typeof written
      returned.name = "mutated after get"
      returned.tags.length = 0
      returned.address.city = "Berlin"

      expect(yield* users.get("1")).toEqual(Option.some({ version, value: stored }))
    }).pipe(Effect.provide(MemoryStore.layer))
  )

  it.effect("two collections for the same entity share rows and one version counter", () =>
    Effect.gen(function* () {
      const store = yield* Store.Store
      const t = target()
      const first = yield* store.collection(t)
      const second = yield* store.collection(t)
      const version = yield* first.put("1", user("1", "Ada"))
      expect(yield* second.get("1")).toEqual(Option.some({ version, value: user("1", "Ada") }))
      const other = yield* store.collection(target())
      const otherVersion = yield* other.put("1", user("1", "Grace"))
      expect(otherVersion).toBeGreaterThan(version)
      expect(yield* second.delete("1")).toBeGreaterThan(otherVersion)
      expect(yield* first.get("1")).toEqual(Option.none())
    }).pipe(Effect.provide(MemoryStore.layer))
  )
})

import { SqlError } from "@effect/sql/SqlError"
import { describe, expect, it } from "@effect/vitest"
import { Duration } from "effect"
import { Cache, Store, WriteThroughError } from "../src/index.js"
import { InjectedFault } from "../src/testing.js"

// One instance of each error class of the library, by tag.
const errors = {
  ValidationError: new WriteThroughError.ValidationError({ entity: "users", key: "1", field: "key", detail: "empty" }),
  StaleCacheError: new WriteThroughError.StaleCacheError({
    entity: "users",
    key: "1",
    operation: "set",
    version: 1,
    maxStaleness: Duration.hours(1),
    staleUntil: 0,
    cause: undefined
  }),
  InconsistentCacheError: new WriteThroughError.InconsistentCacheError({
    entity: "users",
    key: "1",
    operation: "set",
    invalidated: true,
    cause: undefined
  }),
  StoreError: new Store.StoreError({ entity: "users", key: "1", operation: "get", reason: "Unavailable" }),
  StoreOutcomeUnknownError: new Store.StoreOutcomeUnknownError({ entity: "users", key: "1", operation: "put" }),
  CacheError: new Cache.CacheError({ operation: "get", key: "1", reason: "Timeout" }),
  CacheConnectionError: new Cache.CacheConnectionError({ url: "redis://127.0.0.1:1", cause: new Error("refused") })
} as const

type Tag = keyof typeof errors

const guards: Record<Tag, (u: unknown) => boolean> = {
  ValidationError: WriteThroughError.isValidationError,
  StaleCacheError: WriteThroughError.isStaleCacheError,
  InconsistentCacheError: WriteThroughError.isInconsistentCacheError,
  StoreError: Store.isStoreError,
  StoreOutcomeUnknownError: Store.isStoreOutcomeUnknownError,
  CacheError: Cache.isCacheError,
  CacheConnectionError: Cache.isCacheConnectionError
}

const tags = Object.keys(errors) as ReadonlyArray<Tag>

// Not the library's errors, however close they look.
const strangers = {
  "a plain Error": new Error("boom"),
  "a SqlError": new SqlError({ message: "boom" }),
  "an InjectedFault": new InjectedFault({ fault: "refused" }),
  "an object with a library error's tag": { _tag: "StoreError", reason: "Unavailable" },
  null: null,
  "a string": "StoreError"
}

describe("WriteThroughError guards", () => {
  it("every error of the library carries the TypeId", () => {
    for (const tag of tags)
      expect(errors[tag][WriteThroughError.WriteThroughErrorTypeId]).toBe(WriteThroughError.WriteThroughErrorTypeId)
  })

  it.each(tags)("isWriteThroughError is true for a %s", (tag) => {
    expect(WriteThroughError.isWriteThroughError(errors[tag])).toBe(true)
  })

  it.each(Object.entries(strangers))("isWriteThroughError is false for %s", (_, stranger) => {
    expect(WriteThroughError.isWriteThroughError(stranger)).toBe(false)
  })

  describe.each(tags)("the guard of %s", (tag) => {
    const guard = guards[tag]
    it("is true for its error", () => expect(guard(errors[tag])).toBe(true))
    it("is false for every other library error", () => {
      for (const other of tags) if (other !== tag) expect(guard(errors[other])).toBe(false)
    })
    it.each(Object.entries(strangers))("is false for %s", (_, stranger) => expect(guard(stranger)).toBe(false))
  })

  it("the TypeId is shared by name, so a second copy of the package is recognized", () => {
    expect(WriteThroughError.WriteThroughErrorTypeId).toBe(Symbol.for("effect-write-through/WriteThroughError"))
  })
})

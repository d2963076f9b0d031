import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Duration, Effect, Exit, Layer, Option } from "effect"
import { Cache, MemoryCache, MemoryStore, Store } from "../src/index.js"
import { FaultyCache, FaultyStore, InjectedFault } from "../src/testing.js"

// What each injected fault fails with: the error production raises for the same fault, its cause an InjectedFault.

const value = Cache.Entry.Value({ version: 1, payload: "one" })
const target: Store.Target = { entity: "users", fields: undefined, table: undefined }

const CacheLayer = FaultyCache.layer.pipe(Layer.provide(MemoryCache.layer()))
const StoreLayer = FaultyStore.layer.pipe(Layer.provide(MemoryStore.layer))

describe("FaultyCache", () => {
  it.effect("failNext: a CacheError of reason Unavailable, caused by a refused call", () =>
    Effect.gen(function* () {
      const cache = yield* Cache.Cache
      yield* (yield* FaultyCache.FaultyCache).failNext(1, "get")
      expect(yield* Effect.flip(cache.get("k"))).toMatchObject({
        _tag: "CacheError",
        operation: "get",
        key: "k",
        reason: "Unavailable",
        cause: new InjectedFault({ fault: "refused" })
      })
    }).pipe(Effect.provide(CacheLayer))
  )

  it.effect("failAfterNext: the call is carried out, then a CacheError of reason Timeout, caused by a lost reply", () =>
    Effect.gen(function* () {
      const cache = yield* Cache.Cache
      yield* (yield* FaultyCache.FaultyCache).failAfterNext(1, "set")
      expect(yield* Effect.flip(cache.set("k", value, { ttl: Duration.hours(1) }))).toMatchObject({
        _tag: "CacheError",
        operation: "set",
        key: "k",
        reason: "Timeout",
        cause: new InjectedFault({ fault: "replyLost" })
      })
      expect(yield* cache.get("k")).toEqual(Option.some(value))
    }).pipe(Effect.provide(CacheLayer))
  )
})

describe("FaultyStore", () => {
  const withStore = <A, E>(body: (store: Store.Store.Service, controls: FaultyStore.Controls) => Effect.Effect<A, E>) =>
    Effect.flatMap(Effect.context<Store.Store | FaultyStore.FaultyStore>(), (context) =>
      body(Context.get(context, Store.Store), Context.get(context, FaultyStore.FaultyStore))
    ).pipe(Effect.provide(StoreLayer))

  it.effect("failNext: a StoreError of reason Unavailable, caused by a refused call", () =>
    withStore((store, faults) =>
      Effect.gen(function* () {
        const users = yield* store.collection(target)
        yield* faults.failNext(1, "put")
        expect(yield* Effect.flip(users.put("1", { name: "Ada" }))).toMatchObject({
          _tag: "StoreError",
          entity: "users",
          operation: "put",
          key: "1",
          reason: "Unavailable",
          cause: new InjectedFault({ fault: "refused" })
        })
        expect(yield* users.get("1")).toEqual(Option.none())
      })
    )
  )

  it.effect("failNext on commit: a StoreError of reason Transaction, as a transaction that could not begin", () =>
    withStore((store, faults) =>
      Effect.gen(function* () {
        yield* faults.failNext(1, "commit")
        expect(yield* Effect.flip(store.transaction(Effect.void))).toMatchObject({
          _tag: "StoreError",
          operation: "commit",
          reason: "Transaction",
          cause: new InjectedFault({ fault: "refused" })
        })
      })
    )
  )

  it.effect("loseConnectionOnCommit: a StoreOutcomeUnknownError caused by a lost connection", () =>
    withStore((store, faults) =>
      Effect.gen(function* () {
        const users = yield* store.collection(target)
        yield* faults.loseConnectionOnCommit({ committed: true }, "put")
        expect(yield* Effect.flip(users.put("1", { name: "Ada" }))).toMatchObject({
          _tag: "StoreOutcomeUnknownError",
          operation: "put",
          key: "1",
          cause: new InjectedFault({ fault: "connectionLost" })
        })
      })
    )
  )

  it.effect("loseConnectionOnCommit with defect: dies with the InjectedFault of a failed COMMIT", () =>
    withStore((store, faults) =>
      Effect.gen(function* () {
        const users = yield* store.collection(target)
        yield* faults.loseConnectionOnCommit({ committed: false, defect: true }, "delete")
        const exit = yield* Effect.exit(users.delete("1"))
        expect(Exit.isFailure(exit) && Cause.dieOption(exit.cause)).toEqual(
          Option.some(new InjectedFault({ fault: "commitFailed" }))
        )
      })
    )
  )
})

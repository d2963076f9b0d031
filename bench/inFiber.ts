// The in-fiber cases (kind `inFiber` in bench/harness.ts): many operations inside one Effect
// program per round, as an Effect application calls the library (its calls made from its own
// fibers, `Effect.forEach` with a concurrency), against what an Effect user would write instead:
// ioredis and pg's Pool through `Effect.promise`, the value decoded with its Schema. Each round is
// one `runPromise` of an `Effect.forEach` over the round's operations (concurrency 1, 16 or 64);
// the harness divides the round's wall time by its operations.
//
// The hand-written programs use the same payload (the fixture's `User`), the same clients the
// other baselines use (`fx.redis`, one plain ioredis connection; `fx.pool`, pg's Pool), the same
// table and the same statements as the per-runPromise hand-written baselines in bench/cases.ts.
import { Effect, Option, Schema } from "effect"
import type { Runner } from "./harness.js"
import { cycle, type Fixture, fresh, type Library, ttlMillis, User, type UserFields, userFields } from "./fixture.js"

/** The operations `start` to `start + count - 1`, `inFlight` at a time, in one Effect program. */
const forEachOp = <E>(
  start: number,
  count: number,
  inFlight: number,
  op: (i: number) => Effect.Effect<unknown, E>
): Effect.Effect<void, E> =>
  Effect.forEach(
    Array.from({ length: count }, (_, k) => start + k),
    op,
    { concurrency: inFlight, discard: true }
  )

// Decoded as an Effect user decodes what they read: the JSON parsed, then the value's Schema.
const decodeUser = Schema.decodeUnknownSync(User)
const encodeUser = Schema.encodeSync(User)

/** A write statement of a user, and its parameters. */
export interface WriteStatement {
  readonly sql: string
  readonly params: (user: UserFields, key: string) => ReadonlyArray<unknown>
}

// ---- Hand-written Effect ----

/**
 * A hit: `GET` of the warm raw key (the JSON `ioredis GET+parse` reads), decoded with `User`'s
 * Schema. A miss fails the case.
 */
export const effectHits = (fx: Fixture, inFlight: number): Runner => {
  const get = (i: number) => {
    const key = cycle(fx.keys.hit, i)
    return Effect.flatMap(
      Effect.promise(() => fx.redis.get(fx.rawKey(key))),
      (raw) =>
        raw === null ? Effect.dieMessage(`expected a cache hit on ${key}`) : Effect.succeed(decodeUser(JSON.parse(raw)))
    )
  }
  return { batch: (start, count) => Effect.runPromise(forEachOp(start, count, inFlight, get)) }
}

/**
 * A read-through of a key in no cache: `GET` (a miss), the `SELECT` by key, the row decoded with
 * `User`'s Schema, then `SET` of its JSON with the TTL. Under a key prefix of its own
 * (`<run>:fiber:`), so the keys the per-runPromise hand-written read-through cached are misses here.
 */
export const effectReadThrough = (fx: Fixture, sql: string, label: string): Runner => {
  const cacheKey = (key: string) => `${fx.runId}:fiber:${key}`
  const read = (i: number) => {
    const key = fresh(fx.keys.miss, i, label)
    return Effect.gen(function* () {
      const cached = yield* Effect.promise(() => fx.redis.get(cacheKey(key)))
      if (cached !== null) return yield* Effect.dieMessage(`expected a miss on ${key}`)
      const { rows } = yield* Effect.promise(() => fx.pool.query<Record<string, unknown>>(sql, [key]))
      const row = rows[0]
      if (row === undefined) return yield* Effect.dieMessage(`no row for ${key}`)
      const user = decodeUser(row)
      yield* Effect.promise(() => fx.redis.set(cacheKey(key), JSON.stringify(encodeUser(user)), "PX", ttlMillis))
      return user
    })
  }
  return { batch: (start, count) => Effect.runPromise(forEachOp(start, count, 1, read)) }
}

/**
 * A write of a `User` (a fresh value each op, on the write keys in rotation): encoded with its
 * Schema, the `statement` (the plain upsert of `pg upsert + SET`, or the library's own store
 * write), then `SET` of its JSON with the TTL, to the raw key `pg upsert + SET` writes.
 */
export const effectWrites = (fx: Fixture, statement: WriteStatement, inFlight: number): Runner => {
  const write = (i: number) => {
    const key = cycle(fx.keys.write, i)
    return Effect.gen(function* () {
      const encoded = encodeUser(new User(userFields(key, i)))
      yield* Effect.promise(() => fx.pool.query(statement.sql, statement.params(encoded, key)))
      yield* Effect.promise(() => fx.redis.set(fx.rawKey(key), JSON.stringify(encoded), "PX", ttlMillis))
    })
  }
  return { batch: (start, count) => Effect.runPromise(forEachOp(start, count, inFlight, write)) }
}

// ---- The library, in fiber ----

/** `users.get` of warm keys in one program; a round that reached the store was not all hits, and fails the case. */
export const libraryHitsInFiber = (library: Library, keys: ReadonlyArray<string>, inFlight: number): Runner => {
  const { run, storeGets, users } = library
  let before = 0
  const get = (i: number) => {
    const key = cycle(keys, i)
    return Effect.flatMap(users.get(key), (user) =>
      Option.isSome(user) ? Effect.succeed(user.value) : Effect.dieMessage(`expected a cache hit on ${key}`)
    )
  }
  return {
    batch: (start, count) => run(forEachOp(start, count, inFlight, get)),
    beforeRound: () => {
      before = storeGets()
    },
    afterRound: () => {
      if (storeGets() !== before) throw new Error(`${storeGets() - before} reads missed the cache`)
      return {}
    }
  }
}

/**
 * `users.get` of rows never cached, one after the other in one program: the fresh keys from
 * `offset` on (another case of the same library reads those below it). Every read must reach the
 * store, or the round fails.
 */
export const libraryMissesInFiber = (library: Library, keys: ReadonlyArray<string>, offset: number): Runner => {
  const { run, storeGets, users } = library
  let before = 0
  let reads = 0
  const get = (i: number) => {
    const key = fresh(keys, offset + i, "lib in fiber: miss")
    return Effect.flatMap(
      Effect.suspend(() => {
        reads++
        return users.get(key)
      }),
      (user) => (Option.isSome(user) ? Effect.succeed(user.value) : Effect.dieMessage(`no row for ${key}`))
    )
  }
  return {
    batch: (start, count) => run(forEachOp(start, count, 1, get)),
    beforeRound: () => {
      before = storeGets()
      reads = 0
    },
    afterRound: () => {
      if (storeGets() - before !== reads) {
        throw new Error(`${reads} reads made ${storeGets() - before} store queries: not all were misses`)
      }
      return {}
    }
  }
}

/** `users.set` of the write keys in rotation, a fresh value each op, in one program. */
export const librarySetsInFiber = (fx: Fixture, inFlight: number): Runner => {
  const { run, users } = fx.library
  const set = (i: number) => {
    const key = cycle(fx.keys.write, i)
    return Effect.suspend(() => users.set(key, new User(userFields(key, i))))
  }
  return { batch: (start, count) => run(forEachOp(start, count, inFlight, set)) }
}

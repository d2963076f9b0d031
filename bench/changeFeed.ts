// The change feed's cases (SqlStore `changeCapture`): what capturing changes costs a `set`, and how
// long a write made with plain SQL takes to stop being served from the cache (the lag).
//
// They share one captured entity, built by the first of them to be set up (`captured`): a table
// of its own (`<run table>_cc`) with both triggers (the version trigger and the capture trigger,
// added with the DDL the store suggests), a version sequence of its own (so the outbox, the
// positions table and the trigger functions are its own too), and the library over it with
// `changeCapture: true` on the library's defaults (a poll every 20 ms), whose feed is consumed by
// this process, as it would be in production. Its Redis keys are under `<run>:cc:`; the run's
// cleanup drops the table, the outbox, the positions table, the functions and the sequence after
// the library's runtime is disposed of.
//
// The set cases also compare with the same library without capture over a twin of that table
// (`twin`: `<run table>_nc`, the same rows, a sequence of its own, no triggers), so that the ratio
// is capture's cost alone, not also the difference between two tables' histories: the fixture's
// table is bigger, and every other write case writes it.
import { PgClient } from "@effect/sql-pg"
import { Effect, Either, ManagedRuntime, Option, Redacted } from "effect"
import { setTimeout as sleep } from "node:timers/promises"
import { type Cache, SqlStore, type Store } from "../src/index.js"
import { decode } from "../src/internal/redis/entry.js"
import type { Runner } from "./harness.js"
import {
  buildLibrary,
  columns,
  databaseUrl,
  type Fixture,
  type Library,
  tableDdl,
  User,
  userFields
} from "./fixture.js"
import { dropFunctionsOf } from "../test/support/changeCapture.js"

/** Keys whose rows the lag cases change with plain SQL, in rotation (each cached first). */
export const lagKeyCount = 64

/** The most a change may take to reach the cache before a lag case gives up (and fails). */
const giveUpMillis = 10_000

export interface Captured {
  /** Whether the store captures changes (false: the twin). */
  readonly capture: boolean
  readonly table: string
  readonly versionSequence: string
  readonly library: Library
  /** The fixture's write keys, with rows in this table: what the set cases and the background load write. */
  readonly writeKeys: ReadonlyArray<string>
  /** Rows only the lag cases touch. */
  readonly lagKeys: ReadonlyArray<string>
  /** The library's Redis key of `key` (the raw string, for the lag cases to watch). */
  readonly cacheKey: (key: string) => string
}

const built = { true: new WeakMap<Fixture, Promise<Captured>>(), false: new WeakMap<Fixture, Promise<Captured>>() }

const memo = (fx: Fixture, capture: boolean): Promise<Captured> => {
  const cache = built[`${capture}`]
  let found = cache.get(fx)
  if (found === undefined) {
    found = build(fx, capture)
    cache.set(fx, found)
  }
  return found
}

/** The captured entity of this run: built on first use, then shared by every change feed case. */
export const captured = (fx: Fixture): Promise<Captured> => memo(fx, true)

/** The same entity without change capture, over a twin table: the set cases' like-for-like baseline. */
export const twin = (fx: Fixture): Promise<Captured> => memo(fx, false)

const build = async (fx: Fixture, capture: boolean): Promise<Captured> => {
  const table = `${fx.table}_${capture ? "cc" : "nc"}`
  const versionSequence = `${table}_version`
  // Registered first, so it runs after the library (registered below) has been disposed of: its
  // consumer must not be polling an outbox that is being dropped. The triggers go with the table,
  // and with the functions (CASCADE). (The twin has only a table and a sequence.)
  fx.onCleanup(() =>
    fx.pool.query(
      `DROP TABLE IF EXISTS "${table}"; ` +
        `DROP TABLE IF EXISTS "${versionSequence}_changes", "${versionSequence}_feeds"; ` +
        `${dropFunctionsOf(versionSequence)}; ` +
        `DROP SEQUENCE IF EXISTS "${versionSequence}"`
    )
  )
  const writeKeys = fx.keys.write
  const lagKeys = Array.from({ length: lagKeyCount }, (_, i) => `lag${i}`)
  await fx.pool.query(tableDdl(table))
  const rows = [...writeKeys, ...lagKeys].map((id, n) => ({ ...userFields(id, n), version: 1 }))
  await fx.pool.query(`INSERT INTO "${table}" SELECT * FROM json_populate_recordset(null::"${table}", $1::json)`, [
    JSON.stringify(rows)
  ])
  await fx.pool.query(`ANALYZE "${table}"`)
  if (capture) await addTriggers(fx, table, versionSequence)

  const keyPrefix = `${fx.runId}:${capture ? "cc" : "nc"}:`
  const library = await buildLibrary({ table, keyPrefix, versionSequence, ...(capture ? { changeCapture: true } : {}) })
  fx.onCleanup(() => library.dispose())
  const cacheKey = (key: string) => `${keyPrefix}${table}:${key}`

  // The library writes where the lag cases look.
  const probe = lagKeys[0]!
  await library.run(library.users.set(probe, new User(userFields(probe, 0))))
  if (!isValue(await fx.redis.get(cacheKey(probe)))) {
    throw new Error(`a set of ${probe} left no value under ${cacheKey(probe)}`)
  }
  return { capture, table, versionSequence, library, writeKeys, lagKeys, cacheKey }
}

const addTriggers = async (fx: Fixture, table: string, versionSequence: string) => {
  // The triggers, as an application adds them: the store refuses the table and names the DDL
  // (the version trigger's first, then the capture trigger's); a third look must accept it.
  const target: Store.Target = { entity: table, fields: columns, table: { name: table, primaryKey: "id" } }
  const admin = ManagedRuntime.make(
    PgClient.layer({
      url: Redacted.make(databaseUrl),
      applicationName: "effect-write-through-bench",
      maxConnections: 1
    })
  )
  try {
    await admin.runPromise(
      Effect.gen(function* () {
        const store = yield* SqlStore.make({ versionSequence, changeCapture: true })
        for (let attempt = 0; ; attempt++) {
          const made = yield* Effect.either(store.collection(target))
          if (Either.isRight(made)) break
          const ddl = made.left.suggestedDdl
          if (attempt === 2 || ddl === undefined) return yield* Effect.fail(made.left)
          yield* Effect.promise(() => fx.pool.query(ddl))
        }
      })
    )
  } finally {
    await admin.dispose()
  }
  const { rows: triggers } = await fx.pool.query<{ count: string }>(
    `SELECT count(*)::text AS count FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal`,
    [`"${table}"`]
  )
  if (triggers[0]?.count !== "2") throw new Error(`${table} has ${triggers[0]?.count} triggers, not 2`)
}

const cycle = <A>(items: ReadonlyArray<A>, i: number): A => items[i % items.length]!

const valueOf = (raw: string | null): Extract<Cache.Entry, { _tag: "Value" }> | undefined => {
  const entry = Option.getOrUndefined(decode(raw))
  return entry?._tag === "Value" ? entry : undefined
}

const isValue = (raw: string | null) => valueOf(raw) !== undefined

/** `users.set` of the write keys, a fresh value each, over the captured entity (or its twin). */
export const capturedSet = async (fx: Fixture, capture = true): Promise<Runner> => {
  const { library, writeKeys } = await memo(fx, capture)
  const { run, users } = library
  return {
    op: async (i) => {
      const key = cycle(writeKeys, i)
      await run(users.set(key, new User(userFields(key, i))))
    }
  }
}

/** `inFlight` workers setting the write keys through the captured library until stopped. */
const backgroundSets = (capture: Captured, inFlight: number) => {
  const { run, users } = capture.library
  let stopped = false
  let next = 0
  let done = 0
  let failure: { readonly error: unknown } | undefined
  const began = process.hrtime.bigint()
  const worker = async () => {
    while (!stopped) {
      const n = next++
      const key = cycle(capture.writeKeys, n)
      try {
        await run(users.set(key, new User(userFields(key, n))))
        done++
      } catch (error) {
        failure ??= { error }
        stopped = true
      }
    }
  }
  const workers = Promise.all(Array.from({ length: inFlight }, worker))
  return {
    /** Stops the load; its sets per second. Rejects if one of its sets failed. */
    stop: async (): Promise<number> => {
      stopped = true
      await workers
      if (failure !== undefined) throw failure.error
      return (done * 1e9) / Number(process.hrtime.bigint() - began)
    }
  }
}

/**
 * The change feed's lag, one change per operation, resolving to it in microseconds: a key is set
 * through the library (cached, a value of version v), then after a pause drawn uniformly from 5 to
 * 25 ms (so changes are independent of one another and fall anywhere in the feed's 20 ms poll
 * period) its row is changed with a plain SQL UPDATE through pg's Pool; the lag runs from the
 * query resolving (the commit) to the first read of the raw Redis key, every millisecond or so,
 * that no longer finds the value of version v (a tombstone, or a newer value). Right before the
 * UPDATE the entry must still be that value (the feed's tombstone for the set's own change must
 * leave it), or the case fails. With `load`, `load` library sets at once run on other keys of the
 * same entity through each round (their changes go through the same feed); the load's sets per
 * second are reported per round.
 */
export const lagProbe = async (fx: Fixture, load?: number): Promise<Runner> => {
  const capture = await captured(fx)
  const { run, users } = capture.library
  const update = `UPDATE "${capture.table}" SET name = $2 WHERE id = $1`
  let background: ReturnType<typeof backgroundSets> | undefined
  const stopLoad = async () => {
    const running = background
    background = undefined
    return running === undefined ? undefined : running.stop()
  }
  const probe = async (i: number): Promise<number> => {
    const key = cycle(capture.lagKeys, i)
    const raw = capture.cacheKey(key)
    await run(users.set(key, new User(userFields(key, i))))
    await sleep(5 + Math.random() * 20)
    const cached = valueOf(await fx.redis.get(raw))
    if (cached === undefined) {
      throw new Error(`${key} was not cached before its UPDATE (its set's own change displaced it?)`)
    }
    const { rowCount } = await fx.pool.query(update, [key, `Changed outside the library ${i}`])
    const committed = process.hrtime.bigint()
    if (rowCount !== 1) throw new Error(`the UPDATE of ${key} changed ${rowCount} rows`)
    for (;;) {
      const entry = valueOf(await fx.redis.get(raw))
      const micros = Number(process.hrtime.bigint() - committed) / 1000
      if (entry === undefined || entry.version !== cached.version) return micros
      if (micros > giveUpMillis * 1000) {
        throw new Error(`the cache still served ${key}'s old value ${giveUpMillis} ms after the UPDATE committed`)
      }
      await sleep(0.5) // Node waits at least 1 ms
    }
  }
  return {
    op: async (i) => {
      try {
        return await probe(i)
      } catch (error) {
        // A failed case is left out of the remaining rounds: its load must not run through them.
        await stopLoad().catch(() => undefined)
        throw error
      }
    },
    ...(load === undefined
      ? {}
      : {
          beforeRound: () => {
            background = backgroundSets(capture, load)
          },
          afterRound: async () => ({ loadSetsPerSecond: Math.round((await stopLoad()) ?? 0) }),
          teardown: async () => {
            await stopLoad()
          }
        })
  }
}

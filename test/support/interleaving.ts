// In-process interleavings explored by fast-check's scheduler: Cache and Store decorators whose every
// call first waits for the scheduler's go-ahead (so the scheduler decides the order in which the steps
// of concurrent operations reach each tier), a record of what each step did and of what the store
// committed, a deliberately naive cache, and the loop that drives a run to its end.
import { Context, Effect, FiberRef, Layer, Option } from "effect"
import { Cache, Store } from "../../src/index.js"
import type { Committed } from "../chaos/checker.js"

/**
 * What the decorators and `drive` need of a scheduler: fast-check's `fc.Scheduler`, or `scripted` below.
 */
export interface Stepper {
  readonly schedule: <T>(task: Promise<T>, label?: string) => Promise<T>
  readonly count: () => number
  readonly waitOne: () => Promise<void>
}

/** Who is calling: set around each operation of a workload, it names the steps in the scheduler's report. */
const setupActor = "setup"
export const Actor = FiberRef.unsafeMake(setupActor)

export interface Step {
  readonly actor: string
  readonly tier: "cache" | "store"
  readonly operation: string
  readonly key: string
  /** `call`: the call reached the tier and ran; `reply`: its answer, held until now, reached the caller. */
  readonly phase: "call" | "reply"
  /** What the tier answered. */
  readonly result: string
}

export interface Recorder {
  /** Every step, in the order the scheduler released it (each step runs as soon as it is released). */
  readonly steps: Array<Step>
  /** Every change the store committed, in version order: the checker's `committed`. */
  readonly committed: Array<Committed>
}

export const makeRecorder = (): Recorder => ({ steps: [], committed: [] })

export const formatSteps = (steps: ReadonlyArray<Step>): string =>
  steps
    .map(
      (s, i) =>
        `${String(i + 1).padStart(3)}. ${s.actor} ${s.tier}.${s.operation} ${s.key}${s.phase === "reply" ? " (reply)" : ""} -> ${s.result}`
    )
    .join("\n")

/** The tiers under the decorators, to read the final state behind the library's back. */
export class UnderlyingCache extends Context.Tag("test/interleaving/UnderlyingCache")<
  UnderlyingCache,
  Cache.Cache.Service
>() {}

export class UnderlyingStore extends Context.Tag("test/interleaving/UnderlyingStore")<
  UnderlyingStore,
  Store.Store.Service
>() {}

const describeEntry = (entry: Cache.Entry): string =>
  entry._tag === "Value" ? `value v${entry.version}` : `tombstone v${entry.version}`

// Waits for the scheduler, then runs the call at once and records it. With `heldReply`, the answer is
// held back until the scheduler releases it in a second step, as a slow network would.
const step = <A, E>(
  s: Stepper,
  recorder: Recorder,
  tier: Step["tier"],
  operation: string,
  key: string,
  call: Effect.Effect<A, E>,
  describe: (a: A) => string,
  heldReply = false
): Effect.Effect<A, E> =>
  Effect.flatMap(FiberRef.get(Actor), (actor) => {
    const label = `${actor} ${tier}.${operation} ${key}`
    const record = (phase: Step["phase"], a: A) =>
      Effect.sync(() => recorder.steps.push({ actor, tier, operation, key, phase, result: describe(a) }))
    return Effect.promise(() => s.schedule(Promise.resolve(), label)).pipe(
      Effect.zipRight(call),
      Effect.tap((a) => record("call", a)),
      Effect.tap((a) =>
        heldReply
          ? Effect.zipRight(
              Effect.promise(() => s.schedule(Promise.resolve(), `${label} (reply)`)),
              record("reply", a)
            )
          : Effect.void
      )
    )
  })

/** A `Cache` whose `get`, `set` and `invalidate` each wait for the scheduler. `ticket` is local and does not. */
export const scheduledCache = (
  s: Stepper,
  recorder: Recorder
): Layer.Layer<Cache.Cache | UnderlyingCache, never, Cache.Cache> =>
  Layer.effectContext(
    Effect.map(Cache.Cache, (cache) =>
      Context.make(
        Cache.Cache,
        Cache.Cache.of({
          selfBounded: cache.selfBounded,
          reusesEntries: cache.reusesEntries,
          get: (key) =>
            step(s, recorder, "cache", "get", key, cache.get(key), (entry) =>
              Option.match(entry, { onNone: () => "miss", onSome: describeEntry })
            ),
          // One step, as one round trip: the lease it may take is not a step of these workloads.
          getOrLease: (key, ttl) =>
            step(s, recorder, "cache", "get", key, cache.getOrLease(key, ttl), ({ entry }) =>
              Option.match(entry, { onNone: () => "miss", onSome: describeEntry })
            ),
          // Batches are not part of these workloads: passed through unscheduled.
          getMany: cache.getMany,
          setMany: cache.setMany,
          lease: cache.lease,
          scan: cache.scan,
          ticket: cache.ticket,
          set: (key, entry, options) =>
            step(
              s,
              recorder,
              "cache",
              "set",
              key,
              cache.set(key, entry, options),
              (outcome) => `${outcome} v${entry.version}`
            ),
          invalidate: (key, version, ttl) =>
            step(
              s,
              recorder,
              "cache",
              "invalidate",
              key,
              cache.invalidate(key, version, ttl),
              (outcome) => `${outcome} tombstone v${version}`
            )
        })
      ).pipe(Context.add(UnderlyingCache, cache))
    )
  )

/**
 * A `Store` whose collections' `get`, `put` and `delete` each wait for the scheduler, and which records
 * every committed change; `describe` turns a stored value into the checker's unique value.
 *
 * A `get`'s answer is also held until the scheduler releases it: the row may change in between, which is
 * what a load shared by single flight must not hand to a reader that began after that change. (For
 * `put` and `delete` a held answer would add nothing: the scheduler can already hold the caller's next
 * step, the cache update.)
 */
export const scheduledStore = (
  s: Stepper,
  recorder: Recorder,
  describe: (value: unknown) => string
): Layer.Layer<Store.Store | UnderlyingStore, never, Store.Store> =>
  Layer.effectContext(
    Effect.map(Store.Store, (store) =>
      Context.make(
        Store.Store,
        Store.Store.of({
          transaction: store.transaction,
          inTransaction: store.inTransaction,
          collection: (target) =>
            Effect.map(store.collection(target), (collection) => ({
              getMany: collection.getMany,
              get: (key) =>
                step(
                  s,
                  recorder,
                  "store",
                  "get",
                  key,
                  collection.get(key),
                  (row) =>
                    Option.match(row, { onNone: () => "no row", onSome: (r) => `${describe(r.value)} v${r.version}` }),
                  true
                ),
              put: (key, value) =>
                step(
                  s,
                  recorder,
                  "store",
                  "put",
                  key,
                  Effect.tap(collection.put(key, value), (version) =>
                    Effect.sync(() => recorder.committed.push({ key, value: describe(value), version }))
                  ),
                  (version) => `committed ${describe(value)} v${version}`
                ),
              putMany: (entries) =>
                step(
                  s,
                  recorder,
                  "store",
                  "put",
                  entries[0]?.[0] ?? "",
                  Effect.tap(collection.putMany(entries), (versions) =>
                    Effect.sync(() => {
                      for (const [key, value] of entries) {
                        recorder.committed.push({ key, value: describe(value), version: versions.get(key)! })
                      }
                    })
                  ),
                  (versions) => `committed ${versions.size} rows`
                ),
              delete: (key) =>
                step(
                  s,
                  recorder,
                  "store",
                  "delete",
                  key,
                  Effect.tap(collection.delete(key), (version) =>
                    Effect.sync(() => recorder.committed.push({ key, value: null, version }))
                  ),
                  (version) => `committed delete v${version}`
                )
            }))
        })
      ).pipe(Context.add(UnderlyingStore, store))
    )
  )

/**
 * The cache of a naive write-through: it ignores versions and tickets. `set` overwrites whatever is
 * there, `invalidate` deletes the key. With it, the races of the consistency notes go through.
 */
export const naiveCache: Layer.Layer<Cache.Cache> = Layer.sync(Cache.Cache, () => {
  const entries = new Map<string, Cache.Entry>()
  return Cache.Cache.of({
    selfBounded: true,
    reusesEntries: true,
    get: (key) => Effect.sync(() => Option.fromNullable(entries.get(key))),
    getMany: (keys) => Effect.sync(() => keys.map((key) => Option.fromNullable(entries.get(key)))),
    ticket: () => Effect.succeed({ epoch: "naive", notAfter: Number.MAX_SAFE_INTEGER }),
    lease: () => Effect.succeed(true),
    getOrLease: (key) => Effect.sync(() => ({ entry: Option.fromNullable(entries.get(key)), leased: true })),
    scan: (prefix) => Effect.sync(() => ["0", [...entries.keys()].filter((key) => key.startsWith(prefix))] as const),
    set: (key, entry) =>
      Effect.sync(() => {
        entries.set(key, entry)
        return "written" as const
      }),
    setMany: (items) =>
      Effect.sync(() =>
        items.map(({ entry, key }) => {
          entries.set(key, entry)
          return "written" as const
        })
      ),
    invalidate: (key) =>
      Effect.sync(() => {
        entries.delete(key)
        return "written" as const
      })
  })
})

// Lets every fiber that can move reach its next step (or its end) before the scheduler picks again:
// Effect resumes fibers on microtasks, all of which run before a macrotask.
const settle = async (): Promise<void> => {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

/** The scheduler's `act`: after each released step, wait until the program is quiet again. */
export const act = async (f: () => Promise<void>): Promise<void> => {
  await f()
  await settle()
}

/**
 * Releases the scheduled steps, one at a time in the scheduler's order, until `run` settles. Fails when
 * the run is stuck: nothing scheduled, nothing moving, not done.
 */
export const drive = async <A>(s: Stepper, run: Promise<A>): Promise<A> => {
  let done = false
  const watched = run.finally(() => {
    done = true
  })
  watched.catch(() => {})
  await settle()
  let idle = 0
  while (!done) {
    if (s.count() > 0) {
      idle = 0
      await s.waitOne()
    } else if (++idle > 20) {
      throw new Error(`the run is stuck: no step scheduled and not done\n${String(s)}`)
    } else {
      await new Promise<void>((resolve) => setTimeout(resolve, 1))
    }
  }
  return watched
}

/**
 * A scheduler that releases the steps whose labels `script` names, in that order, and then the rest
 * oldest first: one chosen interleaving, written down. Fails when the step the script names next is
 * not pending, so a script cannot silently drift from what the code does. Steps of the setup actor (a
 * prelude that runs alone) are released as they come, outside the script.
 */
export const scripted = (
  script: ReadonlyArray<string>
): Stepper & {
  readonly released: ReadonlyArray<string>
  readonly unplayed: () => ReadonlyArray<string>
  readonly toString: () => string
} => {
  const pending: Array<{ readonly label: string; readonly release: () => void }> = []
  const released: Array<string> = []
  let next = 0
  return {
    released,
    unplayed: () => script.slice(next),
    schedule: <T>(task: Promise<T>, label = "") =>
      new Promise<T>((resolve, reject) => {
        pending.push({ label, release: () => void task.then(resolve, reject) })
      }),
    count: () => pending.length,
    waitOne: async () => {
      let index = pending.findIndex((p) => p.label.startsWith(`${setupActor} `))
      if (index === -1 && next < script.length) {
        const wanted = script[next]!
        index = pending.findIndex((p) => p.label === wanted)
        if (index === -1) {
          throw new Error(
            `scripted step ${next + 1} ${JSON.stringify(wanted)} is not pending; pending: ${JSON.stringify(pending.map((p) => p.label))}; released: ${JSON.stringify(released)}`
          )
        }
        next++
      }
      if (index === -1) index = 0
      const [task] = pending.splice(index, 1)
      released.push(task!.label)
      task!.release()
      await settle()
    },
    toString: () => `scripted:\n${released.map((label) => `-> ${label}`).join("\n")}`
  }
}

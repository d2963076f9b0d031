// The read path, top to bottom: `get` and `getMany` try the cache; a miss reads the store (one
// read per key shared by concurrent readers, one reader per key across processes holding a
// lease) and fills the cache under a ticket taken before the read. Inside WriteThrough.transaction
// or a bare SQL transaction, reads never fill the cache.
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import { type CacheError, Entry, type Lookup, type Ticket } from "../../Cache.js"
import type { StoreError } from "../../Store.js"
import type { ReadError } from "../../WriteThrough.js"
import * as Deadline from "../deadline.js"
import * as StoreErrors from "../storeError.js"
import type { Entity, Flights, Lease, Load, Loaded } from "./entity.js"
import { currentPublications, type Publications } from "./transaction.js"

type Outcome = (outcome: "hit" | "miss" | "degraded") => void

export const get = <K, A, I>(entity: Entity<K, A, I>, key: K): Effect.Effect<Option.Option<A>, ReadError> =>
  entity.observed("get", (outcome, fiber) => {
    const publications = fiber.getFiberRef(currentPublications)
    return Effect.flatMap(entity.codec.checkKey(key), (text) =>
      publications === undefined
        ? getOutsideTransaction(entity, text, outcome)
        : getInTransaction(entity, publications, text)
    )
  })

const getOutsideTransaction = <K, A, I>(
  entity: Entity<K, A, I>,
  text: string,
  outcome: Outcome
): Effect.Effect<Option.Option<A>, ReadError> => {
  const { metrics } = entity
  const invokedAt = ++entity.flights.time
  // The cache may hold a value older than a write this process acknowledged: the store answers.
  if (entity.repairs.owes(text)) {
    outcome("degraded")
    return Effect.zipRight(metrics.get.degraded.increment, readThrough(entity, text, invokedAt, "skipped"))
  }
  // A value the cache holds in process memory is a hit without a call, nor the call's bound.
  const local = entity.cache.peek?.(entity.prefix + text)
  const localHit = local === undefined ? undefined : hitOf(entity, local, outcome)
  if (localHit !== undefined) return localHit
  return Effect.flatMap(
    Effect.either(lookingUp(entity, entity.boundCache("get", text, lookUp(entity, text)))),
    (cached) => {
      if (Either.isLeft(cached)) {
        outcome("degraded")
        return Effect.zipRight(metrics.get.degraded.increment, readThrough(entity, text, invokedAt, "failed"))
      }
      const { entry, leased } = cached.right
      if (Option.isSome(entry) && entry.value._tag === "Value") {
        const hit = hitOf(entity, entry.value, outcome)
        if (hit !== undefined) return hit
        outcome("miss")
        return Effect.zipRight(
          metrics.get.corrupt.increment,
          readThrough(entity, text, invokedAt, "answered", { replacing: entry.value })
        )
      }
      outcome("miss")
      return Effect.zipRight(metrics.get.misses.increment, readThrough(entity, text, invokedAt, "answered", { leased }))
    }
  )
}

// Counted while it waits (see `Flights.lookingUp`). Once none waits, the loads that ended meanwhile
// are forgotten a turn of the event loop later, when the last readers' fibers have run on to take them.
const lookingUp = <K, A, I, X, E>(entity: Entity<K, A, I>, lookup: Effect.Effect<X, E>): Effect.Effect<X, E> => {
  const { flights } = entity
  flights.lookingUp++
  return Effect.ensuring(
    lookup,
    Effect.sync(() => {
      if (--flights.lookingUp === 0 && flights.ended > 0 && !flights.forgetting) {
        flights.forgetting = true
        setImmediate(() => {
          flights.forgetting = false
          if (flights.lookingUp === 0) forgetEnded(flights)
        })
      }
    })
  )
}

// Under lookups that never all end at once, ended loads are kept up to this many (their values
// with them), then forgotten together: a late reader then reads the store for itself.
const maxEndedLoads = 1024

const forgetEnded = <A>(flights: Flights<A>): void => {
  for (const [key, load] of flights.loads) if (load.exit !== undefined) flights.loads.delete(key)
  flights.ended = 0
}

// A value entry that decodes is a hit; anything else is not (undefined).
const hitOf = <K, A, I>(
  entity: Entity<K, A, I>,
  entry: Entry,
  outcome: Outcome
): Effect.Effect<Option.Option<A>> | undefined => {
  if (entry._tag !== "Value") return undefined
  const decoded = entity.codec.decodeEntry(entry)
  if (Either.isLeft(decoded)) return undefined
  outcome("hit")
  return Effect.as(entity.metrics.get.hits.increment, Option.some(decoded.right))
}

// With leases on, one call reads the key and, when it holds no value, asks for the lease: a miss
// then costs no round trip of its own for it.
const lookUp = <K, A, I>(entity: Entity<K, A, I>, key: string): Effect.Effect<Lookup, CacheError> => {
  const { lease } = entity.settings
  return lease === undefined
    ? Effect.map(entity.cache.get(entity.prefix + key), (entry) => ({ entry, leased: undefined }))
    : entity.cache.getOrLease(entity.prefix + key, lease.ttl)
}

// Inside WriteThrough.transaction a read never fills the cache (the store may answer with the
// transaction's own uncommitted rows), and a key the transaction wrote is read from the store.
const getInTransaction = <K, A, I>(
  entity: Entity<K, A, I>,
  publications: Publications,
  key: string
): Effect.Effect<Option.Option<A>, ReadError> =>
  publications.updates.has(entity.prefix + key) || entity.repairs.owes(key)
    ? storeValue(entity, key)
    : Effect.flatMap(Effect.either(entity.boundCache("get", key, entity.cache.get(entity.prefix + key))), (cached) => {
        if (Either.isRight(cached) && Option.isSome(cached.right) && cached.right.value._tag === "Value") {
          const decoded = entity.codec.decodeEntry(cached.right.value)
          if (Either.isRight(decoded)) return Effect.succeedSome(decoded.right)
        }
        return storeValue(entity, key)
      })

/**
 * What the cache said before the store is read: it `answered` (a miss), it `failed` (a degraded
 * read), or it was `skipped` because this process owes the key a tombstone.
 */
type CacheAnswer = "answered" | "failed" | "skipped"

/** What came with an answered miss: the lease, if it was asked for; an entry that failed to decode. */
interface Answered {
  readonly leased?: boolean | undefined
  readonly replacing?: Entry | undefined
}

// Reads the store and, when the cache answered, fills it under a ticket taken before the read;
// `replacing` is an entry that failed to decode. After a failed cache call neither a lease nor a
// fill is worth another call to the cache: each would cost up to another `cacheTimeout`. A read of
// an owed key leaves a tombstone below what it read, so that no reader in another process, served
// by the cache after it returned, gets an older version (the owed tombstone may land later).
const readThrough = <K, A, I>(
  entity: Entity<K, A, I>,
  key: string,
  invokedAt: number,
  cache: CacheAnswer,
  answered: Answered = {}
): Effect.Effect<Option.Option<A>, StoreError> =>
  Effect.flatMap(entity.store.inTransaction, (inside) =>
    inside
      ? // The transaction's view: not for the cache, nor for readers outside it.
        storeValue(entity, key)
      : Effect.map(
          cache === "answered"
            ? sharedRead(entity, key, invokedAt, answered)
            : Effect.tap(sharedRead(entity, key, invokedAt), (loaded) =>
                cache === "failed"
                  ? oweNoOlder(entity, key, loaded)
                  : Option.isSome(loaded)
                    ? leaveNoOlder(entity, key, loaded.value.version)
                    : leaveAbsence(entity, loaded, [key])
              ),
          Option.map((loaded) => loaded.value)
        )
  )

// An answered miss's load: the lease's holder reads the store (the others may find its fill),
// and fills the cache under a ticket taken before the read.
const loadAndFill = <K, A, I>(
  entity: Entity<K, A, I>,
  key: string,
  { leased, replacing }: Answered
): Effect.Effect<Option.Option<Loaded<A>>, StoreError> =>
  Effect.flatMap(entity.takeTicket, (ticket) =>
    leasedRead(entity, key, leased).pipe(
      Effect.tap((loaded) => leaveAbsence(entity, loaded, [key])),
      Effect.flatMap((loaded) =>
        Option.isNone(loaded) || loaded.value.cached === true
          ? Effect.succeed(loaded)
          : Effect.as(
              fillOne(entity, key, loaded.value, ticket, replacing),
              Option.some({ ...loaded.value, cached: true })
            )
      )
    )
  )

const fillOne = <K, A, I>(
  entity: Entity<K, A, I>,
  key: string,
  loaded: Loaded<A>,
  ticket: Ticket,
  replacing: Entry | undefined
): Effect.Effect<void> => {
  const encoded = entity.codec.encodeValue(loaded.value)
  if (Either.isLeft(encoded)) return Effect.void
  const entry = Entry.Value({ version: loaded.version, payload: JSON.stringify(encoded.right) })
  return entity.ttlWithJitter.pipe(
    Effect.flatMap((entryTtl) =>
      entity.boundCache("set", key, entity.cache.set(entity.prefix + key, entry, { ttl: entryTtl, replacing, ticket }))
    ),
    Effect.flatMap((outcome) =>
      outcome === "written"
        ? entity.metrics.get.fills.increment
        : outcome === "outdated"
          ? leaveNoOlder(entity, key, loaded.version)
          : Effect.void
    ),
    Effect.catchAll(() =>
      Effect.zipRight(entity.metrics.get.fillFailures.increment, oweNoOlder(entity, key, Option.some(loaded)))
    )
  )
}

// A reader that returns what it read from the store leaves the cache no older than that, so that
// no read beginning after it returns an older version. A fill refused for its ticket (the cache lost
// its memory, or the ticket ran out) may leave an older write's update to land after it; a tombstone
// one below the version read keeps it out and lets that version's fill in.
const leaveNoOlder = <K, A, I>(entity: Entity<K, A, I>, key: string, version: number): Effect.Effect<void> =>
  leaveTombstone(entity, key, version - 1)

// When the cache fails to take it, this process owes it: it reads the key from the store until it
// landed (so none of its reads goes back to an older cached value), and the repair sends it once
// the cache answers. Best effort: past the ledger's bound it is dropped, so a long outage does not
// make the whole entity owed.
const leaveTombstone = <K, A, I>(entity: Entity<K, A, I>, key: string, version: number): Effect.Effect<void> =>
  entity
    .boundCache("invalidate", key, entity.cache.invalidate(entity.prefix + key, version, entity.settings.tombstoneTtl))
    .pipe(
      Effect.asVoid,
      Effect.catchAll(() => entity.repairs.schedule(key, version, true))
    )

const oweTombstone =
  <K, A, I>(entity: Entity<K, A, I>) =>
  (key: string, version: number): Effect.Effect<void> =>
    entity.repairs.schedule(key, version, true)

// A reader the cache failed does not try it again: it owes the tombstone at once, below the
// version it read, or at the deleted row's when it found none.
const oweNoOlder = <K, A, I>(
  entity: Entity<K, A, I>,
  key: string,
  loaded: Option.Option<Loaded<A>>
): Effect.Effect<void> =>
  Option.isSome(loaded)
    ? entity.repairs.schedule(key, loaded.value.version - 1, true)
    : forEachDeletion(entity, loaded, [key], oweTombstone(entity))

// A reader that found no row leaves a tombstone at the version of the row whose deletion it saw
// (the store's record of it): an older write's cache update, not landed yet, would otherwise serve
// the deleted row to readers that begin after this one returned. A write after the deletion has a
// higher version and is not held off.
const leaveAbsence = <K, A, I>(
  entity: Entity<K, A, I>,
  found: Option.Option<unknown> | ReadonlyMap<string, unknown>,
  keys: ReadonlyArray<string>
): Effect.Effect<void> => forEachDeletion(entity, found, keys, (key, version) => leaveTombstone(entity, key, version))

// For each of `keys` the read found absent, the version of the row whose deletion the store
// recorded (change capture's outbox; nothing without it).
const forEachDeletion = <K, A, I>(
  entity: Entity<K, A, I>,
  found: Option.Option<unknown> | ReadonlyMap<string, unknown>,
  keys: ReadonlyArray<string>,
  f: (key: string, version: number) => Effect.Effect<void>
): Effect.Effect<void> => {
  const { deletions } = entity.collection
  const absent = Option.isOption(found) ? (Option.isNone(found) ? keys : []) : keys.filter((key) => !found.has(key))
  if (deletions === undefined || absent.length === 0) return Effect.void
  return Deadline.timeoutFail(deletions(absent), entity.settings.storeTimeout, () =>
    storeReadTimeout(entity, absent[0]!)
  ).pipe(
    Effect.flatMap((versions) =>
      Effect.forEach(versions, ([key, version]) => f(key, version), { concurrency: 16, discard: true })
    ),
    Effect.ignore
  )
}

// Single flight: concurrent misses of one key share one store read, but a reader joins only a
// read sent after it was invoked. One sent earlier may predate a write (from this process or
// any other) that was acknowledged before the reader began, and would hand it an older value.
// Times are logical: a counter, advanced as readers begin and as loads start.
//
// An answered miss (`answered`) joins only a load that fills the cache, under the ticket its
// loader took before reading: a reader filling with a ticket of its own, taken after a read it
// joined, could land a value older than a write whose cache update a Redis restart in between
// lost. A reader that must not trust the cache joins only a plain store read, never one whose
// value may come from another process's fill.
const sharedRead = <K, A, I>(
  entity: Entity<K, A, I>,
  key: string,
  invokedAt: number,
  answered?: Answered
): Effect.Effect<Option.Option<Loaded<A>>, StoreError> =>
  Effect.suspend(() => {
    const { flights } = entity
    const fills = answered !== undefined
    const current = flights.loads.get(key)
    if (current !== undefined && current.sentAt > invokedAt && current.fills === fills) {
      const result = current.exit ?? Deferred.await((current.result ??= Deferred.unsafeMake(FiberId.none)))
      // A load whose reader was interrupted tells the others nothing: they read for themselves.
      return Effect.catchAllCause(result, (cause) =>
        Cause.isInterruptedOnly(cause)
          ? fills
            ? loadAndFill(entity, key, answered)
            : storeRead(entity, key)
          : Effect.failCause(cause)
      )
    }
    const load: Load<A> = { sentAt: ++flights.time, fills, result: undefined, exit: undefined }
    flights.loads.set(key, load)
    const read = fills ? loadAndFill(entity, key, answered) : storeRead(entity, key)
    return Effect.onExit(read, (exit) => {
      if (flights.loads.get(key) === load) endLoad(flights, key, load, exit)
      return load.result === undefined ? Effect.void : Deferred.done(load.result, exit)
    })
  })

// A filled load stays for the readers still waiting for the cache's answer (see `Flights.lookingUp`).
const endLoad = <A>(
  flights: Flights<A>,
  key: string,
  load: Load<A>,
  exit: Exit.Exit<Option.Option<Loaded<A>>, StoreError>
): void => {
  if (!load.fills || Exit.isFailure(exit) || (flights.lookingUp === 0 && !flights.forgetting)) {
    flights.loads.delete(key)
    return
  }
  load.exit = exit
  if (++flights.ended > maxEndedLoads) forgetEnded(flights)
}

// The lease's holder reads the store; the others wait for its fill, within bounds. Whatever
// shows up in the cache after a write was acknowledged is at least as new as that write (the
// guard saw to it), so a waiter may take it. `granted` is the lease's answer when the lookup asked
// for it already.
const leasedRead = <K, A, I>(
  entity: Entity<K, A, I>,
  key: string,
  granted: boolean | undefined
): Effect.Effect<Option.Option<Loaded<A>>, StoreError> => {
  const { lease } = entity.settings
  if (lease === undefined) return storeRead(entity, key)
  const asked =
    granted !== undefined
      ? Effect.succeed(granted)
      : Effect.orElseSucceed(
          entity.boundCache("lease", key, entity.cache.lease(entity.prefix + key, lease.ttl)),
          () => true
        )
  return Effect.flatMap(asked, (granted) => (granted ? storeRead(entity, key) : awaitFill(entity, key, lease)))
}

const awaitFill = <K, A, I>(
  entity: Entity<K, A, I>,
  key: string,
  { poll, wait }: Lease
): Effect.Effect<Option.Option<Loaded<A>>, StoreError> =>
  Effect.gen(function* () {
    yield* entity.metrics.get.leaseWaits.increment
    const giveUpAt = (yield* Clock.currentTimeMillis) + wait
    while ((yield* Clock.currentTimeMillis) < giveUpAt) {
      yield* Effect.sleep(poll)
      const cached = yield* Effect.either(entity.boundCache("get", key, entity.cache.get(entity.prefix + key)))
      if (Either.isLeft(cached) || Option.isNone(cached.right)) continue
      const entry = cached.right.value
      if (entry._tag === "Tombstone") break
      const decoded = entity.codec.decodeEntry(entry)
      if (Either.isLeft(decoded)) break
      return Option.some({ version: entry.version, value: decoded.right, cached: true })
    }
    return yield* storeRead(entity, key)
  })

const storeValue = <K, A, I>(entity: Entity<K, A, I>, key: string): Effect.Effect<Option.Option<A>, StoreError> =>
  Effect.map(
    storeRead(entity, key),
    Option.map((loaded) => loaded.value)
  )

const storeRead = <K, A, I>(
  entity: Entity<K, A, I>,
  key: string
): Effect.Effect<Option.Option<Loaded<A>>, StoreError> =>
  Deadline.timeoutFail(entity.collection.get(key), entity.settings.storeTimeout, () =>
    storeReadTimeout(entity, key)
  ).pipe(
    Effect.flatMap((row) => {
      if (Option.isNone(row)) return Effect.succeedNone
      const decoded = entity.codec.decodeRow(key, row.value.value)
      return Either.isRight(decoded)
        ? Effect.succeed(Option.some({ version: row.value.version, value: decoded.right }))
        : Effect.fail(decoded.left)
    })
  )

const storeReadTimeout = <K, A, I>(entity: Entity<K, A, I>, key: string) =>
  StoreErrors.timedOut(
    { entity: entity.name, key, operation: "get" },
    { detail: `no answer within ${Duration.format(entity.settings.storeTimeout)}` }
  )

/** Many keys: one cache round trip, one store query for the misses, one pipelined fill. */
export const getMany = <K, A, I>(
  entity: Entity<K, A, I>,
  keys: Iterable<K>
): Effect.Effect<ReadonlyArray<Option.Option<A>>, ReadError> =>
  entity.observed("getMany", (outcome) =>
    Effect.gen(function* () {
      const texts: Array<string> = []
      for (const key of keys) texts.push(yield* entity.codec.checkKey(key))
      const unique = [...new Set(texts)]
      if (unique.length === 0) return []
      const ticket = yield* entity.takeTicket
      const cached = yield* Effect.either(
        entity.boundCache("getMany", unique[0]!, entity.cache.getMany(unique.map((key) => entity.prefix + key)))
      )
      const { found, misses } = Either.isLeft(cached)
        ? yield* allMissed(entity, unique, outcome)
        : yield* sortCached(entity, unique, cached.right, outcome)
      if (misses.length > 0) {
        const loaded = yield* loadMisses(entity, misses, found)
        // A read inside a database transaction may see rows that are not committed: not for the cache.
        if (!(yield* entity.store.inTransaction)) {
          yield* Either.isRight(cached)
            ? publishMisses(entity, ticket, misses, loaded)
            : oweMisses(entity, misses, loaded)
        }
      }
      return texts.map((key) => Option.fromNullable(found.get(key)))
    })
  )

// After a failed cache call, what the store answered for the misses is owed instead: a tombstone
// below each row read, and one for each key found deleted.
const oweMisses = <K, A, I>(
  entity: Entity<K, A, I>,
  misses: ReadonlyArray<Miss>,
  loaded: ReadonlyArray<LoadedKey<A>>
): Effect.Effect<void> =>
  Effect.zipRight(
    Effect.forEach(loaded, (row) => oweNoOlder(entity, row.key, Option.some(row)), { discard: true }),
    forEachDeletion(
      entity,
      new Map(loaded.map((row) => [row.key, row])),
      misses.map(({ key }) => key),
      oweTombstone(entity)
    )
  )

// What the store answered for the misses goes to the cache: a fill, except for a key this process
// owes a tombstone (its value in the cache may be older than a write this process acknowledged),
// which gets a tombstone below what was read, as `get` leaves one; and a tombstone for each key
// found deleted.
const publishMisses = <K, A, I>(
  entity: Entity<K, A, I>,
  ticket: Ticket,
  misses: ReadonlyArray<Miss>,
  loaded: ReadonlyArray<LoadedKey<A>>
): Effect.Effect<void> =>
  Effect.all(
    [
      fillMany(
        entity,
        ticket,
        loaded.filter(({ key }) => !entity.repairs.owes(key))
      ),
      Effect.forEach(
        loaded.filter(({ key }) => entity.repairs.owes(key)),
        ({ key, version }) => leaveNoOlder(entity, key, version),
        { concurrency: 16, discard: true }
      ),
      leaveAbsence(
        entity,
        new Map(loaded.map((row) => [row.key, row])),
        misses.map(({ key }) => key)
      )
    ],
    { discard: true }
  )

interface Miss {
  readonly key: string
  /** An entry that failed to decode: a fill may replace it whatever its version. */
  readonly replacing?: Entry
}

interface Sorted<A> {
  readonly found: Map<string, A>
  readonly misses: Array<Miss>
}

const allMissed = <K, A, I>(
  entity: Entity<K, A, I>,
  keys: ReadonlyArray<string>,
  outcome: (outcome: string) => void
): Effect.Effect<Sorted<A>> => {
  outcome("degraded")
  return Effect.as(entity.metrics.getMany.degraded.incrementBy(keys.length), {
    found: new Map(),
    misses: keys.map((key) => ({ key }))
  })
}

const sortCached = <K, A, I>(
  entity: Entity<K, A, I>,
  keys: ReadonlyArray<string>,
  entries: ReadonlyArray<Option.Option<Entry>>,
  outcome: (outcome: string) => void
): Effect.Effect<Sorted<A>> => {
  const found = new Map<string, A>()
  const misses: Array<Miss> = []
  keys.forEach((key, i) => {
    const entry = entries[i]!
    if (entity.repairs.owes(key)) return void misses.push({ key })
    if (Option.isSome(entry) && entry.value._tag === "Value") {
      const decoded = entity.codec.decodeEntry(entry.value)
      if (Either.isRight(decoded)) return void found.set(key, decoded.right)
      misses.push({ key, replacing: entry.value })
    } else {
      misses.push({ key })
    }
  })
  // "hit" only when every key was served by the cache.
  outcome(misses.length === 0 ? "hit" : "miss")
  return Effect.as(
    Effect.zipRight(
      entity.metrics.getMany.hits.incrementBy(found.size),
      entity.metrics.getMany.misses.incrementBy(misses.length)
    ),
    { found, misses }
  )
}

interface LoadedKey<A> extends Loaded<A> {
  readonly key: string
  readonly replacing?: Entry
}

// One store query for the misses; what it found joins `found`.
const loadMisses = <K, A, I>(
  entity: Entity<K, A, I>,
  misses: ReadonlyArray<Miss>,
  found: Map<string, A>
): Effect.Effect<ReadonlyArray<LoadedKey<A>>, StoreError> =>
  Effect.gen(function* () {
    const rows = yield* Deadline.timeoutFail(
      entity.collection.getMany(misses.map(({ key }) => key)),
      entity.settings.storeTimeout,
      () => storeReadTimeout(entity, misses[0]!.key)
    )
    const loaded: Array<LoadedKey<A>> = []
    for (const { key, replacing } of misses) {
      const row = rows.get(key)
      if (row === undefined) continue
      const decoded = entity.codec.decodeRow(key, row.value)
      if (Either.isLeft(decoded)) return yield* decoded.left
      found.set(key, decoded.right)
      loaded.push({
        key,
        version: row.version,
        value: decoded.right,
        ...(replacing === undefined ? {} : { replacing })
      })
    }
    return loaded
  })

const fillMany = <K, A, I>(
  entity: Entity<K, A, I>,
  ticket: Ticket,
  loaded: ReadonlyArray<LoadedKey<A>>
): Effect.Effect<void> =>
  Effect.flatMap(entity.ttlWithJitter, (entryTtl) => {
    const filled = loaded.flatMap((row) => {
      const encoded = entity.codec.encodeValue(row.value)
      return Either.isLeft(encoded) ? [] : [{ row, payload: JSON.stringify(encoded.right) }]
    })
    const items = filled.map(({ payload, row }) => ({
      key: entity.prefix + row.key,
      entry: Entry.Value({ version: row.version, payload }),
      options: { ttl: entryTtl, ticket, replacing: row.replacing }
    }))
    return items.length === 0
      ? Effect.void
      : entity.boundCache("setMany", loaded[0]!.key, entity.cache.setMany(items)).pipe(
          Effect.tap((outcomes) =>
            entity.metrics.getMany.fills.incrementBy(outcomes.filter((outcome) => outcome === "written").length)
          ),
          Effect.flatMap((outcomes) =>
            Effect.forEach(
              filled.filter((_, i) => outcomes[i] === "outdated"),
              ({ row }) => leaveNoOlder(entity, row.key, row.version),
              { concurrency: 16, discard: true }
            )
          ),
          Effect.catchAll(() =>
            Effect.zipRight(
              entity.metrics.getMany.fillFailures.incrementBy(items.length),
              Effect.forEach(filled, ({ row }) => oweNoOlder(entity, row.key, Option.some(row)), { discard: true })
            )
          ),
          Effect.asVoid
        )
  })

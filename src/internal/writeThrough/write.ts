// The write path, top to bottom: `set`, `setMany` and `delete` validate, then write the store, then
// publish the committed version to the cache (or, inside WriteThrough.transaction, defer the
// publication to the COMMIT); a cache that cannot take the update gets a tombstone, and a store
// whose outcome is unknown gets the key fenced.
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import { type CacheError, Entry, FENCE_VERSION, type Ticket, type WriteOutcome } from "../../Cache.js"
import type { StoreError, StoreOutcomeUnknownError } from "../../Store.js"
import type { WriteError } from "../../WriteThrough.js"
import {
  InconsistentCacheError,
  type KeyWriteOperation,
  StaleCacheError,
  ValidationError,
  type WriteOperation
} from "../../WriteThroughError.js"
import * as Deadline from "../deadline.js"
import * as StoreErrors from "../storeError.js"
import { type CheckedValue, describeKey } from "./codec.js"
import type { Entity } from "./entity.js"
import { worthAnotherCall } from "./instruments.js"
import { currentPublications, type Publications } from "./transaction.js"

/** The writes of one entity's own, outside or inside a transaction. */
type EntityWriteOperation = Exclude<WriteOperation, "transaction">

type StoreWrite<V> = Effect.Effect<V, StoreError | StoreOutcomeUnknownError>

export const set = <K, A, I>(entity: Entity<K, A, I>, key: K, value: A): Effect.Effect<void, WriteError> =>
  entity.observed("set", () =>
    Effect.flatMap(entity.codec.checkKey(key), (text) =>
      Effect.flatMap(entity.codec.checkValue(text, value), ({ encoded, payload }) =>
        Effect.flatMap(entity.takeTicket, (ticket) =>
          writeOrDefer(entity, "set", text, entity.collection.put(text, encoded), (version) =>
            publishValue(entity, text, version, payload, ticket)
          )
        )
      )
    )
  )

export const remove = <K, A, I>(entity: Entity<K, A, I>, key: K): Effect.Effect<void, WriteError> =>
  entity.observed("delete", () =>
    Effect.flatMap(entity.codec.checkKey(key), (text) =>
      writeOrDefer(entity, "delete", text, entity.collection.delete(text), (version) =>
        publish(
          entity,
          "delete",
          text,
          version,
          entity.cache.invalidate(entity.prefix + text, version, entity.settings.tombstoneTtl)
        )
      )
    )
  )

// Many keys: one store statement (all or nothing), one pipelined cache write; a key whose cache
// write failed or was refused for its ticket then goes the way of a single set (retries, then
// invalidation, then StaleCacheError). An unknown store outcome fences every key.
export const setMany = <K, A, I>(
  entity: Entity<K, A, I>,
  entries: Iterable<readonly [K, A]>
): Effect.Effect<void, WriteError> =>
  entity.observed("setMany", () =>
    Effect.gen(function* () {
      const items = new Map<string, CheckedValue<I>>()
      for (const [key, value] of entries) {
        const text = yield* entity.codec.checkKey(key)
        const checked = yield* entity.codec.checkValue(text, value)
        // The last value of a key wins, as with sets one after the other.
        items.delete(text)
        items.set(text, checked)
      }
      if (items.size === 0) return
      const keys = [...items.keys()]
      if (keys.length > entity.settings.maxBatchSize) {
        return yield* new ValidationError({
          entity: entity.name,
          key: describeKey(keys[0]),
          field: "key",
          detail: `a setMany of ${keys.length} keys is over the limit of ${entity.settings.maxBatchSize} (maxBatchSize); split it`
        })
      }
      const ticket = yield* entity.takeTicket
      const write = entity.collection.putMany(keys.map((key) => [key, items.get(key)!.encoded] as const))
      const publications = yield* FiberRef.get(currentPublications)
      if (publications !== undefined) {
        return yield* writeInTransaction(entity, publications, "setMany", keys[0]!, write, (versions) =>
          keys.map((key) => ({
            key,
            publish: publishValue(entity, key, versions.get(key)!, items.get(key)!.payload, ticket)
          }))
        )
      }
      return yield* writeThrough(
        entity,
        "setMany",
        keys,
        write,
        (cause) => fenceBatch(entity, keys, cause),
        (versions) => publishBatch(entity, items, versions, ticket)
      )
    })
  )

// One pipelined cache write; the keys it could not place go the way of a single set.
const publishBatch = <K, A, I>(
  entity: Entity<K, A, I>,
  items: ReadonlyMap<string, CheckedValue<I>>,
  versions: ReadonlyMap<string, number>,
  ticket: Ticket
): Effect.Effect<void, StaleCacheError> =>
  Effect.gen(function* () {
    const keys = [...items.keys()]
    const ttls = yield* Effect.forEach(keys, () => entity.ttlWithJitter)
    const outcomes = yield* Effect.either(
      entity.boundCache(
        "setMany",
        keys[0]!,
        entity.cache.setMany(
          keys.map((key, i) => ({
            key: entity.prefix + key,
            entry: Entry.Value({ version: versions.get(key)!, payload: items.get(key)!.payload }),
            options: { ttl: ttls[i]!, ticket }
          }))
        )
      )
    )
    if (Either.isLeft(outcomes) && !worthAnotherCall(outcomes.left)) {
      return yield* reportStaleBatch(entity, keys, versions, outcomes.left)
    }
    const again = Either.isLeft(outcomes) ? keys : keys.filter((_, i) => outcomes.right[i] === "outdated")
    const published = yield* Effect.forEach(
      again,
      (key) => Effect.either(publishValue(entity, key, versions.get(key)!, items.get(key)!.payload, ticket)),
      { concurrency: 16 }
    )
    const failed = published.find(Either.isLeft)
    if (failed !== undefined) return yield* failed.left
  })

// The cache timed out or its breaker is open: no call per key, each key owed a tombstone.
const reportStaleBatch = <K, A, I>(
  entity: Entity<K, A, I>,
  keys: ReadonlyArray<string>,
  versions: ReadonlyMap<string, number>,
  cause: CacheError
): Effect.Effect<never, StaleCacheError> =>
  Effect.zipRight(
    Effect.zipRight(
      Effect.forEach(keys.slice(1), (key) => entity.repairs.schedule(key, versions.get(key)!), { discard: true }),
      entity.metrics.set.stale.incrementBy(keys.length - 1)
    ),
    reportStale(entity, "set", keys[0]!, versions.get(keys[0]!)!, [cause])
  )

const fenceBatch = <K, A, I>(
  entity: Entity<K, A, I>,
  keys: ReadonlyArray<string>,
  cause: unknown
): Effect.Effect<never, InconsistentCacheError> =>
  Effect.flatMap(
    Effect.forEach(keys, (key) => fenceKey(entity, "setMany", key), { concurrency: 16 }),
    (fenced) => {
      const invalidated = fenced.every((landed) => landed)
      return Effect.zipRight(
        Effect.zipRight(
          entity.metrics.setMany.inconsistent.incrementBy(keys.length),
          Effect.logError("the store's outcome is unknown; the keys were fenced in the cache").pipe(
            Effect.annotateLogs({ entity: entity.name, operation: "setMany", invalidated })
          )
        ),
        Effect.fail(
          new InconsistentCacheError({
            entity: entity.name,
            key: keys[0]!,
            operation: "setMany",
            invalidated,
            keys: keys.map((key) => ({ entity: entity.name, key })),
            cause
          })
        )
      )
    }
  )

// A write outside WriteThrough.transaction goes through now; inside it, its publication waits for the COMMIT.
const writeOrDefer = <K, A, I>(
  entity: Entity<K, A, I>,
  operation: KeyWriteOperation,
  key: string,
  write: StoreWrite<number>,
  publishVersion: (version: number) => Effect.Effect<void, StaleCacheError>
): Effect.Effect<void, WriteError> =>
  Effect.flatMap(FiberRef.get(currentPublications), (publications) =>
    publications === undefined
      ? writeThrough(entity, operation, [key], write, (cause) => fence(entity, operation, key, cause), publishVersion)
      : writeInTransaction(entity, publications, operation, key, write, (version) => [
          { key, publish: publishVersion(version) }
        ])
  )

// Writes the store, then publishes the committed version to the cache. Once the store call has
// begun, the outcome is unknown until it answers: a timeout, a lost connection or a defect (such
// as a failing COMMIT) fences the key, and so does an interruption of the caller; once the store
// answered, publishing runs to its end, within its own bounds.
const writeThrough = <K, A, I, V>(
  entity: Entity<K, A, I>,
  operation: EntityWriteOperation,
  keys: ReadonlyArray<string>,
  write: StoreWrite<V>,
  fenceAll: (cause: unknown) => Effect.Effect<never, InconsistentCacheError>,
  publishWritten: (written: V) => Effect.Effect<void, StaleCacheError>
): Effect.Effect<void, WriteError> => {
  const { detached, settings } = entity
  return Effect.uninterruptibleMask((restore) =>
    restore(
      Deadline.timeoutFail(
        write,
        settings.storeTimeout,
        () => new Cause.TimeoutException(`no answer from the store within ${Duration.format(settings.storeTimeout)}`)
      )
    ).pipe(
      Effect.onInterrupt(() =>
        Effect.zipRight(
          entity.metrics[operation].inconsistent.incrementBy(keys.length),
          detached(Effect.ignore(Effect.forEach(keys, (key) => invalidate(entity, operation, key, FENCE_VERSION))))
        )
      ),
      Effect.catchTags({
        TimeoutException: (timeout) => detached(fenceAll(timeout)),
        StoreOutcomeUnknownError: (unknown) => detached(fenceAll(unknown))
      }),
      Effect.catchAllDefect((defect) => detached(fenceAll(defect))),
      Effect.flatMap((written) => detached(publishWritten(written)))
    )
  )
}

// Inside WriteThrough.transaction: the store write joins the transaction, and its cache update
// waits for the COMMIT. A write that fails here leaves the transaction unable to commit, so its
// outcome is known (nothing of it will commit) and no fence is needed.
const writeInTransaction = <K, A, I, V>(
  entity: Entity<K, A, I>,
  publications: Publications,
  operation: EntityWriteOperation,
  key: string,
  write: StoreWrite<V>,
  defer: (written: V) => ReadonlyArray<{ readonly key: string; readonly publish: Effect.Effect<void, StaleCacheError> }>
): Effect.Effect<void, StoreError> =>
  Deadline.timeoutFail(write, entity.settings.storeTimeout, () =>
    StoreErrors.timedOut(
      { entity: entity.name, key, operation },
      { detail: `no answer within ${Duration.format(entity.settings.storeTimeout)}; the transaction will not commit` }
    )
  ).pipe(
    Effect.catchTag("StoreOutcomeUnknownError", (lost) =>
      Effect.fail(
        StoreErrors.unavailable(
          { entity: entity.name, key, operation },
          { detail: "the transaction lost its connection and will not commit", cause: lost }
        )
      )
    ),
    Effect.tapError(() =>
      Effect.sync(() => {
        publications.failed = true
      })
    ),
    Effect.map((written) => {
      for (const { key, publish } of defer(written)) deferPublication(entity, publications, key, publish)
    })
  )

const deferPublication = <K, A, I>(
  entity: Entity<K, A, I>,
  publications: Publications,
  key: string,
  publish: Effect.Effect<void, StaleCacheError>
) => {
  const id = entity.prefix + key
  // A later write of the same key in the transaction has the higher version: it alone is published.
  publications.updates.delete(id)
  publications.updates.set(id, {
    id,
    entity: entity.name,
    key,
    // Run after the COMMIT in the combinator's uninterruptible region: detached, so that the
    // cache call's bound can still interrupt it.
    publish: entity.detached(publish),
    fence: Effect.tap(entity.detached(fenceKey(entity, "transaction", key)), (invalidated) =>
      Effect.zipRight(
        entity.metrics.transaction.inconsistent.increment,
        Effect.logError("a transaction's outcome is unknown; the key was fenced in the cache").pipe(
          Effect.annotateLogs({ entity: entity.name, operation: "transaction", invalidated })
        )
      )
    )
  })
}

const publishValue = <K, A, I>(
  entity: Entity<K, A, I>,
  key: string,
  version: number,
  payload: string,
  ticket: Ticket
): Effect.Effect<void, StaleCacheError> =>
  publish(
    entity,
    "set",
    key,
    version,
    Effect.flatMap(entity.ttlWithJitter, (entryTtl) =>
      entity.cache.set(entity.prefix + key, Entry.Value({ version, payload }), { ttl: entryTtl, ticket })
    )
  )

// The write is committed at `version`: make the cache hold it, or fence the old value off with a
// tombstone, or say that it may be stale.
const publish = <K, A, I>(
  entity: Entity<K, A, I>,
  operation: KeyWriteOperation,
  key: string,
  version: number,
  update: Effect.Effect<WriteOutcome, CacheError>
): Effect.Effect<void, StaleCacheError> =>
  entity.boundCache(operation, key, update).pipe(
    (effect) => entity.metrics[operation].retry(effect),
    Effect.either,
    Effect.flatMap((updated) => {
      if (Either.isRight(updated) && updated.right !== "outdated") return Effect.void
      // Failed, or refused because the guard cannot vouch for it: a tombstone is always safe.
      const updateError = Either.isLeft(updated) ? updated.left : undefined
      if (updateError !== undefined && !worthAnotherCall(updateError)) {
        return reportStale(entity, operation, key, version, [updateError])
      }
      return invalidate(entity, operation, key, version).pipe(
        Effect.matchEffect({
          onSuccess: () =>
            Effect.zipRight(
              entity.metrics[operation].fallbacks.increment,
              updateError === undefined
                ? Effect.void
                : Effect.logWarning("cache update failed; invalidated the key instead").pipe(
                    Effect.annotateLogs({ entity: entity.name, operation, version })
                  )
            ),
          onFailure: (invalidateError) =>
            reportStale(
              entity,
              operation,
              key,
              version,
              updateError === undefined ? [invalidateError] : [updateError, invalidateError]
            )
        })
      )
    })
  )

const reportStale = <K, A, I>(
  entity: Entity<K, A, I>,
  operation: KeyWriteOperation,
  key: string,
  version: number,
  cause: ReadonlyArray<CacheError>
): Effect.Effect<never, StaleCacheError> => {
  const { maxTtl } = entity.settings
  return Effect.flatMap(Clock.currentTimeMillis, (now) =>
    Effect.zipRight(
      Effect.all([
        entity.metrics[operation].stale.increment,
        entity.repairs.schedule(key, version),
        Effect.logError("cache update and invalidation failed after a commit; the cache may be stale").pipe(
          Effect.annotateLogs({ entity: entity.name, operation, version, maxStaleness: Duration.format(maxTtl) })
        )
      ]),
      Effect.fail(
        new StaleCacheError({
          entity: entity.name,
          key,
          operation,
          version,
          maxStaleness: maxTtl,
          staleUntil: now + Duration.toMillis(maxTtl),
          cause
        })
      )
    )
  )
}

const invalidate = <K, A, I>(entity: Entity<K, A, I>, operation: WriteOperation, key: string, version: number) =>
  entity.metrics[operation].retry(
    entity.boundCache(
      "invalidate",
      key,
      entity.cache.invalidate(entity.prefix + key, version, entity.settings.tombstoneTtl)
    )
  )

// The store may or may not have committed: fence the key so no reader trusts the cache for it.
// True when the fence landed; otherwise it is retried in the background.
const fenceKey = <K, A, I>(entity: Entity<K, A, I>, operation: WriteOperation, key: string): Effect.Effect<boolean> =>
  invalidate(entity, operation, key, FENCE_VERSION).pipe(
    Effect.as(true),
    Effect.catchAll(() => Effect.as(entity.repairs.schedule(key, FENCE_VERSION), false))
  )

const fence = <K, A, I>(
  entity: Entity<K, A, I>,
  operation: KeyWriteOperation,
  key: string,
  cause: unknown
): Effect.Effect<never, InconsistentCacheError> =>
  fenceKey(entity, operation, key).pipe(
    Effect.tap((invalidated) =>
      Effect.zipRight(
        entity.metrics[operation].inconsistent.increment,
        Effect.logError("the store's outcome is unknown; the key was fenced in the cache").pipe(
          Effect.annotateLogs({ entity: entity.name, operation, invalidated })
        )
      )
    ),
    Effect.flatMap((invalidated) =>
      Effect.fail(new InconsistentCacheError({ entity: entity.name, key, operation, invalidated, cause }))
    )
  )

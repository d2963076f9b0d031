// One entity as the read path and the write path see it: its settings resolved, its codec, its
// instruments, its cache calls bounded, and the state its operations share. Built once per entity.
import type * as Deferred from "effect/Deferred"
import type * as Exit from "effect/Exit"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Option from "effect/Option"
import * as Random from "effect/Random"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { Cache, CacheError, type Ticket } from "../../Cache.js"
import { Store, type StoreError } from "../../Store.js"
import type { Options } from "../../WriteThrough.js"
import * as CacheNamespace from "../cacheNamespace.js"
import * as Deadline from "../deadline.js"
import * as Codec from "./codec.js"
import * as Instruments from "./instruments.js"
import * as Repair from "./repair.js"
import { defaultRetry } from "./settings.js"

export interface Resolved {
  readonly ttl: Duration.Duration
  readonly ttlJitter: number
  /** The TTL with its largest jitter: how long an entry can outlive its last write. */
  readonly maxTtl: Duration.Duration
  readonly tombstoneTtl: Duration.Duration
  readonly cacheTimeout: Duration.Duration
  readonly storeTimeout: Duration.Duration
  readonly maxBatchSize: number
  readonly repairInterval: Duration.Duration
  readonly owedTombstones: Repair.Bounds
  readonly retry: Schedule.Schedule<unknown, CacheError>
  readonly lease: Lease | undefined
}

export interface Lease {
  readonly ttl: Duration.Duration
  readonly wait: number
  readonly poll: Duration.Duration
}

export interface Entity<K, A, I> extends Instruments.Instruments {
  readonly name: string
  /** Every cache key of the entity starts with it. */
  readonly prefix: string
  readonly cache: Cache.Service
  readonly store: Store.Service
  readonly collection: Store.Collection
  readonly settings: Resolved
  readonly codec: Codec.Codec<K, A, I>
  /** A cache call, bounded by `cacheTimeout` unless the cache bounds its own; a failure is counted. */
  readonly boundCache: <X>(
    call: string,
    key: string,
    effect: Effect.Effect<X, CacheError>
  ) => Effect.Effect<X, CacheError>
  /** Cache work that must finish whatever happens to the caller (see `detachedFor`). */
  readonly detached: <X, E>(effect: Effect.Effect<X, E>) => Effect.Effect<X, E>
  readonly ttlWithJitter: Effect.Effect<Duration.Duration>
  /**
   * Taken before the store is read or written, and carried by the cache write that publishes the
   * result: the cache refuses it if it lost its memory since, or if it lands after any tombstone
   * written meanwhile could have expired.
   */
  readonly takeTicket: Effect.Effect<Ticket>
  /** The tombstones this process owes the cache; `Repair.run` retries them. */
  readonly repairs: Repair.Ledger
  /** The single flight of the read path: store reads in progress, and its logical clock. */
  readonly flights: Flights<A>
}

export interface Flights<A> {
  /** Advanced as readers begin and as loads start. */
  time: number
  /**
   * Readers waiting for the cache's answer. A load that filled the cache and ends while any is
   * waiting stays in `loads`, ended, until none is and their fibers have run on (a turn of the event
   * loop later): one of them may be a miss that began before the load was sent, and may take its
   * result as the load's own readers did. Without this, a burst of misses whose answers came back
   * in several socket reads read the store again for the later ones.
   */
  lookingUp: number
  /** Ended loads kept in `loads` for those readers; `forgetting` once their removal is scheduled. */
  ended: number
  forgetting: boolean
  readonly loads: Map<string, Load<A>>
}

/** A row read from the store, decoded. */
export interface Loaded<A> {
  readonly version: number
  readonly value: A
  /** The cache has it already (the lease holder's fill, or the load's own): nothing to fill. */
  readonly cached?: boolean
}

/** A store read in progress, which readers invoked before `sentAt` may join. */
export interface Load<A> {
  readonly sentAt: number
  /**
   * An answered miss's load: under the lease (the value may be another process's fill, found in
   * the cache), and it fills the cache itself under a ticket taken before its read, so that the
   * readers who join it have nothing to fill. Otherwise a plain store read.
   */
  readonly fills: boolean
  /**
   * Made by the first reader that joins: most loads have none, and a Deferred costs about 7 us of
   * CPU to make. The load's reader completes it, if made, when the read ends.
   */
  result: Deferred.Deferred<Option.Option<Loaded<A>>, StoreError> | undefined
  /** How it ended, once it has: a filling load that succeeded is kept for late readers. */
  exit: Exit.Exit<Option.Option<Loaded<A>>, StoreError> | undefined
}

const entityPattern = /^[A-Za-z0-9_./-]+$/

const resolveSettings = (options: Options<unknown, unknown, unknown>): Resolved => {
  const ttl = Duration.decode(options.ttl ?? "1 hour")
  const ttlJitter = options.ttlJitter ?? 0.1
  return {
    ttl,
    ttlJitter,
    maxTtl: Duration.times(ttl, 1 + ttlJitter),
    tombstoneTtl: Duration.decode(options.tombstoneTtl ?? "30 seconds"),
    cacheTimeout: Duration.decode(options.cacheTimeout ?? "1 second"),
    storeTimeout: Duration.decode(options.storeTimeout ?? "5 seconds"),
    maxBatchSize: options.maxBatchSize ?? 500,
    repairInterval: Duration.decode(options.repairInterval ?? "1 second"),
    owedTombstones: {
      maxKeys: options.owedTombstones?.maxKeys ?? 10_000,
      maxBytes: options.owedTombstones?.maxBytes ?? 4 * 1024 * 1024
    },
    retry: options.retry ?? defaultRetry,
    lease:
      options.lease === false
        ? undefined
        : {
            ttl: Duration.decode(options.lease?.ttl ?? "2 seconds"),
            wait: Duration.toMillis(options.lease?.wait ?? "250 millis"),
            poll: Duration.decode(options.lease?.poll ?? "5 millis")
          }
  }
}

/**
 * Claims the entity's namespace on the cache (for `owner`, named in the error when another entity
 * holds it) and checks the store fits it.
 */
export const make = <K, A, I>(
  options: Options<K, A, I> & { readonly entity: string },
  owner: string
): Effect.Effect<Entity<K, A, I>, StoreError, Cache | Store | Scope.Scope> =>
  Effect.gen(function* () {
    const name = options.entity
    if (!entityPattern.test(name)) {
      return yield* Effect.dieMessage(`WriteThrough: entity ${JSON.stringify(name)} must match ${entityPattern}`)
    }
    const cache = yield* Cache
    const prefix = `${name}:`
    yield* CacheNamespace.claim(cache, prefix, owner)
    const settings = resolveSettings(options as Options<unknown, unknown, unknown>)
    const codec = Codec.make({
      entity: name,
      key: options.key,
      value: options.value,
      table: options.table,
      maxKeyBytes: options.maxKeyBytes ?? 1024,
      reusesEntries: cache.reusesEntries
    })
    const store = yield* Store
    const collection = yield* store.collection({ entity: name, fields: codec.fields, table: options.table })
    const instruments = Instruments.make(name, settings.retry)
    const boundCache = cacheCallBound(cache, settings.cacheTimeout, instruments.countCacheError)
    const repairs = Repair.make(settings.owedTombstones, settings.maxTtl, name)
    return {
      ...instruments,
      name,
      prefix,
      cache,
      store,
      collection,
      settings,
      codec,
      boundCache,
      detached: detachedFor(cache),
      ttlWithJitter: Effect.map(Random.next, (r) => Duration.times(settings.ttl, 1 + r * settings.ttlJitter)),
      takeTicket: cache.ticket(settings.tombstoneTtl),
      repairs,
      flights: { time: 0, lookingUp: 0, ended: 0, forgetting: false, loads: new Map() }
    }
  })

// A timeout costs a fiber per call: only for a cache that does not bound its calls itself.
const cacheCallBound = (
  cache: Cache.Service,
  cacheTimeout: Duration.Duration,
  countCacheError: (call: string) => Effect.Effect<void>
): Entity<unknown, unknown, unknown>["boundCache"] =>
  cache.selfBounded
    ? (call, _key, effect) => Effect.tapError(effect, () => countCacheError(call))
    : (call, key, effect) =>
        Effect.tapError(
          Deadline.timeoutFail(effect, cacheTimeout, () => new CacheError({ operation: call, key, reason: "Timeout" })),
          () => countCacheError(call)
        )

// Cache work that must finish whatever happens to the caller runs uninterruptibly. A cache that
// bounds its own calls needs nothing more; otherwise the work runs in a fiber of its own,
// interruptible so that the timeouts work, and the caller waits for it uninterruptibly.
const detachedFor = (cache: Cache.Service): (<X, E>(effect: Effect.Effect<X, E>) => Effect.Effect<X, E>) =>
  cache.selfBounded
    ? (effect) => effect
    : (effect) => Effect.flatMap(Effect.forkDaemon(Effect.interruptible(effect)), Fiber.join)

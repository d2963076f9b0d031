/**
 * The `Cache` in process memory: bounded, least recently used out first, with
 * TTLs read from Effect's `Clock` so `TestClock` controls expiry.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import { randomUUID } from "node:crypto"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { Cache, Entry, type SetOptions, type WriteOutcome } from "./Cache.js"
import * as VersionGuard from "./internal/versionGuard.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The most entries held at once; the least recently used go first. Default 10,000. */
  readonly maxEntries?: number | undefined
}

interface Slot {
  readonly entry: Entry
  readonly expiresAt: number
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Cache.Service> =>
  Effect.sync(() => {
    const maxEntries = options.maxEntries ?? 10_000
    if (!Number.isInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(`MemoryCache: maxEntries must be a positive integer, got ${maxEntries}`)
    }
    const epoch = `memory:${randomUUID()}`
    // A Map iterates in insertion order: re-inserting on use keeps the least recently used first.
    const slots = new Map<string, Slot>()

    const live = (key: string, now: number): Slot | undefined => {
      const slot = slots.get(key)
      if (slot === undefined) return undefined
      if (slot.expiresAt <= now) {
        slots.delete(key)
        return undefined
      }
      return slot
    }

    const put = (key: string, entry: Entry, ttl: Duration.Duration, now: number): WriteOutcome => {
      slots.delete(key)
      slots.set(key, { entry, expiresAt: now + Duration.toMillis(ttl) })
      if (slots.size > maxEntries) slots.delete(slots.keys().next().value!)
      return "written"
    }

    const read = (key: string, now: number): Option.Option<Entry> => {
      const slot = live(key, now)
      if (slot === undefined) return Option.none()
      slots.delete(key)
      slots.set(key, slot)
      return Option.some(slot.entry)
    }

    const write = (key: string, entry: Entry, { replacing, ticket, ttl }: SetOptions, now: number): WriteOutcome => {
      if (ticket !== undefined && (ticket.epoch !== epoch || now > ticket.notAfter)) return "outdated"
      return VersionGuard.acceptsValue(live(key, now)?.entry, entry.version, replacing)
        ? put(key, entry, ttl, now)
        : "rejected"
    }

    return Cache.of({
      selfBounded: true,
      reusesEntries: true,
      get: (key) => Effect.map(Clock.currentTimeMillis, (now) => read(key, now)),
      getMany: (keys) => Effect.map(Clock.currentTimeMillis, (now) => keys.map((key) => read(key, now))),
      // This cache's memory ends with the instance, and so does every ticket it issued.
      ticket: (validFor) =>
        Effect.map(Clock.currentTimeMillis, (now) => ({ epoch, notAfter: now + Duration.toMillis(validFor) })),
      set: (key, entry, options) => Effect.map(Clock.currentTimeMillis, (now) => write(key, entry, options, now)),
      setMany: (items) =>
        Effect.map(Clock.currentTimeMillis, (now) =>
          items.map(({ entry, key, options }) => write(key, entry, options, now))
        ),
      // One page of everything: the map is in memory already.
      scan: (prefix) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          const keys: Array<string> = []
          for (const key of slots.keys()) if (key.startsWith(prefix) && live(key, now) !== undefined) keys.push(key)
          return ["0", keys] as const
        }),
      // One process, whose misses single-flight already merges: nobody to wait for.
      lease: () => Effect.succeed(true),
      getOrLease: (key) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          const entry = read(key, now)
          return { entry, leased: Option.isSome(entry) && entry.value._tag === "Value" ? undefined : true }
        }),
      invalidate: (key, version, ttl) =>
        Effect.map(Clock.currentTimeMillis, (now) =>
          VersionGuard.acceptsTombstone(live(key, now)?.entry, version)
            ? put(key, Entry.Tombstone({ version }), ttl, now)
            : "rejected"
        )
    })
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Cache> => Layer.effect(Cache, make(options))

/**
 * For example `MemoryCache.layerConfig({ maxEntries: Config.integer("CACHE_MAX_ENTRIES") })`. A
 * `maxEntries` below 1 is a `ConfigError`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (options: Config.Config.Wrap<Options>): Layer.Layer<Cache, ConfigError.ConfigError> =>
  Layer.effect(
    Cache,
    Effect.flatMap(
      Config.unwrap(options).pipe(
        Config.validate({
          message: "maxEntries must be a positive integer",
          validation: ({ maxEntries }) => maxEntries === undefined || (Number.isInteger(maxEntries) && maxEntries >= 1)
        })
      ),
      make
    )
  )

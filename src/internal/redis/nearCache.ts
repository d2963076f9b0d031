// The in-process tier as a Cache in front of a remote one (RedisCache, RedisClusterCache): hits
// served from process memory, kept up to date by the versions that every write announces on a
// Redis channel from inside its guard script.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { Cluster, Redis } from "ioredis"
import { Cache, CacheConnectionError, Entry, type WriteOutcome } from "../../Cache.js"
import * as NearTier from "./nearTier.js"

/** The tier's bounds: `RedisCache.NearTierOptions`, which `RedisClusterCache` takes too. */
export interface Options {
  /** Default 10,000. */
  readonly maxEntries?: number | undefined
  /**
   * A bound on an estimate of the entries' size (their strings and a fixed overhead each).
   * `npm run bench` checks it against the heap the entries take: for its 200-byte value, 570
   * bytes an entry on the heap against an estimate of 555. Default 64 MiB.
   */
  readonly maxBytes?: number | undefined
  /** How long an entry may stay without being read from Redis again. Default 1 minute. */
  readonly ttl?: Duration.DurationInput | undefined
}

const make = (options: Options): NearTier.NearTier =>
  NearTier.make({
    maxEntries: options.maxEntries ?? 10_000,
    maxBytes: options.maxBytes ?? 64 * 1024 * 1024,
    ttlMillis: Duration.toMillis(options.ttl ?? "1 minute")
  })

/** The channel the guard scripts announce `<version>:<key>` on. */
const channelOf = (keyPrefix: string) => `${keyPrefix}__wt_announcements`

/**
 * Subscribes a connection of its own to the announcements. Whenever either connection may have
 * missed one (it closed, or, in a cluster, a node failed, joined or left), the whole tier goes.
 * While the subscription is down the tier is deaf: it serves nothing and keeps nothing, until the
 * subscription is back (its SUBSCRIBE answered, so every later announcement is heard) and the
 * tier was dropped once more.
 */
const listen = <C extends Redis | Cluster>(
  near: NearTier.NearTier,
  client: C,
  channel: string,
  url: string,
  lossEvents: ReadonlyArray<string>
): Effect.Effect<() => boolean, CacheConnectionError, Scope.Scope> =>
  Effect.gen(function* () {
    let hearing = false
    for (const event of lossEvents) client.on(event, near.clear)
    const subscriber = yield* Effect.acquireRelease(
      Effect.sync(() => client.duplicate() as C),
      (subscriber) => Effect.sync(() => subscriber.disconnect())
    )
    subscriber.on("error", () => {})
    for (const event of lossEvents) subscriber.on(event, near.clear)
    subscriber.on("close", () => {
      hearing = false
      near.clear()
    })
    const heard = () => {
      near.clear()
      hearing = true
    }
    subscriber.on("ready", () => void subscriber.subscribe(channel).then(heard, () => {}))
    subscriber.on("message", (_channel: string, message: string) => {
      const colon = message.indexOf(":")
      if (colon > 0) near.announce(message.slice(colon + 1), Number(message.slice(0, colon)))
    })
    yield* Effect.tryPromise({
      try: async () => {
        if (subscriber.status === "wait") await subscriber.connect()
        await subscriber.subscribe(channel)
      },
      catch: (cause) => new CacheConnectionError({ url, cause })
    })
    heard()
    return () => hearing
  })

/** The tier when it is on, and the channel the scripts announce writes on ("" when it is off). */
export interface Tier {
  readonly near: NearTier.NearTier | undefined
  readonly channel: string
  /** True while the subscription hears every announcement. */
  readonly hearing: () => boolean
}

/** Starts the tier when `options` ask for one, listening on `client` for as long as the scope lasts. */
export const start = <C extends Redis | Cluster>(
  options: Options | undefined,
  {
    client,
    keyPrefix,
    lossEvents,
    url
  }: {
    readonly client: C
    readonly keyPrefix: string
    readonly url: string
    readonly lossEvents: ReadonlyArray<string>
  }
): Effect.Effect<Tier, CacheConnectionError, Scope.Scope> => {
  if (options === undefined) return Effect.succeed({ near: undefined, channel: "", hearing: () => false })
  const near = make(options)
  const channel = channelOf(keyPrefix)
  return Effect.map(listen(near, client, channel, url, lossEvents), (hearing) => ({ near, channel, hearing }))
}

/** `remote`, with the tier in front when it is on. */
export const front = (remote: Cache.Service, { hearing, near }: Tier): Cache.Service =>
  near === undefined ? remote : wrap(remote, near, hearing)

/**
 * `remote` with the tier in front. A read it serves is its own; a write this process made is
 * kept when the remote accepted it and forgotten otherwise (its floor stays). While not `hearing`
 * the tier is bypassed and keeps nothing.
 */
export const wrap = (remote: Cache.Service, near: NearTier.NearTier, hearing: () => boolean): Cache.Service => {
  const remember = (key: string, entry: Option.Option<Entry>) => {
    if (Option.isSome(entry) && hearing()) near.put(key, entry.value, Date.now())
  }
  // A refused write still tells what Redis holds at least; after one this process could not vouch
  // for (outdated), its own copy goes.
  const settle = (key: string, entry: Entry, outcome: WriteOutcome, replacing: boolean) => {
    if (!hearing()) near.drop(key)
    else if (outcome === "written") near.accept(key, entry, Date.now(), replacing)
    else if (outcome === "rejected") near.outranked(key, entry)
    else near.drop(key)
  }
  return Cache.of({
    ...remote,
    reusesEntries: true,
    get: (key) =>
      Effect.suspend(() => {
        const local = hearing() ? near.get(key, Date.now()) : undefined
        return local !== undefined
          ? Effect.succeedSome(local)
          : Effect.tap(remote.get(key), (entry) => remember(key, entry))
      }),
    peek: (key) => (hearing() ? near.get(key, Date.now()) : undefined),
    // A tombstone held here says a miss, whose lease only Redis can grant.
    getOrLease: (key, ttl) =>
      Effect.suspend(() => {
        const local = hearing() ? near.get(key, Date.now()) : undefined
        return local?._tag === "Value"
          ? Effect.succeed({ entry: Option.some<Entry>(local), leased: undefined })
          : Effect.tap(remote.getOrLease(key, ttl), ({ entry }) => remember(key, entry))
      }),
    getMany: (keys) =>
      Effect.suspend(() => {
        const now = Date.now()
        const listening = hearing()
        const locals = keys.map((key) => (listening ? near.get(key, now) : undefined))
        const missing = keys.filter((_, i) => locals[i] === undefined)
        if (missing.length === 0) return Effect.succeed(locals.map((entry) => Option.some(entry!)))
        return Effect.map(remote.getMany(missing), (fetched) => {
          let next = 0
          return locals.map((entry, i) => {
            if (entry !== undefined) return Option.some(entry)
            const got = fetched[next++]!
            remember(keys[i]!, got)
            return got
          })
        })
      }),
    set: (key, entry, options) =>
      Effect.tap(remote.set(key, entry, options), (outcome) =>
        settle(key, entry, outcome, options.replacing !== undefined)
      ),
    setMany: (items) =>
      Effect.tap(remote.setMany(items), (outcomes) =>
        outcomes.forEach((outcome, i) => {
          const { entry, key, options } = items[i]!
          settle(key, entry, outcome, options.replacing !== undefined)
        })
      ),
    invalidate: (key, version, ttl) =>
      Effect.tap(remote.invalidate(key, version, ttl), (outcome) =>
        settle(key, Entry.Tombstone({ version }), outcome, false)
      )
  })
}

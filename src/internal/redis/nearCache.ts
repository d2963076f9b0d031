// The in-process tier as a Cache in front of a remote one (RedisCache, RedisClusterCache): hits
// served from process memory, kept up to date by the versions that every write announces on a
// Redis channel from inside its guard script. In strict mode (see coherence.ts) a process also
// registers as a holder of what it reads, writers wait for holders to acknowledge, and the tier
// serves only while its lease, renewed by heartbeats through the subscription, runs.
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { Cluster, Redis } from "ioredis"
import { Cache, CacheConnectionError, Entry, type WriteOutcome } from "../../Cache.js"
import type { NearTierStats } from "../../RedisCache.js"
import * as Coherence from "./coherence.js"
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
  /**
   * `"bounded"` (the default): another process's write reaches the tier when its announcement
   * does. `"strict"`: a write is acknowledged only once every process whose tier may hold the key
   * dropped it, or its lease ran out. Every process that writes through the key prefix must run
   * strict mode for the guarantee to hold.
   */
  readonly mode?: "bounded" | "strict" | undefined
  /**
   * Strict mode: how long a process may serve from its tier after it last heard from Redis, and so
   * the longest a write waits for a process that does not acknowledge. Heartbeats renew it four
   * times a lease. Default 1 second.
   */
  readonly lease?: Duration.DurationInput | undefined
}

const make = (options: Options): NearTier.NearTier =>
  NearTier.make({
    maxEntries: options.maxEntries ?? 10_000,
    maxBytes: options.maxBytes ?? 64 * 1024 * 1024,
    ttlMillis: Duration.toMillis(options.ttl ?? "1 minute")
  })

/** The channel the guard scripts announce `<version>:<key>` on. */
const channelOf = (keyPrefix: string) => `${keyPrefix}__wt_announcements`

/** Where announcements come from, and how this process publishes to every node that may send one. */
interface Source<C extends Redis | Cluster> {
  readonly client: C
  readonly keyPrefix: string
  readonly url: string
  /** Events on either connection after which announcements may have been missed. */
  readonly lossEvents: ReadonlyArray<string>
  /** A publish through each node that announces writes: one Redis, or each master of a cluster. */
  readonly paths: () => ReadonlyArray<(channel: string, message: string) => Promise<unknown>>
  /**
   * Strict mode: tells the writer of `key` that this process dropped what the write superseded, and
   * Redis that it owes nothing more; `hold` registers it again when it kept an entry as new.
   */
  readonly acknowledge: (
    key: string,
    acknowledgement: Coherence.Acknowledgement,
    hold: Coherence.HoldArguments
  ) => Promise<unknown>
}

// `<version>:<key>`, or from a strict writer `<version>/<writer>/<write id>/<holders>:<key>`.
const hearAnnouncement =
  (
    near: NearTier.NearTier,
    coherence: Coherence.Coherence | undefined,
    acknowledge: Source<Redis | Cluster>["acknowledge"]
  ) =>
  (message: string) => {
    const colon = message.indexOf(":")
    if (colon <= 0) return
    const head = message.slice(0, colon)
    const key = message.slice(colon + 1)
    near.announce(key, parseInt(head, 10))
    // Only once the entry is gone: the acknowledgement lets the writer return.
    const acknowledgement = coherence?.acknowledgement(head)
    if (acknowledgement === undefined) return
    const hold = near.holds(key) ? coherence!.holdArguments : Coherence.notHolding
    void acknowledge(key, acknowledgement, hold).catch(() => {})
  }

/**
 * Subscribes a connection of its own to the announcements (and, in strict mode, to this process's
 * channel). Whenever either connection may have missed one (it closed, or, in a cluster, a node
 * failed, joined or left), the whole tier goes. While the subscription is down the tier is deaf: it
 * serves nothing and keeps nothing, until the subscription is back (its SUBSCRIBE answered, so
 * every later announcement is heard) and the tier was dropped once more.
 */
const listen = <C extends Redis | Cluster>(
  near: NearTier.NearTier,
  coherence: Coherence.Coherence | undefined,
  channel: string,
  source: Source<C>
): Effect.Effect<() => boolean, CacheConnectionError, Scope.Scope> =>
  Effect.gen(function* () {
    const { client, lossEvents, url } = source
    const channels = coherence === undefined ? [channel] : [channel, coherence.channelOf(coherence.member)]
    let hearing = false
    const lose = () => {
      near.clear()
      coherence?.revoke()
    }
    for (const event of lossEvents) client.on(event, lose)
    const subscriber = yield* Effect.acquireRelease(
      Effect.sync(() => client.duplicate() as C),
      (subscriber) => Effect.sync(() => subscriber.disconnect())
    )
    subscriber.on("error", () => {})
    for (const event of lossEvents) subscriber.on(event, lose)
    subscriber.on("close", () => {
      hearing = false
      lose()
    })
    const beat = () => {
      if (hearing) coherence?.beat(source.paths().map((publish) => (message) => publish(channels[1]!, message)))
    }
    const heard = () => {
      lose()
      hearing = true
      beat()
    }
    subscriber.on("ready", () => void subscriber.subscribe(...channels).then(heard, () => {}))
    const announced = hearAnnouncement(near, coherence, source.acknowledge)
    subscriber.on("message", (from: string, message: string) => {
      if (from === channel) announced(message)
      else coherence?.hear(message)
    })
    yield* Effect.tryPromise({
      try: async () => {
        if (subscriber.status === "wait") await subscriber.connect()
        await subscriber.subscribe(...channels)
      },
      catch: (cause) => new CacheConnectionError({ url, cause })
    })
    heard()
    // On the wall clock, as the leases are: Effect's Clock (a TestClock in tests) does not bound them.
    if (coherence !== undefined) {
      yield* Effect.acquireRelease(
        Effect.sync(() => setInterval(beat, Math.max(1, coherence.leaseMillis / 4)).unref()),
        (timer) => Effect.sync(() => clearInterval(timer))
      )
    }
    return () => hearing
  })

/** The tier when it is on, and the channel the scripts announce writes on ("" when it is off). */
export interface Tier {
  readonly near: NearTier.NearTier | undefined
  readonly channel: string
  /** True while the tier may serve: its subscription hears every announcement (and in strict mode, its lease runs). */
  readonly serving: () => boolean
  /** Strict mode's bookkeeping, when it is on. */
  readonly coherence: Coherence.Coherence | undefined
}

const off: Tier = { near: undefined, channel: "", serving: () => false, coherence: undefined }

/** Starts the tier when `options` ask for one, listening on `client` for as long as the scope lasts. */
export const start = <C extends Redis | Cluster>(
  options: Options | undefined,
  source: Source<C>
): Effect.Effect<Tier, CacheConnectionError, Scope.Scope> => {
  if (options === undefined) return Effect.succeed(off)
  const near = make(options)
  const channel = channelOf(source.keyPrefix)
  const ttlMillis = Duration.toMillis(options.ttl ?? "1 minute")
  const leaseMillis = Math.ceil(Duration.toMillis(options.lease ?? "1 second"))
  // As the breaker's figures are checked: a layer built with one fails at once, naming it.
  if (options.mode !== undefined && options.mode !== "bounded" && options.mode !== "strict") {
    throw new RangeError(`near tier: mode must be "bounded" or "strict"; got ${JSON.stringify(options.mode)}`)
  }
  if (!(leaseMillis > 0 && Number.isFinite(leaseMillis))) {
    throw new RangeError(`near tier: lease must be above zero and finite; got ${Duration.format(options.lease ?? 0)}`)
  }
  const coherence =
    options.mode === "strict"
      ? Coherence.make({
          keyPrefix: source.keyPrefix,
          leaseMillis,
          // A registration outlives every entry it covers: entries are timed from before their read.
          holdMillis: ttlMillis + leaseMillis
        })
      : undefined
  return Effect.map(listen(near, coherence, channel, source), (hearing) => ({
    near,
    channel,
    coherence,
    serving: coherence === undefined ? hearing : () => hearing() && coherence.serving()
  }))
}

/** The tier's figures, as `NearTierStats` gives them. */
export const statsOf = ({ coherence, near, serving }: Tier): NearTierStats["Type"] => ({
  enabled: near !== undefined,
  mode: near === undefined ? "off" : coherence === undefined ? "bounded" : "strict",
  entries: Effect.sync(() => near?.size() ?? 0),
  bytes: Effect.sync(() => near?.bytes() ?? 0),
  serving: Effect.sync(serving),
  holders: Effect.sync(() => ({
    acknowledged: coherence?.counts.acknowledged ?? 0,
    leaseExpired: coherence?.counts.leaseExpired ?? 0,
    youngMemoryWaits: coherence?.counts.youngMemoryWaits ?? 0
  }))
})

/** A layer's context: the cache, and its tier's figures under `tag` (`NearTierStats`, passed in to keep the import one way). */
export const withStats = <E, R>(
  made: Effect.Effect<readonly [Cache.Service, NearTierStats["Type"]], E, R>,
  tag: typeof NearTierStats
): Effect.Effect<Context.Context<Cache | NearTierStats>, E, R> =>
  Effect.map(made, ([cache, stats]) => Context.make(Cache, cache).pipe(Context.add(tag, stats)))

/** `remote`, with the tier in front when it is on. */
export const front = (remote: Cache.Service, { near, serving }: Tier): Cache.Service =>
  near === undefined ? remote : wrap(remote, near, serving)

/**
 * `remote` with the tier in front. A read it serves is its own; a write this process made is
 * kept when the remote accepted it and forgotten otherwise (its floor stays). While not `serving`
 * the tier is bypassed and keeps nothing. What a call brings back is timed from when the call began,
 * and kept only if the tier was not dropped meanwhile (its floors went with it).
 */
export const wrap = (remote: Cache.Service, near: NearTier.NearTier, serving: () => boolean): Cache.Service => {
  const remember = (key: string, entry: Option.Option<Entry>, began: Began) => {
    if (Option.isSome(entry) && serving() && near.generation() === began.generation) {
      near.put(key, entry.value, began.at)
    }
  }
  // A write Redis took, or refused for a newer version, tells what Redis holds at least: no older
  // entry may stay or come back, even when the tier may not keep this one (it is not serving, or
  // was dropped since the call began). After a write this process could not vouch for (outdated),
  // or a repair (which may lower the version), its own copy goes.
  const settle = (key: string, entry: Entry, outcome: WriteOutcome, replacing: boolean, began: Began) => {
    const keeps = serving() && near.generation() === began.generation
    if (outcome === "written" && keeps) near.accept(key, entry, began.at, replacing)
    else if (outcome === "rejected" || (outcome === "written" && !replacing)) near.outranked(key, entry)
    else near.drop(key)
  }
  // Only for a call to the remote: a hit served here allocates nothing.
  const beganAt = (at: number): Began => ({ at, generation: near.generation() })
  const begin = () => beganAt(Date.now())
  // While a call that may bring back an entry is in flight, the key counts as held: an
  // acknowledgement then registers this process again (see NearTier.holds).
  const expecting = <A, E>(keys: ReadonlyArray<string>, call: Effect.Effect<A, E>): Effect.Effect<A, E> => {
    for (const key of keys) near.expect(key)
    return Effect.ensuring(
      call,
      Effect.sync(() => keys.forEach(near.settled))
    )
  }
  return Cache.of({
    ...remote,
    reusesEntries: true,
    get: (key) =>
      Effect.suspend(() => {
        const now = Date.now()
        const local = serving() ? near.get(key, now) : undefined
        if (local !== undefined) return Effect.succeedSome(local)
        const began = beganAt(now)
        return expecting(
          [key],
          Effect.tap(remote.get(key), (entry) => remember(key, entry, began))
        )
      }),
    peek: (key) => (serving() ? near.get(key, Date.now()) : undefined),
    // A tombstone held here says a miss, whose lease only Redis can grant.
    getOrLease: (key, ttl) =>
      Effect.suspend(() => {
        const now = Date.now()
        const local = serving() ? near.get(key, now) : undefined
        if (local?._tag === "Value") return Effect.succeed({ entry: Option.some<Entry>(local), leased: undefined })
        const began = beganAt(now)
        return expecting(
          [key],
          Effect.tap(remote.getOrLease(key, ttl), ({ entry }) => remember(key, entry, began))
        )
      }),
    getMany: (keys) =>
      Effect.suspend(() => {
        const began = begin()
        const listening = serving()
        const locals = keys.map((key) => (listening ? near.get(key, began.at) : undefined))
        const missing = keys.filter((_, i) => locals[i] === undefined)
        if (missing.length === 0) return Effect.succeed(locals.map((entry) => Option.some(entry!)))
        return expecting(
          missing,
          Effect.map(remote.getMany(missing), (fetched) => {
            let next = 0
            return locals.map((entry, i) => {
              if (entry !== undefined) return Option.some(entry)
              const got = fetched[next++]!
              remember(keys[i]!, got, began)
              return got
            })
          })
        )
      }),
    set: (key, entry, options) =>
      Effect.suspend(() => {
        const began = begin()
        return expecting(
          [key],
          Effect.tap(remote.set(key, entry, options), (outcome) =>
            settle(key, entry, outcome, options.replacing !== undefined, began)
          )
        )
      }),
    setMany: (items) =>
      Effect.suspend(() => {
        const began = begin()
        return expecting(
          items.map(({ key }) => key),
          Effect.tap(remote.setMany(items), (outcomes) =>
            outcomes.forEach((outcome, i) => {
              const { entry, key, options } = items[i]!
              settle(key, entry, outcome, options.replacing !== undefined, began)
            })
          )
        )
      }),
    invalidate: (key, version, ttl) =>
      Effect.suspend(() => {
        const began = begin()
        return expecting(
          [key],
          Effect.tap(remote.invalidate(key, version, ttl), (outcome) =>
            settle(key, Entry.Tombstone({ version }), outcome, false, began)
          )
        )
      })
  })
}

/** When a call began: the wall clock its entry's lifetime is timed from, and the tier's generation. */
interface Began {
  readonly at: number
  readonly generation: number
}

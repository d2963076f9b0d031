/**
 * The `Cache` on Redis, through ioredis.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import { Redis, type RedisOptions } from "ioredis"
import { randomUUID } from "node:crypto"
import { Cache, CacheConnectionError, Entry, type SetOptions, type WriteOutcome } from "./Cache.js"
import * as NearCache from "./internal/nearCache.js"
import {
  acquireClient,
  displayUrl,
  fail,
  globEscape,
  isWrongType,
  type KeyScripts,
  ttlMillis
} from "./internal/redisClient.js"
import * as RedisEntry from "./internal/redisEntry.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** `redis://[user:password@]host:port[/db]`. Default `redis://127.0.0.1:6379`. */
  readonly url?: string | Redacted.Redacted | undefined
  /** Prepended to every key, to share one Redis between applications or tests. */
  readonly keyPrefix?: string | undefined
  /** The bound on every command, queued ones included. Default 1 second. */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /** The bound on connecting when the layer is built. Default 5 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Further ioredis options; the ones above take precedence. */
  readonly redis?: Omit<RedisOptions, "keyPrefix" | "commandTimeout" | "lazyConnect"> | undefined
  /**
   * An in-process tier in front of Redis (off by default). Every write through any process
   * announces the key and its version on a Redis channel; each process drops what the
   * announcement supersedes, and drops the whole tier when its subscription reconnects.
   * A process reads its own writes at once; another process's write reaches it after the
   * announcement does (see the README for the measured bound).
   */
  readonly near?: NearTierOptions | undefined
}

/**
 * The in-process tier's bounds.
 *
 * @since 0.2.0
 * @category models
 */
export interface NearTierOptions {
  /** Default 10,000. */
  readonly maxEntries?: number | undefined
  /**
   * A bound on an estimate of the entries' size (their strings and a fixed overhead each).
   * The estimate is low: `npm run bench` measures the heap actually taken per entry
   * (about 3.4 times the estimate for a 200-byte value), so size this bound, or
   * `maxEntries`, with that in mind. Default 64 MiB.
   */
  readonly maxBytes?: number | undefined
  /** How long an entry may stay without being read from Redis again. Default 1 minute. */
  readonly ttl?: Duration.DurationInput | undefined
}

/**
 * The in-process tier's size, for metrics and tests. Zero when it is off.
 *
 * @since 0.1.0
 * @category tags
 */
export class NearTierStats extends Context.Tag("effect-write-through/RedisCache/NearTierStats")<
  NearTierStats,
  { readonly enabled: boolean; readonly entries: Effect.Effect<number>; readonly bytes: Effect.Effect<number> }
>() {}

interface GuardedCommands extends KeyScripts {
  wtEpoch(epochKey: string, candidate: string): Promise<string>
  wtSet(
    key: string,
    epochKey: string,
    version: string,
    entry: string,
    ttlMillis: string,
    replacing: string,
    epoch: string,
    notAfter: string,
    candidate: string,
    channel: string,
    announcedKey: string
  ): Promise<string>
}

const defaultUrl = "redis://127.0.0.1:6379"

/**
 * Connects to Redis for the lifetime of the scope. Fails with a
 * `CacheConnectionError` naming the URL when Redis does not answer in time.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Cache.Service, CacheConnectionError, Scope.Scope> =>
  Effect.map(makeWithStats(options), ([cache]) => cache)

const makeWithStats = (
  options: Options
): Effect.Effect<readonly [Cache.Service, NearTierStats["Type"]], CacheConnectionError, Scope.Scope> =>
  Effect.gen(function* () {
    const url =
      options.url === undefined
        ? defaultUrl
        : Redacted.isRedacted(options.url)
          ? Redacted.value(options.url)
          : options.url
    const commandTimeout = Duration.toMillis(options.commandTimeout ?? "1 second")
    const connectTimeout = Duration.decode(options.connectTimeout ?? "5 seconds")
    const [redis, lastError] = yield* acquireClient(
      () =>
        new Redis(url, {
          ...options.redis,
          ...(options.keyPrefix === undefined ? {} : { keyPrefix: options.keyPrefix }),
          commandTimeout,
          lazyConnect: true
        }),
      commandTimeout
    )
    yield* Effect.tryPromise({
      try: () => redis.connect(),
      catch: (cause) => new CacheConnectionError({ url: displayUrl(url), cause: lastError() ?? cause })
    }).pipe(
      Effect.timeoutFail({
        duration: connectTimeout,
        onTimeout: () =>
          new CacheConnectionError({
            url: displayUrl(url),
            cause: new Error(`no answer within ${Duration.format(connectTimeout)}`)
          })
      })
    )
    redis.defineCommand("wtEpoch", { numberOfKeys: 1, lua: RedisEntry.epochScript })
    redis.defineCommand("wtSet", { numberOfKeys: 2, lua: RedisEntry.setScript })
    redis.defineCommand("wtInvalidate", { numberOfKeys: 1, lua: RedisEntry.invalidateScript })
    redis.defineCommand("wtLease", { numberOfKeys: 1, lua: RedisEntry.leaseScript })
    const holder = randomUUID()
    const commands = redis as unknown as GuardedCommands

    // Candidates for a new epoch: unique to this process and call, so no two memories share a name.
    const candidatePrefix = randomUUID()
    let candidates = 0
    const candidate = () => `${candidatePrefix}:${++candidates}`
    let epoch = yield* Effect.tryPromise({
      try: () => commands.wtEpoch(RedisEntry.epochKey, candidate()),
      catch: (cause) => new CacheConnectionError({ url: displayUrl(url), cause })
    })

    const keyPrefix = options.keyPrefix ?? ""
    const near = options.near === undefined ? undefined : NearCache.make(options.near)
    const channel = near === undefined ? "" : NearCache.channelOf(keyPrefix)
    // While either connection is down, announcements may be missed: the tier starts afresh.
    if (near !== undefined) yield* NearCache.listen(near, redis, channel, displayUrl(url), ["close"])

    const toOutcome = (written: number): WriteOutcome => (written === 1 ? "written" : "rejected")

    const setArguments = (key: string, entry: Entry, { replacing, ticket, ttl }: SetOptions) =>
      [
        key,
        RedisEntry.epochKey,
        String(entry.version),
        RedisEntry.encode(entry),
        ttlMillis(ttl),
        replacing === undefined ? "" : RedisEntry.encode(replacing),
        ticket === undefined ? "" : ticket.epoch,
        ticket === undefined ? "" : String(Math.floor(ticket.notAfter)),
        candidate(),
        channel,
        key
      ] as const

    const toWriteOutcome = (reply: string): WriteOutcome => {
      if (reply === "written" || reply === "rejected") return reply
      // Refused for its epoch: the reply names the current one, which later tickets carry.
      if (reply.startsWith("epoch:")) epoch = reply.slice("epoch:".length)
      return "outdated"
    }

    const remote = Cache.of({
      // ioredis fails every command, queued ones too, after commandTimeout.
      selfBounded: true,
      reusesEntries: false,
      get: (key) =>
        Effect.tryPromise({
          try: () => redis.get(key).then(RedisEntry.decode),
          catch: (cause) => cause
        }).pipe(
          // A key of another type is a foreign write: a miss, repaired by the next fill.
          Effect.catchIf(isWrongType, () => Effect.succeedNone),
          Effect.mapError(fail("get", key))
        ),
      // Deadlines are checked against Redis's clock (TIME), so they are set from the wall clock, not Effect's Clock.
      ticket: (validFor) => Effect.sync(() => ({ epoch, notAfter: Date.now() + Duration.toMillis(validFor) })),
      // MGET answers nil for a key of another type: a miss, like get's WRONGTYPE.
      getMany: (keys) =>
        keys.length === 0
          ? Effect.succeed([])
          : Effect.tryPromise({
              try: () => redis.mget(keys as Array<string>).then((raws) => raws.map(RedisEntry.decode)),
              catch: fail("getMany", keys[0]!)
            }),
      set: (key, entry, options) =>
        Effect.tryPromise({
          try: () => commands.wtSet(...setArguments(key, entry, options)).then(toWriteOutcome),
          catch: fail("set", key)
        }),
      setMany: (items) =>
        items.length === 0
          ? Effect.succeed([])
          : Effect.tryPromise({
              try: async () => {
                const pipeline = redis.pipeline() as unknown as GuardedCommands & {
                  exec(): Promise<Array<[Error | null, unknown]> | null>
                }
                for (const { entry, key, options } of items) void pipeline.wtSet(...setArguments(key, entry, options))
                const replies = (await pipeline.exec()) ?? []
                return replies.map(([error, reply]) => {
                  if (error !== null) throw error
                  return toWriteOutcome(reply as string)
                })
              },
              catch: fail("setMany", items[0]!.key)
            }),
      // ioredis does not prefix SCAN's pattern nor strip the keys it returns: done here.
      scan: (prefix, cursor) =>
        Effect.tryPromise({
          try: async () => {
            const [next, keys] = await redis.scan(cursor, "MATCH", `${globEscape(keyPrefix + prefix)}*`, "COUNT", 500)
            return [next, keys.map((key) => key.slice(keyPrefix.length))] as const
          },
          catch: fail("scan", prefix)
        }),
      lease: (key, ttl) =>
        Effect.tryPromise({
          try: () =>
            commands.wtLease(RedisEntry.leaseKey(key), holder, ttlMillis(ttl)).then((granted) => granted === 1),
          catch: fail("lease", key)
        }),
      invalidate: (key, version, ttl) =>
        Effect.tryPromise({
          try: () =>
            commands
              .wtInvalidate(
                key,
                String(version),
                RedisEntry.encode(Entry.Tombstone({ version })),
                ttlMillis(ttl),
                channel,
                key
              )
              .then(toOutcome),
          catch: fail("invalidate", key)
        })
    })

    const stats: NearTierStats["Type"] = {
      enabled: near !== undefined,
      entries: Effect.sync(() => near?.size() ?? 0),
      bytes: Effect.sync(() => near?.bytes() ?? 0)
    }
    if (near === undefined) return [remote, stats] as const

    return [NearCache.wrap(remote, near), stats] as const
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Cache | NearTierStats, CacheConnectionError> =>
  Layer.scopedContext(
    Effect.map(makeWithStats(options), ([cache, stats]) =>
      Context.make(Cache, cache).pipe(Context.add(NearTierStats, stats))
    )
  )

/**
 * For example `RedisCache.layerConfig({ url: Config.redacted("REDIS_URL") })`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<Cache | NearTierStats, CacheConnectionError | ConfigError.ConfigError> =>
  Layer.scopedContext(
    Effect.flatMap(Config.unwrap(options), makeWithStats).pipe(
      Effect.map(([cache, stats]) => Context.make(Cache, cache).pipe(Context.add(NearTierStats, stats)))
    )
  )

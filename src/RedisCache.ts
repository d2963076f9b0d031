/**
 * The `Cache` on Redis, through ioredis.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import { Redis, type RedisOptions } from "ioredis"
import { randomUUID } from "node:crypto"
import { Cache, CacheConnectionError, CacheError, Entry, type SetOptions, type WriteOutcome } from "./Cache.js"
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
}

interface GuardedCommands {
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
    candidate: string
  ): Promise<string>
  wtInvalidate(key: string, version: string, entry: string, ttlMillis: string): Promise<number>
}

const defaultUrl = "redis://127.0.0.1:6379"

// The URL as it may appear in an error message: without its password.
const displayUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return "<unparseable redis url>"
  }
}

const isWrongType = (error: unknown): boolean => error instanceof Error && error.message.startsWith("WRONGTYPE")

const isTimeout = (error: unknown): boolean => error instanceof Error && error.message === "Command timed out"

/**
 * Connects to Redis for the lifetime of the scope. Fails with a
 * `CacheConnectionError` naming the URL when Redis does not answer in time.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Cache.Service, CacheConnectionError, Scope.Scope> =>
  Effect.gen(function* () {
    const url =
      options.url === undefined
        ? defaultUrl
        : Redacted.isRedacted(options.url)
          ? Redacted.value(options.url)
          : options.url
    const commandTimeout = Duration.toMillis(options.commandTimeout ?? "1 second")
    const connectTimeout = Duration.decode(options.connectTimeout ?? "5 seconds")
    const redis = yield* Effect.acquireRelease(
      Effect.sync(
        () =>
          new Redis(url, {
            ...options.redis,
            ...(options.keyPrefix === undefined ? {} : { keyPrefix: options.keyPrefix }),
            commandTimeout,
            lazyConnect: true
          })
      ),
      (redis) =>
        Effect.promise(() => redis.quit()).pipe(
          Effect.timeout(commandTimeout),
          Effect.catchAllCause(() => Effect.sync(() => redis.disconnect()))
        )
    )
    // ioredis reports connection failures as events (without a listener Node prints them); the
    // last one says more than the "Connection is closed" that connect() rejects with.
    let lastError: unknown = undefined
    redis.on("error", (error) => {
      lastError = error
    })
    yield* Effect.tryPromise({
      try: () => redis.connect(),
      catch: (cause) => new CacheConnectionError({ url: displayUrl(url), cause: lastError ?? cause })
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
    const commands = redis as unknown as GuardedCommands

    // Candidates for a new epoch: unique to this process and call, so no two memories share a name.
    const candidatePrefix = randomUUID()
    let candidates = 0
    const candidate = () => `${candidatePrefix}:${++candidates}`
    let epoch = yield* Effect.tryPromise({
      try: () => commands.wtEpoch(RedisEntry.epochKey, candidate()),
      catch: (cause) => new CacheConnectionError({ url: displayUrl(url), cause })
    })

    const fail = (operation: string, key: string) => (cause: unknown) =>
      new CacheError({ operation, key, reason: isTimeout(cause) ? "Timeout" : "Unavailable", cause })

    const toOutcome = (written: number): WriteOutcome => (written === 1 ? "written" : "rejected")

    const setArguments = (key: string, entry: Entry, { replacing, ticket, ttl }: SetOptions) =>
      [
        key,
        RedisEntry.epochKey,
        String(entry.version),
        RedisEntry.encode(entry),
        String(Math.max(1, Math.ceil(Duration.toMillis(ttl)))),
        replacing === undefined ? "" : RedisEntry.encode(replacing),
        ticket === undefined ? "" : ticket.epoch,
        ticket === undefined ? "" : String(Math.floor(ticket.notAfter)),
        candidate()
      ] as const

    const toWriteOutcome = (reply: string): WriteOutcome => {
      if (reply === "written" || reply === "rejected") return reply
      // Refused for its epoch: the reply names the current one, which later tickets carry.
      if (reply.startsWith("epoch:")) epoch = reply.slice("epoch:".length)
      return "outdated"
    }

    return Cache.of({
      // ioredis fails every command, queued ones too, after commandTimeout.
      selfBounded: true,
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
      invalidate: (key, version, ttl) =>
        Effect.tryPromise({
          try: () =>
            commands
              .wtInvalidate(
                key,
                String(version),
                RedisEntry.encode(Entry.Tombstone({ version })),
                String(Math.max(1, Math.ceil(Duration.toMillis(ttl))))
              )
              .then(toOutcome),
          catch: fail("invalidate", key)
        })
    })
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Cache, CacheConnectionError> =>
  Layer.scoped(Cache, make(options))

/**
 * For example `RedisCache.layerConfig({ url: Config.redacted("REDIS_URL") })`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<Cache, CacheConnectionError | ConfigError.ConfigError> =>
  Layer.scoped(Cache, Effect.flatMap(Config.unwrap(options), make))

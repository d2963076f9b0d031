// RedisCache's body: one Redis server, whose memory is named by an epoch key.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import { Cache, CacheConnectionError, type Entry, type SetOptions, type WriteOutcome } from "../../Cache.js"
import type { NearTierStats, Options } from "../../RedisCache.js"
import { acquireClient, type Call, coalescing, connectWithin, displayUrl, failFast } from "./client.js"
import * as RedisEntry from "./entry.js"
import * as CacheBreaker from "../cacheBreaker.js"
import type { StrictArguments } from "./coherence.js"
import * as NearCache from "./nearCache.js"
import * as Operations from "./operations.js"
import { defineServerScripts, type ServerScripts } from "./scripts.js"

const defaultUrl = "redis://127.0.0.1:6379"

/** The cache's memory as this process knows it: the epoch its tickets carry. */
interface Memory {
  epoch: string
  /** Candidates for a new epoch: unique to this process and call, so no two memories share a name. */
  readonly candidate: () => string
}

const urlOf = (options: Options): string =>
  options.url === undefined ? defaultUrl : Redacted.isRedacted(options.url) ? Redacted.value(options.url) : options.url

const connect = (
  options: Options,
  url: string,
  commandTimeout: number
): Effect.Effect<Redis, CacheConnectionError, Scope.Scope> =>
  Effect.gen(function* () {
    const [redis, lastError] = yield* acquireClient(
      () =>
        new Redis(url, {
          ...failFast,
          ...options.redis,
          ...(options.keyPrefix === undefined ? {} : { keyPrefix: options.keyPrefix }),
          commandTimeout,
          lazyConnect: true
        }),
      commandTimeout
    )
    yield* connectWithin(() => redis.connect(), {
      url: displayUrl(url),
      timeout: Duration.decode(options.connectTimeout ?? "5 seconds"),
      lastError
    })
    return redis
  })

const readMemory = (commands: ServerScripts, url: string): Effect.Effect<Memory, CacheConnectionError> => {
  const candidatePrefix = randomUUID()
  let candidates = 0
  const candidate = () => `${candidatePrefix}:${++candidates}`
  return Effect.tryPromise({
    try: () => commands.wtEpoch(RedisEntry.epochKey, candidate()),
    catch: (cause) => new CacheConnectionError({ url: displayUrl(url), cause })
  }).pipe(Effect.map((epoch) => ({ epoch, candidate })))
}

const setArguments =
  (memory: Memory, channel: string, holding: Operations.Holding) =>
  (key: string, entry: Entry, options: SetOptions, strict: StrictArguments) =>
    Operations.setArguments(
      key,
      entry,
      options,
      { key: RedisEntry.epochKey, argument: memory.candidate() },
      channel,
      holding,
      strict
    )

const writeOutcome =
  (memory: Memory) =>
  (reply: string): WriteOutcome => {
    // Refused for its epoch: the reply names the current one, which later tickets carry.
    if (reply.startsWith("epoch:")) memory.epoch = reply.slice("epoch:".length)
    return Operations.writeOutcome(reply)
  }

// MGET answers nil for a key of another type: a miss, like get's WRONGTYPE. A strict tier reads
// key by key, each read registering it as a holder.
const getMany =
  (redis: Redis, commands: ServerScripts, holding: Operations.Holding, call: Call): Cache.Service["getMany"] =>
  (keys) =>
    keys.length === 0
      ? Effect.succeed([])
      : call("getMany", keys[0]!, () =>
          holding.coherence === undefined
            ? redis.mget(keys as Array<string>).then((raws) => raws.map(RedisEntry.decode))
            : Operations.holdMany(commands, holding, keys)
        )

const setMany =
  (redis: Redis, memory: Memory, channel: string, holding: Operations.Holding, call: Call): Cache.Service["setMany"] =>
  (items) => {
    if (items.length === 0) return Effect.succeed([])
    const argumentsOf = setArguments(memory, channel, holding)
    const outcomeOf = writeOutcome(memory)
    const send = async (strict: ReadonlyArray<StrictArguments>) => {
      const pipeline = redis.pipeline() as unknown as ServerScripts & {
        exec(): Promise<Array<[Error | null, unknown]> | null>
      }
      items.forEach(
        ({ entry, key, options }, i) => void pipeline.wtSet(...argumentsOf(key, entry, options, strict[i]!))
      )
      const replies = (await pipeline.exec()) ?? []
      return replies.map(([error, reply]) => {
        if (error !== null) throw error
        return reply as string
      })
    }
    return Effect.map(
      Operations.writeAll(holding.coherence, call, "setMany", items[0]!.key, items.length, send),
      (replies) => replies.map(outcomeOf)
    )
  }

const remoteCache = (
  redis: Redis,
  commands: ServerScripts,
  memory: Memory,
  tier: NearCache.Tier,
  keyPrefix: string,
  call: Call
) => {
  const holding: Operations.Holding = {
    holdersOf: RedisEntry.holdersKey,
    bornOf: () => RedisEntry.bornKey,
    coherence: tier.coherence
  }
  const argumentsOf = setArguments(memory, tier.channel, holding)
  const outcomeOf = writeOutcome(memory)
  const leases: Operations.Leases = { holder: randomUUID(), keyOf: RedisEntry.leaseKey }
  return Cache.of({
    // ioredis fails every command, queued ones too, after commandTimeout.
    selfBounded: true,
    reusesEntries: false,
    get: Operations.get(redis, commands, holding, call),
    // Deadlines are checked against Redis's clock (TIME), so they are set from the wall clock, not Effect's Clock.
    ticket: (validFor) =>
      Effect.sync(() => ({ epoch: memory.epoch, notAfter: Date.now() + Duration.toMillis(validFor) })),
    getMany: getMany(redis, commands, holding, call),
    set: (key, entry, options) =>
      Effect.map(
        Operations.writeOne(tier.coherence, call, "set", key, (strict) =>
          commands.wtSet(...argumentsOf(key, entry, options, strict))
        ),
        outcomeOf
      ),
    setMany: setMany(redis, memory, tier.channel, holding, call),
    scan: (prefix, cursor) => call("scan", prefix, () => Operations.scanPage(redis, keyPrefix, prefix, cursor)),
    lease: Operations.lease(commands, leases, call),
    getOrLease: Operations.getOrLease(commands, leases, holding, call),
    invalidate: Operations.invalidate(commands, tier.channel, holding, call)
  })
}

export const makeWithStats = (
  options: Options
): Effect.Effect<readonly [Cache.Service, NearTierStats["Type"]], CacheConnectionError, Scope.Scope> =>
  Effect.gen(function* () {
    const url = urlOf(options)
    const redis = yield* connect(options, url, Duration.toMillis(options.commandTimeout ?? "1 second"))
    const commands = defineServerScripts(redis)
    const memory = yield* readMemory(commands, url)
    const keyPrefix = options.keyPrefix ?? ""
    // While either connection is down, announcements may be missed: the tier starts afresh.
    const tier = yield* NearCache.start(options.near, {
      client: redis,
      keyPrefix,
      url: displayUrl(url),
      lossEvents: ["close"],
      paths: () => [(channel, message) => redis.publish(channel, message)],
      acknowledge: Operations.acknowledge(commands, RedisEntry.holdersKey)
    })
    const call = CacheBreaker.aroundCalls(
      coalescing(redis),
      options.breaker,
      displayUrl(url),
      () => tier.near?.clear(),
      Operations.isAnswer
    )
    const remote = remoteCache(redis, commands, memory, tier, keyPrefix, call)
    return [NearCache.front(remote, tier), NearCache.statsOf(tier)] as const
  })

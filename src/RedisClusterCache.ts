/**
 * The `Cache` on a Redis Cluster, through ioredis's `Cluster`.
 *
 * Entries are guarded per key as in `RedisCache`. What differs is the cache's memory: a script may
 * only touch keys of one hash slot, so each slot has a memory marker of its own, named with a
 * hash tag that puts it in that slot, and holding the time it was created. A ticket is the time it
 * was issued, and a ticketed write lands only where the slot's marker is older than the ticket:
 * a node that restarted, or a slot that was flushed, since the ticket was issued refuses it, and
 * the write-through invalidates instead. Multi-key reads are one `MGET` per hash slot, sent
 * together (auto-pipelined per node).
 *
 * @since 0.2.0
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { Cluster, type ClusterOptions, type RedisOptions } from "ioredis"
import { randomUUID } from "node:crypto"
import { Cache, CacheConnectionError, Entry, type SetOptions, type WriteOutcome } from "./Cache.js"
import type { NearTierOptions } from "./RedisCache.js"
import * as HashSlot from "./internal/hashSlot.js"
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
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /**
   * Some of the cluster's nodes, `host:port` or `redis://host:port`: ioredis discovers the rest.
   * Passwords go in `redis`.
   */
  readonly nodes: ReadonlyArray<string>
  /** Prepended to every key, to share one cluster between applications or tests. */
  readonly keyPrefix?: string | undefined
  /**
   * The bound on every call, including the time a command waits while the cluster is failing
   * over or refreshing its slots. Default 1 second.
   */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /** The bound on connecting and marking the slots when the layer is built. Default 10 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /**
   * How far the application's clock may run ahead of the Redis nodes' clocks. A ticket holds
   * only for a slot whose memory is older than the ticket by this much. Default 0: the clocks
   * agree (NTP); the same assumption as the ticket deadlines of `RedisCache`.
   */
  readonly clockSkew?: Duration.DurationInput | undefined
  /** Further ioredis `Cluster` options; the ones above take precedence. */
  readonly cluster?: Omit<ClusterOptions, "redisOptions" | "lazyConnect" | "keyPrefix"> | undefined
  /**
   * The in-process tier, as `RedisCache`'s (off by default): every write announces its key and
   * version on a channel, which the cluster carries to every node; a process drops its whole tier
   * when a node fails, joins or leaves, since an announcement may have been lost with it.
   */
  readonly near?: NearTierOptions | undefined
  /** Options for each node's connection (a password, TLS...). */
  readonly redis?: Omit<RedisOptions, "keyPrefix" | "commandTimeout" | "lazyConnect" | "host" | "port"> | undefined
}

interface ClusterCommands extends KeyScripts {
  wtSet(
    key: string,
    marker: string,
    version: string,
    entry: string,
    ttlMillis: string,
    replacing: string,
    issuedAt: string,
    notAfter: string,
    clockSkew: string,
    channel: string,
    announcedKey: string
  ): Promise<string>
  wtBorn(marker: string): Promise<number>
}

const parseNode = (node: string): { readonly host: string; readonly port: number } => {
  const url = new URL(node.includes("://") ? node : `redis://${node}`)
  return { host: url.hostname, port: url.port === "" ? 6379 : Number(url.port) }
}

// Commands wait in the cluster's own queue while it has no route to their slot, with no timeout
// of ioredis's: the bound is set here.
const within = <A>(promise: Promise<A>, millis: number): Promise<A> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("Command timed out")), millis)
    promise.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error) => {
        clearTimeout(timer)
        reject(error)
      }
    )
  })

/**
 * Connects to the cluster for the lifetime of the scope and marks the memory of every slot the
 * keys may land in. Fails with a `CacheConnectionError` naming the nodes when the cluster does
 * not answer in time.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Cache.Service, CacheConnectionError, Scope.Scope> =>
  Effect.gen(function* () {
    const nodes = options.nodes.map(parseNode)
    const url = nodes.map(({ host, port }) => displayUrl(`redis://${host}:${port}`)).join(",")
    const commandTimeout = Duration.toMillis(options.commandTimeout ?? "1 second")
    const connectTimeout = Duration.decode(options.connectTimeout ?? "10 seconds")
    const clockSkew = String(Math.max(0, Math.ceil(Duration.toMillis(options.clockSkew ?? 0))))
    const keyPrefix = options.keyPrefix ?? ""
    const [cluster, lastError] = yield* acquireClient(
      () =>
        new Cluster(nodes as Array<{ host: string; port: number }>, {
          enableAutoPipelining: true,
          ...options.cluster,
          lazyConnect: true,
          // No commandTimeout of ioredis's: `within` bounds every call, and the 16,384 markers sent
          // together when the layer is built answer within connectTimeout, not each within commandTimeout.
          redisOptions: {
            ...options.redis,
            ...(options.keyPrefix === undefined ? {} : { keyPrefix: options.keyPrefix })
          }
        }),
      commandTimeout
    )
    cluster.defineCommand("wtSet", { numberOfKeys: 2, lua: RedisEntry.clusterSetScript })
    cluster.defineCommand("wtBorn", { numberOfKeys: 1, lua: RedisEntry.bornScript })
    cluster.defineCommand("wtInvalidate", { numberOfKeys: 1, lua: RedisEntry.invalidateScript })
    cluster.defineCommand("wtLease", { numberOfKeys: 1, lua: RedisEntry.leaseScript })
    const commands = cluster as unknown as ClusterCommands

    // With a hash tag in the prefix every key shares one slot, and one marker does.
    const fixedSlot = HashSlot.prefixFixesSlot(keyPrefix)
    const markerOf = (key: string): string =>
      fixedSlot ? RedisEntry.epochKey : `${RedisEntry.epochKey}:{${HashSlot.tagOf(HashSlot.slotOf(keyPrefix + key))}}`
    const markers = fixedSlot
      ? [RedisEntry.epochKey]
      : Array.from({ length: HashSlot.slotCount }, (_, slot) => `${RedisEntry.epochKey}:{${HashSlot.tagOf(slot)}}`)

    yield* Effect.tryPromise({
      try: async () => {
        // `connect()` has been seen never to settle when a node paused while it connected, though the
        // cluster became ready: the "ready" event is what says it can take commands.
        await new Promise<void>((resolve, reject) => {
          cluster.once("ready", () => resolve())
          cluster.connect().catch(reject)
        })
        // Before the first ticket is issued, so that tickets of this process can vouch for every slot.
        await Promise.all(markers.map((marker) => commands.wtBorn(marker)))
      },
      catch: (cause) => new CacheConnectionError({ url, cause: lastError() ?? cause })
    }).pipe(
      Effect.timeoutFail({
        duration: connectTimeout,
        onTimeout: () =>
          new CacheConnectionError({
            url,
            cause: lastError() ?? new Error(`no answer within ${Duration.format(connectTimeout)}`)
          })
      })
    )

    const near = options.near === undefined ? undefined : NearCache.make(options.near)
    const channel = near === undefined ? "" : NearCache.channelOf(keyPrefix)
    // A PUBLISH reaches every node over the cluster bus, unless its node fails first: any sign that
    // a node failed, joined or left, on either connection, and the tier starts afresh.
    if (near !== undefined) {
      yield* NearCache.listen(near, cluster, channel, url, ["close", "node error", "+node", "-node"])
    }

    const holder = randomUUID()
    const call = <A>(operation: string, key: string, run: () => Promise<A>) =>
      Effect.tryPromise({ try: () => within(run(), commandTimeout), catch: fail(operation, key) })

    const setCall = (key: string, entry: Entry, { replacing, ticket, ttl }: SetOptions): Promise<WriteOutcome> =>
      commands
        .wtSet(
          key,
          markerOf(key),
          String(entry.version),
          RedisEntry.encode(entry),
          ttlMillis(ttl),
          replacing === undefined ? "" : RedisEntry.encode(replacing),
          ticket === undefined ? "" : ticket.epoch,
          ticket === undefined ? "" : String(Math.floor(ticket.notAfter)),
          clockSkew,
          channel,
          key
        )
        .then((reply) => (reply === "written" || reply === "rejected" ? reply : "outdated"))

    // Masters in a fixed order, so that a scan's cursor (`<master>:<its cursor>`) means the same on
    // every page. A slot that moves during a scan may be missed or seen twice.
    const masters = () =>
      cluster
        .nodes("master")
        .sort((a, b) => `${a.options.host}:${a.options.port}`.localeCompare(`${b.options.host}:${b.options.port}`))

    const remote = Cache.of({
      selfBounded: true,
      reusesEntries: false,
      get: (key) =>
        call("get", key, () => cluster.get(key)).pipe(
          Effect.map(RedisEntry.decode),
          Effect.catchIf(
            (error) => isWrongType(error.cause),
            () => Effect.succeedNone
          )
        ),
      getMany: (keys) =>
        keys.length === 0
          ? Effect.succeed([])
          : call("getMany", keys[0]!, async () => {
              const bySlot = new Map<number, Array<number>>()
              keys.forEach((key, i) => {
                const slot = HashSlot.slotOf(keyPrefix + key)
                const group = bySlot.get(slot)
                if (group === undefined) bySlot.set(slot, [i])
                else group.push(i)
              })
              const found = new Array<Option.Option<Entry>>(keys.length)
              await Promise.all(
                [...bySlot.values()].map(async (indices) => {
                  const raws = await cluster.mget(indices.map((i) => keys[i]!))
                  indices.forEach((at, j) => {
                    found[at] = RedisEntry.decode(raws[j] ?? null)
                  })
                })
              )
              return found
            }),
      ticket: (validFor) =>
        Effect.sync(() => {
          const now = Date.now()
          return { epoch: String(now), notAfter: now + Duration.toMillis(validFor) }
        }),
      set: (key, entry, options) => call("set", key, () => setCall(key, entry, options)),
      setMany: (items) =>
        items.length === 0
          ? Effect.succeed([])
          : call("setMany", items[0]!.key, () =>
              Promise.all(items.map(({ entry, key, options }) => setCall(key, entry, options)))
            ),
      scan: (prefix, cursor) =>
        call("scan", prefix, async () => {
          const [at, nodeCursor] = cursor === "0" ? [0, "0"] : cursor.split(":")
          const nodes = masters()
          const index = Number(at)
          const node = nodes[index]
          if (node === undefined) return ["0", []] as const
          const [next, keys] = await node.scan(nodeCursor!, "MATCH", `${globEscape(keyPrefix + prefix)}*`, "COUNT", 500)
          const following = next !== "0" ? `${index}:${next}` : index + 1 < nodes.length ? `${index + 1}:0` : "0"
          return [following, keys.map((key) => key.slice(keyPrefix.length))] as const
        }),
      lease: (key, ttl) =>
        call("lease", key, () =>
          commands.wtLease(RedisEntry.leaseKey(key), holder, ttlMillis(ttl)).then((granted) => granted === 1)
        ),
      invalidate: (key, version, ttl) =>
        call("invalidate", key, () =>
          commands
            .wtInvalidate(
              key,
              String(version),
              RedisEntry.encode(Entry.Tombstone({ version })),
              ttlMillis(ttl),
              channel,
              key
            )
            .then((written): WriteOutcome => (written === 1 ? "written" : "rejected"))
        )
    })
    return near === undefined ? remote : NearCache.wrap(remote, near)
  })

/**
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Cache, CacheConnectionError> => Layer.scoped(Cache, make(options))

/**
 * For example
 * `RedisClusterCache.layerConfig({ nodes: Config.array(Config.string(), "REDIS_CLUSTER_NODES") })`,
 * with `REDIS_CLUSTER_NODES=10.0.0.1:7000,10.0.0.2:7000`.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = (
  options: Config.Config.Wrap<Options>
): Layer.Layer<Cache, CacheConnectionError | ConfigError.ConfigError> =>
  Layer.scoped(Cache, Effect.flatMap(Config.unwrap(options), make))

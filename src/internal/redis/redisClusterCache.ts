// RedisClusterCache's body: a Redis Cluster, whose memory is marked per hash slot.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import { Cluster } from "ioredis"
import { randomUUID } from "node:crypto"
import { Cache, type CacheConnectionError, type Entry, type SetOptions } from "../../Cache.js"
import type { NearTierStats } from "../../RedisCache.js"
import type { Options } from "../../RedisClusterCache.js"
import type { StrictArguments } from "./coherence.js"
import { acquireClient, type Call, connectWithin, displayUrl, fail, failFast } from "./client.js"
import * as RedisEntry from "./entry.js"
import * as HashSlot from "./hashSlot.js"
import * as CacheBreaker from "../cacheBreaker.js"
import * as NearCache from "./nearCache.js"
import * as Operations from "./operations.js"
import { type ClusterScripts, defineClusterScripts } from "./scripts.js"

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

const callWithin =
  (commandTimeout: number): Call =>
  (operation, key, run) =>
    Effect.tryPromise({ try: () => within(run(), commandTimeout), catch: fail(operation, key) })

/** Where a key's memory is marked, and every marker the layer creates when it is built. */
interface Markers {
  readonly of: (key: string) => string
  readonly all: ReadonlyArray<string>
}

const markersFor = (keyPrefix: string): Markers => {
  // With a hash tag in the prefix every key shares one slot, and one marker does.
  if (HashSlot.prefixFixesSlot(keyPrefix)) return { of: () => RedisEntry.epochKey, all: [RedisEntry.epochKey] }
  const markerOfSlot = (slot: number) => `${RedisEntry.epochKey}:{${HashSlot.tagOf(slot)}}`
  return {
    of: (key) => markerOfSlot(HashSlot.slotOf(keyPrefix + key)),
    all: Array.from({ length: HashSlot.slotCount }, (_, slot) => markerOfSlot(slot))
  }
}

const acquireCluster = (
  options: Options,
  nodes: ReadonlyArray<{ readonly host: string; readonly port: number }>,
  commandTimeout: number
) =>
  acquireClient(
    () =>
      new Cluster(nodes as Array<{ host: string; port: number }>, {
        enableAutoPipelining: true,
        enableOfflineQueue: failFast.enableOfflineQueue,
        ...options.cluster,
        lazyConnect: true,
        // No commandTimeout of ioredis's: `within` bounds every call, and the 16,384 markers sent
        // together when the layer is built answer within connectTimeout, not each within commandTimeout.
        redisOptions: {
          ...failFast,
          ...options.redis,
          ...(options.keyPrefix === undefined ? {} : { keyPrefix: options.keyPrefix })
        }
      }),
    commandTimeout
  )

const connectAndMark = async (cluster: Cluster, commands: ClusterScripts, markers: Markers): Promise<void> => {
  // `connect()` has been seen never to settle when a node paused while it connected, though the
  // cluster became ready: the "ready" event is what says it can take commands.
  await new Promise<void>((resolve, reject) => {
    cluster.once("ready", () => resolve())
    cluster.connect().catch(reject)
  })
  // Before the first ticket is issued, so that tickets of this process can vouch for every slot.
  await Promise.all(markers.all.map((marker) => commands.wtBorn(marker)))
}

// Multi-key reads are one MGET per hash slot, sent together (auto-pipelined per node); a strict
// tier's, a script a key, each registering it as a holder.
const getMany =
  (
    cluster: Cluster,
    commands: ClusterScripts,
    keyPrefix: string,
    holding: Operations.Holding,
    call: Call
  ): Cache.Service["getMany"] =>
  (keys) =>
    keys.length === 0
      ? Effect.succeed([])
      : holding.coherence !== undefined
        ? call("getMany", keys[0]!, () => Operations.holdMany(commands, holding, keys))
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
          })

// Masters in a fixed order, so that a scan's cursor (`<master>:<its cursor>`) means the same on
// every page. A slot that moves during a scan may be missed or seen twice.
const masters = (cluster: Cluster) =>
  cluster
    .nodes("master")
    .sort((a, b) => `${a.options.host}:${a.options.port}`.localeCompare(`${b.options.host}:${b.options.port}`))

const scan =
  (cluster: Cluster, keyPrefix: string, call: Call): Cache.Service["scan"] =>
  (prefix, cursor) =>
    call("scan", prefix, async () => {
      const [at, nodeCursor] = cursor === "0" ? [0, "0"] : cursor.split(":")
      const nodes = masters(cluster)
      const index = Number(at)
      const node = nodes[index]
      if (node === undefined) return ["0", []] as const
      const [next, keys] = await Operations.scanPage(node, keyPrefix, prefix, nodeCursor!)
      const following = next !== "0" ? `${index}:${next}` : index + 1 < nodes.length ? `${index + 1}:0` : "0"
      return [following, keys] as const
    })

interface Remote {
  readonly cluster: Cluster
  readonly commands: ClusterScripts
  readonly call: Call
  readonly markers: Markers
  readonly keyPrefix: string
  readonly clockSkew: string
  readonly channel: string
  readonly holding: Operations.Holding
}

const setCall =
  ({ channel, clockSkew, commands, holding, markers }: Remote) =>
  (key: string, entry: Entry, options: SetOptions, strict: StrictArguments): Promise<string> =>
    commands.wtSet(
      ...Operations.setArguments(
        key,
        entry,
        options,
        { key: markers.of(key), argument: clockSkew },
        channel,
        holding,
        strict
      )
    )

// A script may only touch keys of one slot: what it keeps of a key (its lease, its holders) is
// kept under a hash tag of the key's slot.
const inSlotOf =
  (keyPrefix: string, name: (key: string) => string) =>
  (key: string): string =>
    HashSlot.prefixFixesSlot(keyPrefix)
      ? name(key)
      : `${name(`{${HashSlot.tagOf(HashSlot.slotOf(keyPrefix + key))}}`)}:${key}`

const remoteCache = (remote: Remote): Cache.Service => {
  const { call, channel, cluster, commands, holding, keyPrefix } = remote
  const set = setCall(remote)
  const leases: Operations.Leases = { holder: randomUUID(), keyOf: inSlotOf(keyPrefix, RedisEntry.leaseKey) }
  return Cache.of({
    selfBounded: true,
    reusesEntries: false,
    get: Operations.get(cluster, commands, holding, call),
    getMany: getMany(cluster, commands, keyPrefix, holding, call),
    ticket: (validFor) =>
      Effect.sync(() => {
        const now = Date.now()
        return { epoch: String(now), notAfter: now + Duration.toMillis(validFor) }
      }),
    set: (key, entry, options) =>
      Effect.map(
        Operations.writeOne(holding.coherence, call, "set", key, (strict) => set(key, entry, options, strict)),
        Operations.writeOutcome
      ),
    setMany: (items) =>
      items.length === 0
        ? Effect.succeed([])
        : Effect.map(
            Operations.writeAll(holding.coherence, call, "setMany", items[0]!.key, items.length, (strict) =>
              Promise.all(items.map(({ entry, key, options }, i) => set(key, entry, options, strict[i]!)))
            ),
            (replies) => replies.map(Operations.writeOutcome)
          ),
    scan: scan(cluster, keyPrefix, call),
    lease: Operations.lease(commands, leases, call),
    getOrLease: Operations.getOrLease(commands, leases, holding, call),
    invalidate: Operations.invalidate(commands, channel, holding, call)
  })
}

export const makeWithStats = (
  options: Options
): Effect.Effect<readonly [Cache.Service, NearTierStats["Type"]], CacheConnectionError, Scope.Scope> =>
  Effect.gen(function* () {
    const nodes = options.nodes.map(parseNode)
    const url = nodes.map(({ host, port }) => displayUrl(`redis://${host}:${port}`)).join(",")
    const keyPrefix = options.keyPrefix ?? ""
    const commandTimeout = Duration.toMillis(options.commandTimeout ?? "1 second")
    const [cluster, lastError] = yield* acquireCluster(options, nodes, commandTimeout)
    const commands = defineClusterScripts(cluster)
    const markers = markersFor(keyPrefix)
    const holdersOf = inSlotOf(keyPrefix, RedisEntry.holdersKey)
    yield* connectWithin(() => connectAndMark(cluster, commands, markers), {
      url,
      timeout: Duration.decode(options.connectTimeout ?? "10 seconds"),
      lastError
    })
    // A PUBLISH reaches every node over the cluster bus, unless its node fails first: any sign that
    // a node failed, joined or left, on either connection, and the tier starts afresh.
    const tier = yield* NearCache.start(options.near, {
      client: cluster,
      keyPrefix,
      url,
      lossEvents: ["close", "node error", "+node", "-node"],
      // Each master's messages reach a subscriber in the order it published them, whichever node the
      // subscriber is on: a heartbeat through every master follows every write announced before it.
      paths: () =>
        cluster.nodes("master").map((node) => (channel: string, message: string) => node.publish(channel, message)),
      acknowledge: Operations.acknowledge(commands, holdersOf)
    })
    const remote = remoteCache({
      cluster,
      commands,
      call: CacheBreaker.aroundCalls(
        callWithin(commandTimeout),
        options.breaker,
        url,
        () => tier.near?.clear(),
        Operations.isAnswer
      ),
      markers,
      keyPrefix,
      clockSkew: String(Math.max(0, Math.ceil(Duration.toMillis(options.clockSkew ?? 0)))),
      channel: tier.channel,
      // The born marker of a key's memory is its slot's marker, which holds the time it was created.
      holding: { holdersOf, bornOf: markers.of, coherence: tier.coherence }
    })
    return [NearCache.front(remote, tier), NearCache.statsOf(tier)] as const
  })

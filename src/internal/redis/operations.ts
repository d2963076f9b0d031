// The cache operations RedisCache and RedisClusterCache perform alike, given how each runs a call.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type { Cluster, Redis } from "ioredis"
import { type Cache, type CacheError, Entry, type Lookup, type SetOptions, type WriteOutcome } from "../../Cache.js"
import * as Metrics from "../../Metrics.js"
import type { Call } from "./client.js"
import * as Coherence from "./coherence.js"
import * as RedisEntry from "./entry.js"
import type { KeyScripts, SetArguments } from "./scripts.js"

/** A TTL as Redis takes it: whole milliseconds, at least 1. */
export const ttlMillis = (ttl: Duration.Duration): string => String(Math.max(1, Math.ceil(Duration.toMillis(ttl))))

const isWrongType = (error: unknown): boolean => error instanceof Error && error.message.startsWith("WRONGTYPE")

/** A failed call that is Redis answering all the same (the key holds another type): not an outage. */
export const isAnswer = (error: CacheError): boolean => isWrongType(error.cause)

/**
 * Where a key's strict-mode bookkeeping lives (its holders, and the marker of the memory's birth,
 * in the key's slot), and this process's part in it when its tier is strict.
 */
export interface Holding {
  readonly holdersOf: (key: string) => string
  readonly bornOf: (key: string) => string
  readonly coherence: Coherence.Coherence | undefined
}

/**
 * Sends `count` writes in one call, then, in strict mode, waits for the other holders each written
 * one names. The wait is outside the call's bound: a holder's lease bounds it, not the command's.
 */
export const writeAll = (
  coherence: Coherence.Coherence | undefined,
  call: Call,
  operation: string,
  key: string,
  count: number,
  send: (strict: ReadonlyArray<Coherence.StrictArguments>) => Promise<ReadonlyArray<string>>
): Effect.Effect<ReadonlyArray<string>, CacheError> => {
  if (coherence === undefined) return call(operation, key, () => send(Array(count).fill(Coherence.notStrict)))
  return Effect.suspend(() => {
    const writes = Array.from({ length: count }, coherence.begin)
    return call(operation, key, () => send(writes.map((write) => write.arguments))).pipe(
      Effect.tap((replies) =>
        Effect.flatMap(
          Effect.promise(() => Promise.all(replies.map((reply, i) => writes[i]!.settle(reply)))),
          (waits) => Effect.forEach(waits, recordWait, { discard: true })
        )
      ),
      Effect.ensuring(Effect.sync(() => writes.forEach((write) => write.abandon())))
    )
  })
}

const acknowledgedHolders = Metric.tagged(Metrics.nearTierHolders, "outcome", "acknowledged")
const silentHolders = Metric.tagged(Metrics.nearTierHolders, "outcome", "lease_expired")

const recordWait = (waited: Coherence.Waited | undefined): Effect.Effect<void> =>
  waited === undefined
    ? Effect.void
    : Effect.all(
        [
          Metric.incrementBy(acknowledgedHolders, waited.acknowledged),
          Metric.incrementBy(silentHolders, waited.leaseExpired),
          Metric.update(Metrics.nearTierWriteWait, waited.millis)
        ],
        { discard: true }
      )

/** One write, as `writeAll` sends it; without a strict tier, the call alone (the path of every set). */
export const writeOne = (
  coherence: Coherence.Coherence | undefined,
  call: Call,
  operation: string,
  key: string,
  send: (strict: Coherence.StrictArguments) => Promise<string>
): Effect.Effect<string, CacheError> =>
  coherence === undefined
    ? call(operation, key, () => send(Coherence.notStrict))
    : Effect.map(
        writeAll(coherence, call, operation, key, 1, ([strict]) => send(strict!).then((reply) => [reply])),
        (replies) => replies[0]!
      )

/** How a process acknowledges a strict write of a key it was told of (see NearCache's `Source`). */
export const acknowledge =
  (commands: KeyScripts, holdersOf: (key: string) => string) =>
  (
    key: string,
    { channel, member, message, version }: Coherence.Acknowledgement,
    hold: Coherence.HoldArguments
  ): Promise<number> =>
    commands.wtAck(holdersOf(key), member, version, channel, message, ...hold)

/** A read of what the key holds, registering this process as a holder when its tier is strict. */
const holdingGet = (client: Redis | Cluster, commands: KeyScripts, holding: Holding) => {
  const coherence = holding.coherence
  return coherence === undefined
    ? (key: string) => client.get(key)
    : (key: string) => commands.wtHold(key, holding.holdersOf(key), ...coherence.holdArguments)
}

export const get = (
  client: Redis | Cluster,
  commands: KeyScripts,
  holding: Holding,
  call: Call
): Cache.Service["get"] => {
  const read = holdingGet(client, commands, holding)
  return (key) =>
    call("get", key, () => read(key)).pipe(
      Effect.map(RedisEntry.decode),
      // A key of another type is a foreign write: a miss, repaired by the next fill.
      Effect.catchIf(
        (error) => isWrongType(error.cause),
        () => Effect.succeedNone
      )
    )
}

/** Reads of many keys one by one (each a script of its own), registering as `get` does: strict mode's `getMany`. */
export const holdMany = (commands: KeyScripts, holding: Holding, keys: ReadonlyArray<string>) => {
  const hold = holding.coherence!.holdArguments
  return Promise.all(keys.map((key) => commands.wtHold(key, holding.holdersOf(key), ...hold).then(RedisEntry.decode)))
}

/**
 * The arguments of a guarded write. `guard` names the memory the ticket is checked against and
 * what the script needs to check it (see SetArguments).
 */
export const setArguments = (
  key: string,
  entry: Entry,
  { replacing, ticket, ttl }: SetOptions,
  guard: { readonly key: string; readonly argument: string },
  channel: string,
  holding: Holding,
  strict: Coherence.StrictArguments
): SetArguments => [
  key,
  guard.key,
  holding.holdersOf(key),
  holding.bornOf(key),
  String(entry.version),
  RedisEntry.encode(entry),
  ttlMillis(ttl),
  replacing === undefined ? "" : RedisEntry.encode(replacing),
  ticket === undefined ? "" : ticket.epoch,
  ticket === undefined ? "" : String(Math.floor(ticket.notAfter)),
  guard.argument,
  channel,
  key,
  ...strict
]

/**
 * A write script's reply: any refusal other than by version (late, a lost memory) is `outdated`.
 * A strict writer's `written` or `rejected` carries what it waits for after a `|`.
 */
export const writeOutcome = (reply: string): WriteOutcome =>
  reply.startsWith("written") ? "written" : reply.startsWith("rejected") ? "rejected" : "outdated"

/** This process's leases: its token, and where the lease of a key is kept. */
export interface Leases {
  readonly holder: string
  readonly keyOf: (key: string) => string
}

export const lease =
  (commands: KeyScripts, leases: Leases, call: Call): Cache.Service["lease"] =>
  (key, ttl) =>
    call("lease", key, () =>
      commands.wtLease(leases.keyOf(key), leases.holder, ttlMillis(ttl)).then((granted) => granted === 1)
    )

// The script's reply: a value entry as it is, or 'L' (leased) or 'W' (not) before what the key holds.
const lookupOf = (reply: string): Lookup => {
  const mark = reply.charCodeAt(0)
  return mark === 76 || mark === 87
    ? { entry: RedisEntry.decode(reply.length > 1 ? reply.slice(1) : null), leased: mark === 76 }
    : { entry: RedisEntry.decode(reply), leased: undefined }
}

export const getOrLease = (
  commands: KeyScripts,
  leases: Leases,
  holding: Holding,
  call: Call
): Cache.Service["getOrLease"] => {
  const hold = holding.coherence?.holdArguments ?? Coherence.notHolding
  return (key, ttl) =>
    call("get", key, () =>
      commands
        .wtGetOrLease(key, leases.keyOf(key), holding.holdersOf(key), leases.holder, ttlMillis(ttl), ...hold)
        .then(lookupOf)
    )
}

export const invalidate =
  (commands: KeyScripts, channel: string, holding: Holding, call: Call): Cache.Service["invalidate"] =>
  (key, version, ttl) =>
    Effect.map(
      writeOne(holding.coherence, call, "invalidate", key, (strict) =>
        commands.wtInvalidate(
          key,
          holding.holdersOf(key),
          holding.bornOf(key),
          String(version),
          RedisEntry.encode(Entry.Tombstone({ version })),
          ttlMillis(ttl),
          channel,
          key,
          ...strict
        )
      ),
      (reply): WriteOutcome => (reply.startsWith("written") ? "written" : "rejected")
    )

// SCAN's MATCH is a glob: a prefix holding *, ?, [ or \ must match only itself.
const globEscape = (text: string) => text.replace(/[*?[\]\\]/g, "\\$&")

/** One page of SCAN on one server, of the keys under `prefix`, as the cache names them. */
export const scanPage = async (
  server: Redis,
  keyPrefix: string,
  prefix: string,
  cursor: string
): Promise<readonly [next: string, keys: ReadonlyArray<string>]> => {
  // ioredis does not prefix SCAN's pattern nor strip the keys it returns: done here.
  const [next, keys] = await server.scan(cursor, "MATCH", `${globEscape(keyPrefix + prefix)}*`, "COUNT", 500)
  return [next, keys.map((key) => key.slice(keyPrefix.length))] as const
}

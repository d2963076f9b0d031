// The cache operations RedisCache and RedisClusterCache perform alike, given how each runs a call.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { Cluster, Redis } from "ioredis"
import { type Cache, Entry, type Lookup, type SetOptions, type WriteOutcome } from "../../Cache.js"
import type { Call } from "./client.js"
import * as RedisEntry from "./entry.js"
import type { KeyScripts, SetArguments } from "./scripts.js"

/** A TTL as Redis takes it: whole milliseconds, at least 1. */
export const ttlMillis = (ttl: Duration.Duration): string => String(Math.max(1, Math.ceil(Duration.toMillis(ttl))))

const isWrongType = (error: unknown): boolean => error instanceof Error && error.message.startsWith("WRONGTYPE")

export const get =
  (client: Redis | Cluster, call: Call): Cache.Service["get"] =>
  (key) =>
    call("get", key, () => client.get(key)).pipe(
      Effect.map(RedisEntry.decode),
      // A key of another type is a foreign write: a miss, repaired by the next fill.
      Effect.catchIf(
        (error) => isWrongType(error.cause),
        () => Effect.succeedNone
      )
    )

/**
 * The arguments of a guarded write. `guard` names the memory the ticket is checked against and
 * what the script needs to check it (see SetArguments).
 */
export const setArguments = (
  key: string,
  entry: Entry,
  { replacing, ticket, ttl }: SetOptions,
  guard: { readonly key: string; readonly argument: string },
  channel: string
): SetArguments => [
  key,
  guard.key,
  String(entry.version),
  RedisEntry.encode(entry),
  ttlMillis(ttl),
  replacing === undefined ? "" : RedisEntry.encode(replacing),
  ticket === undefined ? "" : ticket.epoch,
  ticket === undefined ? "" : String(Math.floor(ticket.notAfter)),
  guard.argument,
  channel,
  key
]

/** A set script's reply: any refusal other than by version (late, a lost memory) is `outdated`. */
export const writeOutcome = (reply: string): WriteOutcome =>
  reply === "written" || reply === "rejected" ? reply : "outdated"

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

export const getOrLease =
  (commands: KeyScripts, leases: Leases, call: Call): Cache.Service["getOrLease"] =>
  (key, ttl) =>
    call("get", key, () => commands.wtGetOrLease(key, leases.keyOf(key), leases.holder, ttlMillis(ttl)).then(lookupOf))

export const invalidate =
  (commands: KeyScripts, channel: string, call: Call): Cache.Service["invalidate"] =>
  (key, version, ttl) =>
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

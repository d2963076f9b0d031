// A circuit breaker on a cache connection, shared by every entity on that cache. While it is open
// every call fails at once with CacheError `Unavailable` (cause `CircuitOpen`): the write-through
// then serves reads from the store without a lease or a fill, and returns writes committed to the
// store with StaleCacheError, owing their keys a tombstone (see writeThrough/repair.ts). After the
// interval one call probes the cache; its success closes the breaker.
import type * as Effect from "effect/Effect"
import { Cache, CacheError } from "../Cache.js"
import type { Call } from "./redis/client.js"
import type { Options } from "../CircuitBreaker.js"
import * as CircuitBreaker from "./circuitBreaker.js"

/**
 * A guard for the calls of one cache connection: `name` names the cache in the metrics' tags and
 * the log lines; `onOpen` runs as it opens: an in-process tier in front of the cache drops what it
 * holds, since it cannot hear other processes' writes while the cache is unreachable. A call it
 * refuses fails with CacheError `Unavailable`; `isOutage` says which failures count.
 */
const guardFor = (
  options: Options,
  name: string,
  onOpen: (() => void) | undefined,
  isOutage: (error: CacheError) => boolean
) => {
  const breaker = CircuitBreaker.make(options, { tier: "cache", name, onOpen })
  return <A>(operation: string, key: string, effect: Effect.Effect<A, CacheError>): Effect.Effect<A, CacheError> =>
    breaker.guard(effect, {
      refuse: (open) => new CacheError({ operation, key, reason: "Unavailable", cause: open }),
      isOutage
    })
}

/** `cache` behind a breaker, each of its operations a call (see `guardFor`). */
export const wrap = (cache: Cache.Service, options: Options, name: string, onOpen?: () => void): Cache.Service => {
  // Every cache error is the cache not answering: its reasons are `Timeout` and `Unavailable`.
  const guarded = guardFor(options, name, onOpen, always)
  return Cache.of({
    ...cache,
    get: (key) => guarded("get", key, cache.get(key)),
    getMany: (keys) => guarded("getMany", keys[0] ?? "", cache.getMany(keys)),
    lease: (key, ttl) => guarded("lease", key, cache.lease(key, ttl)),
    getOrLease: (key, ttl) => guarded("get", key, cache.getOrLease(key, ttl)),
    set: (key, entry, options) => guarded("set", key, cache.set(key, entry, options)),
    setMany: (items) => guarded("setMany", items[0]?.key ?? "", cache.setMany(items)),
    invalidate: (key, version, ttl) => guarded("invalidate", key, cache.invalidate(key, version, ttl)),
    scan: (prefix, cursor) => guarded("scan", prefix, cache.scan(prefix, cursor))
  })
}

const always = () => true

/**
 * The calls to Redis behind a breaker unless it is turned off: RedisCache's and RedisClusterCache's.
 * Around each call rather than each operation, so that what an operation does once Redis answered
 * (a strict tier's write waiting for other processes' acknowledgements, or for a young memory to
 * be a lease old) is not taken for Redis being slow, nor holds the breaker's probe. A reply that
 * says the key holds another type is Redis answering.
 */
export const aroundCalls = (
  call: Call,
  options: Options | false | undefined,
  name: string,
  onOpen: () => void,
  answered: (error: CacheError) => boolean
): Call => {
  if (options === false) return call
  const guarded = guardFor(options ?? {}, name, onOpen, (error) => !answered(error))
  return (operation, key, run) => guarded(operation, key, call(operation, key, run))
}

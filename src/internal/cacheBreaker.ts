// A circuit breaker on a cache connection, shared by every entity on that cache. While it is open
// every call fails at once with CacheError `Unavailable` (cause `CircuitOpen`): the write-through
// then serves reads from the store without a lease or a fill, and returns writes committed to the
// store with StaleCacheError, owing their keys a tombstone (see writeThrough/repair.ts). After the
// interval one call probes the cache; its success closes the breaker.
import type * as Effect from "effect/Effect"
import { Cache, CacheError } from "../Cache.js"
import type { Options } from "../CircuitBreaker.js"
import * as CircuitBreaker from "./circuitBreaker.js"

/**
 * `cache` behind a breaker; `name` names the cache in the metrics' tags and the log lines. `onOpen`
 * runs as it opens: an in-process tier in front of the cache drops what it holds, since it cannot
 * hear other processes' writes while the cache is unreachable.
 */
export const wrap = (cache: Cache.Service, options: Options, name: string, onOpen?: () => void): Cache.Service => {
  const breaker = CircuitBreaker.make(options, { tier: "cache", name, onOpen })
  // Every cache error is the cache not answering: its reasons are `Timeout` and `Unavailable`.
  const guarded =
    (operation: string) =>
    <A>(key: string, effect: Effect.Effect<A, CacheError>): Effect.Effect<A, CacheError> =>
      breaker.guard(effect, {
        refuse: (open) => new CacheError({ operation, key, reason: "Unavailable", cause: open }),
        isOutage: always
      })
  return Cache.of({
    ...cache,
    get: (key) => guarded("get")(key, cache.get(key)),
    getMany: (keys) => guarded("getMany")(keys[0] ?? "", cache.getMany(keys)),
    lease: (key, ttl) => guarded("lease")(key, cache.lease(key, ttl)),
    getOrLease: (key, ttl) => guarded("get")(key, cache.getOrLease(key, ttl)),
    set: (key, entry, options) => guarded("set")(key, cache.set(key, entry, options)),
    setMany: (items) => guarded("setMany")(items[0]?.key ?? "", cache.setMany(items)),
    invalidate: (key, version, ttl) => guarded("invalidate")(key, cache.invalidate(key, version, ttl)),
    scan: (prefix, cursor) => guarded("scan")(prefix, cache.scan(prefix, cursor))
  })
}

const always = () => true

/** `cache` behind a breaker unless it is turned off. */
export const around = (
  cache: Cache.Service,
  options: Options | false | undefined,
  name: string,
  onOpen?: () => void
): Cache.Service => (options === false ? cache : wrap(cache, options ?? {}, name, onOpen))

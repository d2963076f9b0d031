/**
 * Which entity owns which key prefix on a `Cache`: two entities that would share a prefix on one
 * cache read and overwrite each other's entries, so the second one to be built is refused.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import { globalValue } from "effect/GlobalValue"
import type * as Scope from "effect/Scope"
import type { Cache } from "../Cache.js"

// Keyed by the cache service itself: two layers over one Redis are two caches here, and the check is
// about what one process built on one `Cache`.
const owners = globalValue(
  Symbol.for("effect-write-through/cacheNamespaceOwners"),
  () => new WeakMap<Cache.Service, Map<string, string>>()
)

/**
 * Holds `prefix` on `cache` for `owner` (a description naming the entity) until the scope closes;
 * dies naming both owners when another entity holds it.
 */
export const claim = (cache: Cache.Service, prefix: string, owner: string): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.suspend(() => {
      let claimed = owners.get(cache)
      if (claimed === undefined) {
        claimed = new Map()
        owners.set(cache, claimed)
      }
      const holder = claimed.get(prefix)
      if (holder !== undefined) {
        return Effect.dieMessage(
          `WriteThrough: ${owner} and ${holder} would share the cache namespace ${JSON.stringify(prefix)} ` +
            `on one Cache, and read and overwrite each other's entries; give one of them a distinct \`entity\``
        )
      }
      claimed.set(prefix, owner)
      return Effect.void
    }),
    () => Effect.sync(() => owners.get(cache)?.delete(prefix))
  )

// The audit: scans an entity's cache entries page by page, compares each value's version with the
// store's, and with `repair` replaces each entry that disagrees with a tombstone.
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { CacheError } from "../../Cache.js"
import type { StoreError } from "../../Store.js"
import type { AuditReport } from "../../WriteThrough.js"
import type { Entity } from "./entity.js"

interface Counts {
  values: number
  consistent: number
  stale: number
  ahead: number
  repaired: number
}

export const audit = <K, A, I>(
  entity: Entity<K, A, I>,
  options?: { readonly repair?: boolean | undefined }
): Effect.Effect<AuditReport, CacheError | StoreError> =>
  entity.observed("audit", () =>
    Effect.gen(function* () {
      let cursor = "0"
      const seen = new Set<string>()
      const counts: Counts = { values: 0, consistent: 0, stale: 0, ahead: 0, repaired: 0 }
      do {
        const [next, page] = yield* entity.boundCache("scan", entity.name, entity.cache.scan(entity.prefix, cursor))
        cursor = next
        const keys = page.filter((key) => !seen.has(key))
        for (const key of keys) seen.add(key)
        if (keys.length > 0) yield* auditPage(entity, keys, counts, options?.repair === true)
      } while (cursor !== "0")
      const inconsistent = counts.stale + counts.ahead
      return {
        entity: entity.name,
        scanned: seen.size,
        ...counts,
        nines: inconsistent === 0 ? Infinity : -Math.log10(inconsistent / counts.values)
      } satisfies AuditReport
    })
  )

const auditPage = <K, A, I>(
  entity: Entity<K, A, I>,
  keys: ReadonlyArray<string>,
  counts: Counts,
  repair: boolean
): Effect.Effect<void, CacheError | StoreError> =>
  Effect.gen(function* () {
    const entries = yield* entity.boundCache("getMany", keys[0]!, entity.cache.getMany(keys))
    const texts = keys.map((key) => key.slice(entity.prefix.length))
    const rows = yield* entity.collection.getMany(texts)
    for (let i = 0; i < keys.length; i++) {
      const entry = entries[i]!
      if (Option.isNone(entry) || entry.value._tag === "Tombstone") continue
      counts.values++
      const row = rows.get(texts[i]!)
      const cached = entry.value.version
      if (row !== undefined && row.version === cached) {
        counts.consistent++
        continue
      }
      if (row !== undefined && cached > row.version) counts.ahead++
      else counts.stale++
      if (repair) {
        // A tombstone at the higher of the two versions replaces the entry whichever way it is off.
        const outcome = yield* entity.boundCache(
          "invalidate",
          texts[i]!,
          entity.cache.invalidate(keys[i]!, Math.max(cached, row?.version ?? 0), entity.settings.tombstoneTtl)
        )
        if (outcome === "written") counts.repaired++
      }
    }
  })

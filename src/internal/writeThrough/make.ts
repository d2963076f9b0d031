// An entity's operations, assembled from the read path, the write path, the resolver and the audit.
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type * as Scope from "effect/Scope"
import type { Cache } from "../../Cache.js"
import type { Store, StoreError, Table } from "../../Store.js"
import type { Options, WriteThrough } from "../../WriteThrough.js"
import { audit } from "./audit.js"
import * as ChangeFeed from "./changeFeed.js"
import * as Entity from "./entity.js"
import * as Read from "./read.js"
import * as Repair from "./repair.js"
import * as Resolver from "./resolver.js"
import { currentPublications } from "./transaction.js"
import * as Write from "./write.js"

export const make = <K, A, I>(
  options: Options<K, A, I> & { readonly entity: string },
  owner: string = describeOwner(options)
): Effect.Effect<WriteThrough<K, A>, StoreError, Cache | Store | Scope.Scope> =>
  Effect.flatMap(Entity.make(options, owner), (entity) =>
    Effect.all([
      Repair.run(entity.repairs, { ...entity, sweep: audit(entity, { repair: true }) }),
      ChangeFeed.run(entity, entity.collection.changes)
    ]).pipe(Effect.as(operations(entity)))
  )

const operations = <K, A, I>(entity: Entity.Entity<K, A, I>): WriteThrough<K, A> => {
  const get = (key: K) => Read.get(entity, key)
  const getMany = (keys: Iterable<K>) => Read.getMany(entity, keys)
  const getBatched = Resolver.make(getMany, get)
  return {
    entity: entity.name,
    audit: (auditOptions) => audit(entity, auditOptions),
    get,
    // Inside a transaction, reads go one by one: they must not fill the cache, and batching gains little there.
    getMany: (keys) =>
      Effect.flatMap(FiberRef.get(currentPublications), (publications) =>
        publications === undefined ? getMany(keys) : Effect.forEach(keys, get)
      ),
    getBatched: (key) =>
      Effect.flatMap(FiberRef.get(currentPublications), (publications) =>
        publications === undefined ? getBatched(key) : get(key)
      ),
    set: (key, value) => Write.set(entity, key, value),
    setMany: (entries) => Write.setMany(entity, entries),
    delete: (key) => Write.remove(entity, key)
  }
}

/** How errors name an entity that claims a cache namespace: its service, its name and its table. */
export const describeOwner = (
  options: { readonly entity: string; readonly table?: Table | undefined },
  service?: string
): string =>
  [
    service === undefined ? undefined : `service ${JSON.stringify(service)}`,
    `entity ${JSON.stringify(options.entity)}`,
    options.table === undefined ? undefined : `(table ${qualifiedTableName(options.table)})`
  ]
    .filter((part) => part !== undefined)
    .join(" ")

/** The table's name, qualified by its schema when one is given: the default entity name. */
export const qualifiedTableName = (table: Table): string =>
  table.schema === undefined ? table.name : `${table.schema}.${table.name}`

/**
 * The `Store` in process memory: the embedded default and a stand-in for users'
 * tests. Versions come from one counter, so they increase in write order and are
 * never reused.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { storeWide, transactionRefused } from "./internal/storeError.js"
import { currentStoreTransaction } from "./internal/storeTransaction.js"
import { type Row, Store, type StoreError } from "./Store.js"

// A transaction's writes, per entity and key (null: deleted), applied together when it commits.
interface Staged {
  readonly store: object
  readonly writes: Map<string, Map<string, Row | null>>
}

/**
 * A transaction holds the store's one write permit until it ends, as a database holds the locks
 * of the rows it wrote: writes from outside it wait, reads never do and see only committed rows.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Store.Service> = Effect.map(Effect.makeSemaphore(1), (permit) => {
  const self = {}
  let lastVersion = 0
  const entities = new Map<string, Map<string, Row>>()
  const staged = Effect.map(FiberRef.get(currentStoreTransaction), (current) =>
    (current as Staged | undefined)?.store === self ? (current as Staged) : undefined
  )
  // Outside a transaction a write takes the permit for itself; inside one, it is staged.
  const write = <A>(
    entity: string,
    apply: (committed: Map<string, Row>) => A,
    stage: (writes: Map<string, Row | null>) => A
  ) =>
    Effect.flatMap(staged, (transaction) => {
      if (transaction === undefined) return permit.withPermits(1)(Effect.sync(() => apply(entities.get(entity)!)))
      let writes = transaction.writes.get(entity)
      if (writes === undefined) {
        writes = new Map()
        transaction.writes.set(entity, writes)
      }
      return Effect.succeed(stage(writes))
    })
  const copy = (row: Row): Row => ({ version: row.version, value: structuredClone(row.value) })
  return Store.of({
    collection: (target) =>
      Effect.sync(() => {
        const entity = target.entity
        if (!entities.has(entity)) entities.set(entity, new Map())
        const table = entities.get(entity)!
        // Inside a transaction its own writes come first.
        const read = (transaction: Staged | undefined, key: string): Row | undefined => {
          const own = transaction?.writes.get(entity)?.get(key)
          return own === null ? undefined : (own ?? table.get(key))
        }
        // Copies in and out, so a caller mutating its object cannot change what is stored.
        return {
          get: (key) =>
            Effect.map(staged, (transaction) => {
              const row = read(transaction, key)
              return row === undefined ? Option.none() : Option.some(copy(row))
            }),
          getMany: (keys) =>
            Effect.map(staged, (transaction) => {
              const found = new Map<string, Row>()
              for (const key of keys) {
                const row = read(transaction, key)
                if (row !== undefined) found.set(key, copy(row))
              }
              return found
            }),
          put: (key, value) => {
            const row = (): Row => ({ version: ++lastVersion, value: structuredClone(value) })
            return write(
              entity,
              (committed) => {
                const written = row()
                committed.set(key, written)
                return written.version
              },
              (writes) => {
                const written = row()
                writes.set(key, written)
                return written.version
              }
            )
          },
          // One permit (or one staging) for the batch: all of it commits together.
          putMany: (entries) => {
            const rows = (): Array<readonly [string, Row]> =>
              entries.map(([key, value]) => [key, { version: ++lastVersion, value: structuredClone(value) }] as const)
            const apply = (target: Map<string, Row | null>) => {
              const versions = new Map<string, number>()
              for (const [key, row] of rows()) {
                target.set(key, row)
                versions.set(key, row.version)
              }
              return versions
            }
            return write(entity, apply, apply)
          },
          delete: (key) =>
            write(
              entity,
              (committed) => {
                committed.delete(key)
                return ++lastVersion
              },
              (writes) => {
                writes.set(key, null)
                return ++lastVersion
              }
            )
        }
      }),
    inTransaction: Effect.map(staged, (transaction) => transaction !== undefined),
    transaction: <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.flatMap(staged, (outer): Effect.Effect<A, E | StoreError, R> => {
        if (outer !== undefined) {
          return Effect.fail(
            transactionRefused(storeWide("transaction"), {
              detail: "cannot begin inside another transaction of the same store"
            })
          )
        }
        const transaction: Staged = { store: self, writes: new Map() }
        return permit.withPermits(1)(
          Effect.tap(Effect.locally(effect, currentStoreTransaction, transaction), () => {
            for (const [entity, writes] of transaction.writes) {
              const table = entities.get(entity)!
              for (const [key, row] of writes) {
                if (row === null) table.delete(key)
                else table.set(key, row)
              }
            }
          })
        )
      })
  })
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Store> = Layer.effect(Store, make)

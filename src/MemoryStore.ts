/**
 * The `Store` in process memory: the embedded default and a stand-in for users'
 * tests. Versions come from one counter, so they increase in write order and are
 * never reused.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { type Row, Store } from "./Store.js"

/**
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Store.Service> = Effect.sync(() => {
  let lastVersion = 0
  const entities = new Map<string, Map<string, Row>>()
  return Store.of({
    collection: (target) =>
      Effect.sync(() => {
        let rows = entities.get(target.entity)
        if (rows === undefined) {
          rows = new Map()
          entities.set(target.entity, rows)
        }
        const table = rows
        // Copies in and out, so a caller mutating its object cannot change what is stored.
        return {
          get: (key) =>
            Effect.sync(() => {
              const row = table.get(key)
              return row === undefined
                ? Option.none()
                : Option.some({ version: row.version, value: structuredClone(row.value) })
            }),
          getMany: (keys) =>
            Effect.sync(() => {
              const found = new Map<string, Row>()
              for (const key of keys) {
                const row = table.get(key)
                if (row !== undefined) found.set(key, { version: row.version, value: structuredClone(row.value) })
              }
              return found
            }),
          put: (key, value) =>
            Effect.sync(() => {
              const version = ++lastVersion
              table.set(key, { version, value: structuredClone(value) })
              return version
            }),
          delete: (key) =>
            Effect.sync(() => {
              table.delete(key)
              return ++lastVersion
            })
        }
      })
  })
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Store> = Layer.effect(Store, make)

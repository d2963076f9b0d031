/**
 * The `StoreError`s the stores raise, one constructor per reason: a failure is told by where it
 * happened (its `Site`) and what is known of it (its `Report`).
 */
import { StoreError } from "../Store.js"

/** Where the store failed: the operation, and the entity and key it was for. */
export interface Site {
  readonly entity: string
  readonly key: string
  readonly operation: string
}

/** What a `StoreError` says beyond its site and reason: a detail, and what the database reported. */
export type Report = Omit<ConstructorParameters<typeof StoreError>[0], keyof Site | "reason">

/** An operation of the whole store rather than of one entity's key: building the store, a transaction. */
export const storeWide = (operation: string): Site => ({ entity: "*", key: "", operation })

/** Checking that an entity fits the store, when its collection is prepared. */
export const preparing = (entity: string): Site => ({ entity, key: "", operation: "prepare" })

const withReason =
  (reason: StoreError["reason"]) =>
  (site: Site, report: Report = {}): StoreError =>
    new StoreError({ ...site, reason, ...report })

/** The database was not reached, or went away before anything could have been written. */
export const unavailable = withReason("Unavailable")

/** The database did not answer within the bound. */
export const timedOut = withReason("Timeout")

/** The database refused the statement. */
export const rejected = withReason("Rejected")

/** What the database returned does not make sense to the store. */
export const undecodable = withReason("Decode")

/** The store's objects (its names, the entity's table) do not fit the entity. */
export const schemaMismatch = withReason("Schema")

/** A transaction would not guarantee what it must: it cannot begin, nest or commit, or a write is outside it. */
export const transactionRefused = withReason("Transaction")

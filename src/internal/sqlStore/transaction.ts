/**
 * The store's transactions: the one `Store.transaction` begins (for `WriteThrough.transaction`, which
 * publishes to the cache after COMMIT), the ones it begins for itself, and the check that a write
 * runs in no transaction but its own.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import type { StoreError } from "../../Store.js"
import { type Site, storeWide, transactionRefused, unavailable } from "../storeError.js"
import { currentStoreTransaction } from "../storeTransaction.js"
import { databaseFailure, unanswered } from "./databaseFailure.js"

const currentTransaction = Effect.serviceOption(SqlClient.TransactionConnection)

/** True when a statement made now would run inside a database transaction, whoever began it. */
export const inTransaction: Effect.Effect<boolean> = Effect.map(currentTransaction, Option.isSome)

/**
 * A transaction of the store's own. @effect/sql dies when its ROLLBACK fails (the connection is
 * gone), and the death hides the failure that led to the ROLLBACK; yet nothing committed, the
 * transaction having gone with its connection. Only a failing COMMIT leaves the outcome unknown:
 * that stays a defect.
 */
export const ownTransaction = <A, E, R>(
  sql: SqlClient.SqlClient,
  effect: Effect.Effect<A, E, R>,
  beginFailed: (cause: unknown) => StoreError
): Effect.Effect<A, E | StoreError, R> =>
  Effect.suspend(() => {
    let began = false
    let beforeCommit: Exit.Exit<A, E> | undefined
    return sql
      .withTransaction(
        Effect.suspend(() => {
          began = true
          return effect
        }).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              beforeCommit = exit
            })
          )
        )
      )
      .pipe(
        Effect.catchAllCause((cause): Effect.Effect<A, E | StoreError> => {
          if (!began) return Effect.fail(beginFailed(Cause.squash(cause)))
          if (beforeCommit !== undefined && Exit.isFailure(beforeCommit)) return beforeCommit
          return Effect.failCause(cause as Cause.Cause<E>)
        })
      )
  })

const transactionError = (detail: string, cause?: unknown): StoreError =>
  transactionRefused(storeWide("transaction"), { detail, ...databaseFailure(cause) })

// A BEGIN the database never answered says it is unreachable (worth a retry, and counted by the
// store's breaker); one it refused says something of the transaction.
const beginFailure = (cause: unknown): StoreError =>
  cause instanceof SqlError && unanswered(cause)
    ? unavailable(storeWide("transaction"), { detail: "could not begin the transaction", ...databaseFailure(cause) })
    : transactionError("could not begin the transaction", cause)

// After an error PostgreSQL aborts the transaction and answers its COMMIT with a ROLLBACK, not
// an error: a statement whose error the transaction's effect caught would go unnoticed. One more
// statement tells, since in an aborted transaction it fails.
const checkBeforeCommit = (sql: SqlClient.SqlClient): Effect.Effect<unknown, StoreError> =>
  sql`SELECT 1`.pipe(
    Effect.mapError((cause) =>
      transactionError(
        "checked before COMMIT, the transaction cannot commit (an earlier statement failed and aborted it, or its connection is gone): it was rolled back",
        cause
      )
    )
  )

/** `Store.transaction`: `effect` in a transaction of the store's own, which its collections may write in. */
export const transaction =
  (sql: SqlClient.SqlClient) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
    Effect.flatMap(currentTransaction, (outer) => {
      // Nested in another transaction, this one's COMMIT would only release a savepoint.
      if (Option.isSome(outer)) {
        return Effect.fail(
          transactionError(
            "cannot begin inside another SQL transaction: its COMMIT, not this one's, would decide the writes"
          )
        )
      }
      return ownTransaction(
        sql,
        Effect.flatMap(currentTransaction, (own) =>
          Effect.locally(effect, currentStoreTransaction, Option.getOrUndefined(own)).pipe(
            Effect.zipLeft(checkBeforeCommit(sql))
          )
        ),
        beginFailure
      )
    })

/**
 * Runs `write` unless it would run in a transaction other than the store's own. Inside a transaction
 * the version comes back before COMMIT: only the transaction begun by the store's `transaction` (for
 * WriteThrough.transaction, which publishes after COMMIT) may write; in any other one the cache would
 * hear of a write that may still roll back.
 */
export const writable = <A, E>(site: Site, write: Effect.Effect<A, E>): Effect.Effect<A, E | StoreError> =>
  Effect.flatMap(currentTransaction, (transaction): Effect.Effect<A, E | StoreError> =>
    Option.isNone(transaction)
      ? write
      : Effect.flatMap(FiberRef.get(currentStoreTransaction), (own): Effect.Effect<A, E | StoreError> =>
          own === transaction.value
            ? write
            : Effect.fail(
                transactionRefused(site, {
                  detail:
                    "write-through inside sql.withTransaction would publish to the cache before COMMIT; " +
                    "use WriteThrough.transaction, which publishes after COMMIT, or commit first"
                })
              )
        )
  )

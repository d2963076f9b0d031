/**
 * What the store makes of a failed statement: whether it got through to PostgreSQL, whether a write
 * may have committed, and what PostgreSQL reported, with the values of the statement redacted.
 */
import { SqlError } from "@effect/sql/SqlError"
import { type StoreError, StoreOutcomeUnknownError } from "../../Store.js"
import { type Report, type Site, rejected, unavailable } from "../storeError.js"

/** The fields of node-postgres's `DatabaseError` that a `StoreError` may repeat. */
interface PgError {
  readonly code: string
  readonly message: string
  readonly routine?: unknown
  readonly schema?: unknown
  readonly table?: unknown
  readonly column?: unknown
  readonly dataType?: unknown
  readonly constraint?: unknown
}

// @effect/sql-pg wraps the driver's error in a SqlError; a begin that failed may come bare.
const pgError = (failure: unknown): PgError | undefined => {
  const error = failure instanceof SqlError ? failure.cause : failure
  if (typeof error !== "object" || error === null) return undefined
  const { code, message } = error as { code?: unknown; message?: unknown }
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) && typeof message === "string"
    ? (error as PgError)
    : undefined
}

// A SQLSTATE from the server means the statement was refused and rolled back,
// except for the classes that also mean the connection went away mid-statement.
export const sqlState = (error: SqlError): string | undefined => pgError(error)?.code

const connectionLost = (state: string | undefined): boolean =>
  state === undefined || state.startsWith("08") || state.startsWith("57P")

const neverSent = (error: SqlError): boolean => error.message.startsWith("Failed to acquire connection")

/** PostgreSQL did not answer the statement: it was never sent, or the connection went away. */
export const unanswered = (error: SqlError): boolean => neverSent(error) || connectionLost(sqlState(error))

const namedFields = ["constraint", "schema", "table", "column", "dataType"] as const

/**
 * PostgreSQL's message with its values redacted, by the rule `StoreError.databaseMessage` documents.
 * PostgreSQL quotes names and values alike and does not escape a quote inside a value, so once a
 * quoted text is not a name it reported, nothing up to the last quote can be trusted to be a name.
 */
const redactValues = (message: string, names: ReadonlySet<string>): string => {
  let redacted = message
  let open = message.indexOf('"')
  while (open >= 0) {
    const close = message.indexOf('"', open + 1)
    if (close < 0 || !names.has(message.slice(open + 1, close))) {
      redacted = `${message.slice(0, open)}"…"${message.slice(message.lastIndexOf('"') + 1)}`
      break
    }
    open = message.indexOf('"', close + 1)
  }
  // The bytes of an invalid encoding are bytes of the value.
  return redacted.replace(/\b0x[0-9A-Fa-f]{2}(?: 0x[0-9A-Fa-f]{2})*\b/g, "0x…")
}

/**
 * The fields of a `StoreError` about a failure of the database: what PostgreSQL reported, without
 * the values of the statement, and the failure itself as `cause`.
 */
export const databaseFailure = (
  failure: unknown
): Pick<Report, "cause" | "sqlState" | "databaseMessage" | (typeof namedFields)[number]> => {
  if (failure === undefined) return {}
  const error = pgError(failure)
  if (error === undefined) return { cause: failure }
  const reported: Partial<Record<(typeof namedFields)[number], string>> = {}
  for (const field of namedFields) {
    const name = error[field]
    if (typeof name === "string") reported[field] = name
  }
  // Class 22's messages quote the offending value, whatever names the error carries.
  const names = new Set(error.code.startsWith("22") ? [] : Object.values(reported))
  return {
    cause: failure,
    sqlState: error.code,
    ...(error.routine === "exec_stmt_raise" ? {} : { databaseMessage: redactValues(error.message, names) }),
    ...reported
  }
}

/**
 * The failure of a statement that leaves nothing written whatever happened to it: a read, or a
 * write in a transaction of the store's own, which a lost connection rolls back.
 */
export const statementFailure =
  (site: Site) =>
  (error: SqlError): StoreError =>
    (unanswered(error) ? unavailable : rejected)(site, databaseFailure(error))

/** The failure of a write that commits on its own: once sent, a lost connection leaves its outcome unknown. */
export const writeFailure =
  (site: Site) =>
  (error: SqlError): StoreError | StoreOutcomeUnknownError =>
    neverSent(error) || !connectionLost(sqlState(error))
      ? (neverSent(error) ? unavailable : rejected)(site, databaseFailure(error))
      : new StoreOutcomeUnknownError({ ...site, cause: error })

// An entity's keys and values on their way in and out: validated and encoded before any I/O,
// decoded from a store row or a cache entry on the way back.
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as SchemaAST from "effect/SchemaAST"
import type { Entry } from "../../Cache.js"
import type { Table } from "../../Store.js"
import type { StoreError } from "../../Store.js"
import { ValidationError } from "../../WriteThroughError.js"
import { findUnstorableString } from "../storableValue.js"
import * as StoreErrors from "../storeError.js"

export interface Codec<K, A, I> {
  /** The value's encoded field names when it encodes to an object; the SQL store maps them onto columns. */
  readonly fields: ReadonlyArray<string> | undefined
  readonly checkKey: (key: K) => Either.Either<string, ValidationError>
  readonly checkValue: (key: string, value: A) => Either.Either<CheckedValue<I>, ValidationError>
  readonly encodeValue: (value: A) => Either.Either<I, ParseResult.ParseIssue>
  readonly decodeRow: (key: string, encoded: unknown) => Either.Either<A, StoreError>
  readonly decodeEntry: (entry: Entry & { readonly payload: string }) => Either.Either<A, unknown>
}

export interface CheckedValue<I> {
  readonly encoded: I
  /** The encoded value as JSON: what the cache holds. */
  readonly payload: string
}

const encodedFields = (schema: Schema.Schema.AnyNoContext): ReadonlyArray<string> | undefined => {
  const ast = Schema.encodedSchema(schema).ast
  if (!SchemaAST.isTypeLiteral(ast)) return undefined
  return SchemaAST.getPropertySignatures(ast).map((property) => String(property.name))
}

/** A key as errors show it: quoted, and cut short when long. */
export const describeKey = (key: unknown): string => {
  if (typeof key !== "string") return `<${typeof key}>`
  return key.length > 64 ? `${JSON.stringify(key.slice(0, 64))}... (${key.length} characters)` : JSON.stringify(key)
}

// Compiled once: no schema work is repeated per call beyond running these.
export const make = <K, A, I>(options: {
  readonly entity: string
  readonly key: Schema.Schema<K, string>
  readonly value: Schema.Schema<A, I>
  readonly table: Table | undefined
  readonly maxKeyBytes: number
  /** The cache hands out the same entry object more than once: decoded values are worth keeping. */
  readonly reusesEntries: boolean
}): Codec<K, A, I> => {
  const { entity, maxKeyBytes, table } = options
  const fields = encodedFields(options.value)
  const encodeKey = ParseResult.encodeEither(options.key)
  const encodeValue = ParseResult.encodeEither(options.value)
  const decodeValue = ParseResult.decodeUnknownEither(options.value)
  const keyField =
    table === undefined || fields === undefined
      ? undefined
      : fields.find((field) => (table.columns?.[field] ?? field) === table.primaryKey)

  const invalid = (key: unknown, field: "key" | "value", detail: string, cause?: unknown) =>
    Either.left(new ValidationError({ entity, key: describeKey(key), field, detail, cause }))

  const checkKey = (key: K): Either.Either<string, ValidationError> => {
    const encoded = encodeKey(key)
    if (Either.isLeft(encoded)) return invalid(key, "key", "the key does not fit its schema", encoded.left)
    const text = encoded.right
    if (typeof text !== "string" || text.length === 0)
      return invalid(key, "key", "the key must encode to a non-empty string")
    if (!text.isWellFormed()) return invalid(text, "key", "the key holds an unpaired surrogate")
    if (text.includes("\u0000")) return invalid(text, "key", "the key holds a NUL character")
    const bytes = Buffer.byteLength(text, "utf8")
    if (bytes > maxKeyBytes)
      return invalid(text, "key", `the key is ${bytes} bytes long, over the limit of ${maxKeyBytes}`)
    return Either.right(text)
  }

  const checkValue = (key: string, value: A): Either.Either<CheckedValue<I>, ValidationError> => {
    const encoded = encodeValue(value)
    if (Either.isLeft(encoded)) {
      return invalid(key, "value", ParseResult.TreeFormatter.formatIssueSync(encoded.left), encoded.left)
    }
    if (keyField !== undefined) {
      const inValue = (encoded.right as Record<string, unknown>)[keyField]
      if (String(inValue) !== key) {
        return invalid(
          key,
          "value",
          `field ${keyField} is ${JSON.stringify(inValue)}, but the key is ${JSON.stringify(key)}`
        )
      }
    }
    const unstorable = findUnstorableString(encoded.right)
    if (unstorable !== undefined) {
      return invalid(key, "value", `${unstorable}, which the store cannot hold as given`)
    }
    try {
      return Either.right({ encoded: encoded.right, payload: JSON.stringify(encoded.right) })
    } catch (cause) {
      return invalid(key, "value", "the encoded value cannot be written as JSON", cause)
    }
  }

  const decodeRow = (key: string, encoded: unknown): Either.Either<A, StoreError> =>
    Either.mapLeft(decodeValue(encoded), (issue) =>
      StoreErrors.undecodable(
        { entity, key, operation: "get" },
        { detail: ParseResult.TreeFormatter.formatIssueSync(issue), cause: issue }
      )
    )

  return { fields, checkKey, checkValue, encodeValue, decodeRow, decodeEntry: entryDecoder(decodeValue, options) }
}

// An in-process tier hands back the same entry object on every hit: decode it once. Values
// are shared between readers from then on, as with any in-process cache.
const entryDecoder = <A>(
  decodeValue: (json: unknown) => Either.Either<A, ParseResult.ParseIssue>,
  { reusesEntries }: { readonly reusesEntries: boolean }
) => {
  const decodedEntries = new WeakMap<Entry, A>()
  return (entry: Entry & { readonly payload: string }): Either.Either<A, unknown> => {
    if (reusesEntries && decodedEntries.has(entry)) return Either.right(decodedEntries.get(entry)!)
    let json: unknown
    try {
      json = JSON.parse(entry.payload)
    } catch (error) {
      return Either.left(error)
    }
    const decoded = decodeValue(json)
    if (reusesEntries && Either.isRight(decoded)) decodedEntries.set(entry, decoded.right)
    return decoded
  }
}

// The fixtures the suites share: the `User` entity of the seed example, cache-entry builders, and
// the library's own decoder for what Redis holds (rather than a regex that re-implements it).
import { Option, Schema } from "effect"
import { Cache } from "../../src/index.js"
import { decode } from "../../src/internal/redis/entry.js"

export class User extends Schema.Class<User>("User")({
  id: Schema.String,
  name: Schema.String,
  email: Schema.String.pipe(Schema.pattern(/^[^@\s]+@[^@\s]+$/))
}) {}

/** The entity of the shutdown test and of the writer process it signals. */
export class Counter extends Schema.Class<Counter>("Counter")({ id: Schema.String, n: Schema.Number }) {}

/** A valid user whose `id` is its key. */
export const user = (id: string, name: string) => new User({ id, name, email: `${id}@example.com` })

export const value = (version: number, payload: string) => Cache.Entry.Value({ version, payload })

export const tombstone = (version: number) => Cache.Entry.Tombstone({ version })

/** A raw Redis string (`v<version>:<payload>`, `t<version>:`) as the library reads it; `None` when it is none. */
export const decodeEntry: (raw: string | null) => Option.Option<Cache.Entry> = decode

/** The version of a raw Redis entry; NaN when the string is absent or not an entry, so no comparison holds. */
export const versionOf = (raw: string | null): number =>
  Option.match(decodeEntry(raw), { onNone: () => NaN, onSome: (entry) => entry.version })

import { it, expect } from "@effect/vitest"
import { Effect, Layer, Option, Schema } from "effect"
import { SqlStore, WriteThrough } from "../src/index.js"
import { PgLive, redisCacheLayer, scopedTable } from "./support/services.js"

class User extends Schema.Class<User>("User")({ id: Schema.String, name: Schema.String, email: Schema.String }) {}

it.live("smoke", () =>
  Effect.gen(function* () {
    const table = yield* scopedTable(
      (t) =>
        `CREATE TABLE "${t}" (id text primary key, name text not null, email text not null, version bigint not null)`
    )
    const users = yield* WriteThrough.make({
      entity: table,
      key: Schema.String,
      value: User,
      table: { name: table, primaryKey: "id" }
    })
    yield* users.set("42", new User({ id: "42", name: "Ada", email: "ada@example.com" }))
    const got = yield* users.get("42")
    expect(Option.getOrThrow(got).name).toBe("Ada")
    yield* users.delete("42")
    expect(yield* users.get("42")).toEqual(Option.none())
  }).pipe(
    Effect.scoped,
    Effect.provide(Layer.mergeAll(SqlStore.layer(), redisCacheLayer()).pipe(Layer.provideMerge(PgLive)))
  )
)

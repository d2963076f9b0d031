import { Effect, Layer } from "effect"
import { MemoryCache, MemoryStore, SqlStore } from "../src/index.js"
import { writeThroughContract } from "./contract/WriteThroughContract.js"
import { PgLive, redisCacheLayer, unique, usersTable } from "./support/services.js"

const memoryTable = Effect.sync(() => ({ name: unique("users"), primaryKey: "id" }))
const sqlTable = Effect.map(usersTable, (name) => ({ name, primaryKey: "id" }))
const sqlStore = () => SqlStore.layer().pipe(Layer.provideMerge(PgLive))

writeThroughContract("MemoryCache + MemoryStore", {
  layer: () => Layer.merge(MemoryCache.layer(), MemoryStore.layer),
  table: memoryTable
})

writeThroughContract("RedisCache + SqlStore (PostgreSQL)", {
  layer: () => Layer.merge(redisCacheLayer(), sqlStore()),
  table: sqlTable
})

writeThroughContract("MemoryCache + SqlStore (PostgreSQL)", {
  layer: () => Layer.merge(MemoryCache.layer(), sqlStore()),
  table: sqlTable
})

writeThroughContract("RedisCache + MemoryStore", {
  layer: () => Layer.merge(redisCacheLayer(), MemoryStore.layer),
  table: memoryTable
})

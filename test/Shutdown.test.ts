// What the README's "Running in production" promises of a shutdown: a process run under
// NodeRuntime.runMain that receives SIGINT or SIGTERM while its fibers write exits on its own, and
// leaves no key whose cache entry is older than its committed row (each in-flight write either
// reached the cache or fenced its key). Run against the real PostgreSQL and the shared Redis.
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer, Option, Schema } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { RedisCache, SqlStore, WriteThrough } from "../src/index.js"
import { Counter, decodeEntry } from "./support/fixtures.js"
import { PgLive, dropPrefix, rawRedis, redisUrl, scopedTable, unique } from "./support/services.js"

const writerPath = fileURLToPath(new URL("./shutdown/writer.ts", import.meta.url))
const keys = 16

/** Starts the writer, waits until every key has a row and its fibers write, then signals it; its exit code. */
const writeThenSignal = (table: string, prefix: string, signal: "SIGINT" | "SIGTERM") =>
  Effect.async<{ readonly code: number | null; readonly output: string }, Error>((resume) => {
    const child = spawn(process.execPath, ["--import", "tsx", writerPath, table, prefix, String(keys)], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    const noExit = setTimeout(() => child.kill("SIGKILL"), 30_000)
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString()
      // Some writes in flight on every key when the signal lands.
      if (output.includes("writing")) setTimeout(() => child.kill(signal), 300)
    })
    child.stderr.on("data", (chunk: Buffer) => void (output += chunk.toString()))
    child.once("exit", (code, killed) => {
      clearTimeout(noExit)
      resume(
        killed === "SIGKILL"
          ? Effect.fail(new Error(`the writer did not exit within 30 s of starting:\n${output}`))
          : Effect.succeed({ code, output })
      )
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

describe("shutdown under NodeRuntime.runMain", () => {
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    it.effect(`${signal} mid-write: the process exits cleanly and no key's cache entry is older than its row`, () => {
      const prefix = unique("shutdown")
      return Effect.gen(function* () {
        const sql = yield* SqlClient.SqlClient
        const table = yield* scopedTable(
          (name) =>
            `CREATE TABLE "${name}" (id text PRIMARY KEY, n double precision NOT NULL, version bigint NOT NULL)`,
          "counters"
        )
        const { code, output } = yield* writeThenSignal(table, prefix, signal)
        expect(output).toContain("writing")
        expect(code, output).toBe(0)

        const rows = yield* sql<{ id: string; n: number; version: string }>`SELECT id, n, version FROM ${sql(table)}`
        expect(rows.length).toBe(keys)
        // Every writer got past its first write, so the signal met writes in flight.
        expect(rows.filter((row) => row.n >= 0).length).toBe(keys)
        const redis = yield* rawRedis
        const counters = yield* WriteThrough.make({
          entity: table,
          key: Schema.String,
          value: Counter,
          table: { name: table, primaryKey: "id" }
        })
        for (const row of rows) {
          const raw = yield* Effect.promise(() => redis.get(`${prefix}:${table}:${row.id}`))
          const older = Option.exists(
            decodeEntry(raw),
            (entry) => entry._tag === "Value" && entry.version < Number(row.version)
          )
          expect(older, `${row.id}: cache ${raw?.slice(0, 40)}, row version ${row.version}`).toBe(false)
          // And what a reader gets is the committed row.
          expect(Option.map(yield* counters.get(row.id), (counter) => counter.n)).toEqual(Option.some(row.n))
        }
      }).pipe(
        Effect.scoped,
        Effect.provide(Layer.merge(RedisCache.layer({ url: redisUrl, keyPrefix: `${prefix}:` }), SqlStore.layer())),
        Effect.provide(PgLive),
        Effect.ensuring(dropPrefix(prefix))
      )
    })
  }
})

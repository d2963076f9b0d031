// What RedisCache and RedisClusterCache share about talking to Redis through ioredis.
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Cluster, Redis } from "ioredis"
import { CacheError } from "../Cache.js"

// The URL as it may appear in an error message: without its password.
export const displayUrl = (url: string): string => {
  try {
    const parsed = new URL(url)
    if (parsed.password !== "") parsed.password = "***"
    return parsed.toString()
  } catch {
    return "<unparseable redis url>"
  }
}

// SCAN's MATCH is a glob: a prefix holding *, ?, [ or \ must match only itself.
export const globEscape = (text: string) => text.replace(/[*?[\]\\]/g, "\\$&")

export const isWrongType = (error: unknown): boolean => error instanceof Error && error.message.startsWith("WRONGTYPE")

export const isTimeout = (error: unknown): boolean => error instanceof Error && error.message === "Command timed out"

/** The scripts both caches define alike (see redisEntry.ts). */
export interface KeyScripts {
  wtLease(leaseKey: string, holder: string, ttlMillis: string): Promise<number>
  wtInvalidate(
    key: string,
    version: string,
    entry: string,
    ttlMillis: string,
    channel: string,
    announcedKey: string
  ): Promise<number>
}

export const fail = (operation: string, key: string) => (cause: unknown) =>
  new CacheError({ operation, key, reason: isTimeout(cause) ? "Timeout" : "Unavailable", cause })

/** A TTL as Redis takes it: whole milliseconds, at least 1. */
export const ttlMillis = (ttl: Duration.Duration): string => String(Math.max(1, Math.ceil(Duration.toMillis(ttl))))

/**
 * A client for the scope's lifetime, closed politely within `commandTimeout`, else dropped. ioredis
 * reports connection failures as events (without a listener Node prints them); the last one says
 * more than the "Connection is closed" that connect() rejects with, so it is kept for errors.
 */
export const acquireClient = <C extends Redis | Cluster>(
  make: () => C,
  commandTimeout: number
): Effect.Effect<readonly [client: C, lastError: () => unknown], never, Scope.Scope> =>
  Effect.map(
    Effect.acquireRelease(Effect.sync(make), (client) =>
      Effect.promise(() => client.quit()).pipe(
        Effect.timeout(commandTimeout),
        Effect.catchAllCause(() => Effect.sync(() => client.disconnect()))
      )
    ),
    (client) => {
      let lastError: unknown = undefined
      client.on("error", (error: unknown) => {
        lastError = error
      })
      return [client, () => lastError] as const
    }
  )

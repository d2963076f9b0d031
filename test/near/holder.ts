// A process with a strict near tier, for test/NearTier.strict.test.ts: another process, so that the
// test can freeze it (SIGSTOP) while it holds a key. Arguments: the Redis URL, the key prefix, the
// lease in ms. It prints `ready` once its tier serves, then answers lines on stdin:
// `get <key>` prints `got <key> <version or none>` (a read through the tier, from Redis on a miss);
// `peek <key>` prints `peeked <key> <version or none>` (the tier alone).
import { Effect, Option } from "effect"
import { createInterface } from "node:readline"
import { Cache, RedisCache } from "../../src/index.js"

const [url, keyPrefix, lease] = process.argv.slice(2)

const versionOf = (entry: Cache.Entry | undefined) => (entry === undefined ? "none" : String(entry.version))

const program = Effect.gen(function* () {
  const cache = yield* Cache.Cache
  const stats = yield* RedisCache.NearTierStats
  while (!(yield* stats.serving)) yield* Effect.sleep("5 millis")
  console.log("ready")
  const lines = createInterface({ input: process.stdin })
  for (;;) {
    const line = yield* Effect.async<string | undefined>((resume) => {
      const onLine = (text: string) => {
        lines.off("close", onClose)
        resume(Effect.succeed(text))
      }
      const onClose = () => {
        lines.off("line", onLine)
        resume(Effect.succeed(undefined))
      }
      lines.once("line", onLine)
      lines.once("close", onClose)
    })
    if (line === undefined) return
    const [command, key] = line.split(" ") as [string, string]
    if (command === "get") {
      const entry = yield* cache.get(key)
      console.log(`got ${key} ${versionOf(Option.getOrUndefined(entry))}`)
    } else if (command === "peek") {
      console.log(`peeked ${key} ${versionOf(cache.peek?.(key))}`)
    }
  }
})

Effect.runPromise(
  program.pipe(
    Effect.provide(
      RedisCache.layer({ url: url!, keyPrefix: keyPrefix!, near: { mode: "strict", lease: Number(lease) } })
    ),
    Effect.scoped
  )
).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)

// A redis-server of a test's own, on a free port, that the test may kill and restart.
// The shared Redis on 6379 is never touched.
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import { type ChildProcess, spawn } from "node:child_process"
import { createServer } from "node:net"

export interface RedisServer {
  readonly port: number
  readonly url: string
  /** SIGKILL: the server dies with everything it held in memory. */
  readonly kill: Effect.Effect<void>
  /** Starts a fresh, empty server on the same port. */
  readonly start: Effect.Effect<void>
}

export const freePort = Effect.async<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

const waitUntilReady = (child: ChildProcess, port: number) =>
  Effect.async<void, Error>((resume) => {
    let output = ""
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      if (output.includes("Ready to accept connections")) {
        child.stdout?.off("data", onData)
        resume(Effect.void)
      }
    }
    child.stdout?.on("data", onData)
    child.once("exit", (code) =>
      resume(Effect.fail(new Error(`redis-server on port ${port} exited (${code}): ${output}`)))
    )
  }).pipe(
    Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error(`redis-server on ${port} did not start`) })
  )

export const startRedisServer: Effect.Effect<RedisServer, Error, Scope.Scope> = Effect.gen(function* () {
  const port = yield* freePort
  let child: ChildProcess | undefined
  const start = Effect.suspend(() => {
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    return waitUntilReady(child, port)
  })
  const kill = Effect.async<void>((resume) => {
    const running = child
    if (running === undefined || running.exitCode !== null || running.signalCode !== null) return resume(Effect.void)
    running.once("exit", () => resume(Effect.void))
    running.kill("SIGKILL")
  })
  yield* Effect.acquireRelease(start, () => kill)
  return { port, url: `redis://127.0.0.1:${port}`, kill, start: Effect.orDie(start) }
})

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
  /** Starts a fresh, empty server on the same port, unless one is running. */
  readonly start: Effect.Effect<void>
  /** SIGSTOP: the server keeps its connections and its memory, and answers nothing (a black hole). */
  readonly freeze: Effect.Effect<void>
  /** SIGCONT: it answers again, with what it held. */
  readonly thaw: Effect.Effect<void>
}

const isFree = (port: number) =>
  Effect.async<boolean>((resume) => {
    const server = createServer()
    server.once("error", () => resume(Effect.succeed(false)))
    server.listen(port, "127.0.0.1", () => server.close(() => resume(Effect.succeed(true))))
  })

/**
 * A free port below the ephemeral range. A server that is killed and restarted on an ephemeral
 * port can find it taken by a client's reconnect attempt: on loopback such a socket may even
 * connect to itself (a TCP simultaneous open) and hold the port.
 */
export const freePort: Effect.Effect<number> = Effect.gen(function* () {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    if (yield* isFree(port)) return port
  }
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
  const alive = () => child !== undefined && child.exitCode === null && child.signalCode === null
  const start = Effect.suspend(() => {
    if (alive()) return Effect.void
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
  const signal = (name: "SIGSTOP" | "SIGCONT") => Effect.sync(() => void (alive() && child!.kill(name)))
  yield* Effect.acquireRelease(start, () => kill)
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    start: Effect.orDie(start),
    freeze: signal("SIGSTOP"),
    thaw: signal("SIGCONT")
  }
})

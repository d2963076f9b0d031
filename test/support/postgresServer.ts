// A PostgreSQL server of a test's own, in a fresh data directory on a free port, that the test may
// stop and start again (keeping its data, as a crashed or restarted server does). The shared server
// on 5432 is never touched. As root, the server runs as the `postgres` user, which initdb requires.
import { Effect } from "effect"
import type * as Scope from "effect/Scope"
import { execFile, execFileSync } from "node:child_process"
import { chownSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { freePort } from "./redisServer.js"

export interface PostgresServer {
  readonly port: number
  readonly url: string
  /** An immediate shutdown: every connection is cut, and what was committed is kept. */
  readonly stop: Effect.Effect<void, Error>
  /** Starts it again on the same port and data, unless it runs. */
  readonly start: Effect.Effect<void, Error>
}

const binaries = "/usr/lib/postgresql/15/bin"
const asRoot = process.getuid?.() === 0

const idOf = (flag: "-u" | "-g") => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim())

const run = (program: string, args: ReadonlyArray<string>) =>
  Effect.async<string, Error>((resume) => {
    const [command, argv] = asRoot
      ? ["runuser", ["-u", "postgres", "--", join(binaries, program), ...args]]
      : [join(binaries, program), [...args]]
    execFile(command, argv, { timeout: 30_000 }, (error, stdout, stderr) =>
      resume(
        error === null
          ? Effect.succeed(stdout)
          : Effect.fail(new Error(`${program} ${args.join(" ")} failed: ${error.message}\n${stdout}${stderr}`))
      )
    )
  })

export const startPostgresServer: Effect.Effect<PostgresServer, Error, Scope.Scope> = Effect.gen(function* () {
  const port = yield* freePort
  const dir = mkdtempSync(join(tmpdir(), "wt-pg-"))
  if (asRoot) chownSync(dir, idOf("-u"), idOf("-g"))
  const data = join(dir, "data")
  yield* run("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"])
  let running = false
  const start = Effect.suspend(() =>
    running
      ? Effect.void
      : Effect.as(
          run("pg_ctl", [
            "-D",
            data,
            "-l",
            join(dir, "log"),
            "-w",
            "start",
            "-o",
            `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`
          ]),
          undefined
        ).pipe(Effect.tap(() => (running = true)))
  )
  const stop = Effect.suspend(() =>
    running
      ? run("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]).pipe(Effect.tap(() => (running = false)))
      : Effect.void
  ).pipe(Effect.asVoid)
  yield* Effect.acquireRelease(start, () =>
    Effect.orDie(stop).pipe(Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
  )
  return { port, url: `postgres://postgres@127.0.0.1:${port}/postgres`, stop, start }
})

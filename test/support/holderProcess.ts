// A process with a strict near tier of its own (test/near/holder.ts), for what a test or a
// measurement cannot do to a tier in its own process: freeze it with SIGSTOP while it holds keys.
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

const holderPath = fileURLToPath(new URL("../near/holder.ts", import.meta.url))

/** A holder in a process of its own, answering `get` and `peek` lines; killed when the scope closes. */
export const holderProcess = (url: string, keyPrefix: string, lease: number) =>
  Effect.acquireRelease(
    Effect.async<{ child: ChildProcess; ask: (line: string) => Effect.Effect<string> }, Error>((resume) => {
      const child = spawn(process.execPath, ["--import", "tsx", holderPath, url, keyPrefix, String(lease)], {
        stdio: ["pipe", "pipe", "pipe"]
      })
      let output = ""
      const waiting: Array<(line: string) => void> = []
      child.stdout!.on("data", (chunk: Buffer) => {
        output += chunk.toString()
        let newline: number
        while ((newline = output.indexOf("\n")) >= 0) {
          const line = output.slice(0, newline)
          output = output.slice(newline + 1)
          if (line === "ready") resume(Effect.succeed({ child, ask }))
          else waiting.shift()?.(line)
        }
      })
      let errors = ""
      child.stderr!.on("data", (chunk: Buffer) => void (errors += chunk.toString()))
      child.once("exit", (code) =>
        resume(Effect.fail(new Error(`the holder exited (${code}) before it was ready: ${errors}`)))
      )
      const ask = (line: string) =>
        Effect.async<string>((answer) => {
          waiting.push((reply) => answer(Effect.succeed(reply)))
          child.stdin!.write(`${line}\n`)
        }).pipe(
          Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error(`no answer to ${line}: ${errors}`) }),
          Effect.orDie
        )
    }).pipe(Effect.timeout("30 seconds")),
    ({ child }) => Effect.sync(() => child.kill("SIGKILL"))
  )

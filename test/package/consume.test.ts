// The package as a user gets it: `npm pack` (prepack builds dist), the README's install line run word
// for word in an empty project (the tarball's path standing for the package name), then a consumer
// program and every ts block of the README type-checked there against the installed package, under
// `strict` without skipLibCheck, with NodeNext and with bundler resolution, and the program run
// against the real PostgreSQL and Redis. Run by `npm test` after the unit suites
// (vitest.package.config.ts): it reaches the npm registry and takes a minute or two.
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { basename, join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { readmeModules } from "../readme/blocks.js"
import { databaseUrl, dropPrefix, redisUrl, unique } from "../support/services.js"

const repo = fileURLToPath(new URL("../..", import.meta.url))
const readme = readFileSync(join(repo, "README.md"), "utf8")
const tsc = join(repo, "node_modules", "typescript", "bin", "tsc")

// npm hands its configuration to scripts as npm_* variables (the project's prefix among them): a
// child npm must not inherit them, or it acts on this repository instead of the consumer.
const cleanEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.toLowerCase().startsWith("npm_"))),
  npm_config_audit: "false",
  npm_config_fund: "false",
  npm_config_update_notifier: "false",
  ...extra
})

const run = (command: string, args: ReadonlyArray<string>, cwd: string, env = cleanEnv()) => {
  const result = spawnSync(command, args, { cwd, env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 })
  return { status: result.status, output: `${result.stdout ?? ""}${result.stderr ?? ""}`, error: result.error }
}

const succeed = (command: string, args: ReadonlyArray<string>, cwd: string, env?: NodeJS.ProcessEnv) => {
  const result = run(command, args, cwd, env)
  if (result.status !== 0) {
    throw new Error(`${command} ${args.join(" ")} (in ${cwd}) exited ${result.status}:\n${result.output}`)
  }
  return result.output
}

/** The README's install commands: every `npm i` line of its sh blocks, in order. */
const installLines = (markdown: string): ReadonlyArray<ReadonlyArray<string>> =>
  [...markdown.matchAll(/```sh\n([\s\S]*?)```/g)]
    .flatMap((block) => block[1]!.split("\n"))
    .map((line) => line.trim())
    .filter((line) => /^npm (i|install) (-D )?(effect-write-through|@types\/pg)\b/.test(line))
    .map((line) => line.split(/\s+/))

const tsconfig = (resolution: "NodeNext" | "Bundler") => ({
  compilerOptions: {
    target: "ES2022",
    // DOM: @effect/rpc's declarations (under @effect/platform-node) name the DOM's Transferable.
    lib: ["ES2023", "DOM"],
    module: resolution === "NodeNext" ? "NodeNext" : "ESNext",
    moduleResolution: resolution,
    strict: true,
    skipLibCheck: false,
    esModuleInterop: true,
    outDir: "out",
    rootDir: ".",
    noEmit: resolution === "Bundler"
  },
  include: ["main.ts", "readme/*.ts"]
})

describe("the packed package in a fresh consumer project", () => {
  let consumer = ""
  let tarball = ""

  beforeAll(() => {
    consumer = mkdtempSync(join(tmpdir(), "wt-consumer-"))
    succeed("npm", ["pack", "--pack-destination", consumer], repo)
    const [filename] = readdirSync(consumer).filter((name) => name.endsWith(".tgz"))
    tarball = join(consumer, filename!)
    writeFileSync(
      join(consumer, "package.json"),
      JSON.stringify({ name: "consumer", version: "1.0.0", private: true, type: "module" }, null, 2)
    )
    const lines = installLines(readme)
    expect(lines.map((line) => line.slice(0, 3).join(" "))).toEqual(["npm i effect-write-through", "npm i -D"])
    for (const line of lines) {
      const args = line.slice(1).map((arg) => (arg === "effect-write-through" ? tarball : arg))
      succeed("npm", args, consumer)
    }
    writeFileSync(join(consumer, "main.ts"), readFileSync(join(repo, "test/package/consumer/main.ts"), "utf8"))
    mkdirSync(join(consumer, "readme"))
    for (const module of readmeModules(readme)) writeFileSync(join(consumer, "readme", module.name), module.source)
    for (const resolution of ["NodeNext", "Bundler"] as const) {
      writeFileSync(
        join(consumer, `tsconfig.${resolution.toLowerCase()}.json`),
        JSON.stringify(tsconfig(resolution), null, 2)
      )
    }
  }, 600_000)

  afterAll(() => {
    if (consumer !== "") rmSync(consumer, { recursive: true, force: true })
  })

  it("the tarball holds the built ESM entry points with their types, and no tests", () => {
    const listed = succeed("tar", ["-tzf", tarball], consumer).split("\n")
    for (const file of ["index.js", "index.d.ts", "testing.js", "testing.d.ts"]) {
      expect(listed).toContain(`package/dist/${file}`)
    }
    expect(listed.filter((file) => file.startsWith("package/test/"))).toEqual([])
    // The README tells a newcomer the tarball's name, until the package is on the registry.
    expect(readme).toContain(basename(tarball))
    const installed = JSON.parse(
      readFileSync(join(consumer, "node_modules/effect-write-through/package.json"), "utf8")
    ) as { readonly type: string; readonly peerDependencies: Record<string, string> }
    expect(installed.type).toBe("module")
    expect(Object.keys(installed.peerDependencies)).toEqual(
      expect.arrayContaining(["effect", "@effect/sql", "@effect/platform", "@effect/sql-pg", "ioredis"])
    )
  })

  it("one copy of effect, on the Effect 3 line, shared with the library", () => {
    const tree = JSON.parse(run("npm", ["ls", "effect", "--all", "--json"], consumer).output) as unknown
    const versions = new Set<string>()
    const walk = (node: unknown): void => {
      if (typeof node !== "object" || node === null) return
      const { dependencies } = node as { readonly dependencies?: Record<string, { readonly version?: string }> }
      for (const [name, child] of Object.entries(dependencies ?? {})) {
        if (name === "effect" && child.version !== undefined) versions.add(child.version)
        walk(child)
      }
    }
    walk(tree)
    expect([...versions].length).toBe(1)
    expect([...versions][0]).toMatch(/^3\./)
    expect(existsSync(join(consumer, "node_modules/effect-write-through/node_modules/effect"))).toBe(false)
  })

  for (const resolution of ["NodeNext", "Bundler"] as const) {
    it(`the consumer program and the README's ${
      readmeModules(readme).length
    } blocks type-check, strict, moduleResolution ${resolution}`, () => {
      const result = run(process.execPath, [tsc, "-p", `tsconfig.${resolution.toLowerCase()}.json`], consumer)
      expect(result.output).toBe("")
      expect(result.status).toBe(0)
    }, 300_000)
  }

  it("the consumer program runs against the real PostgreSQL and Redis", async () => {
    // Compiled by the NodeNext check above; run as plain node, as a user would run their build.
    expect(readdirSync(join(consumer, "out"))).toContain("main.js")
    const table = unique("consumer_users")
    try {
      const result = run(
        process.execPath,
        [join(consumer, "out", "main.js")],
        consumer,
        cleanEnv({ DATABASE_URL: databaseUrl, REDIS_URL: redisUrl, CONSUMER_TABLE: table })
      )
      expect(result.output).toContain("consumer: ok")
      expect(result.status).toBe(0)
    } finally {
      await Effect.runPromise(dropPrefix(table))
    }
  }, 120_000)
})

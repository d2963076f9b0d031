/**
 * `npm run check:readme`: type-checks every ts block of README.md and of docs/*.md.
 *
 * Each block becomes a module (see `blocks.ts` for the scheme) written to `.readme-check/` at the
 * repository's root (gitignored; rewritten on every run and left there to look at). There the
 * repository's TypeScript checks them, `strict` and `exactOptionalPropertyTypes`, twice: with
 * `module`/`moduleResolution` NodeNext and with `bundler`. `effect-write-through` and
 * `effect-write-through/testing` resolve to `src/index.ts` and `src/testing.ts` through `paths`,
 * everything else to this repository's node_modules. Blocks of docs/*.md may also import
 * `@effect/vitest`.
 *
 * `tsx test/readme/check.ts some.md other.md` checks those files instead (paths relative to the
 * repository).
 *
 * Prints `readme: N blocks type-checked` and exits 0, or prints each diagnostic at its markdown
 * line (`README.md:120:7`) and exits 1.
 */
import { spawn } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join, relative } from "node:path"
import { fileURLToPath } from "node:url"
import { type ReadmeBlock, readmeBlocks } from "./blocks.js"
import { preludes } from "./preludes.js"

const repo = fileURLToPath(new URL("../..", import.meta.url))
const outDir = join(repo, ".readme-check")

interface Document {
  readonly file: string
  readonly prefix: string
  readonly extraImports: ReadonlyArray<string>
}

// The documents: the ones named on the command line (paths relative to the repository), else
// README.md and docs/*.md.
const named = process.argv.slice(2)
const documents: ReadonlyArray<Document> = (
  named.length > 0
    ? named
    : [
        "README.md",
        ...(existsSync(join(repo, "docs")) ? readdirSync(join(repo, "docs")) : [])
          .filter((name) => name.endsWith(".md"))
          .sort()
          .map((name) => `docs/${name}`)
      ]
).map((file) =>
  file === "README.md"
    ? { file, prefix: "readme", extraImports: [] }
    : {
        file,
        prefix: file
          .replace(/\.md$/, "")
          .replace(/[^A-Za-z0-9]+/g, "-")
          .toLowerCase(),
        extraImports: ["@effect/vitest"]
      }
)

const problems: Array<string> = []
const blocks = new Map<string, { readonly document: Document; readonly block: ReadmeBlock }>()
const counts: Array<string> = []
for (const document of documents) {
  const found = readmeBlocks(readFileSync(join(repo, document.file), "utf8"), {
    prefix: document.prefix,
    extraImports: document.extraImports,
    onError: (error) =>
      problems.push(`${document.file}:${error.markdownLine}: ${error.message.replace(/^line \d+: /, "")}`)
  })
  for (const block of found) blocks.set(block.name, { document, block })
  counts.push(`${document.file}: ${found.length}`)
}

// A prelude stands for code the README shows: it must still be there, word for word, or the blocks
// that name it would be checked against definitions no reader sees.
const readme = readFileSync(join(repo, "README.md"), "utf8")
for (const [name, source] of Object.entries(preludes)) {
  const definitions = source
    .split("\n")
    .filter((line) => !line.startsWith("import "))
    .join("\n")
    .split("\n\n")
    .map((definition) => definition.trim())
    .filter((definition) => definition !== "")
  const missing = definitions.find((definition) => !readme.includes(definition))
  if (missing !== undefined) {
    problems.push(`README.md: prelude "${name}" is no longer shown word for word: ${missing.split("\n")[0]}`)
  }
}

rmSync(outDir, { recursive: true, force: true })
mkdirSync(outDir, { recursive: true })
for (const [name, { block }] of blocks) writeFileSync(join(outDir, name), block.source)
writeFileSync(join(outDir, "package.json"), JSON.stringify({ private: true, type: "module" }, null, 2) + "\n")

// The repository's target and lib, which src needs (src uses String.prototype.isWellFormed).
const repoOptions = (
  JSON.parse(readFileSync(join(repo, "tsconfig.json"), "utf8")) as {
    readonly compilerOptions: { readonly target: string; readonly lib: ReadonlyArray<string> }
  }
).compilerOptions
const compilerOptions = {
  strict: true,
  exactOptionalPropertyTypes: true,
  target: repoOptions.target,
  lib: repoOptions.lib,
  types: ["node"],
  noEmit: true,
  // The declaration files of the dependencies are not this check's business (and @effect/sql-pg's
  // need @types/pg, which this repository does not install); src is checked all the same.
  skipLibCheck: true,
  paths: {
    "effect-write-through": [join(repo, "src/index.ts")],
    "effect-write-through/testing": [join(repo, "src/testing.ts")]
  }
}
const configs = [
  { label: "NodeNext", file: "tsconfig.nodenext.json", module: "NodeNext", moduleResolution: "NodeNext" },
  { label: "bundler", file: "tsconfig.bundler.json", module: "ESNext", moduleResolution: "bundler" }
]
for (const config of configs) {
  writeFileSync(
    join(outDir, config.file),
    JSON.stringify(
      {
        compilerOptions: { ...compilerOptions, module: config.module, moduleResolution: config.moduleResolution },
        include: ["*.ts"]
      },
      null,
      2
    ) + "\n"
  )
}

const tsc = join(repo, "node_modules/typescript/bin/tsc")
const run = (configFile: string) =>
  new Promise<{ readonly code: number | null; readonly output: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [tsc, "-p", join(outDir, configFile), "--pretty", "false"], { cwd: outDir })
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()))
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, output }))
  })

// `file(line,col): error TS1234: message`, then indented continuation lines.
const diagnostic = /^(.+?)\((\d+),(\d+)\): (error|warning) (TS\d+: [\s\S]*)$/

const locate = (file: string, line: number, column: number): string => {
  const path = file.startsWith("/") ? file : join(outDir, file)
  const name = relative(outDir, path)
  const found = blocks.get(name)
  if (found === undefined) return `${relative(repo, path)}:${line}:${column}`
  const { block, document } = found
  const offset = line - block.firstBlockLine
  if (offset >= 0 && offset < block.blockLines) {
    return `${document.file}:${block.markdownLine + offset}:${column} (${name}:${line})`
  }
  const what = block.preludes.length > 0 ? `its imports or prelude ${block.preludes.join(", ")}` : "its imports"
  return `${document.file}:${block.markdownLine} (${name}:${line}:${column}, in ${what})`
}

const results = await Promise.all(configs.map((config) => run(config.file)))
results.forEach(({ code, output }, i) => {
  const label = configs[i]!.label
  const entries = output.split(/\n(?=\S)/).filter((entry) => entry.trim() !== "")
  for (const entry of entries) {
    const match = diagnostic.exec(entry.trimEnd())
    problems.push(
      match === null
        ? `[${label}] ${entry.trimEnd()}`
        : `[${label}] ${locate(match[1]!, Number(match[2]), Number(match[3]))}: ${match[4]} ${match[5]}`
    )
  }
  if (code !== 0 && entries.length === 0) problems.push(`[${label}] tsc exited with code ${code} and no diagnostics`)
})

if (problems.length > 0) {
  for (const problem of problems) console.error(problem)
  console.error(`\nreadme: ${problems.length} problem(s) in ${blocks.size} blocks; the modules are in ${outDir}`)
  process.exit(1)
}
console.log(
  `readme: ${blocks.size} blocks type-checked (${counts.join(", ")}; module resolution ${configs.map((c) => c.label).join(" and ")})`
)

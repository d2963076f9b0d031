// `npm run bench`: every case of bench/cases.ts in interleaved rounds against the real Redis and
// PostgreSQL (REDIS_URL, DATABASE_URL), printed as a table and written to bench/results.json.
//
//   npm run bench                       # 9 rounds, each case measured for about 400 ms a round
//   npm run bench -- --rounds 3 --budget 100 --warmup 200   # a smoke run
//   npm run bench -- --only "lib: set"  # cases whose name matches (a regular expression), and their baselines
//   npm run bench -- --only change      # the change feed cases (bench/changeFeed.ts) and their baselines
//   npm run bench -- --only "in fiber"  # the in-fiber cases (bench/inFiber.ts) and their baselines
//
// The process exits 0 whether or not the targets are met (this is a measurement); non-zero only
// when a case, the setup or the cleanup failed.
import { writeFileSync } from "node:fs"
import { cpus } from "node:os"
import { fileURLToPath } from "node:url"
import { cases, missMaxOps, missWarmupOps } from "./cases.js"
import { makeFixture } from "./fixture.js"
import { type Case, findGc, formatResults, runCases } from "./harness.js"

const argument = (name: string): string | undefined => {
  const at = process.argv.indexOf(name)
  return at === -1 ? undefined : process.argv[at + 1]
}

const rounds = Number(argument("--rounds") ?? 9)
const budgetMillis = Number(argument("--budget") ?? 400)
const warmupMillis = Number(argument("--warmup") ?? 1500)
const only = argument("--only")
if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds takes a positive integer")
if (!(budgetMillis > 0)) throw new Error("--budget takes a positive number of milliseconds")
if (!(warmupMillis >= 0)) throw new Error("--warmup takes a number of milliseconds")

const log = (line: string) => console.log(line)

// The selected cases, with the baselines they are compared with, and theirs (a case compared with
// another library case, e.g. an in-fiber case with its per-runPromise twin, brings that case's
// baselines too: every selected case's comparisons must be measured).
const select = <F>(all: ReadonlyArray<Case<F>>): ReadonlyArray<Case<F>> => {
  if (only === undefined) return all
  const pattern = new RegExp(only)
  const byName = new Map(all.map((c) => [c.case, c]))
  const wanted = new Set<string>()
  const add = (name: string) => {
    if (wanted.has(name)) return
    wanted.add(name)
    const c = byName.get(name)
    if (c === undefined) return
    if (c.baseline !== null) add(c.baseline)
    for (const also of c.also ?? []) add(also.baseline)
  }
  for (const c of all) if (pattern.test(c.case)) add(c.case)
  return all.filter((c) => wanted.has(c.case))
}

const main = async (): Promise<number> => {
  const began = process.hrtime.bigint()
  const selected = select(cases)
  const gc = findGc()
  log(
    `effect-write-through bench: ${selected.length} cases, ${rounds} rounds of ~${budgetMillis} ms, node ${process.version}, ` +
      `${cpus().length} CPUs, GC between cases: ${gc === undefined ? "unavailable" : "yes"}`
  )
  log("setting up (table, rows, warm caches)...")
  const fixture = await makeFixture({
    hitKeys: 1000,
    writeKeys: 1000,
    // Each miss case reads fresh keys: at most missMaxOps a round, a tenth more to warm up, and
    // calibration's and the warm-up's before it. Two halves: the library's two miss cases (one
    // runPromise a read, and in one fiber) each read their own half; the hand-written ones read the
    // first half under key prefixes of their own.
    missKeys: 2 * (Math.ceil(rounds * missMaxOps * 1.1) + 2 * missMaxOps + missWarmupOps),
    // Two stampede cases, each reading fresh keys from its own half.
    coldKeys: rounds * 20,
    // The outage cases cycle over theirs: 100 to read, 100 to write.
    outageKeys: 100,
    log
  })
  let failed = false
  try {
    log(`run ${fixture.runId}: table ${fixture.table}, Redis keys under ${fixture.runId}*`)
    const results = await runCases(selected, fixture, { rounds, budgetMillis, warmupMillis, log, gc })
    const seconds = Number(process.hrtime.bigint() - began) / 1e9
    log("")
    log(formatResults(results))
    const path = fileURLToPath(new URL("./results.json", import.meta.url))
    writeFileSync(path, JSON.stringify(results, null, 2) + "\n")
    log("")
    log(`wrote ${path}; measured in ${seconds.toFixed(1)} s`)
    failed = results.some((r) => r.error !== undefined)
  } finally {
    await fixture.cleanup()
  }
  log(`total ${(Number(process.hrtime.bigint() - began) / 1e9).toFixed(1)} s`)
  return failed ? 1 : 0
}

// A hung client must not hang the run forever.
const watchdog = setTimeout(
  () => {
    console.error("bench: still running after 15 minutes; giving up")
    process.exit(3)
  },
  15 * 60 * 1000
)
watchdog.unref()

main().then(
  (code) => {
    process.exitCode = code
  },
  (error) => {
    console.error("bench failed:", error)
    process.exitCode = 2
  }
)

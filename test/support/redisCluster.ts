// A 3-master Redis Cluster of a test's own, on free ports, whose nodes the test may kill and restart.
// The shared Redis on 6379 is never touched.
import calculateSlot from "cluster-key-slot"
import { Effect, Schedule } from "effect"
import type * as Scope from "effect/Scope"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import { createServer } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { freePort } from "./redisServer.js"

/** An inclusive range of hash slots, as `CLUSTER NODES` shows it: `[first, last]`. */
export type SlotRange = readonly [first: number, last: number]

export interface RedisCluster {
  readonly ports: ReadonlyArray<number>
  /** What ioredis' `new Cluster(nodes)` takes. */
  readonly nodes: ReadonlyArray<{ readonly host: "127.0.0.1"; readonly port: number }>
  /** The nodes as a comma-separated list of `redis://host:port`, for messages. */
  readonly url: string
  /** SIGKILL one node: it dies with everything it held in memory. */
  readonly kill: (index: number) => Effect.Effect<void>
  /**
   * Restarts one node on its port and directory, unless it is running: it re-reads its nodes-P.conf
   * and rejoins the cluster with its slots, but empty (there is no persistence).
   */
  readonly start: (index: number) => Effect.Effect<void>
  /** Succeeds once every node reports `cluster_state:ok` with all slots covered; fails after ~20 s. */
  readonly waitHealthy: Effect.Effect<void, Error>
  /** The slot ranges the node serves, as the first node that answers sees it (so also while it is down). */
  readonly slotsOf: (index: number) => Effect.Effect<ReadonlyArray<SlotRange>, Error>
}

const host = "127.0.0.1"
const busOffset = 10_000
const healthyWithin = "20 seconds"

const isFree = (port: number) =>
  Effect.async<boolean>((resume) => {
    const server = createServer()
    server.once("error", () => resume(Effect.succeed(false)))
    server.listen(port, host, () => server.close(() => resume(Effect.succeed(true))))
  })

/** `count` distinct free ports whose cluster bus ports (port + 10000) are free too and clash with no other. */
const freeClusterPorts = (count: number) =>
  Effect.gen(function* () {
    const ports: Array<number> = []
    while (ports.length < count) {
      const port = yield* freePort
      const taken = ports.flatMap((p) => [p, p + busOffset])
      if (taken.includes(port) || taken.includes(port + busOffset)) continue
      if (port + busOffset < 65_536 && (yield* isFree(port + busOffset))) ports.push(port)
    }
    return ports
  })

/** Runs redis-cli; fails with its output. */
const redisCli = (args: ReadonlyArray<string>, timeoutMillis: number) =>
  Effect.async<string, Error>((resume) => {
    const child = execFile("redis-cli", args, { timeout: timeoutMillis }, (error, stdout, stderr) => {
      if (error === null) resume(Effect.succeed(stdout))
      else resume(Effect.fail(new Error(`redis-cli ${args.join(" ")} failed (${error.message}): ${stdout}${stderr}`)))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** The tail of what a process wrote: enough for an error message, bounded so a chatty node cannot grow it. */
const outputLimit = 8_000

interface Node {
  readonly port: number
  readonly dir: string
  child: ChildProcess | undefined
  output: string
}

const alive = (node: Node) => node.child !== undefined && node.child.exitCode === null && node.child.signalCode === null

const spawnNode = (node: Node) =>
  Effect.async<void, Error>((resume) => {
    const child = spawn(
      "redis-server",
      [
        "--port",
        String(node.port),
        "--bind",
        host,
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        `nodes-${node.port}.conf`,
        "--dir",
        node.dir,
        "--save",
        "",
        "--appendonly",
        "no",
        "--cluster-node-timeout",
        "2000"
      ],
      { stdio: ["ignore", "pipe", "pipe"] }
    )
    node.child = child
    node.output = ""
    let ready = false
    // Both streams are read for as long as the node lives: a pipe nobody drains would block its logging.
    const onData = (chunk: Buffer) => {
      node.output = (node.output + chunk.toString()).slice(-outputLimit)
      if (!ready && node.output.includes("Ready to accept connections")) {
        ready = true
        resume(Effect.void)
      }
    }
    child.stdout?.on("data", onData)
    child.stderr?.on("data", onData)
    child.once("error", (error) =>
      resume(Effect.fail(new Error(`redis-server on port ${node.port} could not be spawned: ${error.message}`)))
    )
    child.once("exit", (code, signal) =>
      resume(Effect.fail(new Error(`redis-server on port ${node.port} exited (${code ?? signal}): ${node.output}`)))
    )
  }).pipe(
    Effect.timeoutFail({
      duration: "10 seconds",
      onTimeout: () => new Error(`redis-server on port ${node.port} did not start: ${node.output}`)
    })
  )

const killNode = (node: Node) =>
  Effect.async<void>((resume) => {
    const running = node.child
    if (running === undefined || !alive(node)) return resume(Effect.void)
    running.once("exit", () => resume(Effect.void))
    running.kill("SIGKILL")
  }).pipe(Effect.timeout("5 seconds"), Effect.ignore)

/** Why a node is not healthy yet, or undefined when it is. */
const unhealthy = (port: number, count: number) =>
  redisCli(["-h", host, "-p", String(port), "cluster", "info"], 1_000).pipe(
    Effect.map((info) => {
      const field = (name: string) => info.match(new RegExp(`^${name}:(\\S+)`, "m"))?.[1]
      const state = {
        cluster_state: field("cluster_state"),
        cluster_slots_ok: field("cluster_slots_ok"),
        cluster_known_nodes: field("cluster_known_nodes")
      }
      const ok =
        state.cluster_state === "ok" &&
        state.cluster_slots_ok === "16384" &&
        state.cluster_known_nodes === String(count)
      return ok ? undefined : JSON.stringify(state)
    }),
    Effect.catchAll((error) => Effect.succeed(error.message))
  )

/** Parses `CLUSTER NODES`: the ranges of the master on `port` (migration markers like `[5-<-id]` are skipped). */
const parseSlots = (clusterNodes: string, port: number): ReadonlyArray<SlotRange> | undefined => {
  for (const line of clusterNodes.split("\n")) {
    const fields = line.trim().split(" ")
    // <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot> ...
    if (fields[1]?.split("@")[0] !== `${host}:${port}`) continue
    return fields
      .slice(8)
      .filter((slot) => /^\d+(-\d+)?$/.test(slot))
      .map((slot) => {
        const [first, last = first] = slot.split("-").map(Number) as [number, number?]
        return [first, last] as const
      })
  }
  return undefined
}

export const startRedisCluster: Effect.Effect<RedisCluster, Error, Scope.Scope> = Effect.gen(function* () {
  const ports = yield* freeClusterPorts(3)
  const nodes: ReadonlyArray<Node> = yield* Effect.forEach(ports, (port) =>
    Effect.gen(function* () {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), `redis-cluster-${port}-`))),
        (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
      )
      const node: Node = { port, dir, child: undefined, output: "" }
      // Released before the directory: the node is dead when its files go.
      yield* Effect.acquireRelease(spawnNode(node), () => killNode(node))
      return node
    })
  )
  const url = ports.map((port) => `redis://${host}:${port}`).join(",")
  const outputs = () => nodes.map((node) => `--- redis-server on port ${node.port}:\n${node.output}`).join("\n")
  const nodeAt = (index: number) => {
    const node = nodes[index]
    if (node === undefined) throw new Error(`no node ${index} in the cluster at ${url}`)
    return node
  }

  // Each round asks every node; the last round's answers name what was still wrong.
  const waitHealthy = Effect.forEach(ports, (port) => unhealthy(port, ports.length), { concurrency: "unbounded" }).pipe(
    Effect.flatMap((reasons) =>
      reasons.every((reason) => reason === undefined)
        ? Effect.void
        : Effect.fail(
            new Error(
              `Redis Cluster on ports ${ports.join(", ")} is not healthy within ${healthyWithin}: ` +
                ports.map((port, i) => `${port}: ${reasons[i] ?? "ok"}`).join("; ") +
                `\n${outputs()}`
            )
          )
    ),
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo(healthyWithin)))
  )

  yield* redisCli(
    ["--cluster", "create", ...ports.map((port) => `${host}:${port}`), "--cluster-replicas", "0", "--cluster-yes"],
    20_000
  ).pipe(
    Effect.mapError(
      (error) => new Error(`creating the Redis Cluster on ports ${ports.join(", ")}: ${error.message}\n${outputs()}`)
    )
  )
  yield* waitHealthy

  const slotsOf = (index: number) =>
    Effect.gen(function* () {
      const port = nodeAt(index).port
      const errors: Array<string> = []
      for (const asked of ports) {
        const answer = yield* Effect.either(redisCli(["-h", host, "-p", String(asked), "cluster", "nodes"], 2_000))
        if (answer._tag === "Left") {
          errors.push(answer.left.message)
          continue
        }
        const slots = parseSlots(answer.right, port)
        if (slots !== undefined) return slots
        errors.push(`${asked} does not know ${port}: ${answer.right}`)
      }
      return yield* Effect.fail(new Error(`no node of ${url} told the slots of ${port}: ${errors.join("; ")}`))
    })

  return {
    ports,
    nodes: ports.map((port) => ({ host, port })),
    url,
    kill: (index) => Effect.suspend(() => killNode(nodeAt(index))),
    start: (index) =>
      Effect.suspend(() => {
        const node = nodeAt(index)
        return alive(node) ? Effect.void : spawnNode(node)
      }).pipe(Effect.orDie),
    waitHealthy,
    slotsOf
  }
})

/** The first key `prefix + n` (n = 0, 1, ...) whose hash slot lies in one of the ranges. */
export const keyInSlots = (slots: ReadonlyArray<SlotRange>, prefix: string): string => {
  for (let n = 0; n < 100_000; n++) {
    const key = `${prefix}${n}`
    const slot = calculateSlot(key)
    if (slots.some(([first, last]) => first <= slot && slot <= last)) return key
  }
  throw new Error(`no key ${prefix}<n> hashes into ${JSON.stringify(slots)} (does the prefix hold a {hash tag}?)`)
}

/** A key `prefix + n` that the node at `index` serves. */
export const keyOnNode = (cluster: RedisCluster, index: number, prefix: string): Effect.Effect<string, Error> =>
  Effect.flatMap(cluster.slotsOf(index), (slots) =>
    Effect.try({ try: () => keyInSlots(slots, prefix), catch: (error) => error as Error })
  )

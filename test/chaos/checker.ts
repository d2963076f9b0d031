// The history checker: given every operation a workload performed (with invoke and complete times on
// one monotonic clock shared by all processes), the writes the database committed (with their
// versions, in commit order per key), and the final state of both tiers, it counts what broke the
// promise "no read returns a value older than an acknowledged write".
//
// An operation is invoke -> ok | fail | unknown, as in Jepsen's histories: `fail` means it certainly
// did not happen, `unknown` that it may have (a lost commit, or a write the library reported as
// possibly stale).
//
// A call that writes many keys (`setMany`, `WriteThrough.transaction`) is recorded as one operation
// per key, all with the call's invoke and complete times and the outcome the call has for that key,
// and with the call's id in `call`. Per key such an operation is judged as a single write is; across
// its keys the call must be all or nothing: either every value it wrote is in the store's history, or
// none is. And a write that failed (the library said it did not happen) must not be in that history,
// whether or not a read returned it.

export type Outcome = "ok" | "fail" | "unknown"

export interface Op {
  readonly process: number
  readonly key: string
  readonly kind: "read" | "write" | "delete"
  /** write: the (unique) value written; read: the value returned, null for none; delete: null. */
  readonly value: string | null
  /** Microseconds on a clock shared by every process of the run (CLOCK_MONOTONIC). */
  readonly invoke: number
  readonly complete: number
  readonly outcome: Outcome
  /** The error's tag, when it failed. */
  readonly error?: string | undefined
  /** More of the error, for whoever reads the history: a StoreError's reason, a defect's message. */
  readonly detail?: string | undefined
  /** For one key of a call that wrote several (setMany, transaction): the call's id, shared by its keys' operations. */
  readonly call?: string | undefined
  /** What made the operation: `setMany`, `transaction`; absent for a single get, set or delete. */
  readonly via?: "setMany" | "transaction" | undefined
}

/** One committed change of the store, in the order the store's versions give. `value` null: a delete. */
export interface Committed {
  readonly key: string
  readonly value: string | null
  readonly version: number
}

export interface FinalState {
  /** The store's row per key at the end: its value and version, or null when absent. */
  readonly store: ReadonlyMap<string, { readonly value: string; readonly version: number } | null>
  /** The cache's entry per key at the end, decoded. */
  readonly cache: ReadonlyMap<string, { readonly kind: "value" | "tombstone"; readonly version: number } | null>
}

export interface Violation {
  readonly check:
    "stale read" | "failed-write read" | "lost write" | "unconverged" | "committed failed write" | "partial call"
  readonly key: string
  readonly detail: string
  /** A stale read superseded by a write or delete of the reader's own process. */
  readonly ownProcess?: boolean | undefined
}

export interface Report {
  readonly operations: number
  readonly reads: number
  readonly writes: number
  readonly deletes: number
  readonly staleReads: number
  /**
   * Of the stale reads, those superseded by a write or delete of the read's own process: with the
   * in-process tier, which lets other processes' writes reach a process late, a process still reads
   * its own writes at once.
   */
  readonly ownStaleReads: number
  readonly failedWriteReads: number
  readonly lostWrites: number
  readonly unconverged: number
  /** Writes that failed (the library said they did not happen) whose value is in the store's history. */
  readonly committedFailedWrites: number
  /** Multi-key calls some but not all of whose written values are in the store's history. */
  readonly partialCalls: number
  /** The longest a stale read came after the write that superseded it was acknowledged, in microseconds. */
  readonly maxStaleMicros: number
  /** Consistent reads as "nines": -log10(stale / reads); with none stale, a lower bound from the read count. */
  readonly nines: number
  readonly ninesIsLowerBound: boolean
  readonly violations: ReadonlyArray<Violation>
}

const group = <A>(items: ReadonlyArray<A>, key: (a: A) => string): Map<string, Array<A>> => {
  const groups = new Map<string, Array<A>>()
  for (const item of items) {
    const k = key(item)
    let list = groups.get(k)
    if (list === undefined) groups.set(k, (list = []))
    list.push(item)
  }
  return groups
}

export const check = (ops: ReadonlyArray<Op>, committed: ReadonlyArray<Committed>, final: FinalState): Report => {
  const violations: Array<Violation> = []
  const versionOf = new Map<string, number>()
  for (const change of committed) if (change.value !== null) versionOf.set(change.value, change.version)
  const writeOf = new Map<string, Op>()
  for (const op of ops) if (op.kind === "write" && op.value !== null) writeOf.set(op.value, op)

  let staleReads = 0
  let ownStaleReads = 0
  let maxStaleMicros = 0
  let failedWriteReads = 0
  for (const [key, keyOps] of group(ops, (op) => op.key)) {
    const ackedWrites = keyOps.filter((op) => op.kind === "write" && op.outcome === "ok")
    const ackedDeletes = keyOps.filter((op) => op.kind === "delete" && op.outcome === "ok")
    const possibleDeletes = keyOps.filter((op) => op.kind === "delete" && op.outcome !== "fail")
    for (const read of keyOps) {
      if (read.kind !== "read" || read.outcome !== "ok") continue
      if (read.value === null) {
        // None is stale when the key certainly held a row throughout the read: an acknowledged write
        // finished before it began, and no delete could have come between that write and the read's end.
        const latestOf = (writes: ReadonlyArray<Op>) => {
          let latest: Op | undefined
          for (const write of writes) {
            if (write.complete < read.invoke && (latest === undefined || write.invoke > latest.invoke)) latest = write
          }
          return latest !== undefined &&
            !possibleDeletes.some((d) => d.complete > latest.invoke && d.invoke < read.complete)
            ? latest
            : undefined
        }
        const latest = latestOf(ackedWrites)
        if (latest !== undefined) {
          staleReads++
          // The latest write of the read's own process is no later than the latest of all: stale too, if any.
          const own = latestOf(ackedWrites.filter((w) => w.process === read.process))
          if (own !== undefined) ownStaleReads++
          maxStaleMicros = Math.max(maxStaleMicros, read.invoke - latest.complete)
          violations.push({
            check: "stale read",
            key,
            detail:
              `read at ${read.invoke} (process ${read.process}) returned none after write ${latest.value} was acknowledged at ${latest.complete}` +
              (own === undefined ? "" : `; its own process's write ${own.value} was acknowledged at ${own.complete}`),
            ...(own === undefined ? {} : { ownProcess: true })
          })
        }
        continue
      }
      const write = writeOf.get(read.value)
      const version = versionOf.get(read.value)
      if (write === undefined || write.key !== key || write.outcome === "fail" || version === undefined) {
        failedWriteReads++
        violations.push({
          check: "failed-write read",
          key,
          detail: `read at ${read.invoke} returned ${read.value}, ${
            write === undefined || write.key !== key
              ? "never written to this key"
              : write.outcome === "fail"
                ? `whose write failed (${write.error ?? "?"})`
                : "which the store never committed"
          }`
        })
        continue
      }
      const supersedes = (w: Op) => w.complete < read.invoke && (versionOf.get(w.value!) ?? -1) > version
      // A delete invoked after the read's value was committed, and acknowledged before the read began, superseded it.
      const deletes = (d: Op) => d.invoke > write.complete && d.complete < read.invoke
      const newerWrite = ackedWrites.find(supersedes)
      const newerDelete = ackedDeletes.find(deletes)
      if (newerWrite !== undefined || newerDelete !== undefined) {
        staleReads++
        const own =
          ackedWrites.find((w) => w.process === read.process && supersedes(w)) ??
          ackedDeletes.find((d) => d.process === read.process && deletes(d))
        if (own !== undefined) ownStaleReads++
        maxStaleMicros = Math.max(maxStaleMicros, read.invoke - (newerWrite ?? newerDelete)!.complete)
        violations.push({
          check: "stale read",
          key,
          detail:
            `read at ${read.invoke} (process ${read.process}) returned ${read.value} (version ${version}) after ` +
            (newerWrite !== undefined
              ? `write ${newerWrite.value} (version ${versionOf.get(newerWrite.value!)}) was acknowledged at ${newerWrite.complete}`
              : `a delete was acknowledged at ${newerDelete!.complete}`) +
            (own === undefined
              ? ""
              : `; its own process's ${own.kind === "write" ? `write ${own.value}` : "delete"} was acknowledged at ${own.complete}`),
          ...(own === undefined ? {} : { ownProcess: true })
        })
      }
    }
  }

  let lostWrites = 0
  for (const op of ops) {
    if (op.kind === "write" && op.outcome === "ok" && !versionOf.has(op.value!)) {
      lostWrites++
      violations.push({
        check: "lost write",
        key: op.key,
        detail: `acknowledged write ${op.value} is not in the store's history`
      })
    }
  }
  // The store's final row per key must be its last committed change.
  for (const [key, changes] of group(committed, (c) => c.key)) {
    const last = changes.reduce((a, b) => (b.version > a.version ? b : a))
    const row = final.store.get(key) ?? null
    if ((row?.value ?? null) !== last.value) {
      lostWrites++
      violations.push({
        check: "lost write",
        key,
        detail: `the store ends with ${row?.value ?? "no row"} but its last committed change is ${last.value ?? "a delete"}`
      })
    }
  }

  // A write that failed certainly did not happen: its value must not be in the store's history, read or not.
  let committedFailedWrites = 0
  for (const op of ops) {
    if (op.kind === "write" && op.outcome === "fail" && op.value !== null && versionOf.has(op.value)) {
      committedFailedWrites++
      violations.push({
        check: "committed failed write",
        key: op.key,
        detail: `write ${op.value} failed (${op.error ?? "?"}) but the store committed it at version ${versionOf.get(op.value)}`
      })
    }
  }
  // A multi-key call commits all of its writes or none, whatever it answered. (Its deletes leave no
  // value to find, and a delete of an absent row no change at all: only its values are judged.)
  let partialCalls = 0
  for (const [call, callOps] of group(
    ops.filter((op) => op.call !== undefined && op.kind === "write" && op.value !== null),
    (op) => op.call!
  )) {
    const found = callOps.filter((op) => versionOf.has(op.value!))
    if (found.length > 0 && found.length < callOps.length) {
      partialCalls++
      const missing = callOps.filter((op) => !versionOf.has(op.value!))
      violations.push({
        check: "partial call",
        key: callOps[0]!.key,
        detail: `${callOps[0]!.via ?? "call"} ${call} (${callOps[0]!.outcome}${
          callOps[0]!.error === undefined ? "" : `, ${callOps[0]!.error}`
        }) committed ${found.map((op) => `${op.key}=${op.value}`).join(", ")} but not ${missing
          .map((op) => `${op.key}=${op.value}`)
          .join(", ")}`
      })
    }
  }

  let unconverged = 0
  for (const [key, entry] of final.cache) {
    if (entry === null || entry.kind === "tombstone") continue
    const row = final.store.get(key) ?? null
    if (row === null || row.version !== entry.version) {
      unconverged++
      violations.push({
        check: "unconverged",
        key,
        detail: `the cache holds version ${entry.version}, the store ${row === null ? "no row" : `version ${row.version}`}`
      })
    }
  }

  const reads = ops.filter((op) => op.kind === "read" && op.outcome === "ok").length
  const nines = staleReads === 0 ? Math.log10(Math.max(reads, 1)) : -Math.log10(staleReads / Math.max(reads, 1))
  return {
    operations: ops.length,
    reads,
    writes: ops.filter((op) => op.kind === "write").length,
    deletes: ops.filter((op) => op.kind === "delete").length,
    staleReads,
    ownStaleReads,
    failedWriteReads,
    lostWrites,
    unconverged,
    committedFailedWrites,
    partialCalls,
    maxStaleMicros,
    nines: Math.round(nines * 100) / 100,
    ninesIsLowerBound: staleReads === 0,
    violations
  }
}

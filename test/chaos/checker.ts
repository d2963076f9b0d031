// The history checker: given every operation a workload performed (with invoke and complete times on
// one monotonic clock shared by all processes), the writes the database committed (with their
// versions, in commit order per key), and the final state of both tiers, it counts what broke the
// promise "no read returns a value older than an acknowledged write".
//
// An operation is invoke -> ok | fail | unknown, as in Jepsen's histories: `fail` means it certainly
// did not happen, `unknown` that it may have (a lost commit, or a write the library reported as
// possibly stale).

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
  readonly check: "stale read" | "failed-write read" | "lost write" | "unconverged"
  readonly key: string
  readonly detail: string
}

export interface Report {
  readonly operations: number
  readonly reads: number
  readonly writes: number
  readonly deletes: number
  readonly staleReads: number
  readonly failedWriteReads: number
  readonly lostWrites: number
  readonly unconverged: number
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
        let latest: Op | undefined
        for (const write of ackedWrites) {
          if (write.complete < read.invoke && (latest === undefined || write.invoke > latest.invoke)) latest = write
        }
        if (
          latest !== undefined &&
          !possibleDeletes.some((d) => d.complete > latest.invoke && d.invoke < read.complete)
        ) {
          staleReads++
          maxStaleMicros = Math.max(maxStaleMicros, read.invoke - latest.complete)
          violations.push({
            check: "stale read",
            key,
            detail: `read at ${read.invoke} (process ${read.process}) returned none after write ${latest.value} was acknowledged at ${latest.complete}`
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
      const newerWrite = ackedWrites.find((w) => w.complete < read.invoke && (versionOf.get(w.value!) ?? -1) > version)
      // A delete invoked after the read's value was committed, and acknowledged before the read began, superseded it.
      const newerDelete = ackedDeletes.find((d) => d.invoke > write.complete && d.complete < read.invoke)
      if (newerWrite !== undefined || newerDelete !== undefined) {
        staleReads++
        maxStaleMicros = Math.max(maxStaleMicros, read.invoke - (newerWrite ?? newerDelete)!.complete)
        violations.push({
          check: "stale read",
          key,
          detail:
            `read at ${read.invoke} (process ${read.process}) returned ${read.value} (version ${version}) after ` +
            (newerWrite !== undefined
              ? `write ${newerWrite.value} (version ${versionOf.get(newerWrite.value!)}) was acknowledged at ${newerWrite.complete}`
              : `a delete was acknowledged at ${newerDelete!.complete}`)
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
    failedWriteReads,
    lostWrites,
    unconverged,
    maxStaleMicros,
    nines: Math.round(nines * 100) / 100,
    ninesIsLowerBound: staleReads === 0,
    violations
  }
}

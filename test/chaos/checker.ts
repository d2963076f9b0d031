// The history checker: given every operation a workload performed (with invoke and complete times on
// one monotonic clock shared by all processes), the writes the database committed (with their
// versions, in commit order per key), and the final state of both tiers, it counts what broke the
// promise "no read returns a value older than an acknowledged write".
//
// Writes made outside the library (plain SQL, by the orchestrator's foreign writer) are operations of
// process `foreignProcess`. A read they leave stale counts apart: the change feed brings them to the
// cache after a lag, which the report gives as a distribution. And no read may return an older
// version than a read that completed before it began (read monotonicity).
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

/** The process of writes made outside the library, with plain SQL. */
export const foreignProcess = -1

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
  /** In a worker's journal: the write's begin and its completion share it; the later line wins. */
  readonly id?: string | undefined
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
    | "stale read"
    | "failed-write read"
    | "lost write"
    | "unconverged"
    | "committed failed write"
    | "partial call"
    | "non-monotonic read"
  readonly key: string
  readonly detail: string
  /** A stale read superseded by a write or delete of the reader's own process; a non-monotonic read after one of its own. */
  readonly ownProcess?: boolean | undefined
}

/** How long after a foreign write was acknowledged reads still returned an older version, in milliseconds. */
export interface Lag {
  /** Foreign writes judged. */
  readonly writes: number
  readonly p50: number
  readonly p99: number
  readonly max: number
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
  /** Reads left stale only by foreign writes (not counted in `staleReads`): the change feed's lag. */
  readonly foreignStaleReads: number
  readonly foreignLag: Lag
  /** Reads that returned an older version than a read that completed before they began. */
  readonly nonMonotonicReads: number
  /** Of those, the ones whose earlier read was of the same process. */
  readonly ownNonMonotonicReads: number
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
  const stale = new Set<Op>()
  for (const [key, keyOps] of group(ops, (op) => op.key)) {
    // The library's own writes: a read a foreign write left stale is the change feed's lag, judged apart.
    const ackedWrites = keyOps.filter(
      (op) => op.kind === "write" && op.outcome === "ok" && op.process !== foreignProcess
    )
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
          stale.add(read)
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
        stale.add(read)
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

  const foreign = foreignLag(ops, versionOf, stale)
  const monotonic = monotonicity(ops, committed, versionOf)
  violations.push(...monotonic.violations)

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
    foreignStaleReads: foreign.staleReads,
    foreignLag: foreign.lag,
    nonMonotonicReads: monotonic.violations.length,
    ownNonMonotonicReads: monotonic.violations.filter((v) => v.ownProcess === true).length,
    nines: Math.round(nines * 100) / 100,
    ninesIsLowerBound: staleReads === 0,
    violations
  }
}

const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

/** The first index of `sorted` whose `at` is above `time`. */
const firstAfter = <A>(sorted: ReadonlyArray<A>, at: (a: A) => number, time: number): number => {
  let low = 0
  let high = sorted.length
  while (low < high) {
    const middle = (low + high) >> 1
    if (at(sorted[middle]!) > time) high = middle
    else low = middle + 1
  }
  return low
}

/**
 * Per acknowledged foreign write: how long after it was acknowledged a read that began after it
 * still returned an older version of its key (0 when none did). And the reads left stale by foreign
 * writes alone.
 */
const foreignLag = (
  ops: ReadonlyArray<Op>,
  versionOf: ReadonlyMap<string, number>,
  libraryStale: ReadonlySet<Op>
): { readonly staleReads: number; readonly lag: Lag } => {
  const readsByKey = group(
    ops.filter((op) => op.kind === "read" && op.outcome === "ok" && op.value !== null && versionOf.has(op.value)),
    (op) => op.key
  )
  for (const reads of readsByKey.values()) reads.sort((a, b) => a.invoke - b.invoke)
  const staleReads = new Set<Op>()
  const lags: Array<number> = []
  for (const write of ops) {
    if (write.process !== foreignProcess || write.kind !== "write" || write.outcome !== "ok") continue
    const version = versionOf.get(write.value!)
    if (version === undefined) continue
    const reads = readsByKey.get(write.key) ?? []
    let lag = 0
    for (let i = firstAfter(reads, (read) => read.invoke, write.complete); i < reads.length; i++) {
      const read = reads[i]!
      if (versionOf.get(read.value!)! >= version) continue
      lag = Math.max(lag, read.complete - write.complete)
      if (!libraryStale.has(read)) staleReads.add(read)
    }
    lags.push(lag / 1000)
  }
  lags.sort((a, b) => a - b)
  const round = (millis: number) => Math.round(millis * 10) / 10
  return {
    staleReads: staleReads.size,
    lag: {
      writes: lags.length,
      p50: round(percentile(lags, 50)),
      p99: round(percentile(lags, 99)),
      max: round(lags.at(-1) ?? 0)
    }
  }
}

/**
 * No read returns an older version than a read that completed before it began. A value read stands
 * for its version. A read of none stands for a delete newer than every write acknowledged before it
 * began (the row existed from that write on, and was gone when it was read): a later read of that
 * write, or of an older one, went back in time. A read of none after a read of a value went back in
 * time when no delete newer than that value was ever committed.
 */
const monotonicity = (
  ops: ReadonlyArray<Op>,
  committed: ReadonlyArray<Committed>,
  versionOf: ReadonlyMap<string, number>
): { readonly violations: ReadonlyArray<Violation> } => {
  const violations: Array<Violation> = []
  const newestDelete = new Map<string, number>()
  for (const change of committed) {
    if (change.value === null) newestDelete.set(change.key, Math.max(newestDelete.get(change.key) ?? 0, change.version))
  }
  for (const [key, keyOps] of group(ops, (op) => op.key)) {
    // Acknowledged writes by completion, each with the newest version acknowledged by then.
    const acked = keyOps
      .filter((op) => op.kind === "write" && op.outcome === "ok" && versionOf.has(op.value!))
      .sort((a, b) => a.complete - b.complete)
    const newestBy: Array<number> = []
    for (const write of acked) newestBy.push(Math.max(newestBy.at(-1) ?? 0, versionOf.get(write.value!)!))
    const ackedBefore = (time: number) => {
      const i = firstAfter(acked, (write) => write.complete, time - 1)
      return i === 0 ? 0 : newestBy[i - 1]!
    }
    const reads = keyOps.filter(
      (op) => op.kind === "read" && op.outcome === "ok" && (op.value === null || versionOf.has(op.value))
    )
    const byComplete = [...reads].sort((a, b) => a.complete - b.complete)
    const byInvoke = [...reads].sort((a, b) => a.invoke - b.invoke)
    // What the reads completed so far establish: the newest version read, and the newest floor a read of none set.
    let newestRead: { version: number; read: Op } | undefined
    let newestFloor: { version: number; read: Op } | undefined
    let done = 0
    for (const later of byInvoke) {
      while (done < byComplete.length && byComplete[done]!.complete < later.invoke) {
        const earlier = byComplete[done++]!
        if (earlier.value === null) {
          const floor = ackedBefore(earlier.invoke)
          if (floor > 0 && (newestFloor === undefined || floor > newestFloor.version))
            newestFloor = { version: floor, read: earlier }
        } else {
          const version = versionOf.get(earlier.value)!
          if (newestRead === undefined || version > newestRead.version) newestRead = { version, read: earlier }
        }
      }
      const report = (earlier: Op, what: string) =>
        violations.push({
          check: "non-monotonic read",
          key,
          detail: `read at ${later.invoke} (process ${later.process}) returned ${later.value ?? "none"} ${what}, read at ${earlier.invoke}-${earlier.complete} (process ${earlier.process})`,
          ...(earlier.process === later.process ? { ownProcess: true } : {})
        })
      if (later.value !== null) {
        const version = versionOf.get(later.value)!
        if (newestRead !== undefined && version < newestRead.version) {
          report(
            newestRead.read,
            `(version ${version}), older than ${newestRead.read.value} (version ${newestRead.version})`
          )
        } else if (newestFloor !== undefined && version <= newestFloor.version) {
          report(newestFloor.read, `(version ${version}), deleted before the read of none by the`)
        }
      } else if (newestRead !== undefined && (newestDelete.get(key) ?? 0) < newestRead.version) {
        report(
          newestRead.read,
          `though no delete newer than ${newestRead.read.value} (version ${newestRead.version}) committed, after the`
        )
      }
    }
  }
  return { violations }
}

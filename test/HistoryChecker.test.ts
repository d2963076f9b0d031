// The history checker on small hand-made histories: each rule fires on the history that breaks it,
// and stays quiet on the ones that only look suspicious.
import { describe, expect, it } from "vitest"
import { check, type Committed, type FinalState, foreignProcess, type Op } from "./chaos/checker.js"

const op = (fields: Partial<Op> & Pick<Op, "kind" | "invoke" | "complete">): Op => ({
  process: 0,
  key: "k",
  value: null,
  outcome: "ok",
  ...fields
})

const write = (value: string, invoke: number, complete: number, outcome: Op["outcome"] = "ok") =>
  op({ kind: "write", value, invoke, complete, outcome })
const read = (value: string | null, invoke: number, complete: number) => op({ kind: "read", value, invoke, complete })
const remove = (invoke: number, complete: number, outcome: Op["outcome"] = "ok") =>
  op({ kind: "delete", invoke, complete, outcome })

const settled = (store: { value: string; version: number } | null): FinalState => ({
  store: new Map([["k", store]]),
  cache: new Map([["k", null]])
})

const committed = (...changes: Array<[string | null, number]>): Array<Committed> =>
  changes.map(([value, version]) => ({ key: "k", value, version }))

describe("history checker", () => {
  it("a read of the previous value after a newer write was acknowledged is stale", () => {
    const report = check(
      [write("a", 0, 10), write("b", 20, 30), read("a", 40, 50)],
      committed(["a", 1], ["b", 2]),
      settled({ value: "b", version: 2 })
    )
    expect(report.staleReads).toBe(1)
    expect(report.violations[0]?.check).toBe("stale read")
  })

  it("a read concurrent with the newer write may return either value", () => {
    const report = check(
      [write("a", 0, 10), write("b", 20, 45), read("a", 40, 50), read("b", 41, 50)],
      committed(["a", 1], ["b", 2]),
      settled({ value: "b", version: 2 })
    )
    expect(report.staleReads).toBe(0)
  })

  it("a write whose outcome is unknown does not make older reads stale", () => {
    const report = check(
      [write("a", 0, 10), write("b", 20, 30, "unknown"), read("a", 40, 50)],
      committed(["a", 1], ["b", 2]),
      settled({ value: "b", version: 2 })
    )
    expect(report.staleReads).toBe(0)
  })

  it("versions, not completion times, order the writes", () => {
    // b committed first (version 1) though acknowledged later; reading a (version 2) is fresh.
    const report = check(
      [write("b", 0, 30), write("a", 5, 20), read("a", 40, 50)],
      committed(["b", 1], ["a", 2]),
      settled({ value: "a", version: 2 })
    )
    expect(report.staleReads).toBe(0)
  })

  it("a value read after a delete that began after its write was acknowledged is stale", () => {
    const report = check(
      [write("a", 0, 10), remove(20, 30), read("a", 40, 50)],
      committed(["a", 1], [null, 2]),
      settled(null)
    )
    expect(report.staleReads).toBe(1)
  })

  it("none read after an acknowledged write, with no delete in between, is stale; with one, it is not", () => {
    const stale = check(
      [write("a", 0, 10), read(null, 20, 30)],
      committed(["a", 1]),
      settled({ value: "a", version: 1 })
    )
    expect(stale.staleReads).toBe(1)
    const deleted = check(
      [write("a", 0, 10), remove(15, 25, "unknown"), read(null, 20, 30)],
      committed(["a", 1], [null, 2]),
      settled(null)
    )
    expect(deleted.staleReads).toBe(0)
  })

  it("a read of a value whose write failed, or that was never committed, is counted", () => {
    const failed = check([write("a", 0, 10, "fail"), read("a", 20, 30)], committed(), settled(null))
    expect(failed.failedWriteReads).toBe(1)
    const uncommitted = check([write("a", 0, 10, "unknown"), read("a", 20, 30)], committed(), settled(null))
    expect(uncommitted.failedWriteReads).toBe(1)
    const foreign = check([read("from elsewhere", 20, 30)], committed(), settled(null))
    expect(foreign.failedWriteReads).toBe(1)
  })

  it("an acknowledged write missing from the store's history is lost, and so is a final row that is not the last change", () => {
    expect(check([write("a", 0, 10)], committed(), settled(null)).lostWrites).toBe(1)
    expect(
      check([write("a", 0, 10), write("b", 20, 30)], committed(["a", 1], ["b", 2]), settled({ value: "a", version: 1 }))
        .lostWrites
    ).toBe(1)
  })

  it("a cache holding a version other than the store's is unconverged; a tombstone or nothing is not", () => {
    const history = [write("a", 0, 10), write("b", 20, 30)]
    const changes = committed(["a", 1], ["b", 2])
    const withCache = (entry: FinalState["cache"] extends ReadonlyMap<string, infer E> ? E : never): FinalState => ({
      store: new Map([["k", { value: "b", version: 2 }]]),
      cache: new Map([["k", entry]])
    })
    expect(check(history, changes, withCache({ kind: "value", version: 1 })).unconverged).toBe(1)
    expect(check(history, changes, withCache({ kind: "value", version: 2 })).unconverged).toBe(0)
    expect(check(history, changes, withCache({ kind: "tombstone", version: 1 })).unconverged).toBe(0)
    expect(check(history, changes, withCache(null)).unconverged).toBe(0)
  })

  it("a stale read superseded by a write or delete of the reader's own process is also counted as its own", () => {
    const inProcess = (process: number, fields: Op) => ({ ...fields, process })
    // Superseded by another process's write only: stale, not own.
    const other = check(
      [write("a", 0, 10), inProcess(1, write("b", 20, 30)), read("a", 40, 50)],
      committed(["a", 1], ["b", 2]),
      settled({ value: "b", version: 2 })
    )
    expect(other).toMatchObject({ staleReads: 1, ownStaleReads: 0 })
    // By its own process's write, or delete; and none after its own write.
    const own = check(
      [write("a", 0, 10), write("b", 20, 30), read("a", 40, 50)],
      committed(["a", 1], ["b", 2]),
      settled({ value: "b", version: 2 })
    )
    expect(own).toMatchObject({ staleReads: 1, ownStaleReads: 1 })
    expect(own.violations[0]?.detail).toContain("its own process's write b")
    expect(own.violations[0]?.ownProcess).toBe(true)
    expect(other.violations[0]?.ownProcess).toBeUndefined()
    const ownDelete = check(
      [inProcess(1, write("a", 0, 10)), remove(20, 30), read("a", 40, 50)],
      committed(["a", 1], [null, 2]),
      settled(null)
    )
    expect(ownDelete).toMatchObject({ staleReads: 1, ownStaleReads: 1 })
    const ownNone = check(
      [write("a", 0, 10), read(null, 20, 30)],
      committed(["a", 1]),
      settled({ value: "a", version: 1 })
    )
    expect(ownNone).toMatchObject({ staleReads: 1, ownStaleReads: 1 })
    // None after another process's write, with a delete of any process possible since its own write: not own.
    const noneOther = check(
      [write("a", 0, 10), remove(12, 14, "unknown"), inProcess(1, write("b", 20, 30)), read(null, 40, 50)],
      committed(["a", 1], [null, 2], ["b", 3]),
      settled({ value: "b", version: 3 })
    )
    expect(noneOther).toMatchObject({ staleReads: 1, ownStaleReads: 0 })
  })

  it("a write that failed but is in the store's history is a committed failed write; unknown or uncommitted is not", () => {
    const failed = check([write("a", 0, 10, "fail")], committed(["a", 1]), settled({ value: "a", version: 1 }))
    expect(failed.committedFailedWrites).toBe(1)
    expect(failed.violations[0]?.check).toBe("committed failed write")
    expect(check([write("a", 0, 10, "fail")], committed(), settled(null)).committedFailedWrites).toBe(0)
    expect(
      check([write("a", 0, 10, "unknown")], committed(["a", 1]), settled({ value: "a", version: 1 }))
        .committedFailedWrites
    ).toBe(0)
  })

  describe("multi-key calls (setMany, transaction): one operation per key, with the call's times and outcome", () => {
    const keyed = (
      key: string,
      kind: Op["kind"],
      value: string | null,
      invoke: number,
      complete: number,
      outcome: Op["outcome"] = "ok",
      call?: { readonly id: string; readonly via: "setMany" | "transaction" }
    ): Op =>
      op({
        key,
        kind,
        value,
        invoke,
        complete,
        outcome,
        ...(call === undefined ? {} : { call: call.id, via: call.via })
      })
    const batch = { id: "c1", via: "setMany" } as const
    const txn = { id: "t1", via: "transaction" } as const
    const twoKeys = (k: { value: string; version: number } | null, j: { value: string; version: number } | null) => ({
      store: new Map([
        ["k", k],
        ["j", j]
      ]),
      cache: new Map([
        ["k", null],
        ["j", null]
      ])
    })
    const changes = (...list: Array<[string, string | null, number]>): Array<Committed> =>
      list.map(([key, value, version]) => ({ key, value, version }))

    it("an acknowledged call supersedes every key's older value for reads that begin after it returned", () => {
      const history = [
        keyed("k", "write", "k1", 0, 10),
        keyed("j", "write", "j1", 0, 10),
        keyed("k", "write", "k2", 20, 30, "ok", batch),
        keyed("j", "write", "j2", 20, 30, "ok", batch),
        keyed("j", "read", "j1", 40, 50),
        // Concurrent with the call: either value.
        keyed("k", "read", "k1", 25, 35)
      ]
      const report = check(
        history,
        changes(["k", "k1", 1], ["j", "j1", 2], ["k", "k2", 3], ["j", "j2", 4]),
        twoKeys({ value: "k2", version: 3 }, { value: "j2", version: 4 })
      )
      expect(report.staleReads).toBe(1)
      expect(report.violations).toMatchObject([{ check: "stale read", key: "j" }])
      expect(report.partialCalls).toBe(0)
    })

    it("a call that may have committed (StaleCacheError, InconsistentCacheError) makes no older read stale", () => {
      const report = check(
        [
          keyed("k", "write", "k1", 0, 10),
          keyed("k", "write", "k2", 20, 30, "unknown", batch),
          keyed("j", "write", "j2", 20, 30, "unknown", batch),
          keyed("k", "read", "k1", 40, 50),
          keyed("j", "read", "j2", 40, 50)
        ],
        changes(["k", "k1", 1], ["k", "k2", 3], ["j", "j2", 4]),
        twoKeys({ value: "k2", version: 3 }, { value: "j2", version: 4 })
      )
      expect(report).toMatchObject({ staleReads: 0, failedWriteReads: 0, lostWrites: 0, partialCalls: 0 })
    })

    it("a transaction's acknowledged delete supersedes the key's value; its failed write must not be read", () => {
      const deleted = check(
        [
          keyed("k", "write", "k1", 0, 10),
          keyed("k", "delete", null, 20, 30, "ok", txn),
          keyed("j", "write", "j1", 20, 30, "ok", txn),
          keyed("k", "read", "k1", 40, 50),
          keyed("j", "read", "j1", 40, 50)
        ],
        changes(["k", "k1", 1], ["k", null, 2], ["j", "j1", 3]),
        twoKeys(null, { value: "j1", version: 3 })
      )
      expect(deleted).toMatchObject({ staleReads: 1, failedWriteReads: 0, partialCalls: 0 })
      const failed = check(
        [
          keyed("k", "delete", null, 20, 30, "fail", txn),
          keyed("j", "write", "j1", 20, 30, "fail", txn),
          keyed("j", "read", "j1", 40, 50)
        ],
        [],
        twoKeys(null, null)
      )
      expect(failed).toMatchObject({ failedWriteReads: 1, committedFailedWrites: 0, partialCalls: 0 })
    })

    it("a call that committed some of its values but not all is partial, whatever it answered", () => {
      for (const outcome of ["ok", "unknown", "fail"] as const) {
        const report = check(
          [keyed("k", "write", "k1", 0, 10, outcome, batch), keyed("j", "write", "j1", 0, 10, outcome, batch)],
          changes(["k", "k1", 1]),
          twoKeys({ value: "k1", version: 1 }, null)
        )
        expect(report.partialCalls, outcome).toBe(1)
        expect(report.violations.find((v) => v.check === "partial call")?.detail).toContain("but not j=j1")
      }
      // All or none: not partial. Nor is a delete (it leaves no value to find) next to a committed write.
      const all = check(
        [keyed("k", "write", "k1", 0, 10, "unknown", batch), keyed("j", "write", "j1", 0, 10, "unknown", batch)],
        changes(["k", "k1", 1], ["j", "j1", 2]),
        twoKeys({ value: "k1", version: 1 }, { value: "j1", version: 2 })
      )
      const none = check(
        [keyed("k", "write", "k1", 0, 10, "unknown", batch), keyed("j", "write", "j1", 0, 10, "unknown", batch)],
        [],
        twoKeys(null, null)
      )
      const withDelete = check(
        [keyed("k", "write", "k1", 0, 10, "ok", txn), keyed("j", "delete", null, 0, 10, "ok", txn)],
        changes(["k", "k1", 1]),
        twoKeys({ value: "k1", version: 1 }, null)
      )
      expect([all.partialCalls, none.partialCalls, withDelete.partialCalls]).toEqual([0, 0, 0])
      // Two calls, each all or nothing, are not one partial call.
      const separate = check(
        [
          keyed("k", "write", "k1", 0, 10, "unknown", batch),
          keyed("j", "write", "j1", 0, 10, "unknown", { id: "c2", via: "setMany" })
        ],
        changes(["k", "k1", 1]),
        twoKeys({ value: "k1", version: 1 }, null)
      )
      expect(separate.partialCalls).toBe(0)
    })
  })

  it("reports consistency as nines", () => {
    const reads = Array.from({ length: 1000 }, (_, i) => read("b", 100 + i, 101 + i))
    const clean = check(
      [write("a", 0, 10), write("b", 20, 30), ...reads],
      committed(["a", 1], ["b", 2]),
      settled({ value: "b", version: 2 })
    )
    expect(clean).toMatchObject({ nines: 3, ninesIsLowerBound: true })
    const oneStale = check(
      [write("a", 0, 10), write("b", 20, 30), read("a", 40, 50), ...reads.slice(0, 999)],
      committed(["a", 1], ["b", 2]),
      settled({ value: "b", version: 2 })
    )
    expect(oneStale).toMatchObject({ staleReads: 1, nines: 3, ninesIsLowerBound: false })
  })

  describe("foreign writes (plain SQL, made outside the library)", () => {
    const foreignWrite = (value: string, invoke: number, complete: number) =>
      op({ kind: "write", value, invoke, complete, process: foreignProcess })

    it("a read they left stale counts apart from staleReads, and gives the write its lag", () => {
      const report = check(
        [
          write("a", 0, 10),
          foreignWrite("f", 20, 30),
          read("a", 40, 50),
          read("a", 60, 70_030),
          read("f", 80_000, 80_010)
        ],
        committed(["a", 1], ["f", 2]),
        settled({ value: "f", version: 2 })
      )
      expect(report).toMatchObject({ staleReads: 0, foreignStaleReads: 2 })
      // The last read of the older value completed 70 ms after the foreign write was acknowledged.
      expect(report.foreignLag).toEqual({ writes: 1, p50: 70, p99: 70, max: 70 })
    })

    it("a foreign write no read trailed has no lag", () => {
      const report = check(
        [write("a", 0, 10), foreignWrite("f", 20, 30), read("f", 40, 50)],
        committed(["a", 1], ["f", 2]),
        settled({ value: "f", version: 2 })
      )
      expect(report).toMatchObject({ foreignStaleReads: 0, foreignLag: { writes: 1, max: 0 } })
    })
  })

  describe("read monotonicity", () => {
    it("a read of an older version after a read of a newer one completed, though no write was acknowledged", () => {
      // b's write is in flight throughout (its outcome unknown): no stale read, but the reads go back in time.
      const report = check(
        [write("a", 0, 10), write("b", 20, 1000, "unknown"), read("b", 30, 40), read("a", 50, 60)],
        committed(["a", 1], ["b", 2]),
        settled({ value: "b", version: 2 })
      )
      expect(report.staleReads).toBe(0)
      expect(report.nonMonotonicReads).toBe(1)
      expect(report.violations.find((v) => v.check === "non-monotonic read")?.detail).toContain("older than b")
    })

    it("concurrent reads may see either version", () => {
      const report = check(
        [write("a", 0, 10), write("b", 20, 1000, "unknown"), read("b", 30, 55), read("a", 50, 60)],
        committed(["a", 1], ["b", 2]),
        settled({ value: "b", version: 2 })
      )
      expect(report.nonMonotonicReads).toBe(0)
    })

    it("a read of the row after a read found it deleted (the delete's cache update not landed yet)", () => {
      const report = check(
        [write("a", 0, 10), remove(20, 1000, "unknown"), read(null, 30, 40), read("a", 50, 60)],
        committed(["a", 1], [null, 2]),
        settled(null)
      )
      expect(report).toMatchObject({ staleReads: 0, nonMonotonicReads: 1 })
    })

    it("a read of none after a read of a value no delete superseded goes back in time; after one that a delete did, it does not", () => {
      const back = check(
        [write("a", 0, 10), read("a", 20, 30), read(null, 40, 50)],
        committed(["a", 1]),
        settled({ value: "a", version: 1 })
      )
      expect(back.nonMonotonicReads).toBe(1)
      const deleted = check(
        [write("a", 0, 10), read("a", 20, 30), remove(35, 1000, "unknown"), read(null, 40, 50)],
        committed(["a", 1], [null, 2]),
        settled(null)
      )
      expect(deleted.nonMonotonicReads).toBe(0)
    })

    it("the same process's reads are marked as its own", () => {
      const report = check(
        [
          write("a", 0, 10),
          write("b", 20, 1000, "unknown"),
          read("b", 30, 40),
          op({ kind: "read", value: "a", invoke: 50, complete: 60, process: 1 })
        ],
        committed(["a", 1], ["b", 2]),
        settled({ value: "b", version: 2 })
      )
      expect(report).toMatchObject({ nonMonotonicReads: 1, ownNonMonotonicReads: 0 })
    })
  })
})

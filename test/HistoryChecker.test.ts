// The history checker on small hand-made histories: each rule fires on the history that breaks it,
// and stays quiet on the ones that only look suspicious.
import { describe, expect, it } from "vitest"
import { check, type Committed, type FinalState, type Op } from "./chaos/checker.js"

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
})

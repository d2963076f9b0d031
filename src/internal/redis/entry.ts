import * as Option from "effect/Option"
import { Entry } from "../../Cache.js"

// Wire format of an entry in Redis: `v<version>:<payload>` or `t<version>:`.
// The version leads so the Lua guard can read it without decoding the payload.
export const encode = (entry: Entry): string =>
  entry._tag === "Value" ? `v${entry.version}:${entry.payload}` : `t${entry.version}:`

const header = /^([vt])(\d{1,16}):/

// Anything that does not parse is a foreign or corrupt write: a miss, which the
// guard also treats as absent, so the next fill overwrites it.
export const decode = (raw: string | null): Option.Option<Entry> => {
  if (raw === null) return Option.none()
  const match = header.exec(raw)
  if (match === null) return Option.none()
  const version = Number(match[2])
  if (!Number.isSafeInteger(version)) return Option.none()
  return Option.some(
    match[1] === "v" ? Entry.Value({ version, payload: raw.slice(match[0].length) }) : Entry.Tombstone({ version })
  )
}

export const leaseKey = (key: string) => `__wt_lease:${key}`

/** Strict mode: the processes whose tier may hold the key, each with its lease in ms. */
export const holdersKey = (key: string) => `__wt_holders:${key}`

// Strict mode: the time (Redis TIME, ms) the cache's memory was first written by a strict writer. It
// vanishes with that memory, and a memory younger than a lease cannot vouch for leases granted before it.
export const bornKey = "__wt_born"

// The key whose value names the cache's memory. It vanishes with that memory (a restart, a
// flush, an eviction), and the next ticketed write creates a new one.
export const epochKey = "__wt_epoch"

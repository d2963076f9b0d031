import * as Equal from "effect/Equal"
import type { Entry } from "../Cache.js"

// The in-process twin of the Lua scripts in redis/scripts.ts: same rules, same ties.

export const acceptsValue = (current: Entry | undefined, version: number, replacing: Entry | undefined): boolean =>
  current === undefined || current.version < version || (replacing !== undefined && Equal.equals(current, replacing))

export const acceptsTombstone = (current: Entry | undefined, version: number): boolean =>
  current === undefined || current.version < version || (current.version === version && current._tag === "Value")

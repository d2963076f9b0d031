import * as Option from "effect/Option"
import { Entry } from "../Cache.js"

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

// Both scripts read the current entry, compare versions and write, atomically.
// A key of another type or an unparseable string counts as absent. So does an entry without a TTL:
// the library never writes one, and a foreign entry with a high version and no TTL would otherwise
// outrank every write and never expire.
const readCurrent = `
local cur = redis.pcall('GET', KEYS[1])
local kind, ver = nil, nil
if type(cur) == 'string' then
  kind, ver = string.match(cur, '^([vt])(%d+):')
  if ver and #ver <= 16 and tonumber(ver) <= 9007199254740991 then ver = tonumber(ver) else kind = nil end
  if kind and redis.call('PTTL', KEYS[1]) == -1 then kind = nil end
end
`

// KEYS[1] the lease key; ARGV: the holder's token, ttl in ms. Granted when free or already ours.
export const leaseScript = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`

export const leaseKey = (key: string) => `__wt_lease:${key}`

// The key whose value names the cache's memory. It vanishes with that memory (a restart, a
// flush, an eviction), and the next ticketed write creates a new one.
export const epochKey = "__wt_epoch"

// KEYS[1] epoch key; ARGV[1] a candidate for a new epoch. Returns the epoch.
export const epochScript = `
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
return epoch
`

// The guarded write shared by both set scripts, once the ticket passed: KEYS[1] key; ARGV[1]
// version, [2] encoded entry, [3] ttl in ms, [4] encoded entry it may replace ('' for none), [8] the
// channel to announce the write on ('' for none), [9] the key as announced.
const guardedWrite = `${readCurrent}
local replacing = ARGV[4] ~= '' and cur == ARGV[4]
if kind and not replacing and ver >= tonumber(ARGV[1]) then
  return 'rejected'
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if ARGV[8] ~= '' then
  redis.call('PUBLISH', ARGV[8], ARGV[1] .. ':' .. ARGV[9])
end
return 'written'
`

// KEYS[1] key, KEYS[2] epoch key; ARGV: version, encoded entry, ttl in ms, encoded entry it may
// replace ('' for none), the ticket's epoch ('' for no ticket), its deadline in epoch ms, a
// candidate for a new epoch, the channel to announce the write on ('' for none), the key as
// announced. Returns 'written', 'rejected', 'late' or 'epoch:' and the current epoch.
export const setScript = `
if ARGV[5] ~= '' then
  local epoch = redis.call('GET', KEYS[2])
  if not epoch then
    epoch = ARGV[7]
    redis.call('SET', KEYS[2], epoch)
  end
  if epoch ~= ARGV[5] then
    return 'epoch:' .. epoch
  end
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[6]) then
    return 'late'
  end
end
${guardedWrite}`

// In a cluster a script may only touch keys of one hash slot, so each slot has a memory marker of
// its own, holding the time (Redis TIME, ms) it was created: it vanishes with the slot's memory.
// A ticket is the time it was issued; it holds for a slot whose marker is older than the ticket
// (by at least the allowed clock skew), so a node that lost its memory after the ticket was
// issued refuses the write.
// KEYS[1] key, KEYS[2] the slot's marker; ARGV as setScript's, except [5] the ticket's issue time
// in epoch ms ('' for no ticket) and [7] the allowed clock skew in ms. Returns 'written',
// 'rejected', 'late' or 'outdated'.
export const clusterSetScript = `
if ARGV[5] ~= '' then
  local now = redis.call('TIME')
  local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local born = tonumber(redis.call('GET', KEYS[2]) or '')
  if not born then
    redis.call('SET', KEYS[2], nowMs)
    return 'outdated'
  end
  local issued = tonumber(ARGV[5])
  if not issued or born > issued - tonumber(ARGV[7]) then
    return 'outdated'
  end
  if nowMs > tonumber(ARGV[6]) then
    return 'late'
  end
end
${guardedWrite}`

// KEYS[1] a slot's marker: created with the time now unless it exists.
export const bornScript = `
if not redis.call('GET', KEYS[1]) then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[1], tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end
return 1
`

// KEYS[1] key; ARGV: version, encoded tombstone, ttl in ms, the channel to announce it on ('' for
// none), the key as announced. A tombstone wins a tie with a value.
export const invalidateScript = `${readCurrent}
local version = tonumber(ARGV[1])
if kind and (ver > version or (ver == version and kind == 't')) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('PUBLISH', ARGV[4], ARGV[1] .. ':' .. ARGV[5])
end
return 1
`

// The Lua scripts that guard every write, and the commands ioredis defines from them. A script
// runs atomically on the node holding its keys, so the version check and the write cannot interleave
// with another process's.
import type { Cluster, Redis } from "ioredis"
import type { HoldArguments, StrictArguments } from "./coherence.js"

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

// Strict mode keeps, for each key, one hash in the key's slot: `h:<member>` (its lease in ms) for
// each process whose tier may hold the key, registered by its reads and writes; `p:<member>`
// (`<version>:<deadline>:<lease>`) for each process told of a write it has not acknowledged yet,
// with the Redis time (ms) by which it stops serving whatever that write superseded.

// What every write that changed the key does last: it announces the write on the channel (ARGV
// channel, '' for none). A strict writer's (member ~= '') write announces its version even when
// the key held a newer one (`changed` false): the newer write may not be acknowledged yet, and
// processes may still hold older than either. From a strict writer it also collects the processes to
// wait for: those still owing an acknowledgement (a write acknowledged before they answered an
// earlier one would leave them serving older), and the holders, who now owe one; the writer is
// then the only holder. A process past its deadline has stopped serving and will have heard this
// write before it serves again: it is dropped. Returns '|' and the ms until the memory is a lease
// old (a memory younger than that cannot vouch for leases granted before it: for a fresh or
// restarted Redis, the born marker is created now), then '|' and member=ms, comma-separated: how
// long to wait for each at most. The announcement names them, so each knows to acknowledge.
const announce = `
local function announce(changed, channel, version, key, holdersKey, bornKey, member, writeId, lease, holdTtl)
  if member == '' then
    if changed and channel ~= '' then redis.call('PUBLISH', channel, version .. ':' .. key) end
    return ''
  end
  local now = redis.call('TIME')
  local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local born = tonumber(redis.call('GET', bornKey) or '')
  if not born then
    born = nowMs
    redis.call('SET', bornKey, nowMs)
  end
  local young = math.max(0, born + tonumber(lease) - nowMs)
  local fields = redis.call('HGETALL', holdersKey)
  local collected = {}
  for i = 1, #fields, 2 do
    local kind, other = string.sub(fields[i], 1, 1), string.sub(fields[i], 3)
    if kind == 'p' and other ~= member then
      local deadline, otherLease = string.match(fields[i + 1], '^%d+:(%d+):(%d+)$')
      if deadline and tonumber(deadline) > nowMs then
        collected[other] = { tonumber(deadline) - nowMs, otherLease }
      else
        redis.call('HDEL', holdersKey, fields[i])
      end
    end
  end
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 1) == 'h' then
      local other = string.sub(fields[i], 3)
      redis.call('HDEL', holdersKey, fields[i])
      if other ~= member and not collected[other] then collected[other] = { tonumber(fields[i + 1]), fields[i + 1] } end
    end
  end
  local others, waits = {}, {}
  for other, wait in pairs(collected) do
    others[#others + 1] = other
    waits[#waits + 1] = other .. '=' .. wait[1]
    -- Owed: the highest version announced to it (kept as text: Lua would print a 16-digit number
    -- in exponent form), until a lease after the latest announcement.
    local owes = string.match(redis.call('HGET', holdersKey, 'p:' .. other) or '', '^(%d+):')
    if not owes or tonumber(owes) < tonumber(version) then owes = version end
    redis.call('HSET', holdersKey, 'p:' .. other, owes .. ':' .. (nowMs + tonumber(wait[2])) .. ':' .. wait[2])
  end
  redis.call('HSET', holdersKey, 'h:' .. member, lease)
  if redis.call('PTTL', holdersKey) < tonumber(holdTtl) then
    redis.call('PEXPIRE', holdersKey, holdTtl)
  end
  if channel ~= '' then
    redis.call('PUBLISH', channel, version .. '/' .. member .. '/' .. writeId .. '/' .. table.concat(others, ',') .. ':' .. key)
  end
  return '|' .. young .. '|' .. table.concat(waits, ',')
end
`

// A strict reader's registration as a holder: the hash keeps the longest lifetime any holder
// asked for, so no holder's entry outlives its registration.
const hold = `
local function hold(holdersKey, member, lease, holdTtl)
  if member == '' then return end
  redis.call('HSET', holdersKey, 'h:' .. member, lease)
  if redis.call('PTTL', holdersKey) < tonumber(holdTtl) then
    redis.call('PEXPIRE', holdersKey, holdTtl)
  end
end
`

// KEYS[1] the key's holders; ARGV: the acknowledging member, the version it heard of, the writer's
// channel, the acknowledgement, then as holdScript's unless it holds nothing of the key any more
// (its entry was as new as the write, or newer). The member owes nothing more unless told of a
// later write since; one that kept its entry is a holder again.
const acknowledgeScript = `${hold}
local owed = redis.call('HGET', KEYS[1], 'p:' .. ARGV[1])
if owed then
  local version = tonumber(string.match(owed, '^(%d+):') or '')
  if not version or version <= tonumber(ARGV[2]) then
    redis.call('HDEL', KEYS[1], 'p:' .. ARGV[1])
  end
end
hold(KEYS[1], ARGV[5], ARGV[6], ARGV[7])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`

// KEYS[1] the lease key; ARGV: the holder's token, ttl in ms. Granted when free or already ours.
const leaseScript = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`

// KEYS[1] key, KEYS[2] its lease key, KEYS[3] its holders; ARGV: the holder's token, ttl in ms,
// then as holdScript's. A value entry (its header as the reader decodes it) comes back as it is;
// otherwise the lease is asked for as leaseScript does, and the reply is 'L' (granted) or 'W' (not:
// wait for the fill) followed by whatever the key holds ('' for nothing or a key of another type).
const getOrLeaseScript = `${hold}
hold(KEYS[3], ARGV[3], ARGV[4], ARGV[5])
local cur = redis.pcall('GET', KEYS[1])
if type(cur) ~= 'string' then cur = '' end
local ver = string.match(cur, '^v(%d+):')
if ver and #ver <= 16 and tonumber(ver) <= 9007199254740991 then return cur end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return 'W' .. cur
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 'L' .. cur
`

// KEYS[1] epoch key; ARGV[1] a candidate for a new epoch. Returns the epoch.
const epochScript = `
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
return epoch
`

// The guarded write shared by both set scripts, once the ticket passed: KEYS[1] key, KEYS[3] its
// holders, KEYS[4] the born marker; ARGV[1] version, [2] encoded entry, [3] ttl in ms, [4] encoded
// entry it may replace ('' for none), [8] the channel to announce the write on ('' for none), [9]
// the key as announced, [10] the strict writer's member id ('' for none), [11] its write id, [12]
// its lease in ms, [13] how long its registration as a holder lasts, in ms.
const guardedWrite = `${readCurrent}
local replacing = ARGV[4] ~= '' and cur == ARGV[4]
if kind and not replacing and ver >= tonumber(ARGV[1]) then
  return 'rejected' .. announce(false, ARGV[8], ARGV[1], ARGV[9], KEYS[3], KEYS[4], ARGV[10], ARGV[11], ARGV[12], ARGV[13])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 'written' .. announce(true, ARGV[8], ARGV[1], ARGV[9], KEYS[3], KEYS[4], ARGV[10], ARGV[11], ARGV[12], ARGV[13])
`

// KEYS[1] key, KEYS[2] epoch key, KEYS[3] its holders, KEYS[4] the born marker; ARGV: version,
// encoded entry, ttl in ms, encoded entry it may replace ('' for none), the ticket's epoch ('' for
// no ticket), its deadline in epoch ms, a candidate for a new epoch, then as guardedWrite's.
// Returns 'written' (and what a strict writer waits for), 'rejected', 'late' or 'epoch:' and the
// current epoch.
const setScript = `${announce}
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
// KEYS[1] key, KEYS[2] the slot's marker, KEYS[3] its holders, KEYS[4] the slot's marker again
// (the born marker); ARGV as setScript's, except [5] the ticket's issue time in epoch ms ('' for
// no ticket) and [7] the allowed clock skew in ms. Returns 'written',
// 'rejected', 'late' or 'outdated'.
const clusterSetScript = `${announce}
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
const bornScript = `
if not redis.call('GET', KEYS[1]) then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[1], tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
end
return 1
`

// KEYS[1] key, KEYS[2] its holders, KEYS[3] the born marker; ARGV: version, encoded tombstone,
// ttl in ms, the channel to announce it on ('' for none), the key as announced, then the strict
// writer's member id, write id, lease and registration's lifetime as guardedWrite's. A tombstone
// wins a tie with a value. Returns 'rejected', or 'written' as the set scripts do.
const invalidateScript = `${announce}${readCurrent}
local version = tonumber(ARGV[1])
if kind and (ver > version or (ver == version and kind == 't')) then
  return 'rejected' .. announce(false, ARGV[4], ARGV[1], ARGV[5], KEYS[2], KEYS[3], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 'written' .. announce(true, ARGV[4], ARGV[1], ARGV[5], KEYS[2], KEYS[3], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
`

// KEYS[1] key, KEYS[2] its holders; ARGV: the strict reader's member id, its lease in ms, its
// registration's lifetime in ms. What GET answers, a key of another type as nil, once the reader is
// registered: a write after this script runs waits for the reader's acknowledgement.
const holdScript = `${hold}
hold(KEYS[2], ARGV[1], ARGV[2], ARGV[3])
local cur = redis.pcall('GET', KEYS[1])
if type(cur) ~= 'string' then return false end
return cur
`

/** The scripts both caches define alike. */
export interface KeyScripts {
  wtLease(leaseKey: string, holder: string, ttlMillis: string): Promise<number>
  wtGetOrLease(
    key: string,
    leaseKey: string,
    holdersKey: string,
    holder: string,
    ttlMillis: string,
    ...hold: HoldArguments
  ): Promise<string>
  wtHold(key: string, holdersKey: string, ...hold: HoldArguments): Promise<string | null>
  wtAck(
    holdersKey: string,
    member: string,
    version: string,
    channel: string,
    message: string,
    ...hold: HoldArguments
  ): Promise<number>
  wtInvalidate(
    key: string,
    holdersKey: string,
    bornKey: string,
    version: string,
    entry: string,
    ttlMillis: string,
    channel: string,
    announcedKey: string,
    ...strict: StrictArguments
  ): Promise<string>
}

/** RedisCache's scripts: the ticket names the epoch of the whole server. */
export interface ServerScripts extends KeyScripts {
  wtEpoch(epochKey: string, candidate: string): Promise<string>
  wtSet(...args: SetArguments): Promise<string>
}

/** RedisClusterCache's scripts: the ticket is checked against the memory of the key's slot. */
export interface ClusterScripts extends KeyScripts {
  wtSet(...args: SetArguments): Promise<string>
  wtBorn(marker: string): Promise<number>
}

/**
 * The arguments of both set scripts. `guard` is the key holding the memory a ticket is checked
 * against (the epoch key, or the slot's marker); `guardArgument` is a candidate for a new epoch, or
 * the allowed clock skew.
 */
export type SetArguments = readonly [
  key: string,
  guard: string,
  holders: string,
  born: string,
  version: string,
  entry: string,
  ttlMillis: string,
  replacing: string,
  ticketEpoch: string,
  notAfter: string,
  guardArgument: string,
  channel: string,
  announcedKey: string,
  ...strict: StrictArguments
]

const script = (numberOfKeys: number, lua: string) => ({ numberOfKeys, lua })

const define = <S extends KeyScripts>(
  client: Redis | Cluster,
  scripts: Record<Exclude<keyof S, keyof KeyScripts>, { numberOfKeys: number; lua: string }>
): S => {
  const all = {
    ...scripts,
    wtInvalidate: script(3, invalidateScript),
    wtLease: script(1, leaseScript),
    wtGetOrLease: script(3, getOrLeaseScript),
    wtHold: script(2, holdScript),
    wtAck: script(1, acknowledgeScript)
  }
  for (const [name, definition] of Object.entries(all)) client.defineCommand(name, definition)
  return client as unknown as S
}

export const defineServerScripts = (redis: Redis): ServerScripts =>
  define<ServerScripts>(redis, { wtEpoch: script(1, epochScript), wtSet: script(4, setScript) })

export const defineClusterScripts = (cluster: Cluster): ClusterScripts =>
  define<ClusterScripts>(cluster, { wtSet: script(4, clusterSetScript), wtBorn: script(1, bornScript) })

// The Lua scripts that guard every write, and the commands ioredis defines from them. A script
// runs atomically on the node holding its keys, so the version check and the write cannot interleave
// with another process's.
import type { Cluster, Redis } from "ioredis"

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
const leaseScript = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`

// KEYS[1] key, KEYS[2] its lease key; ARGV: the holder's token, ttl in ms. A value entry (its
// header as the reader decodes it) comes back as it is; otherwise the lease is asked for as
// leaseScript does, and the reply is 'L' (granted) or 'W' (not: wait for the fill) followed by
// whatever the key holds ('' for nothing or a key of another type).
const getOrLeaseScript = `
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
const setScript = `
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
const clusterSetScript = `
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

// KEYS[1] key; ARGV: version, encoded tombstone, ttl in ms, the channel to announce it on ('' for
// none), the key as announced. A tombstone wins a tie with a value.
const invalidateScript = `${readCurrent}
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

/** The scripts both caches define alike. */
export interface KeyScripts {
  wtLease(leaseKey: string, holder: string, ttlMillis: string): Promise<number>
  wtGetOrLease(key: string, leaseKey: string, holder: string, ttlMillis: string): Promise<string>
  wtInvalidate(
    key: string,
    version: string,
    entry: string,
    ttlMillis: string,
    channel: string,
    announcedKey: string
  ): Promise<number>
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
  version: string,
  entry: string,
  ttlMillis: string,
  replacing: string,
  ticketEpoch: string,
  notAfter: string,
  guardArgument: string,
  channel: string,
  announcedKey: string
]

const script = (numberOfKeys: number, lua: string) => ({ numberOfKeys, lua })

const define = <S extends KeyScripts>(
  client: Redis | Cluster,
  scripts: Record<Exclude<keyof S, keyof KeyScripts>, { numberOfKeys: number; lua: string }>
): S => {
  const all = {
    ...scripts,
    wtInvalidate: script(1, invalidateScript),
    wtLease: script(1, leaseScript),
    wtGetOrLease: script(2, getOrLeaseScript)
  }
  for (const [name, definition] of Object.entries(all)) client.defineCommand(name, definition)
  return client as unknown as S
}

export const defineServerScripts = (redis: Redis): ServerScripts =>
  define<ServerScripts>(redis, { wtEpoch: script(1, epochScript), wtSet: script(2, setScript) })

export const defineClusterScripts = (cluster: Cluster): ClusterScripts =>
  define<ClusterScripts>(cluster, { wtSet: script(2, clusterSetScript), wtBorn: script(1, bornScript) })

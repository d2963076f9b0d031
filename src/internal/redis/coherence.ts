// Strict mode of the in-process tier, in one process: its right to serve from the tier, and the
// writes that wait for other processes to drop what they hold.
//
// The right to serve is a lease renewed by heartbeats: the process publishes a heartbeat on its
// own channel through every node that may announce a write (one Redis, or each master of a
// cluster), and the lease runs from the moment it sent the heartbeat once every copy came back
// through its subscription. A node delivers its messages to a subscriber in the order it
// published them, so every write announced before a heartbeat was heard, and its entry dropped,
// before the lease that heartbeat renews begins. A write announced after it reaches a writer that
// waits for the process's acknowledgement, or for longer than the lease can run: a process that
// stops hearing from Redis stops serving from its tier when its lease runs out, and a frozen one
// finds its lease over when it wakes.
//
// Leases are measured on `performance.now()`, a monotonic clock: a writer waits on its own, from
// after its write's reply, so no two clocks are compared.
import { randomUUID } from "node:crypto"
import { performance } from "node:perf_hooks"

/** What a strict writer sends with a write: its member id, the write's id, its lease, its registration's lifetime. */
export type StrictArguments = readonly [member: string, writeId: string, leaseMillis: string, holdMillis: string]

/** What a strict reader sends with a read: its member id, its lease, its registration's lifetime. */
export type HoldArguments = readonly [member: string, leaseMillis: string, holdMillis: string]

/** A non-strict process's arguments: no member, so the scripts neither register nor collect holders. */
export const notStrict: StrictArguments = ["", "", "", ""]
export const notHolding: HoldArguments = ["", "", ""]

/** A write on its way: its arguments, then `settle` with the script's reply, or `abandon`. */
export interface Write {
  readonly arguments: StrictArguments
  /** Resolves once every other holder the reply names acknowledged, or its lease ran out. */
  readonly settle: (reply: string) => Promise<Waited | undefined>
  readonly abandon: () => void
}

/** What a write that had anyone (or a young memory) to wait for waited for. */
export interface Waited {
  readonly acknowledged: number
  readonly leaseExpired: number
  readonly millis: number
}

/** Counts since the layer was built, for `NearTierStats`. */
export interface Counts {
  /** Holders that acknowledged a write of this process. */
  acknowledged: number
  /** Holders whose lease ran out before they acknowledged: silent, or frozen, or cut off. */
  leaseExpired: number
  /** Writes that waited for a young memory (a fresh or restarted Redis) to be a lease old. */
  youngMemoryWaits: number
}

export interface Coherence {
  readonly member: string
  readonly leaseMillis: number
  readonly holdArguments: HoldArguments
  readonly counts: Counts
  /** The channel another process acknowledges to, and the heartbeats come back on, for `member`. */
  readonly channelOf: (member: string) => string
  /** Whether this process may serve from its tier now. */
  readonly serving: () => boolean
  /** Sends a heartbeat through each of the `paths` (publish functions), renewing the lease once all came back. */
  readonly beat: (paths: ReadonlyArray<(message: string) => Promise<unknown>>) => void
  /** A message on this process's own channel: a heartbeat come back, or an acknowledgement. */
  readonly hear: (message: string) => void
  /** An announcement's head: whether it asks this process to acknowledge, and what to send to whom. */
  readonly acknowledgement: (head: string) => Acknowledgement | undefined
  readonly begin: () => Write
  /** Drops the lease: the tier cannot tell what it missed (its subscription was lost). */
  readonly revoke: () => void
}

/** An acknowledgement of the write of `version`: `message` on the writer's `channel`. */
export interface Acknowledgement {
  readonly member: string
  readonly version: string
  readonly channel: string
  readonly message: string
}

interface Waiting {
  readonly acked: Set<string>
  check: () => void
}

interface Round {
  readonly sentAt: number
  missing: number
}

// The lease a heartbeat grants, less a margin for the two processes' clocks running at different rates.
const usable = (leaseMillis: number) => leaseMillis * 0.95

/** What a strict write's reply asks to wait for, in ms: `written|<young memory>|<member>=<at most>,...` (or `rejected|...`). */
const parseWait = (
  reply: string
): { readonly young: number; readonly holders: ReadonlyArray<readonly [string, number]> } => {
  const [, young = "0", list = ""] = reply.split("|")
  const holders =
    list === ""
      ? []
      : list.split(",").map((pair) => {
          const at = pair.lastIndexOf("=")
          return [pair.slice(0, at), Number(pair.slice(at + 1))] as const
        })
  return { young: Number(young), holders }
}

export const make = (options: {
  readonly keyPrefix: string
  readonly leaseMillis: number
  readonly holdMillis: number
}): Coherence => {
  const member = randomUUID().replaceAll("-", "").slice(0, 16)
  const channelOf = (of: string) => `${options.keyPrefix}__wt_member:${of}`
  const counts: Counts = { acknowledged: 0, leaseExpired: 0, youngMemoryWaits: 0 }
  const waiting = new Map<string, Waiting>()
  const rounds = new Map<number, Round>()
  let deadline = 0
  let round = 0
  let writes = 0

  const heardBack = (number: number) => {
    const sent = rounds.get(number)
    if (sent === undefined || --sent.missing > 0) return
    rounds.delete(number)
    // Older rounds still missing a copy can no longer extend the lease beyond this one.
    for (const older of rounds.keys()) if (older < number) rounds.delete(older)
    deadline = Math.max(deadline, sent.sentAt + usable(options.leaseMillis))
  }

  const beat: Coherence["beat"] = (paths) => {
    const number = ++round
    const now = performance.now()
    // A round still missing a copy a lease after it was sent could only grant a lease already over.
    for (const [older, { sentAt }] of rounds) if (sentAt + options.leaseMillis < now) rounds.delete(older)
    rounds.set(number, { sentAt: now, missing: paths.length })
    paths.forEach((publish, path) => void publish(`h${number}.${path}`).catch(() => rounds.delete(number)))
  }

  const hear = (message: string) => {
    if (message.startsWith("h")) heardBack(Number(message.slice(1, message.indexOf("."))))
    else if (message.startsWith("a")) {
      const slash = message.indexOf("/")
      const write = waiting.get(message.slice(1, slash))
      if (write === undefined) return
      write.acked.add(message.slice(slash + 1))
      write.check()
    }
  }

  // `<version>/<writer>/<write id>/<holder>,<holder>`: the holders the write waits for.
  const acknowledgement: Coherence["acknowledgement"] = (head) => {
    const parts = head.split("/")
    if (parts.length !== 4 || !parts[3]!.split(",").includes(member)) return undefined
    return { member, version: parts[0]!, channel: channelOf(parts[1]!), message: `a${parts[2]}/${member}` }
  }

  // Resolves once every holder acknowledged or its wait ran out (counted from the reply), and a
  // young memory's wait did: one timer, reset to the latest of what is still awaited.
  const waitOut = (
    write: Waiting,
    holders: ReadonlyArray<readonly [string, number]>,
    young: number
  ): Promise<Waited> => {
    const repliedAt = performance.now()
    if (young > 0) counts.youngMemoryWaits++
    return new Promise<Waited>((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined
      write.check = () => {
        let until = young > 0 ? repliedAt + young : 0
        for (const [holder, wait] of holders) if (!write.acked.has(holder)) until = Math.max(until, repliedAt + wait)
        clearTimeout(timer)
        const left = until - performance.now()
        if (left > 0) {
          timer = setTimeout(write.check, Math.ceil(left))
          return
        }
        const acknowledged = holders.filter(([holder]) => write.acked.has(holder)).length
        counts.acknowledged += acknowledged
        counts.leaseExpired += holders.length - acknowledged
        write.check = () => {}
        resolve({ acknowledged, leaseExpired: holders.length - acknowledged, millis: performance.now() - repliedAt })
      }
      write.check()
    })
  }

  const begin = (): Write => {
    const id = String(++writes)
    const write: Waiting = { acked: new Set(), check: () => {} }
    waiting.set(id, write)
    const abandon = () => void waiting.delete(id)
    const settle = (reply: string): Promise<Waited | undefined> => {
      const { holders, young } = parseWait(reply)
      const waited = holders.length === 0 && young === 0 ? Promise.resolve(undefined) : waitOut(write, holders, young)
      return waited.finally(abandon)
    }
    return { arguments: [member, id, String(options.leaseMillis), String(options.holdMillis)], settle, abandon }
  }

  return {
    member,
    leaseMillis: options.leaseMillis,
    holdArguments: [member, String(options.leaseMillis), String(options.holdMillis)],
    counts,
    channelOf,
    serving: () => performance.now() < deadline,
    beat,
    hear,
    acknowledgement,
    begin,
    revoke: () => {
      deadline = 0
      rounds.clear()
    }
  }
}

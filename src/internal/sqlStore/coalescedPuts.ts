/**
 * Coalesced puts: the puts of one collection made outside any transaction in one turn of the event
 * loop's microtasks (the fibers one database or Redis reply woke) go to the database together, in
 * one statement that commits on its own: the keys' locks in one order, one multi-row upsert, one
 * COMMIT (one flush of the WAL). Each put still answers for its own key: its version, or its own
 * error.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import { StoreError, StoreOutcomeUnknownError } from "../../Store.js"

type WriteError = StoreError | StoreOutcomeUnknownError

/** How a collection writes: one key on its own, and many in one statement (all or none). */
export interface Writes {
  readonly putOne: (key: string, value: unknown) => Effect.Effect<number, WriteError>
  readonly putAll: (
    entries: ReadonlyArray<readonly [key: string, value: unknown]>
  ) => Effect.Effect<ReadonlyMap<string, number>, WriteError>
}

interface Waiting {
  readonly value: unknown
  readonly result: Deferred.Deferred<number, WriteError>
}

/** The puts gathered in this turn; the first one's caller sends them once it ends. */
interface Gathering {
  /** The key of the put that began the turn's gathering; it joins `waiting` if another put does. */
  readonly first: string
  readonly waiting: Map<string, Waiting>
  /**
   * Callers still waiting for the batch: once none is (all timed out or were interrupted), its
   * statement is interrupted, as a lone put's is by its caller.
   */
  waiters: number
  sending: Fiber.RuntimeFiber<unknown, unknown> | undefined
}

/** `put` outside transactions, coalesced; `writes.putOne` when no other put joined its turn. */
export const make = (writes: Writes): ((key: string, value: unknown) => Effect.Effect<number, WriteError>) => {
  let gathering: Gathering | undefined
  return (key, value) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const batch = gathering
        if (batch !== undefined) {
          // A second put of a key in one turn goes on its own: the key's lock orders the two.
          if (batch.first === key || batch.waiting.has(key)) return restore(writes.putOne(key, value))
          const waiting: Waiting = { value, result: Deferred.unsafeMake(FiberId.none) }
          batch.waiting.set(key, waiting)
          return awaitBatch(batch, waiting, restore)
        }
        const own: Gathering = { first: key, waiting: new Map(), waiters: 0, sending: undefined }
        gathering = own
        // Uninterruptible for the turn it waits (microseconds): the others depend on it to send.
        return Effect.flatMap(endOfTurn, () => {
          gathering = undefined
          if (own.waiting.size === 0) return restore(writes.putOne(key, value))
          // Its own place in the batch, made only now: most turns have one put (about 7 us of CPU saved).
          const waiting: Waiting = { value, result: Deferred.unsafeMake(FiberId.none) }
          own.waiting.set(key, waiting)
          // Interruptible (a fiber inherits its parent's region): its statement is, once abandoned.
          return Effect.zipRight(
            Effect.forkDaemon(Effect.interruptible(send(writes, own))),
            awaitBatch(own, waiting, restore)
          )
        })
      })
    )
}

// After the current turn's microtasks, when every fiber the same reply woke has made its put.
const endOfTurn: Effect.Effect<void> = Effect.async<void>((resume) => {
  process.nextTick(() => resume(Effect.void))
})

const awaitBatch = (
  batch: Gathering,
  waiting: Waiting,
  restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
): Effect.Effect<number, WriteError> => {
  batch.waiters++
  return restore(Deferred.await(waiting.result)).pipe(
    Effect.ensuring(
      Effect.suspend(() =>
        --batch.waiters === 0 && batch.sending !== undefined ? Fiber.interruptFork(batch.sending) : Effect.void
      )
    )
  )
}

// One statement for all; when the database refused it (nothing committed: a value it rejects, a
// lock it would wait too long for), each put again on its own, so that each gets its own answer.
const send = (writes: Writes, batch: Gathering): Effect.Effect<void> => {
  const entries = [...batch.waiting].map(([key, { value }]) => [key, value] as const)
  return Effect.flatMap(Effect.fork(writes.putAll(entries)), (fiber) => {
    batch.sending = fiber
    // Its callers may have given up before it began.
    const abandoned = batch.waiters === 0 ? Fiber.interruptFork(fiber) : Effect.void
    return Effect.zipRight(
      abandoned,
      Effect.flatMap(Fiber.await(fiber), (exit) => settle(writes, batch, exit))
    )
  })
}

const settle = (
  writes: Writes,
  batch: Gathering,
  exit: Exit.Exit<ReadonlyMap<string, number>, WriteError>
): Effect.Effect<void> =>
  Effect.forEach(
    batch.waiting,
    ([key, { result, value }]) => {
      if (Exit.isSuccess(exit)) {
        const version = exit.value.get(key)
        // A statement that answered without the key's row: its outcome for the key is not known.
        return version === undefined
          ? Deferred.die(result, new Error(`the batch's statement returned no version for ${JSON.stringify(key)}`))
          : Deferred.succeed(result, version)
      }
      const error = Cause.failureOption(exit.cause)
      if (Option.isNone(error)) return Deferred.failCause(result, exit.cause)
      if (error.value._tag === "StoreError" && error.value.reason === "Rejected") {
        return Deferred.complete(result, writes.putOne(key, value))
      }
      // Unreached, or its outcome unknown: every put of the batch shares that fate, named for its key.
      return Deferred.fail(result, namedFor(error.value, key))
    },
    { concurrency: "unbounded", discard: true }
  )

const namedFor = (error: WriteError, key: string): WriteError =>
  error._tag === "StoreError" ? new StoreError({ ...error, key }) : new StoreOutcomeUnknownError({ ...error, key })

// The circuit breaker's state machine, shared by the cache's and the store's: closed (counting
// failed calls in a row), open until a time, or probing with one call in flight. A call the
// dependency answered, even with an error of its own (a constraint, a decode), counts as a success:
// only what `isOutage` names, and an interrupted probe, count as failures.
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import { CircuitOpen, type Options } from "../CircuitBreaker.js"
import * as Metrics from "../Metrics.js"
import * as Deadline from "./deadline.js"

export interface Policy<E> {
  /** The error of a call refused while the breaker is open. */
  readonly refuse: (open: CircuitOpen) => E
  /** Whether a failure says the dependency did not answer, rather than answering with an error. */
  readonly isOutage: (error: E) => boolean
  /**
   * Whether a call interrupted before it answered counts as failed: true where the caller's
   * deadline is how a call to a dependency that went silent ends (the store's calls).
   */
  readonly interruptionIsOutage?: boolean | undefined
}

export interface Breaker {
  /** Runs `effect` unless the breaker is open, and counts its outcome. */
  readonly guard: <A, E>(effect: Effect.Effect<A, E>, policy: Policy<E>) => Effect.Effect<A, E>
  /** True while closed: calls reach the dependency. */
  readonly isClosed: () => boolean
}

export interface Target {
  readonly tier: "cache" | "store"
  /** Names the dependency in the metrics' `target` tag and the log lines: a URL without its password. */
  readonly name: string
  /** Runs as the breaker opens. */
  readonly onOpen?: (() => void) | undefined
}

type State =
  | { readonly _tag: "Closed"; readonly failures: number }
  | { readonly _tag: "Open"; readonly until: number }
  | { readonly _tag: "Probing"; readonly until: number }

const closed: State = { _tag: "Closed", failures: 0 }

type Restore = <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E>
const identity: Restore = (effect) => effect

/** Checks the options; a bad figure is a defect of the caller's configuration, named in the message. */
export const resolve = (options: Options): { readonly threshold: number; readonly interval: number } => {
  const threshold = options.failures ?? 3
  if (!Number.isInteger(threshold) || threshold < 1) {
    throw new RangeError(`circuit breaker: failures must be a whole number, 1 or more; got ${threshold}`)
  }
  const interval = Duration.toMillis(options.interval ?? "5 seconds")
  if (!(interval > 0)) throw new RangeError(`circuit breaker: interval must be above zero`)
  return { threshold, interval }
}

export const make = (options: Options, target: Target): Breaker => {
  const { interval, threshold } = resolve(options)
  const instruments = instrumentsOf(target)
  let state: State = closed

  const moveTo = (next: State): Effect.Effect<void> => {
    const from = state
    state = next
    if (next._tag === "Closed") return from._tag === "Closed" ? Effect.void : instruments.closed
    target.onOpen?.()
    return from._tag === "Probing" ? instruments.probeFailed(interval) : instruments.opened(threshold, interval)
  }

  const succeeded = (): Effect.Effect<void> => (state === closed ? Effect.void : moveTo(closed))
  const failed = (): Effect.Effect<void> =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      state._tag === "Closed" && state.failures + 1 < threshold
        ? moveTo({ _tag: "Closed", failures: state.failures + 1 })
        : state._tag === "Open"
          ? Effect.void
          : moveTo({ _tag: "Open", until: now + interval })
    )

  // A probe its caller gave up on (a race lost, a scope closed) tells nothing: the next call probes.
  const probeAgain = (): Effect.Effect<void> =>
    state._tag === "Probing"
      ? Effect.map(Clock.currentTimeMillis, (now) => {
          state = { _tag: "Open", until: now }
        })
      : Effect.void

  // Counts every outcome: after a failure, and for the probe, whose interruption must not leave
  // the breaker probing.
  const counted = <A, E>(
    effect: Effect.Effect<A, E>,
    { interruptionIsOutage, isOutage }: Policy<E>
  ): Effect.Effect<A, E> =>
    Effect.onExit(effect, (exit) =>
      Exit.isSuccess(exit)
        ? succeeded()
        : Exit.isInterrupted(exit)
          ? interruptionIsOutage === true
            ? failed()
            : probeAgain()
          : exit.cause._tag === "Fail" && !isOutage(exit.cause.error)
            ? succeeded()
            : failed()
    )

  // A call its deadline cuts short counts at that moment, not once it has stopped: stopping a call
  // to a database gone silent can take as long as the database does. Without a deadline of
  // `Deadline.timeoutFail`, an interrupted call counts once it has stopped.
  const countedWhenCut = <A, E>(effect: Effect.Effect<A, E>, policy: Policy<E>): Effect.Effect<A, E> =>
    Effect.withFiberRuntime((fiber) => {
      const cut = fiber.getFiberRef(Deadline.whenCut)
      if (cut === undefined) return counted(effect, policy)
      let done = false
      cut.push(Effect.suspend(() => (done ? Effect.void : failed())))
      return counted(
        Effect.ensuring(
          effect,
          Effect.sync(() => {
            done = true
          })
        ),
        { ...policy, interruptionIsOutage: false }
      )
    })
  const observed = <A, E>(effect: Effect.Effect<A, E>, policy: Policy<E>, restore: Restore = identity) =>
    policy.interruptionIsOutage === true ? countedWhenCut(restore(effect), policy) : counted(restore(effect), policy)

  const refused = <E>(policy: Policy<E>, until: number): Effect.Effect<never, E> =>
    Effect.zipRight(
      instruments.shortCircuited,
      Effect.fail(policy.refuse(new CircuitOpen({ tier: target.tier, until })))
    )

  const guard = <A, E>(effect: Effect.Effect<A, E>, policy: Policy<E>): Effect.Effect<A, E> =>
    Effect.suspend(() => {
      // The hot path: one comparison, and a handler only on failure.
      if (state === closed && policy.interruptionIsOutage !== true) {
        return Effect.tapError(effect, (error) => (policy.isOutage(error) ? failed() : Effect.void))
      }
      if (state._tag === "Closed") return observed(effect, policy)
      const { until } = state
      // Open until `until`, or probing until then: refused. Then this call probes (a probe that
      // outlived an interval is given up on). Becoming the probe and counting its outcome happen
      // without a gap an interruption could fall into, which would leave the breaker probing.
      return Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          if (now < until) return refused(policy, until)
          state = { _tag: "Probing", until: now + interval }
          return observed(effect, policy, restore)
        })
      )
    })

  return { guard, isClosed: () => state._tag === "Closed" }
}

// Tagged once per breaker, not per transition.
const instrumentsOf = ({ name, tier }: Target) => {
  const tagged = <Type, In, Out>(metric: Metric.Metric<Type, In, Out>) =>
    metric.pipe(Metric.tagged("tier", tier), Metric.tagged("target", name))
  const gauge = tagged(Metrics.breakerOpen)
  const toOpen = Metric.tagged(tagged(Metrics.breakerTransitions), "state", "open")
  const toClosed = Metric.tagged(tagged(Metrics.breakerTransitions), "state", "closed")
  const annotated = Effect.annotateLogs({ tier, target: name })
  const skipping = tier === "cache" ? "reads go to the store, writes commit to the store only" : "calls fail at once"
  return {
    shortCircuited: Metric.increment(tagged(Metrics.breakerShortCircuits)),
    closed: Effect.all(
      [
        Metric.increment(toClosed),
        Metric.set(gauge, 0),
        annotated(Effect.logInfo(`the ${tier} answers again: its circuit breaker closed`))
      ],
      { discard: true }
    ),
    opened: (threshold: number, interval: number) =>
      Effect.all(
        [
          Metric.increment(toOpen),
          Metric.set(gauge, 1),
          annotated(
            Effect.logWarning(
              `${threshold} ${tier} calls failed in a row: its circuit breaker opened; ${skipping} for ${Duration.format(interval)}`
            )
          )
        ],
        { discard: true }
      ),
    probeFailed: (interval: number) =>
      annotated(
        Effect.logWarning(`the ${tier} still fails: its circuit breaker stays open for ${Duration.format(interval)}`)
      )
  }
}

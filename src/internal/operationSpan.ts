import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import type { Labelled } from "./labelledMetric.js"
import * as Option from "effect/Option"

const nativeTracer = Effect.runSync(Effect.tracer)

const noOutcome = (_outcome: string) => {}

// What a failed span carries instead of the error: errors name the key in their messages, and
// an exporter copies a span's error message and stack into its status and events.
class OperationFailed<X, E> extends Error {
  constructor(
    outcome: string,
    readonly exit: Exit.Exit<X, E>
  ) {
    super(outcome)
    this.name = outcome
  }
}

/** How an operation ended, for a span's `outcome`: the error's tag, `Die` or `Interrupted`. */
const failureOutcome = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    return typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : "Fail"
  }
  return Cause.isInterruptedOnly(cause) ? "Interrupted" : "Die"
}

/**
 * Runs a public operation: records its latency in milliseconds (wall time, whatever the clock)
 * and, when a tracer other than Effect's built-in one is installed (an OpenTelemetry exporter,
 * say), wraps it in a span with `attributes` and an `outcome`. Spans cost about 10 us a call even
 * with nothing to export them, hence the check. `build` receives a function by which the
 * operation names its outcome when it succeeds (`hit`, `miss`...; default `ok`); a failure's
 * outcome is its error's tag. A failed span carries only that tag, never the error's message.
 */
export const observe = <X, E, R>(
  name: string,
  attributes: Readonly<Record<string, string>>,
  latency: Labelled<number> | undefined,
  build: (outcome: (outcome: string) => void, fiber: Fiber.RuntimeFiber<unknown, unknown>) => Effect.Effect<X, E, R>
): Effect.Effect<X, E, R> =>
  Effect.withFiberRuntime<X, E, R>((fiber) => {
    const started = performance.now()
    const record = () => latency?.unsafeUpdate(performance.now() - started)
    if (fiber.currentTracer === nativeTracer) {
      // One frame, where Effect.onExit takes several: this is on every cache hit.
      return latency === undefined
        ? build(noOutcome, fiber)
        : Effect.matchCauseEffect(build(noOutcome, fiber), {
            onFailure: (cause) => {
              record()
              return Effect.failCause(cause)
            },
            onSuccess: (value) => {
              record()
              return Effect.succeed(value)
            }
          })
    }
    let outcome = "ok"
    const spanned = Effect.useSpan(name, { attributes, kind: "internal" }, (span) =>
      Effect.flatMap(
        Effect.exit(
          Effect.withParentSpan(
            build((named) => {
              outcome = named
            }, fiber),
            span
          )
        ),
        (exit) => {
          record()
          if (Exit.isSuccess(exit)) {
            span.attribute("outcome", outcome)
            return Effect.succeed(exit)
          }
          const failed = failureOutcome(exit.cause)
          span.attribute("outcome", failed)
          return Effect.fail(new OperationFailed(failed, exit))
        }
      )
    )
    return Effect.flatMap(Effect.either(spanned), (ended) => (Either.isRight(ended) ? ended.right : ended.left.exit))
  })

import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"

const liveClock = Effect.runSync(Effect.clock)

/**
 * `Effect.timeoutFail`, for calls on the hot path. `Effect.timeout` races the effect with a sleep
 * in two forked fibers: about 70 us of CPU a call, measured, more than a Redis round trip costs.
 * Under the live clock one fork and a timer do the same for about a third of that: at the deadline
 * the effect is interrupted, and the caller goes on without waiting for it to stop. Under any other clock (`TestClock`)
 * the deadline must follow that clock, so `Effect.timeoutFail` does the work.
 */
/**
 * What a call bounded by `timeoutFail` under the live clock asks to be told when its deadline cuts
 * it short: effects the caller runs at that moment, before it goes on without waiting for the call
 * to stop (a circuit breaker counts the cut there, not once the call has stopped).
 */
export const whenCut = FiberRef.unsafeMake<Array<Effect.Effect<void>> | undefined>(undefined)

export const timeoutFail = <A, E, R, E2>(
  self: Effect.Effect<A, E, R>,
  duration: Duration.Duration,
  onTimeout: () => E2
): Effect.Effect<A, E | E2, R> =>
  Effect.clockWith((clock) =>
    clock !== liveClock
      ? Effect.timeoutFail(self, { duration, onTimeout })
      : Effect.suspend(() => {
          const cut: Array<Effect.Effect<void>> = []
          // Set in the child, which ends with the call: no need to restore it, as Effect.locally does.
          return Effect.flatMap(Effect.fork(Effect.zipRight(FiberRef.set(whenCut, cut), self)), (fiber) =>
            Effect.async<A, E | E2>((resume) => {
              const observer = (exit: Exit.Exit<A, E>) => {
                clearTimeout(timer)
                resume(exit)
              }
              const timer = setTimeout(() => {
                fiber.removeObserver(observer)
                // Not awaited: stopping a call can take as long as the dependency that does not
                // answer (@effect/sql-pg cancels a query over a new connection to the database).
                resume(
                  Effect.zipRight(
                    Effect.all(cut, { discard: true }),
                    Effect.zipRight(Fiber.interruptFork(fiber), Effect.fail(onTimeout()))
                  )
                )
              }, Duration.toMillis(duration))
              fiber.addObserver(observer)
              return Effect.suspend(() => {
                clearTimeout(timer)
                fiber.removeObserver(observer)
                return Fiber.interrupt(fiber)
              })
            })
          )
        })
  )

import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import type * as Metric from "effect/Metric"
import * as MetricLabel from "effect/MetricLabel"

/**
 * A metric under fixed labels, cheap to update on the hot path. `Metric.tagged` merges its tags into
 * a new array on every update, so Effect looks the metric's state up under a freshly built, freshly
 * hashed key: a few microseconds a call, measured. Updating the untagged metric with one array of
 * labels, the same every time, finds the state in Effect's cache instead. Labels set with
 * `Effect.tagMetrics` are added as usual.
 */
export interface Labelled<In> {
  readonly update: (input: In) => Effect.Effect<void>
  /** Without the fiber's labels: for code outside a fiber, such as a latency recorded in a finalizer. */
  readonly unsafeUpdate: (input: In) => void
}

export const make = <In>(
  metric: Metric.Metric<unknown, In, unknown>,
  tags: ReadonlyArray<readonly [key: string, value: string]>
): Labelled<In> => {
  const labels = tags.map(([key, value]) => MetricLabel.make(key, value))
  return {
    update: (input) =>
      Effect.withFiberRuntime<void>((fiber) => {
        const extra = fiber.getFiberRef(FiberRef.currentMetricLabels)
        metric.unsafeUpdate(input, extra.length === 0 ? labels : [...labels, ...extra])
        return Effect.void
      }),
    unsafeUpdate: (input) => metric.unsafeUpdate(input, labels)
  }
}

/** A counter under fixed labels, its increment built once. */
export const counter = (metric: Metric.Metric.Counter<number>, tags: ReadonlyArray<readonly [string, string]>) => {
  const labelled = make(metric as Metric.Metric<unknown, number, unknown>, tags)
  return { increment: labelled.update(1), incrementBy: labelled.update }
}

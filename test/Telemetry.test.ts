// The library's spans and metrics, exported through @effect/opentelemetry's NodeSdk, against real PostgreSQL and Redis.
import { NodeSdk } from "@effect/opentelemetry"
import { describe, expect, it } from "@effect/vitest"
import { type Attributes, SpanStatusCode } from "@opentelemetry/api"
import {
  DataPointType,
  MetricReader,
  type DataPoint,
  type Histogram,
  type MetricData
} from "@opentelemetry/sdk-metrics"
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer, Option, Schema } from "effect"
import { SqlStore, WriteThrough } from "../src/index.js"
import { User } from "./support/fixtures.js"
import { PgLive, redisCacheLayer, unique, usersTable } from "./support/services.js"

/** A metric reader that exports nothing by itself: the test calls `collect()` when it wants the metrics. */
class OnDemandMetricReader extends MetricReader {
  protected override onForceFlush(): Promise<void> {
    return Promise.resolve()
  }
  protected override onShutdown(): Promise<void> {
    return Promise.resolve()
  }
}

// Distinctive keys: neither may show up in anything exported.
const secretKey = "secret-key-1234"
const missingKey = "secret-missing-5678"

interface Exported {
  readonly entity: string
  readonly spans: ReadonlyArray<ReadableSpan>
  readonly metrics: ReadonlyArray<MetricData>
}

/**
 * On a table and a key prefix of its own: a set, a get that hits, a get of a missing key (a miss), a delete, and a
 * set that fails validation. With `otel`, NodeSdk's layer is installed around the operations; the spans and metrics
 * are read before it is released (its finalizer shuts the exporter down, which clears it).
 */
const scenario = (options: { readonly otel: boolean }) =>
  Effect.gen(function* () {
    const spanExporter = new InMemorySpanExporter()
    const metricReader = new OnDemandMetricReader()
    const table = yield* usersTable
    const OtelLive = options.otel
      ? NodeSdk.layer(() => ({
          resource: { serviceName: "effect-write-through-test" },
          spanProcessor: new SimpleSpanProcessor(spanExporter),
          metricReader
        }))
      : Layer.empty
    return yield* Effect.gen(function* () {
      const users = yield* WriteThrough.make({
        entity: table,
        key: Schema.String,
        value: User,
        table: { name: table, primaryKey: "id" }
      })
      yield* users.set(secretKey, new User({ id: secretKey, name: "Ada", email: "ada@example.com" }))
      expect(Option.isSome(yield* users.get(secretKey))).toBe(true) // a hit: the set filled the cache
      expect(Option.isNone(yield* users.get(missingKey))).toBe(true) // a miss: no row either
      yield* users.delete(secretKey)
      // A write that fails before any I/O: the value's id is not its key.
      const invalid = yield* Effect.flip(
        users.set("invalid-key", new User({ id: "another-id", name: "Bob", email: "bob@example.com" }))
      )
      expect(invalid._tag).toBe("ValidationError")

      const spans = [...spanExporter.getFinishedSpans()]
      const metrics = options.otel
        ? (yield* Effect.promise(() => metricReader.collect())).resourceMetrics.scopeMetrics.flatMap(
            (scope) => scope.metrics
          )
        : []
      return { entity: table, spans, metrics } satisfies Exported
    }).pipe(Effect.scoped, Effect.provide(Layer.mergeAll(redisCacheLayer(unique("otel")), SqlStore.layer(), OtelLive)))
  }).pipe(Effect.scoped, Effect.provide(PgLive))

const librarySpans = (exported: Exported) => exported.spans.filter((span) => span.name.startsWith("WriteThrough."))

const spansNamed = (exported: Exported, name: string) => exported.spans.filter((span) => span.name === name)

/** The data points of one metric that carry this test's entity tag (Effect's metrics are global to the process). */
const dataPoints = <T = number>(exported: Exported, name: string) =>
  exported.metrics
    .filter((metric) => metric.descriptor.name === name)
    .flatMap((metric): ReadonlyArray<DataPoint<unknown>> => metric.dataPoints)
    .filter((point) => point.attributes["entity"] === exported.entity) as ReadonlyArray<DataPoint<T>>

const total = (points: ReadonlyArray<DataPoint<number>>) => points.reduce((sum, point) => sum + point.value, 0)

const attributeValues = (attributes: Attributes) => JSON.stringify(Object.values(attributes))

describe("OpenTelemetry export (NodeSdk, PostgreSQL + Redis)", () => {
  it.live("spans name the operation and carry the entity, never the key; counters carry the entity", () =>
    Effect.gen(function* () {
      const exported = yield* scenario({ otel: true })

      const names = librarySpans(exported).map((span) => span.name)
      expect(names).toContain("WriteThrough.set")
      expect(names).toContain("WriteThrough.get")
      expect(names).toContain("WriteThrough.delete")
      expect(spansNamed(exported, "WriteThrough.get")).toHaveLength(2) // the hit and the miss
      for (const span of librarySpans(exported)) {
        expect(span.attributes["entity"]).toBe(exported.entity)
      }

      // Every exported span, the SQL client's included: no attribute value equals or contains a key.
      expect(exported.spans.length).toBeGreaterThan(librarySpans(exported).length) // sql.execute spans too
      for (const span of exported.spans) {
        for (const text of [
          attributeValues(span.attributes),
          ...span.events.map((event) => attributeValues(event.attributes ?? {}))
        ]) {
          expect(text).not.toContain(secretKey)
          expect(text).not.toContain(missingKey)
        }
        // A failed operation's span (the invalid set) carries its error's tag, not its message.
        expect(span.status.message ?? "").not.toContain(secretKey)
        expect(span.status.message ?? "").not.toContain("invalid-key")
        for (const event of span.events) expect(event.name).not.toContain("invalid-key")
      }
      const failed = librarySpans(exported).filter((span) => span.status.code === SpanStatusCode.ERROR)
      expect(failed.map((span) => span.status.message)).toEqual(["ValidationError"])

      const hits = dataPoints(exported, "write_through_cache_hits")
      const misses = dataPoints(exported, "write_through_cache_misses")
      expect(hits.length).toBeGreaterThanOrEqual(1)
      expect(misses.length).toBeGreaterThanOrEqual(1)
      expect(total(hits)).toBeGreaterThanOrEqual(1)
      expect(total(misses)).toBeGreaterThanOrEqual(1)
      // Once the counters gain an `operation` tag there may be several data points per entity: one of each counts.
      expect(hits.some((point) => point.value >= 1)).toBe(true)
      expect(misses.some((point) => point.value >= 1)).toBe(true)
      for (const point of [...hits, ...misses]) expect(point.attributes).toMatchObject({ entity: exported.entity })
    })
  )

  it.live("without the OpenTelemetry layer (Effect's native tracer) the library makes no span", () =>
    Effect.gen(function* () {
      const exported = yield* scenario({ otel: false })
      expect(exported.spans).toEqual([])
    })
  )

  it.live("spans carry operation and outcome; latency is a histogram tagged with entity and operation", () =>
    Effect.gen(function* () {
      const exported = yield* scenario({ otel: true })
      const attributes = (name: string) => spansNamed(exported, name).map((span) => span.attributes)

      // Reads: outcome "hit" | "miss" | "degraded". Writes: "ok", or the failing error's _tag.
      expect(attributes("WriteThrough.get")).toEqual([
        expect.objectContaining({ entity: exported.entity, operation: "get", outcome: "hit" }),
        expect.objectContaining({ entity: exported.entity, operation: "get", outcome: "miss" })
      ])
      expect(attributes("WriteThrough.set")).toEqual([
        expect.objectContaining({ entity: exported.entity, operation: "set", outcome: "ok" }),
        expect.objectContaining({ entity: exported.entity, operation: "set", outcome: "ValidationError" })
      ])
      expect(attributes("WriteThrough.delete")).toEqual([
        expect.objectContaining({ entity: exported.entity, operation: "delete", outcome: "ok" })
      ])

      // write_through_latency_ms: a histogram, one data point per (entity, operation).
      const latency = exported.metrics.filter((metric) => metric.descriptor.name === "write_through_latency_ms")
      expect(latency.length).toBeGreaterThanOrEqual(1)
      for (const metric of latency) expect(metric.dataPointType).toBe(DataPointType.HISTOGRAM)
      const points = dataPoints<Histogram>(exported, "write_through_latency_ms")
      const count = (operation: string) =>
        points
          .filter((point) => point.attributes["operation"] === operation)
          .reduce((sum, point) => sum + point.value.count, 0)
      expect(count("get")).toBeGreaterThanOrEqual(2)
      expect(count("set")).toBeGreaterThanOrEqual(1)
      expect(count("delete")).toBeGreaterThanOrEqual(1)
      for (const point of points) {
        expect(point.attributes).toMatchObject({ entity: exported.entity, operation: expect.any(String) })
        expect(point.value.sum ?? 0).toBeGreaterThanOrEqual(0)
      }

      // The counters gain the operation tag: the hit and the miss are counted against "get".
      const hits = dataPoints(exported, "write_through_cache_hits")
      const misses = dataPoints(exported, "write_through_cache_misses")
      expect(total(hits.filter((point) => point.attributes["operation"] === "get"))).toBeGreaterThanOrEqual(1)
      expect(total(misses.filter((point) => point.attributes["operation"] === "get"))).toBeGreaterThanOrEqual(1)
    })
  )
})

// `npm run example:telemetry`: the library's spans and metrics, exported to OpenTelemetry with @effect/opentelemetry.
//
// It sets a user, reads it back (a cache hit), reads a user that does not exist (a miss) and deletes the first one,
// inside a span of its own, `example.telemetry`. The spans and the counters go to the console: the spans when the
// program ends (NodeSdk's layer flushes and shuts its providers down when it is released), the metrics on that final
// export too.
//
// With no environment it runs on MemoryCache and MemoryStore. Set DATABASE_URL to keep the users in PostgreSQL (a
// table of its own, dropped at the end) and REDIS_URL to cache them in Redis (keys under a prefix of its own,
// deleted at the end); then the SQL client's `sql.execute` spans show up as children of the library's:
//
//   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379 npm run example:telemetry
//
// To send them to an OpenTelemetry collector instead, `npm install @opentelemetry/exporter-trace-otlp-http` (and
// `@opentelemetry/exporter-metrics-otlp-http` for the metrics), and in `TelemetryLive` below use
// `new BatchSpanProcessor(new OTLPTraceExporter({ url: "http://localhost:4318/v1/traces" }))` and
// `new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter({ url: "http://localhost:4318/v1/metrics" }) })`.
import { NodeSdk } from "@effect/opentelemetry"
import { ConsoleMetricExporter, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics"
import { BatchSpanProcessor, ConsoleSpanExporter } from "@opentelemetry/sdk-trace-base"
import { Console, Effect, Layer, Option, Schema } from "effect"
import { WriteThrough } from "../src/index.js"
import { cacheLayer, describeEnvironment, runExample, run, storeLayer } from "./environment.js"

class User extends Schema.Class<User>("User")({ id: Schema.String, name: Schema.String, email: Schema.String }) {}

const table = { name: `example_telemetry_users_${run}`, columns: "id text PRIMARY KEY, name text, email text" }
const keyPrefix = `example-telemetry-${run}:`

// The entity is named after its table: spans and metrics carry it as `entity`.
class Users extends WriteThrough.Service<Users>()("example/TelemetryUsers", {
  key: Schema.String,
  value: User,
  table: { name: table.name, primaryKey: "id" },
  ttl: "10 minutes"
}) {}

const UsersLive = Users.Default.pipe(Layer.provide(Layer.merge(cacheLayer(keyPrefix), storeLayer([table]))))

// OpenTelemetry: a tracer provider whose spans go to the console in batches, and a metric reader that exports
// Effect's metrics (the library's counters and latency histogram among them) every 10 seconds and once more when it
// is shut down.
const TelemetryLive = NodeSdk.layer(() => ({
  resource: { serviceName: "effect-write-through-example" },
  spanProcessor: new BatchSpanProcessor(new ConsoleSpanExporter()),
  metricReader: new PeriodicExportingMetricReader({
    exporter: new ConsoleMetricExporter(),
    exportIntervalMillis: 10_000
  })
}))

const show = (user: Option.Option<User>) =>
  Option.match(user, { onNone: () => "None", onSome: (u) => `Some(${u.name} <${u.email}>)` })

const program = Effect.gen(function* () {
  const users = yield* Users
  // Each operation is a span, WriteThrough.set / get / delete, a child of `example.telemetry`, with the attributes
  // entity, operation and outcome (hit, miss, ok...).
  yield* users.set("1", new User({ id: "1", name: "Ada Lovelace", email: "ada@example.com" }))
  yield* Console.log(`set "1"    -> ok`)
  yield* Console.log(`get "1"    -> ${show(yield* users.get("1"))}  (a cache hit)`)
  yield* Console.log(`get "2"    -> ${show(yield* users.get("2"))}  (a cache miss: no such user)`)
  yield* users.delete("1")
  yield* Console.log(`delete "1" -> ok`)
}).pipe(Effect.withSpan("example.telemetry"))

// The telemetry layer is released first, when the program ends: it flushes the spans and exports the metrics once
// more. Then the users' layer closes the connections, drops the table and deletes the keys, so the process exits.
runExample(
  Effect.gen(function* () {
    yield* Console.log(`entity: ${Users.entity}`)
    yield* describeEnvironment(keyPrefix, [table])
    yield* program.pipe(Effect.provide(TelemetryLive))
    yield* Console.log(`\nspans and metrics exported; closing connections`)
  }).pipe(Effect.provide(UsersLive))
)

/**
 * The row triggers an entity table needs, each calling a function the store generates for that
 * table (its columns named in the body, not looked up in a `jsonb` of the row on every write):
 *
 * - the version trigger (`versionTrigger` or `changeCapture` on): an UPDATE that does not raise the
 *   version (one made outside the library leaves it as it was) gets a fresh one from the sequence,
 *   drawn while the row is locked, so it orders after the row's earlier writes; an INSERT without a
 *   version gets one. The library's own writes draw theirs under the key's advisory lock, which a
 *   writer outside the library does not take: one of them can draw its version first and then
 *   commit after such a writer drew a higher one, and the trigger gives it a fresh one then too, so
 *   versions follow the commit order whoever writes (the store returns the version the row got);
 * - the capture trigger (`changeCapture` on): records each committed change in the outbox, in the
 *   writing transaction. An update that moves a row to another key is the old key's deletion and
 *   the new key's write. The key is recorded as `::text`, as the store's reads give it.
 *
 * The store creates the functions (a concurrent creation is no error); the triggers are the
 * table owner's to add, from the DDL the schema check suggests. A function's name carries a hash of
 * its table and body, so a table whose mapping changed (or a release that changed the body) gets a
 * new one, and the check asks for the trigger to be replaced.
 */
import { createHash } from "node:crypto"
import { quote } from "./identifier.js"
import type { Mapping } from "./mapping.js"
import type { RequiredTrigger } from "./schema.js"
import type { CaptureObjects, StoreObjects } from "./statements.js"

/** The names every entity table's triggers have, which the schema check looks for. */
const versionTriggerName = "effect_write_through_version"
const captureTriggerName = "effect_write_through_capture"

/** The longest sequence name whose functions' names fit PostgreSQL's 63 bytes. */
export const maxSequenceNameBytes = 63 - "_capture_".length - 12

const literal = (text: string) => `'${text.replace(/'/g, "''")}'`

/** A trigger function for `table`, its name after the store's sequence and a hash of its table and body. */
const triggerFunction = (objects: StoreObjects, kind: "version" | "capture", table: string, body: string) => {
  const hash = createHash("sha256").update(`${table}\u0000${body}`).digest("hex").slice(0, 12)
  const name = `${quote(objects.schema)}.${quote(`${objects.sequenceName}_${kind}_${hash}`)}`
  return {
    name,
    // Created once; a concurrent creation of the same function is no error.
    create:
      `DO $wt$ BEGIN CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN ${body} END $fn$; ` +
      `EXCEPTION WHEN duplicate_function THEN NULL; END $wt$`
  }
}

/** A trigger the store can check for, with the function it calls and the DDL of both. */
export interface TableTrigger extends RequiredTrigger {
  readonly createFunction: string
}

// The bits of `pg_trigger.tgtype` each timing must set (1 row, 2 before, 4 insert, 8 delete, 16
// update) and must not (2 for an AFTER trigger).
const timings = {
  "BEFORE INSERT OR UPDATE": { events: 1 | 2 | 4 | 16, excluded: 0 },
  "AFTER INSERT OR UPDATE OR DELETE": { events: 1 | 4 | 8 | 16, excluded: 2 }
} as const

const tableTrigger = (
  name: string,
  timing: keyof typeof timings,
  table: string,
  fn: { readonly name: string; readonly create: string },
  { purpose }: { readonly purpose: string }
): TableTrigger => ({
  name,
  ...timings[timing],
  function: fn.name,
  purpose,
  createFunction: fn.create,
  createDdl: `CREATE TRIGGER ${quote(name)} ${timing} ON ${table} FOR EACH ROW EXECUTE FUNCTION ${fn.name}()`
})

/** The version trigger `mapping`'s table needs. */
export const versionTrigger = (objects: StoreObjects, mapping: Mapping): TableTrigger => {
  const version = quote(mapping.versionColumn)
  const fn = triggerFunction(
    objects,
    "version",
    mapping.table,
    `IF NEW.${version} IS NULL OR (TG_OP = 'UPDATE' AND NEW.${version} <= OLD.${version}) THEN ` +
      `NEW.${version} := nextval(${literal(objects.qualifiedSequence)}); END IF; RETURN NEW;`
  )
  return tableTrigger(versionTriggerName, "BEFORE INSERT OR UPDATE", mapping.table, fn, {
    purpose: "gives writes made outside the library a version (versionTrigger is on)"
  })
}

/** What the capture function records of a row: its feed's tag, its key, its version. */
interface Captured {
  readonly table: string
  /** A SQL expression of the row (`NEW` or `OLD`) giving the feed's tag. */
  readonly tag: (row: string) => string
  readonly keyColumns: ReadonlyArray<string>
  readonly versionColumn: string
}

const captureBody = ({ changes }: CaptureObjects, captured: Captured) => {
  const record = (row: string, deleted: boolean) =>
    `INSERT INTO ${changes} ("tag", "key", "version", "deleted") VALUES (${captured.tag(row)}, ` +
    `${row}.${quote(captured.keyColumns.at(-1)!)}::text, ${row}.${quote(captured.versionColumn)}, ${deleted});`
  const moved = captured.keyColumns.map((column) => `NEW.${quote(column)} IS DISTINCT FROM OLD.${quote(column)}`)
  return (
    `IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND (${moved.join(" OR ")})) THEN ${record("OLD", true)} END IF; ` +
    `IF TG_OP <> 'DELETE' THEN ${record("NEW", false)} END IF; RETURN NULL;`
  )
}

const captureTriggerOf = (objects: StoreObjects, capture: CaptureObjects, captured: Captured): TableTrigger => {
  const fn = triggerFunction(objects, "capture", captured.table, captureBody(capture, captured))
  return tableTrigger(captureTriggerName, "AFTER INSERT OR UPDATE OR DELETE", captured.table, fn, {
    purpose: "records its changes for the cache (changeCapture is on)"
  })
}

/** The capture trigger `mapping`'s table needs. */
export const captureTrigger = (objects: StoreObjects, capture: CaptureObjects, mapping: Mapping): TableTrigger =>
  captureTriggerOf(objects, capture, {
    table: mapping.table,
    tag: () => literal(tagOfTable(mapping)),
    keyColumns: [mapping.keyColumn],
    versionColumn: mapping.versionColumn
  })

/**
 * The generic table's capture trigger, which the store adds itself, named after the store's own
 * objects: two stores with different sequences over one generic table each record its changes. A
 * row's feed is its entity's; a row moved to another entity is a deletion there.
 */
export const genericCaptureTrigger = (objects: StoreObjects, capture: CaptureObjects) => {
  const trigger = captureTriggerOf(objects, capture, {
    table: objects.genericTable,
    tag: (row) => `'entity:' || ${row}."entity"`,
    keyColumns: ["entity", "key"],
    versionColumn: "version"
  })
  return {
    createFunction: trigger.createFunction,
    createTrigger:
      `DO $wt$ BEGIN CREATE TRIGGER ${capture.genericTrigger} AFTER INSERT OR UPDATE OR DELETE ` +
      `ON ${objects.genericTable} FOR EACH ROW EXECUTE FUNCTION ${trigger.function}(); ` +
      `EXCEPTION WHEN duplicate_object THEN NULL; END $wt$`
  }
}

/** An entity table's feed is named by the table, a generic entity's by its name. */
export const tagOfTable = (mapping: Mapping): string => mapping.table
export const tagOfEntity = (entity: string): string => `entity:${entity}`

/** How a table-mapped entity's value maps onto its table's columns. */
import type { Table, Target } from "../../Store.js"
import { qualified } from "./identifier.js"

/** How an entity maps onto its table, as the schema check compares it with the table and its statements use it. */
export interface Mapping {
  readonly entity: string
  /** The table's quoted, schema-qualified name. */
  readonly table: string
  readonly keyColumn: string
  /** The value's fields, in order, and the column of each: the key's field, when the value has one, among them. */
  readonly fields: ReadonlyArray<string>
  readonly columns: ReadonlyArray<string>
  /** The fields other than the key's, and their columns: what a write sets. */
  readonly valueFields: ReadonlyArray<string>
  readonly valueColumns: ReadonlyArray<string>
  readonly versionColumn: string
  /** The SQL expression drawing a version from the store's sequence. */
  readonly nextVersion: string
}

export const mappingOf = (
  target: Target,
  table: Table,
  fields: ReadonlyArray<string>,
  nextVersion: string
): Mapping => {
  const columnOf = (field: string) => table.columns?.[field] ?? field
  const keyField = fields.find((field) => columnOf(field) === table.primaryKey)
  const valueFields = fields.filter((field) => field !== keyField)
  return {
    entity: target.entity,
    table: qualified(table.schema, table.name),
    keyColumn: table.primaryKey,
    fields,
    columns: fields.map(columnOf),
    valueFields,
    valueColumns: valueFields.map(columnOf),
    versionColumn: table.versionColumn ?? "version",
    nextVersion
  }
}
